//! What every handler shares, and the API's settings.

use std::sync::Arc;

use crate::rate_limit::RateLimits;
use std::time::Duration;

use precache_store::Store;
use precache_tasks::{EdgeDirectory, EngineHandle};

use crate::final_tasks::FinalTasks;
use crate::passwords::PasswordHasher;
use crate::token_auth::TokenCache;

/// Settings of the control-plane API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Lifetime of a new token.
    pub token_ttl: Duration,
    /// Most distinct URLs in one prefetch or refresh request (the seed says 10).
    pub max_urls_per_request: usize,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The time zone whose midnight resets daily quotas.
    pub quota_time_zone: jiff::tz::TimeZone,
    /// Its name, as shown to clients.
    pub quota_time_zone_name: String,
    /// Requests per second each non-admin account may make unless an admin set its own; 0 for
    /// no limit.
    pub rate_limit_per_account: u32,
    /// How completion callbacks are delivered.
    pub callbacks: crate::callbacks::CallbackPolicy,
    /// How many failed logins lock a name or an address, and for how long.
    pub login_limits: crate::login_throttle::LoginLimits,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: crate::client_address::TrustedProxies,
    /// How long ended tasks are kept (`--task-retention`): their answers are not served from
    /// memory beyond it.
    pub task_retention: Duration,
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) engine: EngineHandle,
    pub(crate) edges: Arc<EdgeDirectory>,
    pub(crate) config: ApiConfig,
    pub(crate) tokens: TokenCache,
    pub(crate) final_tasks: FinalTasks,
    pub(crate) hasher: PasswordHasher,
    pub(crate) rate_limits: RateLimits,
    pub(crate) metrics: crate::observe::RenderMetrics,
}

impl AppState {
    /// State for a router over `store`, feeding `engine`, driving `edges`.
    pub fn new(
        store: Store,
        engine: EngineHandle,
        edges: Arc<EdgeDirectory>,
        config: ApiConfig,
        metrics: crate::observe::RenderMetrics,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                store,
                engine,
                edges,
                tokens: TokenCache::default(),
                final_tasks: FinalTasks::new(config.task_retention),
                hasher: PasswordHasher::new(),
                rate_limits: RateLimits::default(),
                metrics,
                config,
            }),
        }
    }

    /// The password hasher, also used at start to hash the bootstrap admin's password.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.inner.hasher
    }
}
