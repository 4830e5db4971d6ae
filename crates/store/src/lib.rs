//! Durable state of the control plane: accounts, tokens, domains, edges, backends, tasks and
//! quotas.
//!
//! One [`Store`] runs the same portable SQL on SQLite (the default, a file in the data dir) and,
//! through sqlx's `Any` driver, on PostgreSQL. What is durable and when:
//!
//! - Every write goes through the group-commit writer (`writer.rs`): it is committed (SQLite WAL with
//!   `synchronous=FULL`, or a PostgreSQL commit) before the call returns. A task and all its URL
//!   and pair rows are one commit, so an answered `reqId` survives a crash.
//! - Pair progress (started, finished) is written the same way. Every unfinished pair belongs to
//!   one engine (a control-plane process, [`Store::worker_id`]) that heartbeats in
//!   `engine_workers`; when one dies, another takes its pairs over ([`Store::take_over_pairs`]).
//! - Reads go to a pool of connections and see only committed state.

mod accounts;
mod audit;
mod backends;
mod backup;
mod callbacks;
mod certificates;
mod connect;
mod domains;
mod edges;
mod error;
mod login_failures;
mod quota;
mod records;
mod retention;
pub mod sealed;
mod task_pairs;
mod tasks;
mod tokens;
mod workers;
mod writer;

pub use audit::{AuditEntry, AuditQuery, NewAuditEntry};
pub use backup::{backup_sqlite, BackupFacts};
pub use callbacks::AttemptOutcome;
pub use certificates::CertificateForEdges;
pub use connect::Backend;
pub use domains::EDGES_BACKEND;
pub use edges::EdgeAddresses;
pub use error::{Error, Result};
pub use login_failures::LoginFailures;
pub use precache_model::{AccountId, EdgeId, TaskId};
pub use records::*;
pub use workers::TakenOver;

use std::sync::Arc;

use sqlx::AnyPool;

use crate::writer::Writer;

/// The control plane's database. Cheap to clone; every clone shares the pools and the writer.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    writer: Writer,
    backend: Backend,
    worker: Arc<str>,
    /// Seals and opens backends' credentials and certificates' keys; `None` until [`Store::with_secret_keys`].
    keys: Option<Arc<sealed::SecretKeys>>,
}

impl Store {
    /// Connects to `database_url` (`sqlite://...` or `postgres://...`), creating the SQLite file
    /// if needed, and brings the schema up to date.
    pub async fn open(database_url: &str) -> Result<Store> {
        let (pool, writer_connection, backend) = connect::connect(database_url).await?;
        // A PostgreSQL server may restart under a running process; a SQLite file cannot go away.
        let reconnect = match backend {
            Backend::Postgres => Some(std::str::FromStr::from_str(database_url)?),
            Backend::Sqlite => None,
        };
        // Unique per process and start: a restarted process is a new engine, and the old one's
        // pairs are taken over like any dead engine's.
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        let worker: Arc<str> = Arc::from(format!("{}-{}", std::process::id(), &uuid[..12]));
        Ok(Store {
            pool,
            writer: Writer::start(writer_connection, backend, Arc::clone(&worker), reconnect),
            backend,
            worker,
            keys: None,
        })
    }

    /// This store with the keys that seal secrets at rest (backends' credentials, certificates'
    /// keys).
    pub fn with_secret_keys(mut self, keys: sealed::SecretKeys) -> Store {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// This process's engine: the owner of the pairs it accepts and takes over.
    pub fn worker_id(&self) -> &str {
        &self.worker
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
