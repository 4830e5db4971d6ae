//! `precache`: one binary for every role: `serve` (all-in-one), `api` (control plane), `edge`.

mod api;
mod api_server;
mod backup;
mod cli;
mod config;
mod control_plane;
mod edge;
mod env;
mod serve;

use clap::{Parser, Subcommand};

// glibc's malloc keeps freed memory per thread arena and raises its mmap threshold after large
// frees, so argon2's 19 MiB blocks and bursts on the blocking pool left the process at a GiB of
// RSS; mimalloc returns memory and is faster on the many small allocations of request handling.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Self-hosted CDN cache management: prefetch and refresh objects on caching edges.
#[derive(Debug, Parser)]
#[command(name = "precache", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Control plane, task engine and one embedded edge in one process, state in SQLite.
    Serve(config::ServeArgs),
    /// Control plane and task engine only; several may share one PostgreSQL.
    Api(config::ServeArgs),
    /// One caching edge, joined to a control plane (`--control`, `--join-token`, `--name`).
    Edge(config::ServeArgs),
    /// Log in to a control plane; the token is kept in your config dir (mode 0600).
    Login(cli::LoginArgs),
    /// Prefetch URLs into every edge (from arguments, --from-file, or - for stdin).
    Prefetch(cli::PrefetchArgs),
    /// Refresh (purge) URLs or directories on every edge.
    Refresh(cli::RefreshArgs),
    /// A task's status, per URL and per edge.
    Status(cli::StatusArgs),
    /// Your tasks, newest first.
    Tasks(cli::TasksArgs),
    /// Today's quotas and what remains.
    Quota(cli::QuotaArgs),
    /// Accounts, domains and edges (admins).
    Admin(cli::AdminArgs),
    /// A consistent copy of the embedded database while `serve` runs (--data-dir, --to FILE).
    Backup(backup::BackupArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Login(args) => return cli::run(cli::login(args)),
        Command::Prefetch(args) => return cli::run(cli::prefetch(args)),
        Command::Refresh(args) => return cli::run(cli::refresh(args)),
        Command::Status(args) => return cli::run(cli::status(args)),
        Command::Tasks(args) => return cli::run(cli::tasks(args)),
        Command::Quota(args) => return cli::run(cli::quota(args)),
        Command::Admin(args) => return cli::run(cli::admin(args)),
        Command::Backup(args) => backup::run(args, &env::ProcessEnv),
        Command::Serve(args) => {
            config::ServeConfig::load(args, &env::ProcessEnv).and_then(serve::run)
        }
        Command::Api(args) => config::ServeConfig::load(args, &env::ProcessEnv).and_then(api::run),
        Command::Edge(args) => {
            config::ServeConfig::load(args, &env::ProcessEnv).and_then(edge::run)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("precache: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
