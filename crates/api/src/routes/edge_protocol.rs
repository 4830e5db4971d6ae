//! `/cdn_api/edge_protocol/...`: the calls edges make to the control plane (join, heartbeat,
//! catch-up). Authenticated by the edge's credential, not by an account's token.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use precache_model::edge_protocol::{
    CaughtUp, Hello, HelloAnswer, JoinAnswer, JoinRequest, OwedPurge, PurgeCommand, PurgeMode,
    PurgeTarget, CAUGHT_UP_PATH, HELLO_PATH, JOIN_PATH,
};
use precache_model::time::now_millis;
use precache_model::TaskId;
use precache_store::{Edge, EdgeAddresses, PairKey, PairResult};
use serde_json::Value;

use crate::envelope::schemas::{Empty, Envelope};
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, BODY, STORE};
use crate::request_body::json_object;
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::{new_secret, token_hash};

/// A purge owed for longer than this was not pushed (the control plane cannot reach the edge):
/// the edge is told to catch up on its own.
const PUSH_GRACE_MS: i64 = 5_000;

/// Most owed purges in one hello answer; the edge asks again for the rest.
const OWED_PER_ANSWER: i64 = 1000;

fn answer(value: impl serde::Serialize) -> Result<Answer, ApiError> {
    match serde_json::to_value(value) {
        Ok(value) => Ok(Answer::ok(value)),
        Err(error) => Err(ApiError::internal(error)),
    }
}

fn addresses(admin_url: &str, data_url: &str) -> Result<EdgeAddresses, ApiError> {
    for (field, url) in [("admin_url", admin_url), ("data_url", data_url)] {
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.len() > 512 {
            return Err(ApiError::new(
                Ret::BadField,
                format!("{field} {url:?} must be an http:// or https:// base URL"),
            ));
        }
    }
    Ok(EdgeAddresses {
        admin_url: admin_url.trim_end_matches('/').to_string(),
        data_url: data_url.trim_end_matches('/').to_string(),
    })
}

/// The edge `name` if the request carries its credential.
/// The data plane of `edge`'s parent, when it has one that is not revoked and said where it is.
async fn parent_data_url(state: &AppState, edge: &Edge) -> Result<Option<String>, ApiError> {
    let Some(parent_id) = edge.parent_id else {
        return Ok(None);
    };
    let edges = state.inner.store.list_edges().await.map_err(from_store)?;
    Ok(edges
        .into_iter()
        .find(|parent| parent.id == parent_id && parent.revoked_at.is_none())
        .and_then(|parent| parent.data_url))
}

async fn authenticated(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
) -> Result<Edge, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(Ret::NoToken, "an edge credential is required"))?;
    let edge = state
        .inner
        .store
        .edge_named(name)
        .await
        .map_err(from_store)?;
    // Compared as hashes: equal length, and no early exit on the secret's bytes.
    match edge {
        Some(edge)
            if edge
                .admin_secret
                .as_deref()
                .is_some_and(|secret| token_hash(secret) == token_hash(presented)) =>
        {
            Ok(edge)
        }
        _ => Err(ApiError::new(
            Ret::BadToken,
            format!("edge {name}: credential unknown or revoked; join again with a new token"),
        )),
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Body,
) -> Result<T, ApiError> {
    let object = json_object(body, state.inner.config.max_body_bytes).await?;
    serde_json::from_value(Value::Object(object))
        .map_err(|error| ApiError::new(Ret::BadField, error.to_string()))
}

/// `POST /cdn_api/edge_protocol/join`: trades a one-time join token for the credential.
#[utoipa::path(
    post,
    path = JOIN_PATH,
    tag = "edge protocol",
    operation_id = "edge_join",
    summary = "Join: trade a one-time join token for the edge's credential",
    description = "Called by `precache edge`, which keeps the credential in its data dir. A \
                   wrong, spent or expired token is `1003`. No credential needed.",
    request_body = schemas::JoinRequest,
    responses((
        status = 200,
        description = "The credential.",
        body = Envelope<schemas::JoinAnswer>
    )),
    extensions(("x-ret-codes" = json!(ret_codes(&[BODY, STORE, &[Ret::BadCredentials]])))),
)]
pub(crate) async fn join(
    State(state): State<AppState>,
    actor: crate::audit::AuditActor,
    body: Body,
) -> Result<Answer, ApiError> {
    let request: JoinRequest = json_body(&state, body).await?;
    actor.set(None, &request.name);
    let addresses = addresses(&request.admin_url, &request.data_url)?;
    let (credential, _) = new_secret("pce_");
    let joined = state
        .inner
        .store
        .join_edge(
            &request.name,
            &token_hash(&request.join_token),
            &credential,
            addresses,
            now_millis(),
        )
        .await
        .map_err(from_store)?;
    let Some(edge) = joined else {
        return Err(ApiError::new(
            Ret::BadCredentials,
            format!(
                "join token for edge {} is wrong, used or expired; an admin can issue a new one",
                request.name
            ),
        ));
    };
    tracing::info!(edge = %edge.name, admin = ?edge.admin_url, "edge joined");
    state.inner.edges.wake();
    let parent_data_url = parent_data_url(&state, &edge).await?;
    answer(JoinAnswer {
        credential,
        parent_data_url,
    })
}

