//! The `cloudfront` backend against a stand-in of the CloudFront API on loopback (see
//! support/vendor_cloudfront.rs): signed invalidations in batches, polled until completed,
//! queued while too many are in progress; the status it shows; the secret never shown.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::url;
use crate::support::vendor_cloudfront::CloudFrontStandIn;
use crate::support::vendor_fixture::{pairs, Fixture};
use crate::support::TestResult;

const HOST: &str = "patch.example.com";
const DISTRIBUTION: &str = "EDFDVBD6EXAMPLE";
const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Fixture {
    /// Registers a `cloudfront` backend `name` and makes it the domain's only backend.
    async fn cloudfront_backend(
        &mut self,
        name: &str,
        settings: Value,
        secret: &str,
    ) -> Result<Value, Error> {
        let created = self
            .admin_call(
                Method::POST,
                "/cdn_api/backends",
                Some(
                    json!({"name": name, "kind": "cloudfront", "settings": settings,
                            "credentials": {"access_key_id": ACCESS_KEY_ID,
                                            "secret_access_key": secret}}),
                ),
            )
            .await?;
        created.expect(201, 0)?;
        self.admin_call(
            Method::PUT,
            &format!("/cdn_api/domains/{HOST}/backends"),
            Some(json!({"backends": [name]})),
        )
        .await?
        .expect(200, 0)?;
        Ok(created.get("backend").clone())
    }
}

fn settings(vendor: &CloudFrontStandIn, extra: Value) -> Value {
    let mut settings = json!({"distribution_id": DISTRIBUTION, "endpoint": vendor.endpoint(),
                              "poll_interval": 1});
    if let (Some(settings), Some(extra)) = (settings.as_object_mut(), extra.as_object()) {
        settings.extend(extra.clone());
    }
    settings
}

