//! The edge protocol: what the control plane sends an edge's admin listener, and the answers.
//!
//! The embedded edge of `precache serve` is driven through exactly this protocol over loopback
//! HTTP, the same way remote edges are, so nothing is special-cased for "local". Every request
//! carries `Authorization: Bearer <edge admin secret>`.

use serde::{Deserialize, Serialize};

use crate::{DomainName, Origin};

/// `GET`: the edge's [`EdgeStatus`].
pub const STATUS_PATH: &str = "/edge/v1/status";
/// `PUT`: replace the edge's [`DomainTable`].
pub const DOMAINS_PATH: &str = "/edge/v1/domains";
/// `POST` a [`PrefetchCommand`]; the answer is NDJSON: [`PrefetchEvent`]s, the last one `finished`.
pub const PREFETCH_PATH: &str = "/edge/v1/prefetch";
/// `POST` a [`PurgeCommand`]; the answer is a [`PurgeOutcome`].
pub const PURGE_PATH: &str = "/edge/v1/purge";

/// How an edge serves one registered domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRoute {
    /// The `Host` the edge answers for.
    pub domain: DomainName,
    /// Where misses are fetched from.
    pub origin: Origin,
    /// `Host` header sent to the origin; the domain itself when absent.
    pub origin_host: Option<String>,
    /// The operator's caching overrides for the domain.
    #[serde(default)]
    pub cache: CachePolicy,
}

/// Per-domain caching overrides, registered with the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CachePolicy {
    /// Freshness, in seconds, of responses for which the origin states none (no `max-age`,
    /// `s-maxage` or `Expires`); when absent, a heuristic from `Last-Modified` applies.
    pub default_ttl_secs: Option<u64>,
    /// Cache even when the origin says `no-store`, `no-cache` or `private`.
    pub ignore_origin_no_cache: bool,
    /// Whether the query string is part of the cache key; when not, `/a.pak?v=1` and
    /// `/a.pak?v=2` are one object (the origin still receives the query of the first miss).
    pub cache_query_string: bool,
}

impl Default for CachePolicy {
    fn default() -> CachePolicy {
        CachePolicy {
            default_ttl_secs: None,
            ignore_origin_no_cache: false,
            cache_query_string: true,
        }
    }
}

/// Every domain an edge serves, as of one revision of the control plane's domain registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainTable {
    /// Increases with every registry change; an edge reports the revision it holds.
    pub revision: i64,
    /// The registered domains.
    pub domains: Vec<DomainRoute>,
}

/// What an edge reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeStatus {
    /// The edge's name.
    pub name: String,
    /// Revision of the domain table the edge serves.
    pub domains_revision: i64,
    /// Complete objects in the cache.
    pub objects: u64,
    /// Bytes of those objects' bodies.
    pub bytes: u64,
    /// Fills (origin fetches being written to the cache) in progress.
    pub fills_in_progress: u64,
    /// Bytes the cache takes on disk (bodies and metas).
    #[serde(default)]
    pub stored_bytes: u64,
    /// The cache's disk budget.
    #[serde(default)]
    pub cache_budget: u64,
    /// Objects evicted to stay within the budget since the edge started.
    #[serde(default)]
    pub evictions: u64,
}

/// Remove (or mark stale) cached objects on an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeCommand {
    /// Which objects.
    #[serde(flatten)]
    pub target: PurgeTarget,
    /// What to do with them.
    #[serde(default)]
    pub mode: PurgeMode,
    /// Only count what would be affected; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The objects a purge applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeTarget {
    /// Every cached variant of one absolute URL.
    Url(String),
    /// Every cached object whose URL starts with this absolute URL (a directory: ends in `/`).
    Prefix(String),
}

/// What a purge does to the objects it applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeMode {
    /// The objects are removed from the cache.
    #[default]
    Delete,
    /// The objects stay but are stale: the next request revalidates with the origin (a 304
    /// costs no body).
    Invalidate,
}

impl PurgeMode {
    /// The mode's name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeMode::Delete => "delete",
            PurgeMode::Invalidate => "invalidate",
        }
    }

    /// The mode named `text`.
    pub fn from_name(text: &str) -> Option<PurgeMode> {
        match text {
            "delete" => Some(PurgeMode::Delete),
            "invalidate" => Some(PurgeMode::Invalidate),
            _ => None,
        }
    }
}

/// The stored mode of a refresh task that only counts (a dry run); otherwise a [`PurgeMode`]'s
/// name is stored.
pub const DRY_RUN_MODE: &str = "dry_run";

/// What a purge affected on one edge (or, for a dry run, would have).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeOutcome {
    /// Complete objects removed or marked stale.
    pub objects: u64,
    /// Sum of their body lengths.
    pub bytes: u64,
    /// Downloads into the cache that were running and will not be stored.
    pub fills_stopped: u64,
}

/// Put one URL into the edge's cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchCommand {
    /// Absolute URL; its host selects the domain, the edge fetches from that domain's origin.
    pub url: String,
}

/// One line of the NDJSON answer to a [`PrefetchCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PrefetchEvent {
    /// Bytes fetched so far, sent about once a second so a long fill shows progress and the
    /// connection never looks idle.
    Progress {
        /// Body bytes received so far.
        bytes: u64,
        /// Expected body size, when the origin said.
        total: Option<u64>,
    },
    /// The last line: what happened.
    Finished(PairOutcome),
}

/// The result of one attempt at one (URL, edge) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairOutcome {
    /// The object is in the edge's cache, complete.
    pub success: bool,
    /// Status the origin (or the cache) answered, when there was an answer.
    pub http_status: Option<u16>,
    /// Body bytes fetched or held (for a purge: removed or marked stale).
    pub bytes: u64,
    /// For a purge: cached objects it affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
    /// Human-readable reason when `success` is false.
    pub error: Option<String>,
    /// Whether another attempt may help (5xx, timeouts, resets), as opposed to 4xx.
    pub retryable: bool,
}

impl PairOutcome {
    /// A failure with its reason.
    pub fn failed(
        http_status: Option<u16>,
        error: impl Into<String>,
        retryable: bool,
    ) -> PairOutcome {
        PairOutcome {
            success: false,
            http_status,
            bytes: 0,
            objects: None,
            error: Some(error.into()),
            retryable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_lines() {
        let line = serde_json::to_string(&PrefetchEvent::Progress {
            bytes: 5,
            total: Some(9),
        })
        .expect("serializable");
        assert_eq!(line, r#"{"event":"progress","bytes":5,"total":9}"#);
        let finished =
            PrefetchEvent::Finished(PairOutcome::failed(Some(404), "origin answered 404", false));
        let text = serde_json::to_string(&finished).expect("serializable");
        assert_eq!(
            serde_json::from_str::<PrefetchEvent>(&text).ok(),
            Some(finished)
        );
    }
}
