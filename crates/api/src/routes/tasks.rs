//! What every kind of task shares: validating targets, accepting a submission (idempotency,
//! quotas, one transaction, then the engine), the status answer, cancelling, and the task lists
//! (`GET /cdn_api/tasks`).

pub(crate) mod schemas;

use std::collections::HashSet;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use precache_model::edge_protocol::{PurgeMode, DRY_RUN_MODE};
use precache_model::time::{now_millis, rfc3339_millis};
use precache_model::{DomainName, ObjectUrl, QuotaKind, TaskId, TaskKind, TaskStatus};
use precache_store::{IdempotencyKey, NewTask, PairKey, QuotaCharge, SubmittedTask, TaskQuery};
use precache_tasks::PairJob;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::audit::AuditActor;
use crate::envelope::schemas::Envelope;
use crate::envelope::{json_response, Answer, ApiError, Ret};
use crate::openapi::{ret_codes, TOKEN};
use crate::quota_clock::quota_day;
use crate::request_body::kind_of;
use crate::routes::domains::not_yours;
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::task_view::{detail_json, summary_fields};
use crate::token_auth::Caller;

/// Tasks per list page when the client does not say.
const DEFAULT_PAGE: i64 = 50;
/// Most tasks per list page.
const MAX_PAGE: i64 = 1000;

/// A list of URL strings in field `field`, validated (`2002`, `2005`) and de-duplicated
/// (different spellings of one URL, like the case of the host or a fragment, are one object).
pub(crate) fn parse_url_list(value: &Value, field: &str) -> Result<Vec<ObjectUrl>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::new(
            Ret::BadField,
            format!(
                "field \"{field}\" must be a list of strings, got {}",
                kind_of(value)
            ),
        ));
    };
    let mut texts: Vec<&str> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item {
            Value::String(text) => texts.push(text),
            other => {
                return Err(ApiError::new(
                    Ret::BadField,
                    format!("{field}[{index}] must be a string, got {}", kind_of(other)),
                ))
            }
        }
    }
    let mut seen = HashSet::with_capacity(texts.len());
    let mut urls: Vec<ObjectUrl> = Vec::with_capacity(texts.len());
    for text in texts {
        if !seen.insert(text) {
            continue;
        }
        let url = ObjectUrl::parse(text)
            .map_err(|error| ApiError::new(Ret::BadUrl, error.to_string()))?;
        if !urls.iter().any(|known| known.as_str() == url.as_str()) {
            urls.push(url);
        }
    }
    Ok(urls)
}

/// At most `max` targets (`2003`), all on one domain (`2004`).
pub(crate) fn check_count_and_domain(targets: &[ObjectUrl], max: usize) -> Result<(), ApiError> {
    if targets.len() > max {
        return Err(ApiError::new(
            Ret::TooManyUrls,
            format!(
                "{} distinct URLs in one request; at most {max} are allowed",
                targets.len()
            ),
        ));
    }
    if let Some(other) = targets.iter().find(|url| url.host() != targets[0].host()) {
        return Err(ApiError::new(
            Ret::MixedDomains,
            format!(
                "URLs on more than one domain in one request: {} and {}",
                targets[0].host(),
                other.host()
            ),
        ));
    }
    Ok(())
}

/// A validated task submission.
pub(crate) struct Submission {
    pub(crate) kind: TaskKind,
    /// Distinct URLs, all on one domain (the same as the directories').
    pub(crate) urls: Vec<ObjectUrl>,
    /// Refresh: distinct directories.
    pub(crate) dirs: Vec<ObjectUrl>,
    /// Refresh: the purge mode.
    pub(crate) mode: Option<PurgeMode>,
    /// Refresh: only count what would be purged.
    pub(crate) dry_run: bool,
    /// Refresh: prefetch the URLs once the purge is confirmed on every edge.
    pub(crate) warm: bool,
    /// The quotas to charge, each with its amount.
    pub(crate) charges: Vec<(QuotaKind, i64)>,
    /// The client's `Idempotency-Key`, with the hash of the request.
    pub(crate) idempotency: Option<IdempotencyKey>,
    /// Where to POST the final status.
    pub(crate) callback_url: Option<String>,
    /// Who submits it, for the audit log's entry (written with the task).
    pub(crate) audit: AuditActor,
}

