//! The per-account request rate limit: a token bucket per account, refilled at the configured
//! rate, holding at most two seconds' worth so a short burst passes. Over the limit a request is
//! `4001` (HTTP 429) with `Retry-After`, before it does anything.
//!
//! The buckets live in this process, on purpose: with N control-plane processes each enforces
//! the limit on the requests it serves, so an account gets at most N × the limit in all, and an
//! operator who wants R in total configures R / N behind a balancer that spreads requests evenly
//! (docs/api.md). A shared bucket would cost a database round trip and a write through the
//! store's writer on every authenticated request, more than most requests cost themselves; the
//! limit keeps one client from monopolising a process, a per-process quantity, while what must
//! be exact across processes (daily quotas, failed logins) is in the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use precache_model::AccountId;

/// Seconds of requests a full bucket holds.
const BURST_SECONDS: f64 = 2.0;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Buckets of every account that made requests.
#[derive(Default)]
pub(crate) struct RateLimits {
    buckets: Mutex<HashMap<AccountId, Bucket>>,
}

impl RateLimits {
    /// Takes one request from the account's bucket, which refills at `per_second` (0: no
    /// limit); `Err(seconds)` to wait when it is empty.
    pub(crate) fn take(&self, account: AccountId, per_second: u32) -> Result<(), u64> {
        if per_second == 0 {
            return Ok(());
        }
        let per_second = f64::from(per_second);
        let capacity = (per_second * BURST_SECONDS).max(1.0);
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.entry(account).or_insert(Bucket {
            tokens: capacity,
            refilled: now,
        });
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_requests_wait() {
        let limits = RateLimits::default();
        let alice = AccountId(1);
        for _ in 0..10 {
            assert_eq!(limits.take(alice, 5), Ok(()));
        }
        assert_eq!(limits.take(alice, 5), Err(1));
        assert_eq!(
            limits.take(AccountId(2), 5),
            Ok(()),
            "accounts have their own buckets"
        );
        assert_eq!(limits.take(alice, 0), Ok(()), "0 is no limit");
    }
}
