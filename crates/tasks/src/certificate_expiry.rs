//! How long domains' certificates have left: the `precache_certificate_days_left` series of the
//! API's `/metrics`, and the warnings logged when one is close to expiring (at upload, and once
//! a day by the edge directory).

use std::fmt::Write;

use precache_model::time::{now_millis, rfc3339_millis};
use precache_store::{CertificateFacts, Domain};

/// A certificate this many days or fewer from its end is warned about.
pub const WARN_DAYS_LEFT: f64 = 14.0;

/// Days from now until `facts` expires; negative once it has.
pub fn days_left(facts: &CertificateFacts) -> f64 {
    (facts.not_after as f64 - now_millis() as f64 / 1000.0) / 86_400.0
}

/// Logs a warning when `facts` (domain `domain`'s certificate) expires within
/// [`WARN_DAYS_LEFT`] days or has expired; answers whether it did.
pub fn warn_if_expiring(domain: &str, facts: &CertificateFacts) -> bool {
    let days_left = days_left(facts);
    if days_left >= WARN_DAYS_LEFT {
        return false;
    }
    let not_after = rfc3339_millis(facts.not_after.saturating_mul(1000));
    if days_left < 0.0 {
        tracing::warn!(%domain, %not_after, sha256 = %facts.sha256, "the domain's certificate has expired: players' TLS clients refuse it; upload a new one");
    } else {
        tracing::warn!(%domain, %not_after, days_left = days_left.floor(), sha256 = %facts.sha256, "the domain's certificate expires in less than {WARN_DAYS_LEFT} days; upload a new one");
    }
    true
}

/// The `precache_certificate_days_left` gauge in the Prometheus text format, one sample per
/// domain with a certificate (nothing when none has one). Computed when scraped, so a removed
/// certificate leaves no stale series behind.
pub fn prometheus_text(domains: &[Domain]) -> String {
    let mut text = String::new();
    for domain in domains {
        let Some(facts) = &domain.certificate else {
            continue;
        };
        if text.is_empty() {
            text.push_str(
                "# HELP precache_certificate_days_left Days until the domain's TLS certificate \
                 expires (negative: expired).\n# TYPE precache_certificate_days_left gauge\n",
            );
        }
        // A registered domain name holds no quote or backslash: nothing to escape.
        let _ = writeln!(
            text,
            "precache_certificate_days_left{{domain=\"{}\"}} {:.3}",
            domain.name.as_str(),
            days_left(facts)
        );
    }
    text
}
