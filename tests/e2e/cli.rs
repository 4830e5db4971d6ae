//! The operator's command line against a real server: login, admin, prefetch and refresh of a
//! release's URLs with --wait, status, tasks, quota; exit statuses and rate limits.

use std::path::Path;
use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;

use bytes::Bytes;
use serde_json::Value;

use crate::support::client::url;
use crate::support::server::{Options, ADMIN_PASSWORD};
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";

/// Runs `precache ARGS` with its config dir in `home`, `stdin` on standard input. Async, so the
/// test's origin keeps serving on this runtime meanwhile.
async fn precache(
    home: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> std::io::Result<Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_precache"));
    command
        .args(args)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("PRECACHE_CONTROL")
        .env_remove("PRECACHE_TOKEN")
        .env_remove("PRECACHE_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await?;
    }
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .map_err(|_| std::io::Error::other("precache did not finish in 120 s"))?
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn an_operator_ships_a_release_from_the_command_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let (admin_home, alice_home) = (tempfile::tempdir()?, tempfile::tempdir()?);

    let login = precache(
        admin_home.path(),
        &[
            "login",
            "--control",
            &api.base,
            "--user",
            "admin",
            "--password-stdin",
        ],
        &format!("{ADMIN_PASSWORD}\n"),
        &[],
    )
    .await?;
    assert!(login.status.success(), "{}", text(&login));
    let session = admin_home.path().join("precache/session.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&session)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token is readable by its owner only");
    }
    let wrong = precache(
        alice_home.path(),
        &[
            "login",
            "--control",
            &api.base,
            "--user",
            "admin",
            "--password-stdin",
        ],
        "wrong\n",
        &[],
    )
    .await?;
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));

    let added = precache(
        admin_home.path(),
        &["admin", "user", "add", "alice"],
        "",
        &[("PRECACHE_PASSWORD", "alice-password-1")],
    )
    .await?;
    assert!(added.status.success(), "{}", text(&added));
    let origin_url = origin.url();
    let domain = precache(
        admin_home.path(),
        &[
            "admin",
            "domain",
            "add",
            HOST,
            "--origin",
            &origin_url,
            "--owner",
            "alice",
        ],
        "",
        &[],
    )
    .await?;
    assert!(domain.status.success(), "{}", text(&domain));
    let users = precache(
        admin_home.path(),
        &["admin", "user", "list", "--json"],
        "",
        &[],
    )
    .await?;
    let users: Value = serde_json::from_slice(&users.stdout)?;
    assert!(users["users"]
        .as_array()
        .is_some_and(|list| list.iter().any(|u| u["name"] == "alice")));

    let login = precache(
        alice_home.path(),
        &["login", "--control", &api.base, "--user", "alice"],
        "",
        &[("PRECACHE_PASSWORD", "alice-password-1")],
    )
    .await?;
    assert!(login.status.success(), "{}", text(&login));

    // A release of 12 files, two of which the origin does not have: two requests (10 + 2),
    // followed to the end, the failures listed, exit status 1.
    let mut list = String::from("# release 1.2\n");
    for n in 0..12 {
        let path = format!("/r12/file-{n}.pak");
        if n < 10 {
            origin.set(&path, Behavior::Body(Bytes::from(format!("file {n}"))));
        } else {
            origin.set(&path, Behavior::Status(404));
        }
        list.push_str(&url(HOST, &path));
        list.push('\n');
    }
    let file = alice_home.path().join("release.txt");
    std::fs::write(&file, &list)?;
    let file_arg = file.to_string_lossy().to_string();
    let prefetch = precache(
        alice_home.path(),
        &["prefetch", "--from-file", &file_arg, "--wait", "--json"],
        "",
        &[],
    )
    .await?;
    assert_eq!(prefetch.status.code(), Some(1), "{}", text(&prefetch));
    let summary: Value = serde_json::from_slice(&prefetch.stdout)?;
    assert_eq!(
        summary["submitted"].as_array().map(Vec::len),
        Some(2),
        "{summary}"
    );
    assert_eq!(summary["tasks"][0]["status"], "done", "{summary}");
    assert_eq!(summary["tasks"][1]["success_rate"], 0.0, "{summary}");
    assert_eq!(summary["ok"], false);
    let human = precache(alice_home.path(), &["prefetch", "-", "--wait"], &list, &[]).await?;
    let human_text = String::from_utf8_lossy(&human.stdout).to_string();
    assert_eq!(human.status.code(), Some(1), "{}", text(&human));
    assert!(
        human_text.contains("failed:") && human_text.contains("file-11.pak"),
        "{human_text}"
    );

    // A refresh of what is there succeeds: exit status 0.
    let urls: Vec<String> = (0..3)
        .map(|n| url(HOST, &format!("/r12/file-{n}.pak")))
        .collect();
    let mut args = vec!["refresh", "--wait"];
    args.extend(urls.iter().map(String::as_str));
    let refresh = precache(alice_home.path(), &args, "", &[]).await?;
    assert!(refresh.status.success(), "{}", text(&refresh));

    let req_id = summary["submitted"][0]["reqId"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let status = precache(alice_home.path(), &["status", &req_id, "--json"], "", &[]).await?;
    assert!(status.status.success(), "{}", text(&status));
    let task: Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(task["reqId"], req_id.as_str());
    let tasks = precache(
        alice_home.path(),
        &["tasks", "--json", "--type", "refresh"],
        "",
        &[],
    )
    .await?;
    let tasks: Value = serde_json::from_slice(&tasks.stdout)?;
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "{tasks}");
    let quota = precache(alice_home.path(), &["quota"], "", &[]).await?;
    assert!(quota.status.success(), "{}", text(&quota));
    assert!(!quota.stdout.is_empty());
    let unknown = precache(
        alice_home.path(),
        &["status", "00000000-0000-4000-8000-000000000000"],
        "",
        &[],
    )
    .await?;
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    Ok(())
}

