//! Logging in (both body forms), tokens, and administration of users, domains and edges.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::Reply;
use crate::support::server::ADMIN_PASSWORD;
use crate::support::{Api, Origin, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn start() -> Result<(tempfile::TempDir, Server, Api), Error> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    Ok((dir, server, api))
}

fn assert_msg_contains(reply: &Reply, needle: &str) {
    assert!(
        reply.msg().contains(needle),
        "msg {:?} should name {needle:?}",
        reply.msg()
    );
}

/// Bytes encoded by a base64url token (padding optional), or why it is not base64url.
fn base64url_decoded_len(token: &str) -> Result<usize, String> {
    let body = token.trim_end_matches('=');
    if let Some(bad) = body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!("{token:?} is not base64url: {bad:?}"));
    }
    if body.len() % 4 == 1 {
        return Err(format!("{token:?} has an impossible base64 length"));
    }
    Ok(body.len() * 6 / 8)
}

/// Checks a login answer; returns the token.
fn check_login(reply: &Reply, user: &str, role: &str) -> Result<String, Error> {
    reply.expect(201, 0)?;
    let token = &reply.get("token");
    let id = token["id"].as_str().ok_or("no token.id")?;
    let header = reply
        .headers
        .get("x-subject-token")
        .ok_or("no X-Subject-Token header")?
        .to_str()?;
    assert_eq!(header, id, "X-Subject-Token is token.id");
    assert_eq!(token["user"], user);
    assert_eq!(token["role"], role);
    let expires_at: jiff::Timestamp = token["expires_at"]
        .as_str()
        .ok_or("no token.expires_at")?
        .parse()
        .map_err(|error| format!("expires_at is not RFC 3339: {error}"))?;
    let now = jiff::Timestamp::now();
    let hours = jiff::SignedDuration::from_hours;
    assert!(
        expires_at > now + hours(23) && expires_at < now + hours(25),
        "a token lives 24 h by default, expires_at {expires_at}"
    );
    let bytes = base64url_decoded_len(id)?;
    assert!(
        bytes >= 16,
        "a token carries at least 128 bits, {id:?} has {bytes} bytes"
    );
    Ok(id.to_string())
}

async fn login_with(api: &Api, body: Value) -> Result<Reply, Error> {
    api.call(Method::POST, "/cdn_api/auth/tokens", None, Some(body))
        .await
}

