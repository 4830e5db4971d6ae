//! A test origin on 127.0.0.1 that serves programmed answers and counts every request per path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// What the origin answers for one path.
#[derive(Clone)]
pub enum Behavior {
    /// 200 with this body (ETag and Last-Modified set, no Cache-Control).
    Body(Bytes),
    /// This status with a short body.
    Status(u16),
    /// One status per request in turn (200 serves `body`); the last one repeats.
    Sequence(Vec<u16>, Bytes),
    /// 200 with `size` pseudo-random bytes, streamed in 64 KiB chunks (never held in memory).
    Large(u64),
    /// 200 with `body`, after waiting `delay` before the headers.
    Slow(Duration, Bytes),
    /// 200 with these extra headers.
    WithHeaders(Bytes, Vec<(&'static str, &'static str)>),
    /// `Vary: Accept-Encoding`; the body says whether the request accepted gzip.
    VaryOnEncoding,
    /// Announces `len` bytes, sends the first `sent` of a [`Behavior::Large`] body, then
    /// breaks the connection.
    Truncated(u64, u64),
    /// A [`Behavior::Large`] body sent in 64 KiB chunks with a pause after each.
    SlowLarge(u64, Duration),
    /// This status, exactly these header lines (a name may repeat, nothing is added but what
    /// the HTTP server must) and this body. A status 200 with an `ETag` answers a matching
    /// `If-None-Match` with a 304 carrying the same lines.
    Answer(u16, Vec<(String, String)>, Bytes),
    /// One behavior per request in turn; the last one repeats.
    Then(Vec<Behavior>),
    /// Closes the connection without answering.
    Hangup,
    /// 200 with `<method> <request body length>`, after reading the whole request body.
    Echo,
}

/// Body of [`Behavior::VaryOnEncoding`] for a request that accepts gzip.
pub const GZIP_VARIANT: &[u8] = b"the gzip variant\n";
/// Body of [`Behavior::VaryOnEncoding`] for one that does not.
pub const PLAIN_VARIANT: &[u8] = b"the plain variant\n";

#[derive(Default)]
struct Shared {
    behaviors: HashMap<String, Behavior>,
    counts: HashMap<String, usize>,
    not_modified: HashMap<String, usize>,
    in_flight: usize,
    max_in_flight: usize,
}

/// A running origin.
#[derive(Clone)]
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

/// Length of the pseudo-random block a [`Behavior::Large`] body repeats: a prime, so a block
/// boundary never lines up with a chunk or page boundary.
const BLOCK_LEN: usize = 1_000_003;

fn block() -> &'static [u8] {
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BLOCK.get_or_init(|| {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..BLOCK_LEN)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    })
}

/// The bytes `[offset, offset + len)` of a [`Behavior::Large`] body.
pub fn large_bytes(offset: u64, len: usize) -> Vec<u8> {
    let block = block();
    let mut out = Vec::with_capacity(len);
    let mut position = (offset % BLOCK_LEN as u64) as usize;
    while out.len() < len {
        let take = (len - out.len()).min(BLOCK_LEN - position);
        out.extend_from_slice(&block[position..position + take]);
        position = 0;
    }
    out
}

