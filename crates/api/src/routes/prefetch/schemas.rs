//! What `POST /cdn_api/prefetch` reads.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handler reads the body as JSON"
)]

use utoipa::ToSchema;

/// URLs to put into every edge's cache.
#[derive(ToSchema)]
#[schema(example = json!({"urls": ["http://game.example.com/patch/1.pak"]}))]
pub(crate) struct PrefetchRequest {
    /// Absolute URLs, all on one domain of the caller, at most `--max-urls-per-request` (10 by
    /// default) once de-duplicated after normalisation (host case, fragment). One invalid URL
    /// rejects the request (`2005`, naming it).
    #[schema(min_items = 1)]
    urls: Vec<String>,
    /// Where to POST the task's final status, signed (`http://` or `https://`, at most 2048
    /// characters, no credentials; an IP literal must be a public address).
    #[schema(max_length = 2048, format = "uri")]
    callback_url: Option<String>,
}
