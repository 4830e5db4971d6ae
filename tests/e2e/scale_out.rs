//! Scale-out: two `precache api` processes on one PostgreSQL, one parent edge (origin shield)
//! and three child edges, each a `precache edge` process joined with a one-time token.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::url;
use crate::support::pg_cluster::PgCluster;
use crate::support::server::Options;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "patch.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn api_process(dir: &std::path::Path, database_url: &str) -> std::io::Result<Server> {
    Server::start_with(
        dir,
        Options {
            role: "api",
            database_url: Some(database_url.to_string()),
            // A dead engine's pairs are taken over after 3 s instead of 30.
            args: vec!["--engine-lease".into(), "3s".into()],
            ..Options::default()
        },
    )
}

fn edge_process(
    dir: &std::path::Path,
    control: &str,
    name: &str,
    join_token: &str,
) -> std::io::Result<Server> {
    Server::start_with(
        dir,
        Options {
            role: "edge",
            args: vec![
                "--control".into(),
                control.into(),
                "--name".into(),
                name.into(),
                "--join-token".into(),
                join_token.into(),
            ],
            ..Options::default()
        },
    )
}

/// An API client aimed at `edge`'s data plane.
fn via(api: &Api, edge: &Server) -> Api {
    api.at_edge(&edge.edge)
}

async fn create_edge(api: &Api, admin: &str, name: &str, parent: Value) -> Result<String, Error> {
    let reply = api
        .call(
            Method::POST,
            "/cdn_api/edges",
            Some(admin),
            Some(json!({"name": name, "parent": parent})),
        )
        .await?;
    reply.expect(201, 0)?;
    Ok(reply.get("join_token").as_str().unwrap_or("").to_string())
}

