//! What `GET /cdn_api/audit` reads and answers.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handler builds them as JSON"
)]

use utoipa::{IntoParams, ToSchema};

/// The filters of the audit log; an empty value counts as absent.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditFilters {
    /// Only this actor's entries (an account's name, the name a log-in tried, an edge's name).
    actor: Option<String>,
    /// Only this action's entries (`domain.create`), or with a trailing `.` every action it
    /// begins (`domain.`).
    action: Option<String>,
    /// At or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Entries per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `id` that ended the previous page (its `next_before`).
    before: Option<i64>,
}

/// One entry: who did what, and when.
#[derive(ToSchema)]
pub(crate) struct AuditEntry {
    /// Later entries have larger ids.
    id: i64,
    /// When (RFC 3339, UTC).
    #[schema(format = DateTime)]
    at: String,
    /// The account's name, the name a log-in tried, or an edge's name.
    actor: String,
    /// The client's address (behind a `--trusted-proxy`, from `X-Forwarded-For`).
    #[schema(required = true)]
    client: Option<String>,
    /// The request's `X-Request-Id`, as in the server's log.
    #[schema(required = true)]
    request_id: Option<String>,
    /// `login`, `login_failed`, `logout`; `account.create|update|delete|webhook_secret`;
    /// `domain.create|delete|cache|origin_limits|backends|certificate|certificate_delete`;
    /// `backend.create|delete`; `edge.create|join_token|revoke|join`; `quota.set`;
    /// `task.prefetch|refresh|cancel`.
    action: String,
    /// What it was done to: an account, domain, backend or edge name, or a `reqId`.
    #[schema(required = true)]
    target: Option<String>,
    /// A few facts: a submission's `urls` (and `dirs`) counts, a failed log-in's `ret`.
    #[schema(required = true)]
    detail: Option<serde_json::Value>,
}

/// A page of the audit log, newest first.
#[derive(ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<AuditEntry>,
    /// The `before` of the next page; null on the last one.
    #[schema(required = true)]
    next_before: Option<i64>,
}
