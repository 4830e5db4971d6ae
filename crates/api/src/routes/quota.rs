//! `/cdn_api/quota`: an account's daily limits and what is left today.

use axum::body::Body;
use axum::extract::{Path, State};
use precache_model::{AccountId, QuotaKind};
use serde_json::{json, Map, Value};

use crate::envelope::{Answer, ApiError, Ret};
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
    Ok(Answer::ok(json!({"quota": quota})))
}

/// `GET /cdn_api/quota`: the caller's own.
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
pub(crate) async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    let mut limits = Vec::new();
    for (field, value) in &body {
        let kind = QuotaKind::from_api_name(field)
            .map_err(|reason| ApiError::new(Ret::BadField, reason))?;
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
        limits.push((kind, limit));
    }
    if limits.is_empty() {
        return Err(ApiError::new(
            Ret::BadField,
            "give at least one of prefetch_urls_per_day, refresh_urls_per_day, refresh_dirs_per_day",
        ));
    }
    let account_id = account_id_of(&state, &user).await?;
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
