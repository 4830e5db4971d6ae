//! The edge's own answer to the request a CDN sees most: a plain `GET` or `HEAD` over HTTP/1.1
//! for a fresh, complete, small object. It runs in front of pingora's proxy on every player
//! connection and answers such hits from a head serialised once per stored response
//! (`disk_cache::ReadyHead`) plus the body, in one write; pingora's per-request work (the
//! `RequestHeader`, the cache state machine, the meta rebuilt per hit, the header copied,
//! filtered and serialised) was most of a small hit's CPU (docs/plan-hit-path.md).
//!
//! Any request it does not answer, with everything read of it, is served by pingora's proxy on
//! the same connection, which comes back here afterwards when it stays open: the proxy's
//! behaviour (misses, ranges, conditionals, variants, revalidation, errors, limits) is
//! untouched. HTTP/2 connections go to the proxy for good.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Buf, BufMut, BytesMut};
use pingora::apps::{serve_one_http1, ServerApp};
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access_log::{self, AccessLog, AccessRecord};
use crate::cache_key::{cache_key, combined_hex, keyed_path};
use crate::control_link::LinkState;
use crate::disk_cache::DiskCache;
use crate::domain_routes::{DomainRoutes, Route};
use crate::edge_metrics::{EdgeMetrics, RequestIds};
use crate::proxy::{normalize_host, EdgeProxy};

/// Request fields that change nothing about a plain hit; a request with any other field goes
/// to the proxy (conditionals, ranges, `Cache-Control`, bodies, the edge's own prefetch and
/// tier fields, upgrades...). `Accept-Encoding` is safe because objects with `Vary` never get a
/// ready head.
const PLAIN_FIELDS: [&str; 5] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "referer",
    "user-agent",
];
/// Longer request heads go to the proxy (which enforces the configured limits).
const MAX_HEAD: usize = 8 * 1024;
/// Fields a request the hit path answers may have.
const MAX_FIELDS: usize = 16;
/// An answer buffer larger than this is dropped after its answer rather than kept with the
/// connection.
const KEPT_ANSWER_CAPACITY: usize = 16 * 1024;
/// Bodies up to this size are answered here; larger ones stream through the proxy, whose
/// per-request cost is small beside their transfer.
const MAX_BODY: u64 = 256 * 1024;

/// What the hit path needs of the edge.
pub(crate) struct HitPath {
    pub(crate) routes: Arc<DomainRoutes>,
    pub(crate) cache: &'static DiskCache,
    pub(crate) link: Arc<LinkState>,
    pub(crate) metrics: Arc<EdgeMetrics>,
    pub(crate) access_log: Option<AccessLog>,
    pub(crate) request_ids: RequestIds,
    /// How long a connection may wait for its next request.
    pub(crate) idle: Duration,
    /// How long a request head may take once its first byte has come.
    pub(crate) header_timeout: Duration,
}

/// Pingora's `ServerApp` for players' connections: the hit path, then the proxy.
pub(crate) struct HitFront {
    pub(crate) proxy: Arc<HttpProxy<EdgeProxy>>,
    pub(crate) hits: HitPath,
}

#[async_trait]
impl ServerApp for HitFront {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let mut received = BytesMut::with_capacity(4096);
        // Allocated at the first hit: an idle connection holds only its read buffer.
        let mut answer = BytesMut::new();
        let mut stopping = shutdown.clone();
        loop {
            if received.is_empty() {
                // Space at the front of the buffer again, so a request is read whole.
                received.reserve(4096);
                let read = tokio::time::timeout(self.hits.idle, stream.read_buf(&mut received));
                tokio::select! {
                    read = read => match read {
                        Ok(Ok(n)) if n > 0 => {}
                        // Closed, broken or idle for too long: as the proxy would, end quietly.
                        _ => return None,
                    },
                    // A server shutting down drops connections between requests, as pingora's
                    // proxy does.
                    _ = stopping.wait_for(|stop| *stop) => return None,
                }
            }
            let mut parsed = PlainRequest::read(&received);
            if matches!(parsed, Err(NotPlain::Partial)) {
                // A head that came in pieces (or whose start the proxy read ahead) is read
                // whole, within the header timeout, before anything is decided.
                let deadline = tokio::time::Instant::now() + self.hits.header_timeout;
                while matches!(parsed, Err(NotPlain::Partial)) && received.len() < MAX_HEAD {
                    received.reserve(1024);
                    let read = stream.read_buf(&mut received);
                    match tokio::time::timeout_at(deadline, read).await {
                        Ok(Ok(n)) if n > 0 => {}
                        // Closed, broken, or too slow (cut off, as the proxy does).
                        _ => return None,
                    }
                    parsed = PlainRequest::read(&received);
                }
            }
            // Only the access log needs the time.
            let arrived = self.hits.access_log.is_some().then(Instant::now);
            let answered = match parsed {
                Ok(request) => self.hits.answer(request, &mut answer).await,
                Err(_) => Err(Pass("not a plain request")),
            };
            let hit = match answered {
                Ok(hit) => hit,
                Err(Pass(reason)) => {
                    tracing::debug!(reason, "hit path: a request for the proxy");
                    let request = std::mem::take(&mut received);
                    (stream, received) =
                        serve_one_http1(&self.proxy, stream, Some(request), shutdown)
                            .await
                            .map(|(stream, read_ahead)| (stream, read_ahead.unwrap_or_default()))?;
                    continue;
                }
            };
            if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
                return None;
            }
            if answer.capacity() > KEPT_ANSWER_CAPACITY {
                // A large body's buffer is not kept for the connection's idle time.
                answer = BytesMut::new();
            }
            self.hits.account(&stream, &hit, arrived);
            let head_len = hit.request.head_len;
            received.advance(head_len);
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}