/// The optional `callback_url` of a submission (`2002` when it is not an acceptable URL).
pub(crate) fn callback_url(
    state: &AppState,
    body: &serde_json::Map<String, Value>,
) -> Result<Option<String>, ApiError> {
    let Some(text) = crate::request_body::optional_str(body, "callback_url")? else {
        return Ok(None);
    };
    if text.len() > 2048 {
        return Err(ApiError::new(
            Ret::BadField,
            "callback_url is longer than 2048 characters",
        ));
    }
    state
        .inner
        .config
        .callbacks
        .check_submitted(text)
        .map_err(|reason| ApiError::new(Ret::BadField, reason))?;
    Ok(Some(text.to_string()))
}

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request's `Idempotency-Key`, if any, with a hash of its kind and body: a retry with the
/// same key and the same request gets the first task; the same key with another request is
/// `2007`. The body is hashed as parsed, so whitespace and key order do not matter.
pub(crate) fn idempotency_key(
    headers: &HeaderMap,
    kind: TaskKind,
    body: &serde_json::Map<String, Value>,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::new(
                Ret::BadField,
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            )
        })?;
    let canonical = format!("{}:{}", kind.as_str(), Value::Object(body.clone()));
    Ok(Some(IdempotencyKey {
        key: key.to_string(),
        body_hash: hex::encode(Sha256::digest(canonical.as_bytes())),
    }))
}

/// What a submission can answer besides reading its body and token: the checks of its targets
/// (`parse_url_list`, `check_count_and_domain`) and of [`accept`] (a domain not the caller's, an
/// `Idempotency-Key` reused for another request; quotas and no edge up are in the token's set).
pub(crate) const SUBMISSION_RETS: &[Ret] = &[
    Ret::TooManyUrls,
    Ret::MixedDomains,
    Ret::BadUrl,
    Ret::DomainNotYours,
    Ret::Conflict,
];

/// Commits a task (quota, domain ownership and rows in one transaction) and hands its pairs to
/// the engine; answers the `reqId`.
pub(crate) async fn accept(
    state: &AppState,
    caller: &Caller,
    submission: Submission,
) -> Result<TaskId, ApiError> {
    let config = &state.inner.config;
    let host = submission
        .urls
        .first()
        .or(submission.dirs.first())
        .map(|url| url.host().to_string())
        .unwrap_or_default();
    let domain = DomainName::parse(&host).map_err(|_| not_yours(&host))?;
    // The store checks again, in the task's transaction, that the domain is the caller's.
    let registered = state
        .inner
        .store
        .domain(domain.as_str())
        .await
        .map_err(from_store)?
        .filter(|registered| registered.owner_id == caller.account_id)
        .ok_or_else(|| not_yours(&host))?;
    let edges = state
        .inner
        .edges
        .task_targets(submission.kind, &registered.backends)
        .await
        .map_err(from_store)?;
    if edges.is_empty() {
        return Err(ApiError::new(
            Ret::Unavailable,
            "no edge is up to carry out the task (and the domain has no other backend); nothing was accepted",
        ));
    }
    let day = quota_day(&config.quota_time_zone, jiff::Timestamp::now());
    let charges = submission
        .charges
        .iter()
        .filter(|(_, amount)| *amount > 0)
        .map(|(kind, amount)| QuotaCharge {
            kind: *kind,
            day: day.day.clone(),
            amount: *amount,
            default_limit: kind.default_daily_limit(),
        })
        .collect();
    let kind = submission.kind;
    let mode = submission.mode.unwrap_or_default();
    let dry_run = submission.dry_run;
    let releases = submission.warm;
    let id = TaskId::new_random();
    let counts = match kind {
        TaskKind::Prefetch => json!({"urls": submission.urls.len()}),
        TaskKind::Refresh => json!({"urls": submission.urls.len(), "dirs": submission.dirs.len()}),
    };
    let audit = submission.audit.entry(
        &format!("task.{}", kind.as_str()),
        Some(id.to_string()),
        Some(&counts),
    );
    let task = NewTask {
        id,
        account_id: caller.account_id,
        kind,
        domain,
        urls: submission
            .urls
            .iter()
            .map(|url| url.as_str().to_string())
            .collect(),
        dirs: submission
            .dirs
            .iter()
            .map(|url| url.as_str().to_string())
            .collect(),
        mode: match (submission.dry_run, submission.mode) {
            (true, _) => Some(DRY_RUN_MODE.to_string()),
            (false, mode) => mode.map(|mode| mode.as_str().to_string()),
        },
        warm: submission.warm,
        edges,
        created_at: now_millis(),
        charges,
        idempotency: submission.idempotency,
        callback_url: submission.callback_url,
        audit: Some(audit),
    };
    // Committing and handing the pairs to the engine run in a task of their own: if the client
    // hangs up mid-request, the handler's future is dropped, but a task that may already be
    // committed must still reach the engine, or it would wait until the next restart.
    let engine = state.inner.engine.clone();
    let store = state.inner.store.clone();
    let admission = engine.admitting();
    let submitted = tokio::spawn(async move {
        let _admission = admission;
        // The store checks that the domain is the caller's and charges the quota in the same
        // transaction that creates the task.
        let SubmittedTask {
            task,
            origin,
            replayed,
        } = store.submit_task(task).await?;
        if replayed {
            // The first submission's pairs are queued (or done) already.
            return Ok(task.id);
        }
        let jobs = task
            .targets()
            .flat_map(|(url_idx, url, is_dir)| {
                task.edges
                    .iter()
                    .map(move |edge_id| (url_idx, url, is_dir, *edge_id))
            })
            .map(|(url_idx, url, is_dir, edge_id)| PairJob {
                key: PairKey {
                    task_id: task.id,
                    url_idx,
                    edge_id,
                },
                kind,
                url: url.to_string(),
                is_dir,
                mode,
                dry_run,
                releases,
                domain: task.domain.to_string(),
                origin: Some(origin.clone()),
                created_at: task.created_at,
                origin_limits: Default::default(),
                gathered: None,
                waited_for_edge: false,
            })
            .collect();
        engine.enqueue(jobs);
        Ok::<_, precache_store::Error>(task.id)
    });
    submitted
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| {
            let mut api_error = from_store(error);
            if api_error.ret == Ret::Limited {
                api_error.retry_after = Some(day.seconds_left);
            }
            api_error
        })
}

