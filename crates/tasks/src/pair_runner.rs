//! Running one (URL, target) pair on its backend: attempts with backoff, then a durable
//! outcome.

use std::time::Duration;

use precache_model::edge_protocol::PairOutcome;
use precache_model::time::now_millis;
use precache_model::TaskKind;
use precache_store::{Backend as StoreBackend, PairResult};

use crate::backends::{mode_note, unsupported_reason, Away, Backend, Target};
use crate::engine::EngineContext;
use crate::PairJob;

/// Longest wait between two tries to record an outcome while the store is unavailable.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

/// A pair's run: its outcome, unless its edge could not be reached at all.
pub(crate) struct Ran {
    /// The outcome to record.
    pub(crate) result: PairResult,
    /// The edge did not answer: the engine parks the pair until the edge is back (or its
    /// deadline) instead of recording `result`.
    pub(crate) edge_unreachable: bool,
}

/// One attempt; `Err` when the target is an edge that did not answer (the pair waits for it).
async fn attempt(
    context: &EngineContext,
    job: &PairJob,
    backend: &dyn Backend,
    target: &Target,
) -> Result<PairOutcome, Away> {
    if job.origin.is_none() {
        return Ok(PairOutcome::failed(
            None,
            format!("domain {} is no longer registered", job.domain),
            false,
        ));
    }
    let outcome = match job.kind {
        TaskKind::Prefetch => {
            backend
                .prefetch(
                    target,
                    job,
                    bandwidth_share(context, job),
                    &|bytes, total| context.progress.report(job.key, bytes, total),
                )
                .await
        }
        TaskKind::Refresh => backend.purge(target, job).await,
    };
    if let Err(away) = &outcome {
        context.edges.mark_down(job.key.edge_id, away.to_string());
    }
    outcome
}

/// A pair's share of its domain's origin bandwidth: the cap split evenly between the domain's
/// concurrent fetch slots, so the domain's prefetches together stay under it.
fn bandwidth_share(context: &EngineContext, job: &PairJob) -> Option<u64> {
    let limits = job.origin_limits;
    let slots = limits
        .max_concurrent_fetches
        .map_or(context.config.per_origin, |cap| cap as usize)
        .max(1);
    limits
        .max_bandwidth
        .map(|bandwidth| (bandwidth / slots as u64).max(1))
}

/// Whether a purge that waited for its edge was applied by the edge itself when it came back
/// (the store then shows the pair ended). On a store error it is run again, as before.
async fn applied_on_return(context: &EngineContext, job: &PairJob) -> bool {
    context
        .store
        .pair_ended(job.key)
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "could not look whether a purge was applied on the edge's return");
            false
        })
}

/// How often a prefetch pair looks again whether another engine's earlier purge of its URL is
/// done.
const PURGE_ELSEWHERE_RECHECK: Duration = Duration::from_millis(200);

/// With several engines (PostgreSQL), an earlier refresh of the URL may be another engine's
/// work, out of this engine's queues (`purge_order`): wait until the store shows it done, so
/// its purge cannot remove the copy this prefetch is about to put on the edge. Bounded by the
/// engine's edge deadline from the task's acceptance; then the prefetch goes ahead.
async fn wait_for_purges_elsewhere(context: &EngineContext, job: &PairJob) {
    let deadline = i64::try_from(context.config.edge_deadline.as_millis()).unwrap_or(i64::MAX);
    loop {
        match context
            .store
            .purge_pending_elsewhere(job.key.edge_id, &job.url, job.created_at)
            .await
        {
            Ok(false) => return,
            Ok(true) if now_millis().saturating_sub(job.created_at) < deadline => {
                tokio::time::sleep(PURGE_ELSEWHERE_RECHECK).await;
            }
            Ok(true) => {
                tracing::warn!(url = %job.url, "an earlier purge of this URL did not finish in time; prefetching anyway");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, url = %job.url, "could not look for earlier purges of this URL; prefetching anyway");
                return;
            }
        }
    }
}

