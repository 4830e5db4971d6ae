//! A standalone edge's link to the control plane: joining, heartbeats, and the catch-up that
//! keeps it from serving what was purged while it was away.
//!
//! The control plane pushes commands to the edge's admin listener (the fast path). This link
//! is the edge's own side: every [`HELLO_PERIOD`] it says hello (its addresses, so the control
//! plane can reach it wherever it restarted). The cache is *closed* while the edge may have
//! missed purges: at start, and once hellos have failed for the `offline_after` period (cut
//! off from the control plane, pushed purges may not be arriving either). A closed cache
//! proxies players past it. It opens again after a hello with `catch_up`, whose answer lists
//! every purge the edge has not confirmed: the edge applies them all and confirms them first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use precache_model::edge_protocol::{
    AppliedPurge, CaughtUp, Hello, HelloAnswer, JoinAnswer, JoinRequest, PurgeOutcome,
    CAUGHT_UP_PATH, HELLO_PATH, JOIN_PATH,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admin::{apply_purge, PurgeFailure};
use crate::disk_cache::DiskCache;
use crate::domain_routes::DomainRoutes;

/// How often a standalone edge says hello.
pub const HELLO_PERIOD: Duration = Duration::from_secs(1);
/// How long one hello (without a catch-up) may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

/// What the data plane needs from the link, shared with the proxy.
#[derive(Debug)]
pub struct LinkState {
    cache_open: AtomicBool,
    parent: RwLock<Option<SocketAddr>>,
    /// Where the parent's address is kept, so that a restart fetches through the shield even
    /// before the control plane has answered.
    parent_file: Option<PathBuf>,
}

impl LinkState {
    /// An edge without a control link (the embedded edge of `serve`, which lives and dies with
    /// its control plane): cache open, no parent.
    pub fn always_open() -> LinkState {
        LinkState {
            cache_open: AtomicBool::new(true),
            parent: RwLock::new(None),
            parent_file: None,
        }
    }

    fn closed(data_dir: &Path) -> LinkState {
        let parent_file = parent_file(data_dir);
        let parent = std::fs::read_to_string(&parent_file)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        LinkState {
            cache_open: AtomicBool::new(false),
            parent: RwLock::new(parent),
            parent_file: Some(parent_file),
        }
    }

    /// Whether players may be served from the cache.
    pub fn cache_open(&self) -> bool {
        self.cache_open.load(Ordering::Acquire)
    }

    /// The parent edge's data plane, when this edge has one.
    pub fn parent(&self) -> Option<SocketAddr> {
        *self
            .parent
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_parent(&self, parent: Option<SocketAddr>) {
        let mut current = self
            .parent
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current != parent {
            tracing::info!(?parent, "parent edge (origin shield) set");
            *current = parent;
            if let Some(file) = &self.parent_file {
                if let Err(error) = save_parent(file, parent) {
                    tracing::warn!(%error, "could not save the parent edge's address");
                }
            }
        }
    }

    fn set_open(&self, open: bool) {
        self.cache_open.store(open, Ordering::Release);
    }
}

fn parent_file(data_dir: &Path) -> PathBuf {
    data_dir.join("parent.txt")
}

fn save_parent(file: &Path, parent: Option<SocketAddr>) -> std::io::Result<()> {
    std::fs::write(
        file,
        parent.map(|addr| addr.to_string()).unwrap_or_default(),
    )
}

/// How a standalone edge reaches its control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Base URL of the control plane's API.
    pub control_url: String,
    /// The edge's credential (from its join).
    pub credential: String,
    /// Where the control plane reaches this edge's admin listener.
    pub admin_url: String,
    /// Where players (and child edges) reach this edge's data plane.
    pub data_url: String,
    /// Hellos failing for this long close the cache until the edge has caught up.
    pub offline_after: Duration,
    /// An extra CA (PEM) trusted for an https control plane.
    pub ca_pem: Option<Vec<u8>>,
}

