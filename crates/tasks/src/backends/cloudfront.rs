//! `cloudfront`: an Amazon CloudFront distribution through the CloudFront API (version
//! `2020-05-31`), signed with AWS Signature Version 4 by AWS's own `aws-sigv4` crate ([`sign`],
//! pinned to cases of AWS's SigV4 test suite). A refresh is a `CreateInvalidation` (`POST
//! /2020-05-31/distribution/{Id}/invalidation`), polled with `GetInvalidation` until its status
//! is `Completed`, so a pair ends `success` confirmed; CloudFront has no prefetch.
//!
//! A URL is invalidated by its path without the query: CloudFront cannot invalidate one
//! query-string variant of an object, and invalidating the path removes every variant, whether
//! or not the cache key includes the query. A directory is the wildcard path `/prefix*`. The
//! host is not sent: a distribution invalidates a path for every domain it serves.
//!
//! Pairs arriving within 50 ms of each other go in one invalidation: at most
//! `settings.max_paths_per_call` paths (1,000 by default; CloudFront allows 3,000 paths in
//! progress per distribution), and at most 15 wildcard paths (the wildcard paths allowed in
//! progress). Beyond those in-progress limits CloudFront answers `TooManyInvalidationsInProgress`:
//! the call waits a poll interval and is sent again with the same `CallerReference`, so a call
//! that did reach CloudFront is not invalidated (nor billed) twice. `Throttling` is backed off
//! and sent again; an `InvalidArgument` on a batch is split in halves until the refused paths
//! are alone, so a partly refused batch fails only those.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use precache_model::edge_protocol::PairOutcome;
use quick_xml::events::Event;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::batch::{BatchSender, Batcher, Waiting};
use super::http_cache::{client_for, endpoint, root_cause};
use super::{Away, Backend, Capabilities, Progress, Target};
use crate::PairJob;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;

/// The service name CloudFront requests are signed for.
pub const SERVICE: &str = "cloudfront";

/// CloudFront is a global service whose API is signed for `us-east-1` whatever the region of
/// the caller or of the distribution.
pub const REGION: &str = "us-east-1";

/// Signs a CloudFront API request in place: adds `X-Amz-Date` (from `time`) and
/// `Authorization`. Every header already on `request` is signed (except `User-Agent` and the
/// like, which proxies change), so the caller sets `Content-Type` before signing and adds
/// nothing signed after. The body's SHA-256 is part of the signature; CloudFront, unlike S3,
/// does not need it repeated in an `x-amz-content-sha256` header.
pub fn sign<B: AsRef<[u8]>>(
    request: &mut http::Request<B>,
    access_key_id: &str,
    secret_access_key: &str,
    time: SystemTime,
) -> Result<(), String> {
    let scope = Scope {
        service: SERVICE,
        region: REGION,
        payload_hash_header: PayloadChecksumKind::NoHeader,
    };
    sign_for(request, access_key_id, secret_access_key, time, &scope)
}

/// What a signature is for besides the request: CloudFront's in [`sign`]; the test suite's
/// (service `service`, and for some cases the body hash sent as a header) in the tests.
struct Scope {
    service: &'static str,
    region: &'static str,
    payload_hash_header: PayloadChecksumKind,
}

