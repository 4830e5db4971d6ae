//! `tencent`: Tencent Cloud CDN through its API 3.0 (`cdn.tencentcloudapi.com`, version
//! `2018-06-06`), every call signed with TC3-HMAC-SHA256 ([`tc3_authorization`], pinned to
//! Tencent's own worked example). URL refreshes go as `PurgeUrlsCache` (at most 1,000 per call),
//! directories as `PurgePathCache` with `FlushType: delete` (500), prefetches as `PushUrlsCache`
//! (500). Each call answers a `TaskId`, polled with `DescribePurgeTasks` / `DescribePushTasks`
//! until every URL of it is `done` (the pair succeeds, confirmed) or `fail` (it fails).
//!
//! Pairs arriving within 50 ms of each other become one call. `RequestLimitExceeded` is waited
//! out; an answer that names a bad URL or host (`InvalidParameter*`, `ResourceNotFound*`) splits
//! the batch until the refused URLs fail alone; a bad key or an exhausted daily quota fails the
//! pairs with Tencent's words, not retried.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use precache_model::edge_protocol::{PairOutcome, PurgeMode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::batch::{BatchSender, Batcher, Waiting};
use super::http_cache::{client_for, endpoint, root_cause};
use super::{Away, Backend, Capabilities, Progress, Target};
use crate::PairJob;

/// The signature algorithm's name, as it opens the string to sign and the `Authorization`.
const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// The headers signed, as in Tencent's worked example: `content-type` and `host` are the two
/// the API requires; the others (`X-TC-Action`, `X-TC-Timestamp`, ...) are sent unsigned.
const SIGNED_HEADERS: &str = "content-type;host";

/// A TC3 signature with the steps that led to it. The kind sends [`Self::authorization`]; the
/// intermediate values let tests compare each step with Tencent's example, and let a stand-in
/// API recompute a request's signature and say which step differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Signature {
    /// The canonical request (method, path, query, headers, signed headers, payload hash).
    pub canonical_request: String,
    /// `TC3-HMAC-SHA256`, the timestamp, the credential scope and the canonical request's hash.
    pub string_to_sign: String,
    /// The lowercase hex HMAC-SHA256 of the string to sign with the derived key.
    pub signature: String,
    /// The `Authorization` header's value.
    pub authorization: String,
}

/// Signs an API 3.0 call: a `POST /` to `host` with `payload` (the JSON body) sent as
/// `content_type`, at `timestamp` (Unix seconds, the value sent as `X-TC-Timestamp`).
///
/// `content_type` must be byte for byte what is sent: Tencent recomputes the signature from the
/// header it receives, and some clients add `; charset=utf-8` on their own.
pub fn tc3_authorization(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    host: &str,
    content_type: &str,
    payload: &[u8],
    timestamp: i64,
) -> Tc3Signature {
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\n{SIGNED_HEADERS}\n{}",
        content_type.trim().to_ascii_lowercase(),
        host.trim().to_ascii_lowercase(),
        sha256_hex(payload),
    );
    // The date comes from the same timestamp, in UTC: a local date is a day ahead (or behind)
    // for part of every day, and Tencent then refuses the credential scope.
    let date = utc_date(timestamp);
    let credential_scope = format!("{date}/{service}/tc3_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{credential_scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let secret_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let secret_service = hmac_sha256(&secret_date, service.as_bytes());
    let secret_signing = hmac_sha256(&secret_service, b"tc3_request");
    let signature = hex::encode(hmac_sha256(&secret_signing, string_to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={secret_id}/{credential_scope}, \
         SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
    );
    Tc3Signature {
        canonical_request,
        string_to_sign,
        signature,
        authorization,
    }
}

/// `YYYY-MM-DD` of a Unix timestamp in UTC (a local date would fail around midnight).
fn utc_date(timestamp: i64) -> String {
    jiff::Timestamp::from_second(timestamp)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%d")
        .to_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Tencent's CDN API, unless `settings.endpoint` says otherwise (a test's stand-in).
const DEFAULT_ENDPOINT: &str = "https://cdn.tencentcloudapi.com";
/// The service in the credential scope and the API version every call names.
const SERVICE: &str = "cdn";
const API_VERSION: &str = "2018-06-06";
/// Sent byte for byte as signed (see [`tc3_authorization`]).
const CONTENT_TYPE: &str = "application/json";
/// How long the first pair of a batch waits for others to join it.
const WINDOW: Duration = Duration::from_millis(50);
/// `RequestLimitExceeded` answers waited out per call before its pairs fail.
const RATE_LIMIT_RETRIES: u32 = 6;
/// Tasks are slow (minutes for a refresh, longer for a push): polling often only spends the
/// 20 calls per second that `Describe*Tasks` allows.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Task records asked for per `Describe*Tasks` page (its default is 20).
const PAGE: usize = 100;

/// A Tencent Cloud CDN account.
pub struct Tencent {
    urls: Arc<Batcher<Call>>,
    paths: Arc<Batcher<Call>>,
    pushes: Arc<Batcher<Call>>,
    inner: Arc<TencentApi>,
}

struct TencentApi {
    http: reqwest::Client,
    calls: Semaphore,
    endpoint: String,
    /// The `Host` reqwest sends for `endpoint`, which is what Tencent checks the signature with.
    host: String,
    secret_id: String,
    secret_key: String,
    area: Option<String>,
    poll_interval: Duration,
    poll_timeout: Duration,
}

/// The three calls a pair can join, each with its own per-call limit and task query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Call {
    PurgeUrls,
    PurgePaths,
    PushUrls,
}

