//! `precache api`: the control plane and task engine only; several may share one PostgreSQL.

use anyhow::Context;
use precache_store::Backend;

use crate::config::ServeConfig;
use crate::control_plane::{self, Ownership};
use crate::serve::{bind, install_metrics, lock_data_dir, open_store, run_role};

/// Runs a control-plane process until SIGTERM or SIGINT.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    run_role(config.log_format, api(config))
}

async fn api(config: ServeConfig) -> anyhow::Result<()> {
    // On SQLite this process owns the database file, so it takes the data dir; on PostgreSQL
    // it is one of several and owns only what it accepts or takes over.
    let sqlite = !config.database_url.starts_with("postgres");
    let _lock = if sqlite {
        Some(lock_data_dir(&config.data_dir)?)
    } else {
        None
    };
    let store = open_store(&config, sqlite).await?;
    let ownership = match store.backend() {
        Backend::Sqlite => Ownership::Exclusive,
        Backend::Postgres => Ownership::Shared,
    };
    let api_listener = bind(config.api_listen, "the API")?;
    let control = control_plane::start(&config, store, api_listener, ownership, install_metrics()?)
        .await
        .context("start the control plane")?;
    eprintln!("precache: serving api=http://{}", control.api_addr);
    tracing::info!(api = %control.api_addr, engine = ?ownership, "control plane ready");
    control.run_until_stopped().await
}
