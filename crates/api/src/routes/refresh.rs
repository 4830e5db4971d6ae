//! `/cdn_api/refresh` (刷新): purge URLs and directories from every edge, then report per edge
//! what was removed. Same limits, rules and envelope as prefetch.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use precache_model::edge_protocol::PurgeMode;
use precache_model::{QuotaKind, TaskKind};
use serde_json::{json, Value};

use crate::envelope::schemas::Envelope;
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, BODY, TOKEN};
use crate::request_body::json_object;
use crate::routes::tasks::schemas::{
    Accepted, CancelledRefresh, IdempotencyKey, TaskFilters, TaskList,
};
use crate::routes::tasks::SUBMISSION_RETS;
use crate::routes::tasks::{
    accept, callback_url, cancel_task, check_count_and_domain, idempotency_key, list_tasks,
    parse_url_list, task_status, ListParams, Submission,
};
use crate::state::AppState;
use crate::task_view::schemas::RefreshTask;
use crate::token_auth::Caller;

/// `POST /cdn_api/refresh` with `urls` (exact objects, every cached variant) and/or `dirs`
/// (every cached object under a URL prefix ending in `/`), and `mode` `delete` (default) or
/// `invalidate` (kept but stale: the next request revalidates with the origin). With
/// `"dry_run": true` each edge only counts what would be removed.
#[utoipa::path(
    post,
    path = "/cdn_api/refresh",
    tag = "refresh",
    operation_id = "refresh_submit",
    summary = "Refresh URLs and directories on every joined edge",
    description = "Runs on every joined edge, up or not: one that is away owes the purge and \
                   applies it before it serves from its cache again. Quotas: \
                   `refresh_urls_per_day` counts `urls`, `refresh_dirs_per_day` counts `dirs`, \
                   and a warm phase also `prefetch_urls_per_day`; a request must fit all of them \
                   or it is `4001` and nothing is charged. With no edge up, `5003`.",
    params(IdempotencyKey),
    request_body = schemas::RefreshRequest,
    responses((status = 200, description = "Accepted.", body = Envelope<Accepted>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, BODY, SUBMISSION_RETS])))),
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::audit::AuditActor,
    headers: HeaderMap,
    body: Body,
) -> Result<Answer, ApiError> {
    let config = &state.inner.config;
    let body = json_object(body, config.max_body_bytes).await?;
    let idempotency = idempotency_key(&headers, TaskKind::Refresh, &body)?;
    let callback_url = callback_url(&state, &body)?;
    let urls = match body.get("urls") {
        Some(value) => parse_url_list(value, "urls")?,
        None => Vec::new(),
    };
    let dirs = match body.get("dirs") {
        Some(value) => parse_url_list(value, "dirs")?,
        None => Vec::new(),
    };
    if urls.is_empty() && dirs.is_empty() {
        return Err(ApiError::new(
            Ret::BadField,
            "give a non-empty \"urls\" and/or \"dirs\"",
        ));
    }
    if let Some(dir) = dirs.iter().find(|dir| !dir.path_and_query().ends_with('/')) {
        return Err(ApiError::new(
            Ret::BadUrl,
            format!(
                "dir {} must end with \"/\" (it is a path prefix; refresh a single object in \"urls\")",
                dir.as_str()
            ),
        ));
    }
    let mode = match body.get("mode") {
        None | Some(Value::Null) => PurgeMode::Delete,
        Some(value) => value
            .as_str()
            .and_then(PurgeMode::from_name)
            .ok_or_else(|| {
                ApiError::new(
                    Ret::BadField,
                    format!("mode must be \"delete\" or \"invalidate\", got {value}"),
                )
            })?,
    };
    let dry_run = match body.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(dry_run)) => *dry_run,
        Some(other) => {
            return Err(ApiError::new(
                Ret::BadField,
                format!("dry_run must be true or false, got {other}"),
            ))
        }
    };
    let warm = match body.get("prefetch") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(warm)) => *warm,
        Some(other) => {
            return Err(ApiError::new(
                Ret::BadField,
                format!("prefetch must be true or false, got {other}"),
            ))
        }
    };
    if warm && (urls.is_empty() || dry_run) {
        return Err(ApiError::new(
            Ret::BadField,
            "\"prefetch\": true warms the refreshed \"urls\" (not dirs) and cannot be a dry run",
        ));
    }
    let all: Vec<_> = urls.iter().chain(&dirs).cloned().collect();
    check_count_and_domain(&all, config.max_urls_per_request)?;
    let (url_count, dir_count) = (urls.len() as i64, dirs.len() as i64);
    let task_id = accept(
        &state,
        &caller,
        Submission {
            kind: TaskKind::Refresh,
            urls,
            dirs,
            mode: Some(mode),
            dry_run,
            warm,
            // A dry run removes nothing, so it costs no quota.
            charges: if dry_run {
                Vec::new()
            } else {
                vec![
                    (QuotaKind::RefreshUrls, url_count),
                    (QuotaKind::RefreshDirs, dir_count),
                    // The warm phase is a prefetch of the same URLs.
                    (QuotaKind::PrefetchUrls, if warm { url_count } else { 0 }),
                ]
            },
            idempotency,
            callback_url,
            audit,
        },
    )
    .await?;
    Ok(Answer::ok(json!({"reqId": task_id.to_string(), "success_rate": 100.0})).audit_recorded())
}

/// `GET /cdn_api/refresh/{reqId}`.
#[utoipa::path(
    get,
    path = "/cdn_api/refresh/{reqId}",
    tag = "refresh",
    operation_id = "refresh_status",
    summary = "A refresh task's status, per URL and per edge",
    params((
        "reqId" = String,
        Path,
        format = "uuid",
        description = "The task's id; a task that is not the caller's (or not a refresh) is \
                       `3001`."
    )),
    responses((status = 200, description = "The task.", body = Envelope<RefreshTask>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, &[Ret::NoSuchTask]])))),
)]
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(req_id): Path<String>,
) -> Result<Response, ApiError> {
    task_status(&state, &caller, &req_id, TaskKind::Refresh).await
}

/// `DELETE /cdn_api/refresh/{reqId}`: cancels what has not started.
#[utoipa::path(
    delete,
    path = "/cdn_api/refresh/{reqId}",
    tag = "refresh",
    operation_id = "refresh_cancel",
    summary = "Cancel a refresh task",
    description = "Waiting and held pairs end `cancelled`, running ones finish, and the task ends \
                   `cancelled` once they have. Cancelling a task that ended changes nothing.",
    params((
        "reqId" = String,
        Path,
        format = "uuid",
        description = "The task's id; a task that is not the caller's (or not a refresh) is \
                       `3001`."
    )),
    responses((
        status = 200,
        description = "The task's status and what this call cancelled.",
        body = Envelope<CancelledRefresh>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, &[Ret::NoSuchTask]])))),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(req_id): Path<String>,
) -> Result<Answer, ApiError> {
    cancel_task(&state, &caller, &req_id, TaskKind::Refresh).await
}

/// `GET /cdn_api/refresh?status=&limit=&before=`.
#[utoipa::path(
    get,
    path = "/cdn_api/refresh",
    tag = "refresh",
    operation_id = "refresh_list",
    summary = "List the caller's refresh tasks, newest first",
    description = "A bad filter is `2002`. The answer's `next_before` is the `before` of the \
                   next page.",
    params(TaskFilters),
    responses((status = 200, description = "A page of tasks.", body = Envelope<TaskList>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, &[Ret::BadField]])))),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Answer, ApiError> {
    list_tasks(&state, &caller, params, Some(TaskKind::Refresh)).await
}
