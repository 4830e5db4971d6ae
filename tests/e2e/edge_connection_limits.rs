//! Players cannot hold the edge's sockets (issue 13, "Limits on connections"): thousands of idle
//! and half-sent connections are cut off by the edge's idle and header timeouts while a normal
//! request is still answered, a kept-alive connection does not outlive the idle timeout, and an
//! oversized header is refused.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::origin::{Behavior, Origin};
use crate::support::server::Options;
use crate::support::{Api, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

const HOST: &str = "limits.example.com";
const IDLE: usize = 2_000;
const HALF_SENT: usize = 1_000;

/// Lets this test process open as many sockets as the hard limit allows.
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

/// Opens `count` connections, each sending `prefix` (nothing when empty) and then nothing more.
async fn open_many(
    addr: &str,
    count: usize,
    prefix: &'static [u8],
) -> Result<Vec<TcpStream>, Error> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await?;
        if !prefix.is_empty() {
            stream.write_all(prefix).await?;
        }
        streams.push(stream);
    }
    Ok(streams)
}

/// Waits until the server closed `stream` (EOF or reset), at most `limit`; whatever it sent
/// before closing is returned.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

/// Counts how many of `streams` the server closes within `limit`, reading them concurrently.
async fn count_closed(streams: Vec<TcpStream>, limit: Duration) -> usize {
    let mut reads = tokio::task::JoinSet::new();
    for mut stream in streams {
        reads.spawn(async move { closed_within(&mut stream, limit).await.is_some() });
    }
    let mut closed = 0;
    while let Some(result) = reads.join_next().await {
        if matches!(result, Ok(true)) {
            closed += 1;
        }
    }
    closed
}

async fn started() -> Result<(Server, Origin, tempfile::TempDir), Error> {
    raise_own_open_file_limit();
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        Options {
            args: [
                "--edge-idle-timeout",
                "3s",
                "--edge-header-timeout",
                "1s",
                "--edge-max-header-size",
                "16KiB",
            ]
            .map(String::from)
            .to_vec(),
            ..Options::default()
        },
    )?;
    let origin = Origin::start().await?;
    origin.set(
        "/object",
        Behavior::Body(Bytes::from_static(b"object bytes")),
    );
    let api = Api::new(&server);
    api.user_with_domain("limits", HOST, &origin.url()).await?;
    Ok((server, origin, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_cut_off_while_players_are_served() -> TestResult {
    let (server, origin, _dir) = started().await?;
    let api = Api::new(&server);
    let idle = open_many(&server.edge, IDLE, b"").await?;
    let half_sent = open_many(
        &server.edge,
        HALF_SENT,
        b"GET /object HTTP/1.1\r\nHost: limits.example.com\r\nX-Slow: ",
    )
    .await?;

    // With three thousand sockets held open, a player's request is still answered (bounded by
    // a timeout, not measured).
    let response =
        tokio::time::timeout(Duration::from_secs(10), api.edge_get(HOST, "/object")).await??;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await?.as_ref(), b"object bytes");

    // The half-sent headers are cut off by the header timeout (1 s), well before the idle one.
    let started = Instant::now();
    let closed = count_closed(half_sent, Duration::from_secs(8)).await;
    assert_eq!(
        closed, HALF_SENT,
        "half-sent connections closed by the edge"
    );
    // Connections that never sent a byte are closed by the idle timeout (3 s).
    let closed = count_closed(idle, Duration::from_secs(10)).await;
    assert_eq!(closed, IDLE, "idle connections closed by the edge");
    assert!(started.elapsed() < Duration::from_secs(20));

    // None of it reached the origin: only the one player's miss did.
    assert_eq!(origin.total(), 1);
    Ok(())
}

#[tokio::test]
async fn a_header_sent_a_byte_at_a_time_is_cut_off_at_the_header_timeout() -> TestResult {
    let (server, origin, _dir) = started().await?;
    let mut stream = TcpStream::connect(&server.edge).await?;
    // One byte every 300 ms: each read is prompt, the header as a whole is not.
    let request =
        b"GET /object HTTP/1.1\r\nHost: limits.example.com\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut cut_off = false;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let answered = if cut_off {
        Vec::new()
    } else {
        closed_within(&mut stream, Duration::from_secs(5))
            .await
            .ok_or("the edge kept a slow header's connection open")?
    };
    assert!(
        !String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"),
        "a header that took {:?} was served",
        started.elapsed()
    );
    assert_eq!(origin.count("/object"), 0);
    Ok(())
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() -> TestResult {
    let (server, _origin, _dir) = started().await?;
    let mut stream = TcpStream::connect(&server.edge).await?;
    stream
        .write_all(b"GET /object HTTP/1.1\r\nHost: limits.example.com\r\n\r\n")
        .await?;
    // Read the answer (small: one read of the head and body is enough to see it whole).
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"object bytes") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await??;
        if n == 0 {
            return Err("the edge closed a kept-alive connection after one answer".into());
        }
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    // An HTTP/1.1 client that says nothing more: pingora alone would wait for it forever.
    let started = Instant::now();
    closed_within(&mut stream, Duration::from_secs(10))
        .await
        .ok_or("a kept-alive connection outlived the idle timeout")?;
    assert!(started.elapsed() >= Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn an_oversized_header_is_refused() -> TestResult {
    let (server, origin, _dir) = started().await?;
    let mut stream = TcpStream::connect(&server.edge).await?;
    let cookie = "c".repeat(40 << 10);
    let request =
        format!("GET /object HTTP/1.1\r\nHost: limits.example.com\r\nCookie: {cookie}\r\n\r\n");
    // The edge may stop reading (and reset) before the whole header is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let answered = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .ok_or("the edge kept an oversized header's connection open")?;
    let head = String::from_utf8_lossy(&answered);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 4"),
        "an oversized header got: {head}"
    );
    assert_eq!(origin.count("/object"), 0);
    // A normal request right after is served.
    let response = Api::new(&server).edge_get(HOST, "/object").await?;
    assert_eq!(response.status(), 200);
    Ok(())
}
