//! The web console under `/console/`: server-rendered pages (askama, auto-escaping) for the
//! operator's daily loop — log in, submit prefetches and refreshes, the task list, and a task's
//! URL × edge matrix that updates live over Server-Sent Events. One embedded stylesheet and one
//! small script; no inline script or style, so the Content-Security-Policy forbids both.
//!
//! Authentication is the API's token in a session cookie (`session.rs`): the console's routes
//! accept it, the API's `/cdn_api` routes never do (they read `X-Auth-Token` only), so a page
//! cannot be tricked into driving the API.

mod pages;
mod session;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

const SCRIPT: &str = include_str!("static/console.js");
const STYLE: &str = include_str!("static/console.css");

/// The console's routes, with its security headers on every answer, the audit log's layer (log-ins
/// and log-outs; submissions write their own entries) and the API's request ids, log lines and
/// metrics.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/console", get(pages::home))
        .route("/console/", get(pages::home))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route(
            "/console/submit",
            get(pages::submit_form).post(pages::submit),
        )
        .route("/console/edges", get(pages::edges))
        .route("/console/tasks/{req_id}", get(pages::task))
        .route("/console/tasks/{req_id}/events", get(pages::task_events))
        .route("/console/static/console.js", get(script))
        .route("/console/static/console.css", get(style))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn(crate::observe::observe))
        .with_state(state)
}

async fn script() -> Response {
    static_file(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    static_file(STYLE, "text/css; charset=utf-8")
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every load: the file changes with the binary, and it is small.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The policy of every console answer: scripts, styles and connections from this origin only,
/// nothing inline, no framing, no referrer; data pages are never stored.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
