//! What the store reads and writes: plain records, no behaviour.

use precache_model::{
    AccountId, DomainName, EdgeId, Origin, PairStatus, QuotaKind, Role, TaskId, TaskKind,
    TaskStatus,
};

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Row id.
    pub id: AccountId,
    /// Login name.
    pub name: String,
    /// What the account may do.
    pub role: Role,
    /// PHC string of the argon2id hash of the password.
    pub password_hash: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

/// A token looked up by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The account the token was issued to.
    pub account: Account,
    /// Expiry, ms since the epoch.
    pub expires_at: i64,
    /// Whether it was revoked.
    pub revoked: bool,
    /// The account's own request rate limit (per second; 0: none), when an admin set one.
    pub rate_limit: Option<i64>,
}

/// A registered domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The host name.
    pub name: DomainName,
    /// The owning account.
    pub owner_id: AccountId,
    /// The owning account's name.
    pub owner_name: String,
    /// Where edges fetch it from.
    pub origin: Origin,
    /// `Host` sent to the origin, when not the domain itself.
    pub origin_host: Option<String>,
    /// The operator's caching overrides.
    pub cache: precache_model::edge_protocol::CachePolicy,
    /// How hard prefetching may press the origin.
    pub origin_limits: precache_model::edge_protocol::OriginLimits,
    /// The backends its tasks run on, by name (`edges` is precache's own).
    pub backends: Vec<String>,
    /// Registration time, ms since the epoch.
    pub created_at: i64,
    /// What its TLS certificate says, when it has one (never the key).
    pub certificate: Option<CertificateFacts>,
}

/// What a domain's certificate says, read from its leaf at upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The leaf's subject, as a distinguished name (`CN=game.example.com`).
    pub subject: String,
    /// The leaf's DNS subject alternative names.
    pub sans: Vec<String>,
    /// The end of the leaf's validity, seconds since the epoch.
    pub not_after: i64,
    /// SHA-256 of the leaf's DER, lowercase hex.
    pub sha256: String,
}

/// A certificate to store for a domain: the chain, its key (sealed before it is written) and
/// what the leaf says.
#[derive(Clone)]
pub struct NewCertificate {
    /// The chain in PEM, leaf first.
    pub cert_pem: String,
    /// The private key in PEM.
    pub key_pem: String,
    /// What the leaf says.
    pub facts: CertificateFacts,
}

impl std::fmt::Debug for NewCertificate {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCertificate")
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

/// An edge node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Row id.
    pub id: EdgeId,
    /// Unique name.
    pub name: String,
    /// Base URL of the edge's admin listener, once known.
    pub admin_url: Option<String>,
    /// Bearer secret the control plane presents to that listener.
    pub admin_secret: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// When the control plane last heard from the edge, ms since the epoch.
    pub last_seen_at: Option<i64>,
    /// The edge it fetches through instead of the origin (its shield).
    pub parent_id: Option<EdgeId>,
    /// Base URL of its data plane, as it announced it (what its children fetch from).
    pub data_url: Option<String>,
    /// When an admin revoked its credential; it must join again with a new token.
    pub revoked_at: Option<i64>,
    /// Whether a join token was issued and not used yet.
    pub join_pending: bool,
    /// Set when this row is a target of a backend (a cache the operator runs), not a precache
    /// edge: the backend's id (gone once the backend is deleted) and name (kept for history).
    pub backend: Option<(Option<i64>, String)>,
}

/// A task to create, with everything needed to commit it at once.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// The `reqId`.
    pub id: TaskId,
    /// The submitting account.
    pub account_id: AccountId,
    /// Prefetch or refresh.
    pub kind: TaskKind,
    /// The one domain all URLs are on.
    pub domain: DomainName,
    /// Normalised, de-duplicated URLs.
    pub urls: Vec<String>,
    /// Refresh: normalised, de-duplicated directories (URL prefixes); they follow the URLs in
    /// the task's numbering.
    pub dirs: Vec<String>,
    /// Refresh: `delete` or `invalidate`.
    pub mode: Option<String>,
    /// Refresh: prefetch the `urls` once the purge is confirmed on every edge.
    pub warm: bool,
    /// Edges the work runs on; one pair per (URL or directory, edge).
    pub edges: Vec<EdgeId>,
    /// Acceptance time, ms since the epoch.
    pub created_at: i64,
    /// The quotas charged in the same transaction (all or none).
    pub charges: Vec<QuotaCharge>,
    /// The client's `Idempotency-Key` and a hash of what it submitted with it.
    pub idempotency: Option<IdempotencyKey>,
    /// Where to POST the final status once the task ends.
    pub callback_url: Option<String>,
    /// The audit log's entry of the submission, written in the task's own transaction (not for
    /// an idempotent replay, which submits nothing).
    pub audit: Option<crate::NewAuditEntry>,
}

/// An `Idempotency-Key` of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client's key.
    pub key: String,
    /// A hash of the request (kind and body): the same key with another body is refused.
    pub body_hash: String,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

