//! Backends: cache fleets (and CDNs) the operator already runs, where tasks are carried out
//! besides precache's own edges.
//!
//! Each target of a backend is a row of `edges` with `backend_id` and `backend` set and its base
//! URL in `admin_url`, so that a (URL, target) pair is an ordinary `task_pairs` row: durable,
//! owned by one engine, retried and taken over like any edge's. Such rows never join, say hello
//! or owe purges; `GET /cdn_api/edges` leaves them out. Deleting a backend detaches its target
//! rows (they keep the backend's name, so old tasks still say where they ran).

use precache_model::time::now_millis;
use precache_model::EdgeId;
use sqlx::any::AnyRow;
use sqlx::Row;

use std::collections::BTreeMap;

use crate::domains::EDGES_BACKEND;
use crate::sealed::SecretKeys;
use crate::{BackendRecord, Error, NewBackend, Result, Store};

fn decode_backend(
    row: &AnyRow,
    targets: Vec<(EdgeId, String)>,
    keys: Option<&SecretKeys>,
) -> Result<BackendRecord> {
    let settings: String = row.try_get("settings")?;
    let name: String = row.try_get("name")?;
    let credentials = match row.try_get::<Option<String>, _>("credentials")? {
        None => Ok(BTreeMap::new()),
        Some(sealed) => open_credentials(keys, &name, &sealed),
    };
    Ok(BackendRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        settings: serde_json::from_str(&settings)
            .map_err(|e| Error::Corrupt(format!("backend settings {settings:?}: {e}")))?,
        targets,
        credentials,
        created_at: row.try_get("created_at")?,
    })
}

fn open_credentials(
    keys: Option<&SecretKeys>,
    name: &str,
    sealed: &str,
) -> std::result::Result<BTreeMap<String, String>, String> {
    let keys = keys.ok_or("no secret key is configured to open the credentials")?;
    let opened = keys.open(name, sealed)?;
    serde_json::from_slice(&opened).map_err(|e| format!("credentials that are not a map: {e}"))
}

fn seal_credentials(
    keys: Option<&SecretKeys>,
    name: &str,
    credentials: &BTreeMap<String, String>,
) -> Result<String> {
    let keys = keys
        .ok_or_else(|| Error::Refused("no secret key is configured to seal credentials".into()))?;
    let plain = serde_json::to_vec(credentials)
        .map_err(|e| Error::Corrupt(format!("encode credentials: {e}")))?;
    keys.seal(name, &plain).map_err(Error::Corrupt)
}

impl Store {
    /// Registers a backend and its targets. `Conflict` when the name is taken.
    pub async fn create_backend(&self, backend: NewBackend) -> Result<BackendRecord> {
        let taken = format!("backend {:?}", backend.name);
        if backend.name == EDGES_BACKEND {
            return Err(Error::Conflict(taken));
        }
        let settings = serde_json::to_string(&backend.settings)
            .map_err(|e| Error::Corrupt(format!("encode backend settings: {e}")))?;
        let sealed = match backend.credentials.is_empty() {
            true => None,
            false => Some(seal_credentials(
                self.keys.as_deref(),
                &backend.name,
                &backend.credentials,
            )?),
        };
        let created_at = now_millis();
        let result = self
            .writer
            .run(move |connection| {
                Box::pin(async move {
                    let id: i64 = sqlx::query(
                        "INSERT INTO backends (name, kind, settings, credentials, created_at) \
                         VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    )
                    .bind(&backend.name)
                    .bind(&backend.kind)
                    .bind(&settings)
                    .bind(sealed)
                    .bind(created_at)
                    .fetch_one(&mut *connection)
                    .await?
                    .try_get("id")?;
                    let mut targets = Vec::with_capacity(backend.targets.len());
                    for (n, url) in backend.targets.iter().enumerate() {
                        // The row's name only has to be unique: the backend id makes it so even
                        // when a deleted backend's name is used again.
                        let row_name = format!("{}@{id}#{}", backend.name, n + 1);
                        let target: i64 = sqlx::query(
                            "INSERT INTO edges (name, admin_url, created_at, backend_id, backend) \
                             VALUES ($1, $2, $3, $4, $5) RETURNING id",
                        )
                        .bind(&row_name)
                        .bind(url)
                        .bind(created_at)
                        .bind(id)
                        .bind(&backend.name)
                        .fetch_one(&mut *connection)
                        .await?
                        .try_get("id")?;
                        targets.push((EdgeId(target), url.clone()));
                    }
                    Ok(BackendRecord {
                        id,
                        name: backend.name,
                        kind: backend.kind,
                        settings: backend.settings,
                        targets,
                        credentials: Ok(backend.credentials),
                        created_at,
                    })
                })
            })
            .await;
        match result {
            Err(error) if error.is_unique_violation() => Err(Error::Conflict(taken)),
            other => other,
        }
    }

    /// Every backend, by name, with its targets.
    pub async fn list_backends(&self) -> Result<Vec<BackendRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, kind, settings, credentials, created_at FROM backends ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        let targets = sqlx::query(
            "SELECT id, backend_id, admin_url FROM edges WHERE backend_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut backends = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let mut own = Vec::new();
            for target in &targets {
                if target.try_get::<i64, _>("backend_id")? == id {
                    own.push((
                        EdgeId(target.try_get("id")?),
                        target
                            .try_get::<Option<String>, _>("admin_url")?
                            .unwrap_or_default(),
                    ));
                }
            }
            backends.push(decode_backend(row, own, self.keys.as_deref())?);
        }
        Ok(backends)
    }