/// Waits until `api` sees every edge in `names` up.
async fn wait_edges_up(api: &Api, admin: &str, names: &[&str]) -> Result<Value, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = api
            .call(Method::GET, "/cdn_api/edges", Some(admin), None)
            .await?;
        let edges = reply.get("edges").clone();
        let up = |name: &str| {
            edges.as_array().is_some_and(|list| {
                list.iter()
                    .any(|edge| edge["name"] == name && edge["state"] == "up")
            })
        };
        if names.iter().all(|name| up(name)) {
            return Ok(edges);
        }
        if Instant::now() > deadline {
            return Err(format!("edges not all up: {edges}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child edge hears of its parent in the join answer itself, so its first players already go
/// through the shield: before, it learned of it from its first hello, and a player served before
/// that answer went to the origin (an https origin the child does not trust failed with 502).
#[tokio::test]
async fn the_join_answer_names_the_parent_edge() -> TestResult {
    let (control_dir, shield_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let control = Server::start_with(
        control_dir.path(),
        Options {
            role: "api",
            ..Options::default()
        },
    )?;
    let api = Api::new(&control);
    let admin = api.admin().await?;
    let shield_token = create_edge(&api, &admin, "shield", Value::Null).await?;
    let shield = edge_process(shield_dir.path(), &api.base, "shield", &shield_token)?;
    let join = |name: &str, join_token: String| {
        api.call(
            Method::POST,
            "/cdn_api/edge_protocol/join",
            None,
            Some(json!({"name": name, "join_token": join_token,
                        "admin_url": "http://127.0.0.1:1", "data_url": "http://127.0.0.1:1"})),
        )
    };
    let child_token = create_edge(&api, &admin, "child", json!("shield")).await?;
    let joined = join("child", child_token).await?;
    joined.expect(200, 0)?;
    assert_eq!(
        joined.get("parent_data_url"),
        &json!(format!("http://{}", shield.edge))
    );
    let lone_token = create_edge(&api, &admin, "lone", Value::Null).await?;
    let joined = join("lone", lone_token).await?;
    joined.expect(200, 0)?;
    assert_eq!(joined.get("parent_data_url"), &Value::Null);
    Ok(())
}

#[tokio::test]
async fn two_control_planes_a_shield_and_three_edges() -> TestResult {
    let Some(cluster) = PgCluster::start() else {
        return Ok(());
    };
    let dirs: Vec<tempfile::TempDir> = (0..6)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let api_a = api_process(dirs[0].path(), &cluster.url())?;
    let api_b = api_process(dirs[1].path(), &cluster.url())?;
    let a = Api::new(&api_a);
    let b = Api::new(&api_b);
    let admin = a.admin().await?;

    // Edges are created by an admin and join with one-time tokens.
    let shield_token = create_edge(&a, &admin, "shield", Value::Null).await?;
    let mut child_tokens = Vec::new();
    for name in ["child-1", "child-2", "child-3"] {
        child_tokens.push(create_edge(&b, &admin, name, json!("shield")).await?);
    }
    let unknown_parent = a
        .call(
            Method::POST,
            "/cdn_api/edges",
            Some(&admin),
            Some(json!({"name": "orphan", "parent": "nope"})),
        )
        .await?;
    unknown_parent.expect(404, 3002)?;
    let shield = edge_process(dirs[2].path(), &a.base, "shield", &shield_token)?;
    let mut children = Vec::new();
    for (n, token) in child_tokens.iter().enumerate() {
        // Half the edges talk to each control plane.
        let control = if n % 2 == 0 { &b.base } else { &a.base };
        children.push(edge_process(
            dirs[3 + n].path(),
            control,
            &format!("child-{}", n + 1),
            token,
        )?);
    }
    // A spent token does not join again.
    let reuse = a
        .call(
            Method::POST,
            "/cdn_api/edge_protocol/join",
            None,
            Some(json!({"name": "shield", "join_token": shield_token,
                        "admin_url": "http://127.0.0.1:1", "data_url": "http://127.0.0.1:1"})),
        )
        .await?;
    reuse.expect(401, 1003)?;
    let names = ["shield", "child-1", "child-2", "child-3"];
    wait_edges_up(&a, &admin, &names).await?;
    let edges = wait_edges_up(&b, &admin, &names).await?;
    assert!(
        edges.as_array().is_some_and(|list| list
            .iter()
            .any(|e| e["name"] == "child-1" && e["parent"] == "shield")),
        "{edges}"
    );

    let origin = Origin::start().await?;
    let token = a.user_with_domain("studio", HOST, &origin.url()).await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"version 1")));

    // Prefetch through B reaches all four edges; the shield makes it one origin fetch.
    let req_id = b.prefetch_ok(&token, &[url(HOST, "/a.pak")]).await?;
    let task = a
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    assert_eq!(
        task["urls"][0]["edges"].as_array().map(Vec::len),
        Some(4),
        "{task}"
    );
    for edge in std::iter::once(&shield).chain(&children) {
        let hit = via(&a, edge).edge_get(HOST, "/a.pak").await?;
        assert_eq!(hit.headers()["x-cache"], "HIT");
        assert_eq!(hit.bytes().await?, "version 1");
    }
    assert_eq!(
        origin.count("/a.pak"),
        1,
        "one origin request for four edges; shield: {}",
        shield.log()
    );

    // A control plane killed mid-task: the other one finishes its pairs.
    origin.set(
        "/slow.pak",
        Behavior::Slow(Duration::from_millis(1500), Bytes::from_static(b"slow")),
    );
    let slow_id = a.prefetch_ok(&token, &[url(HOST, "/slow.pak")]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    api_a.kill9();
    let task = b
        .wait_final(&token, &slow_id, Duration::from_secs(40))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    for edge in &children {
        let hit = via(&b, edge).edge_get(HOST, "/slow.pak").await?;
        assert_eq!(hit.headers()["x-cache"], "HIT");
    }
    assert_eq!(origin.count("/slow.pak"), 1);

    // An edge stopped while a refresh is issued applies it before serving from its cache again.
    let stopped_child = children.pop().ok_or("three children")?;
    stopped_child.terminate()?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"version 2")));
    let reply = b
        .call(
            Method::POST,
            "/cdn_api/refresh",
            Some(&token),
            Some(json!({"urls": [url(HOST, "/a.pak")]})),
        )
        .await?;
    reply.expect(200, 0)?;
    let refresh_id = reply.get("reqId").as_str().unwrap_or("").to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pending = b
        .call(
            Method::GET,
            &format!("/cdn_api/refresh/{refresh_id}"),
            Some(&token),
            None,
        )
        .await?;
    assert_ne!(
        pending.get("status"),
        "done",
        "child-3 has not confirmed: {}",
        pending.text()
    );
    let restarted = edge_process(dirs[5].path(), &b.base, "child-3", &child_tokens[2])?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let answer = via(&b, &restarted).edge_get(HOST, "/a.pak").await?;
        assert_eq!(
            answer.bytes().await?,
            "version 2",
            "never the purged version"
        );
    }
    let task = b
        .wait_final_of("refresh", &token, &refresh_id, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    for edge in [&shield, &children[0], &children[1], &restarted] {
        let answer = via(&b, edge).edge_get(HOST, "/a.pak").await?;
        assert_eq!(answer.bytes().await?, "version 2");
    }
    assert_eq!(origin.count("/a.pak"), 2, "one origin fetch per version");

    // A revoked edge's credential stops working at once.
    let revoked = b
        .call(
            Method::POST,
            "/cdn_api/edges/child-1/revoke",
            Some(&admin),
            None,
        )
        .await?;
    revoked.expect(200, 0)?;
    let hello = b
        .call(
            Method::POST,
            "/cdn_api/edge_protocol/hello",
            None,
            Some(json!({"name": "child-1", "admin_url": "http://127.0.0.1:1",
                        "data_url": "http://127.0.0.1:1", "catch_up": false})),
        )
        .await?;
    hello.expect(401, 1001)?;
    let listed = b
        .call(Method::GET, "/cdn_api/edges", Some(&admin), None)
        .await?;
    let state = listed
        .get("edges")
        .as_array()
        .and_then(|list| list.iter().find(|e| e["name"] == "child-1"))
        .map(|edge| edge["state"].clone());
    assert_eq!(state, Some(json!("revoked")));
    Ok(())
}

