//! A stand-in for Alibaba Cloud CDN's RPC API (version `2018-05-10`) on loopback. It does what
//! the API reference says the service does with a request: it recomputes the signature v1 with
//! the AccessKey secret (with precache's signer, itself pinned to Alibaba's published example),
//! refuses a nonce it has seen, enforces the per-call limits of `RefreshObjectCaches` (1,000 URLs
//! or 100 directories), `PushObjectCache` (100) and `DescribeRefreshTaskById` (10 task ids),
//! answers the documented JSON shapes and `{"Code", "Message", "RequestId"}` errors, and keeps
//! task states for polling: `Refreshing` at a task's first poll, then `Complete` (or `Failed`
//! for the URLs a test names, or `Refreshing` forever). The refresh errors' codes and messages
//! are those the reference lists (`QuotaExceeded.Refresh`, `SingleRequest.OverLimit`,
//! `InvalidObjectPath.Malformed`); the others are shaped like them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use precache_tasks::backends::alibaba::rpc_signature;
use serde_json::{json, Value};

/// A task as the stand-in keeps it.
#[derive(Clone)]
struct Task {
    object_path: String,
    object_type: &'static str,
    polls: usize,
}

/// One call that reached the stand-in.
#[derive(Debug, Clone)]
pub struct AlibabaCall {
    /// `Action`.
    pub action: String,
    /// HTTP status answered.
    pub status: u16,
    /// `Code` answered, empty on success.
    pub code: String,
    /// Every parameter received, `Signature` included.
    pub params: BTreeMap<String, String>,
}

impl AlibabaCall {
    /// `ObjectPath`'s lines.
    pub fn object_paths(&self) -> Vec<String> {
        self.params
            .get("ObjectPath")
            .map(|paths| {
                paths
                    .split('\n')
                    .map(|path| path.trim_end_matches('\r').to_string())
                    .filter(|path| !path.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct AlibabaState {
    access_key_id: String,
    access_key_secret: String,
    nonces: HashSet<String>,
    /// Calls still to be answered `Throttling.User` before any is served.
    throttled_calls: usize,
    /// URL refreshes left today (`None`: plenty).
    url_refreshes_left: Option<usize>,
    /// URLs the account refuses (a call holding one is refused whole).
    refused: HashSet<String>,
    /// URLs whose tasks end `Failed`.
    failing: HashSet<String>,
    /// URLs whose tasks stay `Refreshing`.
    stalled: HashSet<String>,
    tasks: HashMap<String, Task>,
    next_task_id: u64,
    calls: Vec<AlibabaCall>,
}

/// An Alibaba Cloud CDN API stand-in.
pub struct AlibabaStandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<AlibabaState>>,
    _server: tokio::task::JoinHandle<()>,
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, String, Value) {
    (
        status,
        code.to_string(),
        json!({"Code": code, "Message": message, "RequestId": request_id(), "HostId": "cdn.aliyuncs.com"}),
    )
}

fn request_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("0AEDAF20-4DDF-4165-8750-{n:012X}")
}

fn is_timestamp(text: &str) -> bool {
    // `YYYY-MM-DDThh:mm:ssZ`, in UTC as the reference requires.
    let bytes = text.as_bytes();
    bytes.len() == 20
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

async fn rpc(State(state): State<Arc<Mutex<AlibabaState>>>, body: String) -> Response {
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let mut state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (status, code, answer) = answer(&mut state, &params);
    state.calls.push(AlibabaCall {
        action: params.get("Action").cloned().unwrap_or_default(),
        status: status.as_u16(),
        code,
        params,
    });
    (status, Json(answer)).into_response()
}

fn answer(
    state: &mut AlibabaState,
    params: &BTreeMap<String, String>,
) -> (StatusCode, String, Value) {
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    for name in [
        "Action",
        "Format",
        "Version",
        "AccessKeyId",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Signature",
    ] {
        if param(name).is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("MissingParameter.{name}"),
                &format!("The input parameter \"{name}\" that is mandatory for processing this request is not supplied."),
            );
        }
    }
    if param("Version") != "2018-05-10" || param("Format") != "JSON" {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        );
    }
    if param("SignatureMethod") != "HMAC-SHA1" || param("SignatureVersion") != "1.0" {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidSignatureMethod",
            "Specified signature method is not supported.",
        );
    }
    if !is_timestamp(param("Timestamp")) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        );
    }
    if param("AccessKeyId") != state.access_key_id {
        return error(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        );
    }
    if rpc_signature("POST", params, &state.access_key_secret) != param("Signature") {
        return error(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        );
    }
    if !state.nonces.insert(param("SignatureNonce").to_string()) {
        return error(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        );
    }
    if state.throttled_calls > 0 {
        state.throttled_calls -= 1;
        return error(
            StatusCode::BAD_REQUEST,
            "Throttling.User",
            "Request was denied due to user flow control.",
        );
    }
    let object_paths: Vec<String> = param("ObjectPath")
        .split('\n')
        .map(|path| path.trim_end_matches('\r').to_string())
        .filter(|path| !path.is_empty())
        .collect();
    match param("Action") {
        "RefreshObjectCaches" => {
            let (object_type, limit) = match params.get("ObjectType").map(String::as_str) {
                None | Some("File") => ("file", 1_000),
                Some("Directory") => ("directory", 100),
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "InvalidObjectType.Malformed",
                        "Specified ObjectType is malformed.",
                    )
                }
            };
            if let Some(refused) = check_paths(state, &object_paths, limit) {
                return refused;
            }
            if object_type == "file" {
                if let Some(left) = state.url_refreshes_left {
                    if object_paths.len() > left {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "QuotaExceeded.Refresh",
                            "You've exceeded the prescribed refresh limits.",
                        );
                    }
                    state.url_refreshes_left = Some(left - object_paths.len());
                }
            }
            let ids = create_tasks(state, &object_paths, object_type);
            (
                StatusCode::OK,
                String::new(),
                json!({"RequestId": request_id(), "RefreshTaskId": ids}),
            )
        }
        "PushObjectCache" => {
            if let Some(refused) = check_paths(state, &object_paths, 100) {
                return refused;
            }
            let ids = create_tasks(state, &object_paths, "preload");
            (
                StatusCode::OK,
                String::new(),
                json!({"RequestId": request_id(), "PushTaskId": ids}),
            )
        }
        "DescribeRefreshTaskById" => {
            let ids: Vec<&str> = param("TaskId")
                .split(',')
                .filter(|id| !id.is_empty())
                .collect();
            if ids.is_empty() || ids.len() > 10 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidTaskId.Malformed",
                    "Specified TaskId is malformed: give 1 to 10 ids.",
                );
            }
            let mut tasks = Vec::new();
            for id in ids {
                let Some(task) = state.tasks.get_mut(id) else {
                    continue;
                };
                task.polls += 1;
                let failing = state.failing.contains(&task.object_path);
                let stalled = state.stalled.contains(&task.object_path);
                let (status, process, description) = match (task.polls, failing) {
                    (1, _) => ("Refreshing", "0%", ""),
                    _ if stalled => ("Refreshing", "50%", ""),
                    (_, true) => ("Failed", "0%", "Origin Return StatusCode 5XX"),
                    (_, false) => ("Complete", "100%", ""),
                };
                tasks.push(json!({"TaskId": id, "ObjectPath": task.object_path,
                                  "ObjectType": task.object_type, "Status": status,
                                  "Process": process, "Description": description,
                                  "CreationTime": "2026-12-04T14:00:00Z"}));
            }
            let total = tasks.len();
            (
                StatusCode::OK,
                String::new(),
                json!({"RequestId": request_id(), "Tasks": tasks, "TotalCount": total}),
            )
        }
        "DescribeRefreshQuota" => {
            let url_left = state.url_refreshes_left.unwrap_or(10_000);
            (
                StatusCode::OK,
                String::new(),
                json!({"RequestId": request_id(), "UrlQuota": "10000",
                       "UrlRemain": url_left.to_string(), "DirQuota": "100",
                       "DirRemain": "100", "PreloadQuota": "1000", "PreloadRemain": "1000",
                       "BlockQuota": "100", "BlockRemain": "100"}),
            )
        }
        other => error(
            StatusCode::BAD_REQUEST,
            "InvalidAction.NotFound",
            &format!("Specified api {other} is not found, please check your url and method."),
        ),
    }
}