    /// The backend named `name`.
    pub async fn backend_named(&self, name: &str) -> Result<Option<BackendRecord>> {
        Ok(self
            .list_backends()
            .await?
            .into_iter()
            .find(|backend| backend.name == name))
    }

    /// Seals again, under the primary key, every secret sealed by the previous one (after a
    /// key rotation): backends' credentials and certificates' keys; answers how many.
    /// Secrets that open with neither key are left as they are (and reported by what uses them).
    pub async fn reseal_credentials(&self) -> Result<usize> {
        let certificate_keys = self.reseal_certificate_keys().await?;
        Ok(self.reseal_backend_credentials().await? + certificate_keys)
    }

    async fn reseal_backend_credentials(&self) -> Result<usize> {
        let Some(keys) = self.keys.clone() else {
            return Ok(0);
        };
        let rows =
            sqlx::query("SELECT id, name, credentials FROM backends WHERE credentials IS NOT NULL")
                .fetch_all(&self.pool)
                .await?;
        let mut resealed = Vec::new();
        for row in &rows {
            let sealed: String = row.try_get("credentials")?;
            if keys.is_current(&sealed) {
                continue;
            }
            let name: String = row.try_get("name")?;
            if let Ok(plain) = keys.open(&name, &sealed) {
                let again = keys.seal(&name, &plain).map_err(Error::Corrupt)?;
                resealed.push((row.try_get::<i64, _>("id")?, again));
            }
        }
        let count = resealed.len();
        if count == 0 {
            return Ok(0);
        }
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    for (id, sealed) in &resealed {
                        sqlx::query("UPDATE backends SET credentials = $1 WHERE id = $2")
                            .bind(sealed)
                            .bind(*id)
                            .execute(&mut *connection)
                            .await?;
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(count)
    }

    /// Deletes a backend. `NotFound` when there is none by that name, `Conflict` while a domain
    /// still names it. Its pairs not yet run fail (their target is gone).
    pub async fn delete_backend(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let Some(row) = sqlx::query("SELECT id FROM backends WHERE name = $1")
                        .bind(&name)
                        .fetch_optional(&mut *connection)
                        .await?
                    else {
                        return Err(Error::NotFound(format!("backend {name:?}")));
                    };
                    let id: i64 = row.try_get("id")?;
                    let lists = sqlx::query(
                        "SELECT name, backends FROM domains WHERE backends IS NOT NULL",
                    )
                    .fetch_all(&mut *connection)
                    .await?;
                    for list in &lists {
                        let text: String = list.try_get("backends")?;
                        let names: Vec<String> = serde_json::from_str(&text).map_err(|e| {
                            Error::Corrupt(format!("domain backends {text:?}: {e}"))
                        })?;
                        if names.contains(&name) {
                            let domain: String = list.try_get("name")?;
                            return Err(Error::Conflict(format!(
                                "backend {name:?} is used by domain {domain:?}"
                            )));
                        }
                    }
                    sqlx::query("DELETE FROM backends WHERE id = $1")
                        .bind(id)
                        .execute(&mut *connection)
                        .await?;
                    sqlx::query(
                        "UPDATE edges SET backend_id = NULL, revoked_at = $1 WHERE backend_id = $2",
                    )
                    .bind(now_millis())
                    .bind(id)
                    .execute(&mut *connection)
                    .await?;
                    Ok(())
                })
            })
            .await
    }
}
