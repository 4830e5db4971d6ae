//! `GET /cdn_api/edges`: the edge nodes and whether each is up.

use axum::extract::State;
use precache_model::time::rfc3339_millis;
use serde_json::json;

use crate::envelope::{Answer, ApiError};
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::Caller;

/// Lists every edge with what the control plane last learned from it.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let edges = state.inner.store.list_edges().await.map_err(from_store)?;
    let health = state.inner.edges.health();
    let listed: Vec<_> = edges
        .iter()
        .map(|edge| {
            let known = health.get(&edge.id).cloned().unwrap_or_default();
            let status = known.status.as_ref();
            json!({
                "name": edge.name,
                "up": known.up,
                "last_seen_at": known.last_seen_at.or(edge.last_seen_at).map(rfc3339_millis),
                "error": known.last_error,
                "domains_revision": status.map(|s| s.domains_revision),
                "cached_objects": status.map(|s| s.objects),
                "cached_bytes": status.map(|s| s.bytes),
                "fills_in_progress": status.map(|s| s.fills_in_progress),
                "created_at": rfc3339_millis(edge.created_at),
            })
        })
        .collect();
    Ok(Answer::ok(json!({"edges": listed})))
}
