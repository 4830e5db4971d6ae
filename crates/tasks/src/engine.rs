//! The dispatcher: per-origin queues, bounded concurrency, fair turns between origins.
//!
//! Pairs arrive from the API (right after their task is committed) and, at start, from the
//! store (every pair a previous run left unfinished). Each origin has its own queue; the
//! dispatcher hands out work round-robin over the origins that have both work and a free slot,
//! so one release with thousands of URLs on one origin neither floods that origin nor starves
//! the others.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use precache_model::edge_protocol::{OriginLimits, PurgeMode, DRY_RUN_MODE};
use precache_model::time::now_millis;
use precache_model::{Origin, TaskId, TaskKind};
use precache_store::{PairKey, PairResult, PendingPair, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::pair_runner::{record_pair, run_pair, Ran};
use crate::queues::Queues;
use crate::{EdgeDirectory, ProgressBoard};

/// Limits and retry policy of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Pairs in flight at once, over all origins.
    pub concurrency: usize,
    /// Pairs in flight at once against one origin.
    pub per_origin: usize,
    /// Attempts per pair (the first one included).
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each further one.
    pub backoff: Duration,
    /// How long after its task was accepted a pair may wait for its edge to come back; then it
    /// fails with "edge unreachable", so the task still ends.
    pub edge_deadline: Duration,
}

/// One pair to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairJob {
    /// Which pair.
    pub key: PairKey,
    /// What to do.
    pub kind: TaskKind,
    /// The URL (or, for a refresh, possibly a directory).
    pub url: String,
    /// Whether `url` is a directory (a URL prefix).
    pub is_dir: bool,
    /// Refresh: what the purge does.
    pub mode: PurgeMode,
    /// Refresh: only count what the purge would affect.
    pub dry_run: bool,
    /// Finishing this pair may release the task's held warm phase.
    pub releases: bool,
    /// The task's domain.
    pub domain: String,
    /// Where the domain's origin is; `None` when the domain was unregistered since.
    pub origin: Option<Origin>,
    /// When the task was accepted, ms since the epoch.
    pub created_at: i64,
    /// The domain's origin limits, filled in by the engine when the pair arrives.
    pub origin_limits: OriginLimits,
    /// Set by the engine when the pair arrives, for a target whose kind gathers pairs into
    /// vendor calls: how many of the target's pairs may wait at once (outside the engine's
    /// slots).
    pub gathered: Option<usize>,
    /// Set by the engine when the pair waited for its edge to come back: a purge may then have
    /// been applied by the edge itself on its return (its catch-up), and is not run again.
    pub waited_for_edge: bool,
}

impl From<PendingPair> for PairJob {
    fn from(pending: PendingPair) -> PairJob {
        PairJob {
            key: pending.key,
            kind: pending.kind,
            url: pending.url,
            is_dir: pending.is_dir,
            mode: pending
                .mode
                .as_deref()
                .and_then(PurgeMode::from_name)
                .unwrap_or_default(),
            dry_run: pending.mode.as_deref() == Some(DRY_RUN_MODE),
            releases: pending.releases,
            domain: pending.domain,
            origin: pending.origin,
            created_at: pending.created_at,
            origin_limits: OriginLimits::default(),
            gathered: None,
            waited_for_edge: false,
        }
    }
}

/// While submissions are being accepted, the engine starts pairs only up to this many in
/// flight: on a small machine the API's answers come first, and the work it accepted runs at
/// full speed as soon as the burst is over (the total time to `done` hardly changes, since
/// the same CPU does the same work).
const IN_FLIGHT_WHILE_ADMITTING: usize = 2;
/// How often the engine looks again whether a burst of submissions is over.
const ADMISSION_RECHECK: Duration = Duration::from_millis(20);
/// How often parked pairs (their edge was down) look whether their edge is back.
const PARKED_RECHECK: Duration = Duration::from_millis(500);

/// Hands work to the engine. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    queue: mpsc::UnboundedSender<Vec<PairJob>>,
    admitting: Arc<AtomicUsize>,
    cancelled: Cancelled,
}

/// Tasks cancelled while this process runs: their queued pairs are dropped, not run (the store
/// has already marked them cancelled).
type Cancelled = Arc<std::sync::Mutex<HashSet<TaskId>>>;

/// Held by the API while it accepts a submission; see [`EngineHandle::admitting`].
pub struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EngineHandle {
    /// Stops the engine from starting the task's queued pairs.
    pub fn cancel(&self, task_id: TaskId) {
        self.cancelled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(task_id);
    }

    /// Tells the engine a submission is being accepted until the guard is dropped.
    pub fn admitting(&self) -> Admission {
        self.admitting.fetch_add(1, Ordering::Relaxed);
        Admission(Arc::clone(&self.admitting))
    }

    /// Queues pairs whose task is committed. The queue is unbounded on purpose: the store already
    /// bounds what can be accepted, and a committed pair must never be dropped.
    pub fn enqueue(&self, jobs: Vec<PairJob>) {
        if !jobs.is_empty() && self.queue.send(jobs).is_err() {
            // Only during shutdown; the pairs are in the store and run at the next start.
            tracing::debug!("engine stopped; pairs stay queued in the store");
        }
    }
}

