//! The `alibaba` backend against a stand-in of Alibaba Cloud CDN's API on loopback (see
//! support/vendor_alibaba.rs): signed calls within the per-call limits, throttling waited out,
//! tasks polled until complete, the vendor's refusals on the pairs they concern, and the
//! AccessKey secret never answered back or logged.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::url;
use crate::support::vendor_alibaba::{AlibabaCall, AlibabaStandIn};
use crate::support::vendor_fixture::{pairs, Fixture};
use crate::support::TestResult;

const HOST: &str = "patch.example.com";
const KEY_ID: &str = "LTAI5tExampleKeyId0001";
const SECRET: &str = "aliyun-secret-c2VjcmV0LXRlc3Q-9b2e";

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Fixture {
    async fn alibaba_backend(
        &mut self,
        settings: Value,
        credentials: Value,
    ) -> Result<Value, Error> {
        let created = self
            .admin_call(
                Method::POST,
                "/cdn_api/backends",
                Some(json!({"name": "ali", "kind": "alibaba",
                            "settings": settings, "credentials": credentials})),
            )
            .await?;
        created.expect(201, 0)?;
        Ok(created.get("backend").clone())
    }
}

fn calls_of(calls: &[AlibabaCall], action: &str) -> Vec<AlibabaCall> {
    calls
        .iter()
        .filter(|call| call.action == action)
        .cloned()
        .collect()
}

/// How many times each URL reached the stand-in in accepted calls of `action`.
fn accepted_paths(calls: &[AlibabaCall], action: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for call in calls_of(calls, action) {
        if call.status == 200 {
            for path in call.object_paths() {
                *seen.entry(path).or_insert(0) += 1;
            }
        }
    }
    seen
}

