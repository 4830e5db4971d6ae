//! Configuration of `precache serve`, `api` and `edge`: flags, `PRECACHE_*` variables, a TOML file, defaults.
//!
//! Every setting can come from four places; the first that has it wins: the command-line flag,
//! the environment variable, the `--config` file (keys are the flag names with `_`), the default.
//! The raw layers are merged first, then checked once into a [`ServeConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::Deserialize;

use crate::env::Env;

/// A duration written like `30s`, `5m` or `24h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;

    fn from_str(text: &str) -> Result<HumanDuration, Self::Err> {
        humantime::parse_duration(text).map(HumanDuration)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<HumanDuration, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: one line per event.
    #[default]
    Text,
    /// For log pipelines: one JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?} is not text or json")),
        }
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LogFormat, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A size written like `50GiB`, `512MiB`, `10GB` or `1048576` (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size like 50GiB"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, KiB, MiB, GiB, TiB)"
                ))
            }
        };
        let bytes = number * multiplier as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("{text:?} is out of range"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(bytes) => Ok(ByteSize(bytes)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Declares the settings once: the flag (from the field name), its variable, its type. The
/// struct is both the clap flags and the TOML file's schema; every field is optional so layers
/// can be merged.
macro_rules! settings {
    ($(#[$meta:meta])* pub struct $name:ident { $( $(#[doc = $doc:literal])* $field:ident: $ty:ty, env $env:literal; )* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, clap::Args, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( $(#[doc = $doc])* #[arg(long)] pub $field: Option<$ty>, )*
        }

        impl $name {
            fn from_env(env: &dyn Env) -> anyhow::Result<$name> {
                Ok($name { $( $field: match env.get($env) {
                    Some(text) => Some(text.parse::<$ty>().map_err(|e| anyhow!("{}={text:?}: {e}", $env))?),
                    None => None,
                }, )* })
            }

            /// Each setting from `self`, or else from `lower`.
            fn or(self, lower: $name) -> $name {
                $name { $( $field: self.$field.or(lower.$field), )* }
            }
        }
    };
}

/// The embedded database's file in the data dir.
pub const DATABASE_FILE: &str = "precache.db";

settings! {
    /// Settings of `precache serve`.
    pub struct ServeSettings {
        /// Control-plane API address [env: PRECACHE_API_LISTEN] [default: 127.0.0.1:8080]
        api_listen: SocketAddr, env "PRECACHE_API_LISTEN";
        /// Edge (data plane) address [env: PRECACHE_EDGE_LISTEN] [default: 127.0.0.1:8081]
        edge_listen: SocketAddr, env "PRECACHE_EDGE_LISTEN";
        /// Edge (data plane) address for players over HTTPS: each domain's certificate by SNI, HTTP/2 or HTTP/1.1 by ALPN [env: PRECACHE_EDGE_TLS_LISTEN] [default: none, plain HTTP only]
        edge_tls_listen: SocketAddr, env "PRECACHE_EDGE_TLS_LISTEN";
        /// Edge admin (edge protocol) address; port 0 picks a free one [env: PRECACHE_EDGE_ADMIN_LISTEN] [default: 127.0.0.1:0]
        edge_admin_listen: SocketAddr, env "PRECACHE_EDGE_ADMIN_LISTEN";
        /// Where state and cache live [env: PRECACHE_DATA_DIR] [default: ./precache-data]
        data_dir: PathBuf, env "PRECACHE_DATA_DIR";
        /// Database; a sqlite: URL [env: PRECACHE_DATABASE_URL] [default: the SQLite file in the data dir]
        database_url: String, env "PRECACHE_DATABASE_URL";
        /// Bearer secret of the embedded edge's admin protocol, to drive it directly (purges from scripts); prefer the variable to the flag [env: PRECACHE_EDGE_ADMIN_SECRET] [default: random at every start]
        edge_admin_secret: String, env "PRECACHE_EDGE_ADMIN_SECRET";
        /// Name of the embedded edge [env: PRECACHE_EDGE_NAME] [default: local]
        edge_name: String, env "PRECACHE_EDGE_NAME";
        /// Worker threads of the edge [env: PRECACHE_EDGE_THREADS] [default: one per core]
        edge_threads: usize, env "PRECACHE_EDGE_THREADS";
        /// Disk budget of the edge's cache; least recently used objects are evicted beyond it [env: PRECACHE_CACHE_SIZE] [default: 10GiB]
        cache_size: ByteSize, env "PRECACHE_CACHE_SIZE";
        /// Largest object the edge caches; larger ones are proxied without caching [env: PRECACHE_MAX_OBJECT_SIZE] [default: the cache size]
        max_object_size: ByteSize, env "PRECACHE_MAX_OBJECT_SIZE";
        /// Free space the edge's cache leaves on its disk; below it, responses are proxied without caching [env: PRECACHE_CACHE_MIN_FREE] [default: 1GiB]
        cache_min_free: ByteSize, env "PRECACHE_CACHE_MIN_FREE";
        /// Niceness of the edge's threads, so API answers go first when the CPU is short; 0 to disable [env: PRECACHE_EDGE_NICE] [default: 5]
        edge_nice: i32, env "PRECACHE_EDGE_NICE";
        /// Lifetime of API tokens [env: PRECACHE_TOKEN_TTL] [default: 24h]
        token_ttl: HumanDuration, env "PRECACHE_TOKEN_TTL";
        /// Most URLs in one prefetch request [env: PRECACHE_MAX_URLS_PER_REQUEST] [default: 10]
        max_urls_per_request: usize, env "PRECACHE_MAX_URLS_PER_REQUEST";
        /// Time zone whose midnight resets daily quotas [env: PRECACHE_QUOTA_TIME_ZONE] [default: Asia/Shanghai]
        quota_time_zone: String, env "PRECACHE_QUOTA_TIME_ZONE";
        /// API requests per second each (non-admin) account may make, with bursts of twice that; 0 for no limit [env: PRECACHE_RATE_LIMIT_PER_ACCOUNT] [default: 0]
        rate_limit_per_account: u32, env "PRECACHE_RATE_LIMIT_PER_ACCOUNT";
        /// (URL, edge) pairs run at once [env: PRECACHE_TASK_CONCURRENCY] [default: 64]
        task_concurrency: usize, env "PRECACHE_TASK_CONCURRENCY";
        /// Pairs run at once against one origin [env: PRECACHE_TASK_PER_ORIGIN] [default: 8]
        task_per_origin: usize, env "PRECACHE_TASK_PER_ORIGIN";
        /// Attempts per pair on 5xx, timeouts and resets [env: PRECACHE_TASK_ATTEMPTS] [default: 3]
        task_attempts: u32, env "PRECACHE_TASK_ATTEMPTS";
        /// Wait before a second attempt, doubled each time [env: PRECACHE_TASK_BACKOFF] [default: 1s]
        task_backoff: HumanDuration, env "PRECACHE_TASK_BACKOFF";
        /// Origin connect timeout [env: PRECACHE_ORIGIN_CONNECT_TIMEOUT] [default: 5s]
        origin_connect_timeout: HumanDuration, env "PRECACHE_ORIGIN_CONNECT_TIMEOUT";
        /// Origin first-byte timeout [env: PRECACHE_ORIGIN_FIRST_BYTE_TIMEOUT] [default: 30s]
        origin_first_byte_timeout: HumanDuration, env "PRECACHE_ORIGIN_FIRST_BYTE_TIMEOUT";
        /// Origin idle (between reads) timeout [env: PRECACHE_ORIGIN_IDLE_TIMEOUT] [default: 30s]
        origin_idle_timeout: HumanDuration, env "PRECACHE_ORIGIN_IDLE_TIMEOUT";
        /// Longest a fetch from the origin may take, request to last byte, for a prefetch or a player's miss; a slower one is cut and not cached [env: PRECACHE_ORIGIN_FETCH_DEADLINE] [default: 1h]
        origin_fetch_deadline: HumanDuration, env "PRECACHE_ORIGIN_FETCH_DEADLINE";
        /// Edge: how long a player's connection may stay idle before its first request and between requests [env: PRECACHE_EDGE_IDLE_TIMEOUT] [default: 60s]
        edge_idle_timeout: HumanDuration, env "PRECACHE_EDGE_IDLE_TIMEOUT";
        /// Edge: how long a player's request header may take to arrive once it has begun; slower senders are disconnected [env: PRECACHE_EDGE_HEADER_TIMEOUT] [default: 10s]
        edge_header_timeout: HumanDuration, env "PRECACHE_EDGE_HEADER_TIMEOUT";
        /// Edge: the largest request header a player may send (at most 256 fields) [env: PRECACHE_EDGE_MAX_HEADER_SIZE] [default: 64KiB]
        edge_max_header_size: ByteSize, env "PRECACHE_EDGE_MAX_HEADER_SIZE";
        /// API: how long a request header may take to arrive once it has begun; slower senders are disconnected [env: PRECACHE_API_HEADER_TIMEOUT] [default: 10s]
        api_header_timeout: HumanDuration, env "PRECACHE_API_HEADER_TIMEOUT";
        /// API: how long a connection may stay idle before its first request and between requests [env: PRECACHE_API_IDLE_TIMEOUT] [default: 60s]
        api_idle_timeout: HumanDuration, env "PRECACHE_API_IDLE_TIMEOUT";
        /// API: the largest request header (request line and fields); larger is answered 431 [env: PRECACHE_API_MAX_HEADER_SIZE] [default: 64KiB]
        api_max_header_size: ByteSize, env "PRECACHE_API_MAX_HEADER_SIZE";
        /// API: the most header fields in one request; more is answered 431 [env: PRECACHE_API_MAX_HEADERS] [default: 100]
        api_max_headers: usize, env "PRECACHE_API_MAX_HEADERS";
        /// Failed logins of one account name that lock it for --login-failure-window; 0 for no limit [env: PRECACHE_LOGIN_FAILURES_PER_ACCOUNT] [default: 5]
        login_failures_per_account: u32, env "PRECACHE_LOGIN_FAILURES_PER_ACCOUNT";
        /// Failed logins from one client address (IPv6: one /64), whatever the names, that lock it; 0 for no limit [env: PRECACHE_LOGIN_FAILURES_PER_ADDRESS] [default: 20]
        login_failures_per_address: u32, env "PRECACHE_LOGIN_FAILURES_PER_ADDRESS";
        /// Failures further apart start the count again; a lock lasts this long after the last failure [env: PRECACHE_LOGIN_FAILURE_WINDOW] [default: 15m]
        login_failure_window: HumanDuration, env "PRECACHE_LOGIN_FAILURE_WINDOW";
        /// Proxies (comma-separated addresses or CIDR blocks) whose X-Forwarded-For names the client for login throttling; without one the header is ignored [env: PRECACHE_TRUSTED_PROXIES] [default: none]
        trusted_proxy: String, env "PRECACHE_TRUSTED_PROXIES";
        /// How long a pair waits for its edge to come back before it fails as "edge unreachable" [env: PRECACHE_EDGE_DEADLINE] [default: 10m]
        edge_deadline: HumanDuration, env "PRECACHE_EDGE_DEADLINE";
        /// Control plane: an engine silent this long is dead and its pairs are taken over [env: PRECACHE_ENGINE_LEASE] [default: 30s]
        engine_lease: HumanDuration, env "PRECACHE_ENGINE_LEASE";
        /// Control plane: tasks that ended longer ago than this are deleted with their URLs and pairs; their reqId then answers 3001 [env: PRECACHE_TASK_RETENTION] [default: 90d]
        task_retention: HumanDuration, env "PRECACHE_TASK_RETENTION";
        /// Control plane: audit log entries older than this are deleted [env: PRECACHE_AUDIT_RETENTION] [default: 365d]
        audit_retention: HumanDuration, env "PRECACHE_AUDIT_RETENTION";
        /// `precache edge`: base URL of the control plane's API [env: PRECACHE_CONTROL]
        control: String, env "PRECACHE_CONTROL";
        /// `precache edge`: one-time join token from `POST /cdn_api/edges` (needed until the edge has joined) [env: PRECACHE_JOIN_TOKEN]
        join_token: String, env "PRECACHE_JOIN_TOKEN";
        /// `precache edge`: the edge's name, as an admin created it [env: PRECACHE_NAME]
        name: String, env "PRECACHE_NAME";
        /// `precache edge`: base URL the control plane reaches the admin listener at [env: PRECACHE_EDGE_ADMIN_URL] [default: http:// and the admin listener's address]
        edge_admin_url: String, env "PRECACHE_EDGE_ADMIN_URL";
        /// `precache edge`: base URL players and child edges reach the data plane at [env: PRECACHE_EDGE_DATA_URL] [default: http:// and the edge listener's address]
        edge_data_url: String, env "PRECACHE_EDGE_DATA_URL";
        /// `precache edge`: without word from the control plane this long, serve past the cache until caught up [env: PRECACHE_OFFLINE_AFTER] [default: 10s]
        offline_after: HumanDuration, env "PRECACHE_OFFLINE_AFTER";
        /// Edge: CA certificates (PEM, one or more) trusted for https origins besides the system's roots [env: PRECACHE_ORIGIN_CA_FILE] [default: none, the system's roots only]
        origin_ca_file: PathBuf, env "PRECACHE_ORIGIN_CA_FILE";
        /// A CA certificate (PEM) trusted, besides the public roots, for the edge protocol over https: the control plane's calls to edges, and an edge's to the control plane [env: PRECACHE_TLS_CA_FILE]
        tls_ca_file: PathBuf, env "PRECACHE_TLS_CA_FILE";
        /// `precache edge`: serve the admin listener over TLS with this certificate chain (PEM); advertise an https:// --edge-admin-url [env: PRECACHE_EDGE_ADMIN_TLS_CERT]
        edge_admin_tls_cert: PathBuf, env "PRECACHE_EDGE_ADMIN_TLS_CERT";
        /// `precache edge`: the private key (PEM) of --edge-admin-tls-cert [env: PRECACHE_EDGE_ADMIN_TLS_KEY]
        edge_admin_tls_key: PathBuf, env "PRECACHE_EDGE_ADMIN_TLS_KEY";
        /// The key (32 bytes in base64) that seals backends' credentials and domains' certificate keys at rest; every control-plane process of one database needs the same [env: PRECACHE_SECRET_KEY_FILE] [default: secret.key in the data dir, generated at the first start; none on PostgreSQL]
        secret_key_file: PathBuf, env "PRECACHE_SECRET_KEY_FILE";
        /// The same key given as its base64 text (for secret stores that hand out variables); prefer the variable to the flag [env: PRECACHE_SECRET_KEY]
        secret_key: String, env "PRECACHE_SECRET_KEY";
        /// While rotating: the key the credentials (and certificate keys) were sealed with; they are sealed again with --secret-key-file at start [env: PRECACHE_PREVIOUS_SECRET_KEY_FILE]
        previous_secret_key_file: PathBuf, env "PRECACHE_PREVIOUS_SECRET_KEY_FILE";
        /// The edge's access log: one JSON object per line for every player request; `-` for standard output; SIGHUP reopens the file [env: PRECACHE_EDGE_ACCESS_LOG] [default: none]
        edge_access_log: String, env "PRECACHE_EDGE_ACCESS_LOG";
        /// Log lines as `text` or `json` (one object per line, with the request's id) [env: PRECACHE_LOG_FORMAT] [default: text]
        log_format: LogFormat, env "PRECACHE_LOG_FORMAT";
        /// Hosts (comma-separated names or IPs) completion callbacks may reach even on loopback or private addresses [env: PRECACHE_CALLBACK_ALLOW_HOSTS] [default: none]
        callback_allow_hosts: String, env "PRECACHE_CALLBACK_ALLOW_HOSTS";
        /// Wait before a callback's second attempt, doubled each time up to 10 minutes; attempts go on for an hour [env: PRECACHE_CALLBACK_BACKOFF] [default: 5s]
        callback_backoff: HumanDuration, env "PRECACHE_CALLBACK_BACKOFF";
    }
}

/// `precache serve`, `api` or `edge` on the command line: one set of settings, of which each
/// role reads those that concern it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the flags, with `_`) [env: PRECACHE_CONFIG]
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ServeSettings,
}

/// The checked configuration `precache serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Control-plane API address.
    pub api_listen: SocketAddr,
    /// Edge data-plane address.
    pub edge_listen: SocketAddr,
    /// Edge data-plane address for players over HTTPS, if any.
    pub edge_tls_listen: Option<SocketAddr>,
    /// Edge admin address.
    pub edge_admin_listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: String,
    /// Name of the embedded edge.
    pub edge_name: String,
    /// The embedded edge's admin secret, when fixed by the operator.
    pub edge_admin_secret: Option<String>,
    /// Edge worker threads.
    pub edge_threads: usize,
    /// Edge threads' niceness.
    pub edge_nice: i32,
    /// Edge cache budget and largest object.
    pub cache_limits: precache_edge::CacheLimits,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Most URLs per request.
    pub max_urls_per_request: usize,
    /// Quota time zone and its name.
    pub quota_time_zone: (jiff::tz::TimeZone, String),
    /// Requests per second per account (0: none).
    pub rate_limit_per_account: u32,
    /// Pairs at once.
    pub task_concurrency: usize,
    /// Pairs at once per origin.
    pub task_per_origin: usize,
    /// Attempts per pair.
    pub task_attempts: u32,
    /// First retry backoff.
    pub task_backoff: Duration,
    /// Origin timeouts.
    pub origin_timeouts: precache_edge::OriginTimeouts,
    /// Limits on players' connections to the edge.
    pub edge_connection_limits: precache_edge::ConnectionLimits,
    /// Limits on connections to the API.
    pub api_connection_limits: crate::api_server::ApiConnectionLimits,
    /// Login throttling.
    pub login_limits: precache_api::LoginLimits,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: precache_api::TrustedProxies,
    /// Bootstrap admin password from `PRECACHE_ADMIN_PASSWORD`.
    pub admin_password: Option<String>,
    /// How long a pair waits for an unreachable edge.
    pub edge_deadline: Duration,
    /// The engine lease.
    pub engine_lease: Duration,
    /// How long ended tasks are kept.
    pub task_retention: Duration,
    /// How long audit log entries are kept.
    pub audit_retention: Duration,
    /// `precache edge`: the control plane's URL.
    pub control: Option<String>,
    /// `precache edge`: the join token.
    pub join_token: Option<String>,
    /// `precache edge`: advertised admin URL.
    pub edge_admin_url: Option<String>,
    /// `precache edge`: advertised data URL.
    pub edge_data_url: Option<String>,
    /// `precache edge`: cut-off detection.
    pub offline_after: Duration,
    /// Extra CA for the edge protocol over https, read at start.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Roots for https origins besides the system's, read at start.
    pub origin_ca: Option<precache_edge::OriginCa>,
    /// `precache edge`: TLS for the admin listener.
    pub edge_admin_tls: Option<precache_edge::TlsFiles>,
    /// Where the edge's access log goes.
    pub edge_access_log: Option<precache_edge::AccessLogTarget>,
    /// The key file sealing credentials, when given.
    pub secret_key_file: Option<PathBuf>,
    /// The key itself (base64), when given instead of a file.
    pub secret_key: Option<String>,
    /// The previous key file, while rotating.
    pub previous_secret_key_file: Option<PathBuf>,
    /// How completion callbacks are delivered.
    pub callbacks: precache_api::CallbackPolicy,
    /// How log lines are written.
    pub log_format: LogFormat,
}

