//! How the engine treats origins: timeouts, refused connections, and the per-origin limit.

use std::time::Duration;

use bytes::Bytes;

use crate::support::client::url;
use crate::support::server::Options;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

#[tokio::test]
async fn an_origin_that_never_answers_fails_the_pair_after_the_first_byte_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        Options::with_args(&["--origin-first-byte-timeout", "1s", "--task-attempts", "2"]),
    )?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api
        .user_with_domain("alice", "game.example.com", &origin.url())
        .await?;
    origin.set(
        "/stuck.bin",
        Behavior::Slow(Duration::from_secs(60), Bytes::from_static(b"too late")),
    );
    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/stuck.bin")])
        .await?;
    let status = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(status["status"], "failed");
    let error = status["urls"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("did not answer") && error.contains("2 attempts"),
        "{error:?}"
    );
    assert_eq!(origin.count("/stuck.bin"), 2, "a timeout is retried");
    Ok(())
}

#[tokio::test]
async fn a_refused_connection_fails_the_pair_with_that_reason() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(dir.path(), Options::with_args(&["--task-attempts", "2"]))?;
    let api = Api::new(&server);
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let token = api
        .user_with_domain("alice", "game.example.com", &format!("http://{closed}"))
        .await?;
    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/any.bin")])
        .await?;
    let status = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(status["status"], "failed");
    let error = status["urls"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("refused"), "{error:?}");
    Ok(())
}

#[tokio::test]
async fn no_more_than_the_per_origin_limit_is_fetched_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(dir.path(), Options::with_args(&["--task-per-origin", "2"]))?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api
        .user_with_domain("alice", "game.example.com", &origin.url())
        .await?;
    let paths: Vec<String> = (0..10).map(|n| format!("/release/{n}.pak")).collect();
    for path in &paths {
        origin.set(
            path,
            Behavior::Slow(Duration::from_millis(200), Bytes::from_static(b"pak")),
        );
    }
    let urls: Vec<String> = paths
        .iter()
        .map(|path| url("game.example.com", path))
        .collect();
    let req_id = api.prefetch_ok(&token, &urls).await?;
    let status = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(status["status"], "done");
    assert_eq!(origin.total(), 10);
    assert_eq!(
        origin.max_in_flight(),
        2,
        "the origin never saw more than 2 fetches at once"
    );
    Ok(())
}

#[tokio::test]
async fn an_admin_caps_a_domains_concurrent_fetches_and_bandwidth() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api
        .user_with_domain("alice", "game.example.com", &origin.url())
        .await?;
    let admin = api.admin().await?;
    let set = |limits: serde_json::Value| {
        let api = api.clone();
        let admin = admin.clone();
        async move {
            api.call(
                reqwest::Method::PUT,
                "/cdn_api/domains/game.example.com/origin_limits",
                Some(&admin),
                Some(limits),
            )
            .await
        }
    };
    set(serde_json::json!({"max_concurrent_fetches": 0}))
        .await?
        .expect(400, 2002)?;
    set(serde_json::json!({"max_streams": 1}))
        .await?
        .expect(400, 2002)?;
    let reply = set(serde_json::json!({"max_concurrent_fetches": 1})).await?;
    reply.expect(200, 0)?;
    assert_eq!(
        reply.get("domain")["origin_limits"]["max_concurrent_fetches"],
        1
    );

    // Four slow objects, one fetch at a time (the default would run them together).
    let urls: Vec<String> = (0..4)
        .map(|n| {
            let path = format!("/slow-{n}.bin");
            origin.set(
                &path,
                Behavior::Slow(Duration::from_millis(300), Bytes::from_static(b"slow")),
            );
            url("game.example.com", &path)
        })
        .collect();
    let req_id = api.prefetch_ok(&token, &urls).await?;
    let status = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(status["success_rate"], serde_json::json!(100.0), "{status}");
    assert_eq!(origin.max_in_flight(), 1, "one origin fetch at a time");

    // 16 MiB at 4 MiB/s: the edge reads (and so the origin sends) no faster than that.
    set(serde_json::json!({"max_concurrent_fetches": 1, "max_bandwidth": 4 << 20}))
        .await?
        .expect(200, 0)?;
    origin.set("/big.bin", Behavior::Large(16 << 20));
    let started = std::time::Instant::now();
    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/big.bin")])
        .await?;
    let status = api
        .wait_final(&token, &req_id, Duration::from_secs(60))
        .await?;
    assert_eq!(status["status"], "done", "{status}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(3500),
        "16 MiB at 4 MiB/s took only {elapsed:?}"
    );
    Ok(())
}
