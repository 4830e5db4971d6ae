//! The task engine's view of the store: pairs to run, and recording how they went.

use precache_model::{EdgeId, Origin, PairStatus, TaskStatus};
use sqlx::{AnyConnection, Row};

use crate::tasks::{decode_summary, parse};
use crate::{Error, PairKey, PairResult, PendingPair, Result, Store, TaskSummary};

impl Store {
    /// Hands every `running` pair back as `waiting`. Only for a single process that owns the
    /// database (SQLite): at start nothing can be running, so these were cut off by a crash.
    pub async fn reset_running_pairs(&self) -> Result<u64> {
        self.writer
            .run(|connection| {
                Box::pin(async move {
                    let reset = sqlx::query(
                        "UPDATE task_pairs SET status = 'waiting' WHERE status = 'running'",
                    )
                    .execute(&mut *connection)
                    .await?;
                    Ok(reset.rows_affected())
                })
            })
            .await
    }

    /// Every waiting pair, oldest task first, with what is needed to run it.
    pub async fn pending_pairs(&self) -> Result<Vec<PendingPair>> {
        let rows = sqlx::query(
            "SELECT p.task_id, p.url_idx, p.edge_id, t.kind, t.domain, u.url, d.origin \
             FROM task_pairs p \
             JOIN tasks t ON t.id = p.task_id \
             JOIN task_urls u ON u.task_id = p.task_id AND u.url_idx = p.url_idx \
             LEFT JOIN domains d ON d.name = t.domain \
             WHERE p.status = 'waiting' \
             ORDER BY t.created_at, p.task_id, p.url_idx, p.edge_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let task_id: String = row.try_get("task_id")?;
                let kind: String = row.try_get("kind")?;
                let origin: Option<String> = row.try_get("origin")?;
                Ok(PendingPair {
                    key: PairKey {
                        task_id: parse(&task_id)?,
                        url_idx: row.try_get("url_idx")?,
                        edge_id: EdgeId(row.try_get("edge_id")?),
                    },
                    kind: parse(&kind)?,
                    url: row.try_get("url")?,
                    domain: row.try_get("domain")?,
                    origin: origin
                        .map(|text| Origin::parse(&text))
                        .transpose()
                        .map_err(Error::Corrupt)?,
                })
            })
            .collect()
    }

    /// Marks pairs as running (their first attempt started at `started_at`) and their tasks too.
    pub async fn pairs_started(&self, keys: Vec<PairKey>, started_at: i64) -> Result<()> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    for key in &keys {
                        mark_started(connection, key, started_at).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Records how a pair ended and advances its task; returns the task when this was its last
    /// pair. Recording a pair that already ended changes nothing (a retried write is harmless).
    pub async fn pair_finished(&self, result: PairResult) -> Result<Option<TaskSummary>> {
        self.writer
            .run(move |connection| {
                Box::pin(async move { record_finish(connection, &result).await })
            })
            .await
    }
}

async fn mark_started(
    connection: &mut AnyConnection,
    key: &PairKey,
    started_at: i64,
) -> Result<()> {
    let task_id = key.task_id.to_string();
    sqlx::query(
        "UPDATE task_pairs SET status = 'running', started_at = COALESCE(started_at, $1) \
         WHERE task_id = $2 AND url_idx = $3 AND edge_id = $4 AND status = 'waiting'",
    )
    .bind(started_at)
    .bind(&task_id)
    .bind(key.url_idx)
    .bind(key.edge_id.0)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "UPDATE tasks SET status = 'running', started_at = COALESCE(started_at, $1) WHERE id = $2 AND status = 'waiting'",
    )
    .bind(started_at)
    .bind(&task_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

async fn record_finish(
    connection: &mut AnyConnection,
    result: &PairResult,
) -> Result<Option<TaskSummary>> {
    let task_id = result.key.task_id.to_string();
    let status = if result.success {
        PairStatus::Success
    } else {
        PairStatus::Failed
    };
    let updated = sqlx::query(
        "UPDATE task_pairs SET status = $1, attempts = $2, http_status = $3, bytes = $4, error = $5, \
                finished_at = $6, started_at = COALESCE(started_at, $6) \
         WHERE task_id = $7 AND url_idx = $8 AND edge_id = $9 AND status IN ('waiting', 'running')",
    )
    .bind(status.as_str())
    .bind(result.attempts)
    .bind(result.http_status)
    .bind(result.bytes)
    .bind(result.error.clone())
    .bind(result.finished_at)
    .bind(&task_id)
    .bind(result.key.url_idx)
    .bind(result.key.edge_id.0)
    .execute(&mut *connection)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    let success_increment: i64 = i64::from(result.success);
    let row = sqlx::query(&format!(
        "UPDATE tasks SET n_finished = n_finished + 1, n_success = n_success + $1, \
                started_at = COALESCE(started_at, $2), \
                status = CASE WHEN n_finished + 1 < n_pairs THEN 'running' \
                              WHEN n_success + $1 > 0 THEN '{done}' ELSE '{failed}' END, \
                finished_at = CASE WHEN n_finished + 1 < n_pairs THEN NULL ELSE $2 END \
         WHERE id = $3 \
         RETURNING id, account_id, kind, domain, status, created_at, started_at, finished_at, \
                   n_urls, n_pairs, n_finished, n_success",
        done = TaskStatus::Done.as_str(),
        failed = TaskStatus::Failed.as_str(),
    ))
    .bind(success_increment)
    .bind(result.finished_at)
    .bind(&task_id)
    .fetch_one(&mut *connection)
    .await?;
    let summary = decode_summary(&row)?;
    Ok(summary.status.is_final().then_some(summary))
}
