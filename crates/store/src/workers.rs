//! Engines and their leases: which control-plane process runs which pairs.
//!
//! Every unfinished pair has an `owner`, the engine that queued it (the process that accepted its
//! task, or one that took it over). Each engine heartbeats its row in `engine_workers`; an engine
//! whose heartbeat is older than the lease is dead, and any live engine may take its pairs over,
//! in batches claimed with `FOR UPDATE SKIP LOCKED` on PostgreSQL so that several engines split a
//! dead one's backlog without waiting on each other. An engine that cannot renew its lease in
//! time must stop running pairs before the lease runs out (the caller's side of the contract,
//! `precache_tasks::lease`), so no pair runs twice at the same time.
//!
//! Times are the database's clock, so the hosts' clocks need not agree.

use std::time::Duration;

use precache_model::TaskId;
use sqlx::Row;

use crate::tasks::parse;
use crate::{Backend, Result, Store};

/// Pairs claimed from dead engines in one statement.
const TAKE_OVER_BATCH: i64 = 10_000;

/// What [`Store::take_over_pairs`] claimed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// Pairs now owned by this engine.
    pub pairs: u64,
    /// Their tasks, each once.
    pub tasks: Vec<TaskId>,
}

/// The database's clock in ms since the epoch, as an SQL expression.
fn now_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

impl Store {
    /// Registers this process's engine, alive from now.
    pub async fn register_worker(&self) -> Result<()> {
        let (worker, now) = (self.worker.to_string(), now_sql(self.backend));
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "INSERT INTO engine_workers (id, started_at, heartbeat_at) VALUES ($1, {now}, {now})"
                    ))
                    .bind(&worker)
                    .execute(&mut *connection)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Renews this engine's lease. `false` when its row is gone: another engine declared it dead
    /// and took its pairs, so it must stop running them.
    pub async fn heartbeat(&self) -> Result<bool> {
        let (worker, now) = (self.worker.to_string(), now_sql(self.backend));
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let renewed = sqlx::query(&format!(
                        "UPDATE engine_workers SET heartbeat_at = {now} WHERE id = $1 AND heartbeat_at > 0"
                    ))
                    .bind(&worker)
                    .execute(&mut *connection)
                    .await?;
                    Ok(renewed.rows_affected() == 1)
                })
            })
            .await
    }

    /// Claims the unfinished pairs of engines whose lease (`lease`) ran out, or, with
    /// `everyone`, of every other engine (a process that owns the database by other means, like
    /// `serve` on its locked data dir). Running pairs come back waiting; held ones stay held. An
    /// engine with nothing left is forgotten.
    pub async fn take_over_pairs(&self, lease: Duration, everyone: bool) -> Result<TakenOver> {
        let (worker, backend) = (self.worker.to_string(), self.backend);
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let now = now_sql(backend);
                    let dead = sqlx::query(&format!(
                        "SELECT id FROM engine_workers WHERE id <> $1 AND ($2 = 1 OR heartbeat_at < {now} - $3)"
                    ))
                    .bind(&worker)
                    .bind(i64::from(everyone))
                    .bind(lease_ms)
                    .fetch_all(&mut *connection)
                    .await?;
                    let skip_locked = match backend {
                        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
                        Backend::Sqlite => "",
                    };
                    let mut taken = TakenOver::default();
                    for row in dead {
                        let dead: String = row.try_get("id")?;
                        let claimed = sqlx::query(&format!(
                            "UPDATE task_pairs SET owner = $1, \
                                    status = CASE WHEN status = 'running' THEN 'waiting' ELSE status END \
                             WHERE (task_id, url_idx, edge_id) IN ( \
                                SELECT task_id, url_idx, edge_id FROM task_pairs \
                                WHERE owner = $2 AND status IN ('waiting', 'running', 'held') \
                                LIMIT $3 {skip_locked}) \
                             RETURNING task_id"
                        ))
                        .bind(&worker)
                        .bind(&dead)
                        .bind(TAKE_OVER_BATCH)
                        .fetch_all(&mut *connection)
                        .await?;
                        taken.pairs += claimed.len() as u64;
                        for pair in &claimed {
                            let task: TaskId = parse(&pair.try_get::<String, _>("task_id")?)?;
                            if !taken.tasks.contains(&task) {
                                taken.tasks.push(task);
                            }
                        }
                        if (claimed.len() as i64) < TAKE_OVER_BATCH {
                            sqlx::query(
                                "DELETE FROM engine_workers WHERE id = $1 AND NOT EXISTS ( \
                                    SELECT 1 FROM task_pairs WHERE owner = $1 \
                                    AND status IN ('waiting', 'running', 'held'))",
                            )
                            .bind(&dead)
                            .execute(&mut *connection)
                            .await?;
                        }
                    }
                    Ok(taken)
                })
            })
            .await
    }

    /// On a clean stop: this engine's running pairs go back to waiting and its lease ends now,
    /// so a live engine takes them over at its next round instead of after the lease.
    pub async fn retire_worker(&self) -> Result<()> {
        let worker = self.worker.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE task_pairs SET status = 'waiting' WHERE owner = $1 AND status = 'running'",
                    )
                    .bind(&worker)
                    .execute(&mut *connection)
                    .await?;
                    sqlx::query("UPDATE engine_workers SET heartbeat_at = 0 WHERE id = $1")
                        .bind(&worker)
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            })
            .await
    }
}
