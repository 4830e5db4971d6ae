//! What every task kind shares on the wire: the list's filters and answer, the answer to a
//! submission, a cancel's answer, and a completion callback's delivery.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handlers read and build them as JSON"
)]

use utoipa::{IntoParams, ToSchema};

use crate::task_view::schemas::{PrefetchTask, RefreshTask, TaskKind, TaskStatus, TaskSummary};

/// The filters of a task list; an empty value counts as absent.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TaskFilters {
    /// Only tasks in this state.
    status: Option<TaskStatus>,
    /// Only tasks on this domain (any case).
    domain: Option<String>,
    /// Accepted at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Accepted before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Tasks per page, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `reqId` that ended the previous page (its `next_before`).
    #[param(format = "uuid")]
    before: Option<String>,
}

/// The kind filter of `GET /cdn_api/tasks`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct KindFilter {
    /// Only tasks of this kind.
    r#type: Option<TaskKind>,
}

/// The header that makes a submission safe to retry.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct IdempotencyKey {
    /// 1–255 characters: a retry with the same key and the same request (same kind, same JSON
    /// body whatever its spacing or key order) within 24 h answers the first task's `reqId` and
    /// creates and charges nothing; the same key with another request is `2007`. Keys belong to
    /// the account.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255
    )]
    key: Option<String>,
}

/// A page of tasks, newest first.
#[derive(ToSchema)]
pub(crate) struct TaskList {
    /// The tasks.
    tasks: Vec<TaskSummary>,
    /// `before` for the next page; null on the last page.
    #[schema(required = true, format = "uuid")]
    next_before: Option<String>,
}

/// An accepted submission. Every URL of an accepted request is accepted (one bad URL rejects
/// the whole request), so `success_rate` is always 100.
#[derive(ToSchema)]
pub(crate) struct Accepted {
    /// The task's id, for its status.
    #[serde(rename = "reqId")]
    #[schema(format = "uuid", example = "fa97b5d1-929f-11e5-b504-e03f4978b2ff")]
    req_id: String,
    /// Always 100.0.
    #[schema(example = 100.0)]
    success_rate: f64,
}

/// A prefetch task's status after a cancel, with how many pairs this call cancelled.
#[derive(ToSchema)]
pub(crate) struct CancelledPrefetch {
    #[serde(flatten)]
    task: PrefetchTask,
    /// Pairs this call cancelled.
    cancelled_pairs: i64,
}

/// A refresh task's status after a cancel, with how many pairs this call cancelled.
#[derive(ToSchema)]
pub(crate) struct CancelledRefresh {
    #[serde(flatten)]
    task: RefreshTask,
    /// Pairs this call cancelled.
    cancelled_pairs: i64,
}

/// Where a completion callback's delivery stands.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CallbackState {
    /// Not attempted yet.
    Pending,
    /// Attempted, to be attempted again.
    Retrying,
    /// A receiver answered 2xx.
    Delivered,
    /// Attempts stopped after an hour.
    GaveUp,
}

/// The delivery of a task's final status to its `callback_url`.
#[derive(ToSchema)]
pub(crate) struct Callback {
    /// Where it is POSTed.
    url: String,
    /// Where the delivery stands.
    state: CallbackState,
    /// When a receiver answered 2xx.
    #[schema(required = true, format = DateTime)]
    delivered_at: Option<String>,
    /// When the next attempt is due, after a failed one.
    #[schema(required = true, format = DateTime)]
    next_attempt_at: Option<String>,
    /// Every attempt, in order.
    attempts: Vec<CallbackAttempt>,
}

/// One delivery attempt.
#[derive(ToSchema)]
pub(crate) struct CallbackAttempt {
    /// 1 for the first.
    n: i64,
    /// When it was made.
    #[schema(format = DateTime)]
    at: String,
    /// The receiver's HTTP status, if it answered.
    #[schema(required = true)]
    http_status: Option<i64>,
    /// Why it failed.
    #[schema(required = true)]
    error: Option<String>,
}