#[tokio::test]
async fn the_command_line_waits_out_rate_limits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        Options {
            args: vec!["--rate-limit-per-account".into(), "1".into()],
            ..Options::default()
        },
    )?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    let home = tempfile::tempdir()?;
    let urls: Vec<String> = (0..40).map(|n| url(HOST, &format!("/f{n}"))).collect();
    // `--token=…`: a token may begin with `-`, which would otherwise read as a flag.
    let token_flag = format!("--token={token}");
    let mut args = vec![
        "prefetch",
        "--json",
        "--control",
        api.base.as_str(),
        token_flag.as_str(),
    ];
    args.extend(urls.iter().map(String::as_str));
    let prefetch = precache(home.path(), &args, "", &[]).await?;
    assert!(prefetch.status.success(), "{}", text(&prefetch));
    let summary: Value = serde_json::from_slice(&prefetch.stdout)?;
    assert_eq!(
        summary["submitted"].as_array().map(Vec::len),
        Some(4),
        "{summary}"
    );
    assert_eq!(
        summary["refused"].as_array().map(Vec::len),
        Some(0),
        "{summary}"
    );
    assert!(
        String::from_utf8_lossy(&prefetch.stderr).is_empty(),
        "--json keeps standard error quiet"
    );
    Ok(())
}

