//! Stand-ins for vendor CDN APIs on loopback: each does with a request what the vendor does
//! (checks the credential, enforces the documented per-call limit and rate limit, answers the
//! documented JSON shapes and error answers) and records what reached it, so tests assert the
//! calls precache made. The error codes and words are the stand-in's, shaped like the vendor's.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What a Cloudflare stand-in was told, and how it behaves.
#[derive(Default)]
struct CloudflareState {
    token: String,
    zone_id: String,
    max_files: usize,
    /// Calls still to be answered `429` before any is served.
    rate_limited_calls: usize,
    /// URLs the zone does not accept (a batch holding one is refused with `400`).
    refused: HashSet<String>,
    /// Every purge body that was accepted.
    accepted: Vec<Value>,
    /// Every purge call, accepted or not: (status answered, body).
    calls: Vec<(u16, Value)>,
}

/// A Cloudflare API stand-in (`/client/v4/...`).
pub struct CloudflareStandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<CloudflareState>>,
    _server: tokio::task::JoinHandle<()>,
}

fn cf_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(
            json!({"success": false, "errors": [{"code": code, "message": message}],
                    "messages": [], "result": null}),
        ),
    )
        .into_response()
}

fn authorized(state: &CloudflareState, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| token == state.token)
}

async fn purge_cache(
    State(state): State<Arc<Mutex<CloudflareState>>>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (status, answer) = cloudflare_answer(&mut state, &zone, &headers, &body);
    state.calls.push((status.as_u16(), body));
    answer
}

fn cloudflare_answer(
    state: &mut CloudflareState,
    zone: &str,
    headers: &HeaderMap,
    body: &Value,
) -> (StatusCode, Response) {
    if !authorized(state, headers) {
        return (
            StatusCode::FORBIDDEN,
            cf_error(StatusCode::FORBIDDEN, 10000, "Authentication error"),
        );
    }
    if zone != state.zone_id {
        let message = format!("Could not route to /zones/{zone}/purge_cache, perhaps your object identifier is invalid?");
        return (
            StatusCode::BAD_REQUEST,
            cf_error(StatusCode::BAD_REQUEST, 7003, &message),
        );
    }
    if state.rate_limited_calls > 0 {
        state.rate_limited_calls -= 1;
        let mut response = cf_error(
            StatusCode::TOO_MANY_REQUESTS,
            971,
            "Please wait and consider throttling your request speed",
        );
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return (StatusCode::TOO_MANY_REQUESTS, response);
    }
    let kinds: Vec<&str> = ["files", "prefixes", "tags", "hosts", "purge_everything"]
        .into_iter()
        .filter(|kind| body.get(*kind).is_some())
        .collect();
    if kinds.len() != 1 {
        return (
            StatusCode::BAD_REQUEST,
            cf_error(
                StatusCode::BAD_REQUEST,
                1012,
                "Request must contain one of \"purge_everything\", \"files\", \"tags\", \"hosts\" or \"prefixes\"",
            ),
        );
    }
    let items: Vec<String> = body[kinds[0]]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.as_str().map(str::to_string))
        .collect();
    if items.len() > state.max_files {
        let message = format!("Only {} items may be purged per request", state.max_files);
        return (
            StatusCode::BAD_REQUEST,
            cf_error(StatusCode::BAD_REQUEST, 1018, &message),
        );
    }
    if let Some(refused) = items.iter().find(|item| state.refused.contains(*item)) {
        let message = format!("Invalid url {refused}");
        return (
            StatusCode::BAD_REQUEST,
            cf_error(StatusCode::BAD_REQUEST, 1016, &message),
        );
    }
    state.accepted.push(body.clone());
    let id = format!("purge-{}", state.accepted.len());
    (
        StatusCode::OK,
        Json(json!({"success": true, "errors": [], "messages": [], "result": {"id": id}}))
            .into_response(),
    )
}

async fn verify_token(
    State(state): State<Arc<Mutex<CloudflareState>>>,
    headers: HeaderMap,
) -> Response {
    let state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !authorized(&state, &headers) {
        return cf_error(StatusCode::UNAUTHORIZED, 1000, "Invalid API Token");
    }
    Json(json!({"success": true, "errors": [], "messages": [],
                "result": {"id": "token-1", "status": "active"}}))
    .into_response()
}

impl CloudflareStandIn {
    /// A zone `zone_id` that accepts `token`, at most `max_files` items per call.
    pub async fn start(
        token: &str,
        zone_id: &str,
        max_files: usize,
    ) -> std::io::Result<CloudflareStandIn> {
        let state = Arc::new(Mutex::new(CloudflareState {
            token: token.to_string(),
            zone_id: zone_id.to_string(),
            max_files,
            ..CloudflareState::default()
        }));
        let router = Router::new()
            .route("/client/v4/zones/{zone}/purge_cache", post(purge_cache))
            .route("/client/v4/user/tokens/verify", get(verify_token))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(CloudflareStandIn {
            addr,
            state,
            _server: server,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CloudflareState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `settings.endpoint` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    /// The next `calls` purge calls are answered `429`.
    pub fn rate_limit_next(&self, calls: usize) {
        self.lock().rate_limited_calls = calls;
    }

    /// Batches holding `url` are refused.
    pub fn refuse(&self, url: &str) {
        self.lock().refused.insert(url.to_string());
    }

    /// The accepted purge bodies, in order.
    pub fn accepted(&self) -> Vec<Value> {
        self.lock().accepted.clone()
    }

    /// Every purge call: the status answered and the body.
    pub fn calls(&self) -> Vec<(u16, Value)> {
        self.lock().calls.clone()
    }
}
