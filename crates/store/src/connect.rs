//! Opening the database: backend choice, connection settings and migrations.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection};

use crate::{Error, Result};

/// The database a [`crate::Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite: one process owns the file (the all-in-one default).
    Sqlite,
    /// PostgreSQL: several control-plane processes may share it.
    Postgres,
}

/// Connections for reading concurrently; SQLite in WAL mode lets them run beside the writer.
/// Each is a thread in sqlx; more than a few only adds context switches on a small machine.
const READ_CONNECTIONS: u32 = 4;

/// Opens the read pool and the writer's own connection, and migrates the schema.
pub(crate) async fn connect(database_url: &str) -> Result<(AnyPool, AnyConnection, Backend)> {
    sqlx::any::install_default_drivers();
    let backend = if database_url.starts_with("sqlite:") {
        Backend::Sqlite
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        return connect_postgres(database_url).await;
    } else {
        return Err(Error::Unavailable(format!(
            "database URL must start with sqlite: or postgres:, got {database_url:?}"
        )));
    };
    let database_url = with_create_mode(database_url);
    let options = AnyConnectOptions::from_str(&database_url)?;

    let mut writer = AnyConnection::connect_with(&options).await?;
    // WAL lets readers run while the writer commits; FULL fsyncs the WAL at every commit, so a
    // commit (and the answer that follows it) survives a power loss, not only a process crash.
    for pragma in [
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        "PRAGMA busy_timeout = 5000",
    ] {
        sqlx::query(pragma).execute(&mut writer).await?;
    }
    sqlx::migrate!("./migrations/sqlite")
        .run(&mut writer)
        .await
        .map_err(|e| Error::Unavailable(format!("migrate the database schema: {e}")))?;

    let pool = AnyPoolOptions::new()
        .max_connections(READ_CONNECTIONS)
        // A ping before every query doubles the round trips to sqlx's connection threads; a
        // broken connection shows up as an error on the query itself.
        .test_before_acquire(false)
        .after_connect(|connection, _meta| {
            Box::pin(async move {
                // Readers must never write: every write goes through the group-commit writer.
                for pragma in ["PRAGMA busy_timeout = 5000", "PRAGMA query_only = ON"] {
                    sqlx::query(pragma).execute(&mut *connection).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok((pool, writer, backend))
}

/// PostgreSQL: a pool for reads, the writer's own connection, and the schema migrated under an
/// advisory lock (sqlx takes one), so several processes may start at once.
async fn connect_postgres(database_url: &str) -> Result<(AnyPool, AnyConnection, Backend)> {
    let options = AnyConnectOptions::from_str(database_url)?;
    let mut writer = AnyConnection::connect_with(&options).await?;
    sqlx::migrate!("./migrations/postgres")
        .run(&mut writer)
        .await
        .map_err(|e| Error::Unavailable(format!("migrate the database schema: {e}")))?;
    let pool = AnyPoolOptions::new()
        .max_connections(READ_CONNECTIONS)
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    Ok((pool, writer, Backend::Postgres))
}

/// SQLite only creates a missing database file when asked to (`mode=rwc`).
fn with_create_mode(database_url: &str) -> String {
    if !database_url.starts_with("sqlite:") || database_url.contains("mode=") {
        return database_url.to_string();
    }
    let separator = if database_url.contains('?') { '&' } else { '?' };
    format!("{database_url}{separator}mode=rwc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        assert_eq!(
            with_create_mode("sqlite:///tmp/a.db"),
            "sqlite:///tmp/a.db?mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite:///tmp/a.db?mode=ro"),
            "sqlite:///tmp/a.db?mode=ro"
        );
    }
}
