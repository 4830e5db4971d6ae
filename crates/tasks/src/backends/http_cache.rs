//! What the cache kinds share: a cache server reached over HTTP at each target's base URL, a
//! prefetch as a `GET` through it with the URL's `Host`, purges as requests its configuration
//! (docs/backends.md) turns into removals, and each target's own concurrency and timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use precache_model::edge_protocol::PairOutcome;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{split_url, Progress, Target};
use crate::PairJob;

/// Requests at once to one cache server, unless `settings.concurrency` says otherwise.
const DEFAULT_CONCURRENCY: usize = 8;
/// A request to a cache server (headers and whole body) gives up after this, unless
/// `settings.timeout` (seconds) says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Settings every cache kind takes.
const COMMON_SETTINGS: [&str; 2] = ["concurrency", "timeout"];

/// An HTTP client for a fleet of cache servers.
pub struct HttpCache {
    kind: &'static str,
    http: reqwest::Client,
    concurrency: usize,
    permits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A cache server's answer to a purge-like request.
pub struct Answer {
    /// Its HTTP status.
    pub status: u16,
    /// How many objects it removed, when its configuration says (`X-Precache-Purged`, from
    /// Varnish's VCL: every `Vary` variant counts).
    pub purged: Option<u64>,
}

impl HttpCache {
    /// A client for `kind` with these settings; `own_settings` are the other keys the kind
    /// reads. Unknown keys are refused, so that a misspelt setting is not silently ignored.
    pub fn new(
        kind: &'static str,
        settings: &Value,
        own_settings: &[&str],
    ) -> Result<HttpCache, String> {
        let (http, concurrency) = client_for(kind, settings, own_settings)?;
        Ok(HttpCache {
            kind,
            http,
            concurrency,
            permits: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for one of the target's request slots.
    async fn permit(&self, target: &Target) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut permits = self
                .permits
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(
                permits
                    .entry(target.url.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency))),
            )
        };
        semaphore.acquire_owned().await.ok()
    }

    fn unreachable(&self, target: &Target, error: &reqwest::Error) -> String {
        let what = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "no answer"
        };
        format!(
            "target unreachable: {} {} {what}: {}",
            self.kind,
            target.url,
            root_cause(error)
        )
    }

    /// `GET` of the job's URL through the target, with its `Host`, read to the end: success
    /// only on a 2xx whose body is as long as it said.
    pub async fn prefetch(
        &self,
        target: &Target,
        job: &PairJob,
        progress: Progress<'_>,
    ) -> PairOutcome {
        let Some((host, path)) = split_url(&job.url) else {
            return PairOutcome::failed(None, format!("not a URL: {}", job.url), false);
        };
        let _permit = self.permit(target).await;
        let sent = self
            .http
            .get(format!("{}{path}", target.url.trim_end_matches('/')))
            .header(reqwest::header::HOST, host)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return PairOutcome::failed(None, self.unreachable(target, &error), true),
        };
        let status = response.status();
        let expected = response.content_length();
        if !status.is_success() {
            return PairOutcome::failed(
                Some(status.as_u16()),
                format!("{} {} answered {status}", self.kind, target.url),
                status.is_server_error(),
            );
        }
        let mut bytes: u64 = 0;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    bytes += chunk.len() as u64;
                    progress(bytes, expected);
                }
                Ok(None) => break,
                Err(error) => {
                    return PairOutcome {
                        bytes,
                        ..PairOutcome::failed(
                            Some(status.as_u16()),
                            format!(
                                "{} {} ended the body after {bytes} of {} bytes: {}",
                                self.kind,
                                target.url,
                                expected.map_or_else(|| "?".to_string(), |n| n.to_string()),
                                root_cause(&error)
                            ),
                            true,
                        )
                    }
                }
            }
        }
        if expected.is_some_and(|expected| expected != bytes) {
            return PairOutcome {
                bytes,
                ..PairOutcome::failed(
                    Some(status.as_u16()),
                    format!(
                        "{} {} sent {bytes} of {} bytes",
                        self.kind,
                        target.url,
                        expected.unwrap_or_default()
                    ),
                    true,
                )
            };
        }
        PairOutcome {
            success: true,
            http_status: Some(status.as_u16()),
            bytes,
            objects: None,
            error: None,
            retryable: false,
        }
    }

    /// Sends a purge-like request for `path` on `host` to the target; `Err` (retryable) when it
    /// did not answer.
    pub async fn send(
        &self,
        target: &Target,
        method: Method,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let _permit = self.permit(target).await;
        let mut request = self
            .http
            .request(
                method,
                format!("{}{path}", target.url.trim_end_matches('/')),
            )
            .header(reqwest::header::HOST, host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.unreachable(target, &error))?;
        let status = response.status().as_u16();
        let purged = response
            .headers()
            .get("x-precache-purged")
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse().ok());
        // Read the (small) body so the connection can be used again.
        let _ = response.bytes().await;
        Ok(Answer { status, purged })
    }
}

