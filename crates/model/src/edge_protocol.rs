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
    /// How hard prefetching may press the domain's origin.
    #[serde(default)]
    pub origin_limits: OriginLimits,
    /// The certificate the edge presents to players who name this domain by SNI; a domain
    /// without one is not served over TLS (the handshake is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<DomainCertificate>,
}

/// A domain's certificate chain and private key, as the control plane hands them to its edges
/// (over the edge protocol, which runs over TLS where configured).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCertificate {
    /// The chain in PEM, leaf first.
    pub cert_pem: String,
    /// The private key in PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for DomainCertificate {
    // The key never reaches a log line, even through a `{:?}` of the domain table.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainCertificate")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

/// Per-domain protection of the origin during prefetch, set by an admin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OriginLimits {
    /// Prefetch fetches from the origin at once (each (URL, edge) pair is one); the engine's
    /// per-origin default when absent.
    pub max_concurrent_fetches: Option<u32>,
    /// Bytes per second all the domain's prefetch fetches may take together; split evenly
    /// between its concurrent fetch slots. No limit when absent.
    pub max_bandwidth: Option<u64>,
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
    /// Read the object no faster than this many bytes per second (the fill follows the reader,
    /// so this is the origin's bandwidth for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_sec: Option<u64>,
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

/// The edge's side of the protocol: calls an edge makes to the control plane's API listener,
/// answered in the `zt_api` envelope. All but the join carry `Authorization: Bearer <credential>`.
///
/// `POST` a [`JoinRequest`]: trade a one-time join token for the edge's credential.
pub const JOIN_PATH: &str = "/cdn_api/edge_protocol/join";
/// `POST` a [`Hello`] (every couple of seconds): the edge is alive at these addresses; the
/// answer is a [`HelloAnswer`].
pub const HELLO_PATH: &str = "/cdn_api/edge_protocol/hello";
/// `POST` a [`CaughtUp`]: purges the edge applied on its own after a catch-up.
pub const CAUGHT_UP_PATH: &str = "/cdn_api/edge_protocol/caught_up";

/// An edge's first call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The name an admin created the edge with.
    pub name: String,
    /// The one-time token the admin got for it.
    pub join_token: String,
    /// Where the edge's admin listener (the edge protocol) is reached.
    pub admin_url: String,
    /// Where the edge's data plane is reached (by players, and by its children).
    pub data_url: String,
}

/// The answer to a [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAnswer {
    /// The edge's credential: the bearer secret of its calls, and of the control plane's calls
    /// to its admin listener.
    pub credential: String,
    /// The data plane of the edge's parent (its origin shield), as a hello answers it: known
    /// before the edge serves its first player, so that none goes around the shield.
    #[serde(default)]
    pub parent_data_url: Option<String>,
}

/// An edge's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The edge's name.
    pub name: String,
    /// Where its admin listener is reached.
    pub admin_url: String,
    /// Where its data plane is reached.
    pub data_url: String,
    /// The edge is not serving from its cache (it just started, or lost touch with the control
    /// plane): the answer lists every purge it may have missed.
    pub catch_up: bool,
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAnswer {
    /// The data plane of the edge's parent (its origin shield), when it has one and the parent
    /// has said where it is.
    pub parent_data_url: Option<String>,
    /// With `catch_up`: the purges the edge may not have applied, oldest first.
    #[serde(default)]
    pub owed: Vec<OwedPurge>,
    /// More purges are owed than one answer lists: apply these, confirm them and ask again.
    #[serde(default)]
    pub more: bool,
    /// Without `catch_up`: purges have been owed to the edge for longer than a push takes (the
    /// control plane cannot reach it, though it reaches the control plane); it should catch up.
    #[serde(default)]
    pub behind: bool,
}

/// A purge an edge may have missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwedPurge {
    /// The refresh task (its `reqId`).
    pub task_id: String,
    /// The target's index in the task.
    pub url_idx: i64,
    /// What to purge.
    pub command: PurgeCommand,
}

/// Purges an edge applied during a catch-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaughtUp {
    /// The edge's name.
    pub name: String,
    /// What each purge did.
    pub applied: Vec<AppliedPurge>,
}

/// One purge applied during a catch-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPurge {
    /// The refresh task.
    pub task_id: String,
    /// The target's index in the task.
    pub url_idx: i64,
    /// What it affected.
    pub outcome: PurgeOutcome,
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
