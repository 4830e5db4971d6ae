//! `precache serve`: wires store, edge, engine and API into one process, and shuts them down.

use std::fs::File;
use std::future::IntoFuture;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{anyhow, Context};
use axum::serve::ListenerExt;
use precache_api::{ApiConfig, AppState, PasswordHasher};
use precache_model::time::now_millis;
use precache_store::Store;
use precache_tasks::{EdgeClient, EdgeDirectory, Engine, EngineConfig};
use rand::RngCore;
use tokio::sync::watch;

use crate::config::ServeConfig;

/// How often the control plane checks on its edges (and repairs their domain tables).
const EDGE_SYNC_PERIOD: Duration = Duration::from_secs(2);
/// How long in-flight API requests get to finish on shutdown.
const API_GRACE: Duration = Duration::from_secs(3);

/// Runs the all-in-one server until SIGTERM or SIGINT.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("precache")
        .build()
        .context("start the runtime")?;
    let result = runtime.block_on(serve(config));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,pingora_core=warn,pingora_proxy=warn,pingora_cache=warn,sqlx=warn",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn bind(address: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).with_context(|| format!("listen for {what} on {address}"))
}

/// Takes the data dir for this process: two servers on one SQLite file and one cache directory
/// would corrupt each other's view of both.
fn lock_data_dir(config: &ServeConfig) -> anyhow::Result<File> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data dir {}", config.data_dir.display()))?;
    let lock_path = config.data_dir.join("precache.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    lock.try_lock().map_err(|_| {
        anyhow!(
            "another precache is using the data dir {}",
            config.data_dir.display()
        )
    })?;
    Ok(lock)
}

