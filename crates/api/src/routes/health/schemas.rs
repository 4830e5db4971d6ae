//! What `GET /cdn_api/health` answers.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handler builds the answer as JSON"
)]

use utoipa::ToSchema;

/// The server accepts work.
#[derive(ToSchema)]
pub(crate) struct Healthy {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: String,
}
