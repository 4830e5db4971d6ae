//! Prefetch on the edge: fetch a URL through the edge's own proxy so it lands in the cache.
//!
//! Going through the data plane (a loopback request to our own listener) means a prefetch takes
//! exactly the path a player's miss takes: the same cache key, the same miss collapsing, the same
//! disk writes. The request carries the process's prefetch secret, which makes the proxy
//! revalidate an already cached copy instead of just serving it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use precache_model::edge_protocol::{PairOutcome, PrefetchCommand, PrefetchEvent};
use precache_model::ObjectUrl;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use crate::disk_cache::DiskCache;
use crate::domain_routes::DomainRoutes;
use crate::proxy::{
    NO_CACHE_HEADER, PREFETCH_HEADER, PREFETCH_SOURCE_HEADER, UPSTREAM_ERROR_HEADER,
};
use crate::OriginTimeouts;

/// How often a running prefetch reports its byte count.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for the proxy to publish a fill after its last byte was sent (fsync + rename).
const PUBLISH_WAIT: Duration = Duration::from_secs(120);

/// Runs prefetch commands against the local data plane.
pub(crate) struct Prefetcher {
    pub(crate) client: reqwest::Client,
    pub(crate) data_plane: SocketAddr,
    pub(crate) secret: Arc<str>,
    pub(crate) routes: Arc<DomainRoutes>,
    pub(crate) cache: &'static DiskCache,
    pub(crate) timeouts: OriginTimeouts,
}

