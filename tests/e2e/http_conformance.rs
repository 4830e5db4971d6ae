//! The edge against the HTTP caching RFCs (issue 16, header rules): freshness that is invalid,
//! HTTP-date forms, `Age`, `Date`, hop-by-hop fields, `no-cache` with a failing origin, 304
//! updates, `CDN-Cache-Control`, statuses, and methods other than GET and HEAD.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::json;

use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "web.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A server with `HOST` registered against an origin, and a plain client for the data plane.
struct Fixture {
    dir: tempfile::TempDir,
    server: Server,
    origin: Origin,
    http: reqwest::Client,
}

async fn setup() -> Result<Fixture, Error> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let origin = Origin::start().await?;
    let api = Api::new(&server);
    let admin = api.admin().await?;
    api.create_user(&admin, "alice").await?;
    api.call(
        Method::POST,
        "/cdn_api/domains",
        Some(&admin),
        Some(json!({"domain": HOST, "origin": origin.url(), "owner": "alice"})),
    )
    .await?
    .expect(201, 0)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        // The tests look at redirects themselves.
        .redirect(reqwest::redirect::Policy::none())
        // The edge closes the connection after an error it generated; a fresh connection per
        // request keeps the next request from racing that close.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok(Fixture {
        dir,
        server,
        origin,
        http,
    })
}

/// What the edge answered.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("")
    }
}

impl Fixture {
    async fn send(
        &self,
        method: Method,
        host: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, Error> {
        let response = self
            .http
            .request(method, format!("http://{}{path}", self.server.edge))
            .header("Host", host)
            .body(body)
            .send()
            .await?;
        Ok(Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await?,
        })
    }

    async fn get(&self, path: &str) -> Result<Answer, Error> {
        self.send(Method::GET, HOST, path, Bytes::new()).await
    }
}

/// A 200 with these header lines (in order, names may repeat) and a short body.
fn ok_with(lines: &[(&str, &str)]) -> Behavior {
    Behavior::Answer(
        200,
        lines
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        Bytes::from_static(b"the object\n"),
    )
}

/// The time `seconds` from now (negative: ago).
fn now_plus(seconds: i64) -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    now.checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or(now)
}

