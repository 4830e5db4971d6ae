//! Tasks on the wire as the OpenAPI description shows them: what `summary_fields` and
//! `detail_json` build.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; task_view.rs builds them as JSON"
)]

use utoipa::ToSchema;

use crate::routes::edge_protocol::schemas::PurgeMode;
use crate::routes::tasks::schemas::Callback;

/// A task's kind.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TaskKind {
    /// Put URLs into every edge's cache.
    Prefetch,
    /// Remove or mark stale URLs and directories on every edge.
    Refresh,
}

/// Where a task is in its life.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TaskStatus {
    /// No pair started yet.
    Waiting,
    /// Pairs are running.
    Running,
    /// Every pair finished.
    Done,
    /// Every pair finished and one or more failed.
    Failed,
    /// Cancelled; running pairs finished.
    Cancelled,
}

/// The state of one (URL, edge) pair.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PairStatus {
    /// Not started.
    Waiting,
    /// Running on its edge.
    Running,
    /// Done on its edge.
    Success,
    /// Failed (see `error`).
    Failed,
    /// Cancelled before it started.
    Cancelled,
    /// A warm pair waiting for its refresh's purges.
    Held,
    /// Its target cannot do this (see `error`): finished, left out of `success_rate`.
    Unsupported,
}

/// The state of one URL over every edge.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UrlStatus {
    /// Every target that can has it (or confirmed the purge).
    Success,
    /// No target of the task can do this.
    Unsupported,
    /// Every edge finished and one or more failed (or no edge ran it).
    Failed,
    /// Every edge finished, some pairs were cancelled.
    Cancelled,
    /// Some pair started.
    Running,
    /// No pair started yet.
    Waiting,
}

/// The fields every view of a task has, in the lists too.
#[derive(ToSchema)]
pub(crate) struct TaskSummary {
    /// The task's id.
    #[serde(rename = "reqId")]
    #[schema(format = "uuid")]
    req_id: String,
    /// Its kind.
    #[serde(rename = "type")]
    kind: TaskKind,
    /// The domain of its URLs.
    domain: String,
    /// Where it is in its life.
    status: TaskStatus,
    /// When it was accepted.
    #[schema(format = DateTime)]
    created_at: String,
    /// When its first pair started.
    #[schema(required = true, format = DateTime)]
    started_at: Option<String>,
    /// When its last pair finished.
    #[schema(required = true, format = DateTime)]
    finished_at: Option<String>,
    /// Finished pairs, percent with two decimals (100 when there are none).
    #[schema(minimum = 0, maximum = 100, example = 50.0)]
    progress: f64,
    /// Successful pairs, percent with two decimals, of the pairs their target can carry out
    /// (100 when there are none).
    #[schema(minimum = 0, maximum = 100, example = 100.0)]
    success_rate: f64,
    /// Distinct URLs (and directories).
    urls_total: i64,
    /// (URL, edge) pairs.
    pairs_total: i64,
    /// Pairs finished, either way.
    pairs_finished: i64,
    /// Pairs that succeeded.
    pairs_success: i64,
    /// Pairs their target cannot carry out (`unsupported`).
    pairs_unsupported: i64,
}

/// A prefetch task's status.
#[derive(ToSchema)]
pub(crate) struct PrefetchTask {
    #[serde(flatten)]
    summary: TaskSummary,
    /// Each URL, and how each edge did.
    urls: Vec<PrefetchUrl>,
    /// Pairs cancelled.
    pairs_cancelled: i64,
    /// Only in `GET` on a task submitted with a `callback_url`: its delivery.
    #[schema(nullable = false)]
    callback: Option<Callback>,
}

/// One URL of a prefetch, over every edge.
#[derive(ToSchema)]
pub(crate) struct PrefetchUrl {
    /// The URL as normalised.
    url: String,
    /// Its state over every edge.
    status: UrlStatus,
    /// Edges it runs on.
    edges_total: i64,
    /// Edges that have it.
    edges_success: i64,
    /// The HTTP status of a failing edge, else of a successful one.
    #[schema(required = true)]
    http_status: Option<i64>,
    /// The bytes of that same edge.
    #[schema(required = true)]
    bytes: Option<i64>,
    /// The failing edge's reason (prefixed with its name when there are several edges).
    #[schema(required = true)]
    error: Option<String>,
    /// Each edge's pair.
    edges: Vec<PrefetchPair>,
}

/// One (URL, edge) pair of a prefetch.
#[derive(ToSchema)]
pub(crate) struct PrefetchPair {
    /// The edge (empty when it was removed since); for a backend's target, its URL.
    edge: String,
    /// `edges` (precache's own) or the backend's name.
    #[schema(example = "varnish-sh")]
    backend: String,
    /// The edge's name, or the backend target's base URL.
    target: String,
    /// Its state.
    status: PairStatus,
    /// Attempts made (3 at most; 5xx, timeouts and resets are retried).
    attempts: i64,
    /// The last HTTP status the origin (or the cache) answered.
    #[schema(required = true)]
    http_status: Option<i64>,
    /// Body bytes fetched; while it runs, fetched so far.
    #[schema(required = true)]
    bytes: Option<i64>,
    /// Why it failed.
    #[schema(required = true)]
    error: Option<String>,
    /// When its first attempt started.
    #[schema(required = true, format = DateTime)]
    started_at: Option<String>,
    /// When it finished.
    #[schema(required = true, format = DateTime)]
    finished_at: Option<String>,
    /// The object's size, when the origin said.
    #[schema(required = true)]
    expected_bytes: Option<i64>,
    /// Only on a success that has something to say.
    #[schema(nullable = false)]
    note: Option<String>,
}

