//! Edge nodes known to the control plane, their credentials and their place in the hierarchy.
//!
//! An admin creates an edge by name (with an optional parent) and gets a one-time join token;
//! only its SHA-256 is stored. The edge trades the token for its credential (a secret both sides
//! present: the control plane to the edge's admin listener, the edge in its heartbeats), which
//! an admin can revoke. The embedded edge of `precache serve` skips the token: the process that
//! starts it registers it directly ([`Store::upsert_edge`]).

use std::collections::BTreeMap;

use precache_model::EdgeId;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Edge, Error, Result, Store};

const EDGE_COLUMNS: &str = "id, name, admin_url, admin_secret, created_at, last_seen_at, \
     parent_id, data_url, revoked_at, join_token_hash, backend_id, backend";

fn decode_edge(row: &AnyRow) -> Result<Edge> {
    Ok(Edge {
        id: EdgeId(row.try_get("id")?),
        name: row.try_get("name")?,
        admin_url: row.try_get("admin_url")?,
        admin_secret: row.try_get("admin_secret")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        parent_id: row.try_get::<Option<i64>, _>("parent_id")?.map(EdgeId),
        data_url: row.try_get("data_url")?,
        revoked_at: row.try_get("revoked_at")?,
        join_pending: row
            .try_get::<Option<String>, _>("join_token_hash")?
            .is_some(),
        backend: match row.try_get::<Option<String>, _>("backend")? {
            Some(name) => Some((row.try_get("backend_id")?, name)),
            None => None,
        },
    })
}

/// What an edge announces when it joins or says hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeAddresses {
    /// Base URL of its admin listener (the edge protocol).
    pub admin_url: String,
    /// Base URL of its data plane.
    pub data_url: String,
}

