//! The `tencent` backend against a stand-in of Tencent Cloud's CDN API on loopback (see
//! support/vendor_tencent.rs): signed calls, batches within the documented limits, tasks polled
//! until done, Tencent's errors as the pairs' words, and the key never shown or logged.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::url;
use crate::support::vendor_fixture::Fixture;
use crate::support::vendor_tencent::TencentStandIn;
use crate::support::TestResult;

const HOST: &str = "patch.example.com";
const SECRET_ID: &str = "AKIDtencentTESTid0000000000000000000";
const SECRET_KEY: &str = "tc-key-dGVuY2VudC10ZXN0LWtleQ-9c41";

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Fixture {
    /// Registers backend `tc` on the stand-in with this key (and `poll_timeout` when given)
    /// and makes it the domain's.
    async fn tencent_backend(
        &mut self,
        vendor: &TencentStandIn,
        secret_key: &str,
        backends: Value,
        poll_timeout: Option<u64>,
    ) -> Result<Value, Error> {
        let mut settings =
            json!({"endpoint": vendor.endpoint(), "poll_interval": 1, "area": "global"});
        if let Some(seconds) = poll_timeout {
            settings["poll_timeout"] = json!(seconds);
        }
        let created = self
            .admin_call(
                Method::POST,
                "/cdn_api/backends",
                Some(
                    json!({"name": "tc", "kind": "tencent", "settings": settings,
                            "credentials": {"secret_id": SECRET_ID, "secret_key": secret_key}}),
                ),
            )
            .await?;
        created.expect(201, 0)?;
        self.admin_call(
            Method::PUT,
            &format!("/cdn_api/domains/{HOST}/backends"),
            Some(json!({ "backends": backends })),
        )
        .await?
        .expect(200, 0)?;
        Ok(created.get("backend").clone())
    }
}

/// Each URL's pair on backend `tc`.
fn tc_pairs(task: &Value) -> BTreeMap<String, Value> {
    task["urls"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|entry| {
            let url = entry["url"].as_str().unwrap_or("").to_string();
            entry["edges"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|pair| pair["backend"] == "tc")
                .map(move |pair| (url.clone(), pair))
        })
        .collect()
}

