//! Prefetch from submission to a cache hit, including the seed's own sample and failures.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::json;

use crate::support::client::url;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(
    user: &str,
    domain: &str,
) -> Result<
    (tempfile::TempDir, Server, Api, Origin, String),
    Box<dyn std::error::Error + Send + Sync>,
> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain(user, domain, &origin.url()).await?;
    Ok((dir, server, api, origin, token))
}

#[tokio::test]
async fn seed_sample_request_is_accepted_and_answered_byte_for_byte() -> TestResult {
    let (_dir, _server, api, origin, token) = setup("hewen", "hewenchina.com").await?;
    for n in 1..=3 {
        origin.set(
            &format!("/static/images/news{n}.jpg"),
            Behavior::Body(Bytes::from(format!("image {n}"))),
        );
    }
    // Pasted from the seed, trailing comma included.
    let sample = r#"{
                 "urls": [
                     "http://hewenchina.com/static/images/news1.jpg",
                     "http://hewenchina.com/static/images/news2.jpg",
                     "http://hewenchina.com/static/images/news3.jpg",
                 ]
             }"#;
    let reply = api
        .send(
            Method::POST,
            "/cdn_api/prefetch",
            Some(&token),
            Some(sample.as_bytes().to_vec()),
        )
        .await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    let req_id = reply.get("reqId").as_str().unwrap_or_default().to_string();
    assert!(uuid_like(&req_id), "reqId {req_id:?} is a UUID");
    let expected = format!(
        "{{\n  \"zt_api\": {{\n    \"msg\": \"OK\", \n    \"reqId\": \"{req_id}\", \n    \"ret\": 0, \n    \"success_rate\": 100.0\n  }}\n}}"
    );
    assert_eq!(String::from_utf8_lossy(&reply.raw), expected);
    assert_eq!(reply.raw.len(), 134, "the seed's Content-Length");
    assert_eq!(reply.headers["content-length"], "134");

    let status = api.wait_final(&token, &req_id, WAIT).await?;
    assert_eq!(status["status"], "done");
    assert_eq!(status["success_rate"], 100.0);
    assert_eq!(status["progress"], 100.0);
    assert_eq!(status["urls"].as_array().map(Vec::len), Some(3));
    Ok(())
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn prefetched_object_is_a_hit_without_another_origin_fetch() -> TestResult {
    let (_dir, _server, api, origin, token) = setup("alice", "game.example.com").await?;
    let body = Bytes::from((0..200_000u32).map(|n| (n % 251) as u8).collect::<Vec<_>>());
    origin.set("/patch/v2.pak", Behavior::Body(body.clone()));
    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/patch/v2.pak")])
        .await?;
    let status = api.wait_final(&token, &req_id, WAIT).await?;
    assert_eq!(status["status"], "done", "{status}");
    let entry = &status["urls"][0];
    assert_eq!(
        (
            entry["status"].clone(),
            entry["http_status"].clone(),
            entry["bytes"].clone()
        ),
        (json!("success"), json!(200), json!(200_000))
    );
    assert_eq!(
        (entry["edges_total"].clone(), entry["edges_success"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(origin.count("/patch/v2.pak"), 1);

    let response = api.edge_get("game.example.com", "/patch/v2.pak").await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(response.bytes().await?, body);
    assert_eq!(
        origin.count("/patch/v2.pak"),
        1,
        "the hit did not touch the origin"
    );
    Ok(())
}

#[tokio::test]
async fn origin_404_fails_its_pair_and_a_mixed_task_ends_done_at_50() -> TestResult {
    let (_dir, _server, api, origin, token) = setup("alice", "game.example.com").await?;
    origin.set("/ok.bin", Behavior::Body(Bytes::from_static(b"present")));
    let req_id = api
        .prefetch_ok(
            &token,
            &[
                url("game.example.com", "/ok.bin"),
                url("game.example.com", "/gone.bin"),
            ],
        )
        .await?;
    let status = api.wait_final(&token, &req_id, WAIT).await?;
    assert_eq!(status["status"], "done");
    assert_eq!(status["success_rate"], 50.0);
    assert_eq!(status["progress"], 100.0);
    let failed = &status["urls"][1];
    assert_eq!(failed["url"], "http://game.example.com/gone.bin");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["http_status"], 404);
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("404"), "the reason names the 404: {error:?}");
    assert_eq!(origin.count("/gone.bin"), 1, "a 404 is not retried");
    assert!(status["finished_at"].is_string());
    Ok(())
}

#[tokio::test]
async fn a_task_whose_every_pair_fails_ends_failed() -> TestResult {
    let (_dir, _server, api, origin, token) = setup("alice", "game.example.com").await?;
    origin.set("/forbidden.bin", Behavior::Status(403));
    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/forbidden.bin")])
        .await?;
    let status = api.wait_final(&token, &req_id, WAIT).await?;
    assert_eq!(
        (status["status"].clone(), status["success_rate"].clone()),
        (json!("failed"), json!(0.0))
    );
    assert!(status["urls"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("403"));
    Ok(())
}

#[tokio::test]
async fn flaky_origin_500_500_200_succeeds_on_the_third_attempt() -> TestResult {
    let (_dir, _server, api, origin, token) = setup("alice", "game.example.com").await?;
    origin.set(
        "/flaky.bin",
        Behavior::Sequence(vec![500, 500, 200], Bytes::from_static(b"finally")),
    );
    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/flaky.bin")])
        .await?;
    let status = api.wait_final(&token, &req_id, WAIT).await?;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["success_rate"], 100.0);
    assert_eq!(status["urls"][0]["edges"][0]["attempts"], 3);
    assert_eq!(origin.count("/flaky.bin"), 3);
    let hit = api.edge_get("game.example.com", "/flaky.bin").await?;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(hit.bytes().await?, Bytes::from_static(b"finally"));
    Ok(())
}

#[tokio::test]
async fn persistent_5xx_fails_after_three_attempts_with_the_reason() -> TestResult {
    let (_dir, _server, api, origin, token) = setup("alice", "game.example.com").await?;
    origin.set("/broken.bin", Behavior::Status(503));
    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/broken.bin")])
        .await?;
    let status = api.wait_final(&token, &req_id, WAIT).await?;
    assert_eq!(status["status"], "failed");
    let error = status["urls"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("503") && error.contains("3 attempts"),
        "{error:?}"
    );
    assert_eq!(origin.count("/broken.bin"), 3);
    Ok(())
}

#[tokio::test]
async fn uncacheable_answer_fails_with_the_reason() -> TestResult {
    let (_dir, _server, api, origin, token) = setup("alice", "game.example.com").await?;
    origin.set(
        "/private.bin",
        Behavior::WithHeaders(
            Bytes::from_static(b"secret"),
            vec![("cache-control", "no-store")],
        ),
    );
    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/private.bin")])
        .await?;
    let status = api.wait_final(&token, &req_id, WAIT).await?;
    assert_eq!(status["status"], "failed");
    let error = status["urls"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("may not be cached"), "{error:?}");
    Ok(())
}

#[tokio::test]
async fn duplicate_urls_count_once() -> TestResult {
    let (_dir, _server, api, origin, token) = setup("alice", "game.example.com").await?;
    origin.set("/a.bin", Behavior::Body(Bytes::from_static(b"a")));
    let urls = [
        url("game.example.com", "/a.bin"),
        url("game.example.com", "/a.bin"),
        url("GAME.example.com", "/a.bin#frag"),
    ];
    let req_id = api.prefetch_ok(&token, &urls).await?;
    let status = api.wait_final(&token, &req_id, WAIT).await?;
    assert_eq!(status["urls"].as_array().map(Vec::len), Some(1));
    assert_eq!(origin.count("/a.bin"), 1);
    let quota = api
        .call(Method::GET, "/cdn_api/quota", Some(&token), None)
        .await?;
    assert_eq!(quota.get("quota")["prefetch_urls_per_day"]["used"], 1);
    Ok(())
}

#[tokio::test]
async fn the_edge_serves_registered_hosts_only() -> TestResult {
    let (_dir, _server, api, origin, _token) = setup("alice", "game.example.com").await?;
    origin.set("/x.bin", Behavior::Body(Bytes::from_static(b"x")));
    let unknown = api.edge_get("evil.example.net", "/x.bin").await?;
    assert_eq!(unknown.status(), 404);
    assert_eq!(origin.total(), 0, "an unknown Host causes no origin fetch");
    let miss = api.edge_get("game.example.com", "/x.bin").await?;
    assert_eq!(
        (miss.status().as_u16(), miss.headers()["x-cache"].to_str()?),
        (200, "MISS")
    );
    let hit = api.edge_get("game.example.com", "/x.bin").await?;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(origin.count("/x.bin"), 1);
    Ok(())
}

#[tokio::test]
async fn task_list_is_newest_first_with_status_filter_and_cursor() -> TestResult {
    let (_dir, _server, api, origin, token) = setup("alice", "game.example.com").await?;
    origin.set("/1.bin", Behavior::Body(Bytes::from_static(b"1")));
    let mut ids = Vec::new();
    for n in 0..3 {
        let path = if n == 1 {
            "/missing.bin".to_string()
        } else {
            "/1.bin".to_string()
        };
        let id = api
            .prefetch_ok(&token, &[url("game.example.com", &path)])
            .await?;
        api.wait_final(&token, &id, WAIT).await?;
        ids.push(id);
    }
    let all = api
        .call(Method::GET, "/cdn_api/prefetch", Some(&token), None)
        .await?;
    let listed: Vec<&str> = all
        .get("tasks")
        .as_array()
        .map(|tasks| tasks.iter().filter_map(|t| t["reqId"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        listed,
        vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]
    );

    let failed = api
        .call(
            Method::GET,
            "/cdn_api/prefetch?status=failed",
            Some(&token),
            None,
        )
        .await?;
    assert_eq!(failed.get("tasks")[0]["reqId"], ids[1].as_str());
    assert_eq!(failed.get("tasks").as_array().map(Vec::len), Some(1));

    let page = api
        .call(Method::GET, "/cdn_api/prefetch?limit=2", Some(&token), None)
        .await?;
    let next = page
        .get("next_before")
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(next, ids[1]);
    let rest = api
        .call(
            Method::GET,
            &format!("/cdn_api/prefetch?limit=2&before={next}"),
            Some(&token),
            None,
        )
        .await?;
    assert_eq!(rest.get("tasks")[0]["reqId"], ids[0].as_str());
    assert!(rest.get("next_before").is_null());
    Ok(())
}

#[tokio::test]
async fn a_client_that_hangs_up_right_after_submitting_does_not_strand_its_task() -> TestResult {
    use tokio::io::AsyncWriteExt;

    let (_dir, _server, api, origin, token) = setup("alice", "game.example.com").await?;
    origin.set("/a.bin", Behavior::Body(Bytes::from_static(b"a")));
    let api_addr = api.base.trim_start_matches("http://").to_string();
    // Hang-ups spread from "before the server read anything" to "after it answered", so some
    // land while the task is being committed.
    for n in 0..40u64 {
        let body = format!(r#"{{"urls": ["http://game.example.com/a.bin?n={n}"]}}"#);
        let request = format!(
            "POST /cdn_api/prefetch HTTP/1.1\r\nHost: {api_addr}\r\nX-Auth-Token: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut socket = tokio::net::TcpStream::connect(&api_addr).await?;
        socket.write_all(request.as_bytes()).await?;
        tokio::time::sleep(Duration::from_micros(250 * n)).await;
        // Gone before (or just after) the answer: the server may drop the handler mid-way.
        drop(socket);
    }
    // Whatever was accepted must run to its end.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list = api
            .call(
                Method::GET,
                "/cdn_api/prefetch?limit=100",
                Some(&token),
                None,
            )
            .await?;
        let tasks = list.get("tasks").as_array().cloned().unwrap_or_default();
        let unfinished = tasks.iter().filter(|task| task["status"] != "done").count();
        if !tasks.is_empty() && unfinished == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{unfinished} of {} accepted tasks never finished",
                tasks.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