#[tokio::test]
async fn cloudfront_invalidates_signed_batches_polls_them_to_completion_and_keeps_its_secret(
) -> TestResult {
    let mut fixture = Fixture::start().await?;
    let vendor = CloudFrontStandIn::start(ACCESS_KEY_ID, SECRET, DISTRIBUTION).await?;
    let backend = fixture
        .cloudfront_backend(
            "cf",
            settings(&vendor, json!({"max_paths_per_call": 20})),
            SECRET,
        )
        .await?;
    assert_eq!(
        backend["credentials"],
        json!({"access_key_id": "…MPLE", "secret_access_key": "…EKEY"}),
        "{backend}"
    );
    assert_eq!(
        backend["targets"],
        json!([format!(
            "{}/2020-05-31/distribution/{DISTRIBUTION}",
            vendor.endpoint()
        )])
    );
    assert_eq!(backend["capabilities"]["prefetch"], false, "{backend}");
    assert_eq!(backend["capabilities"]["confirmed"], true, "{backend}");
    let check = fixture
        .admin_call(Method::POST, "/cdn_api/backends/cf/check", None)
        .await?;
    assert_eq!(check.get("ok"), &json!(true), "{}", check.text());

    // 45 URLs (one with a query): invalidations of at most 20 paths, the first call throttled
    // and sent again; every pair confirmed once its invalidation is polled `Completed`.
    vendor.throttle_next(1);
    let mut urls: Vec<String> = (0..44).map(|n| url(HOST, &format!("/p/{n}.pak"))).collect();
    urls.push(url(HOST, "/p/index.json?v=7"));
    let task = fixture.task("refresh", json!({"urls": urls})).await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    let all = pairs(&task);
    assert_eq!(all.len(), 45, "{task}");
    for pair in &all {
        assert_eq!(pair["backend"], "cf", "{pair}");
        assert_eq!(pair["status"], "success", "{pair}");
        assert_eq!(pair["confirmed"], true, "polled to Completed: {pair}");
        assert_eq!(pair["was_cached"], Value::Null, "{pair}");
        assert!(
            pair["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("invalidation I") && n.ends_with("completed")),
            "{pair}"
        );
    }
    let calls = vendor.calls();
    assert_eq!(
        calls.first().map(|call| call.code.as_str()),
        Some("Throttling"),
        "{calls:?}"
    );
    assert_eq!(calls[0].status, 400, "{calls:?}");
    assert!(calls.iter().all(|call| call.paths.len() <= 20), "{calls:?}");
    let invalidations = vendor.invalidations();
    // Gathered into as few invalidations as the limit allows (20 + 20 + 5), not one per engine
    // slot.
    let sizes: Vec<usize> = invalidations.iter().map(|i| i.paths.len()).collect();
    assert!(
        sizes.len() <= 4 && sizes.iter().filter(|n| **n == 20).count() >= 2,
        "{sizes:?}"
    );
    let mut invalidated = Vec::new();
    for invalidation in &invalidations {
        assert!(
            !invalidation.paths.is_empty() && invalidation.paths.len() <= 20,
            "{invalidation:?}"
        );
        invalidated.extend(invalidation.paths.iter().cloned());
    }
    let expected: BTreeSet<String> = (0..44)
        .map(|n| format!("/p/{n}.pak"))
        .chain(["/p/index.json".to_string()])
        .collect();
    assert_eq!(invalidated.len(), 45, "every path exactly once");
    assert_eq!(invalidated.into_iter().collect::<BTreeSet<_>>(), expected);
    let references: BTreeSet<&str> = invalidations
        .iter()
        .map(|i| i.caller_reference.as_str())
        .collect();
    assert_eq!(
        references.len(),
        invalidations.len(),
        "a reference per call"
    );
    // The throttled call was sent again as the same call.
    assert!(
        references.contains(calls[0].caller_reference.as_str()),
        "{calls:?}"
    );
    assert!(
        vendor.polls() >= 2 * invalidations.len(),
        "InProgress, then Completed"
    );

    // 20 directories: wildcard paths, at most 15 per call and 15 in progress. With 10 wildcard
    // paths of someone else's in progress, calls are refused TooManyInvalidationsInProgress:
    // they wait and are sent again (twice refused here) rather than fail.
    vendor.busy_elsewhere(10, 2);
    let dirs: Vec<String> = (0..20).map(|n| url(HOST, &format!("/d{n}/"))).collect();
    let before = vendor.invalidations().len();
    let task = fixture.task("refresh", json!({"dirs": dirs})).await?;
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    assert!(
        pairs(&task).iter().all(|pair| pair["confirmed"] == true),
        "{task}"
    );
    let wildcards: Vec<String> = vendor.invalidations()[before..]
        .iter()
        .inspect(|i| assert!(i.paths.len() <= 15, "{i:?}"))
        .flat_map(|i| i.paths.clone())
        .collect();
    assert_eq!(
        wildcards.iter().cloned().collect::<BTreeSet<_>>(),
        (0..20).map(|n| format!("/d{n}/*")).collect::<BTreeSet<_>>()
    );
    assert_eq!(wildcards.len(), 20);
    assert!(
        vendor
            .calls()
            .iter()
            .any(|call| call.code == "TooManyInvalidationsInProgress"),
        "the 15 wildcards in progress were reached"
    );

    // A partly refused batch fails only the refused path, with CloudFront's words.
    vendor.refuse("/refused.pak");
    let task = fixture
        .task(
            "refresh",
            json!({"urls": [url(HOST, "/fine.pak"), url(HOST, "/refused.pak")]}),
        )
        .await?;
    assert_eq!(task["success_rate"], json!(50.0), "{task}");
    let failed: Vec<Value> = pairs(&task)
        .into_iter()
        .filter(|pair| pair["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{task}");
    assert!(
        failed[0]["error"].as_str().is_some_and(|e| e.contains(
            "InvalidArgument: Your request contains one or more invalid invalidation paths"
        )),
        "{task}"
    );

    // No prefetch API: unsupported, left out of the rate.
    let task = fixture
        .task("prefetch", json!({"urls": [url(HOST, "/p/0.pak")]}))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(pairs(&task)[0]["status"], "unsupported", "{task}");

    // Every request was signed, and signed right.
    assert_eq!(vendor.signatures().1, 0, "no request failed its signature");
    assert_eq!(
        vendor.signed_headers(),
        ["content-type;host;x-amz-date", "host;x-amz-date"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        "an invalidation signs its body's type, a poll or a listing only host and date"
    );

    // The secret is in no answer, no log line, and not in the database file.
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

#[tokio::test]
async fn a_wrong_cloudfront_secret_fails_its_pairs_and_its_check_and_polling_gives_up() -> TestResult
{
    let mut fixture = Fixture::start().await?;
    let vendor = CloudFrontStandIn::start(ACCESS_KEY_ID, SECRET, DISTRIBUTION).await?;
    // Missing or misspelt settings and credentials are refused up front.
    for body in [
        json!({"name": "x", "kind": "cloudfront",
               "credentials": {"access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET}}),
        json!({"name": "x", "kind": "cloudfront", "settings": {"distribution_id": DISTRIBUTION},
               "credentials": {"access_key_id": ACCESS_KEY_ID}}),
        json!({"name": "x", "kind": "cloudfront", "settings": {"distribution_id": DISTRIBUTION},
               "credentials": {"access_key": ACCESS_KEY_ID, "secret_access_key": SECRET}}),
        json!({"name": "x", "kind": "cloudfront",
               "settings": {"distribution_id": DISTRIBUTION, "max_paths_per_call": 5000},
               "credentials": {"access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET}}),
    ] {
        let reply = fixture
            .admin_call(Method::POST, "/cdn_api/backends", Some(body.clone()))
            .await?;
        assert_eq!(reply.ret(), 2002, "{body}: {}", reply.text());
    }

    let wrong = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzNOTTHEKEY";
    fixture
        .cloudfront_backend("cf", settings(&vendor, json!({})), wrong)
        .await?;
    let task = fixture
        .task("refresh", json!({"urls": [url(HOST, "/a.pak")]}))
        .await?;
    let pair = &pairs(&task)[0];
    assert_eq!(pair["status"], "failed", "{task}");
    assert!(
        pair["error"]
            .as_str()
            .is_some_and(|e| e.contains("403 SignatureDoesNotMatch")),
        "{task}"
    );
    assert!(vendor.signatures().1 >= 1);
    assert!(vendor.invalidations().is_empty());
    let check = fixture
        .admin_call(Method::POST, "/cdn_api/backends/cf/check", None)
        .await?;
    assert_eq!(check.get("ok"), &json!(false), "{}", check.text());
    assert!(
        check.text().contains("SignatureDoesNotMatch"),
        "{}",
        check.text()
    );

    // An invalidation that never completes is given up after poll_timeout, with a clear error.
    vendor.never_complete();
    fixture
        .cloudfront_backend(
            "cf-slow",
            settings(&vendor, json!({"poll_timeout": 2})),
            SECRET,
        )
        .await?;
    let task = fixture
        .task("refresh", json!({"urls": [url(HOST, "/slow.pak")]}))
        .await?;
    let pair = &pairs(&task)[0];
    assert_eq!(pair["status"], "failed", "{task}");
    assert!(
        pair["error"]
            .as_str()
            .is_some_and(|e| e.contains("still InProgress after 2 s")),
        "{task}"
    );
    assert_eq!(vendor.invalidations().len(), 1, "not sent again: {task}");
    Ok(())
}