impl Call {
    fn action(self) -> &'static str {
        match self {
            Call::PurgeUrls => "PurgeUrlsCache",
            Call::PurgePaths => "PurgePathCache",
            Call::PushUrls => "PushUrlsCache",
        }
    }

    /// The documented per-call limits: 1,000 URLs, 500 directories, 500 URLs to push.
    fn per_call(self) -> usize {
        match self {
            Call::PurgeUrls => 1_000,
            Call::PurgePaths | Call::PushUrls => 500,
        }
    }

    fn describe_action(self) -> &'static str {
        match self {
            Call::PurgeUrls | Call::PurgePaths => "DescribePurgeTasks",
            Call::PushUrls => "DescribePushTasks",
        }
    }

    fn logs_field(self) -> &'static str {
        match self {
            Call::PurgeUrls | Call::PurgePaths => "PurgeLogs",
            Call::PushUrls => "PushLogs",
        }
    }
}

impl Tencent {
    /// Settings: `endpoint`, `area` (`mainland`, `overseas` or `global`, for pushes),
    /// `poll_interval` and `poll_timeout` (seconds), `concurrency` (calls at once), `timeout`;
    /// credentials: `secret_id`, `secret_key`.
    pub fn new(
        settings: &Value,
        credentials: &BTreeMap<String, String>,
    ) -> Result<Tencent, String> {
        let (http, concurrency) = client_for(
            "tencent",
            settings,
            &["endpoint", "area", "poll_interval", "poll_timeout"],
        )?;
        let endpoint = endpoint(settings, DEFAULT_ENDPOINT)?;
        let host = signed_host(&endpoint)?;
        let area = match settings.get("area") {
            None => None,
            Some(Value::String(area))
                if ["mainland", "overseas", "global"].contains(&area.as_str()) =>
            {
                Some(area.clone())
            }
            Some(other) => {
                return Err(format!(
                    "settings.area must be \"mainland\", \"overseas\" or \"global\", not {other}"
                ))
            }
        };
        let poll_interval = seconds(settings, "poll_interval", DEFAULT_POLL_INTERVAL, 3_600)?;
        let poll_timeout = seconds(settings, "poll_timeout", DEFAULT_POLL_TIMEOUT, 7 * 86_400)?;
        if let Some(unknown) = credentials
            .keys()
            .find(|key| !["secret_id", "secret_key"].contains(&key.as_str()))
        {
            return Err(format!(
                "tencent takes the credentials secret_id and secret_key, not {unknown:?}"
            ));
        }
        let credential = |name: &str| {
            credentials
                .get(name)
                .filter(|value| !value.is_empty())
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "tencent needs credentials.{name} (an API key allowed to purge and push)"
                    )
                })
        };
        let secret_id = credential("secret_id")?;
        let secret_key = credential("secret_key")?;
        let inner = Arc::new(TencentApi {
            http,
            calls: Semaphore::new(concurrency),
            endpoint,
            host,
            secret_id,
            secret_key,
            area,
            poll_interval,
            poll_timeout,
        });
        let sender: Arc<dyn BatchSender<Call>> = Arc::clone(&inner) as _;
        let batcher = |call: Call| Batcher::new(WINDOW, call.per_call(), Arc::clone(&sender));
        Ok(Tencent {
            urls: batcher(Call::PurgeUrls),
            paths: batcher(Call::PurgePaths),
            pushes: batcher(Call::PushUrls),
            inner,
        })
    }

    /// The one target of an account: its API.
    pub fn target_url(settings: &Value) -> Result<String, String> {
        endpoint(settings, DEFAULT_ENDPOINT)
    }
}

