//! Failed logins per account name and per client address, shared by every control-plane
//! process on the database so that a guesser cannot multiply its attempts by spreading them
//! over processes. The policy (how many, for how long) is the API's; this module only counts.

use sqlx::Row;

use crate::{Result, Store};

/// The failures recorded for one subject (`account:<name>` or `address:<ip>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailures {
    /// The subject as recorded.
    pub subject: String,
    /// Failures in a row, each no more than the window after the previous one.
    pub failures: i64,
    /// The last failure, ms since the epoch.
    pub last_failure_at: i64,
}

impl Store {
    /// The recorded failures of these subjects (those that have some).
    pub async fn login_failures(&self, subjects: &[String]) -> Result<Vec<LoginFailures>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=subjects.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT subject, failures, last_failure_at FROM login_failures \
             WHERE subject IN ({placeholders})"
        );
        let mut query = sqlx::query(&sql);
        for subject in subjects {
            query = query.bind(subject);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(LoginFailures {
                    subject: row.try_get("subject")?,
                    failures: row.try_get("failures")?,
                    last_failure_at: row.try_get("last_failure_at")?,
                })
            })
            .collect()
    }

    /// Counts one failure at `at` for each subject: the count goes on when the previous failure
    /// is at or after `fresh_since`, and starts again at 1 otherwise. Rows whose last failure is
    /// before `fresh_since` are deleted in the same statement batch, so names a guesser makes
    /// up do not pile up. One small write: a flood of failures costs the writer little, and
    /// failures come no faster than password verifications, which the API bounds.
    pub async fn record_login_failure(
        &self,
        subjects: Vec<String>,
        at: i64,
        fresh_since: i64,
    ) -> Result<()> {
        if subjects.is_empty() {
            return Ok(());
        }
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM login_failures WHERE last_failure_at < $1")
                        .bind(fresh_since)
                        .execute(&mut *connection)
                        .await?;
                    let values = (0..subjects.len())
                        .map(|n| format!("(${}, 1, $1)", n + 3))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = format!(
                        "INSERT INTO login_failures (subject, failures, last_failure_at) \
                         VALUES {values} \
                         ON CONFLICT (subject) DO UPDATE SET \
                           failures = CASE WHEN login_failures.last_failure_at < $2 THEN 1 \
                                           ELSE login_failures.failures + 1 END, \
                           last_failure_at = excluded.last_failure_at"
                    );
                    let mut query = sqlx::query(&sql).bind(at).bind(fresh_since);
                    for subject in &subjects {
                        query = query.bind(subject);
                    }
                    query.execute(&mut *connection).await?;
                    Ok(())
                })
            })
            .await
    }

    /// Forgets a subject's failures (a successful login clears its account's).
    pub async fn clear_login_failures(&self, subject: String) -> Result<()> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM login_failures WHERE subject = $1")
                        .bind(&subject)
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            })
            .await
    }
}
