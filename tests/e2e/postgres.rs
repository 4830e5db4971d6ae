//! `precache serve` on PostgreSQL: the task flows that exercise the store's statements, over
//! real sockets, against a throwaway cluster (skipped with a message without PostgreSQL, unless
//! `PRECACHE_REQUIRE_PG=1`).

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::json;

use crate::support::client::url;
use crate::support::pg_cluster::PgCluster;
use crate::support::server::Options;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";

#[tokio::test]
async fn prefetch_refresh_quota_and_restart_on_postgresql() -> TestResult {
    let Some(cluster) = PgCluster::start() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let options = Options {
        database_url: Some(cluster.url()),
        ..Options::default()
    };
    let server = Server::start_with(dir.path(), options.clone())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    origin.set("/a.bin", Behavior::Body(Bytes::from_static(b"on postgres")));
    origin.set("/b.bin", Behavior::Status(404));

    // Prefetch: a mixed task ends done at 50 %, the object is a hit with no new origin fetch.
    let req_id = api
        .prefetch_ok(&token, &[url(HOST, "/a.bin"), url(HOST, "/b.bin")])
        .await?;
    let task = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(
        (task["status"].clone(), task["success_rate"].clone()),
        (json!("done"), json!(50.0)),
        "{task}"
    );
    let hit = api.edge_get(HOST, "/a.bin").await?;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(origin.count("/a.bin"), 1);

    // The task list.
    let list = api
        .call(
            Method::GET,
            "/cdn_api/tasks?type=prefetch&status=done",
            Some(&token),
            None,
        )
        .await?;
    assert_eq!(list.get("tasks").as_array().map(Vec::len), Some(1));

    // Refresh with warm: purge confirmed, then the new version prefetched.
    origin.set(
        "/a.bin",
        Behavior::Body(Bytes::from_static(b"on postgres, v2")),
    );
    let reply = api
        .call(
            Method::POST,
            "/cdn_api/refresh",
            Some(&token),
            Some(json!({"urls": [url(HOST, "/a.bin")], "prefetch": true})),
        )
        .await?;
    reply.expect(200, 0)?;
    let refresh_id = reply.get("reqId").as_str().unwrap_or("").to_string();
    let task = api
        .wait_final_of("refresh", &token, &refresh_id, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["urls"][0]["objects"], 1, "{task}");
    assert_eq!(task["phases"]["warm"]["status"], "done", "{task}");
    let hit = api.edge_get(HOST, "/a.bin").await?;
    assert_eq!(&hit.bytes().await?[..], b"on postgres, v2");

    // Quota on PostgreSQL: the balance row is locked; over it nothing is created.
    let admin = api.admin().await?;
    api.call(
        Method::PUT,
        "/cdn_api/quota/alice",
        Some(&admin),
        Some(json!({"prefetch_urls_per_day": 4})),
    )
    .await?
    .expect(200, 0)?;
    api.prefetch(&token, &[url(HOST, "/c.bin"), url(HOST, "/d.bin")])
        .await?
        .expect(429, 4001)?;

    // Everything is still there after a restart.
    server.terminate()?;
    let server = Server::start_with(dir.path(), options)?;
    let api = Api::new(&server);
    let token = api.login("alice", "alice-password").await?;
    let again = api
        .call(
            Method::GET,
            &format!("/cdn_api/refresh/{refresh_id}"),
            Some(&token),
            None,
        )
        .await?;
    again.expect(200, 0)?;
    assert_eq!(again.get("status"), "done");
    drop(cluster);
    Ok(())
}