impl Store {
    /// Records an edge by name with the address and secret of its admin listener, creating it
    /// the first time. The all-in-one server calls this at every start: its embedded edge keeps
    /// its id (and so its task history) while its admin port and secret change.
    pub async fn upsert_edge(
        &self,
        name: &str,
        admin_url: &str,
        admin_secret: &str,
        now: i64,
    ) -> Result<Edge> {
        let (name, admin_url, admin_secret) = (
            name.to_string(),
            admin_url.to_string(),
            admin_secret.to_string(),
        );
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "INSERT INTO edges (name, admin_url, admin_secret, created_at, last_seen_at) \
                         VALUES ($1, $2, $3, $4, $4) \
                         ON CONFLICT (name) DO UPDATE SET admin_url = $2, admin_secret = $3, last_seen_at = $4 \
                         RETURNING {EDGE_COLUMNS}"
                    ))
                    .bind(&name)
                    .bind(&admin_url)
                    .bind(&admin_secret)
                    .bind(now)
                    .fetch_one(&mut *connection)
                    .await?;
                    decode_edge(&row)
                })
            })
            .await
    }

    /// Creates edge `name` under `parent` (an existing edge's name), waiting to join with the
    /// token whose hash is `token_hash` until `expires_at`. `Conflict` when the name is taken,
    /// `NotFound` when the parent is unknown.
    pub async fn create_edge(
        &self,
        name: &str,
        parent: Option<&str>,
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Edge> {
        let (name, parent, token_hash) = (
            name.to_string(),
            parent.map(str::to_string),
            token_hash.to_string(),
        );
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let parent_id = match &parent {
                        None => None,
                        Some(parent) => Some(
                            sqlx::query("SELECT id FROM edges WHERE name = $1")
                                .bind(parent)
                                .fetch_optional(&mut *connection)
                                .await?
                                .ok_or_else(|| Error::NotFound(format!("parent edge {parent}")))?
                                .try_get::<i64, _>("id")?,
                        ),
                    };
                    let row = sqlx::query(&format!(
                        "INSERT INTO edges (name, created_at, parent_id, join_token_hash, join_expires_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING \
                         RETURNING {EDGE_COLUMNS}"
                    ))
                    .bind(&name)
                    .bind(now)
                    .bind(parent_id)
                    .bind(&token_hash)
                    .bind(expires_at)
                    .fetch_optional(&mut *connection)
                    .await?
                    .ok_or_else(|| Error::Conflict(format!("edge {name} already exists")))?;
                    decode_edge(&row)
                })
            })
            .await
    }

    /// Issues a new join token for edge `name` (after a revocation, or a lost data dir).
    pub async fn renew_join_token(
        &self,
        name: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<Edge> {
        let (name, token_hash) = (name.to_string(), token_hash.to_string());
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "UPDATE edges SET join_token_hash = $1, join_expires_at = $2 WHERE name = $3 \
                         RETURNING {EDGE_COLUMNS}"
                    ))
                    .bind(&token_hash)
                    .bind(expires_at)
                    .bind(&name)
                    .fetch_optional(&mut *connection)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("edge {name}")))?;
                    decode_edge(&row)
                })
            })
            .await
    }

    /// Trades a join token for a credential: when `token_hash` is edge `name`'s unexpired token,
    /// the token is spent, `secret` becomes the edge's credential and its addresses are recorded.
    /// `None` when the token is wrong, spent or expired.
    pub async fn join_edge(
        &self,
        name: &str,
        token_hash: &str,
        secret: &str,
        addresses: EdgeAddresses,
        now: i64,
    ) -> Result<Option<Edge>> {
        let (name, token_hash, secret) =
            (name.to_string(), token_hash.to_string(), secret.to_string());
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "UPDATE edges SET admin_secret = $1, admin_url = $2, data_url = $3, last_seen_at = $4, \
                                join_token_hash = NULL, join_expires_at = NULL, revoked_at = NULL \
                         WHERE name = $5 AND join_token_hash = $6 AND join_expires_at >= $4 \
                         RETURNING {EDGE_COLUMNS}"
                    ))
                    .bind(&secret)
                    .bind(&addresses.admin_url)
                    .bind(&addresses.data_url)
                    .bind(now)
                    .bind(&name)
                    .bind(&token_hash)
                    .fetch_optional(&mut *connection)
                    .await?;
                    row.as_ref().map(decode_edge).transpose()
                })
            })
            .await
    }

    /// Revokes edge `name`'s credential: the control plane stops driving it and refuses its
    /// calls until it joins again with a new token.
    pub async fn revoke_edge(&self, name: &str, now: i64) -> Result<Edge> {
        let name = name.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "UPDATE edges SET admin_secret = NULL, revoked_at = $1 WHERE name = $2 \
                         RETURNING {EDGE_COLUMNS}"
                    ))
                    .bind(now)
                    .bind(&name)
                    .fetch_optional(&mut *connection)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("edge {name}")))?;
                    decode_edge(&row)
                })
            })
            .await
    }

    /// Records an edge's heartbeat: it is alive at `now`, at these addresses.
    pub async fn edge_hello(&self, id: EdgeId, addresses: EdgeAddresses, now: i64) -> Result<()> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE edges SET admin_url = $1, data_url = $2, last_seen_at = $3 WHERE id = $4",
                    )
                    .bind(&addresses.admin_url)
                    .bind(&addresses.data_url)
                    .bind(now)
                    .bind(id.0)
                    .execute(&mut *connection)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// The edge named `name`.
    pub async fn edge_named(&self, name: &str) -> Result<Option<Edge>> {
        let row = sqlx::query(&format!("SELECT {EDGE_COLUMNS} FROM edges WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_edge).transpose()
    }

    /// Every edge, by name.
    pub async fn list_edges(&self) -> Result<Vec<Edge>> {
        let rows = sqlx::query(&format!("SELECT {EDGE_COLUMNS} FROM edges ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_edge).collect()
    }

    /// Per edge: pairs not finished yet, and purges it still owes (see
    /// [`Store::owed_purges`]); edges with neither are absent.
    pub async fn edge_backlogs(&self) -> Result<BTreeMap<EdgeId, (i64, i64)>> {
        let unfinished = sqlx::query(
            "SELECT edge_id, COUNT(*) AS n FROM task_pairs \
             WHERE status IN ('waiting', 'running', 'held') GROUP BY edge_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let owed = sqlx::query(
            "SELECT edge_id, COUNT(*) AS n FROM task_pairs WHERE owed = 1 GROUP BY edge_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut backlogs: BTreeMap<EdgeId, (i64, i64)> = BTreeMap::new();
        for row in unfinished {
            backlogs
                .entry(EdgeId(row.try_get("edge_id")?))
                .or_default()
                .0 = row.try_get("n")?;
        }
        for row in owed {
            backlogs
                .entry(EdgeId(row.try_get("edge_id")?))
                .or_default()
                .1 = row.try_get("n")?;
        }
        Ok(backlogs)
    }

    /// Records that the control plane heard from an edge.
    pub async fn touch_edge(&self, id: EdgeId, seen_at: i64) -> Result<()> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    sqlx::query("UPDATE edges SET last_seen_at = $1 WHERE id = $2")
                        .bind(seen_at)
                        .bind(id.0)
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            })
            .await
    }
}