fn sign_for<B: AsRef<[u8]>>(
    request: &mut http::Request<B>,
    access_key_id: &str,
    secret_access_key: &str,
    time: SystemTime,
    scope: &Scope,
) -> Result<(), String> {
    let identity = Credentials::new(
        access_key_id,
        secret_access_key,
        None,
        None,
        "precache backend credentials",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = scope.payload_hash_header;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.region)
        .name(scope.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|error| format!("SigV4 parameters: {error}"))?
        .into();
    // aws-sigv4 panics when neither the URI nor a Host header names the host to sign.
    if request.uri().host().is_none() && !request.headers().contains_key(http::header::HOST) {
        return Err(format!("{} names no host to sign", request.uri()));
    }
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            value
                .to_str()
                .map(|value| (name.as_str(), value))
                .map_err(|_| format!("header {name} is not visible ASCII and cannot be signed"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri,
        headers.into_iter(),
        SignableBody::Bytes(request.body().as_ref()),
    )
    .map_err(|error| format!("SigV4 request: {error}"))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|error| format!("SigV4 signing: {error}"))?
        .into_parts();
    // Built here rather than by `apply_to_request_http1x`, which panics on a value that is not
    // a valid header (an access key id pasted with a newline, say); all or none are added.
    let (signed_headers, _query) = instructions.into_parts();
    let signed_headers = signed_headers
        .iter()
        .map(|header| {
            let mut value = http::HeaderValue::from_str(header.value()).map_err(|_| {
                format!(
                    "the signed {} header is not a valid header value (a control character \
                     in the access key id?)",
                    header.name()
                )
            })?;
            value.set_sensitive(header.sensitive());
            Ok((header.name(), value))
        })
        .collect::<Result<Vec<_>, String>>()?;
    for (name, value) in signed_headers {
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

/// CloudFront's API, unless `settings.endpoint` says otherwise (a test's stand-in).
const DEFAULT_ENDPOINT: &str = "https://cloudfront.amazonaws.com";
/// The API version in every path.
const API: &str = "2020-05-31";
/// How long the first pair of an invalidation waits for others to join it.
const WINDOW: Duration = Duration::from_millis(50);
/// Paths per invalidation unless `settings.max_paths_per_call` says otherwise: a third of the
/// 3,000 paths CloudFront allows in progress, so three calls can be under way at once.
const DEFAULT_MAX_PATHS: u64 = 1000;
/// Paths CloudFront allows in progress per distribution (and so in one call).
const MAX_PATHS_IN_PROGRESS: u64 = 3000;
/// Wildcard paths CloudFront allows in progress per distribution, counted apart.
const MAX_WILDCARDS_IN_PROGRESS: usize = 15;
/// Seconds between polls unless `settings.poll_interval` says otherwise: invalidations take
/// minutes (up to 40 reported), so polling faster only spends the API's rate.
const DEFAULT_POLL_INTERVAL: u64 = 30;
/// Seconds an invalidation is polled unless `settings.poll_timeout` says otherwise.
const DEFAULT_POLL_TIMEOUT: u64 = 3600;
/// `Throttling` answers waited out per request before its pairs fail (and are retried).
const RATE_LIMIT_RETRIES: u32 = 6;
/// Times an invalidation is sent again after a connection failed before its pairs fail.
const UNREACHABLE_RETRIES: u32 = 2;

/// A CloudFront distribution.
pub struct CloudFront {
    paths: Arc<Batcher<PathKind>>,
    wildcards: Arc<Batcher<PathKind>>,
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    calls: Semaphore,
    endpoint: String,
    distribution_id: String,
    access_key_id: String,
    secret_access_key: String,
    poll_interval: Duration,
    poll_timeout: Duration,
    /// Makes each call's `CallerReference` unique within this process.
    n_calls: AtomicU64,
}

/// Exact paths and wildcard paths are gathered apart: CloudFront limits them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PathKind {
    Exact,
    Wildcard,
}

impl CloudFront {
    /// Settings: `distribution_id` (required), `endpoint`, `max_paths_per_call`,
    /// `poll_interval`, `poll_timeout` (seconds), `concurrency` (requests at once), `timeout`;
    /// credentials: `access_key_id`, `secret_access_key`.
    pub fn new(
        settings: &Value,
        credentials: &BTreeMap<String, String>,
    ) -> Result<CloudFront, String> {
        let (http, concurrency) = client_for(
            "cloudfront",
            settings,
            &[
                "distribution_id",
                "endpoint",
                "max_paths_per_call",
                "poll_interval",
                "poll_timeout",
            ],
        )?;
        let distribution_id = distribution_id(settings)?;
        let endpoint = endpoint(settings, DEFAULT_ENDPOINT)?;
        let seconds = |name: &str, default: u64, max: u64| match settings.get(name) {
            None => Ok(default),
            Some(value) => value
                .as_u64()
                .filter(|n| (1..=max).contains(n))
                .ok_or(format!(
                    "settings.{name} must be a number of seconds from 1 to {max}"
                )),
        };
        let poll_interval = seconds("poll_interval", DEFAULT_POLL_INTERVAL, 3600)?;
        let poll_timeout = seconds("poll_timeout", DEFAULT_POLL_TIMEOUT, 7 * 86_400)?;
        let max_paths = match settings.get("max_paths_per_call") {
            None => DEFAULT_MAX_PATHS,
            Some(value) => value
                .as_u64()
                .filter(|n| (1..=MAX_PATHS_IN_PROGRESS).contains(n))
                .ok_or(format!(
                    "settings.max_paths_per_call must be from 1 to {MAX_PATHS_IN_PROGRESS}"
                ))?,
        } as usize;
        if let Some(unknown) = credentials
            .keys()
            .find(|key| *key != "access_key_id" && *key != "secret_access_key")
        {
            return Err(format!(
                "cloudfront takes the credentials access_key_id and secret_access_key, not \
                 {unknown:?}"
            ));
        }
        let credential = |name: &str| {
            credentials
                .get(name)
                .filter(|value| !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic()))
                .cloned()
                .ok_or(format!(
                    "cloudfront needs credentials.{name} (an IAM user's key allowed \
                     cloudfront:CreateInvalidation, GetInvalidation and ListInvalidations), \
                     without spaces"
                ))
        };
        let access_key_id = credential("access_key_id")?;
        let secret_access_key = credential("secret_access_key")?;
        let inner = Arc::new(Inner {
            http,
            calls: Semaphore::new(concurrency),
            endpoint,
            distribution_id,
            access_key_id,
            secret_access_key,
            poll_interval: Duration::from_secs(poll_interval),
            poll_timeout: Duration::from_secs(poll_timeout),
            n_calls: AtomicU64::new(0),
        });
        let sender: Arc<dyn BatchSender<PathKind>> = Arc::clone(&inner) as _;
        Ok(CloudFront {
            paths: Batcher::new(WINDOW, max_paths, Arc::clone(&sender)),
            wildcards: Batcher::new(WINDOW, max_paths.min(MAX_WILDCARDS_IN_PROGRESS), sender),
            inner,
        })
    }

    /// The one target of a distribution: where its invalidations go.
    pub fn target_url(settings: &Value) -> Result<String, String> {
        Ok(format!(
            "{}/{API}/distribution/{}",
            endpoint(settings, DEFAULT_ENDPOINT)?,
            distribution_id(settings)?
        ))
    }
}

