//! Refresh (刷新) end to end: submit over HTTP, observe on the edge and in the status.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::url;
use crate::support::server::Options;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A server with `HOST` registered to alice against a test origin; alice's token.
struct Alice {
    _dir: tempfile::TempDir,
    _server: Server,
    api: Api,
    origin: Origin,
    token: String,
}

impl Alice {
    async fn start(options: Options) -> Result<Alice, Error> {
        let dir = tempfile::tempdir()?;
        let server = Server::start_with(dir.path(), options)?;
        let api = Api::new(&server);
        let origin = Origin::start().await?;
        let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
        Ok(Alice {
            _dir: dir,
            _server: server,
            api,
            origin,
            token,
        })
    }
}

async fn x_cache(api: &Api, path: &str) -> Result<String, Error> {
    let response = api.edge_get(HOST, path).await?;
    let value = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    response.bytes().await?;
    Ok(value)
}

async fn refresh(api: &Api, token: &str, body: Value) -> Result<Value, Error> {
    let reply = api
        .call(Method::POST, "/cdn_api/refresh", Some(token), Some(body))
        .await?;
    reply.expect(200, 0)?;
    let req_id = reply.get("reqId").as_str().unwrap_or("").to_string();
    api.wait_final_of("refresh", token, &req_id, Duration::from_secs(30))
        .await
}

#[tokio::test]
async fn refreshed_urls_and_dirs_are_gone_from_the_edge_and_reported() -> TestResult {
    let alice = Alice::start(Options::default()).await?;
    let (api, origin, token) = (&alice.api, &alice.origin, alice.token.clone());
    for (path, len) in [
        ("/a.bin", 1000),
        ("/keep.bin", 2000),
        ("/dir/x.bin", 300),
        ("/dir/sub/y.bin", 400),
    ] {
        origin.set(path, Behavior::Body(Bytes::from(vec![1u8; len])));
        assert_eq!(x_cache(api, path).await?, "MISS");
    }

    let task = refresh(
        api,
        &token,
        json!({"urls": [url(HOST, "/a.bin"), url(HOST, "/never-cached.bin")]}),
    )
    .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["type"], "refresh");
    assert_eq!(task["mode"], "delete");
    assert!(task["propagation_ms"].as_i64().is_some(), "{task}");
    assert_eq!(task["urls"][0]["objects"], 1, "{task}");
    assert_eq!(task["urls"][0]["bytes"], 1000);
    assert_eq!(task["urls"][0]["edges"][0]["was_cached"], true);
    assert_eq!(task["urls"][1]["status"], "success");
    assert_eq!(task["urls"][1]["edges"][0]["was_cached"], false);
    assert_eq!(x_cache(api, "/a.bin").await?, "MISS");
    assert_eq!(x_cache(api, "/keep.bin").await?, "HIT");

    // A dry run counts on every edge and removes nothing.
    let task = refresh(
        api,
        &token,
        json!({"dirs": [url(HOST, "/dir/")], "dry_run": true}),
    )
    .await?;
    assert_eq!(
        (task["status"].clone(), task["dry_run"].clone()),
        (json!("done"), json!(true))
    );
    assert_eq!(task["urls"][0]["objects"], 2, "{task}");
    assert_eq!(task["urls"][0]["bytes"], 700);
    assert_eq!(x_cache(api, "/dir/x.bin").await?, "HIT");

    let task = refresh(api, &token, json!({"dirs": [url(HOST, "/dir/")]})).await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["dry_run"], false);
    assert_eq!(task["urls"][0]["dir"], true);
    assert_eq!(task["urls"][0]["objects"], 2, "{task}");
    assert_eq!(task["urls"][0]["bytes"], 700);
    assert_eq!(x_cache(api, "/dir/x.bin").await?, "MISS");
    assert_eq!(x_cache(api, "/dir/sub/y.bin").await?, "MISS");
    assert_eq!(x_cache(api, "/keep.bin").await?, "HIT");

    // Invalidate: the object stays, the next request revalidates (a 304, no body).
    let task = refresh(
        api,
        &token,
        json!({"urls": [url(HOST, "/keep.bin")], "mode": "invalidate"}),
    )
    .await?;
    assert_eq!(
        (task["status"].clone(), task["mode"].clone()),
        (json!("done"), json!("invalidate"))
    );
    assert_eq!(x_cache(api, "/keep.bin").await?, "HIT");
    assert_eq!(origin.not_modified("/keep.bin"), 1);

    let listed = api
        .call(
            Method::GET,
            "/cdn_api/refresh?status=done",
            Some(&token),
            None,
        )
        .await?;
    listed.expect(200, 0)?;
    assert_eq!(listed.get("tasks").as_array().map(Vec::len), Some(4));
    Ok(())
}

