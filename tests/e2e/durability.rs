//! Nothing is lost: tasks survive `kill -9`, the cache survives restarts, stops are clean.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;

use crate::support::client::url;
use crate::support::server::Options;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

#[tokio::test]
async fn a_task_interrupted_by_kill_9_finishes_after_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api
        .user_with_domain("alice", "game.example.com", &origin.url())
        .await?;
    let paths: Vec<String> = (0..6).map(|n| format!("/slow/{n}.bin")).collect();
    for path in &paths {
        origin.set(
            path,
            Behavior::Slow(Duration::from_secs(30), Bytes::from_static(b"late")),
        );
    }
    let urls: Vec<String> = paths
        .iter()
        .map(|path| url("game.example.com", path))
        .collect();
    let req_id = api.prefetch_ok(&token, &urls).await?;
    // Wait until the engine is mid-task: pairs are at the origin.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while origin.total() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(origin.total() > 0, "the task started");
    server.kill9();

    for path in &paths {
        origin.set(path, Behavior::Body(Bytes::from_static(b"on time")));
    }
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let token = api.login("alice", "alice-password").await?;
    let status = api
        .wait_final(&token, &req_id, Duration::from_secs(60))
        .await?;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["success_rate"], 100.0);
    for path in &paths {
        let hit = api.edge_get("game.example.com", path).await?;
        assert_eq!(hit.headers()["x-cache"], "HIT", "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn the_cache_survives_a_restart_and_sigterm_exits_0() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api
        .user_with_domain("alice", "game.example.com", &origin.url())
        .await?;
    let body = Bytes::from(vec![7u8; 300_000]);
    origin.set("/keep.bin", Behavior::Body(body.clone()));
    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/keep.bin")])
        .await?;
    api.wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;

    let (status, took) = server.terminate()?;
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");

    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let hit = api.edge_get("game.example.com", "/keep.bin").await?;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(hit.bytes().await?, body);
    assert_eq!(
        origin.count("/keep.bin"),
        1,
        "served from the disk cache after the restart"
    );

    let (status, _) = server.stop_with(libc::SIGINT, Duration::from_secs(5))?;
    assert!(status.success(), "SIGINT exits 0, got {status}");
    Ok(())
}

#[tokio::test]
async fn a_generated_admin_password_is_printed_once_and_never_changed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = Options {
        no_admin_password: true,
        ..Options::default()
    };
    let server = Server::start_with(dir.path(), options)?;
    let log = server.log();
    let password = log
        .lines()
        .find_map(|line| line.strip_prefix("precache: created account \"admin\" with password "))
        .ok_or("the generated password is printed on stderr")?
        .to_string();
    let api = Api::new(&server);
    api.login("admin", &password).await?;
    server.terminate()?;

    let options = Options {
        env: vec![(
            "PRECACHE_ADMIN_PASSWORD".into(),
            "a-different-password".into(),
        )],
        ..Options::default()
    };
    let server = Server::start_with(
        dir.path(),
        Options {
            no_admin_password: true,
            ..options
        },
    )?;
    assert!(
        !server.log().contains("created account"),
        "printed only on the first start"
    );
    let api = Api::new(&server);
    api.login("admin", &password).await?;
    let wrong = api
        .call(
            Method::POST,
            "/cdn_api/auth/tokens",
            None,
            Some(serde_json::json!({"username": "admin", "password": "a-different-password"})),
        )
        .await?;
    assert_eq!(
        wrong.ret(),
        1003,
        "a later start never changes the admin password"
    );
    Ok(())
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let _first = Server::start(dir.path())?;
    match Server::start(dir.path()) {
        Ok(_) => Err("a second server started on the same data dir".into()),
        Err(error) => {
            assert!(
                error
                    .to_string()
                    .contains("another precache is using the data dir"),
                "{error}"
            );
            Ok(())
        }
    }
}
