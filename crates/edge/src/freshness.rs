//! Whether a response may be stored, and for how long it stays fresh (RFC 9111 §3, §4.2), with
//! the per-domain overrides an operator registered.
//!
//! The binding directives are `CDN-Cache-Control`'s when the origin sent that field (RFC 9213),
//! else `Cache-Control`'s. Freshness, first rule that applies:
//! 1. `no-cache` (or `Pragma: no-cache` without `Cache-Control`): stored stale, validated on
//!    every use and never served stale for a failing origin;
//! 2. the origin's explicit word: `s-maxage`, else `max-age`, else `Expires` (relative to the
//!    origin's `Date`, any of the three HTTP-date forms); a malformed one (negative, quoted,
//!    spaces around `=`, repeated, several `Expires`, an unreadable date) means stale;
//! 3. the domain's `default_ttl`, when the operator set one;
//! 4. a heuristic from `Last-Modified`: a tenth of the time since the last change, at most
//!    [`MAX_HEURISTIC`];
//! 5. [`FALLBACK_TTL`].
//!
//! Rules 3–5 only apply to statuses that are cacheable by default (RFC 9110 §15.1): a 404 is
//! cached only when the origin says for how long. Every lifetime counts from the time the
//! response was generated, as the origin's `Age` tells it (RFC 9111 §4.2.3).

use std::time::{Duration, SystemTime};

use http::StatusCode;
use pingora::cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora::cache::{CacheMeta, CacheMetaDefaults, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;
use precache_model::edge_protocol::CachePolicy;

use crate::cache_control::{DeltaSeconds, FreshnessDirectives};
use crate::hop_by_hop;

/// Freshness when the origin gives neither freshness nor `Last-Modified`: a day. Game assets
/// rarely change under one URL, and a stale copy is revalidated (a cheap 304), not refetched.
pub(crate) const FALLBACK_TTL: Duration = Duration::from_secs(24 * 3600);
/// A lifetime so long it cannot be represented is kept for this long instead.
const MAX_STORED_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Most header fields pingora-cache reads back from a stored meta.
const MAX_STORED_FIELDS: usize = 256;
/// Cap of the `Last-Modified` heuristic.
pub(crate) const MAX_HEURISTIC: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a stale copy may stand in for an origin that fails, unless the origin says
/// otherwise (`stale-if-error`, or `must-revalidate` forbidding it).
const STALE_IF_ERROR: u32 = 3600;

/// Only the serve-stale defaults of this are used: freshness is decided here.
const STALE_DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(|_| None, 0, STALE_IF_ERROR);

/// Statuses that may be cached without explicit freshness (RFC 9110 §15.1, minus 404, 405,
/// 414 and 501, which a CDN should not keep for a day on a guess).
fn cacheable_by_default(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 410
    )
}

/// Statuses that may be cached when the origin gives explicit freshness: any final status but
/// `304`, which only ever updates a stored response (RFC 9111 §3). An origin that says for how
/// long its `503` holds has been asked, and answered.
fn cacheable_when_explicit(status: StatusCode) -> bool {
    !status.is_informational() && status != StatusCode::NOT_MODIFIED
}

fn header_date(response: &ResponseHeader, name: http::header::HeaderName) -> Option<SystemTime> {
    let text = response.headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

/// The origin's `Age`: the first value of the first line (`Age: 7200, 0` is 7200, as a list
/// joined by an intermediary would read), zero when it is not a number (RFC 9111 §5.1).
fn origin_age(response: &ResponseHeader) -> Duration {
    response
        .headers
        .get(http::header::AGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.split(',').next())
        .map(str::trim)
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .map_or(Duration::ZERO, |text| {
            Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
        })
}

/// Whether a `Vary` names every request header (`Vary: *`): such a response never matches a
/// later request, so it is not stored.
fn varies_on_everything(response: &ResponseHeader) -> bool {
    response
        .headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .any(|name| name.trim() == "*")
}

/// The field whose directives bind the edge: `CDN-Cache-Control` when the origin sent one
/// (RFC 9213 §2.1: a targeted field replaces `Cache-Control` for its caches), else
/// `Cache-Control`.
fn directive_field(response: &ResponseHeader) -> &'static str {
    if response.headers.contains_key(CDN_CACHE_CONTROL) {
        CDN_CACHE_CONTROL
    } else {
        "cache-control"
    }
}

