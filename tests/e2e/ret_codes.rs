//! Every `ret` code of API.md §3 (and the ones this implementation adds), over real sockets:
//! the HTTP status, the code, a `msg` that names the offending input, and that a rejected
//! request changes nothing.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::{url, Reply};
use crate::support::server::Options;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

const DOMAIN: &str = "alice.example.com";
const WAIT: Duration = Duration::from_secs(30);
/// The daily prefetch quota, as `GET /cdn_api/quota` shows it and `PUT /cdn_api/quota/{user}`
/// sets it (docs/api.md, "Quotas").
const PREFETCH_QUOTA: &str = "prefetch_urls_per_day";

/// A server, an origin, and `alice` owning [`DOMAIN`] on it.
async fn setup() -> Result<(tempfile::TempDir, Server, Api, Origin, String), Error> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", DOMAIN, &origin.url()).await?;
    Ok((dir, server, api, origin, token))
}

/// `POST /cdn_api/prefetch` with these exact bytes.
async fn prefetch_raw(api: &Api, token: &str, body: &[u8]) -> Result<Reply, Error> {
    api.send(
        Method::POST,
        "/cdn_api/prefetch",
        Some(token),
        Some(body.to_vec()),
    )
    .await
}

/// `POST /cdn_api/prefetch` with this JSON body.
async fn prefetch_json(api: &Api, token: &str, body: Value) -> Result<Reply, Error> {
    api.call(Method::POST, "/cdn_api/prefetch", Some(token), Some(body))
        .await
}

/// `zt_api.quota.<PREFETCH_QUOTA>` of the caller.
async fn prefetch_quota(api: &Api, token: &str) -> Result<Value, Error> {
    let reply = api
        .call(Method::GET, "/cdn_api/quota", Some(token), None)
        .await?;
    reply.expect(200, 0)?;
    Ok(reply.get("quota")[PREFETCH_QUOTA].clone())
}

/// The `reqId`s of the caller's prefetch tasks.
async fn task_ids(api: &Api, token: &str) -> Result<Vec<String>, Error> {
    let reply = api
        .call(Method::GET, "/cdn_api/prefetch", Some(token), None)
        .await?;
    reply.expect(200, 0)?;
    let tasks = reply
        .get("tasks")
        .as_array()
        .ok_or_else(|| format!("no task list: {}", reply.text()))?;
    Ok(tasks
        .iter()
        .filter_map(|task| task["reqId"].as_str().map(String::from))
        .collect())
}

fn assert_msg_contains(reply: &Reply, needle: &str) {
    assert!(
        reply.msg().contains(needle),
        "msg {:?} should name {needle:?}",
        reply.msg()
    );
}

#[tokio::test]
async fn missing_token_is_1001() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    for (method, path, body) in [
        (Method::GET, "/cdn_api/auth/tokens", None),
        (Method::GET, "/cdn_api/domains", None),
        (Method::GET, "/cdn_api/quota", None),
        (
            Method::POST,
            "/cdn_api/prefetch",
            Some(json!({"urls": [url(DOMAIN, "/a.jpg")]})),
        ),
    ] {
        let reply = api.call(method, path, None, body).await?;
        reply.expect(401, 1001)?;
        assert_msg_contains(&reply, "X-Auth-Token");
    }
    Ok(())
}

#[tokio::test]
async fn garbage_and_revoked_tokens_are_1002() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);

    for garbage in ["garbage", "x".repeat(43).as_str(), "Bearer abc"] {
        let reply = api
            .call(Method::GET, "/cdn_api/auth/tokens", Some(garbage), None)
            .await?;
        reply.expect(401, 1002)?;
        assert_msg_contains(&reply, "token");
    }

    let revoked = api.admin().await?;
    let other = api.admin().await?;
    api.call(Method::GET, "/cdn_api/auth/tokens", Some(&revoked), None)
        .await?
        .expect(200, 0)?;
    api.call(Method::DELETE, "/cdn_api/auth/tokens", Some(&revoked), None)
        .await?
        .expect(200, 0)?;
    for (method, path) in [
        (Method::GET, "/cdn_api/auth/tokens"),
        (Method::GET, "/cdn_api/users"),
        (Method::DELETE, "/cdn_api/auth/tokens"),
    ] {
        api.call(method, path, Some(&revoked), None)
            .await?
            .expect(401, 1002)?;
    }
    // Revoking one token leaves the account's other tokens alone.
    api.call(Method::GET, "/cdn_api/users", Some(&other), None)
        .await?
        .expect(200, 0)?;
    Ok(())
}

