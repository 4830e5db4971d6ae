//! The edge against hostile players (issue 13, "Security review"; docs/security.md): a request
//! cannot name another host than the domain it is routed and keyed by, cannot smuggle a second
//! request to the origin, cannot make the origin serve other content under an unkeyed header,
//! cannot reach files outside the cache; and secrets never reach the logs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::server::{Options, ADMIN_PASSWORD};
use crate::support::{Api, Server, TestResult};

const HOST: &str = "secure.example.com";
const OTHER_HOST: &str = "other.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// An origin on raw TCP that records every request head (and body) it receives, and answers
/// `200` with a body naming the `X-Forwarded-Host` it was given (as frameworks that build links
/// from it do), cacheable for a minute.
#[derive(Clone)]
struct RecordingOrigin {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RecordingOrigin {
    async fn start() -> std::io::Result<RecordingOrigin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let origin = RecordingOrigin {
            addr: listener.local_addr()?,
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let recorder = origin.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let _ = recorder.serve(stream).await;
                });
            }
        });
        Ok(origin)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn serve(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut pending = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let head_end = loop {
                if let Some(end) = find(&pending, b"\r\n\r\n") {
                    break end + 4;
                }
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                pending.extend_from_slice(&buf[..n]);
            };
            let head = String::from_utf8_lossy(&pending[..head_end]).to_string();
            let chunked = field(&head, "transfer-encoding")
                .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"));
            // A chunked body ends with the last chunk and an empty trailer section; the tests'
            // bodies hold no such sequence before their end.
            let length = if chunked {
                loop {
                    if let Some(end) = find(&pending[head_end..], b"\r\n0\r\n\r\n") {
                        break end + 7;
                    }
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    pending.extend_from_slice(&buf[..n]);
                }
            } else {
                field(&head, "content-length")
                    .and_then(|value| value.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            while pending.len() < head_end + length {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                pending.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&pending[head_end..head_end + length]).to_string();
            pending.drain(..head_end + length);
            self.requests
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(format!("{head}{body}"));
            let answer = format!(
                "served for {}\n",
                field(&head, "x-forwarded-host").unwrap_or("the domain")
            );
            let response = format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
            stream.write_all(response.as_bytes()).await?;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The value of header `name` in a request head.
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// Sends raw bytes to the edge on a fresh connection and returns everything it answers until
/// it closes the connection or stays silent for a second.
async fn raw_exchange(edge: &str, request: &[u8]) -> Result<String, Error> {
    let mut stream = TcpStream::connect(edge).await?;
    stream.write_all(request).await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&answer).to_string())
}

async fn started(options: Options) -> Result<(Server, RecordingOrigin, tempfile::TempDir), Error> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(dir.path(), options)?;
    let origin = RecordingOrigin::start().await?;
    let api = Api::new(&server);
    api.user_with_domain("secure", HOST, &origin.url()).await?;
    Ok((server, origin, dir))
}

