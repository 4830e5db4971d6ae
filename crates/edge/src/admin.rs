//! The edge protocol's server side: the admin listener the control plane drives the edge with.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use precache_model::edge_protocol::{
    DomainTable, EdgeStatus, PrefetchCommand, PrefetchEvent, PurgeCommand, PurgeMode, PurgeOutcome,
    PurgeTarget, DOMAINS_PATH, PREFETCH_PATH, PURGE_PATH, STATUS_PATH,
};
use precache_model::ObjectUrl;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use crate::disk_cache::{DiskCache, PurgeAction};
use crate::domain_routes::DomainRoutes;
use crate::prefetch::Prefetcher;

/// What the admin handlers share.
pub(crate) struct AdminState {
    pub(crate) render_metrics: Arc<dyn Fn() -> String + Send + Sync>,
    pub(crate) name: String,
    pub(crate) secret: Arc<str>,
    pub(crate) routes: Arc<DomainRoutes>,
    pub(crate) cache: &'static DiskCache,
    pub(crate) prefetcher: Prefetcher,
}

/// The admin router; every route requires the edge's admin secret as a bearer token.
pub(crate) fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route(STATUS_PATH, get(status))
        .route(DOMAINS_PATH, put(replace_domains))
        .route(PREFETCH_PATH, post(prefetch))
        .route(PURGE_PATH, post(purge))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_secret,
        ))
        // Added after the secret's layer: scrapers read metrics without the edge's secret.
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn require_secret(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(state.secret.as_bytes())) && !presented.is_empty() {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, "edge admin secret required\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (state.render_metrics)(),
    )
        .into_response()
}

async fn status(State(state): State<Arc<AdminState>>) -> Json<EdgeStatus> {
    let stats = state.cache.stats();
    Json(EdgeStatus {
        name: state.name.clone(),
        domains_revision: state.routes.revision(),
        objects: stats.objects,
        bytes: stats.bytes,
        fills_in_progress: stats.fills_in_progress,
        stored_bytes: stats.stored_bytes,
        cache_budget: stats.budget,
        evictions: stats.evictions,
    })
}

async fn replace_domains(
    State(state): State<Arc<AdminState>>,
    Json(table): Json<DomainTable>,
) -> Response {
    let revision = table.revision;
    match state.routes.apply(table).await {
        Ok(()) => {
            tracing::info!(revision, "domain table updated");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => {
            tracing::error!(%error, "could not save the domain table");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not save the domain table: {error}\n"),
            )
                .into_response()
        }
    }
}

/// Answers with NDJSON: progress lines while the object streams in, then the outcome. The
/// prefetch runs in its own task, so it completes (and the object is cached) even when the
/// control plane goes away mid-way.
async fn prefetch(
    State(state): State<Arc<AdminState>>,
    Json(command): Json<PrefetchCommand>,
) -> Response {
    let (events, receiver) = mpsc::channel::<PrefetchEvent>(16);
    tokio::spawn(async move {
        let outcome = state.prefetcher.run(&command, &events).await;
        let _ = events.send(PrefetchEvent::Finished(outcome)).await;
    });
    let lines = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), receiver))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// Removes, invalidates or counts the cached objects of a URL (every variant) or of a URL
/// prefix, and answers what it applied to.
async fn purge(
    State(state): State<Arc<AdminState>>,
    Json(command): Json<PurgeCommand>,
) -> Response {
    match apply_purge(&state.routes, state.cache, &command).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(PurgeFailure::BadUrl(reason)) => {
            (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
        }
        Err(PurgeFailure::Cache(reason)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("purge failed: {reason}\n"),
        )
            .into_response(),
    }
}

/// Why a purge could not be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PurgeFailure {
    /// The target is not a valid URL.
    #[error("{0}")]
    BadUrl(String),
    /// The cache could not carry it out.
    #[error("purge failed: {0}")]
    Cache(String),
}

/// Applies a purge to the cache: the admin listener's purges and the catch-up's.
pub(crate) async fn apply_purge(
    routes: &DomainRoutes,
    cache: &'static DiskCache,
    command: &PurgeCommand,
) -> Result<PurgeOutcome, PurgeFailure> {
    let (text, prefix) = match &command.target {
        PurgeTarget::Url(url) => (url, false),
        PurgeTarget::Prefix(url) => (url, true),
    };
    let url = ObjectUrl::parse(text).map_err(|error| PurgeFailure::BadUrl(error.to_string()))?;
    let primary = routes.primary_key(url.host(), url.path_and_query());
    let action = match (command.dry_run, command.mode) {
        (true, _) => PurgeAction::Count,
        (false, PurgeMode::Delete) => PurgeAction::Delete,
        (false, PurgeMode::Invalidate) => PurgeAction::Invalidate,
    };
    let purged =
        tokio::task::spawn_blocking(move || cache.purge_objects(&primary, prefix, action)).await;
    match purged {
        Ok(Ok(done)) => {
            tracing::info!(url = %text, prefix, ?action, objects = done.objects, bytes = done.bytes, "purged");
            Ok(PurgeOutcome {
                objects: done.objects,
                bytes: done.bytes,
                fills_stopped: done.fills_stopped,
            })
        }
        Ok(Err(error)) => {
            tracing::error!(%error, url = %text, "purge failed");
            Err(PurgeFailure::Cache(error.to_string()))
        }
        Err(error) => Err(PurgeFailure::Cache(error.to_string())),
    }
}