#[tokio::test]
async fn alibaba_refreshes_and_prefetches_signed_polls_until_complete_and_keeps_its_secret(
) -> TestResult {
    let mut fixture = Fixture::start().await?;
    let vendor = AlibabaStandIn::start(KEY_ID, SECRET).await?;
    let backend = fixture
        .alibaba_backend(
            json!({"endpoint": vendor.endpoint(), "poll_interval": 1}),
            json!({"access_key_id": KEY_ID, "access_key_secret": SECRET}),
        )
        .await?;
    assert_eq!(
        backend["credentials"],
        json!({"access_key_id": "…0001", "access_key_secret": "…9b2e"}),
        "{backend}"
    );
    assert_eq!(backend["targets"], json!([vendor.endpoint()]), "{backend}");
    assert_eq!(backend["capabilities"]["prefetch"], true, "{backend}");
    assert_eq!(backend["capabilities"]["confirmed"], true, "{backend}");
    assert_eq!(backend["capabilities"]["invalidate"], false, "{backend}");
    fixture
        .admin_call(
            Method::PUT,
            &format!("/cdn_api/domains/{HOST}/backends"),
            Some(json!({"backends": ["ali"]})),
        )
        .await?
        .expect(200, 0)?;
    let check = fixture
        .admin_call(Method::POST, "/cdn_api/backends/ali/check", None)
        .await?;
    assert_eq!(check.get("ok"), &json!(true), "{}", check.text());
    assert!(check.text().contains("URL refreshes"), "{}", check.text());

    // 100 URLs: one call (at most 1,000 per call), its first try throttled and signed again;
    // each task polled at most 10 ids at a time, in progress at first, then complete.
    vendor.throttle_next(1);
    let urls: Vec<String> = (0..100)
        .map(|n| url(HOST, &format!("/p/{n}.pak")))
        .collect();
    let task = fixture.task("refresh", json!({"urls": urls})).await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    for pair in pairs(&task) {
        assert_eq!(pair["backend"], "ali", "{pair}");
        assert_eq!(pair["status"], "success", "{pair}");
        assert_eq!(pair["confirmed"], true, "polled until complete: {pair}");
        assert_eq!(pair["was_cached"], Value::Null, "{pair}");
    }
    let calls = vendor.calls();
    let refreshes = calls_of(&calls, "RefreshObjectCaches");
    assert_eq!(
        refreshes.first().map(|call| call.code.as_str()),
        Some("Throttling.User"),
        "{refreshes:?}"
    );
    assert!(
        refreshes.len() >= 2,
        "the throttled call sent again: {refreshes:?}"
    );
    assert!(
        calls
            .iter()
            .all(|call| call.code != "SignatureDoesNotMatch" && call.code != "SignatureNonceUsed"),
        "every call is signed, with a new nonce: {calls:?}"
    );
    assert!(
        refreshes
            .iter()
            .all(
                |call| call.params.get("ObjectType").map(String::as_str) == Some("File")
                    && call.object_paths().len() <= 1_000
            ),
        "{refreshes:?}"
    );
    let refreshed = accepted_paths(&calls, "RefreshObjectCaches");
    assert_eq!(
        refreshed.keys().cloned().collect::<Vec<_>>(),
        {
            let mut sorted = urls.clone();
            sorted.sort();
            sorted
        },
        "every URL"
    );
    assert!(refreshed.values().all(|n| *n == 1), "exactly once");
    let polls = calls_of(&calls, "DescribeRefreshTaskById");
    assert!(polls.len() >= 20, "two rounds of 10 polls: {}", polls.len());
    assert!(polls.iter().all(|call| call
        .params
        .get("TaskId")
        .is_some_and(|ids| ids.split(',').count() <= 10)));

    // A directory is `ObjectType=Directory`; a URL whose task fails ends failed with
    // Alibaba's description; a URL Alibaba refuses fails alone with its words.
    let failing = url(HOST, "/failing.pak");
    let refused = url(HOST, "/refused.pak");
    vendor.fail(&failing);
    vendor.refuse(&refused);
    let task = fixture
        .task(
            "refresh",
            json!({"urls": [url(HOST, "/fine.pak"), failing, refused, url(HOST, "/fine2.pak")],
                   "dirs": [url(HOST, "/static/")]}),
        )
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    let by_url: BTreeMap<String, Value> = task["urls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let url = entry["url"]
                .as_str()
                .or(entry["dir"].as_str())
                .unwrap_or("")
                .to_string();
            (url, entry["edges"][0].clone())
        })
        .collect();
    let pair_of = |url: &str| by_url.get(url).cloned().unwrap_or(Value::Null);
    assert_eq!(
        pair_of(&url(HOST, "/fine.pak"))["status"],
        "success",
        "{task}"
    );
    assert_eq!(
        pair_of(&url(HOST, "/fine2.pak"))["status"],
        "success",
        "{task}"
    );
    let directory = pair_of(&url(HOST, "/static/"));
    assert_eq!(directory["status"], "success", "{task}");
    assert_eq!(directory["confirmed"], true, "{task}");
    let failed = pair_of(&failing);
    assert_eq!(failed["status"], "failed", "{task}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("Origin Return StatusCode 5XX")),
        "{task}"
    );
    let refused_pair = pair_of(&refused);
    assert_eq!(refused_pair["status"], "failed", "{task}");
    assert!(
        refused_pair["error"]
            .as_str()
            .is_some_and(|e| e.contains("InvalidObjectPath.Malformed")),
        "{task}"
    );
    let calls = vendor.calls();
    let directories: Vec<AlibabaCall> = calls_of(&calls, "RefreshObjectCaches")
        .into_iter()
        .filter(|call| call.params.get("ObjectType").map(String::as_str) == Some("Directory"))
        .collect();
    assert_eq!(directories.len(), 1, "{directories:?}");
    assert_eq!(directories[0].object_paths(), vec![url(HOST, "/static/")]);

    // Prefetch: PushObjectCache, at most 100 per call, polled until complete.
    let prefetched: Vec<String> = (0..100)
        .map(|n| url(HOST, &format!("/w/{n}.pak")))
        .collect();
    let task = fixture
        .task("prefetch", json!({"urls": prefetched}))
        .await?;
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    assert!(
        pairs(&task).iter().all(|pair| pair["note"]
            .as_str()
            .is_some_and(|note| note.starts_with("prefetch task") && note.ends_with("complete"))),
        "{task}"
    );
    let calls = vendor.calls();
    let pushes = calls_of(&calls, "PushObjectCache");
    assert!(
        pushes.iter().all(|call| call.object_paths().len() <= 100),
        "{pushes:?}"
    );
    let pushed = accepted_paths(&calls, "PushObjectCache");
    assert_eq!(pushed.len(), 100);
    assert!(pushed.values().all(|n| *n == 1), "exactly once");

    // Invalidation is not offered: the refresh deletes, and the pair says so.
    let task = fixture
        .task(
            "refresh",
            json!({"urls": [url(HOST, "/p/0.pak")], "mode": "invalidate"}),
        )
        .await?;
    assert_eq!(pairs(&task)[0]["status"], "success", "{task}");
    assert!(task.to_string().contains("cannot invalidate"), "{task}");

    // No dry run: unsupported, before any call.
    let before = vendor.calls().len();
    let task = fixture
        .task(
            "refresh",
            json!({"urls": [url(HOST, "/p/0.pak")], "dry_run": true}),
        )
        .await?;
    assert_eq!(pairs(&task)[0]["status"], "unsupported", "{task}");
    assert_eq!(vendor.calls().len(), before);

    // The day's quota spent: the pairs fail with Alibaba's words, and are not retried.
    vendor.url_refreshes_left(0);
    let before = calls_of(&vendor.calls(), "RefreshObjectCaches").len();
    let task = fixture
        .task(
            "refresh",
            json!({"urls": [url(HOST, "/q/1.pak"), url(HOST, "/q/2.pak")]}),
        )
        .await?;
    for pair in pairs(&task) {
        assert_eq!(pair["status"], "failed", "{task}");
        assert!(
            pair["error"]
                .as_str()
                .is_some_and(|e| e.contains("QuotaExceeded.Refresh")
                    && e.contains("exceeded the prescribed refresh limits")),
            "{task}"
        );
    }
    assert_eq!(
        calls_of(&vendor.calls(), "RefreshObjectCaches").len(),
        before + 1,
        "one call, not retried"
    );

    // The secret is in no answer and no log line, nor sent: only its signatures are.
    fixture
        .admin_call(Method::GET, "/cdn_api/backends", None)
        .await?
        .expect(200, 0)?;
    for answer in &fixture.answers {
        assert!(
            !answer.contains(SECRET),
            "an answer shows the secret: {answer}"
        );
    }
    assert!(
        !fixture.server.log().contains(SECRET),
        "the log shows the secret"
    );
    assert!(vendor
        .calls()
        .iter()
        .all(|call| call.params.values().all(|value| !value.contains(SECRET))));
    Ok(())
}