/// `settings.{name}` as whole seconds from 1 to `max`, or `default`.
fn seconds(settings: &Value, name: &str, default: Duration, max: u64) -> Result<Duration, String> {
    match settings.get(name) {
        None => Ok(default),
        Some(value) => value
            .as_u64()
            .filter(|n| (1..=max).contains(n))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("settings.{name} must be a number of seconds from 1 to {max}")),
    }
}

/// The host and, when not the scheme's default, the port: what reqwest puts in `Host`.
fn signed_host(endpoint: &str) -> Result<String, String> {
    let parsed = url::Url::parse(endpoint).map_err(|e| format!("settings.endpoint: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or("settings.endpoint has no host")?
        .to_string();
    Ok(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// What one API call came to.
enum Answered {
    /// `Response` without `Error`.
    Ok(Value),
    /// `Response.Error`: its `Code`, and the words to fail pairs with.
    Refused { code: String, words: String },
    /// No answer, or no JSON.
    Unreachable(String),
}

/// Why a task's states could not be read: a refusal ends the polling, no answer does not.
enum PollFailed {
    Refused(String),
    Unreachable(String),
}

/// What a refused call means for its pairs.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Names a URL or host the account will not take: split the batch to find it.
    ItemRefused,
    /// Tencent's own fault: another attempt may help.
    Transient,
    /// A credential, a permission, a quota: the same call fails again.
    Final,
}

fn refusal(code: &str) -> Refusal {
    if code.starts_with("InvalidParameter")
        || code.starts_with("ResourceNotFound")
        || code.starts_with("UnauthorizedOperation.CdnHost")
    {
        Refusal::ItemRefused
    } else if code.starts_with("InternalError") || code.starts_with("ResourceUnavailable") {
        Refusal::Transient
    } else {
        Refusal::Final
    }
}

#[async_trait]
impl BatchSender<Call> for TencentApi {
    async fn send(&self, call: Call, batch: Vec<Waiting>) {
        let mut pending = vec![batch];
        while let Some(batch) = pending.pop() {
            let items: Vec<&str> = batch.iter().map(|w| w.item.as_str()).collect();
            match self
                .api(call.action(), &self.submit_body(call, &items))
                .await
            {
                Answered::Ok(response) => match response["TaskId"].as_str() {
                    Some(task_id) => {
                        let task_id = task_id.to_string();
                        self.poll(call, &task_id, batch).await;
                    }
                    None => fail_all(
                        batch,
                        format!("tencent answered {} without a TaskId", call.action()),
                        true,
                    ),
                },
                Answered::Refused { code, words } => match refusal(&code) {
                    Refusal::ItemRefused if batch.len() > 1 => {
                        let mut batch = batch;
                        let second = batch.split_off(batch.len() / 2);
                        tracing::debug!(%code, size = batch.len() + second.len(), "tencent refused a batch; splitting it");
                        pending.push(second);
                        pending.push(batch);
                    }
                    refusal => fail_all(batch, words, refusal == Refusal::Transient),
                },
                Answered::Unreachable(reason) => fail_all(batch, reason, true),
            }
        }
    }
}

/// The outcome of the items sent that the task lists under no name sent. Tencent may list an
/// item normalised (an encoded path, say): once as many records matching nothing sent as such
/// items have all finished, those items share their outcome, `done` if every one is, else
/// `fail`, since which one failed cannot be told.
fn unmatched_state(
    sent: &std::collections::BTreeSet<String>,
    states: &BTreeMap<String, String>,
) -> Option<&'static str> {
    let unknown: Vec<&str> = states
        .iter()
        .filter(|(url, _)| !sent.contains(*url))
        .map(|(_, state)| state.as_str())
        .collect();
    let unmatched = sent
        .iter()
        .filter(|item| !states.contains_key(*item))
        .count();
    (unmatched > 0 && unknown.len() >= unmatched && unknown.iter().all(|state| *state != "process"))
        .then(|| match unknown.iter().all(|state| *state == "done") {
            true => "done",
            false => "fail",
        })
}

fn fail_all(batch: Vec<Waiting>, reason: String, retryable: bool) {
    for waiting in batch {
        waiting.answer(PairOutcome::failed(None, reason.clone(), retryable));
    }
}

impl TencentApi {
    fn submit_body(&self, call: Call, items: &[&str]) -> Value {
        match call {
            Call::PurgeUrls => json!({ "Urls": items }),
            // `flush` refreshes only what changed at the origin, which precache cannot promise
            // for an invalidation either: `delete` is the refresh the task asked for.
            Call::PurgePaths => json!({ "Paths": items, "FlushType": "delete" }),
            Call::PushUrls => match &self.area {
                Some(area) => json!({ "Urls": items, "Area": area }),
                None => json!({ "Urls": items }),
            },
        }
    }

    /// Polls the task until every item of `batch` is `done` or `fail`, answering each pair as
    /// it finishes; the rest fail after `poll_timeout`.
    async fn poll(&self, call: Call, task_id: &str, batch: Vec<Waiting>) {
        let sent: std::collections::BTreeSet<String> =
            batch.iter().map(|pair| pair.item.clone()).collect();
        let mut waiting: Vec<Waiting> = batch;
        let deadline = tokio::time::Instant::now() + self.poll_timeout;
        loop {
            tokio::time::sleep(self.poll_interval).await;
            match self.task_states(call, task_id).await {
                Ok(states) => {
                    let unknown_state = unmatched_state(&sent, &states);
                    let mut still = Vec::new();
                    for pair in waiting {
                        let state = states.get(&pair.item).map(String::as_str).or(unknown_state);
                        match state {
                            Some("done") => pair.answer(PairOutcome {
                                success: true,
                                http_status: Some(200),
                                bytes: 0,
                                objects: None,
                                error: Some(format!("done as tencent task {task_id}")),
                                retryable: false,
                            }),
                            Some(state @ ("fail" | "invalid")) => {
                                let why = if state == "invalid" {
                                    "the origin answered 4xx or 5xx"
                                } else {
                                    "the task failed"
                                };
                                pair.answer(PairOutcome::failed(
                                    None,
                                    format!(
                                        "tencent {} task {task_id}: {state} ({why})",
                                        call.action()
                                    ),
                                    false,
                                ));
                            }
                            _ => still.push(pair),
                        }
                    }
                    waiting = still;
                }
                Err(PollFailed::Refused(words)) => {
                    return fail_all(waiting, format!("polling task {task_id}: {words}"), false)
                }
                Err(PollFailed::Unreachable(reason)) => {
                    tracing::debug!(%reason, task_id, "tencent task poll failed; polling on");
                }
            }
            if waiting.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                return fail_all(
                    waiting,
                    format!(
                        "tencent task {task_id} not finished after {} s (settings.poll_timeout)",
                        self.poll_timeout.as_secs()
                    ),
                    false,
                );
            }
        }
    }

    /// Each item of the task and its `Status`, over every page.
    async fn task_states(
        &self,
        call: Call,
        task_id: &str,
    ) -> Result<BTreeMap<String, String>, PollFailed> {
        let mut states = BTreeMap::new();
        let mut offset = 0;
        loop {
            let mut body = json!({ "TaskId": task_id, "Offset": offset, "Limit": PAGE });
            match call {
                Call::PurgeUrls => body["PurgeType"] = json!("url"),
                Call::PurgePaths => body["PurgeType"] = json!("path"),
                Call::PushUrls => {}
            }
            let response = match self.api(call.describe_action(), &body).await {
                Answered::Ok(response) => response,
                Answered::Refused { words, .. } => return Err(PollFailed::Refused(words)),
                Answered::Unreachable(reason) => return Err(PollFailed::Unreachable(reason)),
            };
            let logs = response[call.logs_field()]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for log in &logs {
                if let (Some(url), Some(status)) = (log["Url"].as_str(), log["Status"].as_str()) {
                    states.insert(url.to_string(), status.to_string());
                }
            }
            offset += logs.len();
            let total = response["TotalCount"].as_u64().unwrap_or(0) as usize;
            if logs.is_empty() || offset >= total {
                return Ok(states);
            }
        }
    }

    /// One signed call: `Response` on success, its `Error` otherwise. `RequestLimitExceeded`
    /// is waited out (1 s doubling) and the call sent again, newly signed.
    async fn api(&self, action: &str, body: &Value) -> Answered {
        let payload = body.to_string();
        let _slot = self.calls.acquire().await;
        let mut backoff = Duration::from_secs(1);
        for attempt in 0..=RATE_LIMIT_RETRIES {
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs() as i64);
            let signed = tc3_authorization(
                &self.secret_id,
                &self.secret_key,
                SERVICE,
                &self.host,
                CONTENT_TYPE,
                payload.as_bytes(),
                timestamp,
            );
            let sent = self
                .http
                .post(format!("{}/", self.endpoint))
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .header(reqwest::header::AUTHORIZATION, signed.authorization)
                .header("X-TC-Action", action)
                .header("X-TC-Version", API_VERSION)
                .header("X-TC-Timestamp", timestamp.to_string())
                .body(payload.clone())
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    return Answered::Unreachable(format!(
                        "target unreachable: tencent {}: {}",
                        self.endpoint,
                        root_cause(&error)
                    ))
                }
            };
            let status = response.status();
            let answer: Value = match response.json().await {
                Ok(answer) => answer,
                Err(_) => {
                    return Answered::Unreachable(format!(
                        "tencent {} answered {status} without JSON",
                        self.endpoint
                    ))
                }
            };
            let response = &answer["Response"];
            let Some(error) = response.get("Error") else {
                if status.is_success() && response.is_object() {
                    return Answered::Ok(response.clone());
                }
                return Answered::Unreachable(format!(
                    "tencent {} answered {status} without a Response",
                    self.endpoint
                ));
            };
            let code = error["Code"].as_str().unwrap_or("").to_string();
            if code.starts_with("RequestLimitExceeded") && attempt < RATE_LIMIT_RETRIES {
                tracing::debug!(?backoff, action, "tencent rate limit; waiting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
            let words = format!(
                "tencent {action}: {} ({code})",
                error["Message"].as_str().unwrap_or("no reason given")
            );
            return Answered::Refused { code, words };
        }
        Answered::Refused {
            code: "RequestLimitExceeded".into(),
            words: format!("tencent {action}: rate limited after every retry"),
        }
    }
}

