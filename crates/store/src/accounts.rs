//! Accounts: creation, lookup, bootstrap of the first admin.

use precache_model::time::now_millis;
use precache_model::{AccountId, Role};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Account, Error, Result, Store};

const ACCOUNT_COLUMNS: &str = "id, name, role, password_hash, created_at";

pub(crate) fn decode_account(row: &AnyRow) -> Result<Account> {
    let role: String = row.try_get("role")?;
    Ok(Account {
        id: AccountId(row.try_get("id")?),
        name: row.try_get("name")?,
        role: role.parse().map_err(Error::Corrupt)?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Creates an account. `Conflict` when the name is taken.
    pub async fn create_account(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<Account> {
        let taken = format!("an account named {name:?}");
        let (name, password_hash) = (name.to_string(), password_hash.to_string());
        let created_at = now_millis();
        let result = self
            .writer
            .run(move |connection| {
                Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "INSERT INTO accounts (name, password_hash, role, created_at) VALUES ($1, $2, $3, $4) \
                         RETURNING {ACCOUNT_COLUMNS}"
                    ))
                    .bind(&name)
                    .bind(&password_hash)
                    .bind(role.as_str())
                    .bind(created_at)
                    .fetch_one(&mut *connection)
                    .await?;
                    decode_account(&row)
                })
            })
            .await;
        match result {
            Err(error) if error.is_unique_violation() => Err(Error::Conflict(taken)),
            other => other,
        }
    }

    /// Creates the account `admin` with role admin, only when there are no accounts at all.
    /// Returns whether it was created.
    pub async fn create_bootstrap_admin(&self, password_hash: &str) -> Result<bool> {
        let password_hash = password_hash.to_string();
        let created_at = now_millis();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let inserted = sqlx::query(
                        "INSERT INTO accounts (name, password_hash, role, created_at) \
                         SELECT 'admin', $1, 'admin', $2 WHERE NOT EXISTS (SELECT 1 FROM accounts)",
                    )
                    .bind(&password_hash)
                    .bind(created_at)
                    .execute(&mut *connection)
                    .await?;
                    Ok(inserted.rows_affected() == 1)
                })
            })
            .await
    }

    /// Whether any account exists.
    pub async fn has_accounts(&self) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM accounts")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// The account with this name.
    pub async fn account_by_name(&self, name: &str) -> Result<Option<Account>> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_account).transpose()
    }

    /// Every account, by name.
    pub async fn list_accounts(&self) -> Result<Vec<Account>> {
        let rows = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_account).collect()
    }

    /// Changes an account's password hash and/or role. `NotFound` when there is no such account;
    /// `Refused` when it would leave no admin.
    pub async fn update_account(
        &self,
        name: &str,
        password_hash: Option<String>,
        role: Option<Role>,
    ) -> Result<Account> {
        let name = name.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    if role == Some(Role::User) {
                        refuse_if_last_admin(connection, &name, "demote").await?;
                    }
                    let row = sqlx::query(&format!(
                        "UPDATE accounts SET password_hash = COALESCE($1, password_hash), role = COALESCE($2, role) \
                         WHERE name = $3 RETURNING {ACCOUNT_COLUMNS}"
                    ))
                    .bind(password_hash)
                    .bind(role.map(Role::as_str))
                    .bind(&name)
                    .fetch_optional(&mut *connection)
                    .await?;
                    match row {
                        Some(row) => decode_account(&row),
                        None => Err(Error::NotFound(format!("account {name:?}"))),
                    }
                })
            })
            .await
    }

    /// Deletes an account and revokes its tokens. Refused while it owns domains (they would be
    /// left without an owner) or when it is the last admin. Its tasks stay for the record.
    pub async fn delete_account(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let Some(row) = sqlx::query(&format!(
                        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"
                    ))
                    .bind(&name)
                    .fetch_optional(&mut *connection)
                    .await?
                    else {
                        return Err(Error::NotFound(format!("account {name:?}")));
                    };
                    let account = decode_account(&row)?;
                    refuse_if_last_admin(connection, &name, "delete").await?;
                    let owned: i64 =
                        sqlx::query("SELECT COUNT(*) AS n FROM domains WHERE account_id = $1")
                            .bind(account.id.0)
                            .fetch_one(&mut *connection)
                            .await?
                            .try_get("n")?;
                    if owned > 0 {
                        return Err(Error::Refused(format!(
                            "account {name:?} still owns {owned} domain(s); delete them first"
                        )));
                    }
                    sqlx::query("DELETE FROM tokens WHERE account_id = $1")
                        .bind(account.id.0)
                        .execute(&mut *connection)
                        .await?;
                    sqlx::query("DELETE FROM accounts WHERE id = $1")
                        .bind(account.id.0)
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            })
            .await
    }
}

async fn refuse_if_last_admin(
    connection: &mut sqlx::AnyConnection,
    name: &str,
    action: &str,
) -> Result<()> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS admins, SUM(CASE WHEN name = $1 THEN 1 ELSE 0 END) AS is_target \
         FROM accounts WHERE role = 'admin'",
    )
    .bind(name)
    .fetch_one(&mut *connection)
    .await?;
    let admins: i64 = row.try_get("admins")?;
    let is_target: Option<i64> = row.try_get("is_target")?;
    if admins <= 1 && is_target.unwrap_or(0) > 0 {
        return Err(Error::Refused(format!(
            "cannot {action} {name:?}: it is the last admin"
        )));
    }
    Ok(())
}
