//! `cloudflare`: a Cloudflare zone, through `POST /zones/{zone_id}/purge_cache` with a Bearer
//! API token. URL purges go as `files` (full URLs), directory purges as `prefixes` (host and
//! path, no scheme). Cloudflare only *accepts* a purge (there is no completion to poll), so a
//! pair ends `success` unconfirmed; it has no prefetch API.
//!
//! One call carries many URLs: pairs arriving within 50 ms of each other are sent together,
//! at most `settings.max_files_per_call` (30 by default: the documented cap on Free, Pro and
//! Business; 500 on Enterprise) per call. A `429` is waited out and the call sent again; a `400`
//! on a batch is split in halves until the refused URLs are alone, so a partly refused batch
//! fails only those.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use precache_model::edge_protocol::PairOutcome;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::batch::{BatchSender, Batcher, Waiting};
use super::http_cache::{client_for, endpoint, root_cause};
use super::{split_url, Away, Backend, Capabilities, Progress, Target};
use crate::PairJob;

/// Cloudflare's API, unless `settings.endpoint` says otherwise (a test's stand-in).
const DEFAULT_ENDPOINT: &str = "https://api.cloudflare.com/client/v4";
/// How long the first pair of a batch waits for others to join it.
const WINDOW: Duration = Duration::from_millis(50);
/// Files per call unless `settings.max_files_per_call` says otherwise.
const DEFAULT_MAX_FILES: usize = 30;
/// Pairs of the zone that may wait for their call at once.
const GATHERED: usize = 2_000;
/// `429`s waited out per call before its pairs fail (and are retried by the engine).
const RATE_LIMIT_RETRIES: u32 = 6;

/// A Cloudflare zone.
pub struct Cloudflare {
    batcher: Arc<Batcher<Purge>>,
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    calls: Semaphore,
    endpoint: String,
    zone_id: String,
    token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Purge {
    Files,
    Prefixes,
}

impl Purge {
    fn field(self) -> &'static str {
        match self {
            Purge::Files => "files",
            Purge::Prefixes => "prefixes",
        }
    }
}

