//! The task engine's view of the store: pairs to run, and recording how they went.

use precache_model::{EdgeId, Origin, PairStatus, TaskStatus};
use sqlx::{AnyConnection, Row};

use crate::tasks::{decode_summary, parse, Params};
use crate::{Error, OwedPurge, PairKey, PairResult, PendingPair, Result, Store, TaskSummary};

impl Store {
    /// Every waiting pair this engine owns, oldest task first, with what is needed to run it.
    pub async fn pending_pairs(&self) -> Result<Vec<PendingPair>> {
        let rows = sqlx::query(&format!(
            "{PENDING_SELECT} WHERE p.owner = $1 AND p.status = 'waiting' \
             ORDER BY t.created_at, p.task_id, p.url_idx, p.edge_id"
        ))
        .bind(self.worker_id())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_pending).collect()
    }

    /// The waiting pairs this engine owns of some tasks (those it just took over).
    pub async fn pending_pairs_of(
        &self,
        tasks: &[precache_model::TaskId],
    ) -> Result<Vec<PendingPair>> {
        let mut pending = Vec::new();
        for task in tasks {
            let rows = sqlx::query(&format!(
                "{PENDING_SELECT} WHERE p.task_id = $1 AND p.owner = $2 AND p.status = 'waiting' \
                 ORDER BY p.url_idx, p.edge_id"
            ))
            .bind(task.to_string())
            .bind(self.worker_id())
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                pending.push(decode_pending(row)?);
            }
        }
        Ok(pending)
    }

    /// The purges edge `edge` may not have applied (oldest first, at most `limit`): pairs of
    /// refreshes still to run on it, and those that failed on it (it was down, cut off, or
    /// answered an error). An edge applies them before it serves from its cache again.
    pub async fn owed_purges(&self, edge: EdgeId, limit: i64) -> Result<Vec<OwedPurge>> {
        let rows = sqlx::query(
            "SELECT p.task_id, p.url_idx, p.status, u.url, u.is_dir, t.mode \
             FROM task_pairs p \
             JOIN tasks t ON t.id = p.task_id \
             JOIN task_urls u ON u.task_id = p.task_id AND u.url_idx = p.url_idx \
             WHERE p.edge_id = $1 AND p.owed = 1 \
             ORDER BY t.created_at, p.task_id, p.url_idx LIMIT $2",
        )
        .bind(edge.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let task_id: String = row.try_get("task_id")?;
                let status: String = row.try_get("status")?;
                Ok(OwedPurge {
                    key: PairKey {
                        task_id: parse(&task_id)?,
                        url_idx: row.try_get("url_idx")?,
                        edge_id: edge,
                    },
                    url: row.try_get("url")?,
                    is_dir: row.try_get::<i64, _>("is_dir")? != 0,
                    mode: row.try_get("mode")?,
                    unfinished: !parse::<PairStatus, _>(&status)?.is_final(),
                })
            })
            .collect()
    }

    /// Records how far running prefetch pairs are: bytes fetched so far and the expected size.
    /// Pairs that ended meanwhile keep their outcome.
    pub async fn record_progress(&self, progress: Vec<(PairKey, i64, Option<i64>)>) -> Result<()> {
        if progress.is_empty() {
            return Ok(());
        }
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    for (key, bytes, expected) in progress {
                        sqlx::query(
                            "UPDATE task_pairs SET bytes = $1, expected_bytes = $2 \
                             WHERE task_id = $3 AND url_idx = $4 AND edge_id = $5 AND status = 'running'",
                        )
                        .bind(bytes)
                        .bind(expected)
                        .bind(key.task_id.to_string())
                        .bind(key.url_idx)
                        .bind(key.edge_id.0)
                        .execute(&mut *connection)
                        .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Whether a purge of a task accepted before `before` (ms) is still owed to edge `edge`.
    pub async fn owes_purges_since(&self, edge: EdgeId, before: i64) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS owed FROM task_pairs p JOIN tasks t ON t.id = p.task_id \
             WHERE p.edge_id = $1 AND p.owed = 1 AND t.created_at < $2 LIMIT 1",
        )
        .bind(edge.0)
        .bind(before)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Whether the pair has ended (with any outcome): a purge an edge applied on its own when it
    /// came back ([`Store::purges_confirmed`]) has, though the engine still holds it.
    pub async fn pair_ended(&self, key: PairKey) -> Result<bool> {
        let row = sqlx::query(
            "SELECT status FROM task_pairs WHERE task_id = $1 AND url_idx = $2 AND edge_id = $3",
        )
        .bind(key.task_id.to_string())
        .bind(key.url_idx)
        .bind(key.edge_id.0)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                Ok(parse::<PairStatus, _>(&row.try_get::<String, _>("status")?)?.is_final())
            }
            None => Ok(true),
        }
    }

    /// Whether another engine still has to run a purge of `url` (the URL itself, or a directory
    /// holding it) on edge `edge`, of a refresh accepted at or before `accepted_at` (ms). A
    /// prefetch of the URL on that edge waits for it, so the purge cannot remove its copy.
    pub async fn purge_pending_elsewhere(
        &self,
        edge: EdgeId,
        url: &str,
        accepted_at: i64,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS pending FROM task_pairs p JOIN tasks t ON t.id = p.task_id \
             JOIN task_urls u ON u.task_id = p.task_id AND u.url_idx = p.url_idx \
             WHERE p.edge_id = $1 AND p.owed = 1 AND p.status IN ('waiting', 'running') \
             AND p.owner <> $2 AND t.created_at <= $3 \
             AND (u.url = $4 OR (u.is_dir = 1 AND substr($4, 1, length(u.url)) = u.url)) LIMIT 1",
        )
        .bind(edge.0)
        .bind(self.worker_id())
        .bind(accepted_at)
        .bind(url)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Records purges an edge confirmed on its own (its catch-up): pairs still unfinished end
    /// with these outcomes, and none of them is owed any more.
    pub async fn purges_confirmed(&self, confirmed: Vec<PairResult>) -> Result<()> {
        for result in &confirmed {
            self.pair_finished(result.clone()).await?;
        }
        let keys: Vec<PairKey> = confirmed.into_iter().map(|result| result.key).collect();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    for key in keys {
                        sqlx::query(
                            "UPDATE task_pairs SET owed = 0 \
                             WHERE task_id = $1 AND url_idx = $2 AND edge_id = $3",
                        )
                        .bind(key.task_id.to_string())
                        .bind(key.url_idx)
                        .bind(key.edge_id.0)
                        .execute(&mut *connection)
                        .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Releases the held pairs of task `id` (its warm phase) if every pair of its earlier phase
    /// has finished; returns them, now waiting, for the engine.
    pub async fn release_held(&self, id: precache_model::TaskId) -> Result<Vec<PendingPair>> {
        let worker = self.worker_id().to_string();
        let released = self
            .writer
            .run(move |connection| {
                Box::pin(async move {
                    let id = id.to_string();
                    let released = sqlx::query(RELEASE_HELD)
                        .bind(&id)
                        .bind(&worker)
                        .execute(&mut *connection)
                        .await?;
                    Ok(released.rows_affected())
                })
            })
            .await?;
        if released == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "{PENDING_SELECT} WHERE p.task_id = $1 AND p.status = 'waiting' AND u.phase = 1 \
             ORDER BY p.url_idx, p.edge_id"
        ))
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_pending).collect()
    }

    /// Releases the held pairs this engine owns of every task whose earlier phase finished
    /// before a crash (of this engine or of the one it took them from) could release them.
    pub async fn release_all_held(&self) -> Result<u64> {
        let worker = self.worker_id().to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let tasks = sqlx::query(
                        "SELECT DISTINCT task_id FROM task_pairs WHERE owner = $1 AND status = 'held'",
                    )
                    .bind(&worker)
                    .fetch_all(&mut *connection)
                    .await?;
                    let mut released = 0;
                    for task in tasks {
                        let id: String = task.try_get("task_id")?;
                        released += sqlx::query(RELEASE_HELD)
                            .bind(&id)
                            .bind(&worker)
                            .execute(&mut *connection)
                            .await?
                            .rows_affected();
                    }
                    Ok(released)
                })
            })
            .await
    }

    /// Cancels the account's task `id` of this kind: its pairs not started yet end `cancelled`,
    /// running ones finish, and the task ends `cancelled` once they have. Returns how many pairs
    /// this call cancelled; `None` for no such task of the account. A task that already ended is
    /// left unchanged.
    pub async fn cancel_task(
        &self,
        account_id: precache_model::AccountId,
        id: precache_model::TaskId,
        kind: precache_model::TaskKind,
        at: i64,
    ) -> Result<Option<i64>> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let id = id.to_string();
                    let owned = sqlx::query(
                        "SELECT status FROM tasks WHERE id = $1 AND account_id = $2 AND kind = $3",
                    )
                    .bind(&id)
                    .bind(account_id.0)
                    .bind(kind.as_str())
                    .fetch_optional(&mut *connection)
                    .await?;
                    let Some(owned) = owned else {
                        return Ok(None);
                    };
                    let status: String = owned.try_get("status")?;
                    let mut cancelled = 0;
                    if !parse::<TaskStatus, _>(&status)?.is_final() {
                        cancelled = sqlx::query(
                            "UPDATE task_pairs SET status = 'cancelled', owed = 0, finished_at = $1 \
                             WHERE task_id = $2 AND status IN ('waiting', 'held')",
                        )
                        .bind(at)
                        .bind(&id)
                        .execute(&mut *connection)
                        .await?
                        .rows_affected() as i64;
                        sqlx::query(&format!(
                            "UPDATE tasks SET n_finished = n_finished + $1, \
                                    cancelled_at = COALESCE(cancelled_at, $2), \
                                    status = CASE WHEN n_finished + $1 >= n_pairs THEN '{cancelled}' ELSE status END, \
                                    finished_at = CASE WHEN n_finished + $1 >= n_pairs THEN $2 ELSE finished_at END \
                             WHERE id = $3",
                            cancelled = TaskStatus::Cancelled.as_str(),
                        ))
                        .bind(cancelled)
                        .bind(at)
                        .bind(&id)
                        .execute(&mut *connection)
                        .await?;
                    }
                    Ok(Some(cancelled))
                })
            })
            .await
    }

    /// Marks pairs as running (their first attempt started at `started_at`) and their tasks too.
    /// Not waited for: it is written with the writer's next batch.
    pub fn pairs_started(&self, keys: Vec<PairKey>, started_at: i64) -> Result<()> {
        self.writer.started(keys, started_at)
    }

    /// Records how a pair ended and advances its task; returns the task when this was its last
    /// pair. Recording a pair that already ended changes nothing (a retried write is harmless).
    pub async fn pair_finished(&self, result: PairResult) -> Result<Option<TaskSummary>> {
        self.writer.finished(result).await
    }
}

