//! The OpenAPI description at `GET /cdn_api/openapi.json`: it is served without a token, parses,
//! describes the routes, and the server's real answers fit the schemas it gives them.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::{url, Reply};
use crate::support::{Api, Behavior, Origin, Server, TestResult};

#[path = "../../crates/api/src/openapi/schema_check.rs"]
mod schema_check;

const HOST: &str = "game.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The schema the description gives the `status` answer of `method path`.
fn answer_schema<'a>(
    doc: &'a Value,
    method: &Method,
    path: &str,
    status: u16,
) -> Result<&'a Value, Error> {
    let schema = &doc["paths"][path][method.as_str().to_lowercase()]["responses"]
        [status.to_string()]["content"]["application/json"]["schema"];
    if schema.is_object() {
        Ok(schema)
    } else {
        Err(format!("{method} {path} has no JSON answer {status} described").into())
    }
}

/// Checks that `reply`, an answer to `method path` (the path as described, `{reqId}` and all),
/// has a status the description lists for it and a body that fits the schema of that status.
fn fits(doc: &Value, method: Method, path: &str, reply: &Reply) -> TestResult {
    let schema = answer_schema(doc, &method, path, reply.status)?;
    schema_check::check(doc, schema, &reply.body).map_err(|error| {
        format!(
            "{method} {path} answered {} that does not fit its description: {error}\n{}",
            reply.status,
            reply.text()
        )
    })?;
    let codes = &doc["paths"][path][method.as_str().to_lowercase()]["x-ret-codes"];
    let listed = codes
        .as_array()
        .is_some_and(|codes| codes.contains(&json!(reply.ret())));
    if !listed {
        return Err(format!("{method} {path}: ret {} is not in {codes}", reply.ret()).into());
    }
    Ok(())
}

