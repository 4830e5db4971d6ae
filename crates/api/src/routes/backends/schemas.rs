//! What `/cdn_api/backends` reads and answers.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handlers read and build them as JSON"
)]

use utoipa::ToSchema;

/// A backend to register.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBackend {
    /// 1–63 of `a-z 0-9 - _ .`, not `edges`; a taken name is `2007`.
    #[schema(example = "varnish-sh", pattern = "^[a-z0-9._-]{1,63}$")]
    name: String,
    /// `varnish`, `nginx`, `trafficserver` or `cloudflare`.
    #[schema(example = "varnish")]
    kind: String,
    /// A cache's servers (1 to 64), `http://host[:port]`; none for a CDN.
    #[schema(example = json!(["http://10.1.2.3:6081", "http://10.1.2.4:6081"]))]
    targets: Option<Vec<String>>,
    /// `concurrency` (requests at once per target, default 8), `timeout` (seconds per request,
    /// default 60), for nginx `purge_prefix` (default `/purge`), for cloudflare `zone_id`
    /// (required), `endpoint`, `max_files_per_call` (default 30).
    #[schema(value_type = Option<Object>, example = json!({"concurrency": 16}))]
    settings: Option<serde_json::Value>,
    /// A CDN's secrets (cloudflare: `api_token`), sealed at rest, never answered back; the
    /// cache kinds take none (their purges are allowed by address).
    #[schema(value_type = Option<Object>, example = json!({"api_token": "..."}))]
    credentials: Option<serde_json::Value>,
}

/// What a kind can do.
#[derive(ToSchema)]
pub(crate) struct Capabilities {
    prefetch: bool,
    url_purge: bool,
    dir_purge: bool,
    invalidate: bool,
    /// Its refresh entries say whether the URL was cached.
    was_cached: bool,
    /// A purge is done when it answers (not only accepted).
    confirmed: bool,
    dry_run: bool,
}

/// A registered backend.
#[derive(ToSchema)]
pub(crate) struct Backend {
    name: String,
    kind: String,
    targets: Vec<String>,
    #[schema(value_type = Object)]
    settings: serde_json::Value,
    /// Each credential's name with at most its last four characters (`…abcd`); null when they
    /// cannot be opened (see `credentials_error`).
    #[schema(value_type = Option<Object>, required = true)]
    credentials: Option<serde_json::Value>,
    /// Why the credentials cannot be opened (e.g. sealed with another key), if so.
    #[schema(required = true)]
    credentials_error: Option<String>,
    #[schema(required = true)]
    capabilities: Option<Capabilities>,
    #[schema(format = DateTime)]
    created_at: String,
}

/// One backend.
#[derive(ToSchema)]
pub(crate) struct OneBackend {
    backend: Backend,
}

/// Backends.
#[derive(ToSchema)]
pub(crate) struct Backends {
    backends: Vec<Backend>,
}

/// One target's answer to a check.
#[derive(ToSchema)]
pub(crate) struct TargetCheck {
    target: String,
    ok: bool,
    /// What it answered, or why it could not be used.
    reason: String,
}

/// A backend's check.
#[derive(ToSchema)]
pub(crate) struct CheckResult {
    backend: String,
    /// Every target is reached and allows purges.
    ok: bool,
    targets: Vec<TargetCheck>,
}