/// An edge joined through one control plane is usable at once through another: the second
/// reads the edge list from the database for every submission instead of waiting for its next
/// round of calls, so neither a refresh nor a prefetch is refused with `5003`. A prefetch
/// submitted right after a refresh of the same URL keeps its copy, whichever process runs the
/// refresh.
#[tokio::test]
async fn an_edge_joined_through_one_api_takes_tasks_through_the_other_at_once() -> TestResult {
    let Some(cluster) = PgCluster::start() else {
        return Ok(());
    };
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let api_a = api_process(dirs[0].path(), &cluster.url())?;
    let api_b = api_process(dirs[1].path(), &cluster.url())?;
    let a = Api::new(&api_a);
    let b = Api::new(&api_b);
    let admin = a.admin().await?;
    let origin = Origin::start().await?;
    let token = a.user_with_domain("studio", HOST, &origin.url()).await?;
    for round in 0..5 {
        let name = format!("fresh-{round}");
        let path = format!("/round-{round}.pak");
        origin.set(&path, Behavior::Body(Bytes::from(format!("round {round}"))));
        let join_token = create_edge(&a, &admin, &name, Value::Null).await?;
        let edge_dir = tempfile::tempdir()?;
        // The edge is ready once it has joined (through A); B has not called it yet.
        let edge = edge_process(edge_dir.path(), &a.base, &name, &join_token)?;
        let listed = b
            .call(Method::GET, "/cdn_api/edges", Some(&admin), None)
            .await?;
        let state = listed
            .get("edges")
            .as_array()
            .and_then(|list| list.iter().find(|e| e["name"] == json!(name)))
            .map(|edge| edge["state"].clone());
        assert_eq!(state, Some(json!("up")), "round {round}: {}", listed.text());
        // The refresh goes through B or A (then another engine runs it), the prefetch right
        // after it through B: either way the prefetch's copy must outlive the purge.
        let refresher = if round % 2 == 0 { &b } else { &a };
        let refresh_id = refresher
            .refresh_ok(&token, json!({"urls": [url(HOST, &path)]}))
            .await?;
        let prefetch = b.prefetch(&token, &[url(HOST, &path)]).await?;
        prefetch.expect(200, 0)?;
        let req_id = prefetch.get("reqId").as_str().unwrap_or("").to_string();
        let task = b
            .wait_final(&token, &req_id, Duration::from_secs(30))
            .await?;
        assert_eq!(task["status"], "done", "round {round}: {task}");
        let refreshed = refresher
            .wait_final_of("refresh", &token, &refresh_id, Duration::from_secs(30))
            .await?;
        assert_eq!(refreshed["status"], "done", "round {round}: {refreshed}");
        let edges = &task["urls"][0]["edges"];
        assert_eq!(edges.as_array().map(Vec::len), Some(1), "{task}");
        assert_eq!(edges[0]["edge"], json!(name), "{task}");
        let hit = via(&a, &edge).edge_get(HOST, &path).await?;
        assert_eq!(hit.headers()["x-cache"], "HIT");
        // Gone before the next round, so that B again knows of no edge up but the next one.
        b.call(
            Method::POST,
            &format!("/cdn_api/edges/{name}/revoke"),
            Some(&admin),
            None,
        )
        .await?
        .expect(200, 0)?;
        edge.kill9();
    }
    Ok(())
}