async fn bootstrap_admin(
    store: &Store,
    hasher: &PasswordHasher,
    password: Option<String>,
) -> anyhow::Result<()> {
    if store.has_accounts().await.context("read accounts")? {
        return Ok(());
    }
    let (password, generated) = match password {
        Some(password) => (password, false),
        None => (random_secret()[..24].to_string(), true),
    };
    let hash = hasher
        .hash(&password)
        .await
        .map_err(|e| anyhow!("hash the admin password: {e}"))?;
    if store
        .create_bootstrap_admin(&hash)
        .await
        .context("create the admin account")?
        && generated
    {
        // Printed once: the only place this password ever appears.
        eprintln!("precache: created account \"admin\" with password {password}");
    }
    Ok(())
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let _data_dir_lock = lock_data_dir(&config)?;
    let store = Store::open(&config.database_url)
        .await
        .with_context(|| format!("open the database {}", config.database_url))?;
    let api_state_hasher = PasswordHasher::new();
    bootstrap_admin(&store, &api_state_hasher, config.admin_password.clone()).await?;
    // This process owns the database (the data-dir lock), so a running pair is one a crash cut off.
    let reset = store
        .reset_running_pairs()
        .await
        .context("hand back interrupted pairs")?;
    if reset > 0 {
        tracing::info!(pairs = reset, "resuming pairs interrupted by the last stop");
    }

    let api_listener = bind(config.api_listen, "the API")?;
    let edge_secret = config
        .edge_admin_secret
        .clone()
        .unwrap_or_else(random_secret);
    let edge = precache_edge::start(precache_edge::EdgeConfig {
        name: config.edge_name.clone(),
        data_listener: bind(config.edge_listen, "the edge")?,
        admin_listener: bind(config.edge_admin_listen, "the edge admin protocol")?,
        data_dir: config.data_dir.join("edge"),
        admin_secret: edge_secret.clone(),
        threads: config.edge_threads,
        nice: config.edge_nice,
        cache_limits: config.cache_limits,
        timeouts: config.origin_timeouts,
    })
    .await
    .context("start the edge")?;
    let admin_url = format!("http://{}", edge.admin_addr());
    store
        .upsert_edge(&config.edge_name, &admin_url, &edge_secret, now_millis())
        .await
        .context("register the embedded edge")?;

    let timeouts = config.origin_timeouts;
    // Silence from an edge during a prefetch longer than the origin may legitimately be silent.
    let stream_idle =
        timeouts.connect + timeouts.first_byte + timeouts.idle + Duration::from_secs(30);
    let edge_client =
        EdgeClient::new(Duration::from_secs(5), stream_idle).context("build the edge client")?;
    let edges = EdgeDirectory::new(store.clone(), edge_client.clone());
    edges.sync_now().await.context("configure the edges")?;
    let (engine, engine_handle) = Engine::new(
        store.clone(),
        edges.clone(),
        edge_client,
        EngineConfig {
            concurrency: config.task_concurrency,
            per_origin: config.task_per_origin,
            attempts: config.task_attempts,
            backoff: config.task_backoff,
        },
    );
    // A warm phase whose refresh ended just before a crash is released now.
    let released = store
        .release_all_held()
        .await
        .context("release held pairs")?;
    if released > 0 {
        tracing::info!(
            pairs = released,
            "released warm phases of finished refreshes"
        );
    }
    // Queued before the API accepts anything, so no pair is queued twice.
    let pending = store
        .pending_pairs()
        .await
        .context("load unfinished pairs")?;
    if !pending.is_empty() {
        tracing::info!(pairs = pending.len(), "resuming unfinished pairs");
    }
    engine_handle.enqueue(pending.into_iter().map(Into::into).collect());

    let (stop, stopped) = watch::channel(false);
    // The engine's pair runners are background work: on a runtime of their own, at the edge's
    // lower priority, they cannot delay API answers on a busy machine.
    let nice = config.edge_nice;
    let engine_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("engine")
        .on_thread_start(move || precache_edge::set_thread_nice(nice))
        .enable_all()
        .build()
        .context("start the engine's runtime")?;
    let engine_task = engine_runtime.spawn(engine.run(stopped.clone()));
    let sync_task = tokio::spawn(edges.clone().run(EDGE_SYNC_PERIOD, stopped.clone()));

    let state = AppState::new(
        store.clone(),
        engine_handle,
        edges,
        ApiConfig {
            token_ttl: config.token_ttl,
            max_urls_per_request: config.max_urls_per_request,
            max_body_bytes: (config.max_urls_per_request * 4096).max(64 * 1024),
            quota_time_zone: config.quota_time_zone.0.clone(),
            quota_time_zone_name: config.quota_time_zone.1.clone(),
            rate_limit_per_account: config.rate_limit_per_account,
        },
    );
    api_listener
        .set_nonblocking(true)
        .context("configure the API listener")?;
    let api_listener =
        tokio::net::TcpListener::from_std(api_listener).context("register the API listener")?;
    let api_addr = api_listener.local_addr().context("read the API address")?;
    let mut api_stopped = stopped.clone();
    let api_task = tokio::spawn(
        axum::serve(
            api_listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            precache_api::router(state),
        )
        .with_graceful_shutdown(async move {
            let _ = api_stopped.wait_for(|stop| *stop).await;
        })
        .into_future(),
    );
    // Tests and scripts read this line to find the ports (any of them may be 0 in the config).
    eprintln!(
        "precache: serving api=http://{api_addr} edge=http://{} edge_admin=http://{}",
        edge.data_addr(),
        edge.admin_addr()
    );
    tracing::info!(api = %api_addr, edge = %edge.data_addr(), edge_admin = %edge.admin_addr(), "ready");

    wait_for_signal().await?;
    tracing::info!("stopping: no new requests; unfinished work stays queued in the database");
    let _ = stop.send(true);
    if tokio::time::timeout(API_GRACE, api_task).await.is_err() {
        tracing::warn!("API requests still running after the grace period were cut off");
    }
    let _ = engine_task.await;
    engine_runtime.shutdown_background();
    let _ = sync_task.await;
    store.close().await;
    edge.stop().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