fn distribution_id(settings: &Value) -> Result<String, String> {
    settings
        .get("distribution_id")
        .and_then(Value::as_str)
        .filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .map(str::to_string)
        .ok_or_else(|| {
            "cloudfront needs settings.distribution_id, the distribution's id (letters and \
             digits, e.g. EDFDVBD6EXAMPLE)"
                .to_string()
        })
}

/// What CloudFront invalidates for a pair: the URL's path (without its query, see the module
/// doc), or for a directory the wildcard path under it.
fn invalidation_path(url: &str, is_dir: bool) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|_| format!("not a URL: {url}"))?;
    let path = parsed.path();
    Ok(match is_dir && !path.ends_with('*') {
        true => format!("{path}*"),
        false => path.to_string(),
    })
}

/// The `CreateInvalidation` body. Written by hand rather than serialized: it is one fixed
/// shape, and every value in it goes through quick-xml's escaping.
fn invalidation_batch(caller_reference: &str, paths: &[&str]) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <InvalidationBatch xmlns=\"http://cloudfront.amazonaws.com/doc/{API}/\">\
         <CallerReference>{}</CallerReference><Paths><Quantity>{}</Quantity><Items>",
        quick_xml::escape::escape(caller_reference),
        paths.len()
    );
    for path in paths {
        xml.push_str("<Path>");
        xml.push_str(&quick_xml::escape::escape(*path));
        xml.push_str("</Path>");
    }
    xml.push_str("</Items></Paths></InvalidationBatch>");
    xml
}

/// The text of every element that holds only text, as (local name, text), in document order:
/// all this kind reads of CloudFront's answers (`Id`, `Status`, `Code`, `Message`, ...), which
/// nest no two such fields of one name where it matters.
fn leaf_texts(xml: &str) -> Result<Vec<(String, String)>, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut leaves = Vec::new();
    let mut open: Option<(String, String)> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                let name = start.local_name().as_ref().to_string();
                open = Some((name, String::new()));
            }
            Ok(Event::Text(text)) => {
                if let Some((_, value)) = open.as_mut() {
                    value.push_str(&text.xml_content(quick_xml::XmlVersion::Implicit1_0));
                }
            }
            Ok(Event::CData(data)) => {
                if let Some((_, value)) = open.as_mut() {
                    value.push_str(&data.into_inner());
                }
            }
            Ok(Event::GeneralRef(reference)) => {
                if let Some((_, value)) = open.as_mut() {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(ch)) => Some(ch.to_string()),
                        _ => quick_xml::escape::resolve_predefined_entity(&reference)
                            .map(str::to_string),
                    };
                    value.push_str(&resolved.unwrap_or_else(|| format!("&{};", &*reference)));
                }
            }
            Ok(Event::End(_)) => {
                // Only the innermost element is still open at its end; an enclosing one had a
                // child and is no field.
                if let Some((name, value)) = open.take() {
                    leaves.push((name, value.trim().to_string()));
                }
            }
            Ok(Event::Eof) => return Ok(leaves),
            Ok(_) => {}
            Err(error) => return Err(format!("not XML: {error}")),
        }
    }
}

fn field<'a>(leaves: &'a [(String, String)], name: &str) -> Option<&'a str> {
    leaves
        .iter()
        .find(|(leaf, _)| leaf == name)
        .map(|(_, value)| value.as_str())
}

