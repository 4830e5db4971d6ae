//! `precache backup`: a consistent copy of the embedded database, taken while `serve` runs.

use std::path::PathBuf;

use anyhow::Context;

use crate::env::Env;

/// Where the copy comes from and goes.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The data dir of the `serve` to back up (its precache.db) [env: PRECACHE_DATA_DIR] [default: ./precache-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The file to write the copy to; it must not exist. The copy leaves out the key that seals credentials (secret.key in the data dir, or your --secret-key-file): keep that apart
    #[arg(long)]
    to: PathBuf,
}

/// Writes the copy and says what it holds.
pub fn run(args: BackupArgs, env: &impl Env) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .or_else(|| env.get("PRECACHE_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("./precache-data"));
    if env
        .get("PRECACHE_DATABASE_URL")
        .is_some_and(|url| url.starts_with("postgres"))
    {
        anyhow::bail!(
            "PRECACHE_DATABASE_URL names PostgreSQL: back it up with pg_dump (docs/operations.md)"
        );
    }
    let database = data_dir.join(crate::config::DATABASE_FILE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    let facts = runtime
        .block_on(precache_store::backup_sqlite(&database, &args.to))
        .with_context(|| format!("back up {} to {}", database.display(), args.to.display()))?;
    println!(
        "backed up {} to {}: accounts={} domains={} edges={} tasks={} bytes={}",
        database.display(),
        args.to.display(),
        facts.accounts,
        facts.domains,
        facts.edges,
        facts.tasks,
        facts.bytes
    );
    Ok(())
}
