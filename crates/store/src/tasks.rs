//! Tasks: durable submission, the status query and the task list.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use precache_model::{
    AccountId, EdgeId, Origin, PairStatus, QuotaKind, TaskId, TaskKind, TaskStatus,
};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::quota;
use crate::{
    Error, IdempotencyKey, NewTask, PairRecord, Result, Store, SubmittedTask, TaskDetail,
    TaskQuery, TaskSummary, IDEMPOTENCY_WINDOW_MS,
};

const TASK_COLUMNS: &str =
    "id, account_id, kind, domain, status, created_at, started_at, finished_at, n_urls, n_pairs, n_finished, n_success, n_unsupported";

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
        n_unsupported: row.try_get("n_unsupported")?,
    })
}

/// How parameters are written in a generated multi-row statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Params {
    /// `$1, $2, ...`: what PostgreSQL needs.
    Numbered,
    /// `?, ?, ...`: for SQLite, whose lookup of a numbered parameter's name is linear in the
    /// number of parameters, which made binding a 2,000-parameter INSERT quadratic.
    Anonymous,
}

impl Params {
    /// The style for this connection's database.
    pub(crate) fn of(connection: &AnyConnection) -> Params {
        if connection.backend_name() == "PostgreSQL" {
            Params::Numbered
        } else {
            Params::Anonymous
        }
    }

    /// The `n`th parameter (1-based), wrapped as `CAST(... AS sql_type)` when a type is given.
    fn write(self, text: &mut String, n: usize, sql_type: Option<&str>) {
        let param = match self {
            Params::Numbered => format!("${n}"),
            Params::Anonymous => "?".to_string(),
        };
        match sql_type {
            Some(sql_type) => text.push_str(&format!("CAST({param} AS {sql_type})")),
            None => text.push_str(&param),
        }
    }

    /// `(p, p, p), (p, p, p), ...` for `rows` rows of `columns` parameters.
    pub(crate) fn rows(self, rows: usize, columns: usize) -> String {
        self.rows_typed(rows, &vec![None; columns])
    }

    /// Like [`Params::rows`], each column cast to its type (so PostgreSQL knows the types of a
    /// `VALUES` list made only of parameters).
    pub(crate) fn rows_typed(self, rows: usize, types: &[Option<&str>]) -> String {
        let mut text = String::with_capacity(rows * types.len() * 8);
        for row in 0..rows {
            if row > 0 {
                text.push_str(", ");
            }
            text.push('(');
            for (column, sql_type) in types.iter().enumerate() {
                if column > 0 {
                    text.push_str(", ");
                }
                self.write(&mut text, row * types.len() + column + 1, *sql_type);
            }
            text.push(')');
        }
        text
    }

    /// `p, p, p` for a list of `count` parameters.
    pub(crate) fn list(self, count: usize) -> String {
        let mut text = String::with_capacity(count * 4);
        for n in 1..=count {
            if n > 1 {
                text.push_str(", ");
            }
            self.write(&mut text, n, None);
        }
        text
    }
}

