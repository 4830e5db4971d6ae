//! `/cdn_api/edges`: the edge nodes, created by admins, joined with one-time tokens.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use precache_model::time::{now_millis, rfc3339_millis};
use precache_store::Edge;
use precache_tasks::edge_directory::heard_recently;
use serde_json::json;

use crate::envelope::schemas::Envelope;
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, ADMIN, BODY, TOKEN};
use crate::request_body::{json_object, optional_str, required_str};
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::{new_secret, Caller};

/// How long a join token may wait to be used.
const JOIN_TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;

/// Edge names: what a host name label allows, so they read well in logs and unit names.
pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-_.".contains(&byte)
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            Ret::BadField,
            format!("edge name {name:?} must be 1 to 63 of a-z, 0-9, '-', '_', '.'"),
        ))
    }
}

fn edge_state(edge: &Edge, up: bool) -> &'static str {
    if edge.revoked_at.is_some() {
        "revoked"
    } else if edge.admin_secret.is_none() {
        "waiting_to_join"
    } else if up {
        "up"
    } else {
        "down"
    }
}

/// A fresh join token and its stored hash. The prefix names what it is (and keeps it from
/// starting with `-`, which a command line would take for a flag).
fn new_join_token() -> (String, String) {
    new_secret("pcj_")
}

/// A created or re-issued edge with its join token, shown once.
fn with_token(edge: &Edge, parent: Option<&str>, token: &str, expires_at: i64) -> Answer {
    Answer::ok(json!({
        "edge": {"name": edge.name, "parent": parent},
        "join_token": token,
        "join_token_expires_at": rfc3339_millis(expires_at),
    }))
}

/// `POST /cdn_api/edges` `{"name": "edge-sh-1", "parent": null}` → 201 with a one-time
/// `join_token` for `precache edge --join-token`.
#[utoipa::path(
    post,
    path = "/cdn_api/edges",
    tag = "edges",
    operation_id = "edge_create",
    summary = "Create an edge and its one-time join token (admin)",
    request_body = schemas::NewEdge,
    responses((
        status = 201,
        description = "Created, waiting to join.",
        body = Envelope<schemas::JoinToken>
    )),
    security(("token" = [])),
    extensions((
        "x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, BODY, &[Ret::Conflict, Ret::NotFound]]))
    )),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    let name = required_str(&body, "name")?;
    check_name(name)?;
    let parent = optional_str(&body, "parent")?;
    let (token, hash) = new_join_token();
    let now = now_millis();
    let expires_at = now + JOIN_TOKEN_TTL_MS;
    let edge = state
        .inner
        .store
        .create_edge(name, parent, &hash, expires_at, now)
        .await
        .map_err(from_store)?;
    tracing::info!(edge = %edge.name, parent, "edge created; waiting for it to join");
    Ok(with_token(&edge, parent, &token, expires_at)
        .with_status(StatusCode::CREATED)
        .with_audit(edge.name.clone(), None))
}

/// `POST /cdn_api/edges/{name}/join_token`: a new one-time token (after a revocation, or to
/// move an edge to a new data dir). The edge's current credential stays valid until it joins.
#[utoipa::path(
    post,
    path = "/cdn_api/edges/{name}/join_token",
    tag = "edges",
    operation_id = "edge_join_token",
    summary = "Issue a new one-time join token (admin)",
    description = "After a revocation, or to move the edge to a new data dir. The edge's current \
                   credential stays valid until it joins.",
    params(("name" = String, Path, description = "The edge's name.")),
    responses((status = 200, description = "The new token.", body = Envelope<schemas::JoinToken>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
)]
pub(crate) async fn renew_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let (token, hash) = new_join_token();
    let expires_at = now_millis() + JOIN_TOKEN_TTL_MS;
    let edge = state
        .inner
        .store
        .renew_join_token(&name, &hash, expires_at)
        .await
        .map_err(from_store)?;
    let parent = parent_name(&state, &edge).await?;
    Ok(with_token(&edge, parent.as_deref(), &token, expires_at))
}