#[tokio::test]
async fn an_absolute_form_target_never_names_another_host_to_the_origin() -> TestResult {
    let (server, origin, _dir) = started(Options::default()).await?;
    // A target naming another host than `Host`: refused as ambiguous, nothing reaches the
    // origin (an origin must follow the target, RFC 9112 §3.2.2, so the edge would otherwise key
    // one host's answer under another's name).
    let answer = raw_exchange(
        &server.edge,
        format!("GET http://{OTHER_HOST}/a.pak HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 400"), "answer: {answer}");
    assert!(origin.requests().is_empty());

    // An absolute target that agrees with `Host` is served, and the origin receives the origin
    // form only: an absolute target could name another of the origin server's hosts.
    let answer = raw_exchange(
        &server.edge,
        format!("GET http://{HOST}/b.pak?v=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "answer: {answer}");
    let requests = origin.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("GET /b.pak?v=1 HTTP/1.1\r\n"),
        "origin saw: {}",
        requests[0]
    );
    // And it was stored under the registered domain: a plain request is a hit.
    let response = Api::new(&server).edge_get(HOST, "/b.pak?v=1").await?;
    assert_eq!(
        response.headers().get("x-cache").map(|v| v.as_bytes()),
        Some(&b"HIT"[..])
    );
    assert_eq!(origin.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_request_cannot_smuggle_a_second_one_to_the_origin() -> TestResult {
    let (server, origin, _dir) = started(Options::default()).await?;
    // Content-Length and Transfer-Encoding together: the chunked framing wins and the length
    // is dropped (RFC 9112 §6.3), so the "smuggled" request stays body bytes.
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let chunk = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let request = format!(
        "POST /form HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
    );
    let _ = raw_exchange(&server.edge, request.as_bytes()).await?;
    // Two different lengths: refused outright.
    let answer = raw_exchange(
        &server.edge,
        format!(
            "POST /form HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody{smuggled}"
        )
        .as_bytes(),
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 400"), "answer: {answer}");
    let requests = origin.requests();
    assert!(
        requests
            .iter()
            .all(|request| !request.starts_with("GET /smuggled")),
        "the origin received a smuggled request: {requests:?}"
    );
    assert!(requests.len() <= 1, "the origin saw {requests:?}");
    Ok(())
}

#[tokio::test]
async fn unkeyed_fields_that_override_the_host_or_url_never_reach_the_origin() -> TestResult {
    let (server, origin, _dir) = started(Options::default()).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve(HOST, server.edge.parse()?)
        .build()?;
    let port = server.edge.rsplit(':').next().unwrap_or_default();
    let poisoned = client
        .get(format!("http://{HOST}:{port}/page.html"))
        .header("X-Forwarded-Host", "attacker.example")
        .header("X-Original-URL", "/admin")
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await?;
    assert_eq!(poisoned.text().await?, "served for the domain\n");
    let requests = origin.requests();
    assert_eq!(requests.len(), 1);
    for name in [
        "x-forwarded-host",
        "x-original-url",
        "x-http-method-override",
    ] {
        assert_eq!(field(&requests[0], name), None, "{name} was forwarded");
    }
    // Everyone else gets the honest copy from the cache.
    let response = Api::new(&server).edge_get(HOST, "/page.html").await?;
    assert_eq!(response.text().await?, "served for the domain\n");
    Ok(())
}

#[tokio::test]
async fn dot_segments_stay_in_the_origin_s_namespace_and_the_cache_holds_only_hashed_names(
) -> TestResult {
    let (server, origin, dir) = started(Options::default()).await?;
    for target in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/domains.json",
        "/..%2f..%2fsecret.key",
    ] {
        let answer = raw_exchange(
            &server.edge,
            format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        // Whatever the status, the bytes are the origin's, never a file of the edge's host.
        assert!(!answer.contains("root:"), "answer: {answer}");
        assert!(!answer.contains("\"revision\""), "answer: {answer}");
    }
    assert!(origin.requests().len() <= 3);
    // Every file the cache wrote is named by a hash, never by a request's path.
    let mut names = Vec::new();
    let mut pending = vec![dir.path().join("edge").join("cache")];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                names.push(entry.file_name().to_string_lossy().to_string());
            }
        }
    }
    assert!(!names.is_empty(), "the origin's answers were cached");
    for name in &names {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'.' || b.is_ascii_lowercase()),
            "cache file {name}"
        );
        assert!(!name.contains("passwd") && !name.contains("domains") && !name.contains("secret"));
    }
    Ok(())
}

#[tokio::test]
async fn tokens_passwords_and_players_credentials_never_reach_the_logs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let access_log = dir.path().join("access.log");
    let (server, _origin, _data) = started(Options {
        args: vec![
            "--log-format".into(),
            "json".into(),
            "--edge-access-log".into(),
            access_log.display().to_string(),
        ],
        env: vec![("RUST_LOG".into(), "debug".into())],
        ..Options::default()
    })
    .await?;
    let api = Api::new(&server);
    let token = api.login("secure", "secure-password").await?;
    let admin = api.admin().await?;
    // A wrong password, a prefetch, a player with credentials.
    let wrong = api
        .call(
            Method::POST,
            "/cdn_api/auth/tokens",
            None,
            Some(json!({"username": "secure", "password": "a-wrong-guess-4711"})),
        )
        .await?;
    assert_eq!(wrong.ret(), 1003);
    api.prefetch(&token, &[crate::support::client::url(HOST, "/x.pak")])
        .await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve(HOST, server.edge.parse()?)
        .build()?;
    let port = server.edge.rsplit(':').next().unwrap_or_default();
    client
        .get(format!("http://{HOST}:{port}/x.pak"))
        .header("Authorization", "Bearer player-secret-0815")
        .header("Cookie", "session=player-cookie-0815")
        .send()
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = server.log();
    for secret in [
        token.as_str(),
        admin.as_str(),
        ADMIN_PASSWORD,
        "secure-password",
        "a-wrong-guess-4711",
        "player-secret-0815",
        "player-cookie-0815",
    ] {
        let line = log.lines().find(|line| line.contains(secret));
        assert!(line.is_none(), "the server log holds {secret}: {line:?}");
    }
    let access = std::fs::read_to_string(&access_log)?;
    assert!(access.contains("/x.pak"), "access log: {access}");
    assert!(!access.contains("player-secret-0815") && !access.contains("player-cookie-0815"));
    Ok(())
}