/// An HTTP-date `seconds` from now, in the preferred form.
fn http_date_in(seconds: i64) -> String {
    now_plus(seconds)
        .strftime("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[tokio::test]
async fn invalid_freshness_is_stored_stale_and_revalidated_never_served_fresh() -> TestResult {
    let fixture = setup().await?;
    let future = http_date_in(3600);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/negative", vec![("cache-control", "max-age=-1")]),
        ("/single-quoted", vec![("cache-control", "max-age='3600'")]),
        (
            "/double-quoted",
            vec![("cache-control", "max-age=\"3600\"")],
        ),
        ("/spaced", vec![("cache-control", "max-age = 60")]),
        (
            "/two-expires",
            vec![("expires", future.as_str()), ("expires", future.as_str())],
        ),
        ("/bad-expires", vec![("expires", "next tuesday")]),
    ];
    for (path, lines) in &cases {
        let mut lines = lines.clone();
        lines.push(("etag", "\"v1\""));
        fixture.origin.set(path, ok_with(&lines));
        let first = fixture.get(path).await?;
        assert_eq!((first.status, first.x_cache()), (200, "MISS"), "{path}");
        let second = fixture.get(path).await?;
        assert_eq!(second.status, 200, "{path}");
        assert_eq!(
            (
                fixture.origin.count(path),
                fixture.origin.not_modified(path)
            ),
            (2, 1),
            "{path}: stored, but revalidated on the next use"
        );
    }
    // The request's max-stale does not make the edge serve a stale copy (documented as ignored).
    let stale = fixture
        .http
        .get(format!("http://{}/negative", fixture.server.edge))
        .header("Host", HOST)
        .header("Cache-Control", "max-stale=3600")
        .send()
        .await?;
    assert_eq!(stale.status().as_u16(), 200);
    assert_eq!(fixture.origin.count("/negative"), 3);
    // The control: a valid max-age is a plain hit.
    fixture
        .origin
        .set("/valid", ok_with(&[("cache-control", "max-age=3600")]));
    fixture.get("/valid").await?;
    assert_eq!(fixture.get("/valid").await?.x_cache(), "HIT");
    assert_eq!(fixture.origin.count("/valid"), 1);
    Ok(())
}

#[tokio::test]
async fn expires_in_every_http_date_form_is_honoured() -> TestResult {
    let fixture = setup().await?;
    let in_a_day = now_plus(24 * 3600);
    let forms = [
        (
            "/imf",
            in_a_day.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ),
        (
            "/rfc850",
            in_a_day.strftime("%A, %d-%b-%y %H:%M:%S GMT").to_string(),
        ),
        (
            "/asctime",
            in_a_day.strftime("%a %b %e %H:%M:%S %Y").to_string(),
        ),
    ];
    for (path, expires) in &forms {
        fixture.origin.set(path, ok_with(&[("expires", expires)]));
        assert_eq!(fixture.get(path).await?.x_cache(), "MISS", "{path}");
        let second = fixture.get(path).await?;
        assert_eq!(
            (second.status, second.x_cache()),
            (200, "HIT"),
            "{path}: {expires}"
        );
        assert_eq!(fixture.origin.count(path), 1, "{path}: {expires}");
        assert_eq!(second.header("expires"), Some(expires.as_str()));
    }
    Ok(())
}

#[tokio::test]
async fn the_origin_s_age_counts_in_freshness_and_in_the_age_of_hits() -> TestResult {
    let fixture = setup().await?;
    fixture.origin.set(
        "/already-old",
        ok_with(&[
            ("cache-control", "max-age=3600"),
            ("age", "7200, 0"),
            ("etag", "\"v1\""),
        ]),
    );
    fixture.get("/already-old").await?;
    fixture.get("/already-old").await?;
    assert_eq!(
        (
            fixture.origin.count("/already-old"),
            fixture.origin.not_modified("/already-old")
        ),
        (2, 1),
        "older than its max-age on arrival: stale"
    );
    fixture.origin.set(
        "/aged",
        ok_with(&[("cache-control", "max-age=3600"), ("age", "600")]),
    );
    fixture.get("/aged").await?;
    let hit = fixture.get("/aged").await?;
    assert_eq!(hit.x_cache(), "HIT");
    let age: u64 = hit.header("age").ok_or("a hit has an Age")?.parse()?;
    assert!(
        (600..900).contains(&age),
        "the origin's 600 s plus the time in cache, not {age}"
    );
    Ok(())
}

#[tokio::test]
async fn a_hit_keeps_the_origin_s_date() -> TestResult {
    let fixture = setup().await?;
    let date = http_date_in(-30);
    fixture.origin.set(
        "/dated",
        ok_with(&[("cache-control", "max-age=3600"), ("date", &date)]),
    );
    let miss = fixture.get("/dated").await?;
    assert_eq!(miss.header("date"), Some(date.as_str()));
    let hit = fixture.get("/dated").await?;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(
        hit.header("date"),
        Some(date.as_str()),
        "the stored Date, not now"
    );
    // Answers the edge makes itself still carry the current time.
    let unknown = fixture
        .send(Method::GET, "unknown.example.com", "/", Bytes::new())
        .await?;
    assert!(unknown.header("date").is_some_and(|d| d != date));
    Ok(())
}

#[tokio::test]
async fn hop_by_hop_fields_are_neither_forwarded_stored_nor_replayed() -> TestResult {
    let fixture = setup().await?;
    fixture.origin.set(
        "/hops",
        ok_with(&[
            ("cache-control", "max-age=3600"),
            ("connection", "x-hop-secret"),
            ("x-hop-secret", "1"),
            ("keep-alive", "timeout=77"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
        ]),
    );
    for expected in ["MISS", "HIT"] {
        let answer = fixture.get("/hops").await?;
        assert_eq!(answer.x_cache(), expected);
        assert_eq!(answer.header("x-end-to-end"), Some("kept"), "{expected}");
        for name in ["x-hop-secret", "proxy-connection", "upgrade", "te"] {
            assert_eq!(answer.header(name), None, "{expected}: {name}");
        }
        assert_ne!(
            answer.header("keep-alive"),
            Some("timeout=77"),
            "{expected}"
        );
        assert!(
            !answer
                .header("connection")
                .unwrap_or("")
                .contains("x-hop-secret"),
            "{expected}"
        );
    }
    assert_eq!(fixture.origin.count("/hops"), 1);
    Ok(())
}

#[tokio::test]
async fn no_cache_is_never_served_stale_when_the_origin_hangs_up() -> TestResult {
    let fixture = setup().await?;
    fixture.origin.set(
        "/no-cache",
        Behavior::Then(vec![
            ok_with(&[
                ("cache-control", "no-cache, stale-if-error=600"),
                ("etag", "\"v1\""),
            ]),
            Behavior::Hangup,
        ]),
    );
    assert_eq!(fixture.get("/no-cache").await?.status, 200);
    let failed = fixture.get("/no-cache").await?;
    assert_eq!(
        failed.status, 502,
        "no stale copy stands in for a failed validation"
    );
    // Nor for an origin that answers an error.
    fixture.origin.set(
        "/no-cache-503",
        Behavior::Then(vec![
            ok_with(&[("cache-control", "no-cache"), ("etag", "\"v1\"")]),
            Behavior::Answer(503, vec![], Bytes::new()),
        ]),
    );
    assert_eq!(fixture.get("/no-cache-503").await?.status, 200);
    let failed = fixture.get("/no-cache-503").await?;
    assert_eq!((failed.status, failed.x_cache()), (503, "MISS"));
    // The control: without no-cache, an explicit stale-if-error lets the stale copy stand in.
    fixture.origin.set(
        "/stale-if-error",
        Behavior::Then(vec![
            ok_with(&[
                ("cache-control", "max-age=60, stale-if-error=600"),
                ("age", "120"),
                ("etag", "\"v1\""),
            ]),
            Behavior::Hangup,
        ]),
    );
    assert_eq!(fixture.get("/stale-if-error").await?.status, 200);
    let stale = fixture.get("/stale-if-error").await?;
    assert_eq!((stale.status, stale.x_cache()), (200, "HIT"));
    Ok(())
}

#[tokio::test]
async fn a_304_updates_the_stored_fields_on_disk() -> TestResult {
    let fixture = setup().await?;
    let path = "/updated";
    fixture.origin.set(
        path,
        ok_with(&[
            ("cache-control", "max-age=0"),
            ("etag", "\"v1\""),
            ("x-version", "1"),
            ("last-modified", "Tue, 24 Nov 2015 11:39:11 GMT"),
        ]),
    );
    fixture.get(path).await?;
    // The origin's 304 carries what its 200 would now carry.
    fixture.origin.set(
        path,
        ok_with(&[
            ("cache-control", "max-age=3600"),
            ("etag", "\"v1\""),
            ("x-version", "2"),
            ("last-modified", "Wed, 25 Nov 2015 11:39:11 GMT"),
        ]),
    );
    let revalidated = fixture.get(path).await?;
    assert_eq!(fixture.origin.not_modified(path), 1);
    assert_eq!(revalidated.header("x-version"), Some("2"));
    assert_eq!(revalidated.header("cache-control"), Some("max-age=3600"));
    assert_eq!(revalidated.body, Bytes::from_static(b"the object\n"));
    let hit = fixture.get(path).await?;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(
        fixture.origin.count(path),
        2,
        "fresh for an hour after the 304"
    );
    assert_eq!(hit.header("x-version"), Some("2"));
    assert_eq!(
        hit.header("last-modified"),
        Some("Wed, 25 Nov 2015 11:39:11 GMT")
    );

    // The updated fields are on disk: a restarted edge serves them.
    let Fixture {
        dir,
        server,
        origin,
        http,
    } = fixture;
    server.terminate()?;
    let server = Server::start(dir.path())?;
    let fixture = Fixture {
        dir,
        server,
        origin,
        http,
    };
    let mut after = fixture.get(path).await?;
    for _ in 0..100 {
        if after.x_cache() == "HIT" {
            break;
        }
        // The restarted edge may pass players by its cache until it has caught up.
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = fixture.get(path).await?;
    }
    assert_eq!(after.x_cache(), "HIT");
    assert_eq!(after.header("x-version"), Some("2"));
    assert_eq!(after.header("cache-control"), Some("max-age=3600"));
    assert_eq!(
        fixture.origin.not_modified(path),
        1,
        "no revalidation after the restart"
    );
    Ok(())
}

#[tokio::test]
async fn cdn_cache_control_binds_the_edge_and_is_not_forwarded() -> TestResult {
    let fixture = setup().await?;
    fixture.origin.set(
        "/cdn-longer",
        ok_with(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=3600"),
        ]),
    );
    for expected in ["MISS", "HIT"] {
        let answer = fixture.get("/cdn-longer").await?;
        assert_eq!(answer.x_cache(), expected);
        assert_eq!(answer.header("cdn-cache-control"), None, "{expected}");
        assert_eq!(
            answer.header("cache-control"),
            Some("no-store"),
            "{expected}"
        );
    }
    assert_eq!(fixture.origin.count("/cdn-longer"), 1);
    fixture.origin.set(
        "/cdn-zero",
        ok_with(&[
            ("cache-control", "max-age=3600"),
            ("cdn-cache-control", "max-age=0"),
            ("etag", "\"v1\""),
        ]),
    );
    fixture.get("/cdn-zero").await?;
    fixture.get("/cdn-zero").await?;
    assert_eq!(
        fixture.origin.not_modified("/cdn-zero"),
        1,
        "max-age=0 there is stale"
    );
    Ok(())
}

#[tokio::test]
async fn any_status_with_explicit_freshness_is_stored() -> TestResult {
    let fixture = setup().await?;
    for status in [500, 503] {
        let path = format!("/error-{status}");
        fixture.origin.set(
            &path,
            Behavior::Answer(
                status,
                vec![("cache-control".into(), "max-age=60".into())],
                Bytes::from_static(b"down for maintenance\n"),
            ),
        );
        assert_eq!(fixture.get(&path).await?.status, status);
        let second = fixture.get(&path).await?;
        assert_eq!((second.status, second.x_cache()), (status, "HIT"));
        assert_eq!(fixture.origin.count(&path), 1);
    }
    // Without explicit freshness an error is never kept on a guess.
    fixture
        .origin
        .set("/error-plain", Behavior::Answer(500, vec![], Bytes::new()));
    fixture.get("/error-plain").await?;
    fixture.get("/error-plain").await?;
    assert_eq!(fixture.origin.count("/error-plain"), 2);
    Ok(())
}

#[tokio::test]
async fn other_methods_pass_to_the_origin_with_their_bodies() -> TestResult {
    let fixture = setup().await?;
    fixture.origin.set("/api", Behavior::Echo);
    let body = Bytes::from(vec![7u8; 1024 * 1024]);
    let posted = fixture
        .send(Method::POST, HOST, "/api", body.clone())
        .await?;
    assert_eq!(posted.status, 200);
    assert_eq!(posted.body, Bytes::from_static(b"POST 1048576\n"));
    assert_eq!(posted.x_cache(), "MISS");
    let again = fixture.send(Method::POST, HOST, "/api", body).await?;
    assert_eq!(again.body, Bytes::from_static(b"POST 1048576\n"));
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"] {
        let method = Method::from_bytes(method.as_bytes())?;
        let answer = fixture
            .send(method.clone(), HOST, "/api", Bytes::from_static(b"abc"))
            .await?;
        assert_eq!(answer.status, 200, "{method}");
        assert_eq!(
            answer.body,
            Bytes::from(format!("{method} 3\n")),
            "{method}"
        );
    }
    assert_eq!(fixture.origin.count("/api"), 7, "nothing is cached");
    // An unknown host is still refused without contacting any origin.
    let total = fixture.origin.total();
    let unknown = fixture
        .send(
            Method::POST,
            "unknown.example.com",
            "/api",
            Bytes::from_static(b"x"),
        )
        .await?;
    assert_eq!(unknown.status, 404);
    assert_eq!(fixture.origin.total(), total);
    Ok(())
}