/// What every running pair needs.
pub(crate) struct EngineContext {
    /// The engine's own queue, for pairs released by the work it does.
    pub(crate) requeue: mpsc::UnboundedSender<Vec<PairJob>>,
    pub(crate) store: Store,
    pub(crate) edges: Arc<EdgeDirectory>,
    pub(crate) config: EngineConfig,
    pub(crate) progress: Arc<ProgressBoard>,
}

/// The engine; [`Engine::run`] drives it until shutdown.
pub struct Engine {
    context: Arc<EngineContext>,
    receiver: mpsc::UnboundedReceiver<Vec<PairJob>>,
    admitting: Arc<AtomicUsize>,
    cancelled: Cancelled,
}

impl Engine {
    /// A new engine and the handle to feed it.
    pub fn new(
        store: Store,
        edges: Arc<EdgeDirectory>,
        config: EngineConfig,
        progress: Arc<ProgressBoard>,
    ) -> (Engine, EngineHandle) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let context = Arc::new(EngineContext {
            requeue: queue.clone(),
            store,
            edges,
            config,
            progress,
        });
        let admitting = Arc::new(AtomicUsize::new(0));
        let cancelled = Cancelled::default();
        (
            Engine {
                context,
                receiver,
                admitting: Arc::clone(&admitting),
                cancelled: Arc::clone(&cancelled),
            },
            EngineHandle {
                queue,
                admitting,
                cancelled,
            },
        )
    }

    /// Dispatches pairs until `shutdown` turns true, then abandons the pairs in flight: they
    /// stay `running` in the store and are handed back at the next start (or taken over by
    /// another engine). Outcomes already known are still recorded.
    ///
    /// A pair holds its origin's slot while its edge works on it, not while its outcome is
    /// committed: the origin is done with it by then, and the next pair may start. Purges take
    /// no origin slot (they never reach the origin); they queue per edge and start first, even
    /// while submissions are being admitted, since a refresh's latency is all they are about.
    /// A pair whose edge is down waits aside ("parked") until the edge is back or its deadline.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut queues = Queues::default();
        let mut in_flight: JoinSet<(String, Ran, PairJob)> = JoinSet::new();
        let mut recording: JoinSet<()> = JoinSet::new();
        let config = self.context.config.clone();
        let mut recheck = tokio::time::interval(ADMISSION_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut parked_check = tokio::time::interval(PARKED_RECHECK);
        parked_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let concurrency = config.concurrency.max(1);
        // Registered once: the loop turns once per event, thousands of times a second in a drain.
        let gauge =
            |state: &'static str| metrics::gauge!("precache_engine_pairs", "state" => state);
        let (held_gauge, in_flight_gauge, parked_gauge) =
            (gauge("held"), gauge("in_flight"), gauge("parked"));
        // Pairs waiting on vendor calls: in `in_flight`, but holding none of its slots.
        let mut gathered_running: usize = 0;
        loop {
            for kind in [TaskKind::Refresh, TaskKind::Prefetch] {
                while let Some((queue_key, job)) = queues.next_gathered(kind) {
                    if self.is_cancelled(&job) {
                        queues.finished(kind, &queue_key);
                        queues.forget(job.key);
                        continue;
                    }
                    let Some(job) = self.hold_for_order(&mut queues, job) else {
                        queues.finished(kind, &queue_key);
                        continue;
                    };
                    gathered_running += 1;
                    let context = Arc::clone(&self.context);
                    in_flight.spawn(async move {
                        let ran = run_pair(&context, &job).await;
                        (queue_key, ran, job)
                    });
                }
            }
            let fetch_limit = if self.admitting.load(Ordering::Relaxed) > 0 {
                IN_FLIGHT_WHILE_ADMITTING.min(concurrency)
            } else {
                concurrency
            };
            for (kind, limit) in [
                (TaskKind::Refresh, concurrency),
                (TaskKind::Prefetch, fetch_limit),
            ] {
                while in_flight.len() - gathered_running < limit {
                    let Some((queue_key, job)) = queues.next(kind, config.per_origin.max(1)) else {
                        break;
                    };
                    if self.is_cancelled(&job) {
                        queues.finished(kind, &queue_key);
                        queues.forget(job.key);
                        continue;
                    }
                    if !self.context.edges.is_up(job.key.edge_id) {
                        queues.finished(kind, &queue_key);
                        queues.park(job);
                        continue;
                    }
                    let Some(job) = self.hold_for_order(&mut queues, job) else {
                        queues.finished(kind, &queue_key);
                        continue;
                    };
                    let context = Arc::clone(&self.context);
                    in_flight.spawn(async move {
                        let ran = run_pair(&context, &job).await;
                        (queue_key, ran, job)
                    });
                }
            }
            let (held, parked) = queues.counts();
            held_gauge.set(held as f64);
            in_flight_gauge.set(in_flight.len() as f64);
            parked_gauge.set(parked as f64);
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                jobs = self.receiver.recv() => match jobs {
                    Some(jobs) => {
                        for mut job in jobs {
                            job.origin_limits = self.context.edges.origin_limits(&job.domain);
                            job.gathered = self.context.edges.gathers(job.key.edge_id);
                            queues.push(job);
                        }
                    }
                    None => break,
                },
                Some(finished) = in_flight.join_next() => match finished {
                    Ok((queue_key, ran, job)) => {
                        if job.gathered.is_some() {
                            gathered_running = gathered_running.saturating_sub(1);
                        }
                        queues.finished(job.kind, &queue_key);
                        if ran.edge_unreachable && !self.past_deadline(&job) {
                            queues.park(job);
                            continue;
                        }
                        queues.forget(job.key);
                        self.record(&mut recording, ran.result, job.releases);
                    }
                    Err(error) => tracing::error!(%error, "a pair task panicked; its pair is retried at the next start"),
                },
                Some(_) = recording.join_next() => {}
                _ = parked_check.tick(), if queues.has_parked() => {
                    for job in queues.take_parked() {
                        if self.is_cancelled(&job) {
                            queues.forget(job.key);
                        } else if self.context.edges.is_up(job.key.edge_id) {
                            queues.requeue(PairJob { waited_for_edge: true, ..job });
                        } else if self.past_deadline(&job) {
                            queues.forget(job.key);
                            let result = self.unreachable_result(&job);
                            self.record(&mut recording, result, job.releases);
                        } else {
                            queues.park(job);
                        }
                    }
                }
                // Pairs may wait for a burst of submissions to end; look again soon.
                _ = recheck.tick(), if in_flight.len() < concurrency && queues.has_fetches() => {}
            }
        }
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
        while recording.join_next().await.is_some() {}
    }

    /// Gives `job` back to start now, or holds it in `queues` behind a pair that must be done
    /// first. A child edge is purged after its parent: until then, a miss on the child could
    /// fetch the old object back from the parent. A prefetch waits for the earlier purges of
    /// its URL on its edge (see `purge_order`).
    fn hold_for_order(&self, queues: &mut Queues, job: PairJob) -> Option<PairJob> {
        match job.kind {
            TaskKind::Refresh => match self.context.edges.parent_of(job.key.edge_id) {
                Some(parent) => queues.hold_behind(parent, job),
                None => Some(job),
            },
            TaskKind::Prefetch => queues.hold_behind_purges(job),
        }
    }

    fn is_cancelled(&self, job: &PairJob) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(&job.key.task_id)
    }

    fn past_deadline(&self, job: &PairJob) -> bool {
        let deadline =
            i64::try_from(self.context.config.edge_deadline.as_millis()).unwrap_or(i64::MAX);
        now_millis().saturating_sub(job.created_at) >= deadline
    }

    fn unreachable_result(&self, job: &PairJob) -> PairResult {
        let edge = self
            .context
            .edges
            .target(job.key.edge_id)
            .map_or_else(|| job.key.edge_id.to_string(), |target| target.name);
        let deadline = humanize(self.context.config.edge_deadline);
        PairResult::failed(
            job.key,
            0,
            format!("edge {edge} unreachable for {deadline} after the task was accepted"),
        )
    }

    fn record(&self, recording: &mut JoinSet<()>, result: PairResult, releases: bool) {
        let context = Arc::clone(&self.context);
        recording.spawn(async move {
            let task_id = result.key.task_id;
            record_pair(&context, result).await;
            if releases {
                release_held(&context, task_id).await;
            }
        });
    }
}

/// "10m", "90s": a deadline as operators configure it.
fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Hands the task's warm phase to the engine once its purges have all finished (the store
/// decides, so only the last purge's outcome releases anything).
async fn release_held(context: &EngineContext, task_id: TaskId) {
    match context.store.release_held(task_id).await {
        Ok(released) if !released.is_empty() => {
            let jobs = released.into_iter().map(PairJob::from).collect();
            let _ = context.requeue.send(jobs);
        }
        Ok(_) => {}
        // Left held; `serve` releases held pairs at its next start.
        Err(error) => tracing::warn!(%error, %task_id, "could not release a task's warm phase"),
    }
}
