//! End-to-end tests: the real `precache` binary, a real origin, real sockets on 127.0.0.1.
//!
//! Every test starts its own server process on free ports with its own data dir, so tests run in
//! parallel and can kill, restart and measure the process.

mod support;

mod access_log;
mod auth_and_admin;
mod backend_caches;
mod backends;
mod cache_recovery;
mod callbacks;
mod certificates;
mod cli;
mod connection_limits;
mod console;
mod console_browser;
mod day_two;
mod durability;
mod edge_cache;
mod edge_connection_limits;
mod events;
mod faults;
mod hit_path;
mod http_conformance;
mod https_origins;
mod https_players;
mod isolation;
mod keepalive_framing;
mod large_object;
mod login_throttle;
mod observability;
mod openapi;
mod origin_limits;
mod postgres;
mod prefetch_flow;
mod ranges_during_fill;
mod refresh;
mod ret_codes;
mod scale_out;
mod security;
mod vendor_alibaba;
mod vendor_cloudfront;
mod vendor_tencent;
mod vendors;
