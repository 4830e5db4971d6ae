//! Registered domains (备案) and the revision edges compare their domain table against.

use precache_model::edge_protocol::{CachePolicy, OriginLimits};
use precache_model::time::now_millis;
use precache_model::{AccountId, DomainName, Origin};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Domain, Error, Result, Store};

const DOMAIN_SELECT: &str =
    "SELECT d.name, d.account_id, a.name AS owner_name, d.origin, d.origin_host, d.cache_policy, d.origin_limits, d.backends, d.created_at, \
     c.subject AS cert_subject, c.sans AS cert_sans, c.not_after AS cert_not_after, c.sha256 AS cert_sha256 \
     FROM domains d JOIN accounts a ON a.id = d.account_id LEFT JOIN domain_certificates c ON c.domain = d.name";

fn decode_domain(row: &AnyRow) -> Result<Domain> {
    let name: String = row.try_get("name")?;
    let origin: String = row.try_get("origin")?;
    Ok(Domain {
        name: DomainName::parse(&name).map_err(Error::Corrupt)?,
        owner_id: AccountId(row.try_get("account_id")?),
        owner_name: row.try_get("owner_name")?,
        origin: Origin::parse(&origin).map_err(Error::Corrupt)?,
        origin_host: row.try_get("origin_host")?,
        cache: decode_policy(row.try_get("cache_policy")?)?,
        origin_limits: decode_json(row.try_get("origin_limits")?, "origin limits")?,
        backends: decode_backends(row.try_get("backends")?)?,
        created_at: row.try_get("created_at")?,
        certificate: crate::certificates::decode_facts(row)?,
    })
}

fn decode_policy(text: Option<String>) -> Result<CachePolicy> {
    match text {
        None => Ok(CachePolicy::default()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt(format!("domain cache policy {text:?}: {e}"))),
    }
}

/// The backend a domain uses when it names none: precache's own edges.
pub const EDGES_BACKEND: &str = "edges";

fn decode_backends(text: Option<String>) -> Result<Vec<String>> {
    match text {
        None => Ok(vec![EDGES_BACKEND.to_string()]),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt(format!("domain backends {text:?}: {e}"))),
    }
}

fn encode_backends(backends: &[String]) -> Result<Option<String>> {
    if backends == [EDGES_BACKEND] {
        return Ok(None);
    }
    serde_json::to_string(backends)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("encode a domain's backends: {e}")))
}

/// `NotFound` unless every name is `edges` or a registered backend.
pub(crate) async fn check_backends_exist(
    connection: &mut AnyConnection,
    backends: &[String],
) -> Result<()> {
    for name in backends.iter().filter(|name| *name != EDGES_BACKEND) {
        let found = sqlx::query("SELECT 1 AS one FROM backends WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *connection)
            .await?;
        if found.is_none() {
            return Err(Error::NotFound(format!("backend {name:?}")));
        }
    }
    Ok(())
}

fn decode_json<T: serde::de::DeserializeOwned + Default>(
    text: Option<String>,
    what: &str,
) -> Result<T> {
    match text {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt(format!("domain {what} {text:?}: {e}"))),
    }
}

fn encode_policy(policy: &CachePolicy) -> Result<Option<String>> {
    if *policy == CachePolicy::default() {
        return Ok(None);
    }
    serde_json::to_string(policy)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("encode a domain cache policy: {e}")))
}

pub(crate) async fn bump_domains_revision(connection: &mut AnyConnection) -> Result<()> {
    sqlx::query("UPDATE revisions SET value = value + 1 WHERE name = 'domains'")
        .execute(&mut *connection)
        .await?;
    Ok(())
}

