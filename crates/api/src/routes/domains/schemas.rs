//! What `/cdn_api/domains` reads and answers.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handlers read and build them as JSON"
)]

use utoipa::ToSchema;

/// A domain to register.
#[derive(ToSchema)]
pub(crate) struct NewDomain {
    /// The host name players use.
    #[schema(example = "game.example.com")]
    domain: String,
    /// `http://host[:port]` or `https://host[:port]` (verified against the system's roots plus
    /// `--origin-ca-file`), no path.
    #[schema(example = "http://origin.example.com:8000")]
    origin: String,
    /// The account the domain is registered to (`3002` when there is none).
    owner: String,
    /// The `Host` sent to the origin, when not the domain itself.
    origin_host: Option<String>,
    /// Caching overrides; the defaults when absent.
    cache: Option<CacheSettings>,
    /// The backends its tasks run on (`edges`: precache's own edges; others registered with
    /// `POST /cdn_api/backends`); `["edges"]` when absent.
    #[schema(example = json!(["edges", "varnish-sh"]))]
    backends: Option<Vec<String>>,
}

/// The backends a domain's tasks run on from now on.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendsChange {
    /// At least one name, none twice.
    #[schema(example = json!(["edges", "varnish-sh"]))]
    backends: Vec<String>,
}

/// The operator's caching overrides for a domain; every key optional, unknown keys are `2002`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CacheSettings {
    /// Seconds of freshness when the origin states none; when absent or null, the
    /// `Last-Modified` heuristic applies.
    #[schema(minimum = 0)]
    default_ttl: Option<u64>,
    /// Cache even when the origin says `no-store`, `no-cache` or `private` (default `false`).
    #[schema(nullable = false)]
    ignore_origin_no_cache: Option<bool>,
    /// Whether the query string is part of the cache key (default `true`).
    #[schema(nullable = false)]
    cache_query_string: Option<bool>,
}

/// How hard prefetching may press the domain's origin. The body replaces both limits: a limit
/// that is absent or null is removed. Unknown keys and non-positive numbers are `2002`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OriginLimitsChange {
    /// Prefetch fetches from the origin at once; `--task-per-origin` applies when none.
    #[schema(minimum = 1, example = 4)]
    max_concurrent_fetches: Option<u32>,
    /// Bytes per second, shared by those fetches; no limit when none.
    #[schema(minimum = 1, example = 52428800)]
    max_bandwidth: Option<u64>,
}

/// A registered domain.
#[derive(ToSchema)]
pub(crate) struct Domain {
    /// The host name.
    domain: String,
    /// The account it is registered to.
    owner: String,
    /// Where edges fetch it from.
    origin: String,
    /// The `Host` sent to the origin; null when it is the domain itself.
    #[schema(required = true)]
    origin_host: Option<String>,
    /// Its caching overrides.
    cache: CachePolicy,
    /// Its origin limits.
    origin_limits: OriginLimits,
    /// The backends its tasks run on.
    backends: Vec<String>,
    /// When it was registered.
    #[schema(format = DateTime)]
    created_at: String,
    /// What its TLS certificate says; null without one.
    #[schema(required = true)]
    certificate: Option<crate::routes::certificates::schemas::CertificateFacts>,
}

/// A domain's caching overrides as they stand.
#[derive(ToSchema)]
pub(crate) struct CachePolicy {
    /// Seconds of freshness when the origin states none; null: the `Last-Modified` heuristic.
    #[schema(required = true)]
    default_ttl: Option<u64>,
    /// Cache even when the origin says `no-store`, `no-cache` or `private`.
    ignore_origin_no_cache: bool,
    /// Whether the query string is part of the cache key.
    cache_query_string: bool,
}

/// A domain's origin limits as they stand; null: no limit of its own.
#[derive(ToSchema)]
pub(crate) struct OriginLimits {
    /// Prefetch fetches from the origin at once.
    #[schema(required = true)]
    max_concurrent_fetches: Option<u32>,
    /// Bytes per second shared by those fetches.
    #[schema(required = true)]
    max_bandwidth: Option<u64>,
}

/// One domain.
#[derive(ToSchema)]
pub(crate) struct OneDomain {
    domain: Domain,
}

/// A domain after a change; null only if it was deleted in between.
#[derive(ToSchema)]
pub(crate) struct ChangedDomain {
    #[schema(required = true)]
    domain: Option<Domain>,
}

/// Domains.
#[derive(ToSchema)]
pub(crate) struct Domains {
    domains: Vec<Domain>,
}