/// Why a request went to the proxy.
struct Pass(&'static str);

/// Why a request head is not one the hit path answers.
enum NotPlain {
    /// Only its beginning has come.
    Partial,
    /// Anything else.
    Other,
}

/// A request the hit path answered.
struct Answered<'a> {
    request: PlainRequest<'a>,
    /// Its `Host`, as the edge routes by it.
    host: String,
    request_id: String,
    body_bytes: u64,
    route: Arc<Route>,
}

impl HitPath {
    /// Writes into `answer` the whole answer to `request`, if it is for a fresh, complete, small
    /// object with a ready head.
    async fn answer<'a>(
        &self,
        request: PlainRequest<'a>,
        answer: &mut BytesMut,
    ) -> Result<Answered<'a>, Pass> {
        if !self.link.cache_open() {
            return Err(Pass("the cache is closed"));
        }
        let host = normalize_host(request.host);
        let route = self.routes.route(&host).ok_or(Pass("unknown host"))?;
        let keyed = keyed_path(request.target, route.cache.cache_query_string);
        let combined = combined_hex(&cache_key(&host, keyed));
        let now = SystemTime::now();
        let hit = self
            .cache
            .ready_hit(&combined, now, MAX_BODY)
            .ok_or(Pass("no fresh object with a ready head"))?;
        let request_id = self.request_ids.next();
        answer.clear();
        answer.put_slice(&hit.head.head);
        let age = hit.head.age_secs(now);
        // Writing into a `BytesMut` cannot fail.
        let _ = write!(answer, "Age: {age}\r\nx-cache: HIT\r\nx-request-id: ");
        answer.put_slice(request_id.as_bytes());
        answer.put_slice(b"\r\nConnection: keep-alive\r\n\r\n");
        let body_bytes = if request.head_only {
            0
        } else {
            hit.append_body(answer)
                .await
                .map_err(|_| Pass("the body could not be read"))?;
            hit.body_len
        };
        Ok(Answered {
            request,
            host,
            request_id,
            body_bytes,
            route,
        })
    }

    /// Counts an answered hit and writes its access-log line, as `EdgeProxy::logging` does.
    fn account(&self, stream: &Stream, hit: &Answered<'_>, arrived: Option<Instant>) {
        self.metrics.hit();
        self.metrics.ready_hits.increment(1);
        hit.route.traffic.hits.increment(1);
        self.metrics.bytes_served.increment(hit.body_bytes);
        hit.route.traffic.bytes_sent.increment(hit.body_bytes);
        let (Some(log), Some(arrived)) = (self.access_log.as_ref(), arrived) else {
            return;
        };
        let request = &hit.request;
        let (time, ms) = access_log::arrival(arrived.elapsed());
        log.record(&AccessRecord {
            time,
            client: stream
                .get_socket_digest()
                .and_then(|digest| digest.peer_addr().and_then(|addr| addr.as_inet().copied()))
                .map(|addr| addr.ip().to_string())
                .unwrap_or_default(),
            scheme: if stream.get_ssl_digest().is_some() {
                "https"
            } else {
                "http"
            },
            protocol: "HTTP/1.1",
            host: &hit.host,
            method: if request.head_only { "HEAD" } else { "GET" },
            path: request.target,
            status: 200,
            bytes: usize::try_from(hit.body_bytes).unwrap_or(usize::MAX),
            cache: "HIT",
            ms,
            request_id: &hit.request_id,
            upstream_status: None,
            upstream_ms: None,
            range: None,
            user_agent: request.user_agent,
        });
    }
}

