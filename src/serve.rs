//! `precache serve`: store, control plane and one embedded edge in one process.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use precache_api::PasswordHasher;
use precache_model::time::now_millis;
use precache_store::sealed::{SecretKey, SecretKeys};
use precache_store::Store;
use rand::RngCore;

use crate::config::{LogFormat, ServeConfig};
use crate::control_plane::{self, Ownership};

/// Runs `role` on a multi-threaded runtime with logging set up.
pub fn run_role<F>(log_format: LogFormat, role: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    init_logging(log_format);
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("precache")
        .build()
        .context("start the runtime")?;
    let result = runtime.block_on(role);
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Runs the all-in-one server until SIGTERM or SIGINT.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    run_role(config.log_format, serve(config))
}

/// Every connection, cached object being read and database file is an open file: a soft limit
/// left at the usual 1,024 would refuse players long before the machine is busy. The soft limit
/// is raised to the hard one (what the process may do without privileges), and said.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (limit.current, limit.maximum) else {
        tracing::info!(?limit, "open files: no finite limit to raise");
        return;
    };
    if soft >= hard {
        tracing::info!(
            open_files = soft,
            "open files: the soft limit is the hard limit"
        );
        return;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    ) {
        Ok(()) => tracing::info!(from = soft, to = hard, "open files: raised the soft limit"),
        Err(error) => {
            tracing::warn!(%error, open_files = soft, "open files: could not raise the soft limit")
        }
    }
}

/// Dependencies held at `warn` unless `RUST_LOG` names them: pingora's debug lines print whole
/// request headers (players' `Authorization` and `Cookie` among them), which a `RUST_LOG=debug`
/// meant for precache's own lines must not write to the log.
const QUIET_DEPENDENCIES: [&str; 4] = [
    "pingora_core=warn",
    "pingora_proxy=warn",
    "pingora_cache=warn",
    "sqlx=warn",
];

fn log_filter(spec: Option<&str>) -> tracing_subscriber::EnvFilter {
    let spec = spec.unwrap_or("info");
    let mut filter = tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for directive in QUIET_DEPENDENCIES {
        let target = directive.split('=').next().unwrap_or(directive);
        if !spec.contains(target) {
            if let Ok(directive) = directive.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

fn init_logging(format: LogFormat) {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // One JSON object per line, the request's span (with its id) included.
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Installs the process's metrics recorder; the answer renders them in the Prometheus format.
pub fn install_metrics() -> anyhow::Result<precache_api::RenderMetrics> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    // Latency buckets from 1 ms to 10 min: API answers at the bottom, pairs (large prefetches)
    // at the top.
    let buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0, 600.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .context("configure the metrics")?
        .install_recorder()
        .context("install the metrics recorder")?;
    Ok(std::sync::Arc::new(move || handle.render()))
}

/// 256 random bits, hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Binds a listener, naming what it is for in the error.
pub fn bind(address: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).with_context(|| format!("listen for {what} on {address}"))
}

/// Takes the data dir for this process: two processes on one SQLite file or one cache directory
/// would corrupt each other's view of both.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data dir {}", data_dir.display()))?;
    let lock_path = data_dir.join("precache.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    lock.try_lock().map_err(|_| {
        anyhow!(
            "another precache is using the data dir {}",
            data_dir.display()
        )
    })?;
    Ok(lock)
}

/// Opens the database and creates the first admin on an empty one.
/// Opens the database; `own_key` lets this process make up the key that seals credentials
/// when none is configured (a process alone with its data dir: `serve`, or `api` on SQLite).
pub async fn open_store(config: &ServeConfig, own_key: bool) -> anyhow::Result<Store> {
    let mut store = Store::open(&config.database_url)
        .await
        .with_context(|| format!("open the database {}", config.database_url))?;
    if let Some(keys) = secret_keys(config, own_key)? {
        let primary = keys.primary.id().to_string();
        store = store.with_secret_keys(keys);
        let resealed = store
            .reseal_credentials()
            .await
            .context("seal credentials with the new key")?;
        if resealed > 0 {
            tracing::info!(resealed, key = %primary, "credentials sealed again with the new key");
        }
    }
    bootstrap_admin(&store, config.admin_password.clone()).await?;
    Ok(store)
}