/// CloudFront's error answer: `<ErrorResponse><Error><Type/><Code/><Message/></Error>`.
struct VendorError {
    status: u16,
    code: String,
    message: String,
}

impl VendorError {
    fn parse(status: u16, body: &str) -> VendorError {
        let leaves = leaf_texts(body).unwrap_or_default();
        VendorError {
            status,
            code: field(&leaves, "Code").unwrap_or("").to_string(),
            message: field(&leaves, "Message")
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let text: String = body.chars().take(200).collect();
                    match text.trim().is_empty() {
                        true => "no reason given".into(),
                        false => text,
                    }
                }),
        }
    }

    /// Waiting it out may help: CloudFront's rate limit, or a passing fault of its own.
    fn throttled(&self) -> bool {
        self.code == "Throttling"
            || self.code == "ServiceUnavailable"
            || self.status == 429
            || self.status == 503
    }

    fn words(&self) -> String {
        match self.code.is_empty() {
            true => format!("cloudfront answered {}: {}", self.status, self.message),
            false => format!(
                "cloudfront answered {} {}: {}",
                self.status, self.code, self.message
            ),
        }
    }

    fn outcome(&self) -> PairOutcome {
        PairOutcome::failed(
            Some(self.status),
            self.words(),
            self.status >= 500 || self.throttled() || self.code == "TooManyInvalidationsInProgress",
        )
    }
}

enum Created {
    Accepted(String),
    Refused(VendorError),
    Unreachable(String),
}

enum Polled {
    Completed,
    InProgress(String),
    Failed(VendorError),
}

#[async_trait]
impl BatchSender<PathKind> for Inner {
    async fn send(&self, _kind: PathKind, batch: Vec<Waiting>) {
        self.call(batch).await
    }
}

impl Inner {
    /// One invalidation for `batch`, polled to its end; an `InvalidArgument` splits it.
    async fn call(&self, batch: Vec<Waiting>) {
        let mut pending = vec![batch];
        let mut accepted = Vec::new();
        while let Some(batch) = pending.pop() {
            // Two pairs may share a path (a URL with two queries, or two tasks): it is sent once.
            let mut paths: Vec<&str> = batch.iter().map(|w| w.item.as_str()).collect();
            paths.sort_unstable();
            paths.dedup();
            match self.create(&paths).await {
                Created::Accepted(id) => accepted.push((id, batch)),
                Created::Refused(error)
                    if paths.len() > 1
                        && (error.code == "InvalidArgument" || error.code == "BatchTooLarge") =>
                {
                    // Find the paths CloudFront refuses: the others still go.
                    let half = paths[paths.len() / 2].to_string();
                    let (batch, second): (Vec<_>, Vec<_>) =
                        batch.into_iter().partition(|waiting| waiting.item < half);
                    tracing::debug!(
                        reason = %error.words(),
                        "cloudfront refused a batch; splitting it"
                    );
                    pending.push(second);
                    pending.push(batch);
                }
                Created::Refused(error) => {
                    let outcome = error.outcome();
                    for waiting in batch {
                        waiting.answer(outcome.clone());
                    }
                }
                Created::Unreachable(reason) => {
                    for waiting in batch {
                        waiting.answer(PairOutcome::failed(None, reason.clone(), true));
                    }
                }
            }
        }
        self.await_completion(accepted).await;
    }