#[tokio::test]
async fn a_wrong_alibaba_access_key_fails_its_pairs_and_its_check() -> TestResult {
    let mut fixture = Fixture::start().await?;
    let vendor = AlibabaStandIn::start(KEY_ID, SECRET).await?;
    // Missing or misspelt settings and credentials are refused up front.
    for body in [
        json!({"name": "x", "kind": "alibaba", "credentials": {"access_key_id": KEY_ID}}),
        json!({"name": "x", "kind": "alibaba",
               "credentials": {"access_key_id": KEY_ID, "secret_access_key": SECRET}}),
        json!({"name": "x", "kind": "alibaba", "settings": {"poll_interval": 0},
               "credentials": {"access_key_id": KEY_ID, "access_key_secret": SECRET}}),
        json!({"name": "x", "kind": "alibaba", "settings": {"region": "cn-hangzhou"},
               "credentials": {"access_key_id": KEY_ID, "access_key_secret": SECRET}}),
    ] {
        let reply = fixture
            .admin_call(Method::POST, "/cdn_api/backends", Some(body.clone()))
            .await?;
        assert_eq!(reply.ret(), 2002, "{body}: {}", reply.text());
    }
    fixture
        .alibaba_backend(
            json!({"endpoint": vendor.endpoint(), "poll_interval": 1}),
            json!({"access_key_id": KEY_ID, "access_key_secret": "not-the-secret-0000"}),
        )
        .await?;
    fixture
        .admin_call(
            Method::PUT,
            &format!("/cdn_api/domains/{HOST}/backends"),
            Some(json!({"backends": ["edges", "ali"]})),
        )
        .await?
        .expect(200, 0)?;
    let task = fixture
        .task("refresh", json!({"urls": [url(HOST, "/a.pak")]}))
        .await?;
    let ali: Vec<Value> = pairs(&task)
        .into_iter()
        .filter(|pair| pair["backend"] == "ali")
        .collect();
    assert_eq!(ali.len(), 1, "{task}");
    assert_eq!(ali[0]["status"], "failed", "{task}");
    assert!(
        ali[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("SignatureDoesNotMatch")),
        "{task}"
    );
    assert_eq!(
        task["success_rate"],
        json!(50.0),
        "the edge's pair succeeded: {task}"
    );
    let check = fixture
        .admin_call(Method::POST, "/cdn_api/backends/ali/check", None)
        .await?;
    assert_eq!(check.get("ok"), &json!(false), "{}", check.text());
    assert!(
        check.text().contains("SignatureDoesNotMatch"),
        "{}",
        check.text()
    );
    assert!(
        !fixture.server.log().contains("not-the-secret-0000"),
        "the log shows the secret"
    );
    Ok(())
}