impl Store {
    /// Registers a domain to the account named `owner`. `NotFound` for an unknown owner,
    /// `Conflict` when the domain is registered already (to anyone).
    pub async fn create_domain(
        &self,
        name: DomainName,
        owner: &str,
        origin: Origin,
        origin_host: Option<String>,
        cache: CachePolicy,
        backends: Vec<String>,
    ) -> Result<Domain> {
        let taken = format!("domain {:?}", name.as_str());
        let encoded_policy = encode_policy(&cache)?;
        let encoded_backends = encode_backends(&backends)?;
        let owner = owner.to_string();
        let created_at = now_millis();
        let result = self
            .writer
            .run(move |connection| {
                Box::pin(async move {
                    let owner_id: Option<i64> = sqlx::query("SELECT id FROM accounts WHERE name = $1")
                        .bind(&owner)
                        .fetch_optional(&mut *connection)
                        .await?
                        .map(|row| row.try_get("id"))
                        .transpose()?;
                    let Some(owner_id) = owner_id else {
                        return Err(Error::NotFound(format!("owner account {owner:?}")));
                    };
                    check_backends_exist(connection, &backends).await?;
                    sqlx::query(
                        "INSERT INTO domains (name, account_id, origin, origin_host, cache_policy, backends, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(name.as_str())
                    .bind(owner_id)
                    .bind(origin.to_string())
                    .bind(origin_host.clone())
                    .bind(encoded_policy)
                    .bind(encoded_backends)
                    .bind(created_at)
                    .execute(&mut *connection)
                    .await?;
                    bump_domains_revision(connection).await?;
                    Ok(Domain {
                        name,
                        owner_id: AccountId(owner_id),
                        owner_name: owner,
                        origin,
                        origin_host,
                        cache,
                        origin_limits: OriginLimits::default(),
                        backends,
                        created_at,
                        certificate: None,
                    })
                })
            })
            .await;
        match result {
            Err(error) if error.is_unique_violation() => Err(Error::Conflict(taken)),
            other => other,
        }
    }

    /// The domain with this name.
    pub async fn domain(&self, name: &str) -> Result<Option<Domain>> {
        let row = sqlx::query(&format!("{DOMAIN_SELECT} WHERE d.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_domain).transpose()
    }

    /// Domains, by name: every domain, or those of one account.
    pub async fn list_domains(&self, owner: Option<AccountId>) -> Result<Vec<Domain>> {
        let rows = match owner {
            Some(owner) => {
                sqlx::query(&format!(
                    "{DOMAIN_SELECT} WHERE d.account_id = $1 ORDER BY d.name"
                ))
                .bind(owner.0)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("{DOMAIN_SELECT} ORDER BY d.name"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(decode_domain).collect()
    }

    /// Replaces a domain's caching overrides. `NotFound` when it is not registered.
    pub async fn set_domain_cache_policy(&self, name: &str, cache: CachePolicy) -> Result<()> {
        let name = name.to_string();
        let encoded = encode_policy(&cache)?;
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let updated =
                        sqlx::query("UPDATE domains SET cache_policy = $1 WHERE name = $2")
                            .bind(encoded)
                            .bind(&name)
                            .execute(&mut *connection)
                            .await?;
                    if updated.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("domain {name:?}")));
                    }
                    bump_domains_revision(connection).await
                })
            })
            .await
    }

    /// Replaces a domain's origin limits. `NotFound` when it is not registered.
    pub async fn set_domain_origin_limits(&self, name: &str, limits: OriginLimits) -> Result<()> {
        let name = name.to_string();
        let encoded = (limits != OriginLimits::default())
            .then(|| serde_json::to_string(&limits))
            .transpose()
            .map_err(|e| Error::Corrupt(format!("encode origin limits: {e}")))?;
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let updated =
                        sqlx::query("UPDATE domains SET origin_limits = $1 WHERE name = $2")
                            .bind(encoded)
                            .bind(&name)
                            .execute(&mut *connection)
                            .await?;
                    if updated.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("domain {name:?}")));
                    }
                    bump_domains_revision(connection).await
                })
            })
            .await
    }

    /// Replaces the backends a domain's tasks run on. `NotFound` when the domain or one of the
    /// backends is not registered.
    pub async fn set_domain_backends(&self, name: &str, backends: Vec<String>) -> Result<()> {
        let name = name.to_string();
        let encoded = encode_backends(&backends)?;
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    check_backends_exist(connection, &backends).await?;
                    let updated = sqlx::query("UPDATE domains SET backends = $1 WHERE name = $2")
                        .bind(encoded)
                        .bind(&name)
                        .execute(&mut *connection)
                        .await?;
                    if updated.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("domain {name:?}")));
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Unregisters a domain. `NotFound` when it is not registered.
    pub async fn delete_domain(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let deleted = sqlx::query("DELETE FROM domains WHERE name = $1")
                        .bind(&name)
                        .execute(&mut *connection)
                        .await?;
                    if deleted.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("domain {name:?}")));
                    }
                    sqlx::query("DELETE FROM domain_certificates WHERE domain = $1")
                        .bind(&name)
                        .execute(&mut *connection)
                        .await?;
                    bump_domains_revision(connection).await
                })
            })
            .await
    }

    /// The registry as edges need it: its revision and every domain. The revision is read first,
    /// so the domains are at least as new as it says and a later change is pushed again.
    pub async fn domain_table(&self) -> Result<(i64, Vec<Domain>)> {
        let revision: i64 = sqlx::query("SELECT value FROM revisions WHERE name = 'domains'")
            .fetch_one(&self.pool)
            .await?
            .try_get("value")?;
        Ok((revision, self.list_domains(None).await?))
    }
}