/// `POST /cdn_api/edge_protocol/hello`: the edge's heartbeat; with `catch_up`, the answer
/// lists the purges it may have missed.
#[utoipa::path(
    post,
    path = HELLO_PATH,
    tag = "edge protocol",
    operation_id = "edge_hello",
    summary = "Hello: the edge's heartbeat",
    description = "Every second: the edge is alive at these addresses. With `catch_up`, the \
                   answer lists the purges owed to it. The body is read before the credential \
                   is checked.",
    request_body = schemas::Hello,
    responses((
        status = 200,
        description = "Its parent's address, and what it owes.",
        body = Envelope<schemas::HelloAnswer>
    )),
    security(("edge_credential" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[BODY, STORE, &[Ret::NoToken, Ret::BadToken]])))),
)]
pub(crate) async fn hello(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Answer, ApiError> {
    let hello: Hello = json_body(&state, body).await?;
    let edge = authenticated(&state, &headers, &hello.name).await?;
    let addresses = addresses(&hello.admin_url, &hello.data_url)?;
    let moved = edge.admin_url.as_deref() != Some(addresses.admin_url.as_str());
    let store = &state.inner.store;
    store
        .edge_hello(edge.id, addresses, now_millis())
        .await
        .map_err(from_store)?;
    if moved {
        // Drive it at its new address without waiting for the next round.
        state.inner.edges.wake();
    }
    let mut reply = HelloAnswer {
        parent_data_url: parent_data_url(&state, &edge).await?,
        ..HelloAnswer::default()
    };
    if !hello.catch_up {
        reply.behind = store
            .owes_purges_since(edge.id, now_millis() - PUSH_GRACE_MS)
            .await
            .map_err(from_store)?;
    }
    if hello.catch_up {
        let owed = store
            .owed_purges(edge.id, OWED_PER_ANSWER)
            .await
            .map_err(from_store)?;
        reply.more = owed.len() as i64 >= OWED_PER_ANSWER;
        reply.owed = owed
            .into_iter()
            .map(|purge| OwedPurge {
                task_id: purge.key.task_id.to_string(),
                url_idx: purge.key.url_idx,
                command: PurgeCommand {
                    target: if purge.is_dir {
                        PurgeTarget::Prefix(purge.url)
                    } else {
                        PurgeTarget::Url(purge.url)
                    },
                    mode: purge
                        .mode
                        .as_deref()
                        .and_then(PurgeMode::from_name)
                        .unwrap_or_default(),
                    dry_run: false,
                },
            })
            .collect();
    }
    answer(reply)
}

/// `POST /cdn_api/edge_protocol/caught_up`: purges the edge applied on its own. Pairs still
/// unfinished end successful; a refresh whose last purge this was releases its warm phase here.
#[utoipa::path(
    post,
    path = CAUGHT_UP_PATH,
    tag = "edge protocol",
    operation_id = "edge_caught_up",
    summary = "Caught up: the purges the edge applied on its own",
    description = "Unfinished pairs end successful; a refresh whose last purge this was releases \
                   its warm phase.",
    request_body = schemas::CaughtUp,
    responses((status = 200, description = "Recorded.", body = Envelope<Empty>)),
    security(("edge_credential" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[BODY, STORE, &[Ret::NoToken, Ret::BadToken]])))),
)]
pub(crate) async fn caught_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Answer, ApiError> {
    let caught_up: CaughtUp = json_body(&state, body).await?;
    let edge = authenticated(&state, &headers, &caught_up.name).await?;
    let now = now_millis();
    let mut tasks: Vec<TaskId> = Vec::new();
    let mut results = Vec::with_capacity(caught_up.applied.len());
    for applied in caught_up.applied {
        let task_id: TaskId = applied.task_id.parse().map_err(|_| {
            ApiError::new(
                Ret::BadField,
                format!("{:?} is not a reqId", applied.task_id),
            )
        })?;
        if !tasks.contains(&task_id) {
            tasks.push(task_id);
        }
        results.push(PairResult {
            key: PairKey {
                task_id,
                url_idx: applied.url_idx,
                edge_id: edge.id,
            },
            success: true,
            attempts: 1,
            http_status: None,
            bytes: Some(i64::try_from(applied.outcome.bytes).unwrap_or(i64::MAX)),
            objects: Some(i64::try_from(applied.outcome.objects).unwrap_or(i64::MAX)),
            error: None,
            finished_at: now,
            unsupported: false,
            confirmed: Some(true),
        });
    }
    let store = &state.inner.store;
    let confirmed = results.len();
    store.purges_confirmed(results).await.map_err(from_store)?;
    for task in tasks {
        let released = store.release_held(task).await.map_err(from_store)?;
        state
            .inner
            .engine
            .enqueue(released.into_iter().map(Into::into).collect());
    }
    tracing::info!(edge = %edge.name, purges = confirmed, "edge caught up");
    Ok(Answer::ok(serde_json::json!({})))
}
