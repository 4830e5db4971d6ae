//! The edge's access log (`--edge-access-log`): a JSON line per player request, reopened on
//! SIGHUP without losing or tearing a line; per-domain traffic in the edge's metrics.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::support::server::Options;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn start(dir: &Path) -> Result<(Server, PathBuf), Error> {
    let log = dir.join("access.log");
    let server = Server::start_with(
        &dir.join("data"),
        Options {
            args: vec!["--edge-access-log".into(), log.display().to_string()],
            ..Options::default()
        },
    )?;
    Ok((server, log))
}

/// Every line of the files, each parsed as one JSON object (a torn line fails the test).
fn lines(files: &[&Path]) -> Result<Vec<Value>, Error> {
    let mut all = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error.into()),
        };
        for line in text.lines() {
            all.push(
                serde_json::from_str(line)
                    .map_err(|e| format!("torn or bad line {line:?}: {e}"))?,
            );
        }
    }
    Ok(all)
}

/// Waits (bounded) until the files hold `count` lines; the writer flushes every 200 ms.
async fn wait_lines(files: &[&Path], count: usize) -> Result<Vec<Value>, Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = lines(files)?;
        if found.len() >= count || Instant::now() > deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn hits_misses_ranges_and_unknown_hosts_are_logged_and_counted_per_domain() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, log) = start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    api.user_with_domain("alice", HOST, &origin.url()).await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"0123456789")));

    let miss = api.edge_get(HOST, "/a.pak?v=1").await?;
    let miss_id = request_id(&miss);
    assert_eq!(miss.bytes().await?.len(), 10);
    // The fill is published just after the last byte went out.
    let mut hit = api.edge_get(HOST, "/a.pak?v=1").await?;
    for _ in 0..100 {
        if hit.headers()["x-cache"] == "HIT" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        hit = api.edge_get(HOST, "/a.pak?v=1").await?;
    }
    assert_eq!(hit.headers()["x-cache"], "HIT");
    let hit_id = request_id(&hit);
    hit.bytes().await?;
    let range = api
        .edge_get_with(
            HOST,
            "/a.pak?v=1",
            &[("range", "bytes=2-5"), ("user-agent", "launcher/2.1")],
        )
        .await?;
    assert_eq!(range.status(), 206);
    let range_id = request_id(&range);
    assert_eq!(range.bytes().await?, "2345");
    let unknown = api.edge_get("unknown.example.net", "/x").await?;
    assert_eq!(unknown.status(), 404);
    let unknown_id = request_id(&unknown);

    let found = wait_lines(&[&log], 4).await?;
    let by_id = |id: &str| -> Result<&Value, Error> {
        found
            .iter()
            .find(|line| line["request_id"] == id)
            .ok_or_else(|| format!("no line for request {id:?} in {found:?}").into())
    };
    // Every request answered has exactly one line: the misses before the hit included.
    let ids: HashSet<&str> = found
        .iter()
        .filter_map(|line| line["request_id"].as_str())
        .collect();
    assert_eq!(ids.len(), found.len(), "{found:?}");

    let miss = by_id(&miss_id)?;
    assert_eq!(miss["cache"], "MISS", "{miss}");
    assert_eq!(miss["status"], 200);
    assert_eq!(miss["bytes"], 10);
    assert_eq!(miss["upstream_status"], 200, "{miss}");
    assert!(miss["upstream_ms"].as_f64().is_some(), "{miss}");
    assert_eq!(miss["host"], HOST);
    assert_eq!(miss["method"], "GET");
    assert_eq!(miss["path"], "/a.pak?v=1");
    assert_eq!(miss["client"], "127.0.0.1");
    assert!(miss["ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{miss}");
    let time = miss["time"].as_str().unwrap_or_default();
    assert!(
        time.parse::<jiff::Timestamp>().is_ok() && time.ends_with('Z'),
        "RFC 3339: {time}"
    );

    let hit = by_id(&hit_id)?;
    assert_eq!(hit["cache"], "HIT", "{hit}");
    assert_eq!(hit["bytes"], 10);
    assert!(hit.get("upstream_status").is_none(), "{hit}");

    let range = by_id(&range_id)?;
    assert_eq!(range["status"], 206, "{range}");
    assert_eq!(range["bytes"], 4);
    assert_eq!(range["range"], "bytes=2-5");
    assert_eq!(range["user_agent"], "launcher/2.1");

    let unknown = by_id(&unknown_id)?;
    assert_eq!(unknown["status"], 404, "{unknown}");
    assert_eq!(unknown["cache"], "NONE");
    assert_eq!(unknown["host"], "unknown.example.net");
    assert_eq!(origin.count("/a.pak"), 1);

    // Per-domain figures: registered domains only.
    let metrics = reqwest::get(format!("{}/metrics", api.edge_admin))
        .await?
        .text()
        .await?;
    let sample = |name: &str, labels: &[&str]| -> Option<f64> {
        metrics.lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let ok = series.starts_with(&format!("{name}{{"))
                && labels.iter().all(|label| series.contains(label));
            ok.then(|| value.parse().ok()).flatten()
        })
    };
    let domain = format!("domain=\"{HOST}\"");
    let hits = sample(
        "precache_edge_domain_requests_total",
        &[&domain, "cache=\"hit\""],
    )
    .unwrap_or(0.0);
    let misses = sample(
        "precache_edge_domain_requests_total",
        &[&domain, "cache=\"miss\""],
    )
    .unwrap_or(0.0);
    let logged_hits = found
        .iter()
        .filter(|line| line["host"] == HOST && line["cache"] == "HIT")
        .count();
    assert_eq!(hits, logged_hits as f64, "{metrics}");
    assert_eq!(misses, 1.0, "{metrics}");
    let sent: f64 = found
        .iter()
        .filter(|line| line["host"] == HOST)
        .filter_map(|line| line["bytes"].as_f64())
        .sum();
    assert_eq!(
        sample("precache_edge_domain_bytes_sent_total", &[&domain]),
        Some(sent),
        "{metrics}"
    );
    assert_eq!(
        sample("precache_edge_domain_upstream_bytes_total", &[&domain]),
        Some(10.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains("unknown.example.net"),
        "unregistered hosts make no series"
    );
    Ok(())
}

