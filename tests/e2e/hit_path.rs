//! The edge's own hit path (`crates/edge/src/hit_path.rs`) against pingora's: the same hits
//! answered by both give the same status, fields and bytes; what it does not answer reaches the
//! proxy with nothing lost, on the same connection, which then comes back to the hit path.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::url;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Fields whose values differ between two answers to the same request.
const PER_ANSWER: [&str; 2] = ["age", "x-request-id"];

/// One answer read off a raw connection: status line, fields (lower-case names, in order) and
/// body.
#[derive(Debug)]
struct RawAnswer {
    status_line: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawAnswer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// The fields but those set per answer, as a comparable map.
    fn stable_fields(&self) -> BTreeMap<String, String> {
        self.fields
            .iter()
            .filter(|(name, _)| !PER_ANSWER.contains(&name.as_str()))
            .cloned()
            .collect()
    }
}

/// A kept-alive raw connection to the edge.
struct Connection {
    stream: tokio::net::TcpStream,
    pending: Vec<u8>,
}

impl Connection {
    async fn open(addr: &str) -> Result<Connection, Error> {
        Ok(Connection {
            stream: tokio::net::TcpStream::connect(addr).await?,
            pending: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads one answer (with a body unless `head_only`).
    async fn answer(&mut self, head_only: bool) -> Result<RawAnswer, Error> {
        let head_end = loop {
            if let Some(at) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.pending[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let fields: Vec<(String, String)> = lines
            .filter(|line| !line.is_empty())
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        let length: usize = if head_only {
            0
        } else {
            fields
                .iter()
                .find(|(name, _)| name == "content-length")
                .and_then(|(_, value)| value.parse().ok())
                .ok_or("an answer without Content-Length")?
        };
        while self.pending.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.pending[head_end..head_end + length].to_vec();
        self.pending.drain(..head_end + length);
        Ok(RawAnswer {
            status_line,
            fields,
            body,
        })
    }

    async fn fill(&mut self) -> Result<(), Error> {
        let mut chunk = [0u8; 16 * 1024];
        let n =
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await??;
        if n == 0 {
            return Err("the edge closed the connection".into());
        }
        self.pending.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The edge's `precache_edge_ready_hits_total`.
async fn ready_hits(api: &Api) -> Result<f64, Error> {
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|line| line.starts_with("precache_edge_ready_hits_total"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0))
}

/// Waits until `precache_edge_ready_hits_total` is `expected`: the edge counts a hit just after
/// its answer is written, so the client can see the answer before the count.
async fn expect_ready_hits(api: &Api, expected: f64) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = ready_hits(api).await?;
        if now == expected {
            return Ok(());
        }
        if now > expected || std::time::Instant::now() > deadline {
            return Err(format!("{now} hits answered by the hit path, expected {expected}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: patcher/2.1\r\n{extra}\r\n")
        .into_bytes()
}

#[tokio::test]
async fn the_hit_path_answers_as_the_proxy_does_and_hands_over_the_rest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log_path = dir.path().join("players.log");
    let log_arg = log_path.display().to_string();
    let server = Server::start_with(
        dir.path(),
        crate::support::server::Options::with_args(&["--edge-access-log", &log_arg]),
    )?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    let body = Bytes::from((0..3000u32).map(|n| (n % 251) as u8).collect::<Vec<u8>>());
    origin.set(
        "/patch/a.pak",
        Behavior::WithHeaders(
            body.clone(),
            vec![
                ("Cache-Control", "max-age=600"),
                ("X-Build", "1234"),
                ("CDN-Cache-Control", "max-age=900"),
            ],
        ),
    );
    let req_id = api
        .prefetch_ok(&token, &[url(HOST, "/patch/a.pak")])
        .await?;
    let task = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    let fetched = origin.count("/patch/a.pak");

    let mut connection = Connection::open(&server.edge).await?;
    // A plain GET: the hit path.
    let before = ready_hits(&api).await?;
    connection.send(&get("/patch/a.pak", "")).await?;
    let fast = connection.answer(false).await?;
    expect_ready_hits(&api, before + 1.0).await?;
    // The same with a field the hit path leaves to the proxy, on the same connection.
    connection
        .send(&get("/patch/a.pak", "X-Debug: 1\r\n"))
        .await?;
    let proxied = connection.answer(false).await?;
    expect_ready_hits(&api, before + 1.0).await?;

    assert_eq!(fast.status_line, "HTTP/1.1 200 OK");
    assert_eq!(fast.status_line, proxied.status_line);
    assert_eq!(fast.stable_fields(), proxied.stable_fields());
    assert_eq!(fast.body, body);
    assert_eq!(proxied.body, body);
    for answer in [&fast, &proxied] {
        assert_eq!(answer.field("x-cache"), Some("HIT"));
        assert_eq!(answer.field("x-build"), Some("1234"));
        assert_eq!(answer.field("connection"), Some("keep-alive"));
        assert_eq!(answer.field("cdn-cache-control"), None, "tiers only");
        assert!(answer
            .field("age")
            .is_some_and(|age| age.parse::<u64>().is_ok()));
        assert_eq!(answer.field("x-request-id").map(str::len), Some(20));
    }
    assert_ne!(fast.field("x-request-id"), proxied.field("x-request-id"));

    // A head that arrives in two pieces is read whole and answered here.
    let before_split = ready_hits(&api).await?;
    let whole = get("/patch/a.pak", "");
    connection.send(&whole[..20]).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    connection.send(&whole[20..]).await?;
    assert_eq!(connection.answer(false).await?.body, body);
    expect_ready_hits(&api, before_split + 1.0).await?;

    // A range goes to the proxy too, and the connection comes back: the next plain GET is the
    // hit path's again.
    connection
        .send(&get("/patch/a.pak", "Range: bytes=10-19\r\n"))
        .await?;
    let ranged = connection.answer(false).await?;
    assert_eq!(ranged.status_line, "HTTP/1.1 206 Partial Content");
    assert_eq!(ranged.body, body[10..20]);
    connection.send(&get("/patch/a.pak", "")).await?;
    assert_eq!(connection.answer(false).await?.body, body);
    expect_ready_hits(&api, before + 3.0).await?;

    // Pipelined on a new connection: two hits, a HEAD, a request for the proxy and a hit
    // again, sent in one write, are answered in order.
    let mut pipelined = Connection::open(&server.edge).await?;
    let before = ready_hits(&api).await?;
    let mut burst = get("/patch/a.pak", "");
    burst.extend(
        format!("HEAD /patch/a.pak HTTP/1.1\r\nHost: {HOST}\r\nAccept: */*\r\n\r\n").as_bytes(),
    );
    burst.extend(get("/patch/a.pak", "Accept-Encoding: gzip\r\n"));
    burst.extend(get("/missing.pak", ""));
    burst.extend(get("/patch/a.pak", ""));
    origin.set("/missing.pak", Behavior::Status(404));
    pipelined.send(&burst).await?;
    let first = pipelined.answer(false).await?;
    let head = pipelined.answer(true).await?;
    let third = pipelined.answer(false).await?;
    let fourth = pipelined.answer(false).await?;
    let fifth = pipelined.answer(false).await?;
    assert_eq!(
        fifth.body, body,
        "a request pipelined behind the proxy's is answered"
    );
    assert_eq!(first.body, body);
    assert_eq!(head.field("content-length"), Some("3000"));
    assert_eq!(head.field("x-cache"), Some("HIT"));
    assert_eq!(third.body, body);
    assert!(fourth.status_line.starts_with("HTTP/1.1 404"), "{fourth:?}");
    expect_ready_hits(&api, before + 4.0).await?;
    assert_eq!(
        origin.count("/patch/a.pak"),
        fetched,
        "every hit without the origin"
    );

    // A connection whose first request is a miss (the proxy's) has its later hits answered
    // by the hit path.
    origin.set(
        "/patch/b.pak",
        Behavior::WithHeaders(body.clone(), vec![("Cache-Control", "max-age=600")]),
    );
    let mut cold = Connection::open(&server.edge).await?;
    cold.send(&get("/patch/b.pak", "")).await?;
    assert_eq!(cold.answer(false).await?.field("x-cache"), Some("MISS"));
    // The fill is published a moment after the player has its answer (until then the proxy
    // serves the next requests from the fill): wait for the first hit-path answer.
    let mut before = ready_hits(&api).await?;
    'published: for _ in 0..50 {
        cold.send(&get("/patch/b.pak", "")).await?;
        assert_eq!(cold.answer(false).await?.body, body);
        for _ in 0..20 {
            if ready_hits(&api).await? > before {
                before += 1.0;
                break 'published;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for _ in 0..3 {
        cold.send(&get("/patch/b.pak", "")).await?;
        let hit = cold.answer(false).await?;
        assert_eq!(
            (hit.field("x-cache"), &hit.body),
            (Some("HIT"), &body.to_vec())
        );
    }
    expect_ready_hits(&api, before + 3.0).await?;

    // Purged, the object is no longer answered from the cache by either path.
    let refresh_id = api
        .refresh_ok(&token, json!({"urls": [url(HOST, "/patch/a.pak")]}))
        .await?;
    api.wait_final_of("refresh", &token, &refresh_id, Duration::from_secs(30))
        .await?;
    let mut after = Connection::open(&server.edge).await?;
    after.send(&get("/patch/a.pak", "")).await?;
    let refetched = after.answer(false).await?;
    assert_eq!(refetched.field("x-cache"), Some("MISS"));
    assert_eq!(origin.count("/patch/a.pak"), fetched + 1);

    // Hits of both paths are in the access log, with their request ids.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let ids = [&fast, &proxied].map(|a| a.field("x-request-id").unwrap_or("?").to_string());
        if ids.iter().all(|id| log.contains(id.as_str())) {
            let line = log
                .lines()
                .find(|line| line.contains(ids[0].as_str()))
                .unwrap_or_default();
            let row: serde_json::Value = serde_json::from_str(line)?;
            assert_eq!(row["cache"], "HIT", "{row}");
            assert_eq!(row["status"], 200, "{row}");
            assert_eq!(row["bytes"], 3000, "{row}");
            assert_eq!(row["path"], "/patch/a.pak", "{row}");
            assert_eq!(row["user_agent"], "patcher/2.1", "{row}");
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("request ids {ids:?} not in the access log: {log}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