#[tokio::test]
async fn both_login_bodies_issue_a_token_that_describes_itself() -> TestResult {
    let (_dir, _server, api) = start().await?;
    let admin = api.admin().await?;
    api.create_user(&admin, "alice").await?;

    let plain = login_with(
        &api,
        json!({"username": "alice", "password": "alice-password"}),
    )
    .await?;
    let plain_token = check_login(&plain, "alice", "user")?;
    let keystone = login_with(
        &api,
        json!({"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"name": "alice", "password": "alice-password"}}}}}),
    )
    .await?;
    let keystone_token = check_login(&keystone, "alice", "user")?;
    assert_ne!(
        plain_token, keystone_token,
        "every login gets a fresh token"
    );
    let admin_login = login_with(
        &api,
        json!({"username": "admin", "password": ADMIN_PASSWORD}),
    )
    .await?;
    check_login(&admin_login, "admin", "admin")?;

    for (token, login) in [(&plain_token, &plain), (&keystone_token, &keystone)] {
        let shown = api
            .call(Method::GET, "/cdn_api/auth/tokens", Some(token), None)
            .await?;
        shown.expect(200, 0)?;
        let shown = shown.get("token");
        assert_eq!(shown["user"], "alice");
        assert_eq!(shown["role"], "user");
        assert_eq!(shown["expires_at"], login.get("token")["expires_at"]);
        assert!(
            shown.get("id").is_none(),
            "the secret is not echoed: {shown}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn malformed_login_bodies_are_2001_and_2002() -> TestResult {
    let (_dir, _server, api) = start().await?;
    let reply = api
        .send(
            Method::POST,
            "/cdn_api/auth/tokens",
            None,
            Some(b"{\"username\": ".to_vec()),
        )
        .await?;
    reply.expect(400, 2001)?;
    for body in [
        json!({"username": "admin"}),
        json!({"password": ADMIN_PASSWORD}),
        json!({"username": 7, "password": ADMIN_PASSWORD}),
        json!({"auth": {"identity": {"methods": ["password"]}}}),
    ] {
        login_with(&api, body.clone())
            .await?
            .expect(400, 2002)
            .map_err(|error| format!("{body}: {error}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn users_are_created_listed_shown_updated_and_deleted() -> TestResult {
    let (_dir, _server, api) = start().await?;
    let origin = Origin::start().await?;
    let admin = api.admin().await?;
    let users = |method: Method, path: &str, body: Option<Value>| {
        let (api, admin, path) = (api.clone(), admin.clone(), format!("/cdn_api/users{path}"));
        async move { api.call(method, &path, Some(&admin), body).await }
    };

    // Create.
    let created = users(
        Method::POST,
        "",
        Some(json!({"name": "carol", "password": "carol-password", "role": "user"})),
    )
    .await?;
    created.expect(201, 0)?;
    assert_eq!(created.get("user")["name"], "carol");
    assert_eq!(created.get("user")["role"], "user");
    assert!(
        !created.text().contains("carol-password") && !created.text().contains("argon2"),
        "no password or hash in answers: {}",
        created.text()
    );
    let carol = api.login("carol", "carol-password").await?;

    // Duplicate.
    let duplicate = users(
        Method::POST,
        "",
        Some(json!({"name": "carol", "password": "another-password"})),
    )
    .await?;
    duplicate.expect(409, 2007)?;
    assert_msg_contains(&duplicate, "carol");
    api.login("carol", "carol-password").await?;

    // Invalid fields.
    let short = users(
        Method::POST,
        "",
        Some(json!({"name": "dave", "password": "short"})),
    )
    .await?;
    short.expect(400, 2002)?;
    assert_msg_contains(&short, "password");
    for (body, named) in [
        (json!({"password": "dave-password"}), "name"),
        (json!({"name": "dave"}), "password"),
        (
            json!({"name": "Dave Smith", "password": "dave-password"}),
            "Dave Smith",
        ),
        (
            json!({"name": "dave", "password": "dave-password", "role": "root"}),
            "root",
        ),
    ] {
        let reply = users(Method::POST, "", Some(body.clone())).await?;
        reply
            .expect(400, 2002)
            .map_err(|error| format!("{body}: {error}"))?;
        assert_msg_contains(&reply, named);
    }

    // List and show.
    let listed = users(Method::GET, "", None).await?;
    listed.expect(200, 0)?;
    let mut names: Vec<&str> = listed
        .get("users")
        .as_array()
        .ok_or("no user list")?
        .iter()
        .filter_map(|user| user["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["admin", "carol"], "dave was never created");
    let shown = users(Method::GET, "/carol", None).await?;
    shown.expect(200, 0)?;
    assert_eq!(shown.get("user")["role"], "user");
    let missing = users(Method::GET, "/dave", None).await?;
    missing.expect(404, 3002)?;
    assert_msg_contains(&missing, "dave");

    // Update the role: carol's own token carries it at once.
    let promoted = users(Method::PUT, "/carol", Some(json!({"role": "admin"}))).await?;
    promoted.expect(200, 0)?;
    assert_eq!(promoted.get("user")["role"], "admin");
    let whoami = api
        .call(Method::GET, "/cdn_api/auth/tokens", Some(&carol), None)
        .await?;
    whoami.expect(200, 0)?;
    assert_eq!(whoami.get("token")["role"], "admin");
    api.call(Method::GET, "/cdn_api/users", Some(&carol), None)
        .await?
        .expect(200, 0)?;
    users(Method::PUT, "/carol", Some(json!({"role": "user"})))
        .await?
        .expect(200, 0)?;
    api.call(Method::GET, "/cdn_api/users", Some(&carol), None)
        .await?
        .expect(403, 1004)?;

    // Update the password: the old one stops working.
    users(Method::PUT, "/carol", Some(json!({"password": "short"})))
        .await?
        .expect(400, 2002)?;
    users(
        Method::PUT,
        "/carol",
        Some(json!({"password": "carol-new-password"})),
    )
    .await?
    .expect(200, 0)?;
    login_with(
        &api,
        json!({"username": "carol", "password": "carol-password"}),
    )
    .await?
    .expect(401, 1003)?;
    let carol = api.login("carol", "carol-new-password").await?;
    users(Method::PUT, "/nobody", Some(json!({"role": "admin"})))
        .await?
        .expect(404, 3002)?;

    // Delete: refused while carol owns a domain.
    api.register_domain(&admin, "carol.example.com", &origin.url(), "carol")
        .await?;
    let refused = users(Method::DELETE, "/carol", None).await?;
    refused.expect(409, 2007)?;
    assert_msg_contains(&refused, "carol");
    api.call(Method::GET, "/cdn_api/auth/tokens", Some(&carol), None)
        .await?
        .expect(200, 0)?;
    api.call(
        Method::DELETE,
        "/cdn_api/domains/carol.example.com",
        Some(&admin),
        None,
    )
    .await?
    .expect(200, 0)?;
    users(Method::DELETE, "/carol", None)
        .await?
        .expect(200, 0)?;
    api.call(Method::GET, "/cdn_api/auth/tokens", Some(&carol), None)
        .await?
        .expect(401, 1002)?;
    login_with(
        &api,
        json!({"username": "carol", "password": "carol-new-password"}),
    )
    .await?
    .expect(401, 1003)?;
    users(Method::GET, "/carol", None)
        .await?
        .expect(404, 3002)?;
    users(Method::DELETE, "/carol", None)
        .await?
        .expect(404, 3002)?;
    Ok(())
}

#[tokio::test]
async fn the_last_admin_cannot_be_deleted_or_demoted() -> TestResult {
    let (_dir, _server, api) = start().await?;
    let admin = api.admin().await?;
    let refused = api
        .call(Method::DELETE, "/cdn_api/users/admin", Some(&admin), None)
        .await?;
    refused.expect(409, 2007)?;
    assert_msg_contains(&refused, "admin");
    api.call(
        Method::PUT,
        "/cdn_api/users/admin",
        Some(&admin),
        Some(json!({"role": "user"})),
    )
    .await?
    .expect(409, 2007)?;
    // Still an admin, still logged in.
    api.call(Method::GET, "/cdn_api/users", Some(&admin), None)
        .await?
        .expect(200, 0)?;

    // With a second admin, the first may go; then the second is the last.
    api.call(
        Method::POST,
        "/cdn_api/users",
        Some(&admin),
        Some(json!({"name": "root2", "password": "root2-password", "role": "admin"})),
    )
    .await?
    .expect(201, 0)?;
    let root2 = api.login("root2", "root2-password").await?;
    api.call(Method::DELETE, "/cdn_api/users/admin", Some(&root2), None)
        .await?
        .expect(200, 0)?;
    api.call(Method::DELETE, "/cdn_api/users/root2", Some(&root2), None)
        .await?
        .expect(409, 2007)?;
    api.call(Method::GET, "/cdn_api/users", Some(&root2), None)
        .await?
        .expect(200, 0)?;
    Ok(())
}

#[tokio::test]
async fn domains_are_validated_registered_once_and_deleted() -> TestResult {
    let (_dir, _server, api) = start().await?;
    let origin = Origin::start().await?;
    let admin = api.admin().await?;
    api.create_user(&admin, "alice").await?;
    let register = |body: Value| {
        let (api, admin) = (api.clone(), admin.clone());
        async move {
            api.call(Method::POST, "/cdn_api/domains", Some(&admin), Some(body))
                .await
        }
    };
    let good_origin = origin.url();

    for (domain, named) in [
        ("not a domain", "not a domain"),
        ("localhost", "localhost"),
        ("bad_label.example.com", "bad_label.example.com"),
        ("10.0.0.1", "10.0.0.1"),
    ] {
        let reply =
            register(json!({"domain": domain, "origin": good_origin, "owner": "alice"})).await?;
        reply
            .expect(400, 2002)
            .map_err(|error| format!("domain {domain:?}: {error}"))?;
        assert_msg_contains(&reply, named);
    }
    for bad_origin in [
        "ftp://127.0.0.1:9000",
        "not a url",
        "http://user:pw@127.0.0.1:9000",
        "http://127.0.0.1:9000/some/path",
    ] {
        let reply = register(
            json!({"domain": "alice.example.com", "origin": bad_origin, "owner": "alice"}),
        )
        .await?;
        reply
            .expect(400, 2002)
            .map_err(|error| format!("origin {bad_origin:?}: {error}"))?;
        assert_msg_contains(&reply, bad_origin);
    }
    for (body, named) in [
        (json!({"origin": good_origin, "owner": "alice"}), "domain"),
        (
            json!({"domain": "alice.example.com", "owner": "alice"}),
            "origin",
        ),
        (
            json!({"domain": "alice.example.com", "origin": good_origin}),
            "owner",
        ),
        (
            json!({"domain": "alice.example.com", "origin": 9000, "owner": "alice"}),
            "origin",
        ),
    ] {
        let reply = register(body.clone()).await?;
        reply
            .expect(400, 2002)
            .map_err(|error| format!("{body}: {error}"))?;
        assert_msg_contains(&reply, named);
    }
    let ghost =
        register(json!({"domain": "alice.example.com", "origin": good_origin, "owner": "ghost"}))
            .await?;
    ghost.expect(404, 3002)?;
    assert_msg_contains(&ghost, "ghost");

    let created =
        register(json!({"domain": "Alice.Example.com", "origin": good_origin, "owner": "alice"}))
            .await?;
    created.expect(201, 0)?;
    assert_eq!(created.get("domain")["domain"], "alice.example.com");
    assert_eq!(created.get("domain")["owner"], "alice");
    for spelling in ["alice.example.com", "ALICE.example.com"] {
        let duplicate =
            register(json!({"domain": spelling, "origin": good_origin, "owner": "admin"})).await?;
        duplicate
            .expect(409, 2007)
            .map_err(|error| format!("{spelling}: {error}"))?;
        assert_msg_contains(&duplicate, "alice.example.com");
    }
    // Only invalid and duplicate attempts happened: one domain, still alice's.
    let listed = api
        .call(Method::GET, "/cdn_api/domains", Some(&admin), None)
        .await?;
    listed.expect(200, 0)?;
    assert_eq!(
        listed.get("domains").as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text()
    );
    assert_eq!(listed.get("domains")[0]["owner"], "alice");

    let path = "/cdn_api/domains/alice.example.com";
    api.call(Method::GET, path, Some(&admin), None)
        .await?
        .expect(200, 0)?;
    api.call(Method::DELETE, path, Some(&admin), None)
        .await?
        .expect(200, 0)?;
    let gone = api.call(Method::GET, path, Some(&admin), None).await?;
    gone.expect(404, 3002)?;
    assert_msg_contains(&gone, "alice.example.com");
    let again = api.call(Method::DELETE, path, Some(&admin), None).await?;
    again.expect(404, 3002)?;
    assert_msg_contains(&again, "alice.example.com");
    Ok(())
}

#[tokio::test]
async fn the_embedded_edge_is_listed_and_up() -> TestResult {
    let (_dir, _server, api) = start().await?;
    let admin = api.admin().await?;
    let started = Instant::now();
    loop {
        let reply = api
            .call(Method::GET, "/cdn_api/edges", Some(&admin), None)
            .await?;
        reply.expect(200, 0)?;
        let edges = reply.get("edges").as_array().ok_or("no edge list")?;
        assert_eq!(edges.len(), 1, "{}", reply.text());
        assert_eq!(edges[0]["name"], "local");
        if edges[0]["up"] == true {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("edge `local` not up after 20 s: {}", reply.text()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn unknown_routes_are_3002_in_the_envelope() -> TestResult {
    let (_dir, _server, api) = start().await?;
    let admin = api.admin().await?;
    for (method, path, token) in [
        (Method::GET, "/cdn_api/no-such-thing", None),
        (Method::GET, "/cdn_api/no-such-thing", Some(admin.as_str())),
        (
            Method::POST,
            "/cdn_api/prefetch/extra/segments",
            Some(admin.as_str()),
        ),
        (Method::GET, "/", None),
    ] {
        let reply = api.call(method.clone(), path, token, None).await?;
        reply
            .expect(404, 3002)
            .map_err(|error| format!("{method} {path}: {error}"))?;
        assert_msg_contains(&reply, path);
    }
    Ok(())
}

#[tokio::test]
async fn every_answer_is_json() -> TestResult {
    let (_dir, _server, api) = start().await?;
    let admin = api.admin().await?;
    type Call<'a> = (Method, &'a str, Option<&'a str>, Option<Vec<u8>>);
    let calls: Vec<Call> = vec![
        (Method::GET, "/cdn_api/health", None, None),
        (Method::GET, "/cdn_api/auth/tokens", Some(&admin), None),
        (Method::GET, "/cdn_api/users", Some(&admin), None),
        (Method::GET, "/cdn_api/domains", Some(&admin), None),
        (Method::GET, "/cdn_api/edges", Some(&admin), None),
        (Method::GET, "/cdn_api/quota", Some(&admin), None),
        (Method::GET, "/cdn_api/prefetch", Some(&admin), None),
        (Method::GET, "/cdn_api/users", None, None),
        (Method::GET, "/cdn_api/users", Some("garbage"), None),
        (
            Method::POST,
            "/cdn_api/users",
            Some(&admin),
            Some(b"{".to_vec()),
        ),
        (Method::PUT, "/cdn_api/prefetch", Some(&admin), None),
        (Method::GET, "/nowhere", None, None),
    ];
    for (method, path, token, body) in calls {
        let reply = api.send(method.clone(), path, token, body).await?;
        let content_type = reply
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        assert_eq!(
            content_type,
            "application/json",
            "{method} {path}: HTTP {} {}",
            reply.status,
            reply.text()
        );
        assert!(
            reply.body["zt_api"]["ret"].is_i64() && reply.body["zt_api"]["msg"].is_string(),
            "{method} {path}: not the envelope: {}",
            reply.text()
        );
    }
    Ok(())
}