impl Cloudflare {
    /// Settings: `zone_id` (required), `endpoint`, `max_files_per_call`, `concurrency` (calls at
    /// once), `timeout`; credentials: `api_token`.
    pub fn new(
        settings: &Value,
        credentials: &BTreeMap<String, String>,
    ) -> Result<Cloudflare, String> {
        let (http, concurrency) = client_for(
            "cloudflare",
            settings,
            &["zone_id", "endpoint", "max_files_per_call"],
        )?;
        let zone_id = settings
            .get("zone_id")
            .and_then(Value::as_str)
            .filter(|id| {
                !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .ok_or("cloudflare needs settings.zone_id, the zone's id (letters and digits)")?
            .to_string();
        let endpoint = endpoint(settings, DEFAULT_ENDPOINT)?;
        let max_files = match settings.get("max_files_per_call") {
            None => DEFAULT_MAX_FILES,
            Some(value) => value
                .as_u64()
                .filter(|n| (1..=500).contains(n))
                .ok_or("settings.max_files_per_call must be from 1 to 500")?
                as usize,
        };
        if let Some(unknown) = credentials.keys().find(|key| *key != "api_token") {
            return Err(format!(
                "cloudflare takes the credential api_token, not {unknown:?}"
            ));
        }
        let token = credentials
            .get("api_token")
            .filter(|token| !token.is_empty())
            .ok_or("cloudflare needs credentials.api_token (a token allowed to purge the zone)")?
            .clone();
        let inner = Arc::new(Inner {
            http,
            calls: Semaphore::new(concurrency),
            endpoint,
            zone_id,
            token,
        });
        let sender: Arc<dyn BatchSender<Purge>> = Arc::clone(&inner) as _;
        Ok(Cloudflare {
            batcher: Batcher::new(WINDOW, max_files, sender),
            inner,
        })
    }

    /// The one target of a zone: where its purges go.
    pub fn target_url(settings: &Value) -> Result<String, String> {
        let zone = settings
            .get("zone_id")
            .and_then(Value::as_str)
            .ok_or("cloudflare needs settings.zone_id")?;
        Ok(format!(
            "{}/zones/{zone}",
            endpoint(settings, DEFAULT_ENDPOINT)?
        ))
    }
}

#[async_trait]
impl BatchSender<Purge> for Inner {
    async fn send(&self, purge: Purge, batch: Vec<Waiting>) {
        self.call(purge, batch).await
    }
}

impl Inner {
    /// One call for `batch`; a `400` splits it, a `429` is waited out.
    async fn call(&self, purge: Purge, batch: Vec<Waiting>) {
        let mut pending = vec![batch];
        while let Some(batch) = pending.pop() {
            let items: Vec<&str> = batch.iter().map(|w| w.item.as_str()).collect();
            match self.send(purge, &items).await {
                Answered::Accepted(id) => {
                    for waiting in batch {
                        waiting.answer(PairOutcome {
                            success: true,
                            http_status: Some(200),
                            bytes: 0,
                            objects: None,
                            error: id.clone().map(|id| format!("accepted as purge {id}")),
                            retryable: false,
                        });
                    }
                }
                Answered::Refused(status, reason) if status == 400 && batch.len() > 1 => {
                    // Find the URLs Cloudflare refuses: the others still go.
                    let mut batch = batch;
                    let second = batch.split_off(batch.len() / 2);
                    tracing::debug!(%reason, size = batch.len() + second.len(), "cloudflare refused a batch; splitting it");
                    pending.push(second);
                    pending.push(batch);
                }
                Answered::Refused(status, reason) => {
                    for waiting in batch {
                        waiting.answer(PairOutcome::failed(
                            Some(status),
                            format!("cloudflare answered {status}: {reason}"),
                            status >= 500,
                        ));
                    }
                }
                Answered::Unreachable(reason) => {
                    for waiting in batch {
                        waiting.answer(PairOutcome::failed(None, reason.clone(), true));
                    }
                }
            }
        }
    }

    async fn send(&self, purge: Purge, items: &[&str]) -> Answered {
        let _slot = self.calls.acquire().await;
        let url = format!("{}/zones/{}/purge_cache", self.endpoint, self.zone_id);
        let body = json!({ purge.field(): items });
        let mut backoff = Duration::from_secs(1);
        for attempt in 0..=RATE_LIMIT_RETRIES {
            let response = match self
                .http
                .post(&url)
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await
            {
                Ok(response) => response,
                Err(error) => {
                    return Answered::Unreachable(format!(
                        "target unreachable: cloudflare {}: {}",
                        self.endpoint,
                        root_cause(&error)
                    ))
                }
            };
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS && attempt < RATE_LIMIT_RETRIES {
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .map_or(backoff, Duration::from_secs)
                    .min(Duration::from_secs(60));
                tracing::debug!(?wait, "cloudflare rate limit; waiting");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() && answer["success"] == true {
                return Answered::Accepted(answer["result"]["id"].as_str().map(str::to_string));
            }
            return Answered::Refused(status.as_u16(), vendor_errors(&answer));
        }
        Answered::Refused(429, "rate limited after every retry".into())
    }
}

enum Answered {
    Accepted(Option<String>),
    Refused(u16, String),
    Unreachable(String),
}

/// Cloudflare's own words: `errors[].code` and `message`.
fn vendor_errors(answer: &Value) -> String {
    let words: Vec<String> = answer["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(
            |error| match (error["code"].as_i64(), error["message"].as_str()) {
                (Some(code), Some(message)) => format!("{message} (code {code})"),
                (None, Some(message)) => message.to_string(),
                _ => error.to_string(),
            },
        )
        .collect();
    if words.is_empty() {
        "no reason given".into()
    } else {
        words.join("; ")
    }
}

#[async_trait]
impl Backend for Cloudflare {
    fn kind(&self) -> &'static str {
        "cloudflare"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            prefetch: false,
            url_purge: true,
            dir_purge: true,
            invalidate: false,
            reports_was_cached: false,
            confirms: false,
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
            "cloudflare has no prefetch",
            false,
        ))
    }

    async fn purge(&self, _target: &Target, job: &PairJob) -> Result<PairOutcome, Away> {
        if job.is_dir {
            let Some((host, path)) = split_url(&job.url) else {
                return Ok(PairOutcome::failed(
                    None,
                    format!("not a URL: {}", job.url),
                    false,
                ));
            };
            return Ok(self
                .batcher
                .submit(Purge::Prefixes, format!("{host}{path}"))
                .await);
        }
        Ok(self.batcher.submit(Purge::Files, job.url.clone()).await)
    }

    fn gathers(&self) -> Option<usize> {
        Some(GATHERED)
    }

    async fn check(&self, _target: &Target) -> Result<String, String> {
        // Verifying the token costs no purge: GET /user/tokens/verify.
        let url = format!("{}/user/tokens/verify", self.inner.endpoint);
        let response = self
            .inner
            .http
            .get(&url)
            .bearer_auth(&self.inner.token)
            .send()
            .await
            .map_err(|error| {
                format!(
                    "target unreachable: cloudflare {url}: {}",
                    root_cause(&error)
                )
            })?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() && answer["success"] == true {
            Ok(format!(
                "cloudflare token is {}",
                answer["result"]["status"].as_str().unwrap_or("valid")
            ))
        } else {
            Err(format!(
                "cloudflare answered {status}: {}",
                vendor_errors(&answer)
            ))
        }
    }
}