fn read_file(path: &Path) -> anyhow::Result<ServeSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
}

fn positive(value: usize, name: &str) -> anyhow::Result<usize> {
    if value == 0 {
        return Err(anyhow!("{name} must be at least 1"));
    }
    Ok(value)
}

/// The edge's largest request header: between 1 KiB (a request line and a few fields) and
/// pingora's own 1 MiB ceiling.
fn header_size(size: Option<ByteSize>) -> anyhow::Result<usize> {
    let size = size.map_or(64 << 10, |s| s.0);
    if !(1 << 10..=1 << 20).contains(&size) {
        return Err(anyhow!(
            "edge_max_header_size must be between 1KiB and 1MiB"
        ));
    }
    usize::try_from(size).map_err(|_| anyhow!("edge_max_header_size is too large"))
}

/// The API's largest request header: at least 1 KiB (a request line and a few fields), at most
/// 1 MiB.
fn api_header_size(size: Option<ByteSize>) -> anyhow::Result<usize> {
    let size = size.map_or(64 << 10, |s| s.0);
    if !(1 << 10..=1 << 20).contains(&size) {
        return Err(anyhow!("api_max_header_size must be between 1KiB and 1MiB"));
    }
    usize::try_from(size).map_err(|_| anyhow!("api_max_header_size is too large"))
}

