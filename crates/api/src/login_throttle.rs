//! Login throttling (issue 13): failed logins are counted per account name and per client
//! address in the store, so every API process on one database sees the same counts. Once a
//! name or an address has failed `limit` times, each failure within `window` of the previous
//! one, its logins are answered `4001` (HTTP 429) with `Retry-After` until `window` has passed
//! since its last failure, without looking at the password: no argon2 runs for them, and a
//! right password is refused too, or throttling would tell a guesser when it guessed right.
//!
//! Refused attempts are not counted, so a guesser cannot extend a lock by hammering it: it
//! ends `window` after the last failure that was really checked. A success clears its
//! account's count (not its address's: one's own account must not reset the count of an
//! address that guesses others'). The price of counting per account is that someone who keeps
//! guessing can keep a name locked (`limit` guesses per `window`); tokens already issued keep
//! working, and the lock ends `window` after they stop (docs/api.md).
//!
//! Exactness: the count is checked before the turn to verify and again once the turn is held,
//! and a failure is recorded before the turn is given back, so concurrent guesses get at most
//! one extra verification per turn (one per core) per process beyond `limit`.

use std::net::IpAddr;
use std::time::Duration;

use precache_store::{LoginFailures, Store};

use crate::envelope::{ApiError, Ret};
use crate::store_errors::from_store;

/// How many failures lock a name or an address, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures of one account name that lock it (0: names are not throttled).
    pub per_account: u32,
    /// Failures from one client address, whatever the names, that lock it (0: addresses are
    /// not throttled).
    pub per_address: u32,
    /// Failures further apart than this start the count again; a lock lasts this long after
    /// the last failure.
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            per_account: 5,
            per_address: 20,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Longest account name kept in a subject: enough for any real name, and made-up names cannot
/// grow the table's rows beyond it.
const MAX_NAME_CHARS: usize = 128;

const ACCOUNT: &str = "account:";
const ADDRESS: &str = "address:";

/// The subjects one login attempt is counted under.
pub(crate) struct Subjects {
    account: String,
    address: String,
}

impl Subjects {
    /// The subjects of a login as `username` from `address`. IPv6 clients are counted per /64,
    /// the block one host or one customer line usually holds, so rotating through the addresses
    /// of one's own block gains nothing.
    pub(crate) fn new(username: &str, address: IpAddr) -> Subjects {
        let address = match address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let segments = v6.segments();
                    format!(
                        "{:x}:{:x}:{:x}:{:x}::/64",
                        segments[0], segments[1], segments[2], segments[3]
                    )
                }
            },
            v4 => v4.to_string(),
        };
        Subjects {
            account: format!(
                "{ACCOUNT}{}",
                username.chars().take(MAX_NAME_CHARS).collect::<String>()
            ),
            address: format!("{ADDRESS}{address}"),
        }
    }
}

/// The throttle, over the store's counts.
pub(crate) struct LoginThrottle<'a> {
    pub(crate) store: &'a Store,
    pub(crate) limits: LoginLimits,
}

/// What a check found when it let the attempt through.
pub(crate) struct Checked {
    /// Whether the account name has failures on record (a success clears them).
    account_has_failures: bool,
}

impl LoginThrottle<'_> {
    fn window_ms(&self) -> i64 {
        i64::try_from(self.limits.window.as_millis()).unwrap_or(i64::MAX)
    }

    fn limit_of(&self, subject: &str) -> u32 {
        if subject.starts_with(ACCOUNT) {
            self.limits.per_account
        } else {
            self.limits.per_address
        }
    }

    /// The subjects whose scope is throttled at all.
    fn counted(&self, subjects: &Subjects) -> Vec<String> {
        [&subjects.account, &subjects.address]
            .into_iter()
            .filter(|subject| self.limit_of(subject) > 0)
            .cloned()
            .collect()
    }

    /// Refuses the attempt (`4001`, `Retry-After`) when its name or address is locked at `now`.
    pub(crate) async fn check(&self, subjects: &Subjects, now: i64) -> Result<Checked, ApiError> {
        let counted = self.counted(subjects);
        if counted.is_empty() {
            return Ok(Checked {
                account_has_failures: false,
            });
        }
        let records = self
            .store
            .login_failures(&counted)
            .await
            .map_err(from_store)?;
        let mut account_has_failures = false;
        for LoginFailures {
            subject,
            failures,
            last_failure_at,
        } in records
        {
            let unlocks_at = last_failure_at.saturating_add(self.window_ms());
            if unlocks_at <= now {
                continue;
            }
            let limit = self.limit_of(&subject);
            if subject == subjects.account {
                account_has_failures = true;
            }
            if failures < i64::from(limit) {
                continue;
            }
            let wait = u64::try_from((unlocks_at - now + 999) / 1000)
                .unwrap_or(1)
                .max(1);
            let (scope, whose) = if subject == subjects.account {
                ("account", "this account")
            } else {
                ("address", "this client address")
            };
            metrics::counter!("precache_login_throttled_total", "scope" => scope).increment(1);
            let mut error = ApiError::new(
                Ret::Limited,
                format!(
                    "too many failed logins for {whose} ({failures} in a row); \
                     logins are refused for {wait} s more"
                ),
            );
            error.retry_after = Some(wait);
            return Err(error);
        }
        Ok(Checked {
            account_has_failures,
        })
    }

    /// Counts a failed attempt against its name and address.
    pub(crate) async fn failed(&self, subjects: &Subjects, now: i64) -> Result<(), ApiError> {
        let counted = self.counted(subjects);
        self.store
            .record_login_failure(counted, now, now.saturating_sub(self.window_ms()))
            .await
            .map_err(from_store)
    }

    /// Clears the account's count after a successful login.
    pub(crate) async fn succeeded(
        &self,
        subjects: &Subjects,
        checked: &Checked,
    ) -> Result<(), ApiError> {
        if !checked.account_has_failures {
            return Ok(());
        }
        self.store
            .clear_login_failures(subjects.account.clone())
            .await
            .map_err(from_store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_per_host_or_ipv6_block() {
        let subjects =
            |address: &str| Subjects::new("alice", address.parse().expect("address")).address;
        assert_eq!(subjects("192.0.2.7"), "address:192.0.2.7");
        assert_eq!(subjects("::ffff:192.0.2.7"), "address:192.0.2.7");
        assert_eq!(
            subjects("2001:db8:1:2:aaaa::1"),
            subjects("2001:db8:1:2:bbbb::9"),
            "one /64"
        );
        assert_ne!(subjects("2001:db8:1:2::1"), subjects("2001:db8:1:3::1"));
        let long = "x".repeat(10_000);
        assert_eq!(
            Subjects::new(&long, "192.0.2.7".parse().expect("address"))
                .account
                .len(),
            ACCOUNT.len() + MAX_NAME_CHARS
        );
    }
}