    /// Polls every accepted invalidation until it is `Completed`, answering its pairs.
    async fn await_completion(&self, mut accepted: Vec<(String, Vec<Waiting>)>) {
        let deadline = Instant::now() + self.poll_timeout;
        let mut last_status: BTreeMap<String, String> = BTreeMap::new();
        while !accepted.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                for (id, batch) in accepted {
                    let status = last_status.get(&id).map_or("InProgress", String::as_str);
                    let error = format!(
                        "cloudfront accepted invalidation {id} but it was still {status} after \
                         {} s (settings.poll_timeout); it may still complete",
                        self.poll_timeout.as_secs()
                    );
                    for waiting in batch {
                        // Not retried: a new invalidation would be billed again for the same paths.
                        waiting.answer(PairOutcome::failed(None, error.clone(), false));
                    }
                }
                return;
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
            let mut still = Vec::new();
            for (id, batch) in accepted {
                match self.poll(&id).await {
                    Polled::Completed => {
                        let outcome = PairOutcome {
                            success: true,
                            http_status: Some(200),
                            bytes: 0,
                            objects: None,
                            error: Some(format!("invalidation {id} completed")),
                            retryable: false,
                        };
                        for waiting in batch {
                            waiting.answer(outcome.clone());
                        }
                    }
                    Polled::InProgress(status) => {
                        last_status.insert(id.clone(), status);
                        still.push((id, batch));
                    }
                    Polled::Failed(error) if error.status >= 500 || error.throttled() => {
                        // The invalidation goes on without us: ask again at the next poll.
                        tracing::debug!(
                            %id,
                            reason = %error.words(),
                            "cloudfront poll failed; polling again"
                        );
                        still.push((id, batch));
                    }
                    Polled::Failed(error) => {
                        let error = format!(
                            "cloudfront accepted invalidation {id}, then its status could not be \
                             read: {}",
                            error.words()
                        );
                        for waiting in batch {
                            waiting.answer(PairOutcome::failed(None, error.clone(), false));
                        }
                    }
                }
            }
            accepted = still;
        }
    }

    /// `CreateInvalidation`, sent again while CloudFront is throttling or has too many
    /// invalidations in progress.
    async fn create(&self, paths: &[&str]) -> Created {
        let reference = self.caller_reference(paths);
        let body = invalidation_batch(&reference, paths);
        let url = format!(
            "{}/{API}/distribution/{}/invalidation",
            self.endpoint, self.distribution_id
        );
        let started = Instant::now();
        let mut n_throttled = 0;
        let mut n_unreachable = 0;
        let mut backoff = Duration::from_secs(1);
        loop {
            let request = match self.signed(http::Method::POST, &url, &body) {
                Ok(request) => request,
                Err(reason) => return Created::Unreachable(reason),
            };
            let (status, text) = match self.exchange(request).await {
                Ok(answer) => answer,
                // The call may have reached CloudFront before the connection failed: sent again
                // with the same reference, it answers the invalidation it made, not a second one.
                Err(reason) if n_unreachable < UNREACHABLE_RETRIES => {
                    tracing::debug!(%reason, ?backoff, "cloudfront not reached; sending again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    n_unreachable += 1;
                    continue;
                }
                Err(reason) => return Created::Unreachable(reason),
            };
            if (200..300).contains(&status) {
                let leaves = leaf_texts(&text).unwrap_or_default();
                return match field(&leaves, "Id") {
                    Some(id) if !id.is_empty() => Created::Accepted(id.to_string()),
                    _ => Created::Refused(VendorError {
                        status,
                        code: String::new(),
                        message: "an accepted invalidation without an <Id>".into(),
                    }),
                };
            }
            let error = VendorError::parse(status, &text);
            if error.code == "TooManyInvalidationsInProgress"
                && started.elapsed() + self.poll_interval < self.poll_timeout
            {
                // Queued rather than failed: invalidations in progress finish, freeing room.
                tracing::debug!(
                    paths = paths.len(),
                    "cloudfront has too many invalidations in progress; waiting"
                );
                tokio::time::sleep(self.poll_interval).await;
                continue;
            }
            if error.throttled() && n_throttled < RATE_LIMIT_RETRIES {
                tracing::debug!(?backoff, "cloudfront rate limit; waiting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                n_throttled += 1;
                continue;
            }
            return Created::Refused(error);
        }
    }

    /// `GetInvalidation`, throttling waited out.
    async fn poll(&self, id: &str) -> Polled {
        let url = format!(
            "{}/{API}/distribution/{}/invalidation/{id}",
            self.endpoint, self.distribution_id
        );
        let (status, text) = match self.request(http::Method::GET, &url, "").await {
            Ok(answer) => answer,
            Err(reason) => {
                return Polled::Failed(VendorError {
                    status: 503,
                    code: String::new(),
                    message: reason,
                })
            }
        };
        if !(200..300).contains(&status) {
            return Polled::Failed(VendorError::parse(status, &text));
        }
        let leaves = leaf_texts(&text).unwrap_or_default();
        match field(&leaves, "Status") {
            Some("Completed") => Polled::Completed,
            Some(other) => Polled::InProgress(other.to_string()),
            None => Polled::InProgress("unknown".into()),
        }
    }

    /// Unique per call, and the same each time this call is sent again: CloudFront answers a
    /// repeated reference with an identical batch with the invalidation it already made.
    fn caller_reference(&self, paths: &[&str]) -> String {
        let mut digest = Sha256::new();
        for path in paths {
            digest.update(path.as_bytes());
            digest.update(b"\n");
        }
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let n_call = self.n_calls.fetch_add(1, Ordering::Relaxed);
        format!(
            "precache-{started}-{n_call}-{}",
            &hex::encode(digest.finalize())[..16]
        )
    }

    /// One signed request: the status and the body's text, or why CloudFront was not reached.
    async fn request(
        &self,
        method: http::Method,
        url: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        self.exchange(self.signed(method, url, body)?).await
    }

    /// The request signed now (each attempt again: the signature covers its time).
    fn signed(
        &self,
        method: http::Method,
        url: &str,
        body: &str,
    ) -> Result<reqwest::Request, String> {
        let mut request = http::Request::builder().method(method).uri(url);
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/xml");
        }
        let mut request = request
            .body(body.as_bytes().to_vec())
            .map_err(|error| format!("cloudfront request to {url}: {error}"))?;
        sign(
            &mut request,
            &self.access_key_id,
            &self.secret_access_key,
            SystemTime::now(),
        )?;
        reqwest::Request::try_from(request)
            .map_err(|error| format!("cloudfront request to {url}: {}", root_cause(&error)))
    }

    async fn exchange(&self, request: reqwest::Request) -> Result<(u16, String), String> {
        let unreachable = |error: reqwest::Error| {
            format!(
                "target unreachable: cloudfront {}: {}",
                self.endpoint,
                root_cause(&error)
            )
        };
        let _slot = self.calls.acquire().await;
        let response = self.http.execute(request).await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        Ok((status, text))
    }
}

