//! API tokens, stored as hashes only.

use sqlx::Row;

use crate::accounts::decode_account;
use crate::{AccountId, Result, Store, TokenGrant};

impl Store {
    /// Stores a new token's hash.
    pub async fn insert_token(
        &self,
        hash: &str,
        account_id: AccountId,
        created_at: i64,
        expires_at: i64,
    ) -> Result<()> {
        let hash = hash.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO tokens (hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                        .bind(&hash)
                        .bind(account_id.0)
                        .bind(created_at)
                        .bind(expires_at)
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            })
            .await
    }

    /// The grant behind a token hash, whatever its state (the caller checks expiry and revocation).
    pub async fn token_grant(&self, hash: &str) -> Result<Option<TokenGrant>> {
        let row = sqlx::query(
            "SELECT a.id, a.name, a.role, a.password_hash, a.created_at, t.expires_at, t.revoked_at, \
                    r.daily_limit AS rate_limit \
             FROM tokens t JOIN accounts a ON a.id = t.account_id \
             LEFT JOIN quota_limits r ON r.account_id = a.id AND r.kind = 'requests_per_second' \
             WHERE t.hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(TokenGrant {
            account: decode_account(&row)?,
            expires_at: row.try_get("expires_at")?,
            revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
            rate_limit: row.try_get("rate_limit")?,
        }))
    }

    /// Revokes a token. Returns whether a live token was revoked.
    pub async fn revoke_token(&self, hash: &str, revoked_at: i64) -> Result<bool> {
        let hash = hash.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let updated = sqlx::query(
                        "UPDATE tokens SET revoked_at = $1 WHERE hash = $2 AND revoked_at IS NULL",
                    )
                    .bind(revoked_at)
                    .bind(&hash)
                    .execute(&mut *connection)
                    .await?;
                    Ok(updated.rows_affected() == 1)
                })
            })
            .await
    }

    /// Deletes tokens that expired before `cutoff`; they can never be used again.
    pub async fn delete_expired_tokens(&self, cutoff: i64) -> Result<u64> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let deleted = sqlx::query("DELETE FROM tokens WHERE expires_at < $1")
                        .bind(cutoff)
                        .execute(&mut *connection)
                        .await?;
                    Ok(deleted.rows_affected())
                })
            })
            .await
    }
}