/// The keys sealing credentials at rest: the configured file or, for a process alone with its
/// data dir (`own_key`), `secret.key` there, generated (0600) at the first start. Several
/// `api` processes on PostgreSQL must share one key, so none is made up for them.
fn secret_keys(config: &ServeConfig, own_key: bool) -> anyhow::Result<Option<SecretKeys>> {
    let read = |path: &Path| -> anyhow::Result<SecretKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the secret key {}", path.display()))?;
        SecretKey::from_text(&text)
            .map_err(|e| anyhow!("the secret key {} is not usable: {e}", path.display()))
    };
    let previous = config
        .previous_secret_key_file
        .as_deref()
        .map(read)
        .transpose()?;
    let primary = match (&config.secret_key, &config.secret_key_file) {
        (Some(text), _) => SecretKey::from_text(text)
            .map_err(|e| anyhow!("PRECACHE_SECRET_KEY is not usable: {e}"))?,
        (None, Some(path)) => read(path)?,
        (None, None) if !own_key => {
            tracing::info!("no --secret-key-file: backends with credentials cannot be used");
            return Ok(None);
        }
        (None, None) => {
            let path = config.data_dir.join("secret.key");
            if !path.exists() {
                std::fs::create_dir_all(&config.data_dir)
                    .with_context(|| format!("create {}", config.data_dir.display()))?;
                write_private(&path, SecretKey::generate().as_bytes())?;
                tracing::info!(path = %path.display(), "generated the key that seals credentials; back it up");
            }
            read(&path)?
        }
    };
    Ok(Some(SecretKeys { primary, previous }))
}

/// Writes a file only its owner can read (created 0600, never briefly readable by others),
/// whole or not at all: a temp file synced, then renamed over `path`.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = std::path::PathBuf::from(temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("write {}", temp.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("write {}", temp.display()))?;
    file.sync_all()
        .with_context(|| format!("sync {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("write {}", path.display()))
}

async fn bootstrap_admin(store: &Store, password: Option<String>) -> anyhow::Result<()> {
    if store.has_accounts().await.context("read accounts")? {
        return Ok(());
    }
    let hasher = PasswordHasher::new();
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
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    let render_metrics = install_metrics()?;
    let store = open_store(&config, true).await?;
    let api_listener = bind(config.api_listen, "the API")?;
    let edge_secret = config
        .edge_admin_secret
        .clone()
        .unwrap_or_else(random_secret);
    let edge = precache_edge::start(precache_edge::EdgeConfig {
        name: config.edge_name.clone(),
        data_listener: bind(config.edge_listen, "the edge")?,
        tls_listener: config
            .edge_tls_listen
            .map(|address| bind(address, "the edge over TLS"))
            .transpose()?,
        admin_listener: bind(config.edge_admin_listen, "the edge admin protocol")?,
        data_dir: config.data_dir.join("edge"),
        admin_secret: edge_secret.clone(),
        threads: config.edge_threads,
        nice: config.edge_nice,
        cache_limits: config.cache_limits,
        timeouts: config.origin_timeouts,
        connection_limits: config.edge_connection_limits,
        control: None,
        admin_tls: None,
        render_metrics: render_metrics.clone(),
        access_log: config.edge_access_log.clone(),
        origin_ca: config.origin_ca.clone(),
    })
    .await
    .context("start the edge")?;
    let admin_url = format!("http://{}", edge.admin_addr());
    store
        .upsert_edge(&config.edge_name, &admin_url, &edge_secret, now_millis())
        .await
        .context("register the embedded edge")?;

    // `serve` owns its database (the data-dir lock): every unfinished pair is its own.
    let control = control_plane::start(
        &config,
        store,
        api_listener,
        Ownership::Exclusive,
        render_metrics,
    )
    .await?;
    // Tests and scripts read this line to find the ports (any of them may be 0 in the config).
    eprintln!(
        "precache: serving api=http://{} edge=http://{} edge_admin=http://{}{}",
        control.api_addr,
        edge.data_addr(),
        edge.admin_addr(),
        tls_field(&edge)
    );
    tracing::info!(api = %control.api_addr, edge = %edge.data_addr(), edge_admin = %edge.admin_addr(), "ready");
    let result = control.run_until_stopped().await;
    edge.stop().await;
    tracing::info!("stopped");
    result
}

/// ` edge_tls=https://ADDR` for the start line when the edge serves players over TLS.
pub fn tls_field(edge: &precache_edge::RunningEdge) -> String {
    edge.tls_addr()
        .map(|address| format!(" edge_tls=https://{address}"))
        .unwrap_or_default()
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