fn reason_phrase(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

impl Prefetcher {
    /// Runs one prefetch, sending progress to `events`, and returns how it ended.
    pub(crate) async fn run(
        &self,
        command: &PrefetchCommand,
        events: &mpsc::Sender<PrefetchEvent>,
    ) -> PairOutcome {
        let url = match ObjectUrl::parse(&command.url) {
            Ok(url) => url,
            Err(error) => return PairOutcome::failed(None, error.to_string(), false),
        };
        if self.routes.route(url.host()).is_none() {
            // The control plane pushes the domain table before it sends work; an edge that has
            // not received it yet may have it on the next attempt.
            return PairOutcome::failed(
                None,
                format!(
                    "domain {} is not configured on this edge (domain table revision {})",
                    url.host(),
                    self.routes.revision()
                ),
                true,
            );
        }
        let request = self
            .client
            .get(format!(
                "http://{}{}",
                self.data_plane,
                url.path_and_query()
            ))
            .header(reqwest::header::HOST, url.host())
            .header(PREFETCH_HEADER, self.secret.as_ref());
        let fetch_started = Instant::now();
        let first_byte_deadline =
            self.timeouts.connect + self.timeouts.first_byte + Duration::from_secs(1);
        let response = match timeout(first_byte_deadline, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                return PairOutcome::failed(
                    None,
                    format!("edge data plane unreachable: {error}"),
                    true,
                )
            }
            Err(_) => {
                return PairOutcome::failed(
                    None,
                    format!(
                        "the origin did not answer within {}s",
                        self.timeouts.first_byte.as_secs()
                    ),
                    true,
                )
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let header_text = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        };
        if let Some(upstream_error) = header_text(UPSTREAM_ERROR_HEADER) {
            return PairOutcome::failed(Some(status.as_u16()), upstream_error, true);
        }
        if status.is_server_error() {
            return PairOutcome::failed(
                Some(status.as_u16()),
                format!("origin answered {}", reason_phrase(status)),
                true,
            );
        }
        if status.is_client_error() {
            return PairOutcome::failed(
                Some(status.as_u16()),
                format!("origin answered {}", reason_phrase(status)),
                false,
            );
        }
        if !status.is_success() {
            return PairOutcome::failed(
                Some(status.as_u16()),
                format!(
                    "origin answered {} (redirects are not followed)",
                    reason_phrase(status)
                ),
                false,
            );
        }
        let primary = self.routes.primary_key(url.host(), url.path_and_query());
        let served_from_cache = header_text(PREFETCH_SOURCE_HEADER).as_deref() == Some("hit");
        let mut received: u64 = 0;
        if !served_from_cache {
            let total = response.content_length();
            match self
                .read_body(
                    response,
                    total,
                    command.max_bytes_per_sec,
                    events,
                    fetch_started,
                )
                .await
            {
                Ok(bytes) => received = bytes,
                Err(outcome) => return outcome,
            }
            let max_object = self.cache.limits().max_object;
            let too_large = received > max_object
                || header_text(NO_CACHE_HEADER)
                    .is_some_and(|reason| reason.ends_with("ResponseTooLarge"));
            if too_large {
                let mut outcome = PairOutcome::failed(
                    Some(status.as_u16()),
                    format!(
                        "the object ({} bytes) is larger than the edge's max object size ({max_object} bytes)",
                        total.unwrap_or(received)
                    ),
                    false,
                );
                outcome.bytes = received;
                return outcome;
            }
            if let Some(reason) = header_text(NO_CACHE_HEADER) {
                let mut outcome = PairOutcome::failed(
                    Some(status.as_u16()),
                    format!("the origin's response may not be cached ({reason}); check its Cache-Control"),
                    false,
                );
                outcome.bytes = received;
                return outcome;
            }
            // The proxy publishes the object (fsync, rename) after the last byte went out.
            self.cache.wait_for_fills(&primary, PUBLISH_WAIT).await;
        }
        match self.cache.object_info(&primary) {
            Some(info) => PairOutcome {
                success: true,
                http_status: Some(info.status),
                bytes: info.body_bytes,
                objects: None,
                error: None,
                retryable: false,
            },
            None => {
                let mut outcome = PairOutcome::failed(
                    Some(status.as_u16()),
                    "the object was fetched but could not be stored in the edge's cache (see the edge log)",
                    true,
                );
                outcome.bytes = received;
                outcome
            }
        }
    }

    /// Reads and discards the body (the proxy is writing it to the cache), reporting progress.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        total: Option<u64>,
        max_bytes_per_sec: Option<u64>,
        events: &mpsc::Sender<PrefetchEvent>,
        fetch_started: Instant,
    ) -> Result<u64, PairOutcome> {
        let mut received: u64 = 0;
        let started = Instant::now();
        let mut last_report = Instant::now();
        // The proxy cuts the fetch at the deadline; a second past it, this side stops waiting
        // even if the proxy did not (a prefetch tailing someone else's fill).
        let hard_stop = fetch_started + self.timeouts.fetch_deadline + Duration::from_secs(1);
        let past_deadline = |received: u64| {
            let mut outcome = PairOutcome::failed(
                Some(200),
                format!(
                    "the origin did not send the whole object within the fetch deadline of {}s ({received} bytes received)",
                    self.timeouts.fetch_deadline.as_secs()
                ),
                true,
            );
            outcome.bytes = received;
            outcome
        };
        loop {
            let wait = self
                .timeouts
                .idle
                .min(hard_stop.saturating_duration_since(Instant::now()));
            let chunk = match timeout(wait, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => return Ok(received),
                _ if fetch_started.elapsed() >= self.timeouts.fetch_deadline => {
                    return Err(past_deadline(received));
                }
                Ok(Err(error)) => {
                    let mut outcome = PairOutcome::failed(
                        Some(200),
                        format!("the origin connection broke after {received} bytes: {error}"),
                        true,
                    );
                    outcome.bytes = received;
                    return Err(outcome);
                }
                Err(_) => {
                    let mut outcome = PairOutcome::failed(
                        Some(200),
                        format!(
                            "the origin sent nothing for {}s after {received} bytes",
                            self.timeouts.idle.as_secs()
                        ),
                        true,
                    );
                    outcome.bytes = received;
                    return Err(outcome);
                }
            };
            received += chunk.len() as u64;
            if let Some(rate) = max_bytes_per_sec.filter(|rate| *rate > 0) {
                // The fill reads the origin only as fast as this reader takes the bytes, so
                // pacing the reader paces the origin.
                let due = Duration::from_secs_f64(received as f64 / rate as f64);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(ahead).await;
                }
            }
            if last_report.elapsed() >= PROGRESS_INTERVAL {
                last_report = Instant::now();
                // A slow reader of the events must not slow the fill: drop a report if full.
                let _ = events.try_send(PrefetchEvent::Progress {
                    bytes: received,
                    total,
                });
            }
        }
    }
}
