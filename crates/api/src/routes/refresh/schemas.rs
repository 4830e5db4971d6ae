//! What `POST /cdn_api/refresh` reads.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handler reads the body as JSON"
)]

use utoipa::ToSchema;

use crate::routes::edge_protocol::schemas::PurgeMode;

/// URLs and directories to refresh on every joined edge: at least one of `urls` and `dirs`,
/// together at most `--max-urls-per-request` (10 by default), all on one domain of the caller.
#[derive(ToSchema)]
#[schema(example = json!({"urls": ["http://game.example.com/patch/1.pak"], "mode": "invalidate"}))]
pub(crate) struct RefreshRequest {
    /// Objects: every cached variant of each.
    #[schema(nullable = false)]
    urls: Option<Vec<String>>,
    /// URL prefixes ending in `/` (`2005` otherwise): every cached object under each.
    #[schema(nullable = false)]
    dirs: Option<Vec<String>>,
    /// `delete` (the default): removed; `invalidate`: kept but stale, so the next request
    /// revalidates with the origin.
    mode: Option<PurgeMode>,
    /// Every edge only counts what would be affected; no quota is charged.
    dry_run: Option<bool>,
    /// Prefetch the `urls` again once every edge confirmed the purge (not with `dirs` or a dry
    /// run: `2002`); the warm phase also counts in `prefetch_urls_per_day`.
    prefetch: Option<bool>,
    /// Where to POST the task's final status, signed (as for prefetch).
    #[schema(max_length = 2048, format = "uri")]
    callback_url: Option<String>,
}