/// A free loopback port, for a process that must come back on the same address.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn sqlite_api(dir: &std::path::Path, port: u16, edge_deadline: &str) -> std::io::Result<Server> {
    Server::start_with(
        dir,
        Options {
            role: "api",
            args: vec![
                "--api-listen".into(),
                format!("127.0.0.1:{port}"),
                "--edge-deadline".into(),
                edge_deadline.into(),
            ],
            ..Options::default()
        },
    )
}

fn edge_with_offline_after(
    dir: &std::path::Path,
    control: &str,
    token: &str,
) -> std::io::Result<Server> {
    Server::start_with(
        dir,
        Options {
            role: "edge",
            args: vec![
                "--control".into(),
                control.into(),
                "--name".into(),
                "solo".into(),
                "--join-token".into(),
                token.into(),
                "--offline-after".into(),
                "1s".into(),
            ],
            ..Options::default()
        },
    )
}

#[tokio::test]
async fn an_edge_away_fails_pairs_at_the_deadline_and_catches_up_on_return() -> TestResult {
    let (api_dir, edge_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let port = free_port()?;
    let control = sqlite_api(api_dir.path(), port, "3s")?;
    let api = Api::new(&control);
    let admin = api.admin().await?;
    let token = create_edge(&api, &admin, "solo", Value::Null).await?;
    let edge = edge_with_offline_after(edge_dir.path(), &api.base, &token)?;
    let edges = wait_edges_up(&api, &admin, &["solo"]).await?;
    // Both directions of the edge protocol take the edge's credential and nothing else.
    let admin_url = edges[0]["admin_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let http = reqwest::Client::new();
    for bearer in [None, Some("pce_not-the-credential")] {
        let mut request = http.get(format!("{admin_url}/edge/v1/status"));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        assert_eq!(
            request.send().await?.status(),
            401,
            "edge admin with {bearer:?}"
        );
    }
    let forged = http
        .post(format!("{}/cdn_api/edge_protocol/hello", api.base))
        .bearer_auth("pce_not-the-credential")
        .json(&json!({"name": "solo", "admin_url": "http://127.0.0.1:1",
                      "data_url": "http://127.0.0.1:1", "catch_up": true}))
        .send()
        .await?;
    assert_eq!(forged.status(), 401);
    let forged: Value = forged.json().await?;
    assert_eq!(forged["zt_api"]["ret"], 1002, "{forged}");
    let origin = Origin::start().await?;
    let user = api.user_with_domain("studio", HOST, &origin.url()).await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"version 1")));
    let req_id = api.prefetch_ok(&user, &[url(HOST, "/a.pak")]).await?;
    api.wait_final(&user, &req_id, Duration::from_secs(30))
        .await?;
    let hit = via(&api, &edge).edge_get(HOST, "/a.pak").await?;
    assert_eq!(hit.headers()["x-cache"], "HIT");

    // The edge goes away mid-prefetch: that prefetch, and a refresh issued meanwhile, end failed
    // at the deadline, with the reason.
    origin.set(
        "/b.pak",
        Behavior::Slow(Duration::from_millis(1500), Bytes::from_static(b"b")),
    );
    let prefetch_id = api.prefetch_ok(&user, &[url(HOST, "/b.pak")]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    edge.kill9();
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"version 2")));
    let reply = api
        .call(
            Method::POST,
            "/cdn_api/refresh",
            Some(&user),
            Some(json!({"urls": [url(HOST, "/a.pak")]})),
        )
        .await?;
    reply.expect(200, 0)?;
    let refresh_id = reply.get("reqId").as_str().unwrap_or("").to_string();
    let prefetch = api
        .wait_final(&user, &prefetch_id, Duration::from_secs(30))
        .await?;
    assert_eq!(prefetch["status"], "failed", "{prefetch}");
    let error = prefetch["urls"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("unreachable"), "{error:?}");
    let refresh = api
        .wait_final_of("refresh", &user, &refresh_id, Duration::from_secs(30))
        .await?;
    assert_eq!(refresh["status"], "failed", "{refresh}");
    let edges = api
        .call(Method::GET, "/cdn_api/edges", Some(&admin), None)
        .await?;
    assert_eq!(
        edges.get("edges")[0]["backlog"]["owed_purges"],
        1,
        "{}",
        edges.text()
    );
    // A prefetch with no edge up is refused; nothing is accepted.
    assert_eq!(edges.get("edges")[0]["state"], "down", "{}", edges.text());
    api.prefetch(&user, &[url(HOST, "/b.pak")])
        .await?
        .expect(503, 5003)?;

    // Back with its old cache: it applies the purge it owes before serving from the cache.
    let edge = edge_with_offline_after(edge_dir.path(), &api.base, &token)?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let answer = via(&api, &edge).edge_get(HOST, "/a.pak").await?;
        assert_eq!(
            answer.bytes().await?,
            "version 2",
            "never the purged version"
        );
    }
    let edges = api
        .call(Method::GET, "/cdn_api/edges", Some(&admin), None)
        .await?;
    assert_eq!(edges.get("edges")[0]["backlog"]["owed_purges"], 0);
    let cached = via(&api, &edge).edge_get(HOST, "/a.pak").await?;
    assert_eq!(cached.headers()["x-cache"], "HIT");

    // Cut off from its control plane, it serves past its cache; back in touch, from it again.
    control.terminate()?;
    // Hits cost the origin nothing; once the silence passes --offline-after (1 s), the next
    // request goes past the cache to the origin.
    let before = origin.count("/a.pak");
    let deadline = Instant::now() + Duration::from_secs(15);
    let passed = loop {
        let answer = via(&api, &edge).edge_get(HOST, "/a.pak").await?;
        if answer.headers()["x-cache"] == "MISS" {
            break answer;
        }
        assert_eq!(origin.count("/a.pak"), before, "a hit reaches no origin");
        if Instant::now() > deadline {
            return Err("the edge kept serving from its cache while cut off".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(passed.bytes().await?, "version 2");
    assert_eq!(origin.count("/a.pak"), before + 1);
    let _control = sqlite_api(api_dir.path(), port, "3s")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = via(&api, &edge).edge_get(HOST, "/a.pak").await?;
        if answer.headers()["x-cache"] == "HIT" {
            break;
        }
        if Instant::now() > deadline {
            return Err("the edge never served from its cache again".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A refresh whose purge waits for its edge (away when the refresh was accepted) still goes
/// before a prefetch of the same URL submitted the moment the edge is back: the new copy stays.
#[tokio::test]
async fn a_prefetch_waits_for_a_purge_that_waits_for_its_edge() -> TestResult {
    let (api_dir, edge_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let control = sqlite_api(api_dir.path(), free_port()?, "60s")?;
    let api = Api::new(&control);
    let admin = api.admin().await?;
    let token = create_edge(&api, &admin, "solo", Value::Null).await?;
    let mut edge = edge_with_offline_after(edge_dir.path(), &api.base, &token)?;
    wait_edges_up(&api, &admin, &["solo"]).await?;
    let origin = Origin::start().await?;
    let user = api.user_with_domain("studio", HOST, &origin.url()).await?;
    for round in 0..10 {
        let version = format!("version {round}");
        origin.set("/a.pak", Behavior::Body(Bytes::from(version.clone())));
        edge.kill9();
        let refresh_id = api
            .refresh_ok(&user, json!({"urls": [url(HOST, "/a.pak")]}))
            .await?;
        // Long enough for the purge's attempt to find the edge gone and wait aside.
        tokio::time::sleep(Duration::from_millis(300)).await;
        edge = edge_with_offline_after(edge_dir.path(), &api.base, &token)?;
        wait_edges_up(&api, &admin, &["solo"]).await?;
        let prefetch_id = api.prefetch_ok(&user, &[url(HOST, "/a.pak")]).await?;
        let prefetch = api
            .wait_final(&user, &prefetch_id, Duration::from_secs(30))
            .await?;
        assert_eq!(prefetch["status"], "done", "round {round}: {prefetch}");
        let refresh = api
            .wait_final_of("refresh", &user, &refresh_id, Duration::from_secs(30))
            .await?;
        assert_eq!(refresh["status"], "done", "round {round}: {refresh}");
        let fetched = origin.count("/a.pak");
        let hit = via(&api, &edge).edge_get(HOST, "/a.pak").await?;
        assert_eq!(hit.headers()["x-cache"], "HIT", "round {round}");
        assert_eq!(hit.bytes().await?, version);
        assert_eq!(origin.count("/a.pak"), fetched);
    }
    Ok(())
}

/// The same across two control planes: a refresh taken by A whose purge waits for its edge, and
/// a prefetch of the URL taken by B the moment the edge is back. B's prefetch waits for A's
/// purge (read in the database), so the new copy stays.
#[tokio::test]
async fn a_prefetch_waits_for_another_processes_purge_that_waits_for_its_edge() -> TestResult {
    let Some(cluster) = PgCluster::start() else {
        return Ok(());
    };
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let api_a = api_process(dirs[0].path(), &cluster.url())?;
    let api_b = api_process(dirs[1].path(), &cluster.url())?;
    let (a, b) = (Api::new(&api_a), Api::new(&api_b));
    let admin = a.admin().await?;
    let join_token = create_edge(&a, &admin, "solo", Value::Null).await?;
    let mut edge = edge_process(dirs[2].path(), &a.base, "solo", &join_token)?;
    wait_edges_up(&a, &admin, &["solo"]).await?;
    let origin = Origin::start().await?;
    let user = a.user_with_domain("studio", HOST, &origin.url()).await?;
    for round in 0..6 {
        let version = format!("version {round}");
        origin.set("/a.pak", Behavior::Body(Bytes::from(version.clone())));
        edge.kill9();
        let refresh_id = a
            .refresh_ok(&user, json!({"urls": [url(HOST, "/a.pak")]}))
            .await?;
        // Long enough for A's purge to find the edge gone and wait aside.
        tokio::time::sleep(Duration::from_millis(300)).await;
        edge = edge_process(dirs[2].path(), &a.base, "solo", &join_token)?;
        wait_edges_up(&b, &admin, &["solo"]).await?;
        let prefetch_id = b.prefetch_ok(&user, &[url(HOST, "/a.pak")]).await?;
        let prefetch = b
            .wait_final(&user, &prefetch_id, Duration::from_secs(30))
            .await?;
        assert_eq!(prefetch["status"], "done", "round {round}: {prefetch}");
        let refresh = a
            .wait_final_of("refresh", &user, &refresh_id, Duration::from_secs(30))
            .await?;
        assert_eq!(refresh["status"], "done", "round {round}: {refresh}");
        // A's engine is done with its purge once it has run it (or learnt it was applied).
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let fetched = origin.count("/a.pak");
        let hit = via(&a, &edge).edge_get(HOST, "/a.pak").await?;
        assert_eq!(hit.headers()["x-cache"], "HIT", "round {round}");
        assert_eq!(hit.bytes().await?, version);
        assert_eq!(origin.count("/a.pak"), fetched);
    }
    Ok(())
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM files in `dir`: (ca, cert, key).
fn tls_files(
    dir: &std::path::Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf), Error> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
        .signed_by(&key, &ca, &ca_key)?;
    let paths = (
        dir.join("ca.pem"),
        dir.join("edge.pem"),
        dir.join("edge-key.pem"),
    );
    std::fs::write(&paths.0, ca.pem())?;
    std::fs::write(&paths.1, cert.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    Ok(paths)
}

#[tokio::test]
async fn the_edge_protocol_runs_over_tls() -> TestResult {
    let (api_dir, edge_dir, tls_dir) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let (ca, cert, key) = tls_files(tls_dir.path())?;
    let ca_flag = ca.to_string_lossy().to_string();
    let control = Server::start_with(
        api_dir.path(),
        Options {
            role: "api",
            args: vec!["--tls-ca-file".into(), ca_flag],
            ..Options::default()
        },
    )?;
    let api = Api::new(&control);
    let admin = api.admin().await?;
    let token = create_edge(&api, &admin, "tls-edge", Value::Null).await?;
    let edge = Server::start_with(
        edge_dir.path(),
        Options {
            role: "edge",
            args: vec![
                "--control".into(),
                api.base.clone(),
                "--name".into(),
                "tls-edge".into(),
                "--join-token".into(),
                token,
                "--edge-admin-tls-cert".into(),
                cert.to_string_lossy().to_string(),
                "--edge-admin-tls-key".into(),
                key.to_string_lossy().to_string(),
            ],
            ..Options::default()
        },
    )?;
    let edges = wait_edges_up(&api, &admin, &["tls-edge"]).await?;
    assert!(
        edges[0]["admin_url"]
            .as_str()
            .is_some_and(|url| url.starts_with("https://")),
        "{edges}"
    );
    // Plain HTTP to the admin listener gets no answer.
    let admin_addr = edges[0]["admin_url"]
        .as_str()
        .unwrap_or_default()
        .replace("https://", "http://");
    let plain = reqwest::Client::new()
        .get(format!("{admin_addr}/edge/v1/status"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    let origin = Origin::start().await?;
    let user = api.user_with_domain("studio", HOST, &origin.url()).await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"over tls")));
    let req_id = api.prefetch_ok(&user, &[url(HOST, "/a.pak")]).await?;
    let task = api
        .wait_final(&user, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    let hit = via(&api, &edge).edge_get(HOST, "/a.pak").await?;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    Ok(())
}

fn one_way_edge(
    dir: &std::path::Path,
    control: &str,
    token: &str,
    admin_url: Option<String>,
) -> std::io::Result<Server> {
    let mut args = vec![
        "--control".into(),
        control.into(),
        "--name".into(),
        "one-way".into(),
        "--join-token".into(),
        token.into(),
    ];
    if let Some(admin_url) = admin_url {
        args.extend(["--edge-admin-url".into(), admin_url]);
    }
    Server::start_with(
        dir,
        Options {
            role: "edge",
            args,
            ..Options::default()
        },
    )
}

#[tokio::test]
async fn an_edge_the_control_plane_cannot_reach_catches_up_from_its_hellos() -> TestResult {
    let (api_dir, edge_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let control = Server::start_with(
        api_dir.path(),
        Options {
            role: "api",
            ..Options::default()
        },
    )?;
    let api = Api::new(&control);
    let admin = api.admin().await?;
    let token = create_edge(&api, &admin, "one-way", Value::Null).await?;
    let edge = one_way_edge(edge_dir.path(), &api.base, &token, None)?;
    wait_edges_up(&api, &admin, &["one-way"]).await?;
    let origin = Origin::start().await?;
    let user = api.user_with_domain("studio", HOST, &origin.url()).await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"version 1")));
    let req_id = api.prefetch_ok(&user, &[url(HOST, "/a.pak")]).await?;
    api.wait_final(&user, &req_id, Duration::from_secs(30))
        .await?;

    // Back with an admin address where nothing listens: it reaches the control plane, but no
    // push reaches it.
    edge.terminate()?;
    let nowhere = format!("http://127.0.0.1:{}", free_port()?);
    let edge = one_way_edge(edge_dir.path(), &api.base, &token, Some(nowhere))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = via(&api, &edge).edge_get(HOST, "/a.pak").await?;
        if answer.headers()["x-cache"] == "HIT" {
            break;
        }
        if Instant::now() > deadline {
            return Err("the edge never served from its cache".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A refresh cannot be pushed; the edge learns from its hellos that it is behind.
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"version 2")));
    let reply = api
        .call(
            Method::POST,
            "/cdn_api/refresh",
            Some(&user),
            Some(json!({"urls": [url(HOST, "/a.pak")]})),
        )
        .await?;
    reply.expect(200, 0)?;
    let refresh_id = reply.get("reqId").as_str().unwrap_or("").to_string();
    let task = api
        .wait_final_of("refresh", &user, &refresh_id, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    let answer = via(&api, &edge).edge_get(HOST, "/a.pak").await?;
    assert_eq!(answer.bytes().await?, "version 2");
    Ok(())
}
