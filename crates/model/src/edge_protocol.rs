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

/// How an edge serves one registered domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRoute {
    /// The `Host` the edge answers for.
    pub domain: DomainName,
    /// Where misses are fetched from.
    pub origin: Origin,
    /// `Host` header sent to the origin; the domain itself when absent.
    pub origin_host: Option<String>,
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
    /// Body bytes fetched or held.
    pub bytes: u64,
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
