//! The caching edge: a Pingora reverse proxy with a disk cache, driven by the edge protocol.
//!
//! An edge runs its listeners on runtimes of its own: the data plane (players' `GET`/`HEAD`,
//! routed by `Host` to registered domains, served from [`disk_cache`] or filled from the domain's
//! origin; over plain HTTP and, when configured, over TLS with each domain's certificate) on
//! pingora's no-steal runtime, and, on a Tokio runtime, the admin listener (the edge
//! protocol of `precache_model::edge_protocol`: domain table pushes, prefetch commands, purges,
//! status), which requires the edge's admin secret.

mod access_log;
mod admin;
mod admin_tls;
mod cache_control;
pub mod cache_key;
pub mod control_link;
pub mod disk_cache;
mod domain_routes;
mod edge_metrics;
mod freshness;
#[doc(hidden)]
pub mod fuzzing;
mod hit_path;
mod hop_by_hop;
mod message_framing;
mod origin_tls;
mod player_tls;
mod prefetch;
mod proxy;
mod vary;

use std::future::IntoFuture;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use pingora::cache::lock::CacheLock;
use pingora::server::configuration::ServerConf;
use pingora::server::{Fds, ListenFds};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use rand::RngCore;
use tokio::sync::{oneshot, watch};

pub use crate::access_log::{AccessLog, AccessLogTarget};
use crate::admin::AdminState;
pub use crate::admin_tls::TlsFiles;
pub use crate::control_link::{ControlConfig, LinkState};
pub use crate::disk_cache::CacheLimits;
use crate::disk_cache::DiskCache;
use crate::domain_routes::DomainRoutes;
pub use crate::origin_tls::{OriginCa, OriginCaError};
use crate::prefetch::Prefetcher;
use crate::proxy::EdgeProxy;

/// Limits on talking to origins.
#[derive(Debug, Clone, Copy)]
pub struct OriginTimeouts {
    /// To establish the TCP connection.
    pub connect: Duration,
    /// From sending the request to the first byte of the answer.
    pub first_byte: Duration,
    /// Between two reads of the body.
    pub idle: Duration,
    /// From sending the request to the last byte of the body: an origin that trickles a byte
    /// at a time never trips `idle`, so a fetch still running after this is cut and not cached.
    pub fetch_deadline: Duration,
}

/// Limits on players' connections, so that idle or slow clients cannot hold the edge's sockets.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long an HTTP/1 connection may wait for its first request, or between requests
    /// (and an HTTP/2 connection with no stream open).
    pub idle: Duration,
    /// How long a request's header may take to arrive once its first byte has.
    pub header: Duration,
    /// The largest request header accepted (pingora also caps a header at 256 fields).
    pub max_header_bytes: usize,
}

/// How to run an edge.
pub struct EdgeConfig {
    /// The edge's name, as the control plane knows it.
    pub name: String,
    /// Bound data-plane listener (players' requests).
    pub data_listener: TcpListener,
    /// Bound data-plane listener for players over TLS (HTTP/2 or HTTP/1.1 by ALPN), with the
    /// certificate of the domain named by SNI; none when the edge serves plain HTTP only.
    pub tls_listener: Option<TcpListener>,
    /// Bound admin listener (the edge protocol).
    pub admin_listener: TcpListener,
    /// Where the cache and the domain table live.
    pub data_dir: PathBuf,
    /// Bearer secret the admin listener requires.
    pub admin_secret: String,
    /// Worker threads of the edge's runtime.
    pub threads: usize,
    /// Niceness of the edge's threads (0 leaves them as they are). The all-in-one server
    /// raises it so that a burst of API requests is answered before background fills run.
    pub nice: i32,
    /// Origin timeouts.
    pub timeouts: OriginTimeouts,
    /// Limits on players' connections.
    pub connection_limits: ConnectionLimits,
    /// Disk budget and largest cached object.
    pub cache_limits: CacheLimits,
    /// A standalone edge's link to its control plane; `None` for the embedded edge of `serve`.
    pub control: Option<ControlConfig>,
    /// Serve the admin listener over TLS with this certificate and key.
    pub admin_tls: Option<TlsFiles>,
    /// Renders the process's metrics for `GET /metrics` on the admin listener.
    pub render_metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Where the data plane's access log goes, if anywhere. SIGHUP reopens it.
    pub access_log: Option<AccessLogTarget>,
    /// Roots trusted for https origins beside the system's (`--origin-ca-file`).
    pub origin_ca: Option<OriginCa>,
}

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// Setting up a listener, the runtime or the data dir failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The edge thread ended before it was ready.
    #[error("the edge stopped while starting")]
    Stopped,
}

