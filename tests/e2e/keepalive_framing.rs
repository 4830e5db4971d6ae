//! Kept-alive connections through the edge stay correctly framed (issue 16): thousands of mixed
//! exchanges (hits, misses, HEAD, 304s, 204s, interim 1xx from the origin, ranges) on a few
//! client connections, each answer parsed off the wire, none lost.
//!
//! Both ends are raw TCP: the origin, to send what a well-behaved HTTP server would not (1xx
//! before the answer, a 204 with a Content-Length); the client, to see the framing itself,
//! which an HTTP client library would repair or hide.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Api, Server, TestResult};

const HOST: &str = "framing.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The body of the cacheable object.
const OBJECT: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\n";

/// How long one answer may take before the exchange counts as lost.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// An origin speaking raw HTTP/1.1 on kept-alive connections; counts requests.
struct RawOrigin {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl RawOrigin {
    async fn start() -> std::io::Result<RawOrigin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = serve_origin_connection(stream, counter).await;
                });
            }
        });
        Ok(RawOrigin { addr, requests })
    }
}

/// The answer to `method path` (with the request's `If-None-Match`, if any): whole bytes on the
/// wire, interim responses included.
fn origin_answer(method: &str, path: &str, if_none_match: Option<&str>) -> Vec<u8> {
    let body_of = |body: &[u8]| {
        if method == "HEAD" {
            Vec::new()
        } else {
            body.to_vec()
        }
    };
    let response = |head: String, body: &[u8]| {
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body_of(body));
        bytes
    };
    let fresh = "Cache-Control: max-age=3600\r\nETag: \"v1\"\r\n";
    match path {
        "/object" => response(
            format!("HTTP/1.1 200 OK\r\n{fresh}Content-Length: {}\r\n\r\n", OBJECT.len()),
            OBJECT,
        ),
        // Always revalidated: stored, but stale at once.
        "/revalidated" if if_none_match == Some("\"r1\"") => {
            // A 304 may carry the representation's Content-Length; it still has no body.
            format!(
                "HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=0\r\nETag: \"r1\"\r\nContent-Length: {}\r\n\r\n",
                OBJECT.len()
            )
            .into_bytes()
        }
        "/revalidated" => response(
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=0\r\nETag: \"r1\"\r\nContent-Length: {}\r\n\r\n",
                OBJECT.len()
            ),
            OBJECT,
        ),
        "/early-hints" => {
            let mut bytes =
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_vec();
            bytes.extend(response(
                format!("HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n", OBJECT.len()),
                OBJECT,
            ));
            bytes
        }
        "/processing" => {
            let mut bytes = b"HTTP/1.1 102 Processing\r\n\r\n".to_vec();
            bytes.extend(response(
                "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 3\r\n\r\n".into(),
                b"ok\n",
            ));
            bytes
        }
        "/no-content" => b"HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\n\r\n".to_vec(),
        // RFC 9110 forbids this Content-Length; origins send it anyway, and nothing follows.
        "/no-content-with-length" => {
            b"HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\nContent-Length: 26\r\n\r\n"
                .to_vec()
        }
        // A body 26 bytes longer than its Content-Length: a broken origin, or one that miscounts.
        "/overlong" => response(
            "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 10\r\n\r\n".into(),
            b"0123456789abcdefghijklmnopqrstuvwxyz",
        ),
        "/chunked" => {
            let mut bytes =
                b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
            if method != "HEAD" {
                bytes.extend_from_slice(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
            }
            bytes
        }
        _ => response(
            "HTTP/1.1 404 Not Found\r\nCache-Control: no-store\r\nContent-Length: 10\r\n\r\n"
                .into(),
            b"not found\n",
        ),
    }
}

async fn serve_origin_connection(
    stream: TcpStream,
    requests: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    loop {
        let Some(head) = read_head(&mut reader).await? else {
            return Ok(());
        };
        requests.fetch_add(1, Ordering::Relaxed);
        let mut words = head.start_line.split(' ');
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").to_string();
        if path == "/hangup" {
            // Closes without answering, as a crashing origin does: the edge answers 502.
            return Ok(());
        }
        // The edge only sends bodiless requests here.
        let answer = origin_answer(
            &method,
            &path,
            head.fields.get("if-none-match").map(String::as_str),
        );
        // Interim answers go out on their own, a moment before the rest, as a real origin
        // sends them while it works on the answer; sometimes the final head is split too.
        let mut rest = &answer[..];
        while rest.starts_with(b"HTTP/1.1 1") {
            let head_end = rest
                .windows(4)
                .position(|window| window == b"\r\n\r\n")
                .map_or(rest.len(), |at| at + 4);
            write_half.write_all(&rest[..head_end]).await?;
            tokio::time::sleep(Duration::from_millis(1)).await;
            rest = &rest[head_end..];
        }
        let split = if requests.load(Ordering::Relaxed).is_multiple_of(3) {
            rest.len() / 2
        } else {
            rest.len()
        };
        write_half.write_all(&rest[..split]).await?;
        if split < rest.len() {
            tokio::task::yield_now().await;
            write_half.write_all(&rest[split..]).await?;
        }
    }
}