/// A call to the control plane that failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The control plane could not be reached or answered garbage.
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    /// The cache could not apply a purge.
    #[error("{0}")]
    Cache(String),
    /// A file in the edge's data dir could not be written.
    #[error("{0}")]
    DataDir(String),
    /// It answered with a `ret` code.
    #[error("control plane refused (ret {ret}): {msg}")]
    Refused {
        /// The code.
        ret: i64,
        /// Its message.
        msg: String,
    },
}

fn http_client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client, ControlError> {
    let failed = |error: reqwest::Error| ControlError::Unreachable(error.to_string());
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(pem).map_err(failed)?);
    }
    builder.build().map_err(failed)
}

async fn call<T: DeserializeOwned>(
    http: &reqwest::Client,
    control_url: &str,
    path: &str,
    credential: Option<&str>,
    body: &impl serde::Serialize,
) -> Result<T, ControlError> {
    let url = format!("{}{path}", control_url.trim_end_matches('/'));
    let mut request = http.post(url).json(body);
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    let unreachable = |error: reqwest::Error| ControlError::Unreachable(error.to_string());
    let answer: serde_json::Value = request
        .send()
        .await
        .map_err(unreachable)?
        .json()
        .await
        .map_err(unreachable)?;
    let fields = answer
        .get("zt_api")
        .cloned()
        .ok_or_else(|| ControlError::Unreachable("answer without zt_api".into()))?;
    let ret = fields
        .get("ret")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(-1);
    if ret != 0 {
        let msg = fields
            .get("msg")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        return Err(ControlError::Refused { ret, msg });
    }
    serde_json::from_value(fields).map_err(|error| ControlError::Unreachable(error.to_string()))
}

/// Trades a one-time join token for the edge's credential (trusting `ca_pem` besides the
/// public roots for an https control plane), and keeps its parent's address in `data_dir`: the
/// edge's first players go through its shield, before any hello has been answered.
pub async fn join(
    control_url: &str,
    ca_pem: Option<&[u8]>,
    request: &JoinRequest,
    data_dir: &Path,
) -> Result<String, ControlError> {
    let http = http_client(ca_pem)?;
    let answer: JoinAnswer = call(&http, control_url, JOIN_PATH, None, request).await?;
    let parent = resolve_parent(answer.parent_data_url.as_deref()).await;
    save_parent(&parent_file(data_dir), parent).map_err(|error| {
        ControlError::DataDir(format!("could not save the parent edge's address: {error}"))
    })?;
    if parent.is_some() {
        tracing::info!(?parent, "parent edge (origin shield) set");
    }
    Ok(answer.credential)
}

/// Everything the heartbeat loop drives.
pub(crate) struct Link {
    pub(crate) name: String,
    pub(crate) config: ControlConfig,
    pub(crate) state: Arc<LinkState>,
    pub(crate) routes: Arc<DomainRoutes>,
    pub(crate) cache: &'static DiskCache,
}

/// A link state for a standalone edge with its data in `data_dir`: closed until the first
/// catch-up.
pub(crate) fn closed_state(data_dir: &Path) -> Arc<LinkState> {
    Arc::new(LinkState::closed(data_dir))
}

