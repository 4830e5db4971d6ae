//! The targets this control plane drives: precache's edges (how to reach each, whether it is
//! up, keeping each one's domain table at the registry's current revision) and the targets of
//! the backends an admin registered (each with its kind's implementation).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use precache_model::edge_protocol::{
    DomainCertificate, DomainRoute, DomainTable, EdgeStatus, OriginLimits,
};
use precache_model::time::now_millis;
use precache_model::{EdgeId, TaskKind};
use precache_store::Store;
use tokio::sync::{watch, Mutex, Notify};

use crate::backends::{self, Backend, Target};
use crate::certificate_expiry;
use crate::{EdgeClient, EdgeTarget};

/// What the control plane last learned about an edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeHealth {
    /// Whether the edge is usable: the last status call of this process succeeded or, until this
    /// process has called it once, the edge said hello (to any control-plane process) within
    /// [`HELLO_FRESH_MS`].
    pub up: bool,
    /// Whether this process has called the edge yet; before that, `up` is what the database
    /// says of its hellos.
    pub probed: bool,
    /// When the edge last answered, ms since the epoch.
    pub last_seen_at: Option<i64>,
    /// Why the last call failed.
    pub last_error: Option<String>,
    /// The edge's last reported status.
    pub status: Option<EdgeStatus>,
}

#[derive(Debug, Clone)]
struct Known {
    target: Option<EdgeTarget>,
    /// For a backend's target: the backend's id and the target's base URL.
    backend: Option<(i64, String)>,
    parent: Option<EdgeId>,
    health: EdgeHealth,
    last_seen_persisted: i64,
    /// When the database last heard from the edge (its hellos, any process's calls).
    heard_at: Option<i64>,
}

impl Known {
    fn usable(&self, now: i64) -> bool {
        if self.backend.is_some() {
            // A cache is driven whatever its state: an unreachable one fails its pairs.
            return true;
        }
        if self.health.probed {
            self.health.up
        } else {
            heard_recently(self.heard_at, now)
        }
    }
}

/// Persist `last_seen_at` at most this often per edge: it is for operators, not for logic.
const LAST_SEEN_PERSIST_EVERY_MS: i64 = 30_000;

/// An edge heard from this recently is taken to be up by a process that has not called it yet.
/// Edges say hello every second; a few missed hellos are tolerated, as are clocks a little apart.
pub const HELLO_FRESH_MS: i64 = 5_000;

/// Whether an edge last heard from at `heard_at` (ms since the epoch) counts as up at `now`.
pub fn heard_recently(heard_at: Option<i64>, now: i64) -> bool {
    heard_at.is_some_and(|at| now.saturating_sub(at) <= HELLO_FRESH_MS)
}

/// The registry of edges, shared by the API and the engine.
pub struct EdgeDirectory {
    store: Store,
    client: EdgeClient,
    /// The built-in backend `edges`.
    edges_backend: Arc<dyn Backend>,
    /// Registered backends' implementations by id (built once: a backend does not change
    /// after it is created).
    backends: RwLock<HashMap<i64, Arc<dyn Backend>>>,
    known: RwLock<HashMap<EdgeId, Known>>,
    /// Each domain's origin limits, as of the last round (absent: none).
    origin_limits: RwLock<HashMap<String, OriginLimits>>,
    sync_lock: Mutex<()>,
    wake: Notify,
    /// When certificates were last reviewed (expiry, keys that do not open): the first round,
    /// then once every [`CERTIFICATE_REVIEW_EVERY`].
    certificates_reviewed: std::sync::Mutex<Option<Instant>>,
}

/// How often the certificates' expiry is logged about.
const CERTIFICATE_REVIEW_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