/// Calls `method path` with its path parameter (if any) set to `argument`, and checks the
/// answer.
async fn call_fits(
    api: &Api,
    doc: &Value,
    method: Method,
    path: &str,
    argument: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Reply, Error> {
    let concrete = match (path.find('{'), path.find('}')) {
        (Some(open), Some(close)) => format!("{}{argument}{}", &path[..open], &path[close + 1..]),
        _ => path.to_string(),
    };
    let reply = api.call(method.clone(), &concrete, token, body).await?;
    fits(doc, method, path, &reply)?;
    Ok(reply)
}

/// The description the server serves, without a token, as a plain JSON document.
async fn served(api: &Api) -> Result<Value, Error> {
    let served = api
        .send(Method::GET, "/cdn_api/openapi.json", None, None)
        .await?;
    if served.status != 200 || served.headers["content-type"] != "application/json" {
        return Err(format!("openapi.json answered {}: {}", served.status, served.text()).into());
    }
    Ok(served.body)
}

#[tokio::test]
async fn the_description_is_served_and_names_the_routes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let doc = served(&api).await?;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert!(
        doc.get("zt_api").is_none(),
        "the document is not an envelope"
    );
    let submit = &doc["paths"]["/cdn_api/prefetch"]["post"];
    assert!(
        submit["requestBody"]["content"]["application/json"]["schema"].is_object(),
        "{submit}"
    );
    assert!(submit["x-ret-codes"]
        .as_array()
        .is_some_and(|codes| codes.contains(&json!(2003))));
    assert!(doc["paths"]["/cdn_api/prefetch/{reqId}"]["get"].is_object());
    assert!(
        doc["paths"]["/cdn_api/prefetch/{reqId}/events"]["get"]["responses"]["200"]["content"]
            ["text/event-stream"]
            .is_object()
    );
    assert!(doc["paths"]["/metrics"]["get"].is_object());
    for schema in [
        "PrefetchRequest",
        "PrefetchTask",
        "RefreshTask",
        "ErrorEnvelope",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    assert!(doc["components"]["securitySchemes"]["token"].is_object());
    Ok(())
}

/// Real answers, successes and failures, fit the schemas the description gives their status.
#[tokio::test]
async fn real_answers_fit_the_description() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let doc = served(&api).await?;
    let none = "";
    let health = call_fits(&api, &doc, Method::GET, "/cdn_api/health", none, None, None).await?;
    assert_eq!(health.status, 200);
    let login = call_fits(
        &api,
        &doc,
        Method::POST,
        "/cdn_api/auth/tokens",
        none,
        None,
        Some(
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "password": crate::support::server::ADMIN_PASSWORD}}}}}),
        ),
    )
    .await?;
    let admin = login.get("token")["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let wrong = call_fits(
        &api,
        &doc,
        Method::POST,
        "/cdn_api/auth/tokens",
        none,
        None,
        Some(json!({"username": "admin", "password": "wrong"})),
    )
    .await?;
    assert_eq!(wrong.ret(), 1003);
    let admin = Some(admin.as_str());
    call_fits(
        &api,
        &doc,
        Method::GET,
        "/cdn_api/auth/tokens",
        none,
        admin,
        None,
    )
    .await?;
    call_fits(
        &api,
        &doc,
        Method::POST,
        "/cdn_api/users",
        none,
        admin,
        Some(json!({"name": "alice", "password": "alice-password"})),
    )
    .await?;
    let origin = Origin::start().await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"abc")));
    call_fits(
        &api,
        &doc,
        Method::POST,
        "/cdn_api/domains",
        none,
        admin,
        Some(
            json!({"domain": HOST, "origin": origin.url(), "owner": "alice",
                    "cache": {"default_ttl": 60}}),
        ),
    )
    .await?;
    call_fits(
        &api,
        &doc,
        Method::PUT,
        "/cdn_api/domains/{domain}/origin_limits",
        HOST,
        admin,
        Some(json!({"max_concurrent_fetches": 2})),
    )
    .await?;
    call_fits(
        &api,
        &doc,
        Method::POST,
        "/cdn_api/edges",
        none,
        admin,
        Some(json!({"name": "edge-far"})),
    )
    .await?;
    for path in [
        "/cdn_api/users",
        "/cdn_api/domains",
        "/cdn_api/edges",
        "/cdn_api/quota",
    ] {
        call_fits(&api, &doc, Method::GET, path, none, admin, None).await?;
    }
    call_fits(
        &api,
        &doc,
        Method::GET,
        "/cdn_api/quota/{user}",
        "alice",
        admin,
        None,
    )
    .await?;

    let token = api.login("alice", "alice-password").await?;
    let alice = Some(token.as_str());
    let accepted = call_fits(
        &api,
        &doc,
        Method::POST,
        "/cdn_api/prefetch",
        none,
        alice,
        Some(json!({"urls": [url(HOST, "/a.pak")]})),
    )
    .await?;
    let prefetch_id = accepted
        .get("reqId")
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.wait_final(&token, &prefetch_id, Duration::from_secs(30))
        .await?;
    let status_path = "/cdn_api/prefetch/{reqId}";
    call_fits(
        &api,
        &doc,
        Method::GET,
        status_path,
        &prefetch_id,
        alice,
        None,
    )
    .await?;
    call_fits(
        &api,
        &doc,
        Method::DELETE,
        status_path,
        &prefetch_id,
        alice,
        None,
    )
    .await?;
    let unknown = "00000000-0000-4000-8000-000000000000";
    let missing = call_fits(&api, &doc, Method::GET, status_path, unknown, alice, None).await?;
    assert_eq!((missing.status, missing.ret()), (404, 3001));
    let too_many: Vec<String> = (0..11).map(|n| url(HOST, &format!("/{n}"))).collect();
    let rejected = call_fits(
        &api,
        &doc,
        Method::POST,
        "/cdn_api/prefetch",
        none,
        alice,
        Some(json!({"urls": too_many})),
    )
    .await?;
    assert_eq!(rejected.ret(), 2003);

    // A refresh of a URL and a directory, then one that warms its URL again.
    let purge = call_fits(
        &api,
        &doc,
        Method::POST,
        "/cdn_api/refresh",
        none,
        alice,
        Some(
            json!({"urls": [url(HOST, "/a.pak")], "dirs": [url(HOST, "/dir/")],
                    "mode": "invalidate"}),
        ),
    )
    .await?;
    let warm = call_fits(
        &api,
        &doc,
        Method::POST,
        "/cdn_api/refresh",
        none,
        alice,
        Some(json!({"urls": [url(HOST, "/a.pak")], "prefetch": true})),
    )
    .await?;
    for reply in [&purge, &warm] {
        let id = reply.get("reqId").as_str().unwrap_or_default().to_string();
        api.wait_final_of("refresh", &token, &id, Duration::from_secs(30))
            .await?;
        let task = call_fits(
            &api,
            &doc,
            Method::GET,
            "/cdn_api/refresh/{reqId}",
            &id,
            alice,
            None,
        )
        .await?;
        assert_eq!(task.get("status"), "done", "{}", task.text());
    }
    for path in [
        "/cdn_api/prefetch?limit=1",
        "/cdn_api/refresh",
        "/cdn_api/tasks?type=refresh",
    ] {
        let (described, _) = path.split_once('?').unwrap_or((path, ""));
        let reply = api.call(Method::GET, path, alice, None).await?;
        fits(&doc, Method::GET, described, &reply)?;
    }

    // The event stream of an ended task: one `end` event whose data is the status answer.
    let events = reqwest::Client::new()
        .get(format!(
            "{}/cdn_api/prefetch/{prefetch_id}/events",
            api.base
        ))
        .header("X-Auth-Token", &token)
        .send()
        .await?;
    assert!(events.headers()["content-type"]
        .to_str()?
        .starts_with("text/event-stream"));
    let text = events.text().await?;
    let data = text
        .lines()
        .find_map(|line| line.strip_prefix("data:"))
        .ok_or_else(|| format!("no event in {text:?}"))?;
    let event: Value = serde_json::from_str(data.trim())?;
    let schema = answer_schema(&doc, &Method::GET, status_path, 200)?;
    schema_check::check(&doc, schema, &json!({ "zt_api": event }))?;
    Ok(())
}
