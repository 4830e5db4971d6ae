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
    /// `varnish`, `nginx` or `trafficserver`.
    #[schema(example = "varnish")]
    kind: String,
    /// Base URLs of the cache servers (1 to 64), `http://host[:port]`.
    #[schema(example = json!(["http://10.1.2.3:6081", "http://10.1.2.4:6081"]))]
    targets: Vec<String>,
    /// `concurrency` (requests at once per target, default 8), `timeout` (seconds per request,
    /// default 60), for nginx `purge_prefix` (default `/purge`).
    #[schema(value_type = Option<Object>, example = json!({"concurrency": 16}))]
    settings: Option<serde_json::Value>,
    /// The cache kinds take none (purges are allowed by address); anything but `{}` is `2002`.
    #[schema(value_type = Option<Object>)]
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
