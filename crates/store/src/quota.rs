//! Daily quotas: limits per account and what was used per day.

use precache_model::{AccountId, QuotaKind};
use sqlx::{AnyConnection, Row};

use crate::{Error, QuotaCharge, QuotaStatus, Result, Store};

async fn limit_of(
    connection: &mut AnyConnection,
    account_id: AccountId,
    kind: QuotaKind,
) -> Result<Option<i64>> {
    let row =
        sqlx::query("SELECT daily_limit FROM quota_limits WHERE account_id = $1 AND kind = $2")
            .bind(account_id.0)
            .bind(kind.as_str())
            .fetch_optional(&mut *connection)
            .await?;
    Ok(row.map(|row| row.try_get("daily_limit")).transpose()?)
}

/// Consumes `charge` from the account's quota inside the caller's transaction, or fails with
/// `QuotaExceeded` having consumed nothing. The conditional UPDATE is what makes this safe when
/// several control-plane processes charge the same account at once.
pub(crate) async fn charge(
    connection: &mut AnyConnection,
    account_id: AccountId,
    charge: &QuotaCharge,
) -> Result<()> {
    let limit = limit_of(connection, account_id, charge.kind)
        .await?
        .unwrap_or(charge.default_limit);
    sqlx::query(
        "INSERT INTO quota_usage (account_id, day, kind, used) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (account_id, day, kind) DO NOTHING",
    )
    .bind(account_id.0)
    .bind(&charge.day)
    .bind(charge.kind.as_str())
    .execute(&mut *connection)
    .await?;
    let updated = sqlx::query(
        "UPDATE quota_usage SET used = used + $4 WHERE account_id = $1 AND day = $2 AND kind = $3 AND used + $4 <= $5",
    )
    .bind(account_id.0)
    .bind(&charge.day)
    .bind(charge.kind.as_str())
    .bind(charge.amount)
    .bind(limit)
    .execute(&mut *connection)
    .await?;
    if updated.rows_affected() == 1 {
        return Ok(());
    }
    let used: i64 = sqlx::query(
        "SELECT used FROM quota_usage WHERE account_id = $1 AND day = $2 AND kind = $3",
    )
    .bind(account_id.0)
    .bind(&charge.day)
    .bind(charge.kind.as_str())
    .fetch_one(&mut *connection)
    .await?
    .try_get("used")?;
    Err(Error::QuotaExceeded {
        kind: charge.kind,
        limit,
        used,
        requested: charge.amount,
    })
}

impl Store {
    /// The account's limits and today's use, for every quota kind. `default_limit` gives the
    /// limit of a kind the account has no limit of its own for.
    pub async fn quota_status(
        &self,
        account_id: AccountId,
        day: &str,
        default_limit: impl Fn(QuotaKind) -> i64,
    ) -> Result<Vec<QuotaStatus>> {
        let limits =
            sqlx::query("SELECT kind, daily_limit FROM quota_limits WHERE account_id = $1")
                .bind(account_id.0)
                .fetch_all(&self.pool)
                .await?;
        let usage =
            sqlx::query("SELECT kind, used FROM quota_usage WHERE account_id = $1 AND day = $2")
                .bind(account_id.0)
                .bind(day)
                .fetch_all(&self.pool)
                .await?;
        let lookup =
            |rows: &[sqlx::any::AnyRow], kind: QuotaKind, column: &str| -> Result<Option<i64>> {
                for row in rows {
                    if row.try_get::<String, _>("kind")? == kind.as_str() {
                        return Ok(Some(row.try_get(column)?));
                    }
                }
                Ok(None)
            };
        QuotaKind::ALL
            .into_iter()
            .map(|kind| {
                Ok(QuotaStatus {
                    kind,
                    limit: lookup(&limits, kind, "daily_limit")?
                        .unwrap_or_else(|| default_limit(kind)),
                    used: lookup(&usage, kind, "used")?.unwrap_or(0),
                })
            })
            .collect()
    }

    /// Sets an account's daily limit for one kind.
    pub async fn set_quota_limit(
        &self,
        account_id: AccountId,
        kind: QuotaKind,
        daily_limit: i64,
    ) -> Result<()> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO quota_limits (account_id, kind, daily_limit) VALUES ($1, $2, $3) \
                         ON CONFLICT (account_id, kind) DO UPDATE SET daily_limit = $3",
                    )
                    .bind(account_id.0)
                    .bind(kind.as_str())
                    .bind(daily_limit)
                    .execute(&mut *connection)
                    .await?;
                    Ok(())
                })
            })
            .await
    }
}
