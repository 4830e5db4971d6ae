//! Whether a response may be stored, and for how long it stays fresh (RFC 9111 §3, §4.2), with
//! the per-domain overrides an operator registered.
//!
//! Freshness, first rule that applies:
//! 1. the origin's explicit word: `Cache-Control: s-maxage`, else `max-age`, else `Expires`
//!    (relative to the origin's `Date`), minus the `Age` the response already has;
//! 2. the domain's `default_ttl`, when the operator set one;
//! 3. a heuristic from `Last-Modified`: a tenth of the time since the last change, at most
//!    [`MAX_HEURISTIC`];
//! 4. [`FALLBACK_TTL`].
//!
//! Rules 2–4 only apply to statuses that are cacheable by default (RFC 9110 §15.1): a 404 is
//! cached only when the origin says for how long.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use pingora::cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora::cache::filters::calculate_expires_header_time;
use pingora::cache::{CacheMeta, CacheMetaDefaults, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;
use precache_model::edge_protocol::CachePolicy;

/// Freshness when the origin gives neither freshness nor `Last-Modified`: a day. Game assets
/// rarely change under one URL, and a stale copy is revalidated (a cheap 304), not refetched.
pub(crate) const FALLBACK_TTL: Duration = Duration::from_secs(24 * 3600);
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

/// Statuses that may be cached when the origin gives explicit freshness.
fn cacheable_when_explicit(status: StatusCode) -> bool {
    cacheable_by_default(status) || matches!(status.as_u16(), 302 | 307 | 404 | 405 | 414 | 501)
}

fn header_date(response: &ResponseHeader, name: http::header::HeaderName) -> Option<SystemTime> {
    let text = response.headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(text).ok()
}

fn age(response: &ResponseHeader) -> Duration {
    response
        .headers
        .get(http::header::AGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
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

/// The freshness lifetime the origin stated, if it stated one; `Some(ZERO)` for `no-cache`.
fn explicit_lifetime(
    response: &ResponseHeader,
    cache_control: Option<&CacheControl>,
    ignore_no_cache: bool,
) -> Option<Duration> {
    if let Some(cc) = cache_control {
        if cc.no_cache() && !ignore_no_cache {
            return Some(Duration::ZERO);
        }
        let seconds = cc
            .s_maxage()
            .ok()
            .flatten()
            .or_else(|| cc.max_age().ok().flatten());
        if let Some(seconds) = seconds {
            return Some(Duration::from_secs(u64::from(seconds)));
        }
    }
    if !ignore_no_cache && cache_control.is_none() {
        let pragma_no_cache = response
            .headers
            .get(http::header::PRAGMA)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|text| text.to_ascii_lowercase().contains("no-cache"));
        if pragma_no_cache {
            return Some(Duration::ZERO);
        }
    }
    let expires = calculate_expires_header_time(response)?;
    let date = header_date(response, http::header::DATE).unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
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
    let cache_control = CacheControl::from_resp_headers(response);
    let cc = cache_control.as_ref();
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
    let lifetime = match explicit_lifetime(response, cc, ignore) {
        Some(lifetime) if cacheable_when_explicit(status) => lifetime.saturating_sub(age(response)),
        Some(_) => return uncacheable,
        None if !cacheable_by_default(status) => return uncacheable,
        None => match policy.default_ttl_secs {
            Some(seconds) => Duration::from_secs(seconds),
            None => heuristic_lifetime(response, now),
        },
    };
    let fresh_until = if lifetime.is_zero() {
        // Stored, but stale at once: every use revalidates.
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    } else {
        now + lifetime
    };
    let (stale_while_revalidate, stale_if_error) =
        pingora::cache::filters::calculate_serve_stale_durations(cc, &STALE_DEFAULTS);
    let mut header = response.clone();
    if let Some(cc) = cc {
        cc.strip_private_headers(&mut header);
    }
    RespCacheable::Cacheable(CacheMeta::new(
        fresh_until,
        now,
        stale_while_revalidate,
        stale_if_error,
        header,
    ))
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
        assert_eq!(
            lifetime(&response(500, &[("cache-control", "max-age=60")]), &DEFAULT),
            None
        );
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