#[tokio::test]
async fn expired_token_is_1002() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = Options {
        args: vec!["--token-ttl".into(), "1s".into()],
        ..Default::default()
    };
    let server = Server::start_with(dir.path(), options)?;
    let api = Api::new(&server);

    let before_login = jiff::Timestamp::now();
    let login = api
        .call(
            Method::POST,
            "/cdn_api/auth/tokens",
            None,
            Some(json!({"username": "admin", "password": crate::support::server::ADMIN_PASSWORD})),
        )
        .await?;
    login.expect(201, 0)?;
    let token = login.get("token")["id"]
        .as_str()
        .ok_or("no token id")?
        .to_string();
    let expires_at: jiff::Timestamp = login.get("token")["expires_at"]
        .as_str()
        .ok_or("no expires_at")?
        .parse()?;
    assert!(
        expires_at <= before_login + jiff::SignedDuration::from_secs(2),
        "--token-ttl 1s gives a token that expires within about a second, got {expires_at}"
    );

    // Used before it expires, it works.
    let fresh = api
        .call(Method::GET, "/cdn_api/auth/tokens", Some(&token), None)
        .await?;
    if jiff::Timestamp::now() < expires_at {
        fresh.expect(200, 0)?;
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    while jiff::Timestamp::now() <= expires_at + jiff::SignedDuration::from_millis(100) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (method, path) in [
        (Method::GET, "/cdn_api/auth/tokens"),
        (Method::GET, "/cdn_api/users"),
    ] {
        let reply = api.call(method, path, Some(&token), None).await?;
        reply.expect(401, 1002)?;
        assert_msg_contains(&reply, "expired");
    }
    // A new login still works.
    api.admin().await?;
    Ok(())
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_1003() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let admin = api.admin().await?;
    api.create_user(&admin, "alice").await?;

    let login = |body: Value| {
        let api = api.clone();
        async move {
            api.call(Method::POST, "/cdn_api/auth/tokens", None, Some(body))
                .await
        }
    };
    let wrong_password =
        login(json!({"username": "alice", "password": "not-her-password"})).await?;
    let unknown_user = login(json!({"username": "mallory", "password": "alice-password"})).await?;
    let keystone_wrong = login(json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"name": "alice", "password": "not-her-password"}}}}}))
    .await?;
    for reply in [&wrong_password, &unknown_user, &keystone_wrong] {
        reply.expect(401, 1003)?;
        assert!(reply.headers.get("x-subject-token").is_none());
    }
    assert_eq!(
        wrong_password.raw, unknown_user.raw,
        "a wrong password and an unknown user are told apart by nothing"
    );
    assert_eq!(wrong_password.raw, keystone_wrong.raw);
    Ok(())
}

#[tokio::test]
async fn user_role_gets_1004_on_admin_routes() -> TestResult {
    let (_dir, _server, api, origin, alice) = setup().await?;
    let calls = [
        (
            Method::POST,
            "/cdn_api/users".to_string(),
            Some(json!({"name": "eve", "password": "eve-password", "role": "admin"})),
        ),
        (
            Method::POST,
            "/cdn_api/domains".to_string(),
            Some(json!({"domain": "eve.example.com", "origin": origin.url(), "owner": "alice"})),
        ),
        (Method::GET, "/cdn_api/edges".to_string(), None),
        (Method::GET, "/cdn_api/users".to_string(), None),
        (Method::DELETE, format!("/cdn_api/domains/{DOMAIN}"), None),
        (
            Method::PUT,
            "/cdn_api/quota/alice".to_string(),
            Some(json!({PREFETCH_QUOTA: 1_000_000})),
        ),
    ];
    for (method, path, body) in calls {
        let reply = api.call(method.clone(), &path, Some(&alice), body).await?;
        reply
            .expect(403, 1004)
            .map_err(|error| format!("{method} {path}: {error}"))?;
        assert_msg_contains(&reply, "alice");
    }
    // Nothing of it happened.
    let admin = api.admin().await?;
    let users = api
        .call(Method::GET, "/cdn_api/users", Some(&admin), None)
        .await?;
    users.expect(200, 0)?;
    assert!(!users.text().contains("eve"), "{}", users.text());
    let domains = api
        .call(Method::GET, "/cdn_api/domains", Some(&admin), None)
        .await?;
    domains.expect(200, 0)?;
    assert!(domains.text().contains(DOMAIN), "{}", domains.text());
    assert!(!domains.text().contains("eve.example.com"));
    assert_eq!(prefetch_quota(&api, &alice).await?["limit"], 10_000);
    Ok(())
}

