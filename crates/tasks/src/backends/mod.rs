//! Backends: where a task's pairs are carried out. One interface, [`Backend`], for precache's
//! own edges ([`edges`], the built-in backend `edges`) and for the caches an operator already
//! runs ([`varnish`], [`nginx`], [`trafficserver`], sharing [`http_cache`]).
//!
//! A backend has targets (an edge, or one cache server of a fleet); a pair is one URL on one
//! target. The engine, the store and the status see only pairs: what a kind can do is in its
//! [`Capabilities`], and a pair its target cannot carry out ends `unsupported` with the reason
//! before any call ([`unsupported_reason`]). A new kind is one file here plus a line in
//! [`build`].

pub mod alibaba;
pub mod batch;
pub mod cloudflare;
pub mod cloudfront;
pub mod edges;
pub mod http_cache;
pub mod nginx;
pub mod tencent;
pub mod trafficserver;
pub mod varnish;

use std::sync::Arc;

use async_trait::async_trait;
use precache_model::edge_protocol::{PairOutcome, PurgeMode};
use precache_model::{EdgeId, TaskKind};

use crate::PairJob;

/// What a kind of backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// It can fetch an object into its cache ahead of players.
    pub prefetch: bool,
    /// It can remove one URL.
    pub url_purge: bool,
    /// It can remove every URL under a prefix.
    pub dir_purge: bool,
    /// It can mark objects stale (revalidated on next use) rather than delete them.
    pub invalidate: bool,
    /// It says whether a purged URL was cached (`was_cached`); otherwise that stays unknown.
    pub reports_was_cached: bool,
    /// A successful purge is done when it answers, rather than only accepted.
    pub confirms: bool,
    /// It can count what a purge would remove without removing it (`dry_run`).
    pub dry_run: bool,
}

/// One target of a backend, as the engine drives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The pair target's id (a row of `edges`).
    pub id: EdgeId,
    /// How errors name it: the edge's name, or the cache server's base URL.
    pub name: String,
    /// Base URL: an edge's admin listener, or the cache server that players are served from.
    pub url: String,
    /// An edge's bearer secret; caches are reached without one (they allow purges by address).
    pub secret: Option<String>,
}

/// The target gave no answer at all and the pair should wait for it rather than fail: only
/// precache's edges, which apply what they missed when they come back, answer this. Caches
/// fail the pair after its attempts instead (`target unreachable: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Away(pub String);

/// Progress of a prefetch: bytes so far, and the expected total when known.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Send + Sync);

/// A kind of backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The kind's name, as in `POST /cdn_api/backends`.
    fn kind(&self) -> &'static str;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// Brings `job.url` into the target's cache; `max_bytes_per_sec` paces the origin fetch
    /// where the target can.
    async fn prefetch(
        &self,
        target: &Target,
        job: &PairJob,
        max_bytes_per_sec: Option<u64>,
        progress: Progress<'_>,
    ) -> Result<PairOutcome, Away>;

    /// Removes (or invalidates, or counts for a dry run) `job.url`, or everything under it when
    /// `job.is_dir`. `objects` in the outcome is what it affected, when the target can tell.
    async fn purge(&self, target: &Target, job: &PairJob) -> Result<PairOutcome, Away>;

    /// Reaches the target now: `Ok` with what it answered, or why it could not be used.
    async fn check(&self, target: &Target) -> Result<String, String>;

    /// For a kind that gathers pairs into vendor calls (and waits on the vendor's completion):
    /// how many of a target's pairs may wait at once. Such pairs only await an answer, so they
    /// take none of the engine's slots (`--task-concurrency`, `--task-per-origin`): otherwise a
    /// call would carry at most a handful of URLs, and minutes of polling would starve the
    /// edges' work. `None`: each pair is a request of its own, counted like any.
    fn gathers(&self) -> Option<usize> {
        None
    }
}

/// The kinds an admin can register, besides the built-in `edges`.
pub const KINDS: [&str; 7] = [
    "varnish",
    "nginx",
    "trafficserver",
    "cloudflare",
    "tencent",
    "alibaba",
    "cloudfront",
];

