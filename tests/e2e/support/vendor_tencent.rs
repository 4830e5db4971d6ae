//! A stand-in of Tencent Cloud's CDN API 3.0 on loopback: it checks each call's TC3 signature
//! with the account's key (recomputed with the kind's own signer, which is pinned to Tencent's
//! published example), enforces the documented per-call limits, answers the documented
//! `{"Response": ...}` shapes and `Response.Error` codes, and keeps each task's URLs for
//! `DescribePurgeTasks` / `DescribePushTasks` (`process` at the first poll, then `done`, or
//! `fail` for a URL told to fail). It records every call, so tests assert what precache sent.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use precache_tasks::backends::tencent::tc3_authorization;
use serde_json::{json, Value};

/// One call that reached the stand-in.
#[derive(Debug, Clone)]
pub struct TencentCall {
    /// `X-TC-Action`.
    pub action: String,
    /// The JSON body.
    pub body: Value,
    /// `Response.Error.Code` answered, or `None` for a success.
    pub error: Option<String>,
    /// The `Authorization` header as received.
    pub authorization: String,
}

struct TencentTask {
    kind: &'static str,
    urls: Vec<String>,
    polls: usize,
}

#[derive(Default)]
struct TencentState {
    secret_id: String,
    secret_key: String,
    /// Calls still to be answered `RequestLimitExceeded`.
    rate_limited_calls: usize,
    /// URLs (or directories) whose host is not on the account: a call holding one is refused.
    refused: HashSet<String>,
    /// URLs whose task ends `fail` for them.
    failing: HashSet<String>,
    /// URLs whose task never finishes for them.
    stuck: HashSet<String>,
    /// URLs still allowed today for refreshes and pushes.
    purge_quota: usize,
    push_quota: usize,
    tasks: BTreeMap<String, TencentTask>,
    calls: Vec<TencentCall>,
    signatures_checked: usize,
}

/// A Tencent Cloud CDN API stand-in.
pub struct TencentStandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<TencentState>>,
    _server: tokio::task::JoinHandle<()>,
}