/// The name of RFC 9213's field for CDN caches.
pub(crate) const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// The lifetime `Expires` states, counted from the origin's `Date`; zero (stale) for several
/// `Expires` lines or one that is no HTTP-date in any of its three forms (RFC 9111 §5.3).
fn expires_lifetime(response: &ResponseHeader, now: SystemTime) -> Option<Duration> {
    let mut lines = response.headers.get_all(http::header::EXPIRES).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return Some(Duration::ZERO);
    }
    let Some(expires) = first
        .to_str()
        .ok()
        .and_then(|text| httpdate::parse_http_date(text.trim()).ok())
    else {
        return Some(Duration::ZERO);
    };
    let date = header_date(response, http::header::DATE).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// Whether the origin asked that every use be validated first: `no-cache` in the binding
/// field, or `Pragma: no-cache` from an origin that sent no `Cache-Control` at all.
fn must_validate(response: &ResponseHeader, directives: &FreshnessDirectives) -> bool {
    if directives.no_cache {
        return true;
    }
    !response.headers.contains_key(http::header::CACHE_CONTROL)
        && !response.headers.contains_key(CDN_CACHE_CONTROL)
        && response
            .headers
            .get(http::header::PRAGMA)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|text| text.to_ascii_lowercase().contains("no-cache"))
}

/// The freshness lifetime the origin stated, if it stated one; `Some(ZERO)`, stale, for
/// `no-cache` and for a lifetime stated invalidly.
fn explicit_lifetime(
    response: &ResponseHeader,
    directives: &FreshnessDirectives,
    validate_first: bool,
    now: SystemTime,
) -> Option<Duration> {
    if validate_first {
        return Some(Duration::ZERO);
    }
    match directives.shared_max_age() {
        DeltaSeconds::Seconds(seconds) => return Some(Duration::from_secs(seconds)),
        DeltaSeconds::Invalid => return Some(Duration::ZERO),
        DeltaSeconds::Absent => {}
    }
    expires_lifetime(response, now)
}

/// Decides whether `response` is stored, and builds its cache meta.
pub(crate) fn decide(
    response: &ResponseHeader,
    authorization_present: bool,
    policy: &CachePolicy,
) -> RespCacheable {
    let now = SystemTime::now();
    let uncacheable = RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    let ignore = policy.ignore_origin_no_cache;
    let field = directive_field(response);
    let cache_control = CacheControl::from_resp_headers_named(field, response);
    let cc = cache_control.as_ref();
    let directives = FreshnessDirectives::parse(response.headers.get_all(field));
    if !ignore && cc.is_some_and(|cc| cc.is_cacheable() == Cacheable::No) {
        return uncacheable;
    }
    if authorization_present && !cc.is_some_and(|cc| cc.allow_caching_authorized_req()) {
        return uncacheable;
    }
    if varies_on_everything(response) {
        return uncacheable;
    }
    let status = response.status;
    let validate_first = !ignore && must_validate(response, &directives);
    let lifetime = match explicit_lifetime(response, &directives, validate_first, now) {
        Some(lifetime) if cacheable_when_explicit(status) => lifetime,
        Some(_) => return uncacheable,
        None if !cacheable_by_default(status) => return uncacheable,
        None => match policy.default_ttl_secs {
            Some(seconds) => Duration::from_secs(seconds),
            None => heuristic_lifetime(response, now),
        },
    };
    // The response is as old as its `Age` says when it arrives (RFC 9111 §4.2.3): its
    // lifetime counts from then, and pingora's `Age` on hits counts from the epoch.
    let age = origin_age(response);
    // No earlier than 1970: a meta's times are stored as seconds since then, and one that cannot
    // be stored would leave the response uncached on every request.
    let epoch = now
        .checked_sub(age)
        .filter(|epoch| *epoch >= SystemTime::UNIX_EPOCH)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let fresh_until = if lifetime > age {
        epoch
            .checked_add(lifetime)
            .unwrap_or(now + MAX_STORED_LIFETIME)
    } else {
        // Stored, but stale at once: every use revalidates.
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    };
    let (stale_while_revalidate, stale_if_error) = if validate_first {
        // `no-cache` means a stored copy is used only once the origin has said it is current;
        // an origin that cannot say so cannot be stood in for (RFC 9111 §5.2.2.4).
        (0, 0)
    } else {
        pingora::cache::filters::calculate_serve_stale_durations(cc, &STALE_DEFAULTS)
    };
    let mut header = response.clone();
    if let Some(cc) = cc {
        cc.strip_private_headers(&mut header);
    }
    hop_by_hop::strip_for_storage(&mut header);
    // Hits carry their age as pingora computes it from the epoch, never the origin's
    // number from the time it was stored.
    header.remove_header(&http::header::AGE);
    if !header.headers.contains_key(http::header::DATE) {
        // RFC 9110 §6.6.1: a cache that stores a response without `Date` records when it came.
        header
            .insert_header(http::header::DATE, httpdate::fmt_http_date(now))
            .ok();
    }
    // pingora reads a stored header back with at most 256 fields: a longer one would be stored
    // unreadable, and every request for it would miss and refill (found by fuzzing).
    if header.headers.len() > MAX_STORED_FIELDS {
        return uncacheable;
    }
    let mut meta = CacheMeta::new(
        fresh_until,
        now,
        stale_while_revalidate,
        stale_if_error,
        header,
    );
    if !age.is_zero() {
        meta.set_epoch_override(epoch);
    }
    RespCacheable::Cacheable(meta)
}