#[tokio::test]
async fn an_alibaba_task_never_done_fails_its_pair_after_the_poll_timeout() -> TestResult {
    let mut fixture = Fixture::start().await?;
    let vendor = AlibabaStandIn::start(KEY_ID, SECRET).await?;
    fixture
        .alibaba_backend(
            json!({"endpoint": vendor.endpoint(), "poll_interval": 1, "poll_timeout": 3}),
            json!({"access_key_id": KEY_ID, "access_key_secret": SECRET}),
        )
        .await?;
    fixture
        .admin_call(
            Method::PUT,
            &format!("/cdn_api/domains/{HOST}/backends"),
            Some(json!({"backends": ["ali"]})),
        )
        .await?
        .expect(200, 0)?;
    let stalled = url(HOST, "/stalled.pak");
    vendor.stall(&stalled);
    let task = fixture
        .task(
            "refresh",
            json!({"urls": [url(HOST, "/done.pak"), stalled.clone()]}),
        )
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(50.0), "{task}");
    let stalled_pair = pairs(&task)
        .into_iter()
        .find(|pair| pair["status"] == "failed")
        .unwrap_or(Value::Null);
    let error = stalled_pair["error"].as_str().unwrap_or("");
    assert!(
        error.contains("not done after 3 s") && error.contains("Refreshing 50%"),
        "{task}"
    );
    // Sent once: a refresh that may still complete at Alibaba is not sent again.
    assert_eq!(
        accepted_paths(&vendor.calls(), "RefreshObjectCaches").get(&stalled),
        Some(&1)
    );
    // The secret is not in the database file either.
    for file in ["precache.db", "precache.db-wal"] {
        if let Ok(bytes) = std::fs::read(fixture.dir.path().join(file)) {
            assert!(
                !bytes
                    .windows(SECRET.len())
                    .any(|window| window == SECRET.as_bytes()),
                "{file} holds the secret in clear"
            );
        }
    }
    Ok(())
}