const PENDING_SELECT: &str =
    "SELECT p.task_id, p.url_idx, p.edge_id, t.kind, t.domain, t.mode, t.created_at, u.url, u.is_dir, u.phase, d.origin, \
            CASE WHEN EXISTS (SELECT 1 FROM task_urls w WHERE w.task_id = p.task_id AND w.phase = 1) \
                 THEN 1 ELSE 0 END AS warms \
     FROM task_pairs p \
     JOIN tasks t ON t.id = p.task_id \
     JOIN task_urls u ON u.task_id = p.task_id AND u.url_idx = p.url_idx \
     LEFT JOIN domains d ON d.name = t.domain";

/// Held pairs of task `$1` become waiting once no pair of its first phase is unfinished.
/// They become `$2`'s, the engine that runs them.
const RELEASE_HELD: &str = "UPDATE task_pairs SET status = 'waiting', owner = $2 \
     WHERE task_id = $1 AND status = 'held' AND NOT EXISTS ( \
        SELECT 1 FROM task_pairs p JOIN task_urls u ON u.task_id = p.task_id AND u.url_idx = p.url_idx \
        WHERE p.task_id = $1 AND u.phase = 0 AND p.status IN ('waiting', 'running'))";

fn decode_pending(row: &sqlx::any::AnyRow) -> Result<PendingPair> {
    let task_id: String = row.try_get("task_id")?;
    let kind: String = row.try_get("kind")?;
    let origin: Option<String> = row.try_get("origin")?;
    let phase: i64 = row.try_get("phase")?;
    let warms = row.try_get::<i64, _>("warms")? != 0;
    Ok(PendingPair {
        key: PairKey {
            task_id: parse(&task_id)?,
            url_idx: row.try_get("url_idx")?,
            edge_id: EdgeId(row.try_get("edge_id")?),
        },
        // The warm phase of a refresh prefetches.
        kind: if phase == 1 {
            precache_model::TaskKind::Prefetch
        } else {
            parse(&kind)?
        },
        url: row.try_get("url")?,
        is_dir: row.try_get::<i64, _>("is_dir")? != 0,
        mode: row.try_get("mode")?,
        releases: phase == 0 && warms,
        domain: row.try_get("domain")?,
        created_at: row.try_get("created_at")?,
        origin: origin
            .map(|text| Origin::parse(&text))
            .transpose()
            .map_err(Error::Corrupt)?,
    })
}