#[tokio::test]
async fn sighup_under_load_reopens_the_log_and_every_request_has_one_whole_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, log) = start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    api.user_with_domain("alice", HOST, &origin.url()).await?;
    origin.set("/hot.pak", Behavior::Body(Bytes::from(vec![7u8; 2048])));

    const WORKERS: usize = 8;
    let rotated = dir.path().join("access.log.1");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let api = api.clone();
        let stop = std::sync::Arc::clone(&stop);
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            // Bounded: the test stops them well before this.
            while ids.len() < 5_000 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = api.edge_get(HOST, "/hot.pak").await?;
                ids.push(request_id(&response));
                response.bytes().await?;
            }
            Ok::<_, Error>(ids)
        }));
    }
    // Rotate as logrotate does, while requests are in flight: rename, then SIGHUP.
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines(&[&log])?.len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::rename(&log, &rotated)?;
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()?;
    assert!(sent.success());
    // The writer reopens the path; let a few hundred more requests land in the new file.
    while lines(&[&log])?.len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut expected = HashSet::new();
    let mut answered = 0;
    for worker in workers {
        let ids = worker.await??;
        answered += ids.len();
        expected.extend(ids);
    }
    assert_eq!(expected.len(), answered, "ids are unique");

    let found = wait_lines(&[&rotated, &log], answered).await?;
    let logged: HashSet<String> = found
        .iter()
        .filter_map(|line| line["request_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(found.len(), answered, "one line per request");
    assert_eq!(logged, expected);
    assert!(
        lines(&[&log])?.len() >= 300 && lines(&[&rotated])?.len() >= 300,
        "both files hold lines; server log:\n{}",
        server.log()
    );
    // The process is still serving after the signal.
    assert_eq!(api.edge_get(HOST, "/hot.pak").await?.status(), 200);
    Ok(())
}