/// A start line and its fields (names lower-cased, the last of a repeated name kept).
struct Head {
    start_line: String,
    fields: HashMap<String, String>,
}

/// Reads one message head; `None` at a clean end of the stream before it.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Head>> {
    let mut start_line = String::new();
    if reader.read_line(&mut start_line).await? == 0 {
        return Ok(None);
    }
    let mut fields = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection ended inside a head after {start_line:?}"),
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Ok(Some(Head {
        start_line: start_line.trim_end().to_string(),
        fields,
    }))
}

/// One request of the mix and what a correct answer looks like.
#[derive(Debug, Clone, Copy)]
enum Exchange {
    GetObject,
    HeadObject,
    ConditionalObject,
    RangeOfObject,
    GetRevalidated,
    EarlyHints,
    Processing,
    NoContent,
    NoContentWithLength,
    Chunked,
    HeadChunked,
    Missing,
    OriginHangsUp,
    UnknownHost,
    Overlong,
}

const MIX: [Exchange; 15] = [
    Exchange::GetObject,
    Exchange::HeadObject,
    Exchange::ConditionalObject,
    Exchange::RangeOfObject,
    Exchange::GetRevalidated,
    Exchange::EarlyHints,
    Exchange::Processing,
    Exchange::NoContent,
    Exchange::NoContentWithLength,
    Exchange::Chunked,
    Exchange::HeadChunked,
    Exchange::Missing,
    Exchange::OriginHangsUp,
    Exchange::UnknownHost,
    Exchange::Overlong,
];

impl Exchange {
    /// The request bytes.
    fn request(self) -> String {
        let (method, path, extra) = match self {
            Exchange::GetObject => ("GET", "/object", ""),
            Exchange::HeadObject => ("HEAD", "/object", ""),
            Exchange::ConditionalObject => ("GET", "/object", "If-None-Match: \"v1\"\r\n"),
            Exchange::RangeOfObject => ("GET", "/object", "Range: bytes=10-19\r\n"),
            Exchange::GetRevalidated => ("GET", "/revalidated", ""),
            Exchange::EarlyHints => ("GET", "/early-hints", ""),
            Exchange::Processing => ("GET", "/processing", ""),
            Exchange::NoContent => ("GET", "/no-content", ""),
            Exchange::NoContentWithLength => ("GET", "/no-content-with-length", ""),
            Exchange::Chunked => ("GET", "/chunked", ""),
            Exchange::HeadChunked => ("HEAD", "/chunked", ""),
            Exchange::Missing => ("GET", "/missing", ""),
            Exchange::OriginHangsUp => ("GET", "/hangup", ""),
            Exchange::UnknownHost => ("GET", "/object", ""),
            Exchange::Overlong => ("GET", "/overlong", ""),
        };
        let host = match self {
            Exchange::UnknownHost => "unknown.example.com",
            _ => HOST,
        };
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")
    }

    fn is_head(self) -> bool {
        matches!(self, Exchange::HeadObject | Exchange::HeadChunked)
    }

    /// The final status and body a correct answer has.
    fn expected(self) -> (u16, &'static [u8]) {
        match self {
            Exchange::GetObject | Exchange::GetRevalidated | Exchange::EarlyHints => (200, OBJECT),
            Exchange::HeadObject | Exchange::HeadChunked => (200, b""),
            Exchange::ConditionalObject => (304, b""),
            Exchange::RangeOfObject => (206, &OBJECT[10..20]),
            Exchange::Processing => (200, b"ok\n"),
            Exchange::NoContent | Exchange::NoContentWithLength => (204, b""),
            Exchange::Chunked => (200, b"hello world"),
            Exchange::Missing => (404, b"not found\n"),
            Exchange::OriginHangsUp => (502, b""),
            Exchange::UnknownHost => (404, b"unknown host\n"),
            Exchange::Overlong => (200, b"0123456789"),
        }
    }
}

/// A final answer as read off the wire.
struct Reply {
    status: u16,
    interim: Vec<u16>,
    fields: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads one answer to a request (HEAD or not), skipping interim responses, framing the body
/// as RFC 9112 §6.3 says; an answer that is not framed by length or chunks is an error, since
/// it could only end with the connection.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    head_request: bool,
) -> Result<Reply, Error> {
    let mut interim = Vec::new();
    loop {
        let head = read_head(reader)
            .await?
            .ok_or("the connection ended before an answer")?;
        let status: u16 = head
            .start_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not a status line: {:?}", head.start_line))?;
        if (100..200).contains(&status) {
            interim.push(status);
            continue;
        }
        let bodiless = head_request || status == 204 || status == 304;
        let body = if bodiless {
            Vec::new()
        } else if head
            .fields
            .get("transfer-encoding")
            .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"))
        {
            read_chunked(reader).await?
        } else if let Some(length) = head.fields.get("content-length") {
            let length: usize = length.parse()?;
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await?;
            body
        } else {
            return Err(format!("{status} answer delimited by closing the connection").into());
        };
        return Ok(Reply {
            status,
            interim,
            fields: head.fields,
            body,
        });
    }
}

