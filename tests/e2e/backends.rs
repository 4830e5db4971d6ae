//! Backends (API.md §11): tasks carried out on the Varnish, nginx and Traffic Server caches an
//! operator already runs, beside precache's own edges, with one status. The caches are the
//! real daemons, started on loopback with the documented configuration (docs/backends/); a
//! test whose cache is not installed is skipped unless `PRECACHE_REQUIRE_CACHES=1`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::caches::{self, CacheServer};
use crate::support::client::url;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "patch.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Fixture {
    dir: tempfile::TempDir,
    server: Server,
    api: Api,
    origin: Origin,
    admin: String,
    token: String,
}

impl Fixture {
    async fn start() -> Result<Fixture, Error> {
        let dir = tempfile::tempdir()?;
        let server = Server::start(dir.path())?;
        let api = Api::new(&server);
        let origin = Origin::start().await?;
        let token = api.user_with_domain("studio", HOST, &origin.url()).await?;
        let admin = api.admin().await?;
        Ok(Fixture {
            dir,
            server,
            api,
            origin,
            admin,
            token,
        })
    }

    fn origin_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.origin.url().trim_start_matches("http://").parse()?)
    }

    /// An object the caches may keep for an hour.
    fn serve(&self, path: &str) {
        self.origin.set(
            path,
            Behavior::WithHeaders(
                Bytes::from(format!("body of {path}")),
                vec![("cache-control", "max-age=3600")],
            ),
        );
    }

    async fn register(&self, name: &str, kind: &str, targets: &[String]) -> Result<(), Error> {
        self.api
            .call(
                Method::POST,
                "/cdn_api/backends",
                Some(&self.admin),
                Some(json!({"name": name, "kind": kind, "targets": targets})),
            )
            .await?
            .expect(201, 0)?;
        Ok(())
    }

    async fn use_backends(&self, names: &[&str]) -> Result<(), Error> {
        self.api
            .call(
                Method::PUT,
                &format!("/cdn_api/domains/{HOST}/backends"),
                Some(&self.admin),
                Some(json!({"backends": names})),
            )
            .await?
            .expect(200, 0)?;
        Ok(())
    }

    async fn prefetch(&self, paths: &[&str]) -> Result<Value, Error> {
        let urls: Vec<String> = paths.iter().map(|path| url(HOST, path)).collect();
        let req_id = self.api.prefetch_ok(&self.token, &urls).await?;
        self.api
            .wait_final(&self.token, &req_id, Duration::from_secs(60))
            .await
    }

    async fn refresh(&self, body: Value) -> Result<Value, Error> {
        let reply = self
            .api
            .call(
                Method::POST,
                "/cdn_api/refresh",
                Some(&self.token),
                Some(body),
            )
            .await?;
        reply.expect(200, 0)?;
        let req_id = reply.get("reqId").as_str().unwrap_or("").to_string();
        self.api
            .wait_final_of("refresh", &self.token, &req_id, Duration::from_secs(60))
            .await
    }
}

fn target(cache: &CacheServer) -> String {
    format!("http://{}", cache.addr)
}

/// A player's GET through a cache.
async fn get_via(cache: &CacheServer, path: &str) -> Result<(u16, Bytes), Error> {
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?
        .get(format!("http://{}{path}", cache.addr))
        .header("host", HOST)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.bytes().await?))
}

