//! The route table of the control plane.

// Visible to the crate so that `openapi.rs` can list the handlers' descriptions.
pub(crate) mod audit;
pub(crate) mod backends;
pub(crate) mod certificates;
pub(crate) mod domains;
pub(crate) mod edge_protocol;
pub(crate) mod edges;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod prefetch;
pub(crate) mod quota;
pub(crate) mod refresh;
pub(crate) mod tasks;
pub(crate) mod tokens;
pub(crate) mod users;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use precache_model::edge_protocol::{CAUGHT_UP_PATH, HELLO_PATH, JOIN_PATH};

use crate::envelope::{ApiError, Ret};
use crate::state::AppState;

/// Every `/cdn_api` route.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/cdn_api/health", get(health::health))
        .route(
            "/cdn_api/auth/tokens",
            get(tokens::show)
                .post(tokens::create)
                .delete(tokens::revoke),
        )
        .route("/cdn_api/users", get(users::list).post(users::create))
        .route(
            "/cdn_api/users/{name}",
            get(users::show).put(users::update).delete(users::delete),
        )
        .route(
            "/cdn_api/users/{name}/webhook_secret",
            get(users::webhook_secret).post(users::rotate_webhook_secret),
        )
        .route("/cdn_api/domains", get(domains::list).post(domains::create))
        .route(
            "/cdn_api/domains/{domain}",
            get(domains::show).delete(domains::delete),
        )
        .route(
            "/cdn_api/domains/{domain}/cache",
            axum::routing::put(domains::set_cache),
        )
        .route(
            "/cdn_api/domains/{domain}/origin_limits",
            axum::routing::put(domains::set_origin_limits),
        )
        .route(
            "/cdn_api/domains/{domain}/backends",
            axum::routing::put(domains::set_backends),
        )
        .route(
            "/cdn_api/domains/{domain}/certificate",
            axum::routing::put(certificates::set).delete(certificates::delete),
        )
        .route(
            "/cdn_api/backends",
            get(backends::list).post(backends::create),
        )
        .route(
            "/cdn_api/backends/{name}",
            get(backends::show).delete(backends::delete),
        )
        .route("/cdn_api/backends/{name}/check", post(backends::check))
        .route("/cdn_api/edges", get(edges::list).post(edges::create))
        .route("/cdn_api/edges/{name}/join_token", post(edges::renew_token))
        .route("/cdn_api/edges/{name}/revoke", post(edges::revoke))
        .route(JOIN_PATH, post(edge_protocol::join))
        .route(HELLO_PATH, post(edge_protocol::hello))
        .route(CAUGHT_UP_PATH, post(edge_protocol::caught_up))
        .route("/cdn_api/quota", get(quota::mine))
        .route("/cdn_api/quota/{user}", get(quota::of_user).put(quota::set))
        .route(
            "/cdn_api/prefetch",
            get(prefetch::list).post(prefetch::submit),
        )
        .route(
            "/cdn_api/prefetch/{req_id}",
            get(prefetch::status).delete(prefetch::cancel),
        )
        .route("/cdn_api/prefetch/{req_id}/events", get(events::prefetch))
        .route("/cdn_api/tasks", get(tasks::list_all))
        .route("/cdn_api/refresh", get(refresh::list).post(refresh::submit))
        .route(
            "/cdn_api/refresh/{req_id}",
            get(refresh::status).delete(refresh::cancel),
        )
        .route("/cdn_api/refresh/{req_id}/events", get(events::refresh))
        .route("/metrics", get(crate::observe::metrics))
        .route("/cdn_api/openapi.json", get(crate::openapi::serve))
        .route("/cdn_api/audit", get(audit::list))
        // After routing, so the layer knows the route; before the handlers, so it sees who
        // authenticated and what they answered.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record,
        ))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(crate::observe::observe))
        .with_state(state)
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(Ret::NotFound, format!("no route {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    let mut response = ApiError::new(
        Ret::NotFound,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}
