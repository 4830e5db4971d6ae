//! The domains an edge serves and where each one's origin is, as pushed by the control plane.
//!
//! The table is persisted in the edge's data dir, so after a restart the edge serves its cache
//! (and HTTPS, with the certificates the table carries) at once, before the control plane has
//! been in touch. The file holds the certificates' private keys: it is the owner's only (0600).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use precache_model::edge_protocol::{CachePolicy, DomainRoute, DomainTable};
use tokio::io::AsyncWriteExt;

use crate::cache_key::{keyed_path, primary_key};
use crate::edge_metrics::DomainTraffic;
use crate::player_tls::{PlayerCertificate, PlayerCertificates};
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
    /// For an https origin, the name its certificate must carry (also sent as SNI).
    pub origin_tls_name: Option<String>,
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
    certificates: Arc<PlayerCertificates>,
}

impl DomainRoutes {
    /// Loads the table saved in `dir` by a previous run, or starts empty.
    pub async fn load(dir: &Path) -> std::io::Result<DomainRoutes> {
        let file = dir.join("domains.json");
        let routes = DomainRoutes {
            current: RwLock::new(Arc::new(RouteTable::default())),
            file,
            certificates: Arc::new(PlayerCertificates::new()),
        };
        // A file written before it held keys may be readable by others.
        match restrict_to_owner(&routes.file).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
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

    /// The players' certificates of the table being served, for the TLS listener.
    pub(crate) fn certificates(&self) -> Arc<PlayerCertificates> {
        Arc::clone(&self.certificates)
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
        let _ = tokio::fs::remove_file(&temp).await;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .await?;
        file.write_all(&bytes).await?;
        file.flush().await?;
        drop(file);
        tokio::fs::rename(&temp, &self.file).await?;
        self.install(table).await;
        Ok(())
    }

    async fn install(&self, table: DomainTable) {
        let mut routes = HashMap::with_capacity(table.domains.len());
        let mut certificates = HashMap::new();
        for DomainRoute {
            domain,
            origin,
            origin_host,
            cache,
            certificate,
            ..
        } in table.domains
        {
            if let Some(certificate) = certificate {
                // One bad certificate costs its own domain HTTPS, not the table.
                match PlayerCertificate::parse(&certificate) {
                    Ok(parsed) => {
                        certificates.insert(domain.to_string(), parsed);
                    }
                    Err(error) => {
                        tracing::error!(%domain, %error, "certificate not installed: the domain is served over plain HTTP only")
                    }
                }
            }
            let origin_addr = resolve(&origin).await;
            // An https origin is asked for its own name (SNI and `Host` alike, API.md §13): its
            // certificate names it, and servers refuse a `Host` that differs from the SNI.
            let origin_host = origin_host.unwrap_or_else(|| {
                if origin.is_tls() {
                    origin.host_field()
                } else {
                    domain.to_string()
                }
            });
            let origin_tls_name = origin
                .is_tls()
                .then(|| crate::origin_tls::server_name(&origin_host));
            let traffic = DomainTraffic::register(domain.as_str());
            routes.insert(
                domain.to_string(),
                Arc::new(Route {
                    origin,
                    origin_addr,
                    origin_host,
                    origin_tls_name,
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
        self.certificates.replace(certificates);
    }
}

/// Makes `file` readable and writable by its owner only.
async fn restrict_to_owner(file: &Path) -> std::io::Result<()> {
    let mode = tokio::fs::metadata(file).await?.permissions().mode();
    if mode & 0o077 != 0 {
        tokio::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).await?;
    }
    Ok(())
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
