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
}

#[derive(Default)]
struct Shared {
    behaviors: HashMap<String, Behavior>,
    counts: HashMap<String, usize>,
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
        let addr = listener.local_addr()?;
        let origin = Origin {
            addr,
            shared: Arc::new(Mutex::new(Shared::default())),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(origin.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(origin)
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

async fn answer(State(origin): State<Origin>, request: Request) -> Response {
    let _in_flight = InFlight::start(&origin);
    let path = request.uri().path().to_string();
    let (behavior, nth) = {
        let mut shared = origin.lock();
        let nth = {
            let count = shared.counts.entry(path.clone()).or_default();
            *count += 1;
            *count
        };
        (shared.behaviors.get(&path).cloned(), nth)
    };
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
        Some(Behavior::Large(size)) => {
            const CHUNK: u64 = 64 * 1024;
            let chunks = futures_util::stream::unfold(0u64, move |offset| async move {
                if offset >= size {
                    return None;
                }
                let end = (offset + CHUNK).min(size);
                let chunk = large_bytes(offset, (end - offset) as usize);
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), end))
            });
            let mut response = Body::from_stream(chunks).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
            validators(response.headers_mut(), size);
            response
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