pub(crate) fn parse_req_id(text: &str) -> Result<TaskId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            Ret::NoSuchTask,
            format!("no task {text:?} (a reqId is a UUID)"),
        )
    })
}

/// The status answer of the caller's task `req_id` of this kind.
pub(crate) async fn task_status(
    state: &AppState,
    caller: &Caller,
    req_id: &str,
    kind: TaskKind,
) -> Result<Response, ApiError> {
    let id = parse_req_id(req_id)?;
    if let Some(body) = state.inner.final_tasks.get(caller.account_id, id) {
        return Ok(json_response(StatusCode::OK, body));
    }
    let detail = state
        .inner
        .store
        .task_detail(caller.account_id, id)
        .await
        .map_err(from_store)?;
    match detail {
        Some(detail) if detail.summary.kind == kind => {
            let callback = state.inner.store.callback(id).await.map_err(from_store)?;
            let mut view = detail_json(&detail);
            let settled = callback
                .as_ref()
                .is_none_or(|callback| callback.next_attempt_at.is_none());
            if let Some(callback) = &callback {
                view["callback"] = callback_json(callback);
            }
            let body = Answer::ok(view).body();
            // A final task's answer no longer changes, once its callback is settled too.
            if let (true, true, Some(finished_at)) = (
                detail.summary.status.is_final(),
                settled,
                detail.summary.finished_at,
            ) {
                state
                    .inner
                    .final_tasks
                    .put(caller.account_id, id, finished_at, body.clone());
            }
            Ok(json_response(StatusCode::OK, body))
        }
        _ => Err(ApiError::new(
            Ret::NoSuchTask,
            format!("no {} task {req_id} for your account", kind.as_str()),
        )),
    }
}

/// A callback and its attempts on the wire.
fn callback_json(callback: &precache_store::Callback) -> Value {
    let state = match (callback.delivered_at, callback.gave_up_at) {
        (Some(_), _) => "delivered",
        (None, Some(_)) => "gave_up",
        (None, None) if callback.attempts.is_empty() => "pending",
        (None, None) => "retrying",
    };
    json!({
        "url": callback.url,
        "state": state,
        "delivered_at": callback.delivered_at.map(rfc3339_millis),
        "next_attempt_at": callback.next_attempt_at.filter(|_| !callback.attempts.is_empty()).map(rfc3339_millis),
        "attempts": callback.attempts.iter().map(|attempt| json!({
            "n": attempt.n,
            "at": rfc3339_millis(attempt.at),
            "http_status": attempt.http_status,
            "error": attempt.error,
        })).collect::<Vec<_>>(),
    })
}