fn cache_limits(
    size: Option<ByteSize>,
    max_object: Option<ByteSize>,
    min_free: Option<ByteSize>,
) -> anyhow::Result<precache_edge::CacheLimits> {
    let size = size.map_or(10 << 30, |s| s.0);
    if size == 0 {
        return Err(anyhow!("cache_size must be more than 0"));
    }
    let max_object = max_object.map_or(size, |s| s.0);
    if max_object > size {
        return Err(anyhow!(
            "max_object_size ({max_object} bytes) is larger than cache_size ({size} bytes)"
        ));
    }
    Ok(precache_edge::CacheLimits {
        size,
        max_object,
        min_free: min_free.map_or(1 << 30, |s| s.0),
    })
}

impl ServeConfig {
    /// Merges flags, environment, config file and defaults, and checks the result.
    pub fn load(args: ServeArgs, env: &dyn Env) -> anyhow::Result<ServeConfig> {
        let config_path = args
            .config
            .clone()
            .or_else(|| env.get("PRECACHE_CONFIG").map(PathBuf::from));
        let file = match &config_path {
            Some(path) => read_file(path)?,
            None => ServeSettings::default(),
        };
        let raw = args.settings.or(ServeSettings::from_env(env)?).or(file);
        Self::check(raw, env)
    }