#[async_trait]
impl Backend for Tencent {
    fn kind(&self) -> &'static str {
        "tencent"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            prefetch: true,
            url_purge: true,
            dir_purge: true,
            invalidate: false,
            reports_was_cached: false,
            confirms: true,
            dry_run: false,
        }
    }

    async fn prefetch(
        &self,
        _target: &Target,
        job: &PairJob,
        _max_bytes_per_sec: Option<u64>,
        _progress: Progress<'_>,
    ) -> Result<PairOutcome, Away> {
        Ok(self.pushes.submit(Call::PushUrls, job.url.clone()).await)
    }

    async fn purge(&self, _target: &Target, job: &PairJob) -> Result<PairOutcome, Away> {
        let mut outcome = match job.is_dir {
            true => self.paths.submit(Call::PurgePaths, job.url.clone()).await,
            false => self.urls.submit(Call::PurgeUrls, job.url.clone()).await,
        };
        // The task's id is this success's note, which takes the place of the engine's own
        // "deleted" note: say it here.
        if outcome.success && job.mode == PurgeMode::Invalidate {
            outcome.error = Some(format!(
                "deleted: tencent cannot invalidate; {}",
                outcome.error.unwrap_or_default()
            ));
        }
        Ok(outcome)
    }

    fn gathers(&self) -> Option<usize> {
        // Pairs wait for a call and its polling without taking the engine's slots.
        Some(2_000)
    }

    async fn check(&self, _target: &Target) -> Result<String, String> {
        // The quota query costs no refresh and needs the same key.
        match self.inner.api("DescribePurgeQuota", &json!({})).await {
            Answered::Ok(response) => {
                let quota = |field: &str| {
                    response[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|area| {
                            format!(
                                "{} {}/{}",
                                area["Area"].as_str().unwrap_or("?"),
                                area["Available"],
                                area["Total"]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Ok(format!(
                    "tencent key accepted; purges left today: URLs {}; directories {}",
                    quota("UrlPurge"),
                    quota("PathPurge")
                ))
            }
            Answered::Refused { words, .. } => Err(words),
            Answered::Unreachable(reason) => Err(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tencent Cloud API 3.0, "Signature v3", the worked example (DescribeInstances on cvm). The
    // SecretKey is the unmasked one of the English page; every expected value below is printed
    // in that page's steps 1 to 4.
    const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const TIMESTAMP: i64 = 1_551_113_065;
    const PAYLOAD: &str =
        r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;

    fn worked_example() -> Tc3Signature {
        tc3_authorization(
            SECRET_ID,
            SECRET_KEY,
            "cvm",
            "cvm.tencentcloudapi.com",
            "application/json; charset=utf-8",
            PAYLOAD.as_bytes(),
            TIMESTAMP,
        )
    }

    #[test]
    fn the_worked_example_payload_hash_and_canonical_request() {
        assert_eq!(
            sha256_hex(PAYLOAD.as_bytes()),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(
            worked_example().canonical_request,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\n\
             host:cvm.tencentcloudapi.com\n\ncontent-type;host\n\
             35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
    }

    #[test]
    fn the_worked_example_string_to_sign() {
        assert_eq!(
            worked_example().string_to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
    }

    #[test]
    fn the_worked_example_signature_and_authorization() {
        let signed = worked_example();
        assert_eq!(
            signed.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert_eq!(
            signed.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/\
             tc3_request, SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn the_date_is_the_utc_one_around_midnight() {
        // The example's own warning: 1551113065 is 2019-02-26 00:44:25 in UTC+8, but the
        // credential scope must say 2019-02-25.
        assert_eq!(utc_date(TIMESTAMP), "2019-02-25");
        assert_eq!(utc_date(1_551_139_199), "2019-02-25"); // 23:59:59 UTC
        assert_eq!(utc_date(1_551_139_200), "2019-02-26"); // 00:00:00 UTC
    }

    #[test]
    fn utc_dates_across_epochs_leap_days_and_year_ends() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_709_164_800), "2024-02-29");
        assert_eq!(utc_date(1_709_251_199), "2024-02-29");
        assert_eq!(utc_date(1_735_689_599), "2024-12-31");
        assert_eq!(utc_date(1_735_689_600), "2025-01-01");
        assert_eq!(utc_date(4_107_542_400), "2100-03-01");
    }

    #[test]
    fn the_cdn_service_goes_into_the_scope_and_changes_the_signature() {
        let cdn = tc3_authorization(
            SECRET_ID,
            SECRET_KEY,
            "cdn",
            "cdn.tencentcloudapi.com",
            "application/json",
            br#"{"Urls":["https://example.com/a.mp4"]}"#,
            TIMESTAMP,
        );
        assert!(cdn.authorization.contains(
            "Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cdn/tc3_request,"
        ));
        assert_ne!(cdn.signature, worked_example().signature);
    }

    fn key() -> BTreeMap<String, String> {
        [("secret_id", SECRET_ID), ("secret_key", SECRET_KEY)]
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn settings_and_credentials_are_checked_up_front() {
        let built = Tencent::new(&json!({"area": "overseas", "poll_interval": 2}), &key());
        assert!(built.is_ok());
        for (settings, wanted) in [
            (json!({"region": "ap-guangzhou"}), "no setting \"region\""),
            (json!({"area": "europe"}), "settings.area"),
            (json!({"poll_interval": 0}), "settings.poll_interval"),
            (json!({"poll_timeout": "1h"}), "settings.poll_timeout"),
            (json!({"endpoint": "ftp://x"}), "settings.endpoint"),
        ] {
            let error = Tencent::new(&settings, &key()).err().unwrap_or_default();
            assert!(error.contains(wanted), "{settings}: {error}");
        }
        let mut missing = key();
        missing.remove("secret_key");
        let error = Tencent::new(&json!({}), &missing).err().unwrap_or_default();
        assert!(error.contains("credentials.secret_key"), "{error}");
        let mut extra = key();
        extra.insert("token".into(), "t".into());
        let error = Tencent::new(&json!({}), &extra).err().unwrap_or_default();
        assert!(error.contains("\"token\""), "{error}");
    }

    #[test]
    fn the_signed_host_is_the_one_reqwest_sends() {
        assert_eq!(
            signed_host(DEFAULT_ENDPOINT).as_deref(),
            Ok("cdn.tencentcloudapi.com")
        );
        assert_eq!(
            signed_host("http://127.0.0.1:8080").as_deref(),
            Ok("127.0.0.1:8080")
        );
        assert_eq!(
            signed_host("https://cdn.example:443").as_deref(),
            Ok("cdn.example")
        );
        assert_eq!(
            Tencent::target_url(&json!({})).as_deref(),
            Ok(DEFAULT_ENDPOINT)
        );
    }

    #[test]
    fn only_errors_naming_an_item_split_a_batch() {
        assert_eq!(
            refusal("ResourceNotFound.CdnHostNotExists"),
            Refusal::ItemRefused
        );
        assert_eq!(
            refusal("InvalidParameter.CdnUrlError"),
            Refusal::ItemRefused
        );
        assert_eq!(
            refusal("UnauthorizedOperation.CdnHostUnauthorized"),
            Refusal::ItemRefused
        );
        assert_eq!(refusal("InternalError.CdnSystemError"), Refusal::Transient);
        for code in [
            "AuthFailure.SignatureFailure",
            "LimitExceeded.CdnPurgeUrlExceedDayLimit",
            "LimitExceeded.CdnPushExceedDayLimit",
            "UnauthorizedOperation.CdnCamUnauthorized",
        ] {
            assert_eq!(refusal(code), Refusal::Final, "{code}");
        }
    }

    #[test]
    fn each_call_has_its_documented_limit_and_body() {
        assert_eq!(Call::PurgeUrls.per_call(), 1_000);
        assert_eq!(Call::PurgePaths.per_call(), 500);
        assert_eq!(Call::PushUrls.per_call(), 500);
        let Ok(tencent) = Tencent::new(&json!({"area": "global"}), &key()) else {
            panic!("valid settings")
        };
        assert_eq!(
            tencent
                .inner
                .submit_body(Call::PurgePaths, &["https://a/b/"]),
            json!({"Paths": ["https://a/b/"], "FlushType": "delete"})
        );
        assert_eq!(
            tencent.inner.submit_body(Call::PushUrls, &["https://a/b"]),
            json!({"Urls": ["https://a/b"], "Area": "global"})
        );
    }

    #[test]
    fn an_item_listed_under_another_name_shares_the_unmatched_records_outcome() {
        let sent = ["https://a/x y", "https://a/z"]
            .into_iter()
            .map(str::to_string)
            .collect();
        let states = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(url, state)| (url.to_string(), state.to_string()))
                .collect()
        };
        let listed =
            |encoded: &str| states(&[("https://a/x%20y", encoded), ("https://a/z", "done")]);
        assert_eq!(unmatched_state(&sent, &listed("done")), Some("done"));
        assert_eq!(unmatched_state(&sent, &listed("fail")), Some("fail"));
        assert_eq!(unmatched_state(&sent, &listed("process")), None);
        assert_eq!(
            unmatched_state(&sent, &states(&[("https://a/z", "done")])),
            None
        );
        let all_matched = states(&[("https://a/x y", "fail"), ("https://a/z", "done")]);
        assert_eq!(unmatched_state(&sent, &all_matched), None);
    }
}
