//! What `/cdn_api/quota` reads and answers.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handlers read and build them as JSON"
)]

use utoipa::ToSchema;

/// An account's quotas.
#[derive(ToSchema)]
pub(crate) struct QuotaAnswer {
    quota: Quota,
}

/// An account's daily limits, today's use, and its request rate limit.
#[derive(ToSchema)]
pub(crate) struct Quota {
    /// The account.
    user: String,
    /// Today in the quota time zone.
    #[schema(format = Date, example = "2026-11-28")]
    day: String,
    /// The quota time zone (`--quota-time-zone`, Asia/Shanghai by default).
    #[schema(example = "Asia/Shanghai")]
    time_zone: String,
    /// When the next quota day starts.
    #[schema(format = DateTime)]
    resets_at: String,
    /// URLs submitted for prefetch (a refresh's warm phase counts here too).
    prefetch_urls_per_day: QuotaUse,
    /// URLs submitted for refresh.
    refresh_urls_per_day: QuotaUse,
    /// Directories submitted for refresh.
    refresh_dirs_per_day: QuotaUse,
    /// The request rate limit.
    requests_per_second: RateLimit,
}

/// One daily quota.
#[derive(ToSchema)]
pub(crate) struct QuotaUse {
    /// The daily limit.
    limit: i64,
    /// Used today.
    used: i64,
    /// What is left today (never below 0).
    remaining: i64,
}

/// The request rate limit of a non-admin account.
#[derive(ToSchema)]
pub(crate) struct RateLimit {
    /// Requests per second (bursts of twice as many); 0: no limit.
    limit: i64,
}

/// New limits: any subset, at least one; each a non-negative integer (not null).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaChange {
    /// URLs per day for prefetch.
    #[schema(nullable = false, minimum = 0, example = 50000)]
    prefetch_urls_per_day: Option<i64>,
    /// URLs per day for refresh.
    #[schema(nullable = false, minimum = 0)]
    refresh_urls_per_day: Option<i64>,
    /// Directories per day for refresh.
    #[schema(nullable = false, minimum = 0)]
    refresh_dirs_per_day: Option<i64>,
    /// The account's own request rate (0: no limit); applies at its tokens' next grant
    /// lookup, within 5 s.
    #[schema(nullable = false, minimum = 0)]
    requests_per_second: Option<i64>,
}

#[cfg(test)]
mod tests {
    use precache_model::QuotaKind;

    #[test]
    fn every_kind_is_described() {
        let doc = serde_json::to_value(crate::openapi::document()).expect("document");
        for schema in ["Quota", "QuotaChange"] {
            let properties = &doc["components"]["schemas"][schema]["properties"];
            for kind in QuotaKind::ALL {
                assert!(
                    properties.get(kind.api_name()).is_some(),
                    "{schema} lacks {}",
                    kind.api_name()
                );
            }
        }
    }
}
