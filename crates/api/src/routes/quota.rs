//! `/cdn_api/quota`: an account's daily limits and what is left today.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::{Path, State};
use precache_model::{AccountId, QuotaKind};
use serde_json::{json, Map, Value};

use crate::envelope::schemas::Envelope;
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, ADMIN, BODY, TOKEN};
use crate::quota_clock::quota_day;
use crate::request_body::{json_object, kind_of};
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::Caller;

async fn quota_answer(
    state: &AppState,
    account_id: AccountId,
    user: &str,
) -> Result<Answer, ApiError> {
    let quota = quota_fields(state, account_id, user).await?;
    Ok(Answer::ok(json!({"quota": quota})))
}

/// An account's quotas as `GET /cdn_api/quota` answers them: today's day and reset, and per kind
/// its limit, use and what remains.
pub(crate) async fn quota_fields(
    state: &AppState,
    account_id: AccountId,
    user: &str,
) -> Result<Map<String, Value>, ApiError> {
    let day = quota_day(&state.inner.config.quota_time_zone, jiff::Timestamp::now());
    let statuses = state
        .inner
        .store
        .quota_status(account_id, &day.day, QuotaKind::default_daily_limit)
        .await
        .map_err(from_store)?;
    let mut quota = Map::new();
    quota.insert("user".into(), json!(user));
    quota.insert("day".into(), json!(day.day));
    quota.insert(
        "time_zone".into(),
        json!(state.inner.config.quota_time_zone_name),
    );
    quota.insert("resets_at".into(), json!(day.resets_at));
    for status in statuses {
        quota.insert(
            status.kind.api_name().into(),
            json!({"limit": status.limit, "used": status.used, "remaining": (status.limit - status.used).max(0)}),
        );
    }
    let own_rate = state
        .inner
        .store
        .rate_limit(account_id)
        .await
        .map_err(from_store)?;
    let per_second = own_rate.unwrap_or(i64::from(state.inner.config.rate_limit_per_account));
    // 0 is no limit.
    quota.insert(RATE_FIELD.into(), json!({"limit": per_second}));
    Ok(quota)
}

/// The request rate limit's field in quota answers and updates.
const RATE_FIELD: &str = "requests_per_second";

/// `GET /cdn_api/quota`: the caller's own.
#[utoipa::path(
    get,
    path = "/cdn_api/quota",
    tag = "quota",
    operation_id = "quota_mine",
    summary = "The caller's quotas and today's use",
    responses((
        status = 200,
        description = "The caller's quotas.",
        body = Envelope<schemas::QuotaAnswer>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN])))),
)]
pub(crate) async fn mine(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Answer, ApiError> {
    quota_answer(&state, caller.account_id, &caller.name).await
}

async fn account_id_of(state: &AppState, user: &str) -> Result<AccountId, ApiError> {
    match state
        .inner
        .store
        .account_by_name(user)
        .await
        .map_err(from_store)?
    {
        Some(account) => Ok(account.id),
        None => Err(ApiError::new(Ret::NotFound, format!("no user {user:?}"))),
    }
}

/// `GET /cdn_api/quota/{user}` (admin).
#[utoipa::path(
    get,
    path = "/cdn_api/quota/{user}",
    tag = "quota",
    operation_id = "quota_of_user",
    summary = "An account's quotas and today's use (admin)",
    params(("user" = String, Path, description = "The account's name.")),
    responses((
        status = 200,
        description = "The account's quotas.",
        body = Envelope<schemas::QuotaAnswer>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
)]
pub(crate) async fn of_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let account_id = account_id_of(&state, &user).await?;
    quota_answer(&state, account_id, &user).await
}

/// `PUT /cdn_api/quota/{user}` (admin): `{"prefetch_urls_per_day": 50000, ...}`, any subset of kinds.
#[utoipa::path(
    put,
    path = "/cdn_api/quota/{user}",
    tag = "quota",
    operation_id = "quota_set",
    summary = "Set an account's limits (admin)",
    params(("user" = String, Path, description = "The account's name.")),
    request_body = schemas::QuotaChange,
    responses((
        status = 200,
        description = "The account's quotas as changed.",
        body = Envelope<schemas::QuotaAnswer>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, BODY, &[Ret::NotFound]])))),
)]
pub(crate) async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    let mut limits = Vec::new();
    let mut rate_limit = None;
    for (field, value) in &body {
        let limit = match value {
            Value::Number(number) => number.as_i64().filter(|limit| *limit >= 0),
            _ => None,
        };
        let Some(limit) = limit else {
            return Err(ApiError::new(
                Ret::BadField,
                format!(
                    "{field} must be a non-negative integer, got {}",
                    kind_of(value)
                ),
            ));
        };
        if field == RATE_FIELD {
            rate_limit = Some(limit);
            continue;
        }
        let kind = QuotaKind::from_api_name(field)
            .map_err(|reason| ApiError::new(Ret::BadField, reason))?;
        limits.push((kind, limit));
    }
    if limits.is_empty() && rate_limit.is_none() {
        return Err(ApiError::new(
            Ret::BadField,
            "give at least one of prefetch_urls_per_day, refresh_urls_per_day, refresh_dirs_per_day, requests_per_second",
        ));
    }
    let account_id = account_id_of(&state, &user).await?;
    if let Some(per_second) = rate_limit {
        state
            .inner
            .store
            .set_rate_limit(account_id, per_second)
            .await
            .map_err(from_store)?;
    }
    for (kind, limit) in limits {
        state
            .inner
            .store
            .set_quota_limit(account_id, kind, limit)
            .await
            .map_err(from_store)?;
    }
    quota_answer(&state, account_id, &user).await
}