#[tokio::test]
async fn malformed_json_is_2001() -> TestResult {
    let (_dir, _server, api, _origin, alice) = setup().await?;
    let good = url(DOMAIN, "/a.jpg");
    let bodies = [
        "this is not JSON".to_string(),
        format!(r#"{{"urls": ["{good}""#),
        format!(r#"{{"urls": ["{good}",,]}}"#),
        format!(r#"{{"urls": ["{good}",,"{good}"]}}"#),
        format!(r#"{{"urls": ['{good}']}}"#),
        String::new(),
    ];
    for body in &bodies {
        let reply = prefetch_raw(&api, &alice, body.as_bytes()).await?;
        reply
            .expect(400, 2001)
            .map_err(|error| format!("body {body:?}: {error}"))?;
        assert_msg_contains(&reply, "JSON");
    }
    Ok(())
}

#[tokio::test]
async fn bad_urls_field_is_2002() -> TestResult {
    let (_dir, _server, api, _origin, alice) = setup().await?;
    let good = url(DOMAIN, "/a.jpg");
    let cases = [
        (json!({"url": [good]}), "urls"),
        (json!({"urls": good}), "urls"),
        (json!({"urls": {"0": good}}), "urls"),
        (json!({"urls": []}), "urls"),
        (json!({"urls": null}), "urls"),
        (json!({"urls": [good, 7]}), "urls[1]"),
        (json!({"urls": [good, null]}), "urls[1]"),
        (json!([good]), "object"),
        (json!("just a string"), "object"),
    ];
    for (body, named) in cases {
        let reply = prefetch_json(&api, &alice, body.clone()).await?;
        reply
            .expect(400, 2002)
            .map_err(|error| format!("body {body}: {error}"))?;
        assert_msg_contains(&reply, named);
    }
    Ok(())
}

#[tokio::test]
async fn more_than_ten_distinct_urls_is_2003_but_duplicates_count_once() -> TestResult {
    let (_dir, _server, api, origin, alice) = setup().await?;
    let eleven: Vec<String> = (0..11)
        .map(|n| url(DOMAIN, &format!("/file{n}.bin")))
        .collect();
    let reply = api.prefetch(&alice, &eleven).await?;
    reply.expect(400, 2003)?;
    assert_msg_contains(&reply, "11");
    assert_msg_contains(&reply, "10");

    for n in 0..10 {
        origin.set(
            &format!("/file{n}.bin"),
            Behavior::Body(Bytes::from(format!("file {n}"))),
        );
    }
    let mut twelve: Vec<String> = eleven[..10].to_vec();
    twelve.push(eleven[0].clone());
    twelve.push(eleven[9].clone());
    let req_id = api.prefetch_ok(&alice, &twelve).await?;
    let status = api.wait_final(&alice, &req_id, WAIT).await?;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(
        status["urls"].as_array().map(Vec::len),
        Some(10),
        "duplicates count once: {status}"
    );
    assert_eq!(prefetch_quota(&api, &alice).await?["used"], 10);
    Ok(())
}

#[tokio::test]
async fn two_domains_is_2004() -> TestResult {
    let (_dir, _server, api, _origin, alice) = setup().await?;
    let urls = [url(DOMAIN, "/a.jpg"), url("other.example.net", "/b.jpg")];
    let reply = api.prefetch(&alice, &urls).await?;
    reply.expect(400, 2004)?;
    assert_msg_contains(&reply, DOMAIN);
    assert_msg_contains(&reply, "other.example.net");
    Ok(())
}

#[tokio::test]
async fn invalid_urls_are_2005_and_named() -> TestResult {
    let (_dir, _server, api, _origin, alice) = setup().await?;
    let long = url(DOMAIN, &format!("/{}", "a".repeat(2100)));
    let exactly_2049 = url(
        DOMAIN,
        &format!("/{}", "b".repeat(2049 - url(DOMAIN, "/").len())),
    );
    let cases: Vec<(String, String)> = vec![
        (
            format!("ftp://{DOMAIN}/a.jpg"),
            format!("ftp://{DOMAIN}/a.jpg"),
        ),
        ("/static/a.jpg".into(), "/static/a.jpg".into()),
        (format!("{DOMAIN}/a.jpg"), format!("{DOMAIN}/a.jpg")),
        (
            format!("http://user:pw@{DOMAIN}/a.jpg"),
            format!("http://user:pw@{DOMAIN}/a.jpg"),
        ),
        (
            format!("http://{DOMAIN}/a\u{1}b.jpg"),
            format!("http://{DOMAIN}/a"),
        ),
        (
            format!("http://{DOMAIN}/a\nb.jpg"),
            format!("http://{DOMAIN}/a"),
        ),
        (long.clone(), long[..100].to_string()),
        (exactly_2049.clone(), exactly_2049[..100].to_string()),
    ];
    for (bad, named) in cases {
        let reply = api.prefetch(&alice, std::slice::from_ref(&bad)).await?;
        reply
            .expect(400, 2005)
            .map_err(|error| format!("URL {bad:?}: {error}"))?;
        assert_msg_contains(&reply, &named);
        // One bad URL among good ones rejects the request, and names the bad one.
        let reply = api
            .prefetch(&alice, &[url(DOMAIN, "/good.jpg"), bad.clone()])
            .await?;
        reply.expect(400, 2005)?;
        assert_msg_contains(&reply, &named);
    }
    // 2048 bytes is still allowed.
    let exactly_2048 = url(
        DOMAIN,
        &format!("/{}", "c".repeat(2048 - url(DOMAIN, "/").len())),
    );
    assert_eq!(exactly_2048.len(), 2048);
    api.prefetch_ok(&alice, &[exactly_2048]).await?;
    Ok(())
}

#[tokio::test]
async fn unregistered_and_foreign_domain_get_the_same_2006() -> TestResult {
    let (_dir, _server, api, origin, alice) = setup().await?;
    let admin = api.admin().await?;
    api.create_user(&admin, "bob").await?;
    api.register_domain(&admin, "bobby.example.com", &origin.url(), "bob")
        .await?;

    let foreign = api
        .prefetch(&alice, &[url("bobby.example.com", "/a.jpg")])
        .await?;
    let unregistered = api
        .prefetch(&alice, &[url("nodom.example.com", "/a.jpg")])
        .await?;
    foreign.expect(403, 2006)?;
    unregistered.expect(403, 2006)?;
    assert_msg_contains(&foreign, "bobby.example.com");
    assert_msg_contains(&unregistered, "nodom.example.com");
    assert_eq!(
        foreign.text().replace("bobby.example.com", "DOMAIN"),
        unregistered.text().replace("nodom.example.com", "DOMAIN"),
        "registered to someone else and not registered at all look the same"
    );
    assert_eq!(origin.total(), 0);
    Ok(())
}

#[tokio::test]
async fn unknown_malformed_or_foreign_req_id_is_3001() -> TestResult {
    let (_dir, _server, api, origin, alice) = setup().await?;
    origin.set("/a.jpg", Behavior::Body(Bytes::from_static(b"a")));
    let admin = api.admin().await?;
    let bob = api.create_user(&admin, "bob").await?;
    let alices = api.prefetch_ok(&alice, &[url(DOMAIN, "/a.jpg")]).await?;

    let unknown = "3f2b6c1e-9a4d-4c2b-8e1f-0123456789ab";
    let malformed = "not-a-req-id";
    for (token, req_id) in [(&alice, unknown), (&alice, malformed), (&bob, &alices)] {
        let reply = api
            .call(
                Method::GET,
                &format!("/cdn_api/prefetch/{req_id}"),
                Some(token),
                None,
            )
            .await?;
        reply
            .expect(404, 3001)
            .map_err(|error| format!("reqId {req_id}: {error}"))?;
        assert_msg_contains(&reply, req_id);
    }
    // Someone else's task looks exactly like one that does not exist.
    let foreign = api
        .call(
            Method::GET,
            &format!("/cdn_api/prefetch/{alices}"),
            Some(&bob),
            None,
        )
        .await?;
    let missing = api
        .call(
            Method::GET,
            &format!("/cdn_api/prefetch/{unknown}"),
            Some(&bob),
            None,
        )
        .await?;
    assert_eq!(
        foreign.text().replace(&alices, "ID"),
        missing.text().replace(unknown, "ID")
    );
    // The owner still sees it.
    api.call(
        Method::GET,
        &format!("/cdn_api/prefetch/{alices}"),
        Some(&alice),
        None,
    )
    .await?
    .expect(200, 0)?;
    Ok(())
}

#[tokio::test]
async fn over_quota_is_4001_with_retry_after_and_consumes_nothing() -> TestResult {
    let (_dir, _server, api, origin, alice) = setup().await?;
    for name in ["a", "b", "c", "d", "e"] {
        origin.set(
            &format!("/{name}.jpg"),
            Behavior::Body(Bytes::from(name.to_string())),
        );
    }
    let admin = api.admin().await?;
    let set = api
        .call(
            Method::PUT,
            "/cdn_api/quota/alice",
            Some(&admin),
            Some(json!({PREFETCH_QUOTA: 3})),
        )
        .await?;
    set.expect(200, 0)?;
    assert_eq!(set.get("quota")[PREFETCH_QUOTA]["limit"], 3);

    let first = api
        .prefetch_ok(&alice, &[url(DOMAIN, "/a.jpg"), url(DOMAIN, "/b.jpg")])
        .await?;
    let reply = api
        .prefetch(&alice, &[url(DOMAIN, "/c.jpg"), url(DOMAIN, "/d.jpg")])
        .await?;
    reply.expect(429, 4001)?;
    assert_msg_contains(&reply, "prefetch_urls");
    let retry_after = reply
        .headers
        .get("retry-after")
        .ok_or("4001 without a Retry-After header")?
        .to_str()?
        .parse::<u64>()
        .map_err(|error| format!("Retry-After is not a number of seconds: {error}"))?;
    assert!(retry_after > 0, "Retry-After {retry_after}");
    assert!(retry_after <= 25 * 3600, "Retry-After {retry_after}");

    let quota = prefetch_quota(&api, &alice).await?;
    assert_eq!(
        (
            quota["limit"].clone(),
            quota["used"].clone(),
            quota["remaining"].clone()
        ),
        (json!(3), json!(2), json!(1)),
        "the rejected request consumed nothing: {quota}"
    );
    assert_eq!(
        task_ids(&api, &alice).await?,
        vec![first],
        "no task for the rejection"
    );
    // What remains can still be used.
    api.prefetch_ok(&alice, &[url(DOMAIN, "/e.jpg")]).await?;
    assert_eq!(prefetch_quota(&api, &alice).await?["used"], 3);
    api.prefetch(&alice, &[url(DOMAIN, "/c.jpg")])
        .await?
        .expect(429, 4001)?;
    Ok(())
}

/// `{"urls": [...], "pad": "xxx"}` of exactly `len` bytes.
fn padded_body(urls: &[String], len: usize) -> Result<Vec<u8>, Error> {
    let bare = serde_json::to_vec(&json!({"urls": urls, "pad": ""}))?;
    let pad = len.checked_sub(bare.len()).ok_or("len too small")?;
    let body = serde_json::to_vec(&json!({"urls": urls, "pad": "x".repeat(pad)}))?;
    assert_eq!(body.len(), len);
    Ok(body)
}

#[tokio::test]
async fn body_over_64_kib_is_4002() -> TestResult {
    let (_dir, _server, api, origin, alice) = setup().await?;
    origin.set("/a.jpg", Behavior::Body(Bytes::from_static(b"a")));
    let urls = [url(DOMAIN, "/a.jpg")];
    for len in [64 * 1024 + 1, 100 * 1024, 1024 * 1024] {
        let reply = prefetch_raw(&api, &alice, &padded_body(&urls, len)?)
            .await
            .map_err(|error| format!("{len} bytes: {error:?}"))?;
        reply
            .expect(413, 4002)
            .map_err(|error| format!("{len} bytes: {error}"))?;
        assert_msg_contains(&reply, "65536");
        // The client's next request (on the same connection pool) is answered normally.
        let tasks = task_ids(&api, &alice)
            .await
            .map_err(|error| format!("the request after {len} bytes: {error:?}"))?;
        assert!(tasks.is_empty(), "{tasks:?}");
    }
    // 64 KiB exactly is within the limit.
    let reply = prefetch_raw(&api, &alice, &padded_body(&urls, 64 * 1024)?).await?;
    reply.expect(200, 0)?;
    Ok(())
}

#[tokio::test]
async fn a_failed_request_changes_nothing() -> TestResult {
    let (_dir, _server, api, origin, alice) = setup().await?;
    for n in 0..12 {
        origin.set(
            &format!("/f{n}.jpg"),
            Behavior::Body(Bytes::from(format!("f{n}"))),
        );
    }
    let admin = api.admin().await?;
    api.create_user(&admin, "bob").await?;
    api.register_domain(&admin, "bob.example.com", &origin.url(), "bob")
        .await?;
    api.call(
        Method::PUT,
        "/cdn_api/quota/alice",
        Some(&admin),
        Some(json!({PREFETCH_QUOTA: 2})),
    )
    .await?
    .expect(200, 0)?;

    let f = |n: usize| url(DOMAIN, &format!("/f{n}.jpg"));
    let rejected: Vec<(Vec<u8>, u16, i64)> = vec![
        (b"not json".to_vec(), 400, 2001),
        (
            format!(r#"{{"urls": ["{}",,]}}"#, f(0)).into_bytes(),
            400,
            2001,
        ),
        (br#"{"urls": "x"}"#.to_vec(), 400, 2002),
        (br#"{"urls": []}"#.to_vec(), 400, 2002),
        (
            serde_json::to_vec(&json!({"urls": (0..11).map(f).collect::<Vec<_>>()}))?,
            400,
            2003,
        ),
        (
            serde_json::to_vec(&json!({"urls": [f(0), url("bob.example.com", "/f1.jpg")]}))?,
            400,
            2004,
        ),
        (
            serde_json::to_vec(&json!({"urls": [f(0), format!("ftp://{DOMAIN}/f1.jpg")]}))?,
            400,
            2005,
        ),
        (
            serde_json::to_vec(&json!({"urls": [url("bob.example.com", "/f1.jpg")]}))?,
            403,
            2006,
        ),
        (
            serde_json::to_vec(&json!({"urls": [url("nobody.example.com", "/f1.jpg")]}))?,
            403,
            2006,
        ),
        (
            serde_json::to_vec(&json!({"urls": [f(0), f(1), f(2)]}))?,
            429,
            4001,
        ),
        (padded_body(&[f(0)], 70 * 1024)?, 413, 4002),
    ];
    for (body, status, ret) in &rejected {
        let reply = prefetch_raw(&api, &alice, body).await?;
        reply.expect(*status, *ret).map_err(|error| {
            format!(
                "body {:?}: {error}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })?;
    }

    assert!(
        task_ids(&api, &alice).await?.is_empty(),
        "a rejected request creates no task"
    );
    assert_eq!(
        prefetch_quota(&api, &alice).await?["used"],
        0,
        "a rejected request consumes no quota"
    );
    // The engine runs a task as soon as it is accepted; one accepted task, run to its end, shows
    // the origin was asked for its URL and for nothing the rejected requests named.
    let req_id = api.prefetch_ok(&alice, &[f(11)]).await?;
    let status = api.wait_final(&alice, &req_id, WAIT).await?;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(origin.count("/f11.jpg"), 1);
    assert_eq!(
        origin.total(),
        1,
        "the origin saw nothing of the rejected requests"
    );
    assert_eq!(task_ids(&api, &alice).await?, vec![req_id]);
    Ok(())
}
