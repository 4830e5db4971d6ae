//! Durable state of the control plane: accounts, tokens, domains, edges, tasks and quotas.
//!
//! One [`Store`] runs the same portable SQL on SQLite (the default, a file in the data dir) and,
//! through sqlx's `Any` driver, on PostgreSQL. What is durable and when:
//!
//! - Every write goes through the group-commit [`writer`]: it is committed (SQLite WAL with
//!   `synchronous=FULL`, or a PostgreSQL commit) before the call returns. A task and all its URL
//!   and pair rows are one commit, so an answered `reqId` survives a crash.
//! - Pair progress (started, finished) is written the same way; a pair left `running` by a crash
//!   is handed back to the engine at the next start ([`Store::reset_running_pairs`]).
//! - Reads go to a pool of connections and see only committed state.

mod accounts;
mod connect;
mod domains;
mod edges;
mod error;
mod quota;
mod records;
mod task_pairs;
mod tasks;
mod tokens;
mod writer;

pub use connect::Backend;
pub use error::{Error, Result};
pub use precache_model::{AccountId, EdgeId, TaskId};
pub use records::*;

use sqlx::AnyPool;

use crate::writer::Writer;

/// The control plane's database. Cheap to clone; every clone shares the pools and the writer.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    writer: Writer,
    backend: Backend,
}

impl Store {
    /// Connects to `database_url` (`sqlite://...` or `postgres://...`), creating the SQLite file
    /// if needed, and brings the schema up to date.
    pub async fn open(database_url: &str) -> Result<Store> {
        let (pool, writer_connection, backend) = connect::connect(database_url).await?;
        Ok(Store {
            pool,
            writer: Writer::start(writer_connection, backend),
            backend,
        })
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Waits until every write handed to the writer so far is committed (or failed).
    pub async fn flush(&self) {
        self.writer.flush().await;
    }

    /// Waits until every write handed to the writer so far is committed, then closes the pools.
    pub async fn close(&self) {
        self.writer.flush().await;
        self.pool.close().await;
    }
}
