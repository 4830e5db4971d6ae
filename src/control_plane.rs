//! The control plane (API, task engine, edge directory) as `serve` and `api` both run it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use precache_api::{ApiConfig, AppState};
use precache_store::Store;
use precache_tasks::{
    keep_lease, EdgeClient, EdgeDirectory, Engine, EngineConfig, LeaseLost, ProgressBoard,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ServeConfig;

/// How often the control plane checks on its edges (and repairs their domain tables).
const EDGE_SYNC_PERIOD: Duration = Duration::from_secs(2);
/// How long in-flight API requests get to finish on shutdown.
const API_GRACE: Duration = Duration::from_secs(3);

/// A running control plane.
pub struct ControlPlane {
    pub api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    api_task: JoinHandle<std::io::Result<()>>,
    engine_task: JoinHandle<()>,
    engine_runtime: tokio::runtime::Runtime,
    sync_task: JoinHandle<()>,
    progress_task: JoinHandle<()>,
    retention_task: JoinHandle<()>,
    callbacks_task: JoinHandle<()>,
    lease_task: Option<JoinHandle<Result<(), LeaseLost>>>,
    store: Store,
}

/// Who else may run pairs on this database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// This process owns the database (its data dir is locked): every unfinished pair is ours.
    Exclusive,
    /// Other control-plane processes share it: only dead engines' pairs are ours to take.
    Shared,
}

/// Starts the engine (resuming the pairs this process may take), the edge directory and the
/// API on `api_listener`.
pub async fn start(
    config: &ServeConfig,
    store: Store,
    api_listener: TcpListener,
    ownership: Ownership,
    render_metrics: precache_api::RenderMetrics,
) -> anyhow::Result<ControlPlane> {
    store
        .register_worker()
        .await
        .context("register this engine")?;
    let taken = store
        .take_over_pairs(config.engine_lease, ownership == Ownership::Exclusive)
        .await
        .context("take over unfinished pairs")?;
    if taken.pairs > 0 {
        tracing::info!(
            pairs = taken.pairs,
            "resuming pairs left by a stopped engine"
        );
    }

    let timeouts = config.origin_timeouts;
    // Silence from an edge during a prefetch longer than the origin may legitimately be silent.
    let stream_idle =
        timeouts.connect + timeouts.first_byte + timeouts.idle + Duration::from_secs(30);
    let edge_client = EdgeClient::new(
        Duration::from_secs(5),
        stream_idle,
        config.tls_ca_pem.as_deref(),
    )
    .context("build the edge client (is tls_ca_file a PEM certificate?)")?;
    let edges = EdgeDirectory::new(store.clone(), edge_client.clone());
    edges.sync_now().await.context("configure the edges")?;
    let progress = Arc::new(ProgressBoard::default());
    let (engine, engine_handle) = Engine::new(
        store.clone(),
        edges.clone(),
        EngineConfig {
            concurrency: config.task_concurrency,
            per_origin: config.task_per_origin,
            attempts: config.task_attempts,
            backoff: config.task_backoff,
            edge_deadline: config.edge_deadline,
        },
        Arc::clone(&progress),
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
    let sync_task = tokio::spawn(Arc::clone(&edges).run(EDGE_SYNC_PERIOD, stopped.clone()));
    let progress_task = tokio::spawn(progress.run(store.clone(), stopped.clone()));
    let retention_task = tokio::spawn(precache_tasks::retention::run_retention(
        store.clone(),
        precache_tasks::retention::Retention {
            tasks: config.task_retention,
            audit: config.audit_retention,
        },
        stopped.clone(),
    ));
    let lease_task = Some(tokio::spawn(keep_lease(
        store.clone(),
        engine_handle.clone(),
        config.engine_lease,
        stopped.clone(),
    )));

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
            callbacks: config.callbacks.clone(),
            login_limits: config.login_limits,
            trusted_proxies: config.trusted_proxies.clone(),
            task_retention: config.task_retention,
        },
        render_metrics,
    );
    let callbacks_task = tokio::spawn(precache_api::run_callbacks(state.clone(), stopped.clone()));
    api_listener
        .set_nonblocking(true)
        .context("configure the API listener")?;
    let api_listener =
        tokio::net::TcpListener::from_std(api_listener).context("register the API listener")?;
    let api_addr = api_listener.local_addr().context("read the API address")?;
    let api_task = tokio::spawn(crate::api_server::serve(
        api_listener,
        precache_api::router(state),
        config.api_connection_limits,
        stopped.clone(),
    ));
    Ok(ControlPlane {
        api_addr,
        stop,
        api_task,
        engine_task,
        engine_runtime,
        sync_task,
        progress_task,
        retention_task,
        callbacks_task,
        lease_task,
        store,
    })
}

impl ControlPlane {
    /// Runs until SIGTERM/SIGINT, or until the engine's lease is lost (an error: the process
    /// must exit before another engine runs its pairs).
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let Some(mut lease_task) = self.lease_task.take() else {
            return Ok(());
        };
        let lost = tokio::select! {
            signal = crate::serve::wait_for_signal() => {
                signal?;
                self.lease_task = Some(lease_task);
                None
            }
            lease = &mut lease_task => match lease {
                Ok(Err(lost)) => Some(lost),
                _ => None,
            },
        };
        if let Some(lost) = lost {
            // Stop running pairs at once; the store's rows stay as they are for the next owner.
            let _ = self.stop.send(true);
            self.engine_runtime.shutdown_background();
            return Err(anyhow::anyhow!("{lost}; stopping"));
        }
        tracing::info!("stopping: no new requests; unfinished work stays queued in the database");
        self.stop().await;
        Ok(())
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(API_GRACE, self.api_task)
            .await
            .is_err()
        {
            tracing::warn!("API requests still running after the grace period were cut off");
        }
        let _ = self.engine_task.await;
        self.engine_runtime.shutdown_background();
        let _ = self.sync_task.await;
        let _ = self.progress_task.await;
        let _ = self.retention_task.await;
        let _ = self.callbacks_task.await;
        if let Some(lease_task) = self.lease_task {
            let _ = lease_task.await;
        }
        // Handing our pairs back now lets another engine take them without waiting a lease.
        if let Err(error) = self.store.retire_worker().await {
            tracing::warn!(%error, "could not hand this engine's pairs back");
        }
        self.store.close().await;
    }
}
