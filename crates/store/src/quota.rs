//! Daily quotas: limits per account and what was used per day.

use precache_model::{AccountId, QuotaKind};
use sqlx::{AnyConnection, Row};

use crate::{QuotaCharge, QuotaStatus, Result, Store};

/// What one account may still use of one quota today, as seen inside the writer's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Balance {
    /// The daily limit.
    pub(crate) limit: i64,
    /// Used today before this batch.
    pub(crate) used: i64,
    /// Taken by this batch so far.
    pub(crate) taken: i64,
}

impl Balance {
    /// Whether `amount` fits under the limit.
    pub(crate) fn allows(&self, amount: i64) -> bool {
        self.used + self.taken + amount <= self.limit
    }

    /// Takes `amount` if it fits under the limit.
    pub(crate) fn take(&mut self, amount: i64) -> Result<(), ()> {
        if self.used + self.taken + amount > self.limit {
            return Err(());
        }
        self.taken += amount;
        Ok(())
    }
}

/// The account's balance for `charge`'s quota and day. The usage row is created if missing and,
/// on PostgreSQL, locked until the transaction ends, so concurrent control-plane processes
/// charging the same account serialise on it and the limit holds exactly.
pub(crate) async fn balance(
    connection: &mut AnyConnection,
    account_id: AccountId,
    charge: &QuotaCharge,
) -> Result<Balance> {
    let limit: Option<i64> =
        sqlx::query("SELECT daily_limit FROM quota_limits WHERE account_id = $1 AND kind = $2")
            .bind(account_id.0)
            .bind(charge.kind.as_str())
            .fetch_optional(&mut *connection)
            .await?
            .map(|row| row.try_get("daily_limit"))
            .transpose()?;
    sqlx::query(
        "INSERT INTO quota_usage (account_id, day, kind, used) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (account_id, day, kind) DO NOTHING",
    )
    .bind(account_id.0)
    .bind(&charge.day)
    .bind(charge.kind.as_str())
    .execute(&mut *connection)
    .await?;
    let lock = if connection.backend_name() == "PostgreSQL" {
        " FOR UPDATE"
    } else {
        ""
    };
    let used: i64 = sqlx::query(&format!(
        "SELECT used FROM quota_usage WHERE account_id = $1 AND day = $2 AND kind = $3{lock}"
    ))
    .bind(account_id.0)
    .bind(&charge.day)
    .bind(charge.kind.as_str())
    .fetch_one(&mut *connection)
    .await?
    .try_get("used")?;
    Ok(Balance {
        limit: limit.unwrap_or(charge.default_limit),
        used,
        taken: 0,
    })
}

/// Adds what a batch took to the day's usage.
pub(crate) async fn record_use(
    connection: &mut AnyConnection,
    account_id: AccountId,
    day: &str,
    kind: QuotaKind,
    balance: &Balance,
) -> Result<()> {
    if balance.taken == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE quota_usage SET used = used + $1 WHERE account_id = $2 AND day = $3 AND kind = $4",
    )
    .bind(balance.taken)
    .bind(account_id.0)
    .bind(day)
    .bind(kind.as_str())
    .execute(&mut *connection)
    .await?;
    Ok(())
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

    /// Sets an account's own request rate limit (per second; 0: none), overriding the default.
    /// Kept beside the daily limits, under a kind of its own.
    pub async fn set_rate_limit(&self, account_id: AccountId, per_second: i64) -> Result<()> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO quota_limits (account_id, kind, daily_limit) VALUES ($1, 'requests_per_second', $2) \
                         ON CONFLICT (account_id, kind) DO UPDATE SET daily_limit = $2",
                    )
                    .bind(account_id.0)
                    .bind(per_second)
                    .execute(&mut *connection)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// An account's own request rate limit, if an admin set one.
    pub async fn rate_limit(&self, account_id: AccountId) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT daily_limit FROM quota_limits WHERE account_id = $1 AND kind = 'requests_per_second'",
        )
        .bind(account_id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| row.try_get("daily_limit").map_err(Into::into))
            .transpose()
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
