//! Tasks: durable submission, the status query and the task list.

use precache_model::{AccountId, EdgeId, PairStatus, TaskId, TaskStatus};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::quota;
use crate::{Error, NewTask, PairRecord, Result, Store, TaskDetail, TaskQuery, TaskSummary};

const TASK_COLUMNS: &str =
    "id, account_id, kind, domain, status, created_at, started_at, finished_at, n_urls, n_pairs, n_finished, n_success";

/// Rows per multi-row INSERT: far below SQLite's 32766 bound variables.
const ROWS_PER_INSERT: usize = 500;

pub(crate) fn parse<T: std::str::FromStr<Err = E>, E: ToString>(text: &str) -> Result<T> {
    text.parse().map_err(|e: E| Error::Corrupt(e.to_string()))
}

pub(crate) fn decode_summary(row: &AnyRow) -> Result<TaskSummary> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    Ok(TaskSummary {
        id: parse(&id)?,
        account_id: AccountId(row.try_get("account_id")?),
        kind: parse(&kind)?,
        domain: row.try_get("domain")?,
        status: parse(&status)?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        n_urls: row.try_get("n_urls")?,
        n_pairs: row.try_get("n_pairs")?,
        n_finished: row.try_get("n_finished")?,
        n_success: row.try_get("n_success")?,
    })
}

/// `($1, $2, $3), ($4, $5, $6), ...` for `rows` rows of `columns` placeholders.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut text = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for column in 0..columns {
            if column > 0 {
                text.push_str(", ");
            }
            text.push_str(&format!("${}", row * columns + column + 1));
        }
        text.push(')');
    }
    text
}

async fn insert_task(connection: &mut AnyConnection, task: &NewTask) -> Result<()> {
    quota::charge(connection, task.account_id, &task.charge).await?;
    let id = task.id.to_string();
    let n_pairs = (task.urls.len() * task.edges.len()) as i64;
    sqlx::query(
        "INSERT INTO tasks (id, account_id, kind, domain, status, created_at, n_urls, n_pairs) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(task.account_id.0)
    .bind(task.kind.as_str())
    .bind(task.domain.as_str())
    // A task with no edge to run on has nothing left to do: it ends at once, honestly failed.
    .bind(if n_pairs == 0 {
        TaskStatus::Failed.as_str()
    } else {
        TaskStatus::Waiting.as_str()
    })
    .bind(task.created_at)
    .bind(task.urls.len() as i64)
    .bind(n_pairs)
    .execute(&mut *connection)
    .await?;

    let indexed_urls: Vec<(usize, &String)> = task.urls.iter().enumerate().collect();
    for chunk in indexed_urls.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO task_urls (task_id, url_idx, url) VALUES {}",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(&sql);
        for (url_idx, url) in chunk {
            query = query.bind(&id).bind(*url_idx as i64).bind(url.as_str());
        }
        query.execute(&mut *connection).await?;
    }

    let pairs: Vec<(usize, EdgeId)> = (0..task.urls.len())
        .flat_map(|url_idx| task.edges.iter().map(move |edge_id| (url_idx, *edge_id)))
        .collect();
    for chunk in pairs.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO task_pairs (task_id, url_idx, edge_id, status) VALUES {}",
            placeholders(chunk.len(), 4)
        );
        let mut query = sqlx::query(&sql);
        for (url_idx, edge_id) in chunk {
            query = query
                .bind(&id)
                .bind(*url_idx as i64)
                .bind(edge_id.0)
                .bind(PairStatus::Waiting.as_str());
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}

impl Store {
    /// Commits a task with its URLs and pairs and charges the quota, all in one transaction.
    /// Returns once it is durable. `QuotaExceeded` (nothing written) when over quota.
    pub async fn submit_task(&self, task: NewTask) -> Result<NewTask> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    insert_task(connection, &task).await?;
                    Ok(task)
                })
            })
            .await
    }

    /// The task with this id, if it belongs to `account_id`.
    pub async fn task_detail(
        &self,
        account_id: AccountId,
        id: TaskId,
    ) -> Result<Option<TaskDetail>> {
        let id_text = id.to_string();
        let Some(row) = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND account_id = $2"
        ))
        .bind(&id_text)
        .bind(account_id.0)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let summary = decode_summary(&row)?;
        // URLs and their pairs in one query: the status query is the hottest read.
        let rows = sqlx::query(
            "SELECT u.url_idx, u.url, p.edge_id, e.name AS edge_name, p.status, p.attempts, p.http_status, \
                    p.bytes, p.error, p.started_at, p.finished_at \
             FROM task_urls u \
             LEFT JOIN task_pairs p ON p.task_id = u.task_id AND p.url_idx = u.url_idx \
             LEFT JOIN edges e ON e.id = p.edge_id \
             WHERE u.task_id = $1 ORDER BY u.url_idx, p.edge_id",
        )
        .bind(&id_text)
        .fetch_all(&self.pool)
        .await?;
        let mut urls: Vec<String> = Vec::with_capacity(summary.n_urls as usize);
        let mut pairs = Vec::with_capacity(rows.len());
        for row in &rows {
            let url_idx: i64 = row.try_get("url_idx")?;
            if urls.len() as i64 == url_idx {
                urls.push(row.try_get("url")?);
            }
            let Some(edge_id) = row.try_get::<Option<i64>, _>("edge_id")? else {
                continue;
            };
            let status: String = row.try_get("status")?;
            pairs.push(PairRecord {
                url_idx,
                edge_id: EdgeId(edge_id),
                edge_name: row
                    .try_get::<Option<String>, _>("edge_name")?
                    .unwrap_or_default(),
                status: parse(&status)?,
                attempts: row.try_get("attempts")?,
                http_status: row.try_get("http_status")?,
                bytes: row.try_get("bytes")?,
                error: row.try_get("error")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
            });
        }
        Ok(Some(TaskDetail {
            summary,
            urls,
            pairs,
        }))
    }

    /// A page of an account's tasks, newest first.
    pub async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskSummary>> {
        let mut sql =
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE account_id = $1 AND kind = $2");
        let mut next_param = 3;
        if query.status.is_some() {
            sql.push_str(&format!(" AND status = ${next_param}"));
            next_param += 1;
        }
        if query.before.is_some() {
            sql.push_str(&format!(
                " AND (created_at, id) < (SELECT created_at, id FROM tasks WHERE id = ${next_param})"
            ));
            next_param += 1;
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${next_param}"
        ));
        let mut statement = sqlx::query(&sql)
            .bind(query.account_id.0)
            .bind(query.kind.as_str());
        if let Some(status) = query.status {
            statement = statement.bind(status.as_str());
        }
        if let Some(before) = query.before {
            statement = statement.bind(before.to_string());
        }
        let rows = statement.bind(query.limit).fetch_all(&self.pool).await?;
        rows.iter().map(decode_summary).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn numbers_placeholders_row_by_row() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