#[tokio::test]
async fn a_spent_quota_stops_the_rest_and_admins_manage_edges_domains_and_backends() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    let admin = api.admin().await?;
    api.call(
        reqwest::Method::PUT,
        "/cdn_api/quota/alice",
        Some(&admin),
        Some(serde_json::json!({"prefetch_urls_per_day": 15})),
    )
    .await?
    .expect(200, 0)?;
    let home = tempfile::tempdir()?;
    let urls: Vec<String> = (0..30).map(|n| url(HOST, &format!("/q{n}"))).collect();
    let token_flag = format!("--token={token}");
    let mut args = vec![
        "prefetch",
        "--json",
        "--control",
        api.base.as_str(),
        token_flag.as_str(),
    ];
    args.extend(urls.iter().map(String::as_str));
    let prefetch = precache(home.path(), &args, "", &[]).await?;
    assert_eq!(prefetch.status.code(), Some(1), "{}", text(&prefetch));
    let summary: Value = serde_json::from_slice(&prefetch.stdout)?;
    assert_eq!(
        summary["submitted"].as_array().map(Vec::len),
        Some(1),
        "{summary}"
    );
    let refused: usize = summary["refused"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| entry["urls"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(refused, 20, "the spent quota stops the rest: {summary}");

    let admin_flag = format!("--token={admin}");
    let as_admin = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        all.extend([
            "--control".to_string(),
            api.base.clone(),
            admin_flag.clone(),
        ]);
        all
    };
    let run = |args: Vec<String>| {
        let home = home.path().to_path_buf();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            precache(&home, &args, "", &[]).await
        }
    };
    let added = run(as_admin(&["admin", "edge", "add", "edge-sh-1"])).await?;
    assert!(added.status.success(), "{}", text(&added));
    assert!(String::from_utf8_lossy(&added.stdout).contains("pcj_"));
    let listed = run(as_admin(&["admin", "edge", "list", "--json"])).await?;
    let edges: Value = serde_json::from_slice(&listed.stdout)?;
    let state = |edges: &Value| {
        edges["edges"]
            .as_array()
            .and_then(|list| list.iter().find(|edge| edge["name"] == "edge-sh-1"))
            .map(|edge| edge["state"].clone())
    };
    assert_eq!(state(&edges), Some(serde_json::json!("waiting_to_join")));
    let removed = run(as_admin(&["admin", "edge", "rm", "edge-sh-1"])).await?;
    assert!(removed.status.success(), "{}", text(&removed));
    let listed = run(as_admin(&["admin", "edge", "list", "--json"])).await?;
    assert_eq!(
        state(&serde_json::from_slice(&listed.stdout)?),
        Some(serde_json::json!("revoked"))
    );
    let domains = run(as_admin(&["admin", "domain", "list"])).await?;
    assert!(
        String::from_utf8_lossy(&domains.stdout).contains(HOST),
        "{}",
        text(&domains)
    );
    // Backends: registered, named by the domain, checked (a dead target fails the command),
    // deleted once no domain names them.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let dead = format!("http://{dead}");
    let added = run(as_admin(&[
        "admin",
        "backend",
        "add",
        "fleet",
        "--kind",
        "nginx",
        "--target",
        &dead,
        "--setting",
        "concurrency=4",
    ]))
    .await?;
    assert!(added.status.success(), "{}", text(&added));
    let listed = run(as_admin(&["admin", "backend", "list"])).await?;
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&format!("fleet  nginx  {dead}")),
        "{}",
        text(&listed)
    );
    let named = run(as_admin(&[
        "admin", "domain", "backends", HOST, "edges", "fleet",
    ]))
    .await?;
    assert!(named.status.success(), "{}", text(&named));
    let checked = run(as_admin(&["admin", "backend", "check", "fleet"])).await?;
    assert_eq!(checked.status.code(), Some(1), "{}", text(&checked));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("FAILED"));
    let in_use = run(as_admin(&["admin", "backend", "rm", "fleet"])).await?;
    assert_eq!(in_use.status.code(), Some(2), "{}", text(&in_use));
    let unnamed = run(as_admin(&["admin", "domain", "backends", HOST, "edges"])).await?;
    assert!(unnamed.status.success(), "{}", text(&unnamed));
    let removed = run(as_admin(&["admin", "backend", "rm", "fleet"])).await?;
    assert!(removed.status.success(), "{}", text(&removed));
    let gone = run(as_admin(&["admin", "domain", "rm", HOST])).await?;
    assert!(gone.status.success(), "{}", text(&gone));
    let again = run(as_admin(&["admin", "domain", "rm", HOST])).await?;
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    Ok(())
}