#[tokio::test]
async fn a_successful_unsafe_request_invalidates_its_url_and_same_host_locations() -> TestResult {
    let fixture = setup().await?;
    let cached = [("cache-control", "max-age=3600"), ("etag", "\"v1\"")];
    for path in ["/page", "/created", "/described", "/elsewhere"] {
        fixture.origin.set(path, ok_with(&cached));
        fixture.get(path).await?;
        assert_eq!(fixture.get(path).await?.x_cache(), "HIT", "{path}");
    }
    // The origin answers the POST on /page like its GET; a success invalidates /page.
    let posted = fixture
        .send(Method::POST, HOST, "/page", Bytes::from_static(b"form"))
        .await?;
    assert_eq!(posted.status, 200);
    assert_eq!(
        fixture.get("/page").await?.x_cache(),
        "MISS",
        "gone after the POST"
    );
    assert_eq!(fixture.origin.count("/page"), 3);

    fixture.origin.set(
        "/form",
        Behavior::Answer(
            201,
            vec![
                ("location".into(), "/created".into()),
                (
                    "content-location".into(),
                    format!("http://{HOST}/described"),
                ),
            ],
            Bytes::new(),
        ),
    );
    let created = fixture
        .send(Method::PUT, HOST, "/form", Bytes::from_static(b"x"))
        .await?;
    assert_eq!(created.status, 201);
    for path in ["/created", "/described"] {
        assert_eq!(fixture.get(path).await?.x_cache(), "MISS", "{path}");
        assert_eq!(fixture.origin.count(path), 2, "{path} fetched again");
    }
    // A Location on another host invalidates nothing here; neither does a failure.
    fixture.origin.set(
        "/away",
        Behavior::Answer(
            303,
            vec![(
                "location".into(),
                "http://other.example.com/elsewhere".into(),
            )],
            Bytes::new(),
        ),
    );
    fixture
        .send(Method::POST, HOST, "/away", Bytes::new())
        .await?;
    assert_eq!(fixture.get("/elsewhere").await?.x_cache(), "HIT");
    assert_eq!(fixture.origin.count("/elsewhere"), 1);
    fixture
        .origin
        .set("/elsewhere", Behavior::Answer(500, vec![], Bytes::new()));
    let failed = fixture
        .send(Method::DELETE, HOST, "/elsewhere", Bytes::new())
        .await?;
    assert_eq!(failed.status, 500);
    fixture.origin.set("/elsewhere", ok_with(&cached));
    assert_eq!(fixture.get("/elsewhere").await?.x_cache(), "HIT");
    assert_eq!(
        fixture.origin.count("/elsewhere"),
        2,
        "the GET and the failed DELETE"
    );
    Ok(())
}
