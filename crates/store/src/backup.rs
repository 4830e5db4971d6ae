//! Online backup of the embedded database: a consistent copy while `serve` keeps writing.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use crate::{Error, Result};

/// What a backup holds, read back from the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    /// Accounts in the copy.
    pub accounts: i64,
    /// Registered domains.
    pub domains: i64,
    /// Edges and backend targets.
    pub edges: i64,
    /// Tasks of every kind and state.
    pub tasks: i64,
    /// The copy's size in bytes.
    pub bytes: u64,
}

/// Copies the SQLite database `database` to `to`, a file that must not exist yet. The copy is
/// one read transaction of the source (`VACUUM INTO`): a snapshot of a moment, taken beside a
/// running writer, which WAL mode lets go on committing meanwhile. The copy is checked
/// (`PRAGMA quick_check`) before its facts are answered; a failed copy is removed.
pub async fn backup_sqlite(database: &Path, to: &Path) -> Result<BackupFacts> {
    if !database.is_file() {
        return Err(Error::Unavailable(format!(
            "no database at {}",
            database.display()
        )));
    }
    if to.exists() {
        return Err(Error::Unavailable(format!(
            "{} exists already; a backup never overwrites a file",
            to.display()
        )));
    }
    let to_text = to
        .to_str()
        .ok_or_else(|| Error::Unavailable(format!("{} is not UTF-8", to.display())))?;
    let mut source = open(database, true).await?;
    let copied = sqlx::query("VACUUM INTO $1")
        .bind(to_text)
        .execute(&mut source)
        .await;
    source.close().await?;
    if let Err(error) = copied {
        // VACUUM INTO may have left a partial file behind.
        let _ = std::fs::remove_file(to);
        return Err(error.into());
    }
    match facts(to).await {
        Ok(facts) => Ok(facts),
        Err(error) => {
            let _ = std::fs::remove_file(to);
            Err(error)
        }
    }
}

async fn open(file: &Path, read_only: bool) -> Result<SqliteConnection> {
    Ok(SqliteConnectOptions::new()
        .filename(file)
        .read_only(read_only)
        // The writer of a running `serve` may hold the lock for a commit's moment.
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

async fn facts(copy: &Path) -> Result<BackupFacts> {
    let mut connection = open(copy, true).await?;
    let check: String = sqlx::query("PRAGMA quick_check")
        .fetch_one(&mut connection)
        .await?
        .try_get(0)?;
    if check != "ok" {
        return Err(Error::Unavailable(format!(
            "the copy fails its integrity check: {check}"
        )));
    }
    let facts = BackupFacts {
        accounts: count(&mut connection, "accounts").await?,
        domains: count(&mut connection, "domains").await?,
        edges: count(&mut connection, "edges").await?,
        tasks: count(&mut connection, "tasks").await?,
        bytes: std::fs::metadata(copy)
            .map_err(|error| Error::Unavailable(format!("{}: {error}", copy.display())))?
            .len(),
    };
    connection.close().await?;
    Ok(facts)
}

async fn count(connection: &mut SqliteConnection, table: &str) -> Result<i64> {
    let query = format!("SELECT COUNT(*) FROM {table}");
    Ok(sqlx::query(&query)
        .fetch_one(connection)
        .await?
        .try_get(0)?)
}
