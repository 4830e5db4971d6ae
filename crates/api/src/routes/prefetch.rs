//! `/cdn_api/prefetch`: submit (the seed's wire format), status by `reqId`, cancel, and the task
//! list; what every task kind shares is in `tasks.rs`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use precache_model::{ObjectUrl, QuotaKind, TaskKind};
use serde_json::{json, Value};

use crate::envelope::{Answer, ApiError, Ret};
use crate::request_body::json_object;
use crate::routes::tasks::{
    accept, callback_url, cancel_task, check_count_and_domain, idempotency_key, list_tasks,
    parse_url_list, task_status, ListParams, Submission,
};
use crate::state::AppState;
use crate::token_auth::Caller;

/// Validates the `urls` of a submission: a non-empty list of strings (`2002`), at most the
/// configured number of distinct URLs (`2003`), each valid (`2005`), all on one domain (`2004`).
/// Duplicates (after normalisation) count once.
pub(crate) fn parse_urls(
    value: Option<&Value>,
    max_urls: usize,
) -> Result<Vec<ObjectUrl>, ApiError> {
    let urls = match value {
        Some(value) => parse_url_list(value, "urls")?,
        None => return Err(ApiError::new(Ret::BadField, "field \"urls\" is required")),
    };
    if urls.is_empty() {
        return Err(ApiError::new(
            Ret::BadField,
            "field \"urls\" must not be empty",
        ));
    }
    check_count_and_domain(&urls, max_urls)?;
    Ok(urls)
}

/// `POST /cdn_api/prefetch`.
pub(crate) async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Answer, ApiError> {
    let config = &state.inner.config;
    let body = json_object(body, config.max_body_bytes).await?;
    let idempotency = idempotency_key(&headers, TaskKind::Prefetch, &body)?;
    let callback_url = callback_url(&state, &body)?;
    let urls = parse_urls(body.get("urls"), config.max_urls_per_request)?;
    let count = urls.len() as i64;
    let task_id = accept(
        &state,
        &caller,
        Submission {
            kind: TaskKind::Prefetch,
            urls,
            dirs: Vec::new(),
            mode: None,
            dry_run: false,
            warm: false,
            charges: vec![(QuotaKind::PrefetchUrls, count)],
            idempotency,
            callback_url,
        },
    )
    .await?;
    // Every URL of an accepted request is accepted (a bad one rejects the whole request), so the
    // seed's `success_rate` at submission is 100.
    Ok(Answer::ok(
        json!({"reqId": task_id.to_string(), "success_rate": 100.0}),
    ))
}

/// `GET /cdn_api/prefetch/{reqId}`.
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(req_id): Path<String>,
) -> Result<Response, ApiError> {
    task_status(&state, &caller, &req_id, TaskKind::Prefetch).await
}

/// `DELETE /cdn_api/prefetch/{reqId}`.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(req_id): Path<String>,
) -> Result<Answer, ApiError> {
    cancel_task(&state, &caller, &req_id, TaskKind::Prefetch).await
}

/// `GET /cdn_api/prefetch?status=&limit=&before=`: newest first; `before` is the last `reqId`
/// of the previous page, and `next_before` the one to ask with for the next page.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Answer, ApiError> {
    list_tasks(&state, &caller, params, Some(TaskKind::Prefetch)).await
}