/// The HTTP client every kind talks through, from the settings every kind takes
/// (`concurrency`, `timeout`) besides its `own_settings`; answers the client and the
/// concurrency. Unknown keys are refused.
pub fn client_for(
    kind: &str,
    settings: &Value,
    own_settings: &[&str],
) -> Result<(reqwest::Client, usize), String> {
    let empty = serde_json::Map::new();
    let map = match settings {
        Value::Null => &empty,
        Value::Object(map) => map,
        _ => return Err("settings must be an object".into()),
    };
    if let Some(unknown) = map.keys().find(|key| {
        !COMMON_SETTINGS.contains(&key.as_str()) && !own_settings.contains(&key.as_str())
    }) {
        return Err(format!("{kind} has no setting {unknown:?}"));
    }
    let concurrency = match map.get("concurrency") {
        None => DEFAULT_CONCURRENCY,
        Some(value) => value
            .as_u64()
            .filter(|n| (1..=1024).contains(n))
            .ok_or("settings.concurrency must be an integer from 1 to 1024")?
            as usize,
    };
    let timeout = match map.get("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(value) => Duration::from_secs(
            value
                .as_u64()
                .filter(|n| (1..=86_400).contains(n))
                .ok_or("settings.timeout must be a number of seconds from 1 to 86400")?,
        ),
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("build an HTTP client: {e}"))?;
    Ok((http, concurrency))
}

/// `settings.endpoint` (an http(s) base URL) or the vendor's.
pub fn endpoint(settings: &Value, default: &str) -> Result<String, String> {
    match settings.get("endpoint") {
        None => Ok(default.to_string()),
        Some(Value::String(url))
            if (url.starts_with("https://") || url.starts_with("http://"))
                && url::Url::parse(url).is_ok() =>
        {
            Ok(url.trim_end_matches('/').to_string())
        }
        Some(other) => Err(format!(
            "settings.endpoint must be an http(s) URL, not {other}"
        )),
    }
}

/// The innermost error's words: reqwest wraps hyper's, which wraps the socket's.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// The outcome of a purge whose answer means "removed" (`removed`), "was not cached"
/// (`not_cached`) or anything else (a failure, retried on 5xx).
pub fn purge_outcome(
    kind: &str,
    target: &Target,
    answer: Result<Answer, String>,
    removed: &[u16],
    not_cached: &[u16],
) -> PairOutcome {
    match answer {
        Err(unreachable) => PairOutcome::failed(None, unreachable, true),
        Ok(Answer { status, purged })
            if removed.contains(&status) || not_cached.contains(&status) =>
        {
            PairOutcome {
                success: true,
                http_status: Some(status),
                bytes: 0,
                objects: Some(purged.unwrap_or(u64::from(removed.contains(&status)))),
                error: None,
                retryable: false,
            }
        }
        Ok(Answer { status, .. }) => PairOutcome::failed(
            Some(status),
            format!(
                "{kind} {} answered {status} to the purge (is it configured as in docs/backends.md?)",
                target.url
            ),
            status >= 500,
        ),
    }
}

/// A purge of a URL no cache holds (on the reserved `.invalid` domain): a "not cached" answer
/// shows the target is reached and lets this control plane purge.
pub async fn check_purge(
    http: &HttpCache,
    kind: &str,
    target: &Target,
    method: &[u8],
    path: &str,
) -> Result<String, String> {
    let method = Method::from_bytes(method).map_err(|e| e.to_string())?;
    match http
        .send(target, method, path, "precache-check.invalid", &[])
        .await?
    {
        answer if answer.status == 404 || answer.status == 200 => Ok(format!(
            "{kind} {} answered {} to a purge: purges are allowed",
            target.url, answer.status
        )),
        answer => Err(format!(
            "{kind} {} answered {} to a purge: configure it as in docs/backends.md",
            target.url, answer.status
        )),
    }
}
