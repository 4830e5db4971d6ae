//! `/cdn_api/prefetch`: submit (the seed's wire format), status by `reqId`, cancel, and the task
//! list; what every task kind shares is in `tasks.rs`.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use precache_model::{ObjectUrl, QuotaKind, TaskKind};
use serde_json::{json, Value};

use crate::envelope::schemas::Envelope;
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, BODY, TOKEN};
use crate::request_body::json_object;
use crate::routes::tasks::schemas::{
    Accepted, CancelledPrefetch, IdempotencyKey, TaskFilters, TaskList,
};
use crate::routes::tasks::SUBMISSION_RETS;
use crate::routes::tasks::{
    accept, callback_url, cancel_task, check_count_and_domain, idempotency_key, list_tasks,
    parse_url_list, task_status, ListParams, Submission,
};
use crate::state::AppState;
use crate::task_view::schemas::PrefetchTask;
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
#[utoipa::path(
    post,
    path = "/cdn_api/prefetch",
    tag = "prefetch",
    operation_id = "prefetch_submit",
    summary = "Prefetch URLs into every edge that is up",
    description = "The seed's wire format: the answer is byte for byte the original service's. \
                   The task, its URLs and pairs and the quota charge are committed in one \
                   transaction before the answer; a rejected request changes nothing. Over the \
                   daily `prefetch_urls_per_day` it is `4001` with `Retry-After` (seconds to the \
                   quota day's end); with no edge up, `5003`.",
    params(IdempotencyKey),
    request_body = schemas::PrefetchRequest,
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
            audit,
        },
    )
    .await?;
    // Every URL of an accepted request is accepted (a bad one rejects the whole request), so the
    // seed's `success_rate` at submission is 100.
    Ok(Answer::ok(json!({"reqId": task_id.to_string(), "success_rate": 100.0})).audit_recorded())
}

/// `GET /cdn_api/prefetch/{reqId}`.
#[utoipa::path(
    get,
    path = "/cdn_api/prefetch/{reqId}",
    tag = "prefetch",
    operation_id = "prefetch_status",
    summary = "A prefetch task's status, per URL and per edge",
    params((
        "reqId" = String,
        Path,
        format = "uuid",
        description = "The task's id; a task that is not the caller's (or not a prefetch) is \
                       `3001`."
    )),
    responses((status = 200, description = "The task.", body = Envelope<PrefetchTask>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, &[Ret::NoSuchTask]])))),
)]
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(req_id): Path<String>,
) -> Result<Response, ApiError> {
    task_status(&state, &caller, &req_id, TaskKind::Prefetch).await
}

/// `DELETE /cdn_api/prefetch/{reqId}`.
#[utoipa::path(
    delete,
    path = "/cdn_api/prefetch/{reqId}",
    tag = "prefetch",
    operation_id = "prefetch_cancel",
    summary = "Cancel a prefetch task",
    description = "Pairs not started end `cancelled`, running ones finish, and the task ends \
                   `cancelled` once they have. Cancelling a task that ended changes nothing.",
    params((
        "reqId" = String,
        Path,
        format = "uuid",
        description = "The task's id; a task that is not the caller's (or not a prefetch) is \
                       `3001`."
    )),
    responses((
        status = 200,
        description = "The task's status and what this call cancelled.",
        body = Envelope<CancelledPrefetch>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, &[Ret::NoSuchTask]])))),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(req_id): Path<String>,
) -> Result<Answer, ApiError> {
    cancel_task(&state, &caller, &req_id, TaskKind::Prefetch).await
}

/// `GET /cdn_api/prefetch?status=&limit=&before=`: newest first; `before` is the last `reqId`
/// of the previous page, and `next_before` the one to ask with for the next page.
#[utoipa::path(
    get,
    path = "/cdn_api/prefetch",
    tag = "prefetch",
    operation_id = "prefetch_list",
    summary = "List the caller's prefetch tasks, newest first",
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
    list_tasks(&state, &caller, params, Some(TaskKind::Prefetch)).await
}