impl Link {
    /// Says hello every [`HELLO_PERIOD`] until `stopped`.
    pub(crate) async fn run(self, mut stopped: watch::Receiver<bool>) {
        let http = match http_client(self.config.ca_pem.as_deref()) {
            Ok(http) => http,
            Err(error) => {
                tracing::error!(%error, "cannot reach the control plane; the cache stays closed");
                return;
            }
        };
        let mut last_heard = Instant::now();
        let mut warned = false;
        // The control plane said purges are overdue: catch up with the cache open, as a push
        // that arrived late would have done.
        let mut behind = false;
        loop {
            // Silence counts even without a failed call: a process paused (stopped, swapped,
            // a suspended VM) may have missed pushed purges while it was not listening.
            let silent_for = last_heard.elapsed();
            if silent_for >= self.config.offline_after && self.state.cache_open() {
                tracing::warn!(
                    ?silent_for,
                    "no word from the control plane; serving without the cache until caught up"
                );
                self.state.set_open(false);
            }
            let catch_up = !self.state.cache_open() || behind;
            let hello = Hello {
                name: self.name.clone(),
                admin_url: self.config.admin_url.clone(),
                data_url: self.config.data_url.clone(),
                catch_up,
            };
            // Bounded well below `offline_after`, so a black-holed control plane is noticed.
            let answered: Result<HelloAnswer, ControlError> = tokio::time::timeout(
                HELLO_TIMEOUT,
                call(
                    &http,
                    &self.config.control_url,
                    HELLO_PATH,
                    Some(&self.config.credential),
                    &hello,
                ),
            )
            .await
            .unwrap_or_else(|_| Err(ControlError::Unreachable("hello timed out".into())));
            let mut again_now = false;
            match answered {
                Ok(answer) => {
                    last_heard = Instant::now();
                    warned = false;
                    self.state
                        .set_parent(resolve_parent(answer.parent_data_url.as_deref()).await);
                    if answer.behind && !catch_up {
                        tracing::warn!("purges are overdue (the control plane cannot reach this edge?); catching up");
                        behind = true;
                        again_now = true;
                    } else if catch_up {
                        match self.catch_up(&http, &answer).await {
                            Ok(()) if answer.more => again_now = true,
                            Ok(()) => {
                                if !self.state.cache_open() {
                                    tracing::info!(
                                        "caught up with the control plane; serving from the cache"
                                    );
                                }
                                behind = false;
                                self.state.set_open(true);
                            }
                            Err(error) => {
                                tracing::warn!(%error, "catch-up failed; the cache stays closed")
                            }
                        }
                    }
                }
                Err(ControlError::Refused { ret, msg }) if ret == 1001 || ret == 1002 => {
                    if !warned {
                        tracing::error!(%msg, "the control plane refused this edge's credential; serving without the cache");
                        warned = true;
                    }
                    self.state.set_open(false);
                }
                Err(error) => {
                    if !warned {
                        tracing::warn!(%error, "hello to the control plane failed");
                        warned = true;
                    }
                }
            }
            if again_now {
                continue;
            }
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(HELLO_PERIOD) => {}
            }
        }
    }

    /// Applies the owed purges of `answer` and confirms them.
    async fn catch_up(
        &self,
        http: &reqwest::Client,
        answer: &HelloAnswer,
    ) -> Result<(), ControlError> {
        let mut applied = Vec::with_capacity(answer.owed.len());
        for owed in &answer.owed {
            let outcome = match apply_purge(&self.routes, self.cache, &owed.command).await {
                Ok(outcome) => outcome,
                // Nothing can be cached under a URL that does not parse.
                Err(PurgeFailure::BadUrl(_)) => PurgeOutcome::default(),
                Err(PurgeFailure::Cache(reason)) => return Err(ControlError::Cache(reason)),
            };
            applied.push(AppliedPurge {
                task_id: owed.task_id.clone(),
                url_idx: owed.url_idx,
                outcome,
            });
        }
        if applied.is_empty() {
            return Ok(());
        }
        tracing::info!(purges = applied.len(), "applied purges missed while away");
        let confirmed = CaughtUp {
            name: self.name.clone(),
            applied,
        };
        let _: serde_json::Value = call(
            http,
            &self.config.control_url,
            CAUGHT_UP_PATH,
            Some(&self.config.credential),
            &confirmed,
        )
        .await?;
        Ok(())
    }
}

/// The parent's data plane address from its base URL (`http://host:port`).
async fn resolve_parent(data_url: Option<&str>) -> Option<SocketAddr> {
    let data_url = data_url?;
    let Some(authority) = data_url.strip_prefix("http://") else {
        tracing::warn!(%data_url, "parent data plane must be plain http; fetching from the origin");
        return None;
    };
    let authority = authority.split('/').next().unwrap_or(authority);
    match tokio::net::lookup_host(authority).await {
        Ok(mut addresses) => addresses.next(),
        Err(error) => {
            tracing::warn!(%data_url, %error, "parent edge does not resolve");
            None
        }
    }
}