/// Runs a pair's attempts; the outcome still has to be recorded ([`record_pair`]).
#[must_use = "the outcome must be recorded"]
pub(crate) async fn run_pair(context: &EngineContext, job: &PairJob) -> Ran {
    if job.kind == TaskKind::Prefetch && context.store.backend() == StoreBackend::Postgres {
        wait_for_purges_elsewhere(context, job).await;
    }
    if job.kind == TaskKind::Refresh && job.waited_for_edge && applied_on_return(context, job).await
    {
        // Recording it again changes nothing; purging again would remove what was fetched
        // since (another process's prefetch may already have waited for this very purge).
        return Ran {
            result: PairResult::failed(job.key, 0, "applied by the edge on its return".into()),
            edge_unreachable: false,
        };
    }
    let started = std::time::Instant::now();
    if let Err(error) = context.store.pairs_started(vec![job.key], now_millis()) {
        tracing::warn!(%error, "could not mark a pair running; running it anyway");
    }
    let Some((backend, target)) = context.edges.runner(job.key.edge_id) else {
        return Ran {
            result: PairResult::failed(
                job.key,
                0,
                format!(
                    "target {} is no longer registered (edge revoked or backend deleted)",
                    job.key.edge_id
                ),
            ),
            edge_unreachable: false,
        };
    };
    let capabilities = backend.capabilities();
    if let Some(reason) = unsupported_reason(backend.kind(), capabilities, job) {
        context.progress.finished(&job.key);
        metrics::counter!("precache_pairs_finished_total", "kind" => job.kind.as_str(),
            "outcome" => "unsupported")
        .increment(1);
        return Ran {
            result: PairResult::unsupported(job.key, reason),
            edge_unreachable: false,
        };
    }
    let mut attempts: u32 = 0;
    let outcome = loop {
        attempts += 1;
        let outcome = match attempt(context, job, backend.as_ref(), &target).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::debug!(url = %job.url, %error, "edge unreachable; the pair waits for it");
                return Ran {
                    result: PairResult::failed(job.key, i64::from(attempts), error.to_string()),
                    edge_unreachable: true,
                };
            }
        };
        if outcome.success || !outcome.retryable || attempts >= context.config.attempts.max(1) {
            break outcome;
        }
        let backoff = context
            .config
            .backoff
            .saturating_mul(1 << (attempts - 1).min(16));
        tracing::debug!(url = %job.url, attempts, error = ?outcome.error, ?backoff, "retrying a pair");
        tokio::time::sleep(backoff).await;
    };
    context.progress.finished(&job.key);
    let kind = job.kind.as_str();
    metrics::histogram!("precache_pair_duration_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("precache_pairs_finished_total", "kind" => kind,
        "outcome" => if outcome.success { "success" } else { "failed" })
    .increment(1);
    let result = PairResult {
        key: job.key,
        success: outcome.success,
        attempts: i64::from(attempts),
        http_status: outcome.http_status.map(i64::from),
        bytes: Some(outcome.bytes as i64),
        objects: outcome.objects.map(|objects| objects as i64),
        error: match outcome.error {
            Some(error) if attempts > 1 => Some(format!("{error} (after {attempts} attempts)")),
            Some(error) => Some(error),
            None if outcome.success => mode_note(backend.kind(), capabilities, job),
            None => None,
        },
        finished_at: now_millis(),
        unsupported: false,
        confirmed: (job.kind == TaskKind::Refresh && outcome.success)
            .then_some(capabilities.confirms),
    };
    Ran {
        result,
        edge_unreachable: false,
    }
}

/// Records a pair's outcome, retrying while the store is unavailable (a full disk, a database
/// restarting) for as long as it takes: the work is done, and a pair left `running` would keep
/// its task from ending until the next start. The engine's lease bounds the wait in the
/// scale-out mode: an engine that cannot reach the database stops before its pairs are taken.
pub(crate) async fn record_pair(context: &EngineContext, result: PairResult) {
    for record_attempt in 1u32.. {
        match context.store.pair_finished(result.clone()).await {
            Ok(Some(task)) => {
                metrics::counter!("precache_tasks_finished_total",
                    "kind" => task.kind.as_str(), "status" => task.status.as_str())
                .increment(1);
                if let Some(finished) = task.finished_at {
                    let seconds = (finished - task.created_at).max(0) as f64 / 1000.0;
                    metrics::histogram!("precache_task_duration_seconds", "kind" => task.kind.as_str())
                        .record(seconds);
                }
                tracing::info!(task = %task.id, status = %task.status, success = task.n_success, pairs = task.n_pairs, "task finished");
                return;
            }
            Ok(None) => return,
            Err(error)
                if !matches!(
                    error,
                    precache_store::Error::Unavailable(_) | precache_store::Error::Overloaded
                ) =>
            {
                // Not a passing condition: the pair stays `running` and is run again at the
                // next start.
                tracing::error!(%error, task = %result.key.task_id, "could not record a pair's outcome");
                return;
            }
            Err(error) => {
                if record_attempt == 1 || record_attempt % 30 == 0 {
                    tracing::warn!(%error, task = %result.key.task_id, record_attempt,
                        "could not record a pair's outcome; retrying");
                }
                let wait = Duration::from_millis(200 * u64::from(record_attempt.min(10)));
                tokio::time::sleep(wait.min(RECORD_RETRY_MAX)).await;
            }
        }
    }
}