impl EdgeDirectory {
    /// An empty directory; call [`EdgeDirectory::sync_now`] to fill it.
    pub fn new(store: Store, client: EdgeClient) -> Arc<EdgeDirectory> {
        Arc::new(EdgeDirectory {
            store,
            edges_backend: Arc::new(backends::edges::Edges::new(client.clone())),
            backends: RwLock::new(HashMap::new()),
            client,
            known: RwLock::new(HashMap::new()),
            origin_limits: RwLock::new(HashMap::new()),
            sync_lock: Mutex::new(()),
            wake: Notify::new(),
            certificates_reviewed: std::sync::Mutex::new(None),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<EdgeId, Known>> {
        self.known
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How to reach an edge, if it is registered and has an admin listener.
    pub fn target(&self, id: EdgeId) -> Option<EdgeTarget> {
        self.read().get(&id).and_then(|known| known.target.clone())
    }

    /// What drives a pair's target, and the target: an edge through the built-in backend, or
    /// a registered backend's cache server. `None` once it is revoked or deleted.
    pub fn runner(&self, id: EdgeId) -> Option<(Arc<dyn Backend>, Target)> {
        let known = self.read();
        let entry = known.get(&id)?;
        if let Some((backend_id, url)) = &entry.backend {
            let backends = self
                .backends
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let backend = backends.get(backend_id)?;
            return Some((
                Arc::clone(backend),
                Target {
                    id,
                    name: url.clone(),
                    url: url.clone(),
                    secret: None,
                },
            ));
        }
        let edge = entry.target.as_ref()?;
        Some((
            Arc::clone(&self.edges_backend),
            Target {
                id,
                name: edge.name.clone(),
                url: edge.admin_url.clone(),
                secret: Some(edge.secret.clone()),
            },
        ))
    }

    /// How many pairs of this target may wait at once for vendor calls, when its kind gathers
    /// them (see [`Backend::gathers`]).
    pub fn gathers(&self, id: EdgeId) -> Option<usize> {
        self.runner(id).and_then(|(backend, _)| backend.gathers())
    }

    /// A registered backend by name, with its implementation and targets, read from the
    /// database now (for `check`).
    pub async fn backend(
        &self,
        name: &str,
    ) -> Result<Option<(Arc<dyn Backend>, Vec<Target>)>, precache_store::Error> {
        let edges = self.store.list_edges().await?;
        let registered = self.store.list_backends().await?;
        self.merge(&edges, Some(&registered));
        let Some(record) = registered.iter().find(|backend| backend.name == name) else {
            return Ok(None);
        };
        Ok(self.runner_targets(record))
    }

    fn runner_targets(
        &self,
        record: &precache_store::BackendRecord,
    ) -> Option<(Arc<dyn Backend>, Vec<Target>)> {
        let backends = self
            .backends
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let backend = backends.get(&record.id)?;
        let targets = record
            .targets
            .iter()
            .map(|(id, url)| Target {
                id: *id,
                name: url.clone(),
                url: url.clone(),
                secret: None,
            })
            .collect();
        Some((Arc::clone(backend), targets))
    }

    /// The targets a new task on a domain with these backends runs on. On the built-in
    /// backend `edges`, a prefetch runs on every edge that is up (one that is down would only
    /// make the task wait) and a refresh on every edge that can be driven, up or not, so that
    /// one away owes the purge and applies it before serving from its cache again. On any
    /// other backend, on every one of its targets.
    ///
    /// Another control-plane process may have joined or revoked an edge, or registered a
    /// backend, a moment ago, so the list is read from the database here (two small queries),
    /// never taken from the last round: an edge that joined elsewhere counts as up when it said
    /// hello recently, until this process's own call confirms it.
    pub async fn task_targets(
        &self,
        kind: TaskKind,
        domain_backends: &[String],
    ) -> Result<Vec<EdgeId>, precache_store::Error> {
        let edges = self.store.list_edges().await?;
        // Backends (and their credentials, opened) are read only for a domain that uses some.
        let registered = match domain_backends
            .iter()
            .any(|name| name != precache_store::EDGES_BACKEND)
        {
            true => Some(self.store.list_backends().await?),
            false => None,
        };
        if self.merge(&edges, registered.as_deref()) {
            // Call the newcomers now rather than at the next round.
            self.wake();
        }
        let mut targets = Vec::new();
        if domain_backends
            .iter()
            .any(|name| name == precache_store::EDGES_BACKEND)
        {
            targets = self.usable_edges(kind);
        }
        for record in registered
            .iter()
            .flatten()
            .filter(|backend| domain_backends.contains(&backend.name))
        {
            targets.extend(record.targets.iter().map(|(id, _)| *id));
        }
        Ok(targets)
    }

    fn usable_edges(&self, kind: TaskKind) -> Vec<EdgeId> {
        let now = now_millis();
        let mut ids: Vec<EdgeId> = self
            .read()
            .iter()
            .filter(|(_, known)| known.target.is_some() && known.backend.is_none())
            .filter(|(_, known)| kind == TaskKind::Refresh || known.usable(now))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// The origin limits an admin set for `domain`.
    pub fn origin_limits(&self, domain: &str) -> OriginLimits {
        self.origin_limits
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(domain)
            .copied()
            .unwrap_or_default()
    }

    /// The edge's parent (its origin shield), if it has one.
    pub fn parent_of(&self, id: EdgeId) -> Option<EdgeId> {
        self.read().get(&id).and_then(|known| known.parent)
    }

    /// Whether the edge answered this process's last call. The engine drives an edge only then:
    /// a newcomer's pairs wait (parked) for the first call, which [`EdgeDirectory::task_targets`]
    /// asks for at once.
    pub fn is_up(&self, id: EdgeId) -> bool {
        // A backend's cache is never parked: its pairs fail after their attempts instead.
        self.read().get(&id).is_some_and(|known| {
            known.backend.is_some() || (known.health.probed && known.health.up)
        })
    }

    /// Records that a call to the edge got no answer; the next round checks it again.
    pub fn mark_down(&self, id: EdgeId, reason: String) {
        let mut known = self
            .known
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = known.get_mut(&id) {
            if entry.health.up {
                tracing::warn!(edge = id.0, %reason, "edge is down");
            }
            entry.health.up = false;
            entry.health.probed = true;
            entry.health.last_error = Some(reason);
        }
    }

    /// What is known about each edge's health (for an edge this process has not called yet,
    /// `up` says whether the database heard from it recently).
    pub fn health(&self) -> HashMap<EdgeId, EdgeHealth> {
        let now = now_millis();
        self.read()
            .iter()
            .map(|(id, known)| {
                let mut health = known.health.clone();
                health.up = known.usable(now);
                (*id, health)
            })
            .collect()
    }

    /// Asks the background loop for an early round (e.g. after a domain change).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// One round: reload the edge list, ask every edge for its status, and push the domain table
    /// to every edge that is behind. Rounds never overlap.
    pub async fn sync_now(&self) -> Result<(), precache_store::Error> {
        let _round = self.sync_lock.lock().await;
        let edges = self.store.list_edges().await?;
        let registered = self.store.list_backends().await?;
        let (revision, domains) = self.store.domain_table().await?;
        let mut certificates = self.certificates(&domains).await?;
        *self
            .origin_limits
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = domains
            .iter()
            .filter(|domain| domain.origin_limits != OriginLimits::default())
            .map(|domain| (domain.name.to_string(), domain.origin_limits))
            .collect();
        let table = DomainTable {
            revision,
            domains: domains
                .into_iter()
                .map(|domain| DomainRoute {
                    certificate: certificates.remove(domain.name.as_str()),
                    domain: domain.name,
                    origin: domain.origin,
                    origin_host: domain.origin_host,
                    cache: domain.cache,
                    origin_limits: domain.origin_limits,
                })
                .collect(),
        };
        self.merge(&edges, Some(&registered));
        let targets: Vec<EdgeTarget> = self
            .read()
            .values()
            .filter_map(|known| known.target.clone())
            .collect();
        for target in targets {
            let checked = self.check_edge(&target, &table).await;
            self.record(target.id, checked).await;
        }
        Ok(())
    }

    /// Every domain's certificate with its key opened, for the pushed table. On the first round
    /// and once a day, logs the certificates close to their end and the keys that do not open
    /// (their domain is pushed without a certificate: edges refuse its TLS handshakes).
    async fn certificates(
        &self,
        domains: &[precache_store::Domain],
    ) -> Result<HashMap<String, DomainCertificate>, precache_store::Error> {
        let review = {
            let mut reviewed = self
                .certificates_reviewed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let due = reviewed.is_none_or(|at| at.elapsed() >= CERTIFICATE_REVIEW_EVERY);
            if due {
                *reviewed = Some(Instant::now());
            }
            due
        };
        if review {
            for domain in domains {
                if let Some(facts) = &domain.certificate {
                    certificate_expiry::warn_if_expiring(domain.name.as_str(), facts);
                }
            }
        }
        let mut opened = HashMap::new();
        for entry in self.store.certificates_for_edges().await? {
            match entry.certificate {
                Ok(certificate) => {
                    opened.insert(entry.domain.to_string(), certificate);
                }
                Err(reason) if review => tracing::error!(
                    domain = %entry.domain,
                    %reason,
                    "the certificate's key does not open: edges get the domain without it"
                ),
                Err(_) => {}
            }
        }
        Ok(opened)
    }

    /// Brings the directory in line with the database's edge list: edges added, changed (address,
    /// credential, parent) or gone, and, when they were read, the backends' implementations.
    /// Answers whether an edge was added.
    fn merge(
        &self,
        edges: &[precache_store::Edge],
        registered: Option<&[precache_store::BackendRecord]>,
    ) -> bool {
        if let Some(registered) = registered {
            self.merge_backends(registered);
        }
        let mut known = self
            .known
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        known.retain(|id, _| edges.iter().any(|edge| edge.id == *id));
        let mut added = false;
        for edge in edges {
            let backend = match (&edge.backend, &edge.admin_url) {
                (Some((Some(backend_id), _)), Some(url)) => Some((*backend_id, url.clone())),
                _ => None,
            };
            let target = match (&edge.admin_url, &edge.admin_secret) {
                (Some(admin_url), Some(secret)) if edge.backend.is_none() => Some(EdgeTarget {
                    id: edge.id,
                    name: edge.name.clone(),
                    admin_url: admin_url.clone(),
                    secret: secret.clone(),
                }),
                _ => None,
            };
            let entry = known.entry(edge.id).or_insert_with(|| {
                added = true;
                Known {
                    target: None,
                    backend: None,
                    parent: None,
                    health: EdgeHealth {
                        last_seen_at: edge.last_seen_at,
                        ..EdgeHealth::default()
                    },
                    last_seen_persisted: edge.last_seen_at.unwrap_or(0),
                    heard_at: None,
                }
            });
            if entry.target.is_none() && target.is_some() {
                // A credential appeared (the edge joined): it needs a first call.
                added = true;
            }
            entry.target = target;
            entry.backend = backend;
            entry.parent = edge.parent_id;
            entry.heard_at = edge.last_seen_at;
        }
        added
    }

    /// Builds the implementation of every backend not known yet, and forgets deleted ones.
    fn merge_backends(&self, registered: &[precache_store::BackendRecord]) {
        let mut backends = self
            .backends
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        backends.retain(|id, _| registered.iter().any(|backend| backend.id == *id));
        for record in registered {
            if backends.contains_key(&record.id) {
                continue;
            }
            let built = record
                .credentials
                .as_ref()
                .map_err(|error| format!("its credentials cannot be opened: {error}"))
                .and_then(|credentials| {
                    backends::build(&record.kind, &record.settings, credentials)
                });
            match built {
                Ok(backend) => {
                    backends.insert(record.id, backend);
                }
                // Checked when it was created; a key that changed or a newer version may
                // disagree. Its pairs fail, saying the backend cannot be driven.
                Err(error) => {
                    tracing::error!(backend = %record.name, %error, "cannot drive this backend")
                }
            }
        }
    }

    async fn check_edge(
        &self,
        target: &EdgeTarget,
        table: &DomainTable,
    ) -> Result<EdgeStatus, String> {
        let mut status = self
            .client
            .status(target)
            .await
            .map_err(|e| e.to_string())?;
        if status.domains_revision != table.revision {
            self.client
                .push_domains(target, table)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(edge = %target.name, revision = table.revision, "pushed the domain table");
            status.domains_revision = table.revision;
        }
        Ok(status)
    }

    async fn record(&self, id: EdgeId, checked: Result<EdgeStatus, String>) {
        let now = now_millis();
        let persist = {
            let mut known = self
                .known
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(entry) = known.get_mut(&id) else {
                return;
            };
            match checked {
                Ok(status) => {
                    if !entry.health.up {
                        tracing::info!(edge = %status.name, "edge is up");
                    }
                    entry.health = EdgeHealth {
                        up: true,
                        probed: true,
                        last_seen_at: Some(now),
                        last_error: None,
                        status: Some(status),
                    };
                    let due = now - entry.last_seen_persisted >= LAST_SEEN_PERSIST_EVERY_MS;
                    if due {
                        entry.last_seen_persisted = now;
                    }
                    due
                }
                Err(reason) => {
                    if entry.health.up || entry.health.last_error.is_none() {
                        tracing::warn!(edge = id.0, %reason, "edge is down");
                    }
                    entry.health.up = false;
                    entry.health.probed = true;
                    entry.health.last_error = Some(reason);
                    false
                }
            }
        };
        if persist {
            if let Err(error) = self.store.touch_edge(id, now).await {
                tracing::warn!(%error, "could not record when the edge was last seen");
            }
        }
    }

    /// Runs rounds every `period` (and when woken) until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, period: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(period) => {}
                _ = self.wake.notified() => {}
            }
            if let Err(error) = self.sync_now().await {
                tracing::warn!(%error, "edge sync round failed");
            }
        }
    }
}