/// A running edge. Dropping it does not stop it; call [`RunningEdge::stop`].
pub struct RunningEdge {
    data_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long in-flight requests get to finish when the edge stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl RunningEdge {
    /// Where players connect.
    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// Where players connect over TLS, when the edge has a TLS listener.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Where the control plane connects.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Stops accepting, gives in-flight requests `STOP_GRACE` (2 s), then ends the edge's runtime.
    /// Fills cut short leave only temp files, which the next start removes.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn io_error(context: &'static str) -> impl FnOnce(std::io::Error) -> EdgeError {
    move |source| EdgeError::Io { context, source }
}

/// Starts an edge on a runtime of its own (so players' traffic never queues behind control-plane
/// work) and returns once both listeners accept.
pub async fn start(config: EdgeConfig) -> Result<RunningEdge, EdgeError> {
    let data_addr = config
        .data_listener
        .local_addr()
        .map_err(io_error("read the data listener address"))?;
    let admin_addr = config
        .admin_listener
        .local_addr()
        .map_err(io_error("read the admin listener address"))?;
    let tls_addr = config
        .tls_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(io_error("read the TLS listener address"))?;
    let nice = config.nice;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads.max(1))
        .thread_name("edge-worker")
        .on_thread_start(move || set_thread_nice(nice))
        .enable_all()
        .build()
        .map_err(io_error("start the edge runtime"))?;
    let (ready, started) = oneshot::channel();
    let (stop, stopped) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("edge".into())
        .spawn(move || {
            runtime.block_on(run(config, data_addr, ready, stopped));
            // Connections still open after the grace period are cut here.
            runtime.shutdown_timeout(Duration::from_millis(200));
        })
        .map_err(io_error("start the edge thread"))?;
    match started.await {
        Ok(Ok(())) => Ok(RunningEdge {
            data_addr,
            tls_addr,
            admin_addr,
            stop,
            thread: Some(thread),
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(EdgeError::Stopped),
    }
}

/// Sets the calling thread's niceness to `nice` (Linux threads each have their own); for
/// runtimes of background work, started with this in `on_thread_start`.
pub fn set_thread_nice(nice: i32) {
    if nice <= 0 {
        return;
    }
    // On Linux, "the calling process" of setpriority is the calling thread.
    if let Err(error) = rustix::process::setpriority_process(None, nice) {
        tracing::debug!(%error, "could not lower the edge threads' priority");
    }
}

async fn run(
    config: EdgeConfig,
    data_addr: SocketAddr,
    ready: oneshot::Sender<Result<(), EdgeError>>,
    mut stopped: watch::Receiver<bool>,
) {
    let EdgeConfig {
        name,
        data_listener,
        tls_listener,
        admin_listener,
        data_dir,
        admin_secret,
        timeouts,
        connection_limits,
        cache_limits,
        threads,
        nice,
        control,
        admin_tls,
        render_metrics,
        access_log,
        origin_ca,
    } = config;
    let access_log = match access_log.map(AccessLog::start).transpose() {
        Ok(log) => log,
        Err(source) => {
            let _ = ready.send(Err(EdgeError::Io {
                context: "open the access log",
                source,
            }));
            return;
        }
    };
    // logrotate moves the file away, then sends SIGHUP: the log is reopened at its path.
    let mut hangups = match access_log
        .as_ref()
        .map(|_| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()))
    {
        Some(Err(source)) => {
            let _ = ready.send(Err(EdgeError::Io {
                context: "listen for SIGHUP",
                source,
            }));
            return;
        }
        Some(Ok(signal)) => Some(signal),
        None => None,
    };
    let cache_dir = data_dir.join("cache");
    let opened =
        tokio::task::spawn_blocking(move || DiskCache::open(cache_dir, cache_limits)).await;
    let cache: &'static DiskCache = match opened {
        Ok(Ok(cache)) => Box::leak(Box::new(cache)),
        Ok(Err(source)) => {
            let _ = ready.send(Err(EdgeError::Io {
                context: "open the disk cache",
                source,
            }));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err(EdgeError::Stopped));
            return;
        }
    };
    let routes = match DomainRoutes::load(&data_dir).await {
        Ok(routes) => Arc::new(routes),
        Err(source) => {
            let _ = ready.send(Err(EdgeError::Io {
                context: "load the domain table",
                source,
            }));
            return;
        }
    };
    let certificates = routes.certificates();
    let admin_tls = match admin_tls.as_ref().map(admin_tls::acceptor).transpose() {
        Ok(acceptor) => acceptor,
        Err(source) => {
            let _ = ready.send(Err(EdgeError::Io {
                context: "load the admin listener's TLS certificate",
                source,
            }));
            return;
        }
    };
    // The sockets are driven by Tokio, which needs them non-blocking.
    if let Err(source) = admin_listener
        .set_nonblocking(true)
        .and_then(|()| data_listener.set_nonblocking(true))
        .and_then(|()| {
            tls_listener
                .as_ref()
                .map_or(Ok(()), |tls| tls.set_nonblocking(true))
        })
    {
        let _ = ready.send(Err(EdgeError::Io {
            context: "configure the listeners",
            source,
        }));
        return;
    }
    let admin_listener = match tokio::net::TcpListener::from_std(admin_listener) {
        Ok(listener) => listener,
        Err(source) => {
            let _ = ready.send(Err(EdgeError::Io {
                context: "register the admin listener",
                source,
            }));
            return;
        }
    };

    let mut secret_bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut secret_bytes);
    let prefetch_secret: Arc<str> = Arc::from(hex::encode(secret_bytes));
    // With streaming partial writes the lock is released as soon as the fill starts, so waiters
    // only wait for the origin's response headers: bounded by the origin timeouts.
    let cache_lock = Box::leak(CacheLock::new_boxed(timeouts.connect + timeouts.first_byte));
    let edge_metrics = Arc::new(edge_metrics::EdgeMetrics::register());
    let cache_gauges = edge_metrics::CacheGauges::register();
    let link_state = match control {
        Some(_) => control_link::closed_state(&data_dir),
        None => Arc::new(LinkState::always_open()),
    };
    let proxy = EdgeProxy {
        routes: Arc::clone(&routes),
        cache,
        cache_lock,
        prefetch_secret: Arc::clone(&prefetch_secret),
        timeouts,
        link: Arc::clone(&link_state),
        metrics: Arc::clone(&edge_metrics),
        access_log: access_log.clone(),
        request_ids: edge_metrics::RequestIds::new(),
        origin_ca,
    };
    let hits = hit_path::HitPath {
        routes: Arc::clone(&routes),
        cache,
        link: Arc::clone(&link_state),
        metrics: Arc::clone(&edge_metrics),
        access_log: access_log.clone(),
        request_ids: proxy.request_ids.clone(),
        idle: connection_limits.idle.max(Duration::from_secs(1)),
        header_timeout: connection_limits.header,
    };
    let server_conf = Arc::new(ServerConf::default());
    let mut proxy = pingora::proxy::http_proxy(&server_conf, proxy);
    proxy.server_options = Some(server_options(connection_limits));
    let front = hit_path::HitFront {
        proxy: Arc::new(proxy),
        hits,
    };
    let mut service = pingora::services::listening::Service::new("edge data plane".into(), front);
    // Pingora binds by address string unless it finds a socket for that string in its fd table:
    // handing it the socket we bound lets callers use port 0 and learn bind errors up front.
    let bind = data_addr.to_string();
    service.add_tcp(&bind);
    let mut fds = Fds::new();
    fds.add(bind, data_listener.into_raw_fd());
    if let Some(tls_listener) = tls_listener {
        let tls_bind = match tls_listener.local_addr() {
            Ok(addr) => addr.to_string(),
            Err(source) => {
                let _ = ready.send(Err(EdgeError::Io {
                    context: "read the TLS listener address",
                    source,
                }));
                return;
            }
        };
        let settings = match player_tls_settings(&routes) {
            Ok(settings) => settings,
            Err(error) => {
                let _ = ready.send(Err(EdgeError::Io {
                    context: "set up the TLS listener",
                    source: std::io::Error::other(error.to_string()),
                }));
                return;
            }
        };
        service.add_tls_with_settings(&tls_bind, None, settings);
        fds.add(tls_bind, tls_listener.into_raw_fd());
    }
    let fds: ListenFds = Arc::new(parking_lot::Mutex::new(fds));
    let (proxy_stop, proxy_stopped) = watch::channel(false);
    let (service_ready, _) = watch::channel(false);
    // Players' connections run on pingora's no-steal runtime: one single-threaded runtime per
    // thread, each connection staying on the thread that accepted it. On a hit-heavy load this
    // spares the cross-thread wake-ups of a work-stealing runtime (measured in bench/RESULTS.md).
    let data_runtime = pingora_runtime::Runtime::new_no_steal(threads.max(1), "edge-data");
    if let pingora_runtime::Runtime::NoSteal(pools) = &data_runtime {
        for thread in 0..threads.max(1) {
            pools
                .get_runtime_at(thread)
                .spawn(async move { set_thread_nice(nice) });
        }
    }
    let proxy_task = data_runtime.get_handle().spawn(async move {
        service
            .start_service(
                Some(fds),
                proxy_stopped,
                1,
                ServiceReadyNotifier::new(service_ready),
            )
            .await;
    });

    let client = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeouts.connect)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            let source = std::io::Error::other(error);
            let _ = ready.send(Err(EdgeError::Io {
                context: "build the prefetch client",
                source,
            }));
            return;
        }
    };
    let link_task = control.map(|config| {
        let link = control_link::Link {
            name: name.clone(),
            config,
            state: link_state,
            routes: Arc::clone(&routes),
            cache,
        };
        tokio::spawn(link.run(stopped.clone()))
    });
    let admin_state = Arc::new(AdminState {
        render_metrics,
        name,
        secret: Arc::from(admin_secret),
        routes: Arc::clone(&routes),
        cache,
        prefetcher: Prefetcher {
            client,
            data_plane: data_addr,
            secret: prefetch_secret,
            routes,
            cache,
            timeouts,
        },
    });
    let mut admin_stopped = stopped.clone();
    let admin_stopped = async move {
        let _ = admin_stopped.wait_for(|stop| *stop).await;
    };
    let router = admin::router(admin_state);
    let admin_task = match admin_tls {
        None => tokio::spawn(
            // Progress lines are small writes; without TCP_NODELAY each one after the first
            // waits for the client's delayed ACK (40 ms on Linux).
            axum::serve(
                admin_listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                router,
            )
            .with_graceful_shutdown(admin_stopped)
            .into_future(),
        ),
        Some(acceptor) => tokio::spawn(
            axum::serve(
                admin_tls::TlsListener {
                    tcp: admin_listener,
                    acceptor,
                },
                router,
            )
            .with_graceful_shutdown(admin_stopped)
            .into_future(),
        ),
    };
    let _ = ready.send(Ok(()));

    let mut recency_ticks = tokio::time::interval(RECENCY_SAVE_INTERVAL);
    recency_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauge_ticks = tokio::time::interval(GAUGES_EVERY);
    gauge_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expiry_ticks = tokio::time::interval(CERTIFICATE_EXPIRY_EVERY);
    expiry_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            _ = recency_ticks.tick() => save_recency(cache).await,
            _ = gauge_ticks.tick() => cache_gauges.update(cache, &edge_metrics),
            _ = expiry_ticks.tick() => {
                certificates.watch_expiry(std::time::SystemTime::now(), std::time::Instant::now())
            }
            Some(()) = hangup(&mut hangups) => {
                if let Some(log) = access_log.as_ref() {
                    log.reopen();
                }
            }
        }
    }
    let _ = proxy_stop.send(true);
    let _ = tokio::time::timeout(STOP_GRACE, async {
        let _ = proxy_task.await;
        let _ = admin_task.await;
        if let Some(link_task) = link_task {
            let _ = link_task.await;
        }
    })
    .await;
    // Connections still open after the grace period are cut here.
    let _ = tokio::task::spawn_blocking(move || {
        data_runtime.shutdown_timeout(Duration::from_millis(200))
    })
    .await;
    save_recency(cache).await;
    if let Some(log) = access_log {
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }
}