#[tokio::test]
async fn bad_refresh_requests_get_their_ret_code_and_change_nothing() -> TestResult {
    let alice = Alice::start(Options::default()).await?;
    let (api, origin, token) = (&alice.api, &alice.origin, alice.token.clone());
    let admin = api.admin().await?;
    let other = api.create_user(&admin, "bob").await?;
    let cases: Vec<(Value, u16, i64, &str)> = vec![
        (json!({}), 400, 2002, "urls"),
        (json!({"urls": [], "dirs": []}), 400, 2002, "urls"),
        (
            json!({"dirs": [url(HOST, "/static")]}),
            400,
            2005,
            "must end with",
        ),
        (
            json!({"urls": [url(HOST, "/a")], "mode": "shred"}),
            400,
            2002,
            "mode",
        ),
        (
            json!({"urls": (0..6).map(|i| url(HOST, &format!("/{i}"))).collect::<Vec<_>>(),
                "dirs": (0..5).map(|i| url(HOST, &format!("/d{i}/"))).collect::<Vec<_>>()}),
            400,
            2003,
            "at most 10",
        ),
        (
            json!({"urls": [url(HOST, "/a")], "dirs": [url("other.example.com", "/d/")]}),
            400,
            2004,
            "more than one domain",
        ),
    ];
    for (body, status, ret, text) in cases {
        let reply = api
            .call(
                Method::POST,
                "/cdn_api/refresh",
                Some(&token),
                Some(body.clone()),
            )
            .await?;
        reply
            .expect(status, ret)
            .map_err(|e| format!("{body}: {e}"))?;
        assert!(reply.msg().contains(text), "{body}: {}", reply.msg());
    }
    let reply = api
        .call(
            Method::POST,
            "/cdn_api/refresh",
            Some(&other),
            Some(json!({"urls": [url(HOST, "/a")]})),
        )
        .await?;
    reply.expect(403, 2006)?;

    // Quotas: refresh dirs are counted on their own.
    api.call(
        Method::PUT,
        "/cdn_api/quota/alice",
        Some(&admin),
        Some(json!({"refresh_dirs_per_day": 1})),
    )
    .await?
    .expect(200, 0)?;
    refresh(api, &token, json!({"dirs": [url(HOST, "/d1/")]})).await?;
    let reply = api
        .call(
            Method::POST,
            "/cdn_api/refresh",
            Some(&token),
            Some(json!({"urls": [url(HOST, "/u")], "dirs": [url(HOST, "/d2/")]})),
        )
        .await?;
    reply.expect(429, 4001)?;
    let quota = api
        .call(Method::GET, "/cdn_api/quota", Some(&token), None)
        .await?;
    let body = quota.body.to_string();
    assert!(body.contains("refresh_urls_per_day"), "{body}");
    assert_eq!(
        quota.body["zt_api"]["quota"]["refresh_urls_per_day"]["used"], 0,
        "a refused request charges nothing: {body}"
    );

    // A prefetch reqId is not a refresh task.
    origin.set("/p.bin", Behavior::Body(Bytes::from_static(b"p")));
    let prefetch_id = api.prefetch_ok(&token, &[url(HOST, "/p.bin")]).await?;
    api.call(
        Method::GET,
        &format!("/cdn_api/refresh/{prefetch_id}"),
        Some(&token),
        None,
    )
    .await?
    .expect(404, 3001)?;
    Ok(())
}