impl NewTask {
    /// Every target with its index in the task and whether it is a directory.
    pub fn targets(&self) -> impl Iterator<Item = (i64, &str, bool)> {
        self.urls
            .iter()
            .map(|url| (url.as_str(), false))
            .chain(self.dirs.iter().map(|dir| (dir.as_str(), true)))
            .enumerate()
            .map(|(idx, (target, is_dir))| (idx as i64, target, is_dir))
    }

    /// How many targets run first (every target but the warm phase's).
    pub fn target_count(&self) -> usize {
        self.urls.len() + self.dirs.len()
    }

    /// The warm phase of a refresh: its URLs again, numbered after the other targets.
    pub fn warm_targets(&self) -> impl Iterator<Item = (i64, &str)> {
        let first = self.target_count() as i64;
        self.urls
            .iter()
            .filter(move |_| self.warm)
            .enumerate()
            .map(move |(idx, url)| (first + idx as i64, url.as_str()))
    }

    /// Every target of every phase.
    pub fn all_target_count(&self) -> usize {
        self.target_count() + if self.warm { self.urls.len() } else { 0 }
    }
}

/// A committed task, with the origin of its domain (what the engine needs to run it).
#[derive(Debug, Clone)]
pub struct SubmittedTask {
    /// The task as submitted.
    pub task: NewTask,
    /// Its domain's origin at submission.
    pub origin: Origin,
    /// The submission repeated an earlier one's idempotency key and body: nothing was created,
    /// and `task.id` is the earlier task's.
    pub replayed: bool,
}

/// Consumption of a daily quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCharge {
    /// Which quota.
    pub kind: QuotaKind,
    /// The day it counts against, in the quota time zone (`YYYY-MM-DD`).
    pub day: String,
    /// How much.
    pub amount: i64,
    /// The limit that applies when the account has none of its own.
    pub default_limit: i64,
}

/// A task's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSummary {
    /// The `reqId`.
    pub id: TaskId,
    /// The submitting account.
    pub account_id: AccountId,
    /// Prefetch or refresh.
    pub kind: TaskKind,
    /// The domain.
    pub domain: String,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// Acceptance time, ms.
    pub created_at: i64,
    /// When the first pair started, ms.
    pub started_at: Option<i64>,
    /// When the last pair finished, ms.
    pub finished_at: Option<i64>,
    /// Distinct URLs.
    pub n_urls: i64,
    /// (URL, edge) pairs.
    pub n_pairs: i64,
    /// Pairs finished (either way).
    pub n_finished: i64,
    /// Pairs that succeeded.
    pub n_success: i64,
    /// Pairs their target cannot carry out (finished, left out of `success_rate`).
    pub n_unsupported: i64,
}

/// One (URL, edge) pair as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairRecord {
    /// Index of the URL in the task.
    pub url_idx: i64,
    /// The edge.
    pub edge_id: EdgeId,
    /// The edge's name (empty when the edge was removed since).
    pub edge_name: String,
    /// When the target is a backend's: the backend's name and the target's base URL.
    pub backend: Option<(String, String)>,
    /// A refresh's success: confirmed by the target, or only accepted.
    pub confirmed: Option<bool>,
    /// Its state.
    pub status: PairStatus,
    /// Attempts made.
    pub attempts: i64,
    /// Last HTTP status seen.
    pub http_status: Option<i64>,
    /// Body bytes fetched (or removed by a refresh); while a prefetch runs, fetched so far.
    pub bytes: Option<i64>,
    /// Prefetch: the object's size, when the origin said.
    pub expected_bytes: Option<i64>,
    /// Refresh: cached objects affected.
    pub objects: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// First attempt started, ms.
    pub started_at: Option<i64>,
    /// Finished, ms.
    pub finished_at: Option<i64>,
}

/// A task with its URLs and pairs, for the status query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDetail {
    /// The task's row.
    pub summary: TaskSummary,
    /// URLs (and directories) by index.
    pub urls: Vec<String>,
    /// Whether each of `urls` is a directory.
    pub is_dir: Vec<bool>,
    /// The phase of each of `urls` (1: the warm after a refresh).
    pub phase: Vec<i64>,
    /// Refresh: the purge mode.
    pub mode: Option<String>,
    /// Every pair, ordered by URL index then edge.
    pub pairs: Vec<PairRecord>,
}

/// Filters of the task list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskQuery {
    /// Whose tasks.
    pub account_id: AccountId,
    /// Only tasks of this kind.
    pub kind: Option<TaskKind>,
    /// Only tasks in this state.
    pub status: Option<TaskStatus>,
    /// Only tasks on this domain.
    pub domain: Option<String>,
    /// Only tasks accepted at or after this time, ms.
    pub since: Option<i64>,
    /// Only tasks accepted before this time, ms.
    pub until: Option<i64>,
    /// Only tasks older than this one (cursor: the last `reqId` of the previous page).
    pub before: Option<TaskId>,
    /// At most this many.
    pub limit: i64,
}

/// Identifies one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairKey {
    /// The task.
    pub task_id: TaskId,
    /// Index of the URL.
    pub url_idx: i64,
    /// The edge.
    pub edge_id: EdgeId,
}

