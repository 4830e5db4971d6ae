//! The domains an edge serves and where each one's origin is, as pushed by the control plane.
//!
//! The table is persisted in the edge's data dir, so after a restart the edge serves its cache
//! at once, before the control plane has been in touch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use precache_model::edge_protocol::{CachePolicy, DomainRoute, DomainTable};

use crate::cache_key::{keyed_path, primary_key};
use crate::edge_metrics::DomainTraffic;
use precache_model::Origin;

/// How to reach one domain's origin.
#[derive(Debug, Clone)]
pub struct Route {
    /// The registered origin.
    pub origin: Origin,
    /// Its address, resolved when the table was applied; `None` when resolution failed.
    pub origin_addr: Option<SocketAddr>,
    /// The `Host` header sent to the origin.
    pub origin_host: String,
    /// The operator's caching overrides.
    pub cache: CachePolicy,
    /// The domain's traffic counters.
    pub traffic: DomainTraffic,
}

/// A revision of the table, immutable once built.
#[derive(Debug, Default)]
struct RouteTable {
    revision: i64,
    routes: HashMap<String, Arc<Route>>,
}

/// The live table, swapped whole on every update so a request sees one consistent revision.
pub struct DomainRoutes {
    current: RwLock<Arc<RouteTable>>,
    file: PathBuf,
}

impl DomainRoutes {
    /// Loads the table saved in `dir` by a previous run, or starts empty.
    pub async fn load(dir: &Path) -> std::io::Result<DomainRoutes> {
        let file = dir.join("domains.json");
        let routes = DomainRoutes {
            current: RwLock::new(Arc::new(RouteTable::default())),
            file,
        };
        match tokio::fs::read(&routes.file).await {
            Ok(bytes) => match serde_json::from_slice::<DomainTable>(&bytes) {
                Ok(table) => routes.install(table).await,
                Err(error) => {
                    tracing::warn!(file = %routes.file.display(), %error, "ignoring unreadable domain table")
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        Ok(routes)
    }

    /// The route for a `Host`, if that domain is registered.
    pub fn route(&self, host: &str) -> Option<Arc<Route>> {
        let table = match self.current.read() {
            Ok(table) => Arc::clone(&table),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        table.routes.get(host).cloned()
    }

    /// The primary cache key of a URL of a domain, following the domain's policy on query
    /// strings (an unknown domain keys with the query).
    pub fn primary_key(&self, host: &str, path_and_query: &str) -> String {
        let with_query = self
            .route(host)
            .is_none_or(|route| route.cache.cache_query_string);
        primary_key(host, keyed_path(path_and_query, with_query))
    }

    /// The revision being served.
    pub fn revision(&self) -> i64 {
        match self.current.read() {
            Ok(table) => table.revision,
            Err(poisoned) => poisoned.into_inner().revision,
        }
    }

    /// Saves and installs a new table (resolving origin host names once, here, off the request
    /// path). The file is written first, atomically, so a crash never leaves a half table.
    pub async fn apply(&self, table: DomainTable) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&table).map_err(std::io::Error::other)?;
        let temp = self.file.with_extension("json.tmp");
        tokio::fs::write(&temp, &bytes).await?;
        tokio::fs::rename(&temp, &self.file).await?;
        self.install(table).await;
        Ok(())
    }

    async fn install(&self, table: DomainTable) {
        let mut routes = HashMap::with_capacity(table.domains.len());
        for DomainRoute {
            domain,
            origin,
            origin_host,
            cache,
            ..
        } in table.domains
        {
            let origin_addr = resolve(&origin).await;
            let origin_host = origin_host.unwrap_or_else(|| domain.to_string());
            let traffic = DomainTraffic::register(domain.as_str());
            routes.insert(
                domain.to_string(),
                Arc::new(Route {
                    origin,
                    origin_addr,
                    origin_host,
                    cache,
                    traffic,
                }),
            );
        }
        let next = Arc::new(RouteTable {
            revision: table.revision,
            routes,
        });
        match self.current.write() {
            Ok(mut current) => *current = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

async fn resolve(origin: &Origin) -> Option<SocketAddr> {
    let resolved = tokio::net::lookup_host(origin.authority()).await;
    match resolved {
        Ok(mut addresses) => addresses.next(),
        Err(error) => {
            tracing::warn!(%origin, %error, "origin host does not resolve");
            None
        }
    }
}