#[tokio::test]
async fn cancelling_a_task_stops_what_has_not_started() -> TestResult {
    let alice = Alice::start(Options {
        args: ["--task-per-origin", "1"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await?;
    let (api, origin, token) = (&alice.api, &alice.origin, alice.token.clone());
    let urls: Vec<String> = (0..10)
        .map(|i| url(HOST, &format!("/slow/{i}.bin")))
        .collect();
    for i in 0..10 {
        origin.set(
            &format!("/slow/{i}.bin"),
            Behavior::Slow(Duration::from_millis(800), Bytes::from_static(b"slow")),
        );
    }
    let req_id = api.prefetch_ok(&token, &urls).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = api
        .call(
            Method::DELETE,
            &format!("/cdn_api/prefetch/{req_id}"),
            Some(&token),
            None,
        )
        .await?;
    reply.expect(200, 0)?;
    let cancelled = reply.get("cancelled_pairs").as_i64().unwrap_or(0);
    assert!((8..=9).contains(&cancelled), "{}", reply.text());

    let task = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "cancelled", "{task}");
    assert_eq!(task["pairs_cancelled"], cancelled);
    assert_eq!(task["progress"], 100.0);
    let started = 10 - cancelled as usize;
    let fetched: usize = (0..10)
        .map(|i| origin.count(&format!("/slow/{i}.bin")))
        .sum();
    assert_eq!(fetched, started, "cancelled pairs never reach the origin");
    let statuses: Vec<&str> = task["urls"]
        .as_array()
        .map(|urls| urls.iter().filter_map(|u| u["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        statuses.iter().filter(|s| **s == "cancelled").count(),
        cancelled as usize
    );

    // Cancelling again, or a finished task, changes nothing; an unknown reqId is 3001.
    let again = api
        .call(
            Method::DELETE,
            &format!("/cdn_api/prefetch/{req_id}"),
            Some(&token),
            None,
        )
        .await?;
    again.expect(200, 0)?;
    assert_eq!(again.get("cancelled_pairs"), &json!(0));
    assert_eq!(again.get("status"), "cancelled");
    api.call(
        Method::DELETE,
        "/cdn_api/refresh/6f1e1f7e-0000-4000-8000-000000000000",
        Some(&token),
        None,
    )
    .await?
    .expect(404, 3001)?;
    api.call(
        Method::DELETE,
        &format!("/cdn_api/refresh/{req_id}"),
        Some(&token),
        None,
    )
    .await?
    .expect(404, 3001)?;
    Ok(())
}

#[tokio::test]
async fn a_retried_submission_with_its_idempotency_key_creates_nothing_new() -> TestResult {
    let alice = Alice::start(Options::default()).await?;
    let (api, origin, token) = (&alice.api, &alice.origin, alice.token.clone());
    origin.set("/i.bin", Behavior::Body(Bytes::from_static(b"idempotent")));
    let submit = |key: &'static str, body: Value| {
        let api = api.clone();
        let token = token.clone();
        async move {
            let body = serde_json::to_vec(&body)?;
            let response = reqwest::Client::new()
                .post(format!("{}/cdn_api/prefetch", api.base))
                .header("X-Auth-Token", token)
                .header("Idempotency-Key", key)
                .body(body)
                .send()
                .await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await?;
            Ok::<_, Error>((status, body["zt_api"].clone()))
        }
    };
    let first = submit("release-42", json!({"urls": [url(HOST, "/i.bin")]})).await?;
    assert_eq!(first.0, 200, "{}", first.1);
    // The same request again: the same task, nothing new.
    let again = submit("release-42", json!({"urls": [url(HOST, "/i.bin")]})).await?;
    assert_eq!(
        (again.0, again.1["reqId"].clone()),
        (200, first.1["reqId"].clone())
    );
    let other = submit("release-42", json!({"urls": [url(HOST, "/other.bin")]})).await?;
    assert_eq!(
        (other.0, other.1["ret"].clone()),
        (409, json!(2007)),
        "{}",
        other.1
    );
    assert!(other.1["msg"]
        .as_str()
        .unwrap_or("")
        .contains("Idempotency-Key"));

    let req_id = first.1["reqId"].as_str().unwrap_or("").to_string();
    api.wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    let listed = api
        .call(Method::GET, "/cdn_api/prefetch", Some(&token), None)
        .await?;
    assert_eq!(listed.get("tasks").as_array().map(Vec::len), Some(1));
    let quota = api
        .call(Method::GET, "/cdn_api/quota", Some(&token), None)
        .await?;
    assert_eq!(
        quota.body["zt_api"]["quota"]["prefetch_urls_per_day"]["used"],
        1
    );
    assert_eq!(origin.count("/i.bin"), 1);
    Ok(())
}

#[tokio::test]
async fn task_lists_filter_by_type_status_domain_and_time_and_page_newest_first() -> TestResult {
    let alice = Alice::start(Options::default()).await?;
    let (api, origin, token) = (&alice.api, &alice.origin, alice.token.clone());
    let admin = api.admin().await?;
    api.register_domain(&admin, "cdn.example.com", &origin.url(), "alice")
        .await?;
    origin.set("/l.bin", Behavior::Body(Bytes::from_static(b"l")));
    let mut ids = Vec::new();
    for host in [HOST, "cdn.example.com", HOST] {
        ids.push(api.prefetch_ok(&token, &[url(host, "/l.bin")]).await?);
    }
    let refreshed = refresh(api, &token, json!({"urls": [url(HOST, "/l.bin")]})).await?;
    let middle = rfc3339_now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let late = refresh(
        api,
        &token,
        json!({"urls": [url("cdn.example.com", "/l.bin")]}),
    )
    .await?;
    for id in &ids {
        api.wait_final(&token, id, Duration::from_secs(30)).await?;
    }
    let list = |query: String| {
        let api = api.clone();
        let token = token.clone();
        async move {
            let reply = api
                .call(
                    Method::GET,
                    &format!("/cdn_api/tasks{query}"),
                    Some(&token),
                    None,
                )
                .await?;
            reply.expect(200, 0)?;
            let ids: Vec<String> = reply
                .get("tasks")
                .as_array()
                .map(|tasks| {
                    tasks
                        .iter()
                        .filter_map(|t| t["reqId"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            Ok::<_, Error>((ids, reply.get("next_before").clone()))
        }
    };
    let (all, _) = list("".to_string()).await?;
    assert_eq!(all.len(), 5);
    assert_eq!(all[0], late["reqId"].as_str().unwrap_or(""), "newest first");
    let (refreshes, _) = list("?type=refresh".to_string()).await?;
    assert_eq!(refreshes.len(), 2);
    let (on_cdn, _) = list("?domain=cdn.example.com".to_string()).await?;
    assert_eq!(on_cdn.len(), 2);
    let (prefetches_on_game, _) =
        list("?type=prefetch&domain=game.example.com&status=done".to_string()).await?;
    assert_eq!(prefetches_on_game, vec![ids[2].clone(), ids[0].clone()]);
    let since = format!("?since={middle}");
    let (recent, _) = list(since).await?;
    assert_eq!(
        recent,
        vec![late["reqId"].as_str().unwrap_or("").to_string()]
    );
    let until = format!("?until={middle}&type=refresh");
    let (older, _) = list(until).await?;
    assert_eq!(
        older,
        vec![refreshed["reqId"].as_str().unwrap_or("").to_string()]
    );
    // Cursor pagination: two pages of two, then the last one.
    let (page1, next) = list("?limit=2".to_string()).await?;
    assert_eq!(page1, all[..2].to_vec());
    let cursor = format!("?limit=2&before={}", next.as_str().unwrap_or(""));
    let (page2, _) = list(cursor).await?;
    assert_eq!(page2, all[2..4].to_vec());
    let bad = api
        .call(
            Method::GET,
            "/cdn_api/tasks?since=yesterday",
            Some(&token),
            None,
        )
        .await?;
    bad.expect(400, 2002)?;
    Ok(())
}

/// Now as RFC 3339 with milliseconds.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    precache_model::time::rfc3339_millis(now)
}

#[tokio::test]
async fn refresh_then_warm_purges_everywhere_first_then_prefetches_the_new_version() -> TestResult {
    let alice = Alice::start(Options::default()).await?;
    let (api, origin, token) = (&alice.api, &alice.origin, alice.token.clone());
    origin.set(
        "/patch.pak",
        Behavior::Body(Bytes::from_static(b"version 1")),
    );
    assert_eq!(x_cache(api, "/patch.pak").await?, "MISS");
    origin.set(
        "/patch.pak",
        Behavior::Body(Bytes::from_static(b"version two")),
    );

    let task = refresh(
        api,
        &token,
        json!({"urls": [url(HOST, "/patch.pak")], "prefetch": true}),
    )
    .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["phases"]["refresh"]["status"], "done", "{task}");
    assert_eq!(task["phases"]["warm"]["status"], "done", "{task}");
    assert_eq!(task["phases"]["warm"]["pairs_success"], 1);
    let urls = task["urls"].as_array().cloned().unwrap_or_default();
    assert_eq!(urls.len(), 2, "{task}");
    assert_eq!(
        (urls[0]["phase"].clone(), urls[1]["phase"].clone()),
        (json!("refresh"), json!("warm"))
    );
    assert_eq!(urls[1]["bytes"], 11);
    // The warm started only after the purge was confirmed.
    let purged_at = urls[0]["edges"][0]["finished_at"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let warm_started = urls[1]["edges"][0]["started_at"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(warm_started >= purged_at, "{purged_at} then {warm_started}");

    let response = api.edge_get(HOST, "/patch.pak").await?;
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(&response.bytes().await?[..], b"version two");
    assert_eq!(origin.count("/patch.pak"), 2, "the first miss and the warm");
    let quota = api
        .call(Method::GET, "/cdn_api/quota", Some(&token), None)
        .await?;
    assert_eq!(
        quota.body["zt_api"]["quota"]["prefetch_urls_per_day"]["used"],
        1
    );
    assert_eq!(
        quota.body["zt_api"]["quota"]["refresh_urls_per_day"]["used"],
        1
    );

    let reply = api
        .call(
            Method::POST,
            "/cdn_api/refresh",
            Some(&token),
            Some(json!({"dirs": [url(HOST, "/d/")], "prefetch": true})),
        )
        .await?;
    reply.expect(400, 2002)?;
    Ok(())
}

/// The release step "refresh what changed, then prefetch it", submitted back to back as two
/// tasks: the prefetch waits for the refresh's purge of each URL, so the new copies are on the
/// edge when both are `done` (a purge landing after the fill would leave the edge cold).
#[tokio::test]
async fn a_prefetch_submitted_right_after_a_refresh_of_the_same_urls_keeps_its_copies() -> TestResult
{
    let alice = Alice::start(Options::default()).await?;
    let (api, origin, token) = (&alice.api, &alice.origin, alice.token.clone());
    let paths: Vec<String> = (0..10).map(|n| format!("/release/{n}.pak")).collect();
    let urls: Vec<String> = paths.iter().map(|path| url(HOST, path)).collect();
    for round in 0..4u8 {
        for path in &paths {
            origin.set(path, Behavior::Body(Bytes::from(vec![round; 2000])));
        }
        // Every other round refreshes the directory instead of the files.
        let body = if round % 2 == 0 {
            json!({"urls": urls})
        } else {
            json!({"dirs": [url(HOST, "/release/")]})
        };
        let refresh_id = api.refresh_ok(&token, body).await?;
        let prefetch_id = api.prefetch_ok(&token, &urls).await?;
        let prefetched = api
            .wait_final(&token, &prefetch_id, Duration::from_secs(60))
            .await?;
        assert_eq!(prefetched["status"], "done", "round {round}: {prefetched}");
        let refreshed = api
            .wait_final_of("refresh", &token, &refresh_id, Duration::from_secs(60))
            .await?;
        assert_eq!(refreshed["status"], "done", "round {round}: {refreshed}");
        let fetched = origin.total();
        for path in &paths {
            let response = api.edge_get(HOST, path).await?;
            let cache = response.headers().get("x-cache").cloned();
            let body = response.bytes().await?;
            assert_eq!(
                cache.as_ref().map(|v| v.as_bytes()),
                Some(&b"HIT"[..]),
                "round {round}: {path}"
            );
            assert_eq!(
                body.first(),
                Some(&round),
                "round {round}: {path} is the new version"
            );
        }
        assert_eq!(origin.total(), fetched, "round {round}: no origin request");
    }
    Ok(())
}

#[tokio::test]
async fn over_the_rate_limit_requests_get_4001_with_retry_after_and_consume_nothing() -> TestResult
{
    let alice = Alice::start(Options {
        args: ["--rate-limit-per-account", "2"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await?;
    let (api, origin, token) = (&alice.api, &alice.origin, alice.token.clone());
    origin.set("/r.bin", Behavior::Body(Bytes::from_static(b"r")));
    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..12 {
        let reply = api
            .prefetch(&token, &[url(HOST, &format!("/r.bin?{i}"))])
            .await?;
        match reply.status {
            200 => accepted += 1,
            429 => {
                reply.expect(429, 4001)?;
                assert!(
                    reply.headers.contains_key("retry-after"),
                    "{}",
                    reply.text()
                );
                assert!(reply.msg().contains("rate limit"), "{}", reply.msg());
                limited += 1;
            }
            other => return Err(format!("unexpected HTTP {other}: {}", reply.text()).into()),
        }
    }
    assert!(
        limited > 0 && accepted >= 3,
        "accepted {accepted}, limited {limited}"
    );
    // Admins are never limited.
    let admin = api.admin().await?;
    for _ in 0..10 {
        api.call(Method::GET, "/cdn_api/edges", Some(&admin), None)
            .await?
            .expect(200, 0)?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let quota = api
        .call(Method::GET, "/cdn_api/quota", Some(&token), None)
        .await?;
    quota.expect(200, 0)?;
    assert_eq!(
        quota.body["zt_api"]["quota"]["prefetch_urls_per_day"]["used"], accepted,
        "refused requests consume nothing"
    );
    assert_eq!(
        quota.body["zt_api"]["quota"]["requests_per_second"]["limit"],
        2
    );

    // An admin can give an account its own rate: 0 is no limit. (A token picks a change up at
    // its next grant lookup: bob's first request here; a token in use within 5 s.)
    let bob = api.create_user(&admin, "bob").await?;
    api.call(
        Method::PUT,
        "/cdn_api/quota/bob",
        Some(&admin),
        Some(json!({"requests_per_second": 0})),
    )
    .await?
    .expect(200, 0)?;
    for _ in 0..20 {
        api.call(Method::GET, "/cdn_api/quota", Some(&bob), None)
            .await?
            .expect(200, 0)?;
    }
    Ok(())
}