/// The entries of the URL at `index` of a task, one per target.
fn entries(task: &Value, index: usize) -> Vec<Value> {
    task["urls"][index]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn backend_entries(task: &Value, index: usize, backend: &str) -> Vec<Value> {
    entries(task, index)
        .into_iter()
        .filter(|entry| entry["backend"] == backend)
        .collect()
}

#[tokio::test]
async fn a_varnish_fleet_is_prefetched_refreshed_by_url_and_directory_and_invalidated() -> TestResult
{
    let fixture = Fixture::start().await?;
    let origin_addr = fixture.origin_addr()?;
    let (Some(first), Some(second)) =
        (caches::varnish(origin_addr)?, caches::varnish(origin_addr)?)
    else {
        return Ok(());
    };
    let fleet = [&first, &second];
    fixture
        .register("varnish-sh", "varnish", &[target(&first), target(&second)])
        .await?;
    fixture.use_backends(&["edges", "varnish-sh"]).await?;
    let paths = ["/static/a.pak", "/static/b.pak", "/static-other/c.pak"];
    for path in paths {
        fixture.serve(path);
    }

    // A prefetch lands on the edge and on both caches; the status has one entry per target.
    let task = fixture.prefetch(&paths).await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    let varnish = backend_entries(&task, 0, "varnish-sh");
    assert_eq!(varnish.len(), 2, "{task}");
    let mut targets: Vec<&str> = varnish
        .iter()
        .filter_map(|e| e["target"].as_str())
        .collect();
    targets.sort_unstable();
    let mut expected = [target(&first), target(&second)];
    expected.sort();
    assert_eq!(
        targets,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(varnish[0]["http_status"], 200);
    assert_eq!(backend_entries(&task, 0, "edges").len(), 1, "{task}");
    for path in paths {
        assert_eq!(
            fixture.origin.count(path),
            3,
            "edge + two caches fetched {path}"
        );
    }
    // Players' requests through either cache are hits: the origin hears nothing.
    for cache in fleet {
        for path in paths {
            let (status, body) = get_via(cache, path).await?;
            assert_eq!(status, 200);
            assert_eq!(body, format!("body of {path}"));
        }
    }
    for path in paths {
        assert_eq!(fixture.origin.count(path), 3, "{path} was a hit everywhere");
    }

    // A URL refresh removes it from every cache (which says it was cached), and only it.
    let task = fixture
        .refresh(json!({"urls": [url(HOST, "/static/a.pak")]}))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    for entry in backend_entries(&task, 0, "varnish-sh") {
        assert_eq!(entry["status"], "success", "{entry}");
        assert_eq!(entry["was_cached"], true, "{entry}");
    }
    for cache in fleet {
        get_via(cache, "/static/a.pak").await?;
        get_via(cache, "/static/b.pak").await?;
    }
    assert_eq!(
        fixture.origin.count("/static/a.pak"),
        5,
        "a miss on each cache"
    );
    assert_eq!(
        fixture.origin.count("/static/b.pak"),
        3,
        "the others untouched"
    );

    // A directory refresh bans exactly the prefix; Varnish cannot say what it held.
    let task = fixture
        .refresh(json!({"dirs": [url(HOST, "/static/")]}))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    for entry in backend_entries(&task, 0, "varnish-sh") {
        assert_eq!(entry["status"], "success", "{entry}");
        assert_eq!(entry["was_cached"], Value::Null, "never a guess: {entry}");
    }
    for cache in fleet {
        get_via(cache, "/static/b.pak").await?;
        get_via(cache, "/static-other/c.pak").await?;
    }
    assert_eq!(
        fixture.origin.count("/static/b.pak"),
        5,
        "under the prefix: misses"
    );
    assert_eq!(
        fixture.origin.count("/static-other/c.pak"),
        3,
        "beside the prefix: hits"
    );

    // Invalidation leaves a stale copy that the next request revalidates with the origin.
    let task = fixture
        .refresh(json!({"urls": [url(HOST, "/static-other/c.pak")], "mode": "invalidate"}))
        .await?;
    for entry in backend_entries(&task, 0, "varnish-sh") {
        assert_eq!(entry["status"], "success", "{entry}");
        assert_eq!(entry["was_cached"], true, "{entry}");
        assert!(
            entry.get("note").is_none(),
            "Varnish can invalidate: {entry}"
        );
    }
    let (status, body) = get_via(&first, "/static-other/c.pak").await?;
    assert_eq!(
        (status, body),
        (200, Bytes::from("body of /static-other/c.pak"))
    );
    assert_eq!(
        fixture.origin.count("/static-other/c.pak"),
        4,
        "revalidated once"
    );
    Ok(())
}

#[tokio::test]
async fn nginx_says_what_it_held_and_what_it_cannot_do() -> TestResult {
    let fixture = Fixture::start().await?;
    let Some(nginx) = caches::nginx(fixture.origin_addr()?)? else {
        return Ok(());
    };
    fixture
        .register("nginx-sh", "nginx", &[target(&nginx)])
        .await?;
    // Only the cache: the domain's tasks no longer touch precache's edges.
    fixture.use_backends(&["nginx-sh"]).await?;
    fixture.serve("/a.pak");

    let task = fixture
        .refresh(json!({"urls": [url(HOST, "/a.pak")]}))
        .await?;
    let entry = &entries(&task, 0)[0];
    assert_eq!(entry["backend"], "nginx-sh", "{task}");
    assert_eq!(entry["status"], "success", "{entry}");
    assert_eq!(entry["was_cached"], false, "nginx answered 404: {entry}");
    assert_eq!(entries(&task, 0).len(), 1, "no edge: {task}");

    let task = fixture.prefetch(&["/a.pak"]).await?;
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    assert_eq!(get_via(&nginx, "/a.pak").await?.0, 200);
    assert_eq!(
        fixture.origin.count("/a.pak"),
        1,
        "the GET after the prefetch was a hit"
    );

    // nginx cannot invalidate: the refresh deletes, and says so.
    let task = fixture
        .refresh(json!({"urls": [url(HOST, "/a.pak")], "mode": "invalidate"}))
        .await?;
    let entry = &entries(&task, 0)[0];
    assert_eq!(entry["status"], "success", "{entry}");
    assert_eq!(entry["was_cached"], true, "{entry}");
    assert_eq!(entry["note"], "deleted: nginx cannot invalidate", "{entry}");
    get_via(&nginx, "/a.pak").await?;
    assert_eq!(fixture.origin.count("/a.pak"), 2, "deleted: a full fetch");

    // nor purge a directory: that pair is unsupported, finished, and left out of the rate.
    let task = fixture
        .refresh(json!({"urls": [url(HOST, "/a.pak")], "dirs": [url(HOST, "/static/")]}))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    assert_eq!(task["pairs_unsupported"], 1, "{task}");
    let dir = task["urls"]
        .as_array()
        .and_then(|urls| urls.iter().find(|u| u["dir"] == true))
        .cloned()
        .unwrap_or_default();
    assert_eq!(dir["status"], "unsupported", "{task}");
    assert_eq!(dir["edges"][0]["status"], "unsupported");
    assert!(
        dir["edges"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot purge a directory")),
        "{dir}"
    );
    Ok(())
}

#[tokio::test]
async fn traffic_server_is_prefetched_and_purged() -> TestResult {
    let fixture = Fixture::start().await?;
    let Some(ats) = caches::trafficserver(fixture.origin_addr()?)? else {
        return Ok(());
    };
    fixture
        .register("ats", "trafficserver", &[target(&ats)])
        .await?;
    fixture.use_backends(&["ats"]).await?;
    fixture.serve("/a.pak");
    let task = fixture.prefetch(&["/a.pak"]).await?;
    assert_eq!(task["success_rate"], json!(100.0), "{task}; {}", ats.log());
    assert_eq!(get_via(&ats, "/a.pak").await?.0, 200);
    assert_eq!(
        fixture.origin.count("/a.pak"),
        1,
        "a hit after the prefetch"
    );
    let task = fixture
        .refresh(json!({"urls": [url(HOST, "/a.pak")]}))
        .await?;
    assert_eq!(entries(&task, 0)[0]["was_cached"], true, "{task}");
    let task = fixture
        .refresh(json!({"urls": [url(HOST, "/a.pak")]}))
        .await?;
    assert_eq!(entries(&task, 0)[0]["was_cached"], false, "{task}");
    get_via(&ats, "/a.pak").await?;
    assert_eq!(fixture.origin.count("/a.pak"), 2, "a miss after the purge");
    Ok(())
}

#[tokio::test]
async fn a_target_that_is_down_fails_its_pairs_while_the_others_succeed() -> TestResult {
    let fixture = Fixture::start().await?;
    let Some(live) = caches::varnish(fixture.origin_addr()?)? else {
        return Ok(());
    };
    // A port nothing listens on.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", listener.local_addr()?)
    };
    fixture
        .register("varnish-sh", "varnish", &[target(&live), dead.clone()])
        .await?;
    fixture.use_backends(&["varnish-sh"]).await?;
    fixture.serve("/a.pak");
    let task = fixture.prefetch(&["/a.pak"]).await?;
    assert_eq!(task["success_rate"], json!(50.0), "{task}");
    let failed = entries(&task, 0)
        .into_iter()
        .find(|entry| entry["target"] == dead.as_str())
        .unwrap_or_default();
    assert_eq!(failed["status"], "failed", "{task}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("target unreachable: varnish") && error.contains("after 3 attempts"),
        "{error}"
    );
    assert_eq!(get_via(&live, "/a.pak").await?.0, 200);
    assert_eq!(fixture.origin.count("/a.pak"), 1);
    Ok(())
}

#[tokio::test]
async fn backend_pairs_end_after_a_kill_9_of_serve() -> TestResult {
    let fixture = Fixture::start().await?;
    let Some(cache) = caches::varnish(fixture.origin_addr()?)? else {
        return Ok(());
    };
    fixture
        .register("varnish-sh", "varnish", &[target(&cache)])
        .await?;
    fixture.use_backends(&["varnish-sh"]).await?;
    fixture.origin.set(
        "/slow.pak",
        Behavior::Slow(Duration::from_millis(1500), Bytes::from_static(b"slow")),
    );
    let req_id = fixture
        .api
        .prefetch_ok(&fixture.token, &[url(HOST, "/slow.pak")])
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Fixture {
        dir,
        server,
        origin: _origin,
        token,
        ..
    } = fixture;
    server.kill9();
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let task = api
        .wait_final(&token, &req_id, Duration::from_secs(60))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!(task["success_rate"], json!(100.0), "{task}");
    assert_eq!(entries(&task, 0)[0]["backend"], "varnish-sh");
    Ok(())
}

#[tokio::test]
async fn backends_are_validated_listed_checked_and_deleted_only_when_unused() -> TestResult {
    let fixture = Fixture::start().await?;
    let api = &fixture.api;
    let admin = Some(fixture.admin.as_str());
    let create = |body: Value| api.call(Method::POST, "/cdn_api/backends", admin, Some(body));
    let target = "http://127.0.0.1:6081";
    for (body, ret) in [
        (
            json!({"name": "x", "kind": "squid", "targets": [target]}),
            2002,
        ),
        (json!({"name": "x", "kind": "varnish"}), 2002),
        (json!({"name": "x", "kind": "varnish", "targets": []}), 2002),
        (
            json!({"name": "x", "kind": "varnish", "targets": ["ftp://h"]}),
            2002,
        ),
        (
            json!({"name": "x", "kind": "varnish", "targets": ["http://h:1/path"]}),
            2002,
        ),
        (
            json!({"name": "x", "kind": "varnish", "targets": [target, target]}),
            2002,
        ),
        (
            json!({"name": "x", "kind": "varnish", "targets": [target], "settings": {"ttl": 1}}),
            2002,
        ),
        (
            json!({"name": "x", "kind": "nginx", "targets": [target], "settings": {"purge_prefix": "purge"}}),
            2002,
        ),
        (
            json!({"name": "x", "kind": "varnish", "targets": [target], "credentials": {"k": "v"}}),
            2002,
        ),
        (
            json!({"name": "Bad Name", "kind": "varnish", "targets": [target]}),
            2002,
        ),
        (
            json!({"name": "edges", "kind": "varnish", "targets": [target]}),
            2007,
        ),
    ] {
        let reply = create(body.clone()).await?;
        assert_eq!(reply.ret(), ret, "{body}: {}", reply.text());
    }
    // Nothing of those was created.
    let listed = api
        .call(Method::GET, "/cdn_api/backends", admin, None)
        .await?;
    assert_eq!(listed.get("backends"), &json!([]));

    // A dead target: created (it may come up later), but its check says so.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", listener.local_addr()?)
    };
    let created = create(
        json!({"name": "nginx-sh", "kind": "nginx", "targets": [dead],
                                "settings": {"concurrency": 4}}),
    )
    .await?;
    created.expect(201, 0)?;
    assert_eq!(created.get("backend")["capabilities"]["dir_purge"], false);
    create(json!({"name": "nginx-sh", "kind": "nginx", "targets": [dead]}))
        .await?
        .expect(409, 2007)?;
    let shown = api
        .call(Method::GET, "/cdn_api/backends/nginx-sh", admin, None)
        .await?;
    shown.expect(200, 0)?;
    assert_eq!(shown.get("backend")["targets"], json!([dead]));
    assert_eq!(shown.get("backend")["settings"], json!({"concurrency": 4}));
    let check = api
        .call(
            Method::POST,
            "/cdn_api/backends/nginx-sh/check",
            admin,
            None,
        )
        .await?;
    check.expect(200, 0)?;
    assert_eq!(check.get("ok"), &json!(false), "{}", check.text());
    assert!(check.get("targets")[0]["reason"]
        .as_str()
        .is_some_and(|reason| reason.starts_with("target unreachable")));

    // Domains name backends that exist; one in use cannot be deleted.
    let path = format!("/cdn_api/domains/{HOST}/backends");
    let set = |names: Value| api.call(Method::PUT, &path, admin, Some(json!({"backends": names})));
    set(json!(["nope"])).await?.expect(404, 3002)?;
    set(json!([])).await?.expect(400, 2002)?;
    set(json!(["edges", "edges"])).await?.expect(400, 2002)?;
    let changed = set(json!(["edges", "nginx-sh"])).await?;
    changed.expect(200, 0)?;
    assert_eq!(
        changed.get("domain")["backends"],
        json!(["edges", "nginx-sh"])
    );
    api.call(Method::DELETE, "/cdn_api/backends/nginx-sh", admin, None)
        .await?
        .expect(409, 2007)?;
    set(json!(["edges"])).await?.expect(200, 0)?;
    api.call(Method::DELETE, "/cdn_api/backends/nginx-sh", admin, None)
        .await?
        .expect(200, 0)?;
    api.call(Method::GET, "/cdn_api/backends/nginx-sh", admin, None)
        .await?
        .expect(404, 3002)?;
    // A user is no admin.
    api.call(Method::GET, "/cdn_api/backends", Some(&fixture.token), None)
        .await?
        .expect(403, 1004)?;
    Ok(())
}