    fn check(raw: ServeSettings, env: &dyn Env) -> anyhow::Result<ServeConfig> {
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./precache-data"));
        let database_url = raw
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join(DATABASE_FILE).display()));
        let zone_name = raw
            .quota_time_zone
            .unwrap_or_else(|| "Asia/Shanghai".to_string());
        let zone = jiff::tz::TimeZone::get(&zone_name)
            .with_context(|| format!("unknown quota time zone {zone_name:?}"))?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let seconds = |value: Option<HumanDuration>, default: u64| {
            value.map_or(Duration::from_secs(default), |d| d.0)
        };
        Ok(ServeConfig {
            api_listen: raw
                .api_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            edge_listen: raw
                .edge_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8081))),
            edge_tls_listen: raw.edge_tls_listen,
            edge_admin_listen: raw
                .edge_admin_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir,
            database_url,
            edge_name: raw
                .name
                .or(raw.edge_name)
                .unwrap_or_else(|| "local".to_string()),
            edge_admin_secret: match raw.edge_admin_secret {
                Some(secret) if secret.len() < 16 => {
                    return Err(anyhow!("edge_admin_secret must be at least 16 characters"))
                }
                other => other,
            },
            edge_threads: positive(raw.edge_threads.unwrap_or(cores), "edge_threads")?,
            edge_nice: raw.edge_nice.unwrap_or(5).clamp(0, 19),
            cache_limits: cache_limits(raw.cache_size, raw.max_object_size, raw.cache_min_free)?,
            token_ttl: seconds(raw.token_ttl, 24 * 3600),
            max_urls_per_request: positive(
                raw.max_urls_per_request.unwrap_or(10),
                "max_urls_per_request",
            )?,
            quota_time_zone: (zone, zone_name),
            rate_limit_per_account: raw.rate_limit_per_account.unwrap_or(0),
            task_concurrency: positive(raw.task_concurrency.unwrap_or(64), "task_concurrency")?,
            task_per_origin: positive(raw.task_per_origin.unwrap_or(8), "task_per_origin")?,
            task_attempts: raw.task_attempts.unwrap_or(3).max(1),
            task_backoff: seconds(raw.task_backoff, 1),
            origin_timeouts: precache_edge::OriginTimeouts {
                connect: seconds(raw.origin_connect_timeout, 5),
                first_byte: seconds(raw.origin_first_byte_timeout, 30),
                idle: seconds(raw.origin_idle_timeout, 30),
                fetch_deadline: seconds(raw.origin_fetch_deadline, 3600)
                    .max(Duration::from_secs(1)),
            },
            edge_connection_limits: precache_edge::ConnectionLimits {
                idle: seconds(raw.edge_idle_timeout, 60).max(Duration::from_secs(1)),
                header: seconds(raw.edge_header_timeout, 10).max(Duration::from_millis(100)),
                max_header_bytes: header_size(raw.edge_max_header_size)?,
            },
            api_connection_limits: crate::api_server::ApiConnectionLimits {
                header: seconds(raw.api_header_timeout, 10).max(Duration::from_millis(100)),
                idle: seconds(raw.api_idle_timeout, 60).max(Duration::from_secs(1)),
                max_header_bytes: api_header_size(raw.api_max_header_size)?,
                max_headers: positive(raw.api_max_headers.unwrap_or(100), "api_max_headers")?,
            },
            login_limits: precache_api::LoginLimits {
                per_account: raw.login_failures_per_account.unwrap_or(5),
                per_address: raw.login_failures_per_address.unwrap_or(20),
                window: seconds(raw.login_failure_window, 15 * 60).max(Duration::from_secs(1)),
            },
            trusted_proxies: raw
                .trusted_proxy
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| anyhow!("trusted_proxy: {e}"))?,
            admin_password: env.get("PRECACHE_ADMIN_PASSWORD"),
            edge_deadline: seconds(raw.edge_deadline, 600),
            engine_lease: seconds(raw.engine_lease, 30).max(Duration::from_secs(1)),
            task_retention: seconds(raw.task_retention, 90 * 86_400).max(Duration::from_secs(1)),
            audit_retention: seconds(raw.audit_retention, 365 * 86_400).max(Duration::from_secs(1)),
            control: raw.control,
            join_token: raw.join_token,
            edge_admin_url: raw.edge_admin_url,
            edge_data_url: raw.edge_data_url,
            offline_after: seconds(raw.offline_after, 10),
            tls_ca_pem: raw
                .tls_ca_file
                .map(|path| {
                    std::fs::read(&path)
                        .with_context(|| format!("read tls_ca_file {}", path.display()))
                })
                .transpose()?,
            origin_ca: raw
                .origin_ca_file
                .map(|path| precache_edge::OriginCa::load(&path))
                .transpose()?,
            log_format: raw.log_format.unwrap_or_default(),
            secret_key_file: raw.secret_key_file,
            secret_key: raw.secret_key,
            previous_secret_key_file: raw.previous_secret_key_file,
            edge_access_log: raw
                .edge_access_log
                .filter(|target| !target.is_empty())
                .map(|target| precache_edge::AccessLogTarget::parse(&target)),
            callbacks: precache_api::CallbackPolicy {
                allow_hosts: raw
                    .callback_allow_hosts
                    .unwrap_or_default()
                    .split(',')
                    .map(|host| host.trim().to_ascii_lowercase())
                    .filter(|host| !host.is_empty())
                    .collect(),
                backoff: seconds(raw.callback_backoff, 5),
            },
            edge_admin_tls: match (raw.edge_admin_tls_cert, raw.edge_admin_tls_key) {
                (Some(cert), Some(key)) => Some(precache_edge::TlsFiles { cert, key }),
                (None, None) => None,
                _ => {
                    return Err(anyhow!(
                        "edge_admin_tls_cert and edge_admin_tls_key go together"
                    ))
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn load(flags: &[&str], env: HashMap<&str, &str>) -> anyhow::Result<ServeConfig> {
        let wrapper =
            Wrapper::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))?;
        ServeConfig::load(wrapper.args, &env)
    }

    #[test]
    fn defaults_match_api_md() -> anyhow::Result<()> {
        let config = load(&[], HashMap::new())?;
        assert_eq!(config.api_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.edge_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(config.data_dir, PathBuf::from("./precache-data"));
        assert_eq!(config.database_url, "sqlite://./precache-data/precache.db");
        assert_eq!(config.token_ttl, Duration::from_secs(86_400));
        assert_eq!(config.max_urls_per_request, 10);
        Ok(())
    }

    #[test]
    fn flag_beats_env_beats_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("precache.toml");
        std::fs::write(&file, "api_listen = \"127.0.0.1:7001\"\nedge_listen = \"127.0.0.1:7002\"\ndata_dir = \"/srv/file\"\ntoken_ttl = \"2h\"\n")?;
        let env = HashMap::from([
            ("PRECACHE_CONFIG", file.to_str().unwrap_or_default()),
            ("PRECACHE_EDGE_LISTEN", "127.0.0.1:7102"),
            ("PRECACHE_DATA_DIR", "/srv/env"),
            ("PRECACHE_ADMIN_PASSWORD", "from-env"),
        ]);
        let config = load(&["--data-dir", "/srv/flag"], env)?;
        assert_eq!(
            config.api_listen.to_string(),
            "127.0.0.1:7001",
            "from the file"
        );
        assert_eq!(
            config.edge_listen.to_string(),
            "127.0.0.1:7102",
            "env beats the file"
        );
        assert_eq!(
            config.data_dir,
            PathBuf::from("/srv/flag"),
            "the flag beats env and file"
        );
        assert_eq!(config.token_ttl, Duration::from_secs(7200));
        assert_eq!(config.admin_password.as_deref(), Some("from-env"));
        Ok(())
    }

    #[test]
    fn bad_values_name_their_source() {
        let env = HashMap::from([("PRECACHE_TASK_CONCURRENCY", "many")]);
        let error = load(&[], env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("PRECACHE_TASK_CONCURRENCY"), "{error}");
        let dir = tempfile::tempdir().ok();
        let path = dir
            .as_ref()
            .map(|d| d.path().join("c.toml"))
            .unwrap_or_default();
        let _ = std::fs::write(&path, "no_such_setting = 1\n");
        let error = load(
            &["--config", path.to_str().unwrap_or_default()],
            HashMap::new(),
        )
        .err();
        assert!(format!("{error:?}").contains("no_such_setting"));
    }
}