/// A backend's credentials, by name (what `POST /cdn_api/backends` takes in `credentials`).
pub type Credentials = std::collections::BTreeMap<String, String>;

/// The implementation of `kind` with these settings and credentials; `Err` says what is wrong
/// with them.
pub fn build(
    kind: &str,
    settings: &serde_json::Value,
    credentials: &Credentials,
) -> Result<Arc<dyn Backend>, String> {
    let no_credentials = || match credentials.is_empty() {
        true => Ok(()),
        // Caches allow purges by client address; a secret here would only be one more to keep.
        false => Err(format!(
            "{kind} takes no credentials: its purges are allowed by address (docs/backends.md)"
        )),
    };
    match kind {
        "varnish" => no_credentials().and(Ok(Arc::new(varnish::Varnish::new(settings)?))),
        "nginx" => no_credentials().and(Ok(Arc::new(nginx::Nginx::new(settings)?))),
        "trafficserver" => {
            no_credentials().and(Ok(Arc::new(trafficserver::TrafficServer::new(settings)?)))
        }
        "cloudflare" => Ok(Arc::new(cloudflare::Cloudflare::new(
            settings,
            credentials,
        )?)),
        "tencent" => Ok(Arc::new(tencent::Tencent::new(settings, credentials)?)),
        "alibaba" => Ok(Arc::new(alibaba::Alibaba::new(settings, credentials)?)),
        "cloudfront" => Ok(Arc::new(cloudfront::CloudFront::new(
            settings,
            credentials,
        )?)),
        other => Err(format!(
            "unknown backend kind {other:?} (expected one of: {})",
            KINDS.join(", ")
        )),
    }
}

/// The targets of a kind that has no servers of the operator's to list: a CDN's API, as
/// `settings` name it. `None` for the kinds whose targets the admin gives (caches).
pub fn implicit_targets(
    kind: &str,
    settings: &serde_json::Value,
) -> Option<Result<Vec<String>, String>> {
    match kind {
        "cloudflare" => Some(cloudflare::Cloudflare::target_url(settings).map(|url| vec![url])),
        "tencent" => Some(tencent::Tencent::target_url(settings).map(|url| vec![url])),
        "alibaba" => Some(alibaba::Alibaba::target_url(settings).map(|url| vec![url])),
        "cloudfront" => Some(cloudfront::CloudFront::target_url(settings).map(|url| vec![url])),
        _ => None,
    }
}

/// Why `job` cannot run on a backend with `capabilities`, if it cannot.
pub fn unsupported_reason(kind: &str, capabilities: Capabilities, job: &PairJob) -> Option<String> {
    match job.kind {
        TaskKind::Prefetch if !capabilities.prefetch => Some(format!("{kind} has no prefetch")),
        TaskKind::Refresh if job.is_dir && !capabilities.dir_purge => {
            Some(format!("{kind} cannot purge a directory (exact URLs only)"))
        }
        TaskKind::Refresh if !job.is_dir && !capabilities.url_purge => {
            Some(format!("{kind} cannot purge a URL"))
        }
        TaskKind::Refresh if job.dry_run && !capabilities.dry_run => Some(format!(
            "{kind} cannot count what a purge would remove (dry run)"
        )),
        _ => None,
    }
}

/// For a success: the note a refresh carries when the kind deleted where invalidation was asked.
pub fn mode_note(kind: &str, capabilities: Capabilities, job: &PairJob) -> Option<String> {
    (job.kind == TaskKind::Refresh
        && job.mode == PurgeMode::Invalidate
        && !job.dry_run
        && !capabilities.invalidate)
        .then(|| format!("deleted: {kind} cannot invalidate"))
}

/// The path and query of a task URL (`http://host/p?q` → `/p?q`) and its host.
pub(crate) fn split_url(url: &str) -> Option<(String, String)> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?.to_string();
    let host = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    let mut path = parsed.path().to_string();
    if let Some(query) = parsed.query() {
        path.push('?');
        path.push_str(query);
    }
    Some((host, path))
}
