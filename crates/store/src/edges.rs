//! Edge nodes known to the control plane.

use precache_model::EdgeId;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Edge, Result, Store};

const EDGE_COLUMNS: &str = "id, name, admin_url, admin_secret, created_at, last_seen_at";

fn decode_edge(row: &AnyRow) -> Result<Edge> {
    Ok(Edge {
        id: EdgeId(row.try_get("id")?),
        name: row.try_get("name")?,
        admin_url: row.try_get("admin_url")?,
        admin_secret: row.try_get("admin_secret")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
    })
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

    /// Every edge, by name.
    pub async fn list_edges(&self) -> Result<Vec<Edge>> {
        let rows = sqlx::query(&format!("SELECT {EDGE_COLUMNS} FROM edges ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_edge).collect()
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