/// The TLS listener's settings: the certificate chosen per handshake from the SNI among the
/// table's certificates, h2 preferred over HTTP/1.1 by ALPN.
fn player_tls_settings(
    routes: &DomainRoutes,
) -> pingora::Result<pingora::listeners::tls::TlsSettings> {
    // No certificate files: the resolver takes their place, so the paths are never read.
    let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(routes.certificates());
    settings.enable_h2();
    Ok(settings)
}

/// Pingora's options for players' connections (the idle and header limits are precache's
/// additions to its vendored pingora-core: see third_party/pingora-core/PRECACHE.md).
fn server_options(limits: ConnectionLimits) -> pingora::apps::HttpServerOptions {
    let mut options = pingora::apps::HttpServerOptions::default();
    options.keepalive_timeout_secs = Some(limits.idle.as_secs().max(1));
    options.h2_idle_timeout = Some(limits.idle);
    options.header_read_timeout = Some(limits.header);
    options.max_request_header_bytes = Some(limits.max_header_bytes);
    options
}

/// The next SIGHUP, or never when nothing listens for it.
async fn hangup(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// How often the players' certificates' days-left gauges are refreshed (and their expiry
/// warnings considered).
const CERTIFICATE_EXPIRY_EVERY: Duration = Duration::from_secs(60);

/// How often the cache's gauges (size, evictions, fills, hit ratio) are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// How often the cache's least-recently-used order is saved (and at stop): what a `kill -9`
/// can lose of it.
const RECENCY_SAVE_INTERVAL: Duration = Duration::from_secs(30);

async fn save_recency(cache: &'static DiskCache) {
    match tokio::task::spawn_blocking(|| cache.save_recency()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not save the cache's recency order"),
        Err(error) => tracing::warn!(%error, "saving the cache's recency order panicked"),
    }
}
