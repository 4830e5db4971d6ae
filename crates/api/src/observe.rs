//! What every API request leaves behind: an id (`X-Request-Id`, taken from the client when it
//! sent a sane one), a tracing span carrying it, a log line, and metrics by route and `ret`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::state::AppState;

/// The header carrying a request's id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Renders the process's metrics in the Prometheus text format.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

tokio::task_local! {
    /// The id of the request being handled, for messages that quote it (`5000`).
    static CURRENT: String;
}

/// The id of the request being handled on this task, if any.
pub(crate) fn current_request_id() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_string())
}

/// The `ret` of an envelope answer (`-` for the few answers that are not envelopes).
fn ret_of(response: &Response) -> String {
    response
        .extensions()
        .get::<crate::envelope::RetCode>()
        .map_or_else(|| "-".to_string(), |ret| ret.0.to_string())
}

/// The middleware: id, span, log line, metrics.
pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&request);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, %method, %route);
    let mut response = CURRENT
        .scope(id.clone(), next.run(request).instrument(span.clone()))
        .await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let ret = ret_of(&response);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    metrics::counter!("precache_api_requests_total", "route" => route.clone(), "method" => method, "ret" => ret.clone())
        .increment(1);
    metrics::histogram!("precache_api_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        if status >= 400 {
            tracing::info!(status, %ret, ms = elapsed.as_millis() as u64, "answered");
        } else {
            tracing::debug!(status, %ret, ms = elapsed.as_millis() as u64, "answered");
        }
    });
    response
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "The Prometheus text format, not an envelope; no token needed. Requests by \
                   route and `ret`, answer times, pair and task outcomes, the engine's queue, \
                   quota rejections, each certificate's days left \
                   (`precache_certificate_days_left{domain}`); in `serve`, the embedded edge's \
                   series too (see docs/api.md).",
    responses((
        status = 200,
        description = "The metrics.",
        content_type = "text/plain; version=0.0.4; charset=utf-8",
        body = String
    )),
    extensions(("x-ret-codes" = json!(crate::openapi::ret_codes(&[])))),
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = (state.inner.metrics)();
    // Read when scraped rather than kept as a recorded gauge, so that a removed certificate
    // leaves no series behind.
    match state.inner.store.list_domains(None).await {
        Ok(domains) => text.push_str(&precache_tasks::certificate_expiry::prometheus_text(
            &domains,
        )),
        Err(error) => {
            tracing::warn!(%error, "could not read the certificates' expiry for /metrics")
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::ApiError;

    #[tokio::test]
    async fn an_internal_error_quotes_the_request_id() {
        let error = CURRENT
            .scope("release-7.step-3".to_string(), async {
                ApiError::internal("disk on fire")
            })
            .await;
        assert!(error.msg.contains("release-7.step-3"), "{}", error.msg);
        assert!(
            !error.msg.contains("disk on fire"),
            "details stay in the log"
        );
    }
}