/// The phase of a refresh's URL entry.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// The purge.
    Refresh,
    /// The prefetch after the purge (`"prefetch": true`).
    Warm,
}

/// A refresh task's status.
#[derive(ToSchema)]
pub(crate) struct RefreshTask {
    #[serde(flatten)]
    summary: TaskSummary,
    /// Each URL and directory, and what each edge did; with a warm phase each URL is listed
    /// twice, `phase` `refresh` then `warm`.
    urls: Vec<RefreshUrl>,
    /// Pairs cancelled.
    pairs_cancelled: i64,
    /// What the purge does.
    mode: PurgeMode,
    /// Whether the edges only counted.
    dry_run: bool,
    /// Only with a warm phase: each phase's progress.
    #[schema(nullable = false)]
    phases: Option<Phases>,
    /// From acceptance to the last edge's confirmation, once the task ended.
    #[schema(required = true)]
    propagation_ms: Option<i64>,
    /// Only in `GET` on a task submitted with a `callback_url`: its delivery.
    #[schema(nullable = false)]
    callback: Option<Callback>,
}

/// One URL or directory of a refresh, over every edge.
#[derive(ToSchema)]
pub(crate) struct RefreshUrl {
    /// The URL or directory as normalised.
    url: String,
    /// Its state over every edge.
    status: UrlStatus,
    /// Edges it runs on.
    edges_total: i64,
    /// Edges that confirmed it.
    edges_success: i64,
    /// The HTTP status of a failing edge, else of a successful one.
    #[schema(required = true)]
    http_status: Option<i64>,
    /// `refresh`: body bytes affected, summed over the edges; `warm`: the bytes of the edge
    /// `http_status` is from.
    #[schema(required = true)]
    bytes: Option<i64>,
    /// The failing edge's reason (prefixed with its name when there are several edges).
    #[schema(required = true)]
    error: Option<String>,
    /// Each edge's pair.
    edges: Vec<RefreshPair>,
    /// The purge, or the warm prefetch after it.
    phase: Phase,
    /// `refresh` only: whether this is a directory (`dirs`).
    #[schema(nullable = false)]
    dir: Option<bool>,
    /// `refresh` only: cached objects affected, summed over the edges.
    #[schema(nullable = false)]
    objects: Option<i64>,
}

/// One (URL, edge) pair of a refresh.
#[derive(ToSchema)]
pub(crate) struct RefreshPair {
    /// The edge (empty when it was removed since); for a backend's target, its URL.
    edge: String,
    /// `edges` (precache's own) or the backend's name.
    #[schema(example = "varnish-sh")]
    backend: String,
    /// The edge's name, or the backend target's base URL.
    target: String,
    /// Its state.
    status: PairStatus,
    /// Attempts made.
    attempts: i64,
    /// The last HTTP status seen.
    #[schema(required = true)]
    http_status: Option<i64>,
    /// Body bytes removed or marked stale (warm: fetched).
    #[schema(required = true)]
    bytes: Option<i64>,
    /// Why it failed.
    #[schema(required = true)]
    error: Option<String>,
    /// When its first attempt started.
    #[schema(required = true, format = DateTime)]
    started_at: Option<String>,
    /// When it finished.
    #[schema(required = true, format = DateTime)]
    finished_at: Option<String>,
    /// Cached objects the purge affected on this edge.
    #[schema(required = true)]
    objects: Option<i64>,
    /// Whether the target held anything for it; null where it cannot tell.
    #[schema(required = true)]
    was_cached: Option<bool>,
    /// On a success: `true` when the target confirmed the purge was done, `false` when it only
    /// accepted it (a CDN without a completion to poll); null otherwise.
    #[schema(required = true)]
    confirmed: Option<bool>,
    /// Only on a success that has something to say, e.g. `deleted: nginx cannot invalidate`.
    #[schema(nullable = false)]
    note: Option<String>,
}

/// The two phases of a refresh with `"prefetch": true`.
#[derive(ToSchema)]
pub(crate) struct Phases {
    /// The purge.
    refresh: PhaseProgress,
    /// The warm prefetch.
    warm: PhaseProgress,
}

/// One phase's progress.
#[derive(ToSchema)]
pub(crate) struct PhaseProgress {
    /// Whether it waits, runs or is over.
    status: PhaseStatus,
    /// Its pairs.
    pairs_total: i64,
    /// Finished, either way.
    pairs_finished: i64,
    /// Succeeded.
    pairs_success: i64,
}

/// Where a phase is.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PhaseStatus {
    /// Every pair is held (the warm phase before the purge is confirmed).
    Held,
    /// Some pair runs or waits.
    Running,
    /// Every pair finished.
    Done,
}

#[cfg(test)]
mod tests {
    use precache_model::{PairStatus, TaskKind, TaskStatus};

    /// The names the description lists for `schema`.
    fn names(schema: &str) -> Vec<String> {
        let doc = serde_json::to_value(crate::openapi::document()).expect("document");
        doc["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} has no enum"))
            .iter()
            .filter_map(|name| name.as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn state_names_are_the_models() {
        for name in names("TaskKind") {
            assert!(name.parse::<TaskKind>().is_ok(), "{name}");
        }
        for name in names("TaskStatus") {
            assert!(name.parse::<TaskStatus>().is_ok(), "{name}");
        }
        for name in names("PairStatus") {
            assert!(name.parse::<PairStatus>().is_ok(), "{name}");
        }
        for name in names("PurgeMode") {
            assert!(
                precache_model::edge_protocol::PurgeMode::from_name(&name).is_some(),
                "{name}"
            );
        }
    }
}