fn check_paths(
    state: &AlibabaState,
    object_paths: &[String],
    limit: usize,
) -> Option<(StatusCode, String, Value)> {
    if object_paths.is_empty() {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "MissingParameter.ObjectPath",
            "The input parameter \"ObjectPath\" that is mandatory for processing this request is not supplied.",
        ));
    }
    if object_paths.len() > limit {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "SingleRequest.OverLimit",
            &format!("A maximum of {limit} URLs are supported for each request."),
        ));
    }
    object_paths
        .iter()
        .find(|path| state.refused.contains(*path))
        .map(|path| {
            error(
                StatusCode::BAD_REQUEST,
                "InvalidObjectPath.Malformed",
                &format!("The specified ObjectPath is invalid. ({path})"),
            )
        })
}

fn create_tasks(
    state: &mut AlibabaState,
    object_paths: &[String],
    object_type: &'static str,
) -> String {
    let mut ids = Vec::new();
    for path in object_paths {
        state.next_task_id += 1;
        let id = (704_222_900 + state.next_task_id).to_string();
        state.tasks.insert(
            id.clone(),
            Task {
                object_path: path.clone(),
                object_type,
                polls: 0,
            },
        );
        ids.push(id);
    }
    ids.join(",")
}

impl AlibabaStandIn {
    /// An account whose AccessKey is `access_key_id` / `access_key_secret`.
    pub async fn start(
        access_key_id: &str,
        access_key_secret: &str,
    ) -> std::io::Result<AlibabaStandIn> {
        let state = Arc::new(Mutex::new(AlibabaState {
            access_key_id: access_key_id.to_string(),
            access_key_secret: access_key_secret.to_string(),
            ..AlibabaState::default()
        }));
        let router = Router::new()
            .route("/", post(rpc))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(AlibabaStandIn {
            addr,
            state,
            _server: server,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AlibabaState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `settings.endpoint` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `calls` signed calls are answered `Throttling.User`.
    pub fn throttle_next(&self, calls: usize) {
        self.lock().throttled_calls = calls;
    }

    /// URL refreshes left today; a call asking more is refused `QuotaExceeded.Refresh`.
    pub fn url_refreshes_left(&self, left: usize) {
        self.lock().url_refreshes_left = Some(left);
    }

    /// Calls holding `url` are refused `InvalidObjectPath.Malformed`.
    pub fn refuse(&self, url: &str) {
        self.lock().refused.insert(url.to_string());
    }

    /// Tasks of `url` end `Failed` at their second poll.
    pub fn fail(&self, url: &str) {
        self.lock().failing.insert(url.to_string());
    }

    /// Tasks of `url` stay `Refreshing`.
    pub fn stall(&self, url: &str) {
        self.lock().stalled.insert(url.to_string());
    }

    /// Every call that reached it, in order.
    pub fn calls(&self) -> Vec<AlibabaCall> {
        self.lock().calls.clone()
    }
}