/// The items of every accepted call of `action`, one list per call.
fn accepted(vendor: &TencentStandIn, action: &str, field: &str) -> Vec<Vec<String>> {
    vendor
        .calls()
        .into_iter()
        .filter(|call| call.action == action && call.error.is_none())
        .map(|call| {
            call.body[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn tencent_refreshes_and_prefetches_in_signed_batches_polled_until_done() -> TestResult {
    let mut fixture = Fixture::start().await?;
    let vendor = TencentStandIn::start(SECRET_ID, SECRET_KEY).await?;
    let backend = fixture
        .tencent_backend(&vendor, SECRET_KEY, json!(["tc"]), None)
        .await?;
    assert_eq!(
        backend["credentials"],
        json!({"secret_id": "…0000", "secret_key": "…9c41"}),
        "{backend}"
    );
    assert_eq!(backend["targets"], json!([vendor.endpoint()]), "{backend}");
    assert_eq!(backend["capabilities"]["prefetch"], true, "{backend}");
    assert_eq!(backend["capabilities"]["confirmed"], true, "{backend}");
    let check = fixture
        .admin_call(Method::POST, "/cdn_api/backends/tc/check", None)
        .await?;
    assert_eq!(check.get("ok"), &json!(true), "{}", check.text());

    // 60 URLs, the first call rate limited and sent again; one URL's task fails.
    vendor.rate_limit_next(1);
    let urls: Vec<String> = (0..60).map(|n| url(HOST, &format!("/p/{n}.pak"))).collect();
    let failing = urls[7].clone();
    vendor.fail(&failing);
    let task = fixture.task("refresh", json!({"urls": urls})).await?;
    let pairs = tc_pairs(&task);
    assert_eq!(pairs.len(), 60, "{task}");
    for (url, pair) in &pairs {
        if *url == failing {
            assert_eq!(pair["status"], "failed", "{pair}");
            assert!(
                pair["error"].as_str().is_some_and(|e| e.contains("fail")),
                "{pair}"
            );
        } else {
            assert_eq!(pair["status"], "success", "{pair}");
            assert_eq!(pair["confirmed"], true, "polled until done: {pair}");
            assert_eq!(pair["was_cached"], Value::Null, "{pair}");
            assert!(
                pair["note"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("done as tencent task")),
                "{pair}"
            );
        }
    }
    let calls = vendor.calls();
    assert_eq!(
        calls
            .iter()
            .find(|call| call.action == "PurgeUrlsCache")
            .and_then(|call| call.error.as_deref()),
        Some("RequestLimitExceeded"),
        "the first call was rate limited, then sent again: {calls:?}"
    );
    let batches = accepted(&vendor, "PurgeUrlsCache", "Urls");
    assert!(!batches.is_empty(), "{calls:?}");
    assert!(
        batches.iter().all(|batch| batch.len() <= 1_000),
        "{batches:?}"
    );
    let mut sent: Vec<String> = batches.concat();
    sent.sort();
    let mut expected = urls.clone();
    expected.sort();
    assert_eq!(sent, expected, "every URL exactly once");
    assert!(
        calls.iter().any(|call| call.action == "DescribePurgeTasks"),
        "{calls:?}"
    );
    assert!(calls
        .iter()
        .all(|call| call.error.as_deref() != Some("AuthFailure.SignatureFailure")));
    assert_eq!(
        vendor.signatures_checked(),
        calls.len(),
        "every call signed"
    );
    assert!(calls.iter().all(|call| call
        .authorization
        .starts_with(&format!("TC3-HMAC-SHA256 Credential={SECRET_ID}/"))
        && call
            .authorization
            .contains("/cdn/tc3_request, SignedHeaders=content-type;host, ")));

    // A directory: PurgePathCache deleting; asked to invalidate, the note says it deleted.
    let task = fixture
        .task(
            "refresh",
            json!({"dirs": [url(HOST, "/static/")], "mode": "invalidate"}),
        )
        .await?;
    let pair = tc_pairs(&task).into_values().next().unwrap_or_default();
    assert_eq!(pair["status"], "success", "{task}");
    assert_eq!(pair["confirmed"], true, "{task}");
    assert!(
        pair["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("deleted: tencent cannot invalidate")),
        "{task}"
    );
    let path_call = vendor
        .calls()
        .into_iter()
        .rfind(|call| call.action == "PurgePathCache")
        .map(|call| call.body);
    assert_eq!(
        path_call,
        Some(json!({"Paths": [url(HOST, "/static/")], "FlushType": "delete"}))
    );

    // A partly refused call fails only the refused URL, with Tencent's words.
    let refused = url(HOST, "/refused.pak");
    vendor.refuse(&refused);
    let task = fixture
        .task(
            "refresh",
            json!({"urls": [url(HOST, "/fine.pak"), refused.clone()]}),
        )
        .await?;
    assert_eq!(task["success_rate"], json!(50.0), "{task}");
    let pairs = tc_pairs(&task);
    assert_eq!(
        pairs[&url(HOST, "/fine.pak")]["status"],
        "success",
        "{task}"
    );
    assert!(
        pairs[&refused]["error"]
            .as_str()
            .is_some_and(|e| e.contains("ResourceNotFound.CdnHostNotExists")),
        "{task}"
    );

    // A dry run is not something Tencent offers: unsupported, left out of the rate.
    let task = fixture
        .task(
            "refresh",
            json!({"dirs": [url(HOST, "/dir/")], "dry_run": true}),
        )
        .await?;
    let pair = tc_pairs(&task).into_values().next().unwrap_or_default();
    assert_eq!(pair["status"], "unsupported", "{task}");

    // A prefetch is a push, to the configured area, polled until done.
    let pushed: Vec<String> = (0..3).map(|n| url(HOST, &format!("/w/{n}.pak"))).collect();
    let task = fixture.task("prefetch", json!({"urls": pushed})).await?;
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    assert!(
        tc_pairs(&task)
            .values()
            .all(|pair| pair["status"] == "success"),
        "{task}"
    );
    let push_calls: Vec<Value> = vendor
        .calls()
        .into_iter()
        .filter(|call| call.action == "PushUrlsCache")
        .map(|call| call.body)
        .collect();
    assert!(
        push_calls.iter().all(|body| body["Area"] == "global"),
        "{push_calls:?}"
    );
    assert!(
        vendor
            .calls()
            .iter()
            .any(|call| call.action == "DescribePushTasks"),
        "polled"
    );

    // Today's push quota spent: the pairs fail with Tencent's words, and are not sent again.
    vendor.set_push_quota(0);
    let before = vendor.calls().len();
    let task = fixture
        .task("prefetch", json!({"urls": [url(HOST, "/w/late.pak")]}))
        .await?;
    let pair = tc_pairs(&task).into_values().next().unwrap_or_default();
    assert_eq!(pair["status"], "failed", "{task}");
    assert!(
        pair["error"]
            .as_str()
            .is_some_and(|e| e.contains("LimitExceeded.CdnPushExceedDayLimit")),
        "{task}"
    );
    assert_eq!(vendor.calls().len() - before, 1, "not retried");

    // The key is in no answer and no log line.
    fixture
        .admin_call(Method::GET, "/cdn_api/backends", None)
        .await?
        .expect(200, 0)?;
    for answer in &fixture.answers {
        assert!(
            !answer.contains(SECRET_KEY),
            "an answer shows the key: {answer}"
        );
    }
    assert!(
        !fixture.server.log().contains(SECRET_KEY),
        "the log shows the key"
    );
    for file in ["precache.db", "precache.db-wal"] {
        if let Ok(bytes) = std::fs::read(fixture.dir.path().join(file)) {
            assert!(
                !bytes
                    .windows(SECRET_KEY.len())
                    .any(|window| window == SECRET_KEY.as_bytes()),
                "{file} holds the key in clear"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_wrong_tencent_key_fails_its_pairs_and_its_check() -> TestResult {
    let mut fixture = Fixture::start().await?;
    let vendor = TencentStandIn::start(SECRET_ID, SECRET_KEY).await?;
    // Missing or misspelt settings and credentials are refused up front.
    for body in [
        json!({"name": "x", "kind": "tencent", "credentials": {"secret_id": SECRET_ID}}),
        json!({"name": "x", "kind": "tencent",
               "credentials": {"secret_id": SECRET_ID, "secret_key": SECRET_KEY, "token": "t"}}),
        json!({"name": "x", "kind": "tencent", "settings": {"region": "ap-guangzhou"},
               "credentials": {"secret_id": SECRET_ID, "secret_key": SECRET_KEY}}),
        json!({"name": "x", "kind": "tencent", "settings": {"area": "europe"},
               "credentials": {"secret_id": SECRET_ID, "secret_key": SECRET_KEY}}),
        json!({"name": "x", "kind": "tencent", "settings": {"poll_interval": 0},
               "credentials": {"secret_id": SECRET_ID, "secret_key": SECRET_KEY}}),
    ] {
        let reply = fixture
            .admin_call(Method::POST, "/cdn_api/backends", Some(body.clone()))
            .await?;
        assert_eq!(reply.ret(), 2002, "{body}: {}", reply.text());
    }
    let wrong_key = "not-the-key-000000000000000000000";
    fixture
        .tencent_backend(&vendor, wrong_key, json!(["edges", "tc"]), None)
        .await?;
    let task = fixture
        .task("refresh", json!({"urls": [url(HOST, "/a.pak")]}))
        .await?;
    let pair = tc_pairs(&task).into_values().next().unwrap_or_default();
    assert_eq!(pair["status"], "failed", "{task}");
    assert!(
        pair["error"]
            .as_str()
            .is_some_and(|e| e.contains("AuthFailure.SignatureFailure")),
        "{task}"
    );
    assert_eq!(
        task["success_rate"],
        json!(50.0),
        "the edge's pair succeeded: {task}"
    );
    let check = fixture
        .admin_call(Method::POST, "/cdn_api/backends/tc/check", None)
        .await?;
    assert_eq!(check.get("ok"), &json!(false), "{}", check.text());
    assert!(
        check.text().contains("AuthFailure.SignatureFailure"),
        "{}",
        check.text()
    );
    assert!(vendor
        .calls()
        .iter()
        .all(|call| call.error.as_deref() == Some("AuthFailure.SignatureFailure")));
    for answer in &fixture.answers {
        assert!(
            !answer.contains(wrong_key),
            "an answer shows the key: {answer}"
        );
    }
    assert!(
        !fixture.server.log().contains(wrong_key),
        "the log shows the key"
    );
    Ok(())
}

#[tokio::test]
async fn a_tencent_task_still_in_progress_after_poll_timeout_fails_its_pair() -> TestResult {
    let mut fixture = Fixture::start().await?;
    let vendor = TencentStandIn::start(SECRET_ID, SECRET_KEY).await?;
    fixture
        .tencent_backend(&vendor, SECRET_KEY, json!(["tc"]), Some(2))
        .await?;
    let stuck = url(HOST, "/stuck.pak");
    vendor.keep_in_progress(&stuck);
    let task = fixture
        .task(
            "refresh",
            json!({"urls": [url(HOST, "/quick.pak"), stuck.clone()]}),
        )
        .await?;
    let pairs = tc_pairs(&task);
    assert_eq!(
        pairs[&url(HOST, "/quick.pak")]["status"],
        "success",
        "{task}"
    );
    assert_eq!(pairs[&stuck]["status"], "failed", "{task}");
    assert!(
        pairs[&stuck]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not finished after 2 s")),
        "{task}"
    );
    Ok(())
}
