//! Guessing passwords (issue 13): failed logins lock an account name and a client address for a
//! while, answered `4001` (HTTP 429) with `Retry-After` and without running argon2; a success
//! clears the account's count; issued tokens keep working; `X-Forwarded-For` counts only from a
//! trusted proxy; on PostgreSQL every API process sees the same counts.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::pg_cluster::PgCluster;
use crate::support::server::{Options, ADMIN_PASSWORD};
use crate::support::{Api, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn started(args: &[&str]) -> Result<(tempfile::TempDir, Server, Api), Error> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(dir.path(), Options::with_args(args))?;
    let api = Api::new(&server);
    Ok((dir, server, api))
}

/// One login attempt, optionally with an `X-Forwarded-For`.
async fn attempt(
    api: &Api,
    user: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> Result<(u16, i64, Option<u64>, String), Error> {
    let mut request = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?
        .post(format!("{}/cdn_api/auth/tokens", api.base))
        .json(&json!({"username": user, "password": password}));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("X-Forwarded-For", forwarded_for);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let body: serde_json::Value = response.json().await?;
    let ret = body["zt_api"]["ret"].as_i64().unwrap_or(-1);
    let msg = body["zt_api"]["msg"].as_str().unwrap_or("").to_string();
    Ok((status, ret, retry_after, msg))
}

/// Expects a wrong-password answer (`1003`).
async fn fails(api: &Api, user: &str, password: &str, via: Option<&str>) -> TestResult {
    let (status, ret, _, msg) = attempt(api, user, password, via).await?;
    assert_eq!((status, ret), (401, 1003), "{user}: {msg}");
    Ok(())
}

/// Expects a throttled answer and returns its `Retry-After`.
async fn throttled(api: &Api, user: &str, password: &str, via: Option<&str>) -> Result<u64, Error> {
    let (status, ret, retry_after, msg) = attempt(api, user, password, via).await?;
    assert_eq!((status, ret), (429, 4001), "{user}: {msg}");
    assert!(msg.contains("too many failed logins"), "{msg}");
    retry_after.ok_or_else(|| format!("no Retry-After with {msg}").into())
}

/// Expects a token.
async fn succeeds(api: &Api, user: &str, password: &str, via: Option<&str>) -> TestResult {
    let (status, ret, _, msg) = attempt(api, user, password, via).await?;
    assert_eq!((status, ret), (201, 0), "{user}: {msg}");
    Ok(())
}

/// How many passwords the server has verified with argon2 (`/metrics`).
async fn verifications(api: &Api) -> Result<u64, Error> {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("{}/metrics", api.base))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix("precache_password_verifications_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64))
}

#[tokio::test]
async fn five_failures_lock_an_account_without_verifying_until_the_window_passes() -> TestResult {
    // Addresses are not throttled here, so only the account's count is at work.
    let (_dir, _server, api) = started(&[
        "--login-failure-window",
        "3s",
        "--login-failures-per-address",
        "0",
    ])?;
    let admin = api.admin().await?;
    let alice = api.create_user(&admin, "alice").await?;

    for _ in 0..5 {
        fails(&api, "alice", "guess", None).await?;
    }
    let verified = verifications(&api).await?;
    // Locked: even the right password is refused, and no password is verified.
    let retry_after = throttled(&api, "alice", "alice-password", None).await?;
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
    for _ in 0..10 {
        throttled(&api, "alice", "guess", None).await?;
    }
    assert_eq!(
        verifications(&api).await?,
        verified,
        "throttled logins run no argon2"
    );
    // Other accounts are not affected, and alice's token from before still works.
    succeeds(&api, "admin", ADMIN_PASSWORD, None).await?;
    api.call(Method::GET, "/cdn_api/auth/tokens", Some(&alice), None)
        .await?
        .expect(200, 0)?;

    // Refused attempts did not extend the lock: it ends `window` after the last real failure.
    tokio::time::sleep(Duration::from_millis(retry_after * 1000 + 200)).await;
    succeeds(&api, "alice", "alice-password", None).await?;

    // The success cleared the count: four more failures and a fifth are still checked.
    for _ in 0..4 {
        fails(&api, "alice", "guess", None).await?;
    }
    succeeds(&api, "alice", "alice-password", None).await?;
    for _ in 0..5 {
        fails(&api, "alice", "guess", None).await?;
    }
    throttled(&api, "alice", "alice-password", None).await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_guesses_get_few_verifications_beyond_the_limit() -> TestResult {
    let (_dir, _server, api) = started(&["--login-failures-per-address", "0"])?;
    let admin = api.admin().await?;
    api.create_user(&admin, "bob").await?;
    let before = verifications(&api).await?;
    let mut guesses = tokio::task::JoinSet::new();
    for n in 0..40 {
        let api = api.clone();
        guesses.spawn(async move { attempt(&api, "bob", &format!("guess-{n}"), None).await });
    }
    let mut wrong = 0;
    let mut locked = 0;
    while let Some(result) = guesses.join_next().await {
        match result?? {
            (401, 1003, _, _) => wrong += 1,
            (429, 4001, Some(_), _) => locked += 1,
            other => return Err(format!("unexpected answer {other:?}").into()),
        }
    }
    // Each verification of the server holds one of its turns (one per core) while it checks
    // the count, verifies and records the failure, so at most one guess per other turn gets in
    // past the fifth.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    assert!(
        (5..=5 + cores).contains(&wrong),
        "{wrong} guesses were checked"
    );
    assert_eq!(wrong + locked, 40);
    assert_eq!(verifications(&api).await? - before, wrong as u64);
    Ok(())
}

#[tokio::test]
async fn twenty_failures_lock_an_address_whatever_the_names() -> TestResult {
    let (_dir, _server, api) = started(&[])?;
    for n in 0..20 {
        fails(&api, &format!("user-{n}"), "guess", None).await?;
    }
    // Every name from this address is refused now, the admin's right password too.
    let retry_after = throttled(&api, "admin", ADMIN_PASSWORD, None).await?;
    assert!(
        retry_after > 60,
        "locked for the 15-minute window: {retry_after}"
    );
    // Without a trusted proxy, X-Forwarded-For is anyone's to write and changes nothing.
    throttled(&api, "admin", ADMIN_PASSWORD, Some("10.0.0.1")).await?;
    Ok(())
}

#[tokio::test]
async fn forwarded_for_names_the_client_behind_a_trusted_proxy() -> TestResult {
    let (_dir, _server, api) = started(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--login-failures-per-address",
        "3",
        "--login-failures-per-account",
        "0",
    ])?;
    for n in 0..3 {
        fails(&api, &format!("user-{n}"), "guess", Some("10.0.0.1")).await?;
    }
    throttled(&api, "admin", ADMIN_PASSWORD, Some("10.0.0.1")).await?;
    // Other clients of the proxy, and the proxy itself, are not.
    succeeds(&api, "admin", ADMIN_PASSWORD, Some("10.0.0.2")).await?;
    succeeds(&api, "admin", ADMIN_PASSWORD, None).await?;
    // The right-most entry the proxy appended counts, not what the client wrote before it.
    succeeds(&api, "admin", ADMIN_PASSWORD, Some("10.0.0.1, 10.0.0.3")).await?;
    throttled(&api, "admin", ADMIN_PASSWORD, Some("10.0.0.3, 10.0.0.1")).await?;
    Ok(())
}

#[tokio::test]
async fn api_processes_on_one_postgresql_share_the_counts() -> TestResult {
    let Some(cluster) = PgCluster::start() else {
        return Ok(());
    };
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let start = |dir: &std::path::Path| {
        Server::start_with(
            dir,
            Options {
                role: "api",
                database_url: Some(cluster.url()),
                args: vec!["--login-failures-per-address".into(), "0".into()],
                ..Options::default()
            },
        )
    };
    let server_a = start(dirs[0].path())?;
    let server_b = start(dirs[1].path())?;
    let (a, b) = (Api::new(&server_a), Api::new(&server_b));
    let admin = a.admin().await?;
    a.create_user(&admin, "carol").await?;

    for api in [&a, &b, &a, &b, &a] {
        fails(api, "carol", "guess", None).await?;
    }
    throttled(&a, "carol", "carol-password", None).await?;
    throttled(&b, "carol", "carol-password", None).await?;
    succeeds(&b, "admin", ADMIN_PASSWORD, None).await?;
    Ok(())
}