/// A pair that still has to run, with what the engine needs to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPair {
    /// Which pair.
    pub key: PairKey,
    /// Prefetch or refresh.
    pub kind: TaskKind,
    /// The URL (or directory).
    pub url: String,
    /// Whether `url` is a directory (refresh).
    pub is_dir: bool,
    /// Refresh: `delete` or `invalidate`.
    pub mode: Option<String>,
    /// Whether finishing this pair may release held pairs of its task (a purge of a refresh
    /// that warms afterwards).
    pub releases: bool,
    /// The task's domain.
    pub domain: String,
    /// The domain's origin, `None` when the domain was removed since.
    pub origin: Option<Origin>,
    /// When the task was accepted, ms since the epoch.
    pub created_at: i64,
}

/// A purge an edge may not have applied (see [`crate::Store::owed_purges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedPurge {
    /// The purge pair.
    pub key: PairKey,
    /// The URL or directory.
    pub url: String,
    /// Whether `url` is a directory (a URL prefix).
    pub is_dir: bool,
    /// The task's stored mode (`delete`, `invalidate`).
    pub mode: Option<String>,
    /// Whether the pair has not ended yet (otherwise it failed, and the edge still owes it).
    pub unfinished: bool,
}

/// How a pair ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairResult {
    /// Which pair.
    pub key: PairKey,
    /// Whether it succeeded.
    pub success: bool,
    /// Attempts made.
    pub attempts: i64,
    /// Last HTTP status seen.
    pub http_status: Option<i64>,
    /// Body bytes (fetched, or removed by a refresh).
    pub bytes: Option<i64>,
    /// Refresh: cached objects the purge affected on the edge.
    pub objects: Option<i64>,
    /// Why it failed (or, on success, a note such as "deleted: nginx cannot invalidate").
    pub error: Option<String>,
    /// When it ended, ms.
    pub finished_at: i64,
    /// Its target cannot do this: the pair ends `unsupported` (then `success` is false).
    pub unsupported: bool,
    /// A refresh's success: whether the target confirmed the purge was done (`false` when it
    /// only accepted it, as a CDN without a completion to poll does).
    pub confirmed: Option<bool>,
}

impl PairResult {
    /// A failure after `attempts` attempts, ending now.
    pub fn failed(key: PairKey, attempts: i64, error: String) -> PairResult {
        PairResult {
            key,
            success: false,
            attempts,
            http_status: None,
            bytes: None,
            objects: None,
            error: Some(error),
            finished_at: precache_model::time::now_millis(),
            unsupported: false,
            confirmed: None,
        }
    }

    /// A pair its target cannot carry out, for this reason.
    pub fn unsupported(key: PairKey, reason: String) -> PairResult {
        PairResult {
            unsupported: true,
            attempts: 0,
            ..PairResult::failed(key, 0, reason)
        }
    }
}

/// A backend to create: a cache fleet (or CDN) the operator already runs.
#[derive(Debug, Clone)]
pub struct NewBackend {
    /// Unique name (not `edges`).
    pub name: String,
    /// Its kind (`varnish`, `nginx`, ...), validated by the caller.
    pub kind: String,
    /// The kind's settings, as JSON.
    pub settings: serde_json::Value,
    /// Base URLs of its targets (one per cache server), in order.
    pub targets: Vec<String>,
    /// Its credentials (sealed before they are stored); empty when it takes none.
    pub credentials: std::collections::BTreeMap<String, String>,
}

/// A registered backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRecord {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// The kind's settings.
    pub settings: serde_json::Value,
    /// Its targets: the pair target (an `edges` row) and its base URL.
    pub targets: Vec<(EdgeId, String)>,
    /// Its credentials, opened; `Err` says why they cannot be (e.g. sealed with another key).
    pub credentials: Result<std::collections::BTreeMap<String, String>, String>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

/// An account's quota for one kind, today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    /// Which quota.
    pub kind: QuotaKind,
    /// Daily limit.
    pub limit: i64,
    /// Used today.
    pub used: i64,
}

/// A task's completion callback and every delivery attempt so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// Where it is POSTed.
    pub url: String,
    /// When the next attempt is due (ms), while neither delivered nor given up.
    pub next_attempt_at: Option<i64>,
    /// When a receiver answered 2xx.
    pub delivered_at: Option<i64>,
    /// When retrying stopped.
    pub gave_up_at: Option<i64>,
    /// The attempts, in order.
    pub attempts: Vec<CallbackAttempt>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackAttempt {
    /// 1 for the first.
    pub n: i64,
    /// When it was made, ms.
    pub at: i64,
    /// The receiver's status, when it answered.
    pub http_status: Option<i64>,
    /// What went wrong, when it did.
    pub error: Option<String>,
}

/// A callback due for an attempt, claimed by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCallback {
    /// The task.
    pub task_id: TaskId,
    /// Its account (whose secret signs it).
    pub account_id: AccountId,
    /// Where to POST.
    pub url: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the first attempt was made, if one was.
    pub first_attempt_at: Option<i64>,
}