impl Origin {
    /// Starts an origin on a free loopback port (in the calling test's runtime).
    pub async fn start() -> std::io::Result<Origin> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let origin = Origin::serving_at(listener.local_addr()?);
        let app = origin.app();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(origin)
    }

    /// An origin at `addr` that the caller serves [`Origin::app`] on (over TLS, say).
    pub fn serving_at(addr: SocketAddr) -> Origin {
        Origin {
            addr,
            shared: Arc::new(Mutex::new(Shared::default())),
        }
    }

    /// The origin's answers, as a router to serve.
    pub fn app(&self) -> axum::Router {
        axum::Router::new()
            .fallback(answer)
            .with_state(self.clone())
    }

    /// `http://127.0.0.1:PORT`, for registering a domain.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Programs the answer for `path`.
    pub fn set(&self, path: &str, behavior: Behavior) {
        self.lock().behaviors.insert(path.to_string(), behavior);
    }

    /// Requests seen for `path`.
    pub fn count(&self, path: &str) -> usize {
        self.lock().counts.get(path).copied().unwrap_or(0)
    }

    /// Requests for `path` answered `304 Not Modified` (revalidations).
    pub fn not_modified(&self, path: &str) -> usize {
        self.lock().not_modified.get(path).copied().unwrap_or(0)
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }

    /// Requests seen in total.
    pub fn total(&self) -> usize {
        self.lock().counts.values().sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn validators(headers: &mut HeaderMap, body_len: u64) {
    if let Ok(value) = format!("\"len-{body_len}\"").parse() {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::LAST_MODIFIED,
        header::HeaderValue::from_static("Tue, 24 Nov 2015 11:39:11 GMT"),
    );
}

fn ok_body(body: Bytes) -> Response {
    let mut response = body.clone().into_response();
    validators(response.headers_mut(), body.len() as u64);
    response
}

/// Counts a request as being answered until dropped.
struct InFlight(Origin);

impl InFlight {
    fn start(origin: &Origin) -> InFlight {
        let mut shared = origin.lock();
        shared.in_flight += 1;
        shared.max_in_flight = shared.max_in_flight.max(shared.in_flight);
        InFlight(origin.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

/// A stream of the bytes `[0, len)` of a [`Behavior::Large`] body, pausing after each chunk;
/// it fails after `fail_at` bytes when set.
fn large_stream(
    len: u64,
    pause: Duration,
    fail_at: Option<u64>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    const CHUNK: u64 = 64 * 1024;
    let end_at = fail_at.unwrap_or(len).min(len);
    futures_util::stream::unfold(0u64, move |offset| async move {
        if offset >= end_at {
            if fail_at.is_some() && offset < len {
                return Some((Err(std::io::Error::other("origin gives up")), len));
            }
            return None;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let end = (offset + CHUNK).min(end_at);
        let chunk = large_bytes(offset, (end - offset) as usize);
        Some((Ok(Bytes::from(chunk)), end))
    })
}

fn large_response(len: u64, pause: Duration, fail_at: Option<u64>) -> Response {
    let mut response = Body::from_stream(large_stream(len, pause, fail_at)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    validators(response.headers_mut(), len);
    response
}

async fn answer(State(origin): State<Origin>, request: Request) -> Response {
    let (request, body) = request.into_parts();
    let path = request.uri.path().to_string();
    if matches!(origin.lock().behaviors.get(&path), Some(Behavior::Echo)) {
        let _in_flight = InFlight::start(&origin);
        *origin.lock().counts.entry(path).or_default() += 1;
        return match axum::body::to_bytes(body, usize::MAX).await {
            Ok(received) => format!("{} {}\n", request.method, received.len()).into_response(),
            Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
        };
    }
    let response = answer_unconditionally(&origin, &path, &request.headers).await;
    // A revalidation whose validator still matches gets a bodiless 304.
    let etag = response.headers().get(header::ETAG).cloned();
    let matches = match (request.headers.get(header::IF_NONE_MATCH), &etag) {
        (Some(presented), Some(etag)) => presented == etag,
        _ => false,
    };
    if matches && response.status() == StatusCode::OK {
        *origin.lock().not_modified.entry(path).or_default() += 1;
        let mut not_modified = StatusCode::NOT_MODIFIED.into_response();
        for (name, value) in response.headers() {
            if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                not_modified
                    .headers_mut()
                    .append(name.clone(), value.clone());
            }
        }
        return not_modified;
    }
    response
}

async fn answer_unconditionally(origin: &Origin, path: &str, headers: &HeaderMap) -> Response {
    let _in_flight = InFlight::start(origin);
    let path = path.to_string();
    let (mut behavior, nth) = {
        let mut shared = origin.lock();
        let nth = {
            let count = shared.counts.entry(path.clone()).or_default();
            *count += 1;
            *count
        };
        (shared.behaviors.get(&path).cloned(), nth)
    };
    while let Some(Behavior::Then(turns)) = behavior {
        behavior = turns.get(nth - 1).or(turns.last()).cloned();
    }
    match behavior {
        None => (StatusCode::NOT_FOUND, "no such object\n").into_response(),
        Some(Behavior::Body(body)) => ok_body(body),
        Some(Behavior::Status(code)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
            "programmed status\n",
        )
            .into_response(),
        Some(Behavior::Sequence(codes, body)) => {
            let code = codes.get(nth - 1).or(codes.last()).copied().unwrap_or(200);
            if code == 200 {
                ok_body(body)
            } else {
                (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
                    "programmed status\n",
                )
                    .into_response()
            }
        }
        Some(Behavior::Large(size)) => large_response(size, Duration::ZERO, None),
        Some(Behavior::SlowLarge(size, pause)) => large_response(size, pause, None),
        Some(Behavior::Truncated(size, sent)) => large_response(size, Duration::ZERO, Some(sent)),
        Some(Behavior::VaryOnEncoding) => {
            let gzip = headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.contains("gzip"));
            let body = if gzip { GZIP_VARIANT } else { PLAIN_VARIANT };
            let mut response = ok_body(Bytes::from_static(body));
            response.headers_mut().insert(
                header::VARY,
                header::HeaderValue::from_static("Accept-Encoding"),
            );
            if let Ok(etag) = format!("\"{}\"", if gzip { "gz" } else { "plain" }).parse() {
                response.headers_mut().insert(header::ETAG, etag);
            }
            response
        }
        Some(Behavior::Answer(code, lines, body)) => {
            let mut response = body.into_response();
            *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
            response.headers_mut().remove(header::CONTENT_TYPE);
            for (name, value) in lines {
                if let (Ok(name), Ok(value)) = (
                    header::HeaderName::from_bytes(name.as_bytes()),
                    header::HeaderValue::from_str(&value),
                ) {
                    response.headers_mut().append(name, value);
                }
            }
            response
        }
        Some(Behavior::Echo) => (StatusCode::IM_A_TEAPOT, "echo answers earlier\n").into_response(),
        Some(Behavior::Then(_)) => (StatusCode::IM_A_TEAPOT, "nested too deep\n").into_response(),
        Some(Behavior::Hangup) => {
            // axum always answers; unwinding out of the handler is what makes hyper drop the
            // connection unanswered, as a crashing origin does. The panic ends only this
            // connection's task.
            std::panic::resume_unwind(Box::new("the test origin hangs up by design"))
        }
        Some(Behavior::Slow(delay, body)) => {
            tokio::time::sleep(delay).await;
            ok_body(body)
        }
        Some(Behavior::WithHeaders(body, headers)) => {
            let mut response = ok_body(body);
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (
                    header::HeaderName::from_bytes(name.as_bytes()),
                    value.parse(),
                ) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
    }
}