/// Commits a batch of submissions: per task, the domain must be registered to the submitting
/// account and the quota must allow it (checked in order, so earlier submissions of the batch
/// use quota first); the accepted tasks are then written with one multi-row `INSERT` per table.
/// The outer error fails the whole step (the writer rolls it back); inner errors reject one
/// submission.
pub(crate) async fn submit_many(
    connection: &mut AnyConnection,
    tasks: &[NewTask],
    owner: &str,
) -> Result<Vec<Result<SubmittedTask>>> {
    let domains = registered_domains(connection, tasks).await?;
    let mut charges: HashMap<(AccountId, String, QuotaKind), quota::Balance> = HashMap::new();
    let mut verdicts: Vec<Result<Origin>> = Vec::with_capacity(tasks.len());
    // Idempotency keys seen in this batch: key -> (body hash, task id).
    let mut batch_keys: HashMap<(AccountId, String), (String, TaskId)> = HashMap::new();
    let mut replays: HashMap<usize, TaskId> = HashMap::new();
    for (position, task) in tasks.iter().enumerate() {
        if let Some(idempotency) = &task.idempotency {
            let batch_key = (task.account_id, idempotency.key.clone());
            let earlier = match batch_keys.get(&batch_key) {
                Some(earlier) => Some(earlier.clone()),
                None => earlier_submission(connection, task, idempotency).await?,
            };
            match earlier {
                Some((hash, task_id)) if hash == idempotency.body_hash => {
                    replays.insert(position, task_id);
                    verdicts.push(match domains.get(task.domain.as_str()) {
                        Some((_, origin)) => Ok(origin.clone()),
                        None => Err(Error::DomainNotOwned(task.domain.to_string())),
                    });
                    continue;
                }
                Some(_) => {
                    verdicts.push(Err(Error::Conflict(format!(
                        "Idempotency-Key {:?} was used within 24 h with a different request",
                        idempotency.key
                    ))));
                    continue;
                }
                None => {
                    batch_keys.insert(batch_key, (idempotency.body_hash.clone(), task.id));
                }
            }
        }
        let origin = match domains.get(task.domain.as_str()) {
            Some((owner, origin)) if *owner == task.account_id => origin.clone(),
            _ => {
                verdicts.push(Err(Error::DomainNotOwned(task.domain.to_string())));
                continue;
            }
        };
        // Every charge of the task must fit, or none is taken.
        let mut refused = None;
        for charge in &task.charges {
            let key = (task.account_id, charge.day.clone(), charge.kind);
            let balance = match charges.entry(key) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    entry.insert(quota::balance(connection, task.account_id, charge).await?)
                }
            };
            if !balance.allows(charge.amount) {
                refused = Some(Error::QuotaExceeded {
                    kind: charge.kind,
                    limit: balance.limit,
                    used: balance.used,
                    requested: charge.amount,
                });
                break;
            }
        }
        if let Some(error) = refused {
            verdicts.push(Err(error));
            continue;
        }
        for charge in &task.charges {
            let key = (task.account_id, charge.day.clone(), charge.kind);
            if let Some(balance) = charges.get_mut(&key) {
                // Checked above; cannot fail.
                let _ = balance.take(charge.amount);
            }
        }
        verdicts.push(Ok(origin));
    }
    for ((account_id, day, kind), balance) in &charges {
        quota::record_use(connection, *account_id, day, *kind, balance).await?;
    }
    let accepted: Vec<&NewTask> = tasks
        .iter()
        .enumerate()
        .zip(&verdicts)
        .filter(|((position, _), verdict)| verdict.is_ok() && !replays.contains_key(position))
        .map(|((_, task), _)| task)
        .collect();
    insert_tasks(connection, &accepted, owner).await?;
    for task in &accepted {
        if let Some(idempotency) = &task.idempotency {
            sqlx::query(
                "INSERT INTO idempotency_keys (account_id, key, body_hash, task_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (account_id, key) DO UPDATE SET body_hash = excluded.body_hash, \
                    task_id = excluded.task_id, created_at = excluded.created_at",
            )
            .bind(task.account_id.0)
            .bind(idempotency.key.as_str())
            .bind(idempotency.body_hash.as_str())
            .bind(task.id.to_string())
            .bind(task.created_at)
            .execute(&mut *connection)
            .await?;
        }
        if let Some(entry) = &task.audit {
            crate::audit::insert(connection, entry).await?;
        }
    }
    Ok(tasks
        .iter()
        .enumerate()
        .zip(verdicts)
        .map(|((position, task), verdict)| {
            verdict.map(|origin| {
                let mut task = task.clone();
                let replayed = match replays.get(&position) {
                    Some(earlier) => {
                        task.id = *earlier;
                        true
                    }
                    None => false,
                };
                SubmittedTask {
                    task,
                    origin,
                    replayed,
                }
            })
        })
        .collect())
}

