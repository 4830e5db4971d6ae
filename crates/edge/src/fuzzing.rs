//! Entry points for the fuzz targets in `fuzz/` (docs/fuzzing.md): thin calls into the private
//! parsers of response and request headers, so they can be fuzzed without becoming part of this
//! crate's API. The disk cache's are in `disk_cache::fuzzing`.

use http::header::HeaderValue;
use pingora::cache::{CacheMeta, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use precache_model::edge_protocol::CachePolicy;

use crate::cache_control::{DeltaSeconds, FreshnessDirectives};

/// The variance key (`vary::variance`) of `request` against a response with `response_headers`.
pub fn vary_variance(
    response_headers: &http::HeaderMap,
    request: &RequestHeader,
) -> Option<[u8; 16]> {
    crate::vary::variance(response_headers, request)
}

/// The lifetime a cache-control field's lines state for a shared cache: `Some(None)` when they
/// state none, `Some(Some(seconds))`, or `None` when it is stated invalidly.
pub fn shared_max_age(lines: &[HeaderValue]) -> Option<Option<u64>> {
    match FreshnessDirectives::parse(lines).shared_max_age() {
        DeltaSeconds::Absent => Some(None),
        DeltaSeconds::Seconds(seconds) => Some(Some(seconds)),
        DeltaSeconds::Invalid => None,
    }
}

/// Whether `response` is stored and with which meta (`freshness::decide`).
pub fn decide_freshness(
    response: &ResponseHeader,
    authorization_present: bool,
    policy: &CachePolicy,
) -> Option<CacheMeta> {
    match crate::freshness::decide(response, authorization_present, policy) {
        RespCacheable::Cacheable(meta) => Some(meta),
        RespCacheable::Uncacheable(_) => None,
    }
}

/// What the edge's own hit path reads of a player's request head (`hit_path::PlainRequest`):
/// `Some((head length, HEAD?, Host value, target))` for a request it may answer itself.
pub fn plain_request(received: &[u8]) -> Option<(usize, bool, String, String)> {
    crate::hit_path::fuzzing_plain_request(received)
}

/// The head the hit path would write for a stored response (`disk_cache::ReadyHead`), with the
/// body length it states, if the response is plain enough for it.
pub fn ready_head(meta: &CacheMeta) -> Option<(Vec<u8>, u64)> {
    crate::disk_cache::ReadyHead::of(meta).map(|ready| (ready.head.to_vec(), ready.content_length))
}
