//! Delivering completion callbacks (webhooks): when a task that carries a `callback_url` ends,
//! its final status is POSTed there, signed with the account's secret, and retried with
//! exponential backoff for at least an hour. Every attempt is recorded and shown in the task's
//! status.
//!
//! The URL is the client's, so it is the one place the control plane connects where a client
//! says. The host is resolved here and every address checked: loopback, private, link-local and
//! other non-public addresses are refused unless the operator allowed the host
//! (`--callback-allow-hosts`), and the request goes to the address that was checked (no second
//! lookup a DNS answer could change). Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use precache_model::time::now_millis;
use precache_store::{AttemptOutcome, DueCallback};
use sha2::Sha256;
use tokio::sync::watch;

use crate::envelope::Answer;
use crate::state::AppState;
use crate::task_view::detail_json;
use crate::token_auth::new_secret;

/// How often the worker looks for due callbacks.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Callbacks claimed per look.
const BATCH: i64 = 16;
/// How long a claim holds: longer than an attempt can take.
const CLAIM_MS: i64 = 60_000;
/// One attempt's limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Attempts continue until this long after the first.
const RETRY_FOR_MS: i64 = 3_600_000;

/// How callbacks are delivered.
#[derive(Debug, Clone)]
pub struct CallbackPolicy {
    /// Hosts (names or IP literals) allowed even when they resolve to non-public addresses.
    pub allow_hosts: Vec<String>,
    /// Wait before the second attempt; doubled each time, up to ten minutes.
    pub backoff: Duration,
}

/// Whether `ip` is an address on the public internet.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                // Carrier-grade NAT, 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
                // Benchmarking, 198.18.0.0/15; reserved, 240.0.0.0/4.
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local fc00::/7, link-local fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

impl CallbackPolicy {
    fn allows_host(&self, host: &str) -> bool {
        self.allow_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// Checks a callback URL as submitted: `Err` with the reason for the client. Host names are
    /// checked again, resolved, at every delivery.
    pub(crate) fn check_submitted(&self, text: &str) -> Result<(), String> {
        let url = parse(text)?;
        let host = url.host_str().unwrap_or_default();
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            if !is_public(ip) && !self.allows_host(host) {
                return Err(format!(
                    "callback_url {text:?} points at a non-public address"
                ));
            }
        }
        Ok(())
    }

    /// The address to deliver to: the host's first address, once every address passed.
    async fn vetted_address(&self, url: &url::Url) -> Result<SocketAddr, String> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let bare = host.trim_matches(['[', ']']);
        let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((bare, port)).await {
            Ok(addresses) => addresses.collect(),
            Err(error) => return Err(format!("{host} does not resolve: {error}")),
        };
        if !self.allows_host(host) {
            if let Some(private) = addresses.iter().find(|address| !is_public(address.ip())) {
                return Err(format!(
                    "{host} resolves to the non-public address {}; refused",
                    private.ip()
                ));
            }
        }
        addresses
            .first()
            .copied()
            .ok_or_else(|| format!("{host} has no address"))
    }
}

fn parse(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|error| format!("callback_url {text:?}: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "callback_url {text:?} must be an http:// or https:// URL"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("callback_url {text:?} must not carry credentials"));
    }
    Ok(url)
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the receiver recomputes it
/// and may refuse old timestamps (replays).
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The wait after attempt `n` (1-based).
fn backoff(policy: &CallbackPolicy, n: i64) -> Duration {
    let doublings = u32::try_from(n.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    policy
        .backoff
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

async fn attempt(state: &AppState, due: &DueCallback) -> (Option<i64>, Option<String>) {
    let store = &state.inner.store;
    let detail = match store.task_detail(due.account_id, due.task_id).await {
        Ok(Some(detail)) => detail,
        Ok(None) => return (None, Some("the task is gone".into())),
        Err(error) => return (None, Some(format!("could not read the task: {error}"))),
    };
    let body = Answer::ok(detail_json(&detail)).body();
    let (fresh, _) = new_secret("pcw_");
    let secret = match store.webhook_secret(due.account_id, fresh).await {
        Ok(secret) => secret,
        Err(error) => {
            return (
                None,
                Some(format!("could not read the signing secret: {error}")),
            )
        }
    };
    let policy = &state.inner.config.callbacks;
    let url = match parse(&due.url) {
        Ok(url) => url,
        Err(error) => return (None, Some(error)),
    };
    let address = match policy.vetted_address(&url).await {
        Ok(address) => address,
        Err(error) => return (None, Some(error)),
    };
    let host = url.host_str().unwrap_or_default().to_string();
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .resolve(host.trim_matches(['[', ']']), address)
        .build();
    let client = match client {
        Ok(client) => client,
        Err(error) => return (None, Some(error.to_string())),
    };
    let now_secs = now_millis() / 1000;
    let sent = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Precache-Event", "task.finished")
        .header(
            "X-Precache-Delivery",
            format!("{}/{}", due.task_id, due.attempts + 1),
        )
        .header("X-Precache-Signature", signature(&secret, now_secs, &body))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = i64::from(response.status().as_u16());
            let error = (!response.status().is_success())
                .then(|| format!("the receiver answered {}", response.status()));
            (Some(status), error)
        }
        Err(error) => (None, Some(error.to_string())),
    }
}

async fn deliver(state: AppState, due: DueCallback) {
    let at = now_millis();
    let (http_status, error) = attempt(&state, &due).await;
    let n = due.attempts + 1;
    let delivered = http_status.is_some_and(|status| (200..300).contains(&status));
    let first = due.first_attempt_at.unwrap_or(at);
    let wait = backoff(&state.inner.config.callbacks, n);
    let next = at + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    // Another attempt as long as the last one came less than an hour after the first.
    let retry_at = (!delivered && at - first < RETRY_FOR_MS).then_some(next);
    if let Some(error) = &error {
        tracing::info!(task = %due.task_id, attempt = n, %error, retry = retry_at.is_some(), "callback not delivered");
    }
    let outcome = AttemptOutcome {
        task_id: due.task_id,
        n,
        at,
        http_status,
        error,
        retry_at,
    };
    if let Err(error) = state.inner.store.record_callback_attempt(outcome).await {
        tracing::warn!(%error, task = %due.task_id, "could not record a callback attempt");
    }
}

/// Delivers due callbacks until `shutdown`.
pub async fn run_callbacks(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut deliveries = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
        while deliveries.try_join_next().is_some() {}
        let due = match state
            .inner
            .store
            .claim_due_callbacks(now_millis(), BATCH, CLAIM_MS)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::debug!(%error, "could not look for due callbacks");
                continue;
            }
        };
        for callback in due {
            deliveries.spawn(deliver(state.clone(), callback));
        }
    }
    // Attempts cut short are claimed again once their claim runs out.
    deliveries.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for text in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = text.parse().expect("address");
            assert!(!is_public(ip), "{text}");
        }
        for text in ["93.184.216.34", "2606:4700::1111"] {
            let ip: IpAddr = text.parse().expect("address");
            assert!(is_public(ip), "{text}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        let policy = CallbackPolicy {
            allow_hosts: Vec::new(),
            backoff: Duration::from_secs(5),
        };
        assert_eq!(backoff(&policy, 1), Duration::from_secs(5));
        assert_eq!(backoff(&policy, 3), Duration::from_secs(20));
        assert_eq!(backoff(&policy, 30), MAX_BACKOFF);
    }
}
