//! Task retention: ended tasks older than the retention window go, with everything kept of them.

use sqlx::Row;

use crate::{Result, Store};

/// The tables that hold rows of a task besides `tasks` itself.
const TASK_TABLES: [&str; 5] = [
    "task_pairs",
    "task_urls",
    "callbacks",
    "callback_attempts",
    "idempotency_keys",
];

impl Store {
    /// Deletes up to `limit` tasks that ended before `ended_before` (ms since the epoch), oldest
    /// first, with their URLs, pairs, callbacks and idempotency key, in one transaction; answers
    /// how many went. A refresh whose purge is still owed to one of precache's edges (it was away
    /// when the task ended and has not caught up) stays until that edge confirms it or is
    /// revoked: the owed pair is how the edge learns of the purge on its return.
    pub async fn delete_ended_tasks(&self, ended_before: i64, limit: i64) -> Result<u64> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT t.id FROM tasks t \
                         WHERE t.finished_at IS NOT NULL AND t.finished_at < $1 \
                           AND NOT EXISTS ( \
                             SELECT 1 FROM task_pairs p JOIN edges e ON e.id = p.edge_id \
                              WHERE p.task_id = t.id AND p.owed = 1 \
                                AND e.backend_id IS NULL AND e.revoked_at IS NULL) \
                         ORDER BY t.finished_at LIMIT $2",
                    )
                    .bind(ended_before)
                    .bind(limit)
                    .fetch_all(&mut *connection)
                    .await?;
                    let ids = rows
                        .iter()
                        .map(|row| row.try_get::<String, _>("id"))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    if ids.is_empty() {
                        return Ok(0);
                    }
                    let placeholders = (1..=ids.len())
                        .map(|n| format!("${n}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let statements = TASK_TABLES
                        .iter()
                        .map(|table| {
                            format!("DELETE FROM {table} WHERE task_id IN ({placeholders})")
                        })
                        .chain([format!("DELETE FROM tasks WHERE id IN ({placeholders})")]);
                    let mut deleted = 0;
                    for sql in statements {
                        let mut query = sqlx::query(&sql);
                        for id in &ids {
                            query = query.bind(id);
                        }
                        deleted = query.execute(&mut *connection).await?.rows_affected();
                    }
                    // The last statement deleted the tasks themselves.
                    Ok(deleted)
                })
            })
            .await
    }
}
