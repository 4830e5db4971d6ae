//! `GET /cdn_api/health`: ready when the store answers.

use axum::extract::State;
use serde_json::json;

use crate::envelope::{Answer, ApiError};
use crate::state::AppState;
use crate::store_errors::from_store;

/// 200 once the server accepts work; 503 (`5003`) when its store does not answer.
pub(crate) async fn health(State(state): State<AppState>) -> Result<Answer, ApiError> {
    state.inner.store.has_accounts().await.map_err(from_store)?;
    Ok(Answer::ok(json!({"status": "ok"})))
}