/// `POST /cdn_api/edges/{name}/revoke`: the edge's credential stops working at once; the
/// control plane stops driving it, and its pairs fail as "revoked".
#[utoipa::path(
    post,
    path = "/cdn_api/edges/{name}/revoke",
    tag = "edges",
    operation_id = "edge_revoke",
    summary = "Revoke an edge's credential (admin)",
    description = "It stops working at once: the control plane stops driving the edge, its \
                   hellos are refused (`1002`), pairs on it fail as revoked, and new tasks leave \
                   it out until it joins again.",
    params(("name" = String, Path, description = "The edge's name.")),
    responses((status = 200, description = "Revoked.", body = Envelope<schemas::Revoked>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let edge = state
        .inner
        .store
        .revoke_edge(&name, now_millis())
        .await
        .map_err(from_store)?;
    tracing::warn!(edge = %edge.name, "edge credential revoked");
    if let Err(error) = state.inner.edges.sync_now().await {
        tracing::warn!(%error, "could not refresh the edge list after a revocation");
    }
    Ok(Answer::ok(
        json!({"edge": {"name": edge.name, "state": edge_state(&edge, false)}}),
    ))
}

async fn parent_name(state: &AppState, edge: &Edge) -> Result<Option<String>, ApiError> {
    let Some(parent_id) = edge.parent_id else {
        return Ok(None);
    };
    let edges = state.inner.store.list_edges().await.map_err(from_store)?;
    Ok(edges
        .into_iter()
        .find(|other| other.id == parent_id)
        .map(|parent| parent.name))
}

/// `GET /cdn_api/edges`: every edge, its state, when it was last heard from, its backlog.
#[utoipa::path(
    get,
    path = "/cdn_api/edges",
    tag = "edges",
    operation_id = "edge_list",
    summary = "List the edges (admin)",
    responses((
        status = 200,
        description = "Every edge, its state, when it was last heard from, its backlog.",
        body = Envelope<schemas::Edges>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN])))),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    Ok(Answer::ok(json!({"edges": edges_json(&state).await?})))
}

/// Every precache edge as `GET /cdn_api/edges` lists it: state, addresses, backlog and cache.
pub(crate) async fn edges_json(state: &AppState) -> Result<Vec<serde_json::Value>, ApiError> {
    let mut edges = state.inner.store.list_edges().await.map_err(from_store)?;
    // Backends' targets are listed with their backend (`GET /cdn_api/backends`).
    edges.retain(|edge| edge.backend.is_none());
    let backlogs = state
        .inner
        .store
        .edge_backlogs()
        .await
        .map_err(from_store)?;
    let health = state.inner.edges.health();
    let now = now_millis();
    let listed: Vec<serde_json::Value> = edges
        .iter()
        .map(|edge| {
            let known = health.get(&edge.id).cloned().unwrap_or_default();
            // An edge joined through another process a moment ago is up if it said hello.
            let up = if known.probed {
                known.up
            } else {
                heard_recently(edge.last_seen_at, now)
            };
            let status = known.status.as_ref();
            let (pairs, owed) = backlogs.get(&edge.id).copied().unwrap_or_default();
            let parent = edge
                .parent_id
                .and_then(|id| edges.iter().find(|other| other.id == id))
                .map(|parent| parent.name.as_str());
            let last_seen = match (known.last_seen_at, edge.last_seen_at) {
                (Some(polled), Some(hello)) => Some(polled.max(hello)),
                (polled, hello) => polled.or(hello),
            };
            json!({
                "name": edge.name,
                "parent": parent,
                "state": edge_state(edge, up),
                "up": up && edge.revoked_at.is_none(),
                "last_seen_at": last_seen.map(rfc3339_millis),
                "error": known.last_error,
                "admin_url": edge.admin_url,
                "data_url": edge.data_url,
                "backlog": {"pairs": pairs, "owed_purges": owed},
                "domains_revision": status.map(|s| s.domains_revision),
                "cached_objects": status.map(|s| s.objects),
                "cached_bytes": status.map(|s| s.bytes),
                "fills_in_progress": status.map(|s| s.fills_in_progress),
                "created_at": rfc3339_millis(edge.created_at),
                "revoked_at": edge.revoked_at.map(rfc3339_millis),
            })
        })
        .collect();
    Ok(listed)
}
