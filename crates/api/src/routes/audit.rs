//! `GET /cdn_api/audit`: the audit log (admin), newest first. Entries are written by the
//! `crate::audit` layer.

pub(crate) mod schemas;

use axum::extract::{Query, State};
use precache_model::time::rfc3339_millis;
use precache_store::AuditQuery;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::envelope::schemas::Envelope;
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, ADMIN, TOKEN};
use crate::routes::tasks::filter_time;
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::Caller;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// The query, as text: a bad value is `2002` with a message, not axum's rejection.
#[derive(Debug, Deserialize)]
pub(crate) struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

fn bounded(
    value: Option<&str>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, ApiError> {
    match value.filter(|text| !text.is_empty()) {
        Some(text) => match text.parse::<i64>() {
            Ok(number) if range.contains(&number) => Ok(Some(number)),
            _ => Err(ApiError::new(
                Ret::BadField,
                format!(
                    "{name} must be an integer from {} to {}, got {text:?}",
                    range.start(),
                    range.end()
                ),
            )),
        },
        None => Ok(None),
    }
}

/// `GET /cdn_api/audit?actor=&action=&since=&until=&limit=&before=`.
#[utoipa::path(
    get,
    path = "/cdn_api/audit",
    tag = "audit",
    operation_id = "audit_list",
    summary = "The audit log, newest first (admin)",
    description = "Who did what and when: log-ins (failed ones too), changes to accounts, \
                   domains, backends, edges and quotas, every task submitted or cancelled. \
                   Never a secret. Kept for `--audit-retention`. A bad filter is `2002`; the \
                   answer's `next_before` is the `before` of the next page.",
    params(schemas::AuditFilters),
    responses((status = 200, description = "A page of entries.", body = Envelope<schemas::AuditPage>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::BadField]])))),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<AuditParams>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let text = |value: Option<String>| value.filter(|text| !text.is_empty());
    let limit = bounded(params.limit.as_deref(), "limit", 1..=MAX_PAGE)?.unwrap_or(DEFAULT_PAGE);
    let query = AuditQuery {
        since: filter_time(params.since.as_deref(), "since")?,
        until: filter_time(params.until.as_deref(), "until")?,
        before: bounded(params.before.as_deref(), "before", 1..=i64::MAX)?,
        actor: text(params.actor),
        action: text(params.action),
        limit,
    };
    let entries = state
        .inner
        .store
        .audit_entries(&query)
        .await
        .map_err(from_store)?;
    let next_before = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|entry| entry.id))
        .flatten();
    let listed: Vec<Value> = entries
        .into_iter()
        .map(|entry| {
            let entry_id = entry.id;
            let entry = entry.entry;
            json!({
                "id": entry_id,
                "at": rfc3339_millis(entry.at),
                "actor": entry.actor,
                "client": entry.client,
                "request_id": entry.request_id,
                "action": entry.action,
                "target": entry.target,
                "detail": entry
                    .detail
                    .and_then(|detail| serde_json::from_str::<Value>(&detail).ok()),
            })
        })
        .collect();
    Ok(Answer::ok(
        json!({"entries": listed, "next_before": next_before}),
    ))
}