/// A tenth of the time since `Last-Modified`, capped; the fallback without one.
fn heuristic_lifetime(response: &ResponseHeader, now: SystemTime) -> Duration {
    let Some(last_modified) = header_date(response, http::header::LAST_MODIFIED) else {
        return FALLBACK_TTL;
    };
    let date = header_date(response, http::header::DATE).unwrap_or(now);
    let since_change = date.duration_since(last_modified).unwrap_or(Duration::ZERO);
    (since_change / 10).min(MAX_HEURISTIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(status, None).expect("response");
        for (name, value) in headers {
            response
                .append_header(name.to_string(), *value)
                .expect("header");
        }
        response
    }

    fn lifetime(response: &ResponseHeader, policy: &CachePolicy) -> Option<Duration> {
        match decide(response, false, policy) {
            RespCacheable::Cacheable(meta) => Some(
                meta.fresh_until()
                    .duration_since(meta.created())
                    .unwrap_or(Duration::ZERO),
            ),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    fn http_date(at: SystemTime) -> String {
        httpdate::fmt_http_date(at)
    }

    const DEFAULT: CachePolicy = CachePolicy {
        default_ttl_secs: None,
        ignore_origin_no_cache: false,
        cache_query_string: true,
    };

    #[test]
    fn s_maxage_wins_over_max_age_and_age_is_subtracted() {
        let r = response(
            200,
            &[
                ("cache-control", "max-age=60, s-maxage=600"),
                ("age", "100"),
            ],
        );
        assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::from_secs(500)));
        let r = response(200, &[("cache-control", "max-age=60"), ("age", "100")]);
        assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::ZERO));
    }

    /// Found by the `http_headers` fuzz target (docs/fuzzing.md): an `Age` reaching back before
    /// 1970 gave a meta that pingora cannot serialise, so the response could never be stored.
    #[test]
    fn an_age_older_than_1970_is_stored_stale() {
        for age in [
            "72099999999",
            "18446744073709551615",
            "99999999999999999999999",
        ] {
            let r = response(200, &[("cache-control", "max-age=60"), ("age", age)]);
            let RespCacheable::Cacheable(meta) = decide(&r, false, &DEFAULT) else {
                panic!("Age {age}: not stored");
            };
            let (internal, header) = meta.serialize().expect("the meta serialises");
            let stored = CacheMeta::deserialize(&internal, &header).expect("and reads back");
            assert!(
                stored.fresh_until() <= SystemTime::now(),
                "Age {age}: stale"
            );
        }
    }

    /// Found by the `http_headers` fuzz target: 256 fields and no `Date` became 257 stored,
    /// one more than pingora reads back.
    #[test]
    fn a_header_pingora_could_not_read_back_is_not_stored() {
        let mut r = response(200, &[("cache-control", "max-age=60")]);
        for i in 0..255 {
            r.append_header(format!("x-{i}"), "v").expect("header");
        }
        assert_eq!(lifetime(&r, &DEFAULT), None);
        r.remove_header("x-0");
        let RespCacheable::Cacheable(meta) = decide(&r, false, &DEFAULT) else {
            panic!("255 fields and a Date are stored");
        };
        let (internal, header) = meta.serialize().expect("serialises");
        assert!(CacheMeta::deserialize(&internal, &header).is_ok());
    }

    #[test]
    fn expires_counts_from_the_origin_date() {
        let date = SystemTime::now() - Duration::from_secs(3600);
        let r = response(
            200,
            &[
                ("date", &http_date(date)),
                ("expires", &http_date(date + Duration::from_secs(120))),
            ],
        );
        assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::from_secs(120)));
    }

    #[test]
    fn no_store_and_private_are_not_stored_unless_the_domain_ignores_them() {
        for cc in ["no-store", "private", "private, max-age=60"] {
            let r = response(200, &[("cache-control", cc)]);
            assert_eq!(lifetime(&r, &DEFAULT), None, "{cc}");
            let ignoring = CachePolicy {
                ignore_origin_no_cache: true,
                ..DEFAULT
            };
            assert!(lifetime(&r, &ignoring).is_some(), "{cc} ignored");
        }
    }

    #[test]
    fn no_cache_is_stored_stale_so_every_use_revalidates() {
        let r = response(200, &[("cache-control", "no-cache"), ("etag", "\"v1\"")]);
        assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::ZERO));
        let r = response(200, &[("pragma", "no-cache")]);
        assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::ZERO));
        let ignoring = CachePolicy {
            ignore_origin_no_cache: true,
            default_ttl_secs: Some(300),
            ..DEFAULT
        };
        let r = response(200, &[("cache-control", "no-cache")]);
        assert_eq!(lifetime(&r, &ignoring), Some(Duration::from_secs(300)));
    }

    #[test]
    fn last_modified_gives_a_tenth_of_its_age_and_the_domain_default_overrides_it() {
        let now = SystemTime::now();
        let r = response(
            200,
            &[
                ("date", &http_date(now)),
                (
                    "last-modified",
                    &http_date(now - Duration::from_secs(10_000)),
                ),
            ],
        );
        let got = lifetime(&r, &DEFAULT).expect("cacheable");
        assert!(
            got.abs_diff(Duration::from_secs(1000)) <= Duration::from_secs(2),
            "{got:?}"
        );
        let ancient = response(200, &[("last-modified", "Tue, 24 Nov 2015 11:39:11 GMT")]);
        assert_eq!(lifetime(&ancient, &DEFAULT), Some(MAX_HEURISTIC));
        let with_default = CachePolicy {
            default_ttl_secs: Some(42),
            ..DEFAULT
        };
        assert_eq!(lifetime(&r, &with_default), Some(Duration::from_secs(42)));
        assert_eq!(lifetime(&response(200, &[]), &DEFAULT), Some(FALLBACK_TTL));
    }

    #[test]
    fn errors_are_cached_only_with_explicit_freshness() {
        assert_eq!(lifetime(&response(404, &[]), &DEFAULT), None);
        for status in [500, 503] {
            assert_eq!(
                lifetime(
                    &response(status, &[("cache-control", "max-age=60")]),
                    &DEFAULT
                ),
                Some(Duration::from_secs(60)),
                "{status} with explicit freshness"
            );
            assert_eq!(lifetime(&response(status, &[]), &DEFAULT), None);
        }
        assert_eq!(
            lifetime(&response(404, &[("cache-control", "max-age=60")]), &DEFAULT),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn vary_star_is_not_stored_and_must_revalidate_forbids_stale_serving() {
        assert_eq!(lifetime(&response(200, &[("vary", "*")]), &DEFAULT), None);
        let r = response(
            200,
            &[(
                "cache-control",
                "max-age=60, must-revalidate, stale-if-error=600",
            )],
        );
        let RespCacheable::Cacheable(meta) = decide(&r, false, &DEFAULT) else {
            panic!("cacheable");
        };
        let just_stale = meta.fresh_until() + Duration::from_secs(1);
        assert!(!meta.serve_stale_if_error(just_stale));
        let r = response(
            200,
            &[(
                "cache-control",
                "max-age=60, stale-while-revalidate=30, stale-if-error=600",
            )],
        );
        let RespCacheable::Cacheable(meta) = decide(&r, false, &DEFAULT) else {
            panic!("cacheable");
        };
        let after = |secs| meta.fresh_until() + Duration::from_secs(secs);
        assert!(meta.serve_stale_while_revalidate(after(29)));
        assert!(!meta.serve_stale_while_revalidate(after(31)));
        assert!(meta.serve_stale_if_error(after(599)));
        assert!(!meta.serve_stale_if_error(after(601)));
    }

    #[test]
    fn invalid_freshness_is_stale_never_fresh_and_never_a_default() {
        for cc in [
            "max-age=-1",
            "max-age='3600'",
            "max-age=\"3600\"",
            "max-age = 60",
            "s-maxage=abc, max-age=60",
        ] {
            let r = response(200, &[("cache-control", cc)]);
            assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::ZERO), "{cc}");
        }
        let future = http_date(SystemTime::now() + Duration::from_secs(3600));
        let two = response(200, &[("expires", &future), ("expires", &future)]);
        assert_eq!(lifetime(&two, &DEFAULT), Some(Duration::ZERO));
        let garbage = response(200, &[("expires", "tomorrow")]);
        assert_eq!(lifetime(&garbage, &DEFAULT), Some(Duration::ZERO));
    }

    #[test]
    fn every_http_date_form_of_expires_is_read() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        for expires in [
            "Sun, 06 Nov 1994 09:49:37 GMT",
            "Sunday, 06-Nov-94 09:49:37 GMT",
            "Sun Nov  6 09:49:37 1994",
        ] {
            let r = response(200, &[("date", date), ("expires", expires)]);
            assert_eq!(
                lifetime(&r, &DEFAULT),
                Some(Duration::from_secs(3600)),
                "{expires}"
            );
        }
    }

    #[test]
    fn the_origin_s_age_counts_and_hits_age_from_it() {
        let r = response(
            200,
            &[("cache-control", "max-age=3600"), ("age", "7200, 0")],
        );
        assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::ZERO));
        let r = response(200, &[("cache-control", "max-age=3600"), ("age", "600")]);
        let RespCacheable::Cacheable(meta) = decide(&r, false, &DEFAULT) else {
            panic!("cacheable");
        };
        assert!(meta.age() >= Duration::from_secs(600) && meta.age() < Duration::from_secs(660));
        assert!(
            meta.headers().get("age").is_none(),
            "the stored Age is never replayed"
        );
    }

    #[test]
    fn cdn_cache_control_binds_the_edge_over_cache_control() {
        let r = response(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "max-age=600"),
            ],
        );
        assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::from_secs(600)));
        let r = response(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("cdn-cache-control", "max-age=0"),
            ],
        );
        assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::ZERO));
        let r = response(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
        );
        assert_eq!(lifetime(&r, &DEFAULT), Some(Duration::from_secs(60)));
    }

    #[test]
    fn no_cache_is_never_served_stale_for_a_failing_origin() {
        let r = response(200, &[("cache-control", "no-cache, stale-if-error=600")]);
        let RespCacheable::Cacheable(meta) = decide(&r, false, &DEFAULT) else {
            panic!("cacheable");
        };
        assert!(!meta.serve_stale_if_error(SystemTime::now()));
        let r = response(200, &[("cache-control", "max-age=0, stale-if-error=600")]);
        let RespCacheable::Cacheable(meta) = decide(&r, false, &DEFAULT) else {
            panic!("cacheable");
        };
        assert!(meta.serve_stale_if_error(SystemTime::now()));
    }

    #[test]
    fn hop_by_hop_fields_are_not_stored() {
        let r = response(
            200,
            &[
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=77"),
                ("etag", "\"v1\""),
            ],
        );
        let RespCacheable::Cacheable(meta) = decide(&r, false, &DEFAULT) else {
            panic!("cacheable");
        };
        let names: Vec<&str> = meta.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["etag", "date"]);
    }

    #[test]
    fn authorization_needs_the_origin_s_consent() {
        let r = response(200, &[("cache-control", "max-age=60")]);
        assert!(matches!(
            decide(&r, true, &DEFAULT),
            RespCacheable::Uncacheable(_)
        ));
        let r = response(200, &[("cache-control", "public, max-age=60")]);
        assert!(matches!(
            decide(&r, true, &DEFAULT),
            RespCacheable::Cacheable(_)
        ));
    }
}
