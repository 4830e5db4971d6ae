//! Fixtures of the end-to-end tests: the real `precache` binary, a counting origin, a client.

pub mod caches;
pub mod client;
pub mod origin;
#[path = "../../../crates/store/tests/support/pg_cluster.rs"]
pub mod pg_cluster;
pub mod server;
pub mod stalling_origin;
pub mod tls_origin;
pub mod vendor_alibaba;
pub mod vendor_cloudfront;
pub mod vendor_fixture;
pub mod vendor_tencent;
pub mod vendors;

pub use client::Api;
pub use origin::{Behavior, Origin};
pub use server::Server;

/// What tests return: any error fails the test with its message.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
