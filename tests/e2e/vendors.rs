//! Vendor CDN backends against stand-ins of their APIs on loopback (see support/vendors.rs):
//! the calls precache makes (batches, retries, signatures or tokens) and the status it shows;
//! credentials sealed at rest and never answered back or logged.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::url;
use crate::support::server::Options;
use crate::support::vendor_fixture::{pairs, Fixture};
use crate::support::vendors::CloudflareStandIn;
use crate::support::{Api, Server, TestResult};

const HOST: &str = "patch.example.com";
const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const TOKEN: &str = "cf-token-Y2xvdWRmbGFyZS10ZXN0LXRva2Vu-7f3a";

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::test]
async fn cloudflare_purges_in_batches_waits_out_its_rate_limit_and_keeps_its_token_secret(
) -> TestResult {
    let mut fixture = Fixture::start().await?;
    let vendor = CloudflareStandIn::start(TOKEN, ZONE, 30).await?;
    let created = fixture
        .admin_call(
            Method::POST,
            "/cdn_api/backends",
            Some(json!({"name": "cf", "kind": "cloudflare",
                        "settings": {"zone_id": ZONE, "endpoint": vendor.endpoint()},
                        "credentials": {"api_token": TOKEN}})),
        )
        .await?;
    created.expect(201, 0)?;
    let backend = created.get("backend").clone();
    assert_eq!(
        backend["credentials"],
        json!({"api_token": "…7f3a"}),
        "{backend}"
    );
    assert_eq!(
        backend["targets"],
        json!([format!("{}/zones/{ZONE}", vendor.endpoint())])
    );
    assert_eq!(backend["capabilities"]["prefetch"], false);
    fixture
        .admin_call(
            Method::PUT,
            &format!("/cdn_api/domains/{HOST}/backends"),
            Some(json!({"backends": ["cf"]})),
        )
        .await?
        .expect(200, 0)?;
    let check = fixture
        .admin_call(Method::POST, "/cdn_api/backends/cf/check", None)
        .await?;
    assert_eq!(check.get("ok"), &json!(true), "{}", check.text());

    // 45 URLs: batches of at most 30, the first call answered 429 and sent again.
    vendor.rate_limit_next(1);
    let urls: Vec<String> = (0..45).map(|n| url(HOST, &format!("/p/{n}.pak"))).collect();
    let task = fixture.task("refresh", json!({"urls": urls})).await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    for pair in pairs(&task) {
        assert_eq!(pair["backend"], "cf", "{pair}");
        assert_eq!(pair["status"], "success", "{pair}");
        assert_eq!(pair["confirmed"], false, "Cloudflare only accepts: {pair}");
        assert_eq!(pair["was_cached"], Value::Null, "{pair}");
        assert!(
            pair["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("accepted as purge")),
            "{pair}"
        );
    }
    let calls = vendor.calls();
    assert_eq!(calls.first().map(|call| call.0), Some(429), "{calls:?}");
    // Gathered into as few calls as the limit allows (30 + 15), not one per engine slot.
    let accepted = vendor.accepted();
    let sizes: Vec<usize> = accepted
        .iter()
        .map(|body| body["files"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 45, "{sizes:?}");
    assert!(sizes.len() <= 3 && sizes.contains(&30), "{sizes:?}");
    let mut purged = BTreeSet::new();
    for body in &accepted {
        let files = body["files"].as_array().cloned().unwrap_or_default();
        assert!(!files.is_empty() && files.len() <= 30, "{body}");
        purged.extend(files.iter().filter_map(|f| f.as_str().map(str::to_string)));
    }
    assert_eq!(purged, urls.iter().cloned().collect::<BTreeSet<_>>());

    // A directory is a prefix: host and path, no scheme.
    let task = fixture
        .task("refresh", json!({"dirs": [url(HOST, "/static/")]}))
        .await?;
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    assert_eq!(
        vendor
            .accepted()
            .last()
            .map(|body| body["prefixes"].clone()),
        Some(json!([format!("{HOST}/static/")]))
    );

    // A partly refused batch fails only the refused URL, with Cloudflare's words.
    let refused = url(HOST, "/refused.pak");
    vendor.refuse(&refused);
    let task = fixture
        .task(
            "refresh",
            json!({"urls": [url(HOST, "/fine.pak"), refused]}),
        )
        .await?;
    assert_eq!(task["success_rate"], json!(50.0), "{task}");
    let failed: Vec<Value> = pairs(&task)
        .into_iter()
        .filter(|pair| pair["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{task}");
    assert!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Invalid url") && e.contains("code 1016")),
        "{task}"
    );

    // No prefetch API: unsupported, left out of the rate.
    let task = fixture
        .task("prefetch", json!({"urls": [url(HOST, "/p/0.pak")]}))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    assert_eq!(pairs(&task)[0]["status"], "unsupported", "{task}");

    // The token is in no answer, no log line, and not in the database file.
    let listed = fixture
        .admin_call(Method::GET, "/cdn_api/backends", None)
        .await?;
    listed.expect(200, 0)?;
    fixture.secret_is_nowhere(TOKEN)?;
    Ok(())
}

#[tokio::test]
async fn a_wrong_cloudflare_token_fails_its_pairs_and_its_check() -> TestResult {
    let mut fixture = Fixture::start().await?;
    let vendor = CloudflareStandIn::start(TOKEN, ZONE, 30).await?;
    fixture
        .admin_call(
            Method::POST,
            "/cdn_api/backends",
            Some(json!({"name": "cf", "kind": "cloudflare",
                        "settings": {"zone_id": ZONE, "endpoint": vendor.endpoint()},
                        "credentials": {"api_token": "not-the-token-0000000000"}})),
        )
        .await?
        .expect(201, 0)?;
    // Missing or misspelt settings and credentials are refused up front.
    for body in [
        json!({"name": "x", "kind": "cloudflare", "credentials": {"api_token": TOKEN}}),
        json!({"name": "x", "kind": "cloudflare", "settings": {"zone_id": ZONE}}),
        json!({"name": "x", "kind": "cloudflare", "settings": {"zone_id": ZONE},
               "credentials": {"token": TOKEN}}),
        json!({"name": "x", "kind": "cloudflare", "settings": {"zone_id": ZONE},
               "credentials": {"api_token": TOKEN}, "targets": ["http://127.0.0.1:1"]}),
    ] {
        let reply = fixture
            .admin_call(Method::POST, "/cdn_api/backends", Some(body.clone()))
            .await?;
        assert_eq!(reply.ret(), 2002, "{body}: {}", reply.text());
    }
    fixture
        .admin_call(
            Method::PUT,
            &format!("/cdn_api/domains/{HOST}/backends"),
            Some(json!({"backends": ["edges", "cf"]})),
        )
        .await?
        .expect(200, 0)?;
    let task = fixture
        .task("refresh", json!({"urls": [url(HOST, "/a.pak")]}))
        .await?;
    let cf: Vec<Value> = pairs(&task)
        .into_iter()
        .filter(|pair| pair["backend"] == "cf")
        .collect();
    assert_eq!(cf.len(), 1, "{task}");
    assert_eq!(cf[0]["status"], "failed", "{task}");
    assert!(
        cf[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authentication error")),
        "{task}"
    );
    assert_eq!(
        task["success_rate"],
        json!(50.0),
        "the edge's pair succeeded: {task}"
    );
    let check = fixture
        .admin_call(Method::POST, "/cdn_api/backends/cf/check", None)
        .await?;
    assert_eq!(check.get("ok"), &json!(false), "{}", check.text());
    Ok(())
}

/// 32 bytes of 1s and of 2s, in base64: two keys that seal credentials.
const KEY_1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

fn serve_with_keys(
    dir: &std::path::Path,
    key: &str,
    previous: Option<&std::path::Path>,
) -> std::io::Result<Server> {
    let mut args = Vec::new();
    if let Some(previous) = previous {
        args.push("--previous-secret-key-file".to_string());
        args.push(previous.display().to_string());
    }
    Server::start_with(
        dir,
        Options {
            args,
            env: vec![("PRECACHE_SECRET_KEY".into(), key.into())],
            ..Options::default()
        },
    )
}

#[tokio::test]
async fn credentials_survive_a_key_rotation_and_a_wrong_key_is_said() -> TestResult {
    let dir = tempfile::tempdir()?;
    let vendor = CloudflareStandIn::start(TOKEN, ZONE, 30).await?;
    let check = |api: Api, admin: String| async move {
        let reply = api
            .call(
                Method::POST,
                "/cdn_api/backends/cf/check",
                Some(&admin),
                None,
            )
            .await?;
        Ok::<_, Error>(reply.get("ok").clone())
    };
    let server = serve_with_keys(dir.path(), KEY_1, None)?;
    let api = Api::new(&server);
    let admin = api.admin().await?;
    api.call(
        Method::POST,
        "/cdn_api/backends",
        Some(&admin),
        Some(json!({"name": "cf", "kind": "cloudflare",
                    "settings": {"zone_id": ZONE, "endpoint": vendor.endpoint()},
                    "credentials": {"api_token": TOKEN}})),
    )
    .await?
    .expect(201, 0)?;
    assert_eq!(check(api, admin).await?, json!(true));
    server.terminate()?;

    // Rotation: the new key, the old one as the previous; the credentials are sealed again.
    let old_key = dir.path().join("old.key");
    std::fs::write(&old_key, KEY_1)?;
    let server = serve_with_keys(dir.path(), KEY_2, Some(&old_key))?;
    let api = Api::new(&server);
    let admin = api.admin().await?;
    assert_eq!(check(api, admin).await?, json!(true));
    assert!(
        server.log().contains("credentials sealed again"),
        "{}",
        server.log()
    );
    server.terminate()?;
    // The old key is no longer needed...
    let server = serve_with_keys(dir.path(), KEY_2, None)?;
    let api = Api::new(&server);
    let admin = api.admin().await?;
    assert_eq!(check(api, admin).await?, json!(true));
    server.terminate()?;
    // ...and no longer enough: the backend says why it cannot be used.
    let server = serve_with_keys(dir.path(), KEY_1, None)?;
    let api = Api::new(&server);
    let admin = api.admin().await?;
    let shown = api
        .call(Method::GET, "/cdn_api/backends/cf", Some(&admin), None)
        .await?;
    shown.expect(200, 0)?;
    assert_eq!(
        shown.get("backend")["credentials"],
        Value::Null,
        "{}",
        shown.text()
    );
    assert!(
        shown.get("backend")["credentials_error"]
            .as_str()
            .is_some_and(|e| e.contains("sealed with key")),
        "{}",
        shown.text()
    );
    assert!(!server.log().contains(TOKEN));
    Ok(())
}