/// A request head the hit path may answer: `GET` or `HEAD`, HTTP/1.1, an origin-form target,
/// one `Host`, `Connection` absent or `keep-alive`, and otherwise only `PLAIN_FIELDS`.
#[derive(Debug, PartialEq, Eq)]
struct PlainRequest<'a> {
    head_len: usize,
    head_only: bool,
    host: &'a str,
    /// Path and query, as sent (and valid as a URI's).
    target: &'a str,
    user_agent: Option<&'a str>,
}

impl<'a> PlainRequest<'a> {
    /// The request at the start of `received`, parsed once.
    fn read(received: &'a [u8]) -> Result<PlainRequest<'a>, NotPlain> {
        use NotPlain::Other;
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut request = httparse::Request::new(&mut fields);
        let head_len = match request.parse(received) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Partial) => return Err(NotPlain::Partial),
            _ => return Err(Other),
        };
        let head_only = match request.method.ok_or(Other)? {
            "GET" => false,
            "HEAD" => true,
            _ => return Err(Other),
        };
        let target = request.path.ok_or(Other)?;
        if request.version != Some(1)
            || !target.starts_with('/')
            || http::uri::PathAndQuery::try_from(target).is_err()
        {
            return Err(Other);
        }
        let mut host = None;
        let mut user_agent = None;
        for field in request.headers.iter() {
            let visible = std::str::from_utf8(field.value)
                .ok()
                .filter(|value| value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
            let name = field.name;
            if name.eq_ignore_ascii_case("host") {
                if host.is_some() {
                    return Err(Other);
                }
                host = Some(visible.ok_or(Other)?);
            } else if name.eq_ignore_ascii_case("connection") {
                if !field.value.eq_ignore_ascii_case(b"keep-alive") {
                    return Err(Other);
                }
            } else if name.eq_ignore_ascii_case("user-agent") {
                user_agent = visible;
            } else if !PLAIN_FIELDS
                .iter()
                .any(|plain| name.eq_ignore_ascii_case(plain))
            {
                return Err(Other);
            }
        }
        Ok(PlainRequest {
            head_len,
            head_only,
            host: host.ok_or(Other)?,
            target,
            user_agent,
        })
    }
}

/// For `crate::fuzzing`.
pub(crate) fn fuzzing_plain_request(received: &[u8]) -> Option<(usize, bool, String, String)> {
    PlainRequest::read(received).ok().map(|request| {
        (
            request.head_len,
            request.head_only,
            request.host.to_string(),
            request.target.to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_gets_and_heads_are_recognised() {
        let head = b"GET /patch/a.pak?v=2 HTTP/1.1\r\nHost: Game.Example.com:80\r\nUser-Agent: ua/1\r\nAccept: */*\r\n\r\nGET /next";
        let request = PlainRequest::read(head).ok().expect("plain");
        assert_eq!(
            request,
            PlainRequest {
                head_len: head.len() - b"GET /next".len(),
                head_only: false,
                host: "Game.Example.com:80",
                target: "/patch/a.pak?v=2",
                user_agent: Some("ua/1"),
            }
        );
        let head = b"HEAD / HTTP/1.1\r\nhost: a\r\nconnection: Keep-Alive\r\n\r\n";
        assert!(PlainRequest::read(head).is_ok_and(|request| request.head_only));
        // As pingora's parser (httparse) reads them: empty lines before the request line are
        // skipped (RFC 9112 §2.2) and a bare LF ends a line (found by the `player_requests`
        // fuzz target).
        assert!(matches!(
            PlainRequest::read(b"GET /a HTTP/1.1\r\nHost: a\r\n"),
            Err(NotPlain::Partial)
        ));
        let head = b"\r\n\nGET /a HTTP/1.1\nHost: a\n\r\n";
        let request = PlainRequest::read(head).ok().expect("lenient line endings");
        assert_eq!((request.head_len, request.target), (head.len(), "/a"));
    }

    #[test]
    fn everything_else_goes_to_the_proxy() {
        for head in [
            &b"GET /a HTTP/1.1\r\nHost: a\r\n"[..],
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n",
            b"GET http://a/a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a HTTP/1.1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nCache-Control: no-cache\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nX-Precache-Prefetch: s\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: \xff\r\n\r\n",
        ] {
            assert!(
                PlainRequest::read(head).is_err(),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