#[async_trait]
impl Backend for CloudFront {
    fn kind(&self) -> &'static str {
        "cloudfront"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            prefetch: false,
            url_purge: true,
            dir_purge: true,
            // An invalidation removes the objects from the edges (the next request goes to the
            // origin); CloudFront offers no mark-stale-and-revalidate.
            invalidate: false,
            reports_was_cached: false,
            confirms: true,
            dry_run: false,
        }
    }

    async fn prefetch(
        &self,
        _target: &Target,
        _job: &PairJob,
        _max_bytes_per_sec: Option<u64>,
        _progress: Progress<'_>,
    ) -> Result<PairOutcome, Away> {
        // `unsupported_reason` ends such pairs before they get here.
        Ok(PairOutcome::failed(
            None,
            "cloudfront has no prefetch",
            false,
        ))
    }

    async fn purge(&self, _target: &Target, job: &PairJob) -> Result<PairOutcome, Away> {
        let path = match invalidation_path(&job.url, job.is_dir) {
            Ok(path) => path,
            Err(reason) => return Ok(PairOutcome::failed(None, reason, false)),
        };
        Ok(match path.contains('*') {
            true => self.wildcards.submit(PathKind::Wildcard, path).await,
            false => self.paths.submit(PathKind::Exact, path).await,
        })
    }

    fn gathers(&self) -> Option<usize> {
        // Pairs wait for their invalidation and its polling without taking the engine's slots;
        // more than CloudFront lets be in progress would only wait in its queue.
        Some(MAX_PATHS_IN_PROGRESS as usize)
    }

    async fn check(&self, _target: &Target) -> Result<String, String> {
        // Listing one invalidation proves the signature, the key's rights on the distribution
        // and that it exists, and invalidates nothing.
        let inner = &self.inner;
        let url = format!(
            "{}/{API}/distribution/{}/invalidation?MaxItems=1",
            inner.endpoint, inner.distribution_id
        );
        let (status, text) = inner.request(http::Method::GET, &url, "").await?;
        if (200..300).contains(&status) {
            let leaves = leaf_texts(&text).unwrap_or_default();
            Ok(format!(
                "cloudfront distribution {} lists {} invalidations",
                inner.distribution_id,
                field(&leaves, "Quantity").unwrap_or("its")
            ))
        } else {
            Err(VendorError::parse(status, &text).words())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // AWS's SigV4 test suite (aws-signing-test-suite/v4 in smithy-lang/smithy-rs, shipped in
    // the aws-sigv4 crate): every case signs with these credentials at 2015-08-30T12:36:00Z,
    // region us-east-1, service `service`.
    const ACCESS_KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SUITE_SCOPE: &str = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn suite_scope(payload_hash_header: PayloadChecksumKind) -> Scope {
        Scope {
            service: "service",
            region: "us-east-1",
            payload_hash_header,
        }
    }

    fn request(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> http::Request<Vec<u8>> {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
            .body(body.as_bytes().to_vec())
            .expect("a well-formed test request")
    }

    fn header<'a>(request: &'a http::Request<Vec<u8>>, name: &str) -> &'a str {
        request.headers()[name]
            .to_str()
            .expect("signing adds ASCII headers")
    }

    #[test]
    fn suite_get_vanilla() {
        let mut get = request(
            "GET",
            "https://example.amazonaws.com/",
            &[("host", "example.amazonaws.com")],
            "",
        );
        let scope = suite_scope(PayloadChecksumKind::NoHeader);
        sign_for(
            &mut get,
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            suite_time(),
            &scope,
        )
        .expect("the suite's requests are signable");
        assert_eq!(header(&get, "x-amz-date"), "20150830T123600Z");
        assert_eq!(
            header(&get, "authorization"),
            format!(
                "AWS4-HMAC-SHA256 {SUITE_SCOPE}, SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    #[test]
    fn suite_get_vanilla_without_a_host_header_signs_the_uri_host() {
        // reqwest sets Host from the URL only when it sends the request, after signing: the
        // signature must already cover the host the URL names.
        let mut get = request("GET", "https://example.amazonaws.com/", &[], "");
        let scope = suite_scope(PayloadChecksumKind::NoHeader);
        sign_for(
            &mut get,
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            suite_time(),
            &scope,
        )
        .expect("the suite's requests are signable");
        assert!(header(&get, "authorization").ends_with(
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ));
    }

    #[test]
    fn suite_get_vanilla_query_order_key_case() {
        let mut get = request(
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            &[("host", "example.amazonaws.com")],
            "",
        );
        let scope = suite_scope(PayloadChecksumKind::NoHeader);
        sign_for(
            &mut get,
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            suite_time(),
            &scope,
        )
        .expect("the suite's requests are signable");
        assert_eq!(
            header(&get, "authorization"),
            format!(
                "AWS4-HMAC-SHA256 {SUITE_SCOPE}, SignedHeaders=host;x-amz-date, \
                 Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
    }

    #[test]
    fn suite_post_vanilla() {
        let mut post = request(
            "POST",
            "https://example.amazonaws.com/",
            &[("host", "example.amazonaws.com")],
            "",
        );
        let scope = suite_scope(PayloadChecksumKind::NoHeader);
        sign_for(
            &mut post,
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            suite_time(),
            &scope,
        )
        .expect("the suite's requests are signable");
        assert_eq!(
            header(&post, "authorization"),
            format!(
                "AWS4-HMAC-SHA256 {SUITE_SCOPE}, SignedHeaders=host;x-amz-date, \
                 Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            )
        );
    }

    #[test]
    fn suite_post_x_www_form_urlencoded() {
        // This case signs its body and sends the hash as x-amz-content-sha256 (sign_body in
        // its context.json); the signed headers include Content-Length and Content-Type.
        let mut post = request(
            "POST",
            "https://example.amazonaws.com/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("host", "example.amazonaws.com"),
                ("content-length", "13"),
            ],
            "Param1=value1",
        );
        let scope = suite_scope(PayloadChecksumKind::XAmzSha256);
        sign_for(
            &mut post,
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            suite_time(),
            &scope,
        )
        .expect("the suite's requests are signable");
        assert_eq!(
            header(&post, "x-amz-content-sha256"),
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        assert_eq!(
            header(&post, "authorization"),
            format!(
                "AWS4-HMAC-SHA256 {SUITE_SCOPE}, SignedHeaders=content-length;content-type;\
                 host;x-amz-content-sha256;x-amz-date, \
                 Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"
            )
        );
        assert_eq!(post.body(), b"Param1=value1");
    }

    #[test]
    fn a_cloudfront_invalidation_is_signed_for_cloudfront_in_us_east_1() {
        // No published vector signs for CloudFront; this signature was recomputed with a
        // SigV4 written in Python from hashlib and hmac alone, to catch a changed scope or
        // body hash rather than to prove SigV4 (the suite cases above do that).
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                    <InvalidationBatch xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\">\
                    <CallerReference>precache-1</CallerReference><Paths><Quantity>1</Quantity>\
                    <Items><Path>/videos/a.mp4</Path></Items></Paths></InvalidationBatch>";
        let mut post = request(
            "POST",
            "https://cloudfront.amazonaws.com/2020-05-31/distribution/EDFDVBD6EXAMPLE/invalidation",
            &[("content-type", "application/xml")],
            body,
        );
        sign(&mut post, ACCESS_KEY_ID, SECRET_ACCESS_KEY, suite_time())
            .expect("an invalidation request is signable");
        assert!(post.headers().get("x-amz-content-sha256").is_none());
        assert_eq!(
            header(&post, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/cloudfront/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=eb3aa7af5bcd1aec0ec2559f5ffac3096dc6dd07afef99f277f5456698647be5"
        );
    }

    #[test]
    fn an_access_key_id_with_a_newline_is_an_error_not_a_panic() {
        let mut get = request("GET", "https://cloudfront.amazonaws.com/", &[], "");
        let error = sign(&mut get, "AKIDEXAMPLE\n", SECRET_ACCESS_KEY, suite_time())
            .expect_err("a newline cannot go into Authorization");
        assert!(error.contains("authorization"), "{error}");
        assert!(get.headers().get("x-amz-date").is_none());
    }

    #[test]
    fn a_request_naming_no_host_is_an_error_not_a_panic() {
        let mut get = request("GET", "/2020-05-31/distribution", &[], "");
        let error = sign(&mut get, ACCESS_KEY_ID, SECRET_ACCESS_KEY, suite_time())
            .expect_err("there is no host to sign");
        assert!(error.contains("no host"), "{error}");
    }

    #[test]
    fn a_header_that_cannot_be_signed_is_an_error_not_a_panic() {
        let mut get = request("GET", "https://cloudfront.amazonaws.com/", &[], "");
        get.headers_mut().insert(
            "x-note",
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").expect("a header value of opaque bytes"),
        );
        let error = sign(&mut get, ACCESS_KEY_ID, SECRET_ACCESS_KEY, suite_time())
            .expect_err("a non-ASCII header cannot be signed");
        assert!(error.contains("x-note"), "{error}");
        assert!(get.headers().get("authorization").is_none());
    }

    fn credentials() -> BTreeMap<String, String> {
        [
            ("access_key_id".to_string(), ACCESS_KEY_ID.to_string()),
            (
                "secret_access_key".to_string(),
                SECRET_ACCESS_KEY.to_string(),
            ),
        ]
        .into_iter()
        .collect()
    }

    fn build_error(settings: serde_json::Value, credentials: &BTreeMap<String, String>) -> String {
        match CloudFront::new(&settings, credentials) {
            Ok(_) => panic!("{settings} was accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn settings_and_credentials_are_checked_up_front() {
        let good = serde_json::json!({"distribution_id": "EDFDVBD6EXAMPLE", "poll_interval": 1});
        assert!(CloudFront::new(&good, &credentials()).is_ok());
        assert!(build_error(serde_json::json!({}), &credentials()).contains("distribution_id"));
        assert!(build_error(
            serde_json::json!({"distribution_id": "E1", "zone_id": "x"}),
            &credentials()
        )
        .contains("zone_id"));
        assert!(build_error(
            serde_json::json!({"distribution_id": "E1", "max_paths_per_call": 3001}),
            &credentials()
        )
        .contains("max_paths_per_call"));
        assert!(build_error(
            serde_json::json!({"distribution_id": "E1", "poll_interval": 0}),
            &credentials()
        )
        .contains("poll_interval"));
        let mut wrong_name = credentials();
        wrong_name.insert("session_token".into(), "x".into());
        assert!(build_error(good.clone(), &wrong_name).contains("session_token"));
        let mut missing = credentials();
        missing.remove("secret_access_key");
        assert!(build_error(good, &missing).contains("secret_access_key"));
        assert_eq!(
            CloudFront::target_url(&serde_json::json!({"distribution_id": "E1"})),
            Ok("https://cloudfront.amazonaws.com/2020-05-31/distribution/E1".to_string())
        );
    }

    #[test]
    fn the_invalidation_batch_escapes_its_paths_and_reads_back() {
        let xml = invalidation_batch("ref-1", &["/a&b.pak", "/static/*"]);
        let leaves = leaf_texts(&xml).expect("well-formed XML");
        let paths: Vec<&str> = leaves
            .iter()
            .filter(|(name, _)| name == "Path")
            .map(|(_, path)| path.as_str())
            .collect();
        assert_eq!(paths, ["/a&b.pak", "/static/*"]);
        assert_eq!(field(&leaves, "Quantity"), Some("2"));
        assert_eq!(field(&leaves, "CallerReference"), Some("ref-1"));
        assert!(xml.contains("/a&amp;b.pak"), "{xml}");
    }

    #[test]
    fn an_error_answer_gives_the_vendors_words() {
        let body = "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\">\
                    <Error><Type>Sender</Type><Code>TooManyInvalidationsInProgress</Code>\
                    <Message>Processing your request will cause you to exceed the maximum number of in-progress wildcard invalidations.</Message>\
                    </Error><RequestId>r-1</RequestId></ErrorResponse>";
        let error = VendorError::parse(400, body);
        assert_eq!(error.code, "TooManyInvalidationsInProgress");
        assert!(error.outcome().retryable);
        assert!(error.words().starts_with(
            "cloudfront answered 400 TooManyInvalidationsInProgress: Processing your request"
        ));
        let throttled = VendorError::parse(400, "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>");
        assert!(throttled.throttled());
        let plain = VendorError::parse(502, "bad gateway");
        assert_eq!(plain.words(), "cloudfront answered 502: bad gateway");
    }

    #[test]
    fn a_url_is_its_path_without_the_query_and_a_directory_a_wildcard() {
        assert_eq!(
            invalidation_path("http://h/v/a%20b.mp4?v=2", false),
            Ok("/v/a%20b.mp4".to_string())
        );
        assert_eq!(
            invalidation_path("http://h/static/", true),
            Ok("/static/*".to_string())
        );
    }
}
