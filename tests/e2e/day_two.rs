//! Day-two operations (API.md §12): task retention, backups of the embedded database.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use serde_json::json;

use crate::support::client::url;
use crate::support::server::Options;
use crate::support::vendors::CloudflareStandIn;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

const HOST: &str = "game.example.com";

/// Polls a task's status until it answers `3001` (deleted); fails after `limit`.
async fn wait_deleted(api: &Api, token: &str, req_id: &str, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    loop {
        let reply = api
            .call(
                Method::GET,
                &format!("/cdn_api/prefetch/{req_id}"),
                Some(token),
                None,
            )
            .await?;
        if reply.ret() == 3001 {
            reply.expect(404, 3001)?;
            return Ok(());
        }
        reply.expect(200, 0)?;
        if Instant::now() > deadline {
            return Err(format!(
                "task {req_id} still there after {limit:?}: {}",
                reply.text()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reqIds the account's task list shows.
async fn listed(api: &Api, token: &str) -> Result<Vec<String>, Error> {
    let reply = api
        .call(Method::GET, "/cdn_api/tasks", Some(token), None)
        .await?;
    reply.expect(200, 0)?;
    Ok(reply
        .get("tasks")
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|task| task["reqId"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// With `--task-retention 2s`, a task is deleted about two seconds after it ended (its reqId
/// then answers 3001 and the list no longer shows it), and a task running longer than the window
/// is kept until it has ended: the window counts from the end.
#[tokio::test]
async fn ended_tasks_are_deleted_after_the_retention_window() -> TestResult {
    let origin = Origin::start().await?;
    origin.set("/fast.pak", Behavior::Body(Bytes::from_static(b"fast")));
    origin.set(
        "/slow.pak",
        Behavior::Slow(Duration::from_secs(4), Bytes::from_static(b"slow")),
    );
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        Options::with_args(&["--task-retention", "2s", "--audit-retention", "2s"]),
    )?;
    let api = Api::new(&server);
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;

    let slow = api.prefetch_ok(&token, &[url(HOST, "/slow.pak")]).await?;
    let fast = api.prefetch_ok(&token, &[url(HOST, "/fast.pak")]).await?;
    let task = api
        .wait_final(&token, &fast, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    if let Err(error) = wait_deleted(&api, &token, &fast, Duration::from_secs(20)).await {
        return Err(format!("{error}; the server's log:\n{}", server.log()).into());
    }
    assert_eq!(listed(&api, &token).await?, vec![slow.clone()]);

    // Accepted before the fast one was deleted, over two seconds ago by now, and still running.
    let task = api
        .wait_final(&token, &slow, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    wait_deleted(&api, &token, &slow, Duration::from_secs(20)).await?;
    assert!(listed(&api, &token).await?.is_empty());
    assert!(
        server.log().contains("deleted tasks past their retention"),
        "{}",
        server.log()
    );
    // The audit log's entries of the submissions go after --audit-retention too.
    let admin = api.admin().await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = audit(&api, &admin, "?action=task.prefetch").await?;
        if actions(&left).is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("audit entries still there: {left}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const CF_TOKEN: &str = "cf-token-Y2xvdWRmbGFyZS10ZXN0LXRva2Vu-7f3a";

/// `serve` on SQLite in `dir`, whatever database the suite runs the other tests on: a backup is
/// of the embedded database.
fn serve_on_sqlite(dir: &Path) -> std::io::Result<Server> {
    Server::start_with(
        dir,
        Options {
            database_url: Some(format!("sqlite://{}/precache.db", dir.display())),
            ..Options::default()
        },
    )
}

/// Runs `precache backup`; answers its exit success and its output.
async fn backup(data_dir: &Path, to: &Path) -> Result<(bool, String), Error> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_precache"))
        .arg("backup")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--to")
        .arg(to)
        .env_remove("PRECACHE_DATABASE_URL")
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

/// `precache backup` copies the database while `serve` keeps accepting tasks; a `serve` started
/// on a data dir holding the copy (and the key that seals credentials) has the accounts, tokens,
/// domains, edges, backends and tasks of that moment, and not what came after.
#[tokio::test]
async fn a_backup_taken_under_load_restores_the_moment_it_was_taken() -> TestResult {
    let origin = Origin::start().await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"release 1")));
    let vendor = CloudflareStandIn::start(CF_TOKEN, ZONE, 30).await?;
    let (live_dir, restored_dir, backups) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let live = serve_on_sqlite(live_dir.path())?;
    let api = Api::new(&live);
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    let admin = api.admin().await?;
    api.call(
        Method::POST,
        "/cdn_api/backends",
        Some(&admin),
        Some(json!({"name": "cf", "kind": "cloudflare",
                    "settings": {"zone_id": ZONE, "endpoint": vendor.endpoint()},
                    "credentials": {"api_token": CF_TOKEN}})),
    )
    .await?
    .expect(201, 0)?;
    let before = api.prefetch_ok(&token, &[url(HOST, "/a.pak")]).await?;
    let task = api
        .wait_final(&token, &before, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");

    // Submissions keep committing while the copy is taken.
    let load = {
        let (api, token) = (api.clone(), token.clone());
        tokio::spawn(async move {
            let mut accepted = 0;
            for n in 0..40 {
                if api
                    .prefetch_ok(&token, &[url(HOST, &format!("/load-{n}.pak"))])
                    .await
                    .is_ok()
                {
                    accepted += 1;
                }
            }
            accepted
        })
    };
    let copy = backups.path().join("precache-backup.db");
    let (ok, said) = backup(live_dir.path(), &copy).await?;
    assert!(ok, "{said}");
    assert!(said.contains("accounts=2 domains=1 "), "{said}");
    assert_eq!(
        load.await?,
        40,
        "every submission during the backup was accepted"
    );
    let after = api.prefetch_ok(&token, &[url(HOST, "/a.pak")]).await?;

    // A backup never overwrites a file.
    let (ok, said) = backup(live_dir.path(), &copy).await?;
    assert!(!ok && said.contains("exists already"), "{said}");

    std::fs::copy(&copy, restored_dir.path().join("precache.db"))?;
    std::fs::copy(
        live_dir.path().join("secret.key"),
        restored_dir.path().join("secret.key"),
    )?;
    live.terminate()?;
    let restored = serve_on_sqlite(restored_dir.path())?;
    let api = Api::new(&restored);
    // alice's token of before the backup still works; her task is there as it ended.
    let task = api
        .wait_final(&token, &before, Duration::from_secs(5))
        .await?;
    assert_eq!(
        (&task["status"], &task["success_rate"]),
        (&json!("done"), &json!(100.0)),
        "{task}"
    );
    api.call(
        Method::GET,
        &format!("/cdn_api/prefetch/{after}"),
        Some(&token),
        None,
    )
    .await?
    .expect(404, 3001)?;
    let admin = api.admin().await?;
    let domains = api
        .call(Method::GET, "/cdn_api/domains", Some(&admin), None)
        .await?;
    assert!(domains.text().contains(HOST), "{}", domains.text());
    let edges = api
        .call(Method::GET, "/cdn_api/edges", Some(&admin), None)
        .await?;
    assert!(edges.text().contains("\"local\""), "{}", edges.text());
    // The backend's sealed credential opens with the key kept beside the copy.
    let check = api
        .call(
            Method::POST,
            "/cdn_api/backends/cf/check",
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!(check.get("ok"), &json!(true), "{}", check.text());
    Ok(())
}

/// One page of the audit log as the admin sees it, with `query`.
async fn audit(api: &Api, admin: &str, query: &str) -> Result<serde_json::Value, Error> {
    let reply = api
        .call(
            Method::GET,
            &format!("/cdn_api/audit{query}"),
            Some(admin),
            None,
        )
        .await?;
    reply.expect(200, 0)?;
    Ok(reply.body["zt_api"].clone())
}

/// The actions of a page's entries, newest first.
fn actions(page: &serde_json::Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry["action"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The audit log says who (account, address, request id) did what and when, for log-ins that
/// failed or succeeded, changes to accounts, domains, edges, backends and quotas, and tasks; its
/// filters and pages work; only admins read it; and no password, token or credential is in it.
#[tokio::test]
async fn the_audit_log_says_who_did_what_and_never_a_secret() -> TestResult {
    let origin = Origin::start().await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"release 1")));
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let admin = api.admin().await?;
    // A wrong password for a name that does not exist yet.
    api.call(
        Method::POST,
        "/cdn_api/auth/tokens",
        None,
        Some(json!({"username": "alice", "password": "guess-1"})),
    )
    .await?
    .expect(401, 1003)?;
    let token = api.create_user(&admin, "alice").await?;
    api.register_domain(&admin, HOST, &origin.url(), "alice")
        .await?;
    api.call(
        Method::PUT,
        "/cdn_api/quota/alice",
        Some(&admin),
        Some(json!({"prefetch_urls_per_day": 500})),
    )
    .await?
    .expect(200, 0)?;
    api.call(
        Method::POST,
        "/cdn_api/edges",
        Some(&admin),
        Some(json!({"name": "edge-2"})),
    )
    .await?
    .expect(201, 0)?;
    api.call(
        Method::POST,
        "/cdn_api/edges/edge-2/revoke",
        Some(&admin),
        None,
    )
    .await?
    .expect(200, 0)?;
    api.call(
        Method::POST,
        "/cdn_api/backends",
        Some(&admin),
        Some(json!({"name": "cf", "kind": "cloudflare",
                    "settings": {"zone_id": ZONE, "endpoint": "http://127.0.0.1:9"},
                    "credentials": {"api_token": CF_TOKEN}})),
    )
    .await?
    .expect(201, 0)?;
    let submitted = api
        .call(
            Method::POST,
            "/cdn_api/prefetch",
            Some(&token),
            Some(json!({"urls": [url(HOST, "/a.pak")]})),
        )
        .await?;
    submitted.expect(200, 0)?;
    let req_id = submitted.get("reqId").as_str().unwrap_or("").to_string();
    let request_id = submitted
        .headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    let refreshed = api
        .refresh_ok(&token, json!({"dirs": [url(HOST, "/patch/")]}))
        .await?;

    let page = audit(&api, &admin, "").await?;
    assert_eq!(
        actions(&page),
        [
            "task.refresh",
            "task.prefetch",
            "backend.create",
            "edge.revoke",
            "edge.create",
            "quota.set",
            "domain.create",
            "login",
            "account.create",
            "login_failed",
            "login",
        ],
        "{page}"
    );
    assert_eq!(
        (&page["entries"][0]["target"], &page["entries"][0]["detail"]),
        (&json!(refreshed), &json!({"urls": 0, "dirs": 1})),
        "{page}"
    );
    let newest = &page["entries"][1];
    assert_eq!(
        (
            &newest["actor"],
            &newest["target"],
            &newest["client"],
            &newest["request_id"],
            &newest["detail"]
        ),
        (
            &json!("alice"),
            &json!(req_id),
            &json!("127.0.0.1"),
            &json!(request_id),
            &json!({"urls": 1})
        ),
        "{page}"
    );
    let targets: Vec<&serde_json::Value> = page["entries"]
        .as_array()
        .map(|entries| entries.iter().map(|entry| &entry["target"]).collect())
        .unwrap_or_default();
    assert_eq!(
        targets[2..7],
        [
            &json!("cf"),
            &json!("edge-2"),
            &json!("edge-2"),
            &json!("alice"),
            &json!(HOST)
        ],
        "{page}"
    );
    // Filters: an action, an action's family, an actor, a time window, pages.
    let failed = audit(&api, &admin, "?action=login_failed").await?;
    assert_eq!(failed["entries"][0]["actor"], "alice", "{failed}");
    assert_eq!(
        failed["entries"][0]["detail"],
        json!({"ret": 1003}),
        "{failed}"
    );
    assert_eq!(
        actions(&audit(&api, &admin, "?action=edge.").await?),
        ["edge.revoke", "edge.create"]
    );
    assert_eq!(
        actions(&audit(&api, &admin, "?actor=alice").await?),
        ["task.refresh", "task.prefetch", "login", "login_failed"]
    );
    assert!(actions(&audit(&api, &admin, "?since=2999-01-01T00:00:00Z").await?).is_empty());
    let first = audit(&api, &admin, "?limit=4").await?;
    assert_eq!(actions(&first).len(), 4);
    let before = first["next_before"].as_i64().unwrap_or(0);
    let second = audit(&api, &admin, &format!("?limit=4&before={before}")).await?;
    assert_eq!(
        actions(&second),
        ["edge.create", "quota.set", "domain.create", "login"]
    );
    api.call(Method::GET, "/cdn_api/audit?limit=0", Some(&admin), None)
        .await?
        .expect(400, 2002)?;
    // Only admins read it.
    api.call(Method::GET, "/cdn_api/audit", Some(&token), None)
        .await?
        .expect(403, 1004)?;
    // Reads are not recorded, and no secret is anywhere in it.
    let everything = audit(&api, &admin, "?limit=1000").await?.to_string();
    for secret in [
        "guess-1",
        "alice-password",
        crate::support::server::ADMIN_PASSWORD,
        &token,
        &admin,
        CF_TOKEN,
        "pcj_",
    ] {
        assert!(!everything.contains(secret), "{secret} in {everything}");
    }
    Ok(())
}