/// Up to this many pairs per statement (10 parameters each).
const PAIRS_PER_STATEMENT: usize = 400;

/// Marks a batch's started pairs `running`, and their tasks, in two statements per chunk.
pub(crate) async fn mark_started_many(
    connection: &mut AnyConnection,
    started: &[(PairKey, i64)],
) -> Result<()> {
    let params = Params::of(connection);
    for chunk in started.chunks(PAIRS_PER_STATEMENT) {
        let sql = format!(
            "WITH v (task_id, url_idx, edge_id, at) AS (VALUES {}) \
             UPDATE task_pairs SET status = 'running', started_at = COALESCE(task_pairs.started_at, v.at) \
             FROM v WHERE task_pairs.task_id = v.task_id AND task_pairs.url_idx = v.url_idx \
             AND task_pairs.edge_id = v.edge_id AND task_pairs.status = 'waiting'",
            params.rows_typed(chunk.len(), &[Some("TEXT"), Some("BIGINT"), Some("BIGINT"), Some("BIGINT")])
        );
        let mut query = sqlx::query(&sql);
        for (key, at) in chunk {
            query = query
                .bind(key.task_id.to_string())
                .bind(key.url_idx)
                .bind(key.edge_id.0)
                .bind(*at);
        }
        query.execute(&mut *connection).await?;

        let mut tasks: Vec<(String, i64)> = Vec::new();
        for (key, at) in chunk {
            let id = key.task_id.to_string();
            match tasks.iter_mut().find(|(task_id, _)| *task_id == id) {
                Some((_, earliest)) => *earliest = (*earliest).min(*at),
                None => tasks.push((id, *at)),
            }
        }
        let sql = format!(
            "WITH v (id, at) AS (VALUES {}) \
             UPDATE tasks SET status = 'running', started_at = COALESCE(tasks.started_at, v.at) \
             FROM v WHERE tasks.id = v.id AND tasks.status = 'waiting'",
            params.rows_typed(tasks.len(), &[Some("TEXT"), Some("BIGINT")])
        );
        let mut query = sqlx::query(&sql);
        for (id, at) in &tasks {
            query = query.bind(id.as_str()).bind(*at);
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}

/// Records a batch of outcomes: one statement updates the pairs that were still unfinished, then
/// each task they belong to advances by what finished of it. The answer for each outcome is the
/// task's summary when this outcome was the first of its task in the batch and the task ended.
pub(crate) async fn record_finish_many(
    connection: &mut AnyConnection,
    results: &[PairResult],
) -> Result<Vec<Option<TaskSummary>>> {
    let params = Params::of(connection);
    // Per task, in order of first appearance: pairs finished, of which successful, latest end,
    // and of which unsupported.
    let mut advanced: Vec<(String, i64, i64, i64, i64)> = Vec::new();
    for chunk in results.chunks(PAIRS_PER_STATEMENT) {
        let sql = format!(
            "WITH v (task_id, url_idx, edge_id, status, attempts, http_status, bytes, objects, error, finished_at, confirmed) AS (VALUES {}) \
             UPDATE task_pairs SET status = v.status, attempts = v.attempts, http_status = v.http_status, \
                    bytes = v.bytes, objects = v.objects, error = v.error, finished_at = v.finished_at, \
                    confirmed = v.confirmed, \
                    owed = CASE WHEN v.status IN ('success', 'unsupported') THEN 0 ELSE task_pairs.owed END, \
                    started_at = COALESCE(task_pairs.started_at, v.finished_at) \
             FROM v WHERE task_pairs.task_id = v.task_id AND task_pairs.url_idx = v.url_idx \
             AND task_pairs.edge_id = v.edge_id AND task_pairs.status IN ('waiting', 'running') \
             RETURNING task_pairs.task_id AS task_id, task_pairs.status AS status, task_pairs.finished_at AS finished_at",
            params.rows_typed(
                chunk.len(),
                &[
                    Some("TEXT"),
                    Some("BIGINT"),
                    Some("BIGINT"),
                    Some("TEXT"),
                    Some("BIGINT"),
                    Some("BIGINT"),
                    Some("BIGINT"),
                    Some("BIGINT"),
                    Some("TEXT"),
                    Some("BIGINT"),
                    Some("BIGINT"),
                ]
            )
        );
        let mut query = sqlx::query(&sql);
        for result in chunk {
            let status = if result.unsupported {
                PairStatus::Unsupported
            } else if result.success {
                PairStatus::Success
            } else {
                PairStatus::Failed
            };
            query = query
                .bind(result.key.task_id.to_string())
                .bind(result.key.url_idx)
                .bind(result.key.edge_id.0)
                .bind(status.as_str())
                .bind(result.attempts)
                .bind(result.http_status)
                .bind(result.bytes)
                .bind(result.objects)
                .bind(result.error.clone())
                .bind(result.finished_at)
                .bind(result.confirmed.map(i64::from));
        }
        for row in query.fetch_all(&mut *connection).await? {
            let task_id: String = row.try_get("task_id")?;
            let status: String = row.try_get("status")?;
            let succeeded = i64::from(status == PairStatus::Success.as_str());
            let unsupported = i64::from(status == PairStatus::Unsupported.as_str());
            let finished_at: i64 = row.try_get("finished_at")?;
            match advanced.iter_mut().find(|(id, ..)| *id == task_id) {
                Some((_, finished, success, latest, not_supported)) => {
                    *finished += 1;
                    *success += succeeded;
                    *latest = (*latest).max(finished_at);
                    *not_supported += unsupported;
                }
                None => advanced.push((task_id, 1, succeeded, finished_at, unsupported)),
            }
        }
    }
    let mut ended: Vec<TaskSummary> = Vec::new();
    for (task_id, finished, success, latest, unsupported) in &advanced {
        // A task ends done when something succeeded, or when nothing could be done anywhere
        // (every pair unsupported): there was no failure.
        let row = sqlx::query(&format!(
            "UPDATE tasks SET n_finished = n_finished + $1, n_success = n_success + $2, \
                    n_unsupported = n_unsupported + $5, \
                    started_at = COALESCE(started_at, $3), \
                    status = CASE WHEN n_finished + $1 < n_pairs THEN 'running' \
                                  WHEN cancelled_at IS NOT NULL THEN '{cancelled}' \
                                  WHEN n_success + $2 > 0 OR n_unsupported + $5 >= n_pairs THEN '{done}' \
                                  ELSE '{failed}' END, \
                    finished_at = CASE WHEN n_finished + $1 < n_pairs THEN NULL ELSE $3 END \
             WHERE id = $4 \
             RETURNING id, account_id, kind, domain, status, created_at, started_at, finished_at, \
                       n_urls, n_pairs, n_finished, n_success, n_unsupported",
            done = TaskStatus::Done.as_str(),
            failed = TaskStatus::Failed.as_str(),
            cancelled = TaskStatus::Cancelled.as_str(),
        ))
        .bind(*finished)
        .bind(*success)
        .bind(*latest)
        .bind(task_id.as_str())
        .bind(*unsupported)
        .fetch_one(&mut *connection)
        .await?;
        let summary = decode_summary(&row)?;
        if summary.status.is_final() {
            ended.push(summary);
        }
    }
    Ok(results
        .iter()
        .map(|result| {
            let position = ended
                .iter()
                .position(|summary| summary.id == result.key.task_id)?;
            Some(ended.swap_remove(position))
        })
        .collect())
}
