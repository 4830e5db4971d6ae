//! The control-plane HTTP API: routes, token auth, the `zt_api` envelope and its `ret` codes.
//!
//! Only this crate knows JSON and HTTP status codes. Handlers validate input completely before
//! they touch the store, so a rejected request changes nothing; the one write a submission makes
//! (task, URLs, pairs and quota, in one transaction) happens last, and the engine is handed the
//! pairs only once that write is durable.

mod audit;
mod callbacks;
mod certificate_check;
mod client_address;
mod console;
mod envelope;
mod final_tasks;
#[doc(hidden)]
pub mod fuzzing;
mod lenient_json;
mod login_throttle;
mod observe;
mod openapi;
mod passwords;
mod quota_clock;
mod rate_limit;
mod request_body;
mod routes;
mod state;
mod store_errors;
mod task_view;
mod token_auth;

pub use callbacks::{run_callbacks, signature, CallbackPolicy};
pub use client_address::TrustedProxies;
pub use envelope::{to_flask_json, Ret};
pub use login_throttle::LoginLimits;
pub use observe::RenderMetrics;
pub use passwords::PasswordHasher;
pub use state::{ApiConfig, AppState};
pub use token_auth::Caller;

/// The API's router over `state`.
pub fn router(state: AppState) -> axum::Router {
    routes::router(state.clone()).merge(console::routes(state))
}