/// The body hash and task of an earlier submission with this key, within the window.
async fn earlier_submission(
    connection: &mut AnyConnection,
    task: &NewTask,
    idempotency: &IdempotencyKey,
) -> Result<Option<(String, TaskId)>> {
    let row = sqlx::query(
        "SELECT body_hash, task_id FROM idempotency_keys \
         WHERE account_id = $1 AND key = $2 AND created_at > $3",
    )
    .bind(task.account_id.0)
    .bind(idempotency.key.as_str())
    .bind(task.created_at - IDEMPOTENCY_WINDOW_MS)
    .fetch_optional(&mut *connection)
    .await?;
    row.map(|row| {
        let task_id: String = row.try_get("task_id")?;
        Ok((row.try_get("body_hash")?, parse(&task_id)?))
    })
    .transpose()
}

/// Owner and origin of every domain the batch's tasks name.
async fn registered_domains(
    connection: &mut AnyConnection,
    tasks: &[NewTask],
) -> Result<HashMap<String, (AccountId, Origin)>> {
    let mut names: Vec<&str> = tasks.iter().map(|task| task.domain.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let sql = format!(
        "SELECT name, account_id, origin FROM domains WHERE name IN ({})",
        Params::of(connection).list(names.len())
    );
    let mut query = sqlx::query(&sql);
    for name in &names {
        query = query.bind(*name);
    }
    let mut domains = HashMap::with_capacity(names.len());
    for row in query.fetch_all(&mut *connection).await? {
        let origin: String = row.try_get("origin")?;
        domains.insert(
            row.try_get("name")?,
            (
                AccountId(row.try_get("account_id")?),
                Origin::parse(&origin).map_err(Error::Corrupt)?,
            ),
        );
    }
    Ok(domains)
}

async fn insert_tasks(
    connection: &mut AnyConnection,
    tasks: &[&NewTask],
    owner: &str,
) -> Result<()> {
    let params = Params::of(connection);
    let ids: Vec<String> = tasks.iter().map(|task| task.id.to_string()).collect();
    let rows: Vec<(&NewTask, &String)> = tasks.iter().copied().zip(&ids).collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO tasks (id, account_id, kind, domain, status, created_at, n_urls, n_pairs, mode) VALUES {}",
            params.rows(chunk.len(), 9)
        );
        let mut query = sqlx::query(&sql);
        for (task, id) in chunk {
            let n_pairs = (task.all_target_count() * task.edges.len()) as i64;
            // A task with no edge to run on has nothing left to do: it ends at once, failed.
            let status = if n_pairs == 0 {
                TaskStatus::Failed
            } else {
                TaskStatus::Waiting
            };
            query = query
                .bind(id.as_str())
                .bind(task.account_id.0)
                .bind(task.kind.as_str())
                .bind(task.domain.as_str())
                .bind(status.as_str())
                .bind(task.created_at)
                .bind(task.all_target_count() as i64)
                .bind(n_pairs)
                .bind(task.mode.clone());
        }
        query.execute(&mut *connection).await?;
    }
    // (task, index, URL, is a directory, phase)
    let urls: Vec<(&str, i64, &str, bool, i64)> = rows
        .iter()
        .flat_map(|(task, id)| {
            task.targets()
                .map(move |(url_idx, url, is_dir)| (id.as_str(), url_idx, url, is_dir, 0))
                .chain(
                    task.warm_targets()
                        .map(move |(url_idx, url)| (id.as_str(), url_idx, url, false, 1)),
                )
        })
        .collect();
    for chunk in urls.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO task_urls (task_id, url_idx, url, is_dir, phase) VALUES {}",
            params.rows(chunk.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for (id, url_idx, url, is_dir, phase) in chunk {
            query = query
                .bind(*id)
                .bind(*url_idx)
                .bind(*url)
                .bind(i64::from(*is_dir))
                .bind(*phase);
        }
        query.execute(&mut *connection).await?;
    }
    let callbacks: Vec<(&String, &str)> = rows
        .iter()
        .filter_map(|(task, id)| task.callback_url.as_deref().map(|url| (*id, url)))
        .collect();
    for chunk in callbacks.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO callbacks (task_id, url) VALUES {}",
            params.rows(chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for (id, url) in chunk {
            query = query.bind(id.as_str()).bind(*url);
        }
        query.execute(&mut *connection).await?;
    }
    // Pairs of a later phase are held until the earlier one has finished. A purge is owed to
    // its edge until the edge confirms it (see `owed_purges`).
    let pairs: Vec<(&str, i64, EdgeId, PairStatus, i64)> = rows
        .iter()
        .flat_map(|(task, id)| {
            let first = task.target_count() as i64;
            let purges = task.kind == TaskKind::Refresh
                && task.mode.as_deref() != Some(precache_model::edge_protocol::DRY_RUN_MODE);
            (0..task.all_target_count() as i64).flat_map(move |url_idx| {
                let (status, owed) = if url_idx < first {
                    (PairStatus::Waiting, i64::from(purges))
                } else {
                    (PairStatus::Held, 0)
                };
                task.edges
                    .iter()
                    .map(move |edge_id| (id.as_str(), url_idx, *edge_id, status, owed))
            })
        })
        .collect();
    for chunk in pairs.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO task_pairs (task_id, url_idx, edge_id, status, owed, owner) VALUES {}",
            params.rows(chunk.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for (id, url_idx, edge_id, status, owed) in chunk {
            query = query
                .bind(*id)
                .bind(*url_idx)
                .bind(edge_id.0)
                .bind(status.as_str())
                .bind(*owed)
                .bind(owner);
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}

impl Store {
    /// Commits a task with its URLs and pairs and charges the quota, in one transaction shared
    /// with whatever else the writer batches with it. Returns once it is durable, with the
    /// domain's origin. `DomainNotOwned` when the domain is not registered to the task's account,
    /// `QuotaExceeded` when over quota; either way nothing was written.
    pub async fn submit_task(&self, task: NewTask) -> Result<SubmittedTask> {
        self.writer.submit(task).await
    }

    /// The task with this id, if it belongs to `account_id`: its row, URLs and pairs, read in
    /// one query (the status query is the hottest read).
    pub async fn task_detail(
        &self,
        account_id: AccountId,
        id: TaskId,
    ) -> Result<Option<TaskDetail>> {
        let rows = sqlx::query(
            "SELECT t.id, t.account_id, t.kind, t.domain, t.status, t.created_at, t.started_at, t.finished_at, \
                    t.n_urls, t.n_pairs, t.n_finished, t.n_success, t.n_unsupported, t.mode, \
                    u.url_idx, u.url, u.is_dir, u.phase, p.edge_id, e.name AS edge_name, e.backend AS edge_backend, \
                    e.admin_url AS edge_url, p.status AS pair_status, p.attempts, \
                    p.http_status, p.bytes, p.expected_bytes, p.objects, p.error, p.started_at AS pair_started_at, p.finished_at AS pair_finished_at, p.confirmed \
             FROM tasks t \
             JOIN task_urls u ON u.task_id = t.id \
             LEFT JOIN task_pairs p ON p.task_id = u.task_id AND p.url_idx = u.url_idx \
             LEFT JOIN edges e ON e.id = p.edge_id \
             WHERE t.id = $1 AND t.account_id = $2 ORDER BY u.url_idx, p.edge_id",
        )
        .bind(id.to_string())
        .bind(account_id.0)
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let summary = decode_summary(first)?;
        let mode: Option<String> = first.try_get("mode")?;
        let mut urls: Vec<String> = Vec::with_capacity(summary.n_urls as usize);
        let mut is_dir: Vec<bool> = Vec::with_capacity(summary.n_urls as usize);
        let mut phase: Vec<i64> = Vec::with_capacity(summary.n_urls as usize);
        let mut pairs = Vec::with_capacity(rows.len());
        for row in &rows {
            let url_idx: i64 = row.try_get("url_idx")?;
            if urls.len() as i64 == url_idx {
                urls.push(row.try_get("url")?);
                is_dir.push(row.try_get::<i64, _>("is_dir")? != 0);
                phase.push(row.try_get("phase")?);
            }
            let Some(edge_id) = row.try_get::<Option<i64>, _>("edge_id")? else {
                continue;
            };
            let status: String = row.try_get("pair_status")?;
            pairs.push(PairRecord {
                url_idx,
                edge_id: EdgeId(edge_id),
                edge_name: row
                    .try_get::<Option<String>, _>("edge_name")?
                    .unwrap_or_default(),
                backend: match row.try_get::<Option<String>, _>("edge_backend")? {
                    Some(backend) => Some((
                        backend,
                        row.try_get::<Option<String>, _>("edge_url")?
                            .unwrap_or_default(),
                    )),
                    None => None,
                },
                status: parse(&status)?,
                attempts: row.try_get("attempts")?,
                http_status: row.try_get("http_status")?,
                bytes: row.try_get("bytes")?,
                expected_bytes: row.try_get("expected_bytes")?,
                objects: row.try_get("objects")?,
                error: row.try_get("error")?,
                started_at: row.try_get("pair_started_at")?,
                finished_at: row.try_get("pair_finished_at")?,
                confirmed: row
                    .try_get::<Option<i64>, _>("confirmed")?
                    .map(|confirmed| confirmed != 0),
            });
        }
        Ok(Some(TaskDetail {
            summary,
            urls,
            is_dir,
            phase,
            mode,
            pairs,
        }))
    }

    /// A page of an account's tasks, newest first.
    pub async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskSummary>> {
        let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE account_id = $1");
        let mut next_param = 2;
        let mut condition = |sql: &mut String, text: &str| {
            sql.push_str(&text.replace("$?", &format!("${next_param}")));
            next_param += 1;
        };
        if query.kind.is_some() {
            condition(&mut sql, " AND kind = $?");
        }
        if query.status.is_some() {
            condition(&mut sql, " AND status = $?");
        }
        if query.domain.is_some() {
            condition(&mut sql, " AND domain = $?");
        }
        if query.since.is_some() {
            condition(&mut sql, " AND created_at >= $?");
        }
        if query.until.is_some() {
            condition(&mut sql, " AND created_at < $?");
        }
        if query.before.is_some() {
            condition(
                &mut sql,
                " AND (created_at, id) < (SELECT created_at, id FROM tasks WHERE id = $?)",
            );
        }
        condition(&mut sql, " ORDER BY created_at DESC, id DESC LIMIT $?");
        let mut statement = sqlx::query(&sql).bind(query.account_id.0);
        if let Some(kind) = query.kind {
            statement = statement.bind(kind.as_str());
        }
        if let Some(status) = query.status {
            statement = statement.bind(status.as_str());
        }
        if let Some(domain) = &query.domain {
            statement = statement.bind(domain.as_str());
        }
        if let Some(since) = query.since {
            statement = statement.bind(since);
        }
        if let Some(until) = query.until {
            statement = statement.bind(until);
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
    use super::Params;

    #[test]
    fn writes_parameters_row_by_row() {
        assert_eq!(Params::Numbered.rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(Params::Anonymous.rows(1, 2), "(?, ?)");
        assert_eq!(
            Params::Numbered.rows_typed(1, &[Some("TEXT"), None]),
            "(CAST($1 AS TEXT), $2)"
        );
        assert_eq!(Params::Anonymous.list(3), "?, ?, ?");
    }
}
