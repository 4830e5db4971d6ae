//! `GET /cdn_api/health`: ready when the store answers.

pub(crate) mod schemas;

use axum::extract::State;
use serde_json::json;

use crate::envelope::schemas::Envelope;
use crate::envelope::{Answer, ApiError};
use crate::openapi::{ret_codes, STORE};
use crate::state::AppState;
use crate::store_errors::from_store;

/// 200 once the server accepts work; 503 (`5003`) when its store does not answer.
#[utoipa::path(
    get,
    path = "/cdn_api/health",
    tag = "health",
    operation_id = "health",
    summary = "Whether the server accepts work",
    description = "200 once the store answers; `5003` (HTTP 503) when it does not. No token needed.",
    responses((
        status = 200,
        description = "The server accepts work.",
        body = Envelope<schemas::Healthy>
    )),
    extensions(("x-ret-codes" = json!(ret_codes(&[STORE])))),
)]
pub(crate) async fn health(State(state): State<AppState>) -> Result<Answer, ApiError> {
    state.inner.store.has_accounts().await.map_err(from_store)?;
    Ok(Answer::ok(json!({"status": "ok"})))
}
