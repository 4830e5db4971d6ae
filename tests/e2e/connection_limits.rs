//! Clients cannot hold the API's sockets (issue 13, "Limits on connections"): with thousands of
//! idle and half-sent connections open, a health check and a login are still answered; the
//! half-sent ones are closed by the header timeout and the idle ones, later, by the idle
//! timeout; a kept-alive connection ends at the idle timeout, not the header one; oversized
//! headers are refused with 431.
//!
//! The helpers take a listener's address, so the same siege can be laid to any listener.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::server::{Options, ADMIN_PASSWORD};
use crate::support::{Api, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

const IDLE: usize = 2_000;
const HALF_SENT: usize = 1_000;
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Lets this test process open as many sockets as its hard limit allows.
fn raise_own_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    if let Some(hard) = getrlimit(Resource::Nofile).maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
}

/// Connections held open against one listener.
struct Siege {
    /// Sent the start of a request header and nothing more.
    half_sent: Vec<TcpStream>,
    /// Connected, never sent a byte; opened after the half-sent ones.
    idle: Vec<TcpStream>,
    /// When the first idle one was opened.
    idle_since: Instant,
}

/// Opens `half_sent` connections that send `header_start`, then `idle` silent ones, to `addr`.
async fn lay_siege(
    addr: &str,
    half_sent: usize,
    header_start: &[u8],
    idle: usize,
) -> Result<Siege, Error> {
    let mut streams = Vec::with_capacity(half_sent);
    for _ in 0..half_sent {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(header_start).await?;
        streams.push(stream);
    }
    let mut siege = Siege {
        half_sent: streams,
        idle: Vec::with_capacity(idle),
        idle_since: Instant::now(),
    };
    for _ in 0..idle {
        siege.idle.push(TcpStream::connect(addr).await?);
    }
    Ok(siege)
}

/// Waits until the server closes `stream` (EOF or reset), at most `limit`.
async fn closed_within(mut stream: TcpStream, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// How many of `streams` the server closes within `limit`, read concurrently.
async fn count_closed(streams: Vec<TcpStream>, limit: Duration) -> usize {
    let mut reads = tokio::task::JoinSet::new();
    for stream in streams {
        reads.spawn(closed_within(stream, limit));
    }
    let mut closed = 0;
    while let Some(result) = reads.join_next().await {
        if matches!(result, Ok(true)) {
            closed += 1;
        }
    }
    closed
}

/// How many of `streams` the server has closed already (without waiting).
fn already_closed(streams: &[TcpStream]) -> usize {
    let mut buf = [0u8; 1];
    streams
        .iter()
        .filter(|stream| !matches!(stream.try_read(&mut buf), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count()
}

fn started() -> Result<(tempfile::TempDir, Server), Error> {
    raise_own_open_file_limit();
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        Options {
            args: vec![
                "--api-header-timeout".into(),
                format!("{}s", HEADER_TIMEOUT.as_secs()),
                "--api-idle-timeout".into(),
                format!("{}s", IDLE_TIMEOUT.as_secs()),
            ],
            ..Options::default()
        },
    )?;
    Ok((dir, server))
}

fn api_addr(server: &Server) -> String {
    server.api.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_do_not_keep_clients_out() -> TestResult {
    let (_dir, server) = started()?;
    let api = Api::new(&server);
    let siege = lay_siege(
        &api_addr(&server),
        HALF_SENT,
        b"POST /cdn_api/auth/tokens HTTP/1.1\r\nHost: api\r\nX-Slow: ",
        IDLE,
    )
    .await?;

    // With three thousand sockets held, a health check and a login are answered (a bound on
    // the wait, not a measurement).
    let health = tokio::time::timeout(
        Duration::from_secs(10),
        api.call(reqwest::Method::GET, "/cdn_api/health", None, None),
    )
    .await??;
    assert_eq!(health.status, 200, "{}", health.text());
    tokio::time::timeout(Duration::from_secs(10), api.login("admin", ADMIN_PASSWORD)).await??;

    // The half-sent headers are cut off by the header timeout...
    let closed = count_closed(siege.half_sent, Duration::from_secs(8)).await;
    assert_eq!(closed, HALF_SENT, "half-sent connections closed by the API");
    // ...while the silent ones are still open: they are only idle, which they may be longer.
    // (Opening thousands of sockets takes seconds; the check is for a siege opened in time.)
    if siege.idle_since.elapsed() < IDLE_TIMEOUT - Duration::from_secs(1) {
        assert_eq!(already_closed(&siege.idle), 0, "idle connections kept");
    }
    // Then the idle timeout closes them too.
    let closed = count_closed(siege.idle, IDLE_TIMEOUT + Duration::from_secs(10)).await;
    assert_eq!(closed, IDLE, "idle connections closed by the API");
    Ok(())
}

#[tokio::test]
async fn a_kept_alive_connection_waits_the_idle_timeout_not_the_header_one() -> TestResult {
    let (_dir, server) = started()?;
    let mut stream = TcpStream::connect(api_addr(&server)).await?;
    stream
        .write_all(b"GET /cdn_api/health HTTP/1.1\r\nHost: api\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"zt_api\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await??;
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let answered_at = Instant::now();
    // Between requests no header has begun: only the idle timeout counts.
    tokio::time::sleep(HEADER_TIMEOUT * 2).await;
    assert_eq!(already_closed(std::slice::from_ref(&stream)), 0);
    assert!(closed_within(stream, IDLE_TIMEOUT + Duration::from_secs(5)).await);
    assert!(answered_at.elapsed() >= IDLE_TIMEOUT - Duration::from_millis(500));
    Ok(())
}

#[tokio::test]
async fn a_header_trickled_a_byte_at_a_time_is_cut_off() -> TestResult {
    let (_dir, server) = started()?;
    let mut stream = TcpStream::connect(api_addr(&server)).await?;
    let started = Instant::now();
    let request = b"GET /cdn_api/health HTTP/1.1\r\nHost: api\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_off = false;
    for byte in request {
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if already_closed(std::slice::from_ref(&stream)) > 0 {
            cut_off = true;
            break;
        }
    }
    assert!(
        cut_off,
        "a header sent over {:?} was read",
        started.elapsed()
    );
    assert!(
        started.elapsed() < IDLE_TIMEOUT,
        "cut off by the header timeout"
    );
    Ok(())
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() -> TestResult {
    let (_dir, server) = started()?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("{}/cdn_api/health", server.api);
    let big = http
        .get(&url)
        .header("X-Big", "a".repeat(80 << 10))
        .send()
        .await?;
    assert_eq!(big.status(), 431);
    let mut many = http.get(&url);
    for n in 0..150 {
        many = many.header(format!("x-field-{n}"), "1");
    }
    assert_eq!(many.send().await?.status(), 431);
    // Within the limits, the same request is answered.
    assert_eq!(http.get(&url).send().await?.status(), 200);
    Ok(())
}
