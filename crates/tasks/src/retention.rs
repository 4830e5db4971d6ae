//! Retention: ended tasks older than `--task-retention` and audit entries older than
//! `--audit-retention` are deleted in the background, so that under a steady load the database
//! stops growing once the windows are full. Every control-plane process sweeps; on a shared
//! PostgreSQL two sweeps of one batch simply find fewer rows.

use std::time::Duration;

use precache_model::time::now_millis;
use precache_store::Store;
use tokio::sync::watch;

/// Tasks deleted per transaction: short enough that the group-commit writer's other work (task
/// submissions, pair outcomes) never waits long behind a sweep.
const BATCH: i64 = 200;

/// How often to sweep for a retention window: a few times per window, between 1 s and 10 min.
pub fn sweep_period(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// How long what is kept for a while is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Ended tasks, from their end.
    pub tasks: Duration,
    /// Audit log entries.
    pub audit: Duration,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Deletes ended tasks and audit entries past their windows until `stopped`: one sweep at
/// start, then one every [`sweep_period`] of the shorter window.
pub async fn run_retention(store: Store, retention: Retention, mut stopped: watch::Receiver<bool>) {
    loop {
        match store
            .delete_audit_before(now_millis().saturating_sub(millis(retention.audit)))
            .await
        {
            Ok(0) => {}
            Ok(entries) => {
                tracing::info!(entries, "deleted audit log entries past their retention")
            }
            Err(error) => {
                tracing::warn!(%error, "could not delete audit log entries past their retention; trying again later")
            }
        }
        let ended_before = now_millis().saturating_sub(millis(retention.tasks));
        let mut deleted = 0;
        loop {
            match store.delete_ended_tasks(ended_before, BATCH).await {
                Ok(n) => {
                    deleted += n;
                    metrics::counter!("precache_tasks_deleted_total").increment(n);
                    if n < BATCH as u64 || *stopped.borrow() {
                        break;
                    }
                    // Let the writer's other callers in between batches.
                    tokio::task::yield_now().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not delete tasks past their retention; trying again later");
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(
                tasks = deleted,
                retention = %humantime::format_duration(retention.tasks),
                "deleted tasks past their retention"
            );
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(sweep_period(retention.tasks.min(retention.audit))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_swept_a_few_times_within_bounds() {
        assert_eq!(sweep_period(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(
            sweep_period(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
        assert_eq!(
            sweep_period(Duration::from_secs(90 * 86_400)),
            Duration::from_secs(600)
        );
    }
}