async fn read_chunked<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).await?;
        let size_text = size_line.trim_end().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size line {size_line:?}"))?;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
    }
}

/// Checks one answer against what `exchange` should get.
fn check(exchange: Exchange, reply: &Reply) -> Result<(), Error> {
    let (status, body) = exchange.expected();
    if reply.status != status || reply.body != body {
        return Err(format!(
            "{exchange:?}: {} with {} body bytes, expected {status} with {}",
            reply.status,
            reply.body.len(),
            body.len()
        )
        .into());
    }
    // Interim answers are dropped (docs/api.md): never half of one, never one at all.
    if !reply.interim.is_empty() {
        return Err(format!(
            "{exchange:?}: interim answers {:?} forwarded",
            reply.interim
        )
        .into());
    }
    if matches!(
        exchange,
        Exchange::NoContent | Exchange::NoContentWithLength
    ) && reply.fields.get("content-length").is_some_and(|l| l != "0")
    {
        return Err(format!("{exchange:?}: 204 with Content-Length").into());
    }
    Ok(())
}

/// A server with `HOST` registered against a raw origin.
async fn setup(dir: &std::path::Path) -> Result<(Server, RawOrigin), Error> {
    let server = Server::start(dir)?;
    let api = Api::new(&server);
    let origin = RawOrigin::start().await?;
    let admin = api.admin().await?;
    api.create_user(&admin, "alice").await?;
    api.call(
        Method::POST,
        "/cdn_api/domains",
        Some(&admin),
        Some(
            json!({"domain": HOST, "origin": format!("http://{}", origin.addr), "owner": "alice"}),
        ),
    )
    .await?
    .expect(201, 0)?;
    Ok((server, origin))
}

/// Sends `exchanges` one after another, each after the previous answer, on one connection for
/// as long as the edge keeps it: a client may reuse a connection whose last answer did not say
/// `Connection: close`, and the edge must then answer on it.
async fn run_connection(edge: String, exchanges: Vec<Exchange>) -> Result<usize, Error> {
    let mut connection = None;
    for (n, exchange) in exchanges.iter().enumerate() {
        let (reader, write_half) = match &mut connection {
            Some(open) => open,
            None => {
                let (read_half, write_half) = TcpStream::connect(&edge).await?.into_split();
                connection.insert((BufReader::new(read_half), write_half))
            }
        };
        write_half.write_all(exchange.request().as_bytes()).await?;
        let reply = tokio::time::timeout(ANSWER_LIMIT, read_reply(reader, exchange.is_head()))
            .await
            .map_err(|_| format!("exchange {n} ({exchange:?}): no complete answer in time"))?
            .map_err(|e| format!("exchange {n} ({exchange:?}): {e}"))?;
        check(*exchange, &reply).map_err(|e| format!("exchange {n}: {e}"))?;
        if reply
            .fields
            .get("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
        {
            connection = None;
        }
    }
    Ok(exchanges.len())
}

/// Each exchange alone on a fresh connection, then followed by a GET on the same connection.
#[tokio::test]
async fn each_kind_of_answer_leaves_the_connection_usable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, _origin) = setup(dir.path()).await?;
    for exchange in MIX {
        run_connection(
            server.edge.clone(),
            vec![exchange, exchange, Exchange::GetObject, Exchange::Missing],
        )
        .await
        .map_err(|e| format!("{e}\nedge log:\n{}", server.log()))?;
    }
    Ok(())
}

/// Thousands of mixed exchanges on eight kept-alive connections: every one answered completely.
#[tokio::test]
async fn thousands_of_mixed_exchanges_on_kept_alive_connections_lose_none() -> TestResult {
    const CONNECTIONS: usize = 8;
    const PER_CONNECTION: usize = 400;
    let dir = tempfile::tempdir()?;
    let (server, origin) = setup(dir.path()).await?;
    let connections = (0..CONNECTIONS).map(|connection| {
        // A fixed pseudo-random order per connection, so a failure can be replayed.
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ (connection as u64 + 1);
        let exchanges = (0..PER_CONNECTION)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                MIX[(state % MIX.len() as u64) as usize]
            })
            .collect();
        tokio::spawn(run_connection(server.edge.clone(), exchanges))
    });
    let mut answered = 0;
    for result in futures_util::future::join_all(connections).await {
        answered += result?.map_err(|e| format!("{e}\nedge log:\n{}", server.log()))?;
    }
    assert_eq!(answered, CONNECTIONS * PER_CONNECTION);
    assert!(origin.requests.load(Ordering::Relaxed) > 0);
    Ok(())
}