fn error(code: &str, message: &str) -> Value {
    json!({"Response": {"Error": {"Code": code, "Message": message},
                        "RequestId": "00000000-0000-0000-0000-000000000000"}})
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

async fn api(
    State(state): State<Arc<Mutex<TencentState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let mut state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let action = header(&headers, "x-tc-action").to_string();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = answer(&mut state, &action, &headers, &body, &parsed);
    let error = answer["Response"]["Error"]["Code"]
        .as_str()
        .map(str::to_string);
    state.calls.push(TencentCall {
        action,
        body: parsed,
        error,
        authorization: header(&headers, "authorization").to_string(),
    });
    Json(answer)
}

/// Tencent's checks in its order: the signature, the frequency limit, then the action's own.
fn answer(
    state: &mut TencentState,
    action: &str,
    headers: &HeaderMap,
    body: &[u8],
    parsed: &Value,
) -> Value {
    if header(headers, "x-tc-version") != "2018-06-06" {
        return error(
            "InvalidParameterValue",
            "The value of X-TC-Version is not supported.",
        );
    }
    let Ok(timestamp) = header(headers, "x-tc-timestamp").parse::<i64>() else {
        return error("MissingParameter", "The request is missing X-TC-Timestamp.");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    if (now - timestamp).abs() > 300 {
        return error("AuthFailure.SignatureExpire", "Signature expired.");
    }
    let authorization = header(headers, "authorization");
    let secret_id = authorization
        .split("Credential=")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    if secret_id != state.secret_id {
        return error("AuthFailure.SecretIdNotFound", "The SecretId is not found.");
    }
    let expected = tc3_authorization(
        &state.secret_id,
        &state.secret_key,
        "cdn",
        header(headers, "host"),
        header(headers, "content-type"),
        body,
        timestamp,
    );
    if authorization != expected.authorization {
        return error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        );
    }
    state.signatures_checked += 1;
    if state.rate_limited_calls > 0 {
        state.rate_limited_calls -= 1;
        return error(
            "RequestLimitExceeded",
            "Your current request times exceeds the frequency limit of 20 per second.",
        );
    }
    let strings = |field: &str| -> Vec<String> {
        parsed[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.as_str().map(str::to_string))
            .collect()
    };
    match action {
        "PurgeUrlsCache" => submit(state, "url", strings("Urls"), 1_000, true),
        "PurgePathCache" => {
            if !matches!(parsed["FlushType"].as_str(), Some("flush" | "delete")) {
                return error(
                    "InvalidParameter.CdnParamError",
                    "FlushType must be flush or delete.",
                );
            }
            submit(state, "path", strings("Paths"), 500, true)
        }
        "PushUrlsCache" => {
            if let Some(area) = parsed.get("Area") {
                if !matches!(area.as_str(), Some("mainland" | "overseas" | "global")) {
                    return error("InvalidParameter.CdnParamError", "Area is invalid.");
                }
            }
            submit(state, "push", strings("Urls"), 500, false)
        }
        "DescribePurgeTasks" | "DescribePushTasks" => describe(state, action, parsed),
        "DescribePurgeQuota" => json!({"Response": {
            "UrlPurge": [{"Area": "mainland", "Total": 10000, "Available": state.purge_quota, "Batch": 1000}],
            "PathPurge": [{"Area": "mainland", "Total": 100, "Available": 100, "Batch": 500}],
            "RequestId": "quota"}}),
        _ => error("InvalidAction", "The requested action does not exist."),
    }
}

fn submit(
    state: &mut TencentState,
    kind: &'static str,
    urls: Vec<String>,
    per_call: usize,
    purge: bool,
) -> Value {
    if urls.is_empty() {
        return error("InvalidParameter.CdnParamError", "No URL given.");
    }
    if urls.len() > per_call {
        let code = match purge {
            true => "LimitExceeded.CdnPurgeUrlExceedBatchLimit",
            false => "LimitExceeded.CdnPushExceedBatchLimit",
        };
        return error(code, &format!("At most {per_call} per call."));
    }
    if let Some(refused) = urls.iter().find(|url| state.refused.contains(*url)) {
        return error(
            "ResourceNotFound.CdnHostNotExists",
            &format!("The domain of {refused} is not in this account."),
        );
    }
    let quota = match purge {
        true => &mut state.purge_quota,
        false => &mut state.push_quota,
    };
    if urls.len() > *quota {
        return match purge {
            true => error(
                "LimitExceeded.CdnPurgeUrlExceedDayLimit",
                "The number of URLs purged today exceeds the daily limit.",
            ),
            false => error(
                "LimitExceeded.CdnPushExceedDayLimit",
                "The number of URLs prefetched today exceeds the daily limit.",
            ),
        };
    }
    *quota -= urls.len();
    let task_id = format!("{kind}-{}", state.tasks.len() + 1);
    state.tasks.insert(
        task_id.clone(),
        TencentTask {
            kind,
            urls,
            polls: 0,
        },
    );
    json!({"Response": {"TaskId": task_id, "RequestId": "submit"}})
}

fn describe(state: &mut TencentState, action: &str, parsed: &Value) -> Value {
    let Some(task_id) = parsed["TaskId"].as_str() else {
        return error(
            "InvalidParameter.CdnParamError",
            "TaskId or StartTime is required.",
        );
    };
    let logs_field = match action {
        "DescribePushTasks" => "PushLogs",
        _ => "PurgeLogs",
    };
    let failing = state.failing.clone();
    let stuck = state.stuck.clone();
    let Some(task) = state.tasks.get_mut(task_id) else {
        return json!({"Response": {logs_field: [], "TotalCount": 0, "RequestId": "describe"}});
    };
    let wanted_kind = match (action, parsed["PurgeType"].as_str()) {
        ("DescribePushTasks", _) => "push",
        (_, Some("path")) => "path",
        (_, Some("url")) => "url",
        (_, _) => task.kind,
    };
    if wanted_kind != task.kind {
        return json!({"Response": {logs_field: [], "TotalCount": 0, "RequestId": "describe"}});
    }
    // Every poll of a task counts; the first sees it in progress.
    task.polls += 1;
    let offset = parsed["Offset"].as_u64().unwrap_or(0) as usize;
    let limit = parsed["Limit"].as_u64().unwrap_or(20) as usize;
    let logs: Vec<Value> = task
        .urls
        .iter()
        .skip(offset)
        .take(limit)
        .map(|url| {
            let status = match (task.polls, failing.contains(url)) {
                _ if stuck.contains(url) => "process",
                (1, _) => "process",
                (_, true) => "fail",
                (_, false) => "done",
            };
            json!({"TaskId": task_id, "Url": url, "Status": status,
                   "CreateTime": "2026-12-04 15:00:00"})
        })
        .collect();
    json!({"Response": {logs_field: logs, "TotalCount": task.urls.len(), "RequestId": "describe"}})
}

impl TencentStandIn {
    /// An account with this key, a daily quota of 10,000 refreshed and 1,000 pushed URLs.
    pub async fn start(secret_id: &str, secret_key: &str) -> std::io::Result<TencentStandIn> {
        let state = Arc::new(Mutex::new(TencentState {
            secret_id: secret_id.to_string(),
            secret_key: secret_key.to_string(),
            purge_quota: 10_000,
            push_quota: 1_000,
            ..TencentState::default()
        }));
        let router = Router::new()
            .route("/", post(api))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(TencentStandIn {
            addr,
            state,
            _server: server,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TencentState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `settings.endpoint` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `calls` calls are answered `RequestLimitExceeded`.
    pub fn rate_limit_next(&self, calls: usize) {
        self.lock().rate_limited_calls = calls;
    }

    /// Calls holding `url` are refused (its host is not on the account).
    pub fn refuse(&self, url: &str) {
        self.lock().refused.insert(url.to_string());
    }

    /// Tasks holding `url` end `fail` for it.
    pub fn fail(&self, url: &str) {
        self.lock().failing.insert(url.to_string());
    }

    /// Tasks holding `url` stay `process` for it.
    pub fn keep_in_progress(&self, url: &str) {
        self.lock().stuck.insert(url.to_string());
    }

    /// URLs that may still be pushed today.
    pub fn set_push_quota(&self, urls: usize) {
        self.lock().push_quota = urls;
    }

    /// Every call, in order.
    pub fn calls(&self) -> Vec<TencentCall> {
        self.lock().calls.clone()
    }

    /// Calls whose signature was recomputed and matched.
    pub fn signatures_checked(&self) -> usize {
        self.lock().signatures_checked
    }
}
