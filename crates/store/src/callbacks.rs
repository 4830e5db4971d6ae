//! Completion callbacks: which are due, claiming them (so one process delivers each attempt),
//! and recording every attempt; and each account's signing secret.

use precache_model::{AccountId, TaskId};
use sqlx::Row;

use crate::tasks::parse;
use crate::{Backend, Callback, CallbackAttempt, DueCallback, Error, Result, Store};

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// The task.
    pub task_id: TaskId,
    /// Its number (1 for the first).
    pub n: i64,
    /// When it was made, ms.
    pub at: i64,
    /// The receiver's status, when it answered.
    pub http_status: Option<i64>,
    /// What went wrong.
    pub error: Option<String>,
    /// What follows: `Some(at)` to try again then, `None` when it was delivered or given up.
    pub retry_at: Option<i64>,
}

impl Store {
    /// Claims up to `limit` callbacks whose task has ended and whose next attempt is due at
    /// `now`, for `lease_ms` (another process claims them again only after that).
    pub async fn claim_due_callbacks(
        &self,
        now: i64,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<DueCallback>> {
        // Most of the time nothing is pending: a read spares the writer a transaction.
        let pending = sqlx::query(
            "SELECT 1 AS pending FROM callbacks c JOIN tasks t ON t.id = c.task_id \
             WHERE c.delivered_at IS NULL AND c.gave_up_at IS NULL AND c.next_attempt_at <= $1 \
               AND c.lease_until <= $1 AND t.status IN ('done', 'failed', 'cancelled') LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if pending.is_none() {
            return Ok(Vec::new());
        }
        let backend = self.backend;
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let skip_locked = match backend {
                        Backend::Postgres => "FOR UPDATE OF c SKIP LOCKED",
                        Backend::Sqlite => "",
                    };
                    let rows = sqlx::query(&format!(
                        "SELECT c.task_id, t.account_id, c.url, c.attempts, c.first_attempt_at \
                         FROM callbacks c JOIN tasks t ON t.id = c.task_id \
                         WHERE c.delivered_at IS NULL AND c.gave_up_at IS NULL \
                           AND c.next_attempt_at <= $1 AND c.lease_until <= $1 \
                           AND t.status IN ('done', 'failed', 'cancelled') \
                         ORDER BY c.next_attempt_at LIMIT $2 {skip_locked}"
                    ))
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *connection)
                    .await?;
                    let mut due = Vec::with_capacity(rows.len());
                    for row in rows {
                        let task_id: String = row.try_get("task_id")?;
                        sqlx::query("UPDATE callbacks SET lease_until = $1 WHERE task_id = $2")
                            .bind(now + lease_ms)
                            .bind(&task_id)
                            .execute(&mut *connection)
                            .await?;
                        due.push(DueCallback {
                            task_id: parse(&task_id)?,
                            account_id: AccountId(row.try_get("account_id")?),
                            url: row.try_get("url")?,
                            attempts: row.try_get("attempts")?,
                            first_attempt_at: row.try_get("first_attempt_at")?,
                        });
                    }
                    Ok(due)
                })
            })
            .await
    }

    /// Records an attempt and what follows it.
    pub async fn record_callback_attempt(&self, outcome: AttemptOutcome) -> Result<()> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let id = outcome.task_id.to_string();
                    sqlx::query(
                        "INSERT INTO callback_attempts (task_id, n, at, http_status, error) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id, n) DO NOTHING",
                    )
                    .bind(&id)
                    .bind(outcome.n)
                    .bind(outcome.at)
                    .bind(outcome.http_status)
                    .bind(outcome.error.clone())
                    .execute(&mut *connection)
                    .await?;
                    let delivered = outcome.http_status.is_some_and(|s| (200..300).contains(&s));
                    sqlx::query(
                        "UPDATE callbacks SET attempts = $1, lease_until = 0, \
                                first_attempt_at = COALESCE(first_attempt_at, $2), \
                                next_attempt_at = COALESCE($3, next_attempt_at), \
                                delivered_at = CASE WHEN $4 = 1 THEN $2 ELSE delivered_at END, \
                                gave_up_at = CASE WHEN $4 = 0 AND $3 IS NULL THEN $2 ELSE gave_up_at END \
                         WHERE task_id = $5",
                    )
                    .bind(outcome.n)
                    .bind(outcome.at)
                    .bind(outcome.retry_at)
                    .bind(i64::from(delivered))
                    .bind(&id)
                    .execute(&mut *connection)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// The task's callback with its attempts, if it asked for one.
    pub async fn callback(&self, task_id: TaskId) -> Result<Option<Callback>> {
        let id = task_id.to_string();
        let Some(row) = sqlx::query(
            "SELECT url, next_attempt_at, delivered_at, gave_up_at FROM callbacks WHERE task_id = $1",
        )
        .bind(&id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let attempts = sqlx::query(
            "SELECT n, at, http_status, error FROM callback_attempts WHERE task_id = $1 ORDER BY n",
        )
        .bind(&id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|attempt| {
            Ok(CallbackAttempt {
                n: attempt.try_get("n")?,
                at: attempt.try_get("at")?,
                http_status: attempt.try_get("http_status")?,
                error: attempt.try_get("error")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let delivered_at: Option<i64> = row.try_get("delivered_at")?;
        let gave_up_at: Option<i64> = row.try_get("gave_up_at")?;
        let settled = delivered_at.is_some() || gave_up_at.is_some();
        Ok(Some(Callback {
            url: row.try_get("url")?,
            next_attempt_at: (!settled)
                .then(|| row.try_get("next_attempt_at"))
                .transpose()?,
            delivered_at,
            gave_up_at,
            attempts,
        }))
    }

    /// The account's callback signing secret, created on first use.
    pub async fn webhook_secret(&self, account: AccountId, fresh: String) -> Result<String> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE accounts SET webhook_secret = $1 WHERE id = $2 AND webhook_secret IS NULL",
                    )
                    .bind(&fresh)
                    .bind(account.0)
                    .execute(&mut *connection)
                    .await?;
                    let row = sqlx::query("SELECT webhook_secret FROM accounts WHERE id = $1")
                        .bind(account.0)
                        .fetch_optional(&mut *connection)
                        .await?
                        .ok_or_else(|| Error::NotFound(format!("account {}", account.0)))?;
                    Ok(row.try_get("webhook_secret")?)
                })
            })
            .await
    }

    /// Replaces the callback signing secret of the account named `name` with `fresh`.
    pub async fn rotate_webhook_secret(&self, name: &str, fresh: String) -> Result<()> {
        let name = name.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let updated =
                        sqlx::query("UPDATE accounts SET webhook_secret = $1 WHERE name = $2")
                            .bind(&fresh)
                            .bind(&name)
                            .execute(&mut *connection)
                            .await?;
                    if updated.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("user {name}")));
                    }
                    Ok(())
                })
            })
            .await
    }
}