/// Cancels the caller's task `req_id` of this kind: pairs not started are cancelled, running ones
/// finish; answers the task's status with `cancelled_pairs`, how many this call cancelled. A
/// task that already ended is answered as it is.
pub(crate) async fn cancel_task(
    state: &AppState,
    caller: &Caller,
    req_id: &str,
    kind: TaskKind,
) -> Result<Answer, ApiError> {
    let id = parse_req_id(req_id)?;
    let no_such = || {
        ApiError::new(
            Ret::NoSuchTask,
            format!("no {} task {req_id} for your account", kind.as_str()),
        )
    };
    let store = &state.inner.store;
    // The store decides (and checks the task is the caller's); then the engine drops what it
    // has queued. A pair it starts in between is harmless: a cancelled pair's outcome is ignored.
    let cancelled = store
        .cancel_task(caller.account_id, id, kind, now_millis())
        .await
        .map_err(from_store)?
        .ok_or_else(no_such)?;
    state.inner.engine.cancel(id);
    let detail = store
        .task_detail(caller.account_id, id)
        .await
        .map_err(from_store)?
        .ok_or_else(no_such)?;
    let mut answer = detail_json(&detail);
    answer["cancelled_pairs"] = json!(cancelled);
    Ok(Answer::ok(answer))
}

/// Query of the task list.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    domain: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// An RFC 3339 time of a list filter, in ms.
pub(crate) fn filter_time(value: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
    match value.filter(|text| !text.is_empty()) {
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map(|at| Some(at.as_millisecond()))
            .map_err(|_| {
                ApiError::new(
                    Ret::BadField,
                    format!(
                        "{name} must be an RFC 3339 time like 2026-11-28T08:00:00Z, got {text:?}"
                    ),
                )
            }),
        None => Ok(None),
    }
}

/// `GET /cdn_api/tasks?type=&status=&domain=&since=&until=&limit=&before=`: the caller's tasks of
/// every kind, newest first.
#[utoipa::path(
    get,
    path = "/cdn_api/tasks",
    tag = "tasks",
    operation_id = "task_list",
    summary = "List the caller's tasks of both kinds, newest first",
    description = "A bad filter is `2002`. The answer's `next_before` is the `before` of the \
                   next page.",
    params(schemas::KindFilter, schemas::TaskFilters),
    responses((status = 200, description = "A page of tasks.", body = Envelope<schemas::TaskList>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, &[Ret::BadField]])))),
)]
pub(crate) async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Answer, ApiError> {
    let kind = match params.kind.as_deref().filter(|text| !text.is_empty()) {
        Some(text) => Some(
            text.parse::<TaskKind>()
                .map_err(|reason| ApiError::new(Ret::BadField, reason))?,
        ),
        None => None,
    };
    list_tasks(&state, &caller, params, kind).await
}

/// A page of the caller's tasks (of one kind, or all), filtered by the query's `status`,
/// `domain` and `since`/`until` (acceptance time, RFC 3339).
pub(crate) async fn list_tasks(
    state: &AppState,
    caller: &Caller,
    params: ListParams,
    kind: Option<TaskKind>,
) -> Result<Answer, ApiError> {
    let since = filter_time(params.since.as_deref(), "since")?;
    let until = filter_time(params.until.as_deref(), "until")?;
    let domain = params
        .domain
        .as_deref()
        .filter(|text| !text.is_empty())
        .map(str::to_ascii_lowercase);
    let status = match params.status.as_deref().filter(|text| !text.is_empty()) {
        Some(text) => Some(
            text.parse::<TaskStatus>()
                .map_err(|reason| ApiError::new(Ret::BadField, reason))?,
        ),
        None => None,
    };
    let limit = match params.limit.as_deref().filter(|text| !text.is_empty()) {
        Some(text) => match text.parse::<i64>() {
            Ok(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
            _ => {
                return Err(ApiError::new(
                    Ret::BadField,
                    format!("limit must be an integer from 1 to {MAX_PAGE}"),
                ))
            }
        },
        None => DEFAULT_PAGE,
    };
    let before = match params.before.as_deref().filter(|text| !text.is_empty()) {
        Some(text) => Some(text.parse::<TaskId>().map_err(|_| {
            ApiError::new(
                Ret::BadField,
                format!("before must be a reqId, got {text:?}"),
            )
        })?),
        None => None,
    };
    let query = TaskQuery {
        account_id: caller.account_id,
        kind,
        status,
        domain,
        since,
        until,
        before,
        limit,
    };
    let tasks = state
        .inner
        .store
        .list_tasks(&query)
        .await
        .map_err(from_store)?;
    let next_before = (tasks.len() as i64 == limit)
        .then(|| tasks.last().map(|task| task.id.to_string()))
        .flatten();
    let listed: Vec<Value> = tasks
        .iter()
        .map(|task| Value::Object(summary_fields(task)))
        .collect();
    Ok(Answer::ok(
        json!({"tasks": listed, "next_before": next_before}),
    ))
}
