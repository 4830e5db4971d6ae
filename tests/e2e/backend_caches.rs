//! The cache configurations of `docs/backends/`, on the real caches, driven directly with the
//! requests precache's backend clients send: a prefetch is a GET, a refresh a PURGE (Varnish,
//! Traffic Server) or `GET /purge<path>` (nginx), an invalidation and a directory refresh are
//! Varnish's soft PURGE and BAN. Each test skips when its cache is not installed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Method;

use crate::support::caches::{self, CacheServer};
use crate::support::origin::PLAIN_VARIANT;
use crate::support::{Behavior, Origin, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The domain of the objects.
const HOST: &str = "cdn.example.com";
/// Another domain on the same origin and cache.
const OTHER_HOST: &str = "other.example.com";
/// A loopback address that is not 127.0.0.1, so outside every configuration's purge ACL.
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// How often, and how far apart, a repeated purge is retried while the first one settles.
const SETTLE_TRIES: usize = 20;
const SETTLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// One answer of a cache.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// Sends requests to caches from one local address.
struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client whose connections come from `from`.
    fn from(from: IpAddr) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .local_address(from)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Client { http })
    }

    /// The client precache is: on 127.0.0.1.
    fn local() -> Result<Client, Error> {
        Client::from(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    async fn send(
        &self,
        cache: &CacheServer,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, Error> {
        let method = Method::from_bytes(method.as_bytes())?;
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", cache.addr))
            .header("Host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// A prefetch (or a player's request): GET through the cache, which must answer 200 with
    /// the origin's body for `path`.
    async fn get(&self, cache: &CacheServer, host: &str, path: &str) -> Result<(), Error> {
        let answer = self.send(cache, "GET", host, path, &[]).await?;
        let expected = body_of(path_only(path));
        if answer.status != 200 || answer.body != expected {
            return Err(format!(
                "GET {path} (Host {host}) through {} answered {} {:?}; its log:\n{}",
                cache.kind,
                answer.status,
                answer.body,
                cache.log()
            )
            .into());
        }
        Ok(())
    }
}

/// How a kind removes one object.
#[derive(Clone, Copy)]
enum PurgeForm {
    /// `PURGE <path>` (Varnish, Traffic Server).
    PurgeMethod,
    /// `GET <prefix><path>` (nginx's ngx_cache_purge, separate-location form).
    GetWithPrefix(&'static str),
}

impl PurgeForm {
    async fn purge(
        self,
        client: &Client,
        cache: &CacheServer,
        host: &str,
        path: &str,
    ) -> Result<Answer, Error> {
        match self {
            PurgeForm::PurgeMethod => client.send(cache, "PURGE", host, path, &[]).await,
            PurgeForm::GetWithPrefix(prefix) => {
                client
                    .send(cache, "GET", host, &format!("{prefix}{path}"), &[])
                    .await
            }
        }
    }
}

fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn body_of(path: &str) -> Bytes {
    Bytes::from(format!("the object at {path}\n"))
}

/// Makes the origin serve `path` (without its query) as a cacheable object: every kind stores
/// an answer with an explicit lifetime (Traffic Server stores no other, by default).
fn serve(origin: &Origin, path: &str) {
    let path = path_only(path);
    origin.set(
        path,
        Behavior::WithHeaders(body_of(path), vec![("cache-control", "max-age=3600")]),
    );
}

fn origin_addr(origin: &Origin) -> Result<SocketAddr, Error> {
    Ok(origin.url().trim_start_matches("http://").parse()?)
}

/// Fails with the caches' logs unless the origin has seen `expected` requests for `path`.
fn expect_origin(
    origin: &Origin,
    path: &str,
    expected: usize,
    step: &str,
    caches: &[&CacheServer],
) -> TestResult {
    let seen = origin.count(path_only(path));
    if seen != expected {
        let logs: Vec<String> = caches
            .iter()
            .map(|cache| format!("{} log:\n{}", cache.kind, cache.log()))
            .collect();
        return Err(format!(
            "{step}: the origin saw {seen} requests for {path}, expected {expected}\n{}",
            logs.join("\n")
        )
        .into());
    }
    Ok(())
}

/// Fails with the cache's log unless `answer` has `status`.
fn expect_status(answer: &Answer, status: u16, step: &str, cache: &CacheServer) -> TestResult {
    if answer.status != status {
        return Err(format!(
            "{step}: {} answered {} (expected {status}), headers {:?}, body {:?}; its log:\n{}",
            cache.kind,
            answer.status,
            answer.headers,
            answer.body,
            cache.log()
        )
        .into());
    }
    Ok(())
}

/// The contract every kind meets, on a fleet of two caches of that kind: a GET stores the
/// object, the next GET is served from the cache; a purge of a cached object answers 200, of an
/// uncached one 404; the next GET goes to the origin; and nothing else is touched: not the
/// other paths, the other Host's copy, the other query, or the fleet's other cache.
async fn check_prefetch_and_exact_purge(
    fleet: [&CacheServer; 2],
    origin: &Origin,
    form: PurgeForm,
) -> TestResult {
    let client = Client::local()?;
    let [first, second] = fleet;
    for path in ["/game/a.js", "/game/b.js", "/game/q.js"] {
        serve(origin, path);
    }

    // Prefetch: one origin request per cache, however many GETs.
    for cache in fleet {
        client.get(cache, HOST, "/game/a.js").await?;
        client.get(cache, HOST, "/game/a.js").await?;
    }
    expect_origin(origin, "/game/a.js", 2, "two GETs on each cache", &fleet)?;
    client.get(first, HOST, "/game/b.js").await?;
    client.get(first, OTHER_HOST, "/game/a.js").await?;
    client.get(first, HOST, "/game/q.js?v=1").await?;
    client.get(first, HOST, "/game/q.js?v=2").await?;
    for _ in 0..2 {
        client.get(first, OTHER_HOST, "/game/a.js").await?;
        client.get(first, HOST, "/game/q.js?v=1").await?;
    }
    expect_origin(
        origin,
        "/game/a.js",
        3,
        "another Host is another object",
        &fleet,
    )?;
    expect_origin(
        origin,
        "/game/q.js",
        2,
        "another query is another object",
        &fleet,
    )?;

    // Purge: 200 when it removed something, then 404.
    let answer = form.purge(&client, first, HOST, "/game/a.js").await?;
    expect_status(&answer, 200, "purge of a cached object", first)?;
    // Varnish removes a purged object in its expiry thread, a moment after answering: a PURGE
    // in between still finds (and counts) it. Other kinds answer 404 at once.
    let mut answer = form.purge(&client, first, HOST, "/game/a.js").await?;
    for _ in 0..SETTLE_TRIES {
        if answer.status != 200 {
            break;
        }
        tokio::time::sleep(SETTLE_PAUSE).await;
        answer = form.purge(&client, first, HOST, "/game/a.js").await?;
    }
    expect_status(&answer, 404, "the same purge again", first)?;
    let answer = form.purge(&client, first, HOST, "/game/never.js").await?;
    expect_status(&answer, 404, "purge of an object never fetched", first)?;
    expect_origin(
        origin,
        "/game/a.js",
        3,
        "purges never reach the origin",
        &fleet,
    )?;

    // Only that object of that Host on that cache is gone.
    client.get(first, HOST, "/game/a.js").await?;
    expect_origin(origin, "/game/a.js", 4, "GET after the purge", &fleet)?;
    client.get(first, HOST, "/game/a.js").await?;
    client.get(first, OTHER_HOST, "/game/a.js").await?;
    client.get(second, HOST, "/game/a.js").await?;
    expect_origin(origin, "/game/a.js", 4, "the other copies stayed", &fleet)?;
    client.get(first, HOST, "/game/b.js").await?;
    expect_origin(origin, "/game/b.js", 1, "another path stayed", &fleet)?;

    // precache's `check` of a target: a purge of `/` on the reserved `.invalid` domain, which no
    // cache holds, must answer "not cached".
    let answer = form
        .purge(&client, first, "precache-check.invalid", "/")
        .await?;
    expect_status(&answer, 404, "the backend check's purge", first)?;

    // The query is part of the object.
    let answer = form.purge(&client, first, HOST, "/game/q.js?v=1").await?;
    expect_status(&answer, 200, "purge of an object with a query", first)?;
    client.get(first, HOST, "/game/q.js?v=2").await?;
    expect_origin(origin, "/game/q.js", 2, "the other query stayed", &fleet)?;
    client.get(first, HOST, "/game/q.js?v=1").await?;
    expect_origin(
        origin,
        "/game/q.js",
        3,
        "the purged query is fetched",
        &fleet,
    )?;
    Ok(())
}

/// An object with two `Vary` variants in `cache`, both gone after one purge (answered 200,
/// which is returned).
async fn check_variants_purged(
    cache: &CacheServer,
    origin: &Origin,
    form: PurgeForm,
) -> Result<Answer, Error> {
    let client = Client::local()?;
    let path = "/variants.js";
    origin.set(
        path,
        Behavior::WithHeaders(
            body_of(path),
            vec![("cache-control", "max-age=3600"), ("vary", "X-Variant")],
        ),
    );
    for variant in ["a", "b", "a", "b"] {
        let answer = client
            .send(cache, "GET", HOST, path, &[("X-Variant", variant)])
            .await?;
        expect_status(&answer, 200, "GET of a variant", cache)?;
    }
    expect_origin(origin, path, 2, "two variants, each cached", &[cache])?;
    let answer = form.purge(&client, cache, HOST, path).await?;
    expect_status(&answer, 200, "purge of two variants", cache)?;
    for variant in ["a", "b"] {
        client
            .send(cache, "GET", HOST, path, &[("X-Variant", variant)])
            .await?;
    }
    expect_origin(origin, path, 4, "both variants purged", &[cache])?;
    Ok(answer)
}

/// Starts two caches of one kind, or `None` when the kind is not installed.
fn fleet(
    start: fn(SocketAddr) -> std::io::Result<Option<CacheServer>>,
    origin: SocketAddr,
) -> Result<Option<[CacheServer; 2]>, Error> {
    let Some(first) = start(origin)? else {
        return Ok(None);
    };
    let Some(second) = start(origin)? else {
        return Ok(None);
    };
    Ok(Some([first, second]))
}

#[tokio::test]
async fn varnish_prefetches_purges_and_refuses_strangers() -> TestResult {
    let origin = Origin::start().await?;
    let Some([first, second]) = fleet(caches::varnish, origin_addr(&origin)?)? else {
        return Ok(());
    };
    check_prefetch_and_exact_purge([&first, &second], &origin, PurgeForm::PurgeMethod).await?;

    // One PURGE removes every Vary variant, and the answer counts them.
    let client = Client::local()?;
    let answer = check_variants_purged(&first, &origin, PurgeForm::PurgeMethod).await?;
    let purged = answer
        .headers
        .get("x-precache-purged")
        .and_then(|value| value.to_str().ok());
    assert_eq!(purged, Some("2"), "X-Precache-Purged of two variants");

    // PURGE and BAN from outside the ACL: 405, and the object stays.
    serve(&origin, "/kept.js");
    client.get(&first, HOST, "/kept.js").await?;
    let stranger = Client::from(STRANGER)?;
    for method in ["PURGE", "BAN"] {
        let answer = stranger.send(&first, method, HOST, "/kept.js", &[]).await?;
        expect_status(&answer, 405, &format!("{method} from 127.0.0.2"), &first)?;
    }
    client.get(&first, HOST, "/kept.js").await?;
    expect_origin(&origin, "/kept.js", 1, "refused purges", &[&first])?;
    Ok(())
}

#[tokio::test]
async fn varnish_invalidates_and_bans_prefixes() -> TestResult {
    let origin = Origin::start().await?;
    let Some(cache) = caches::varnish(origin_addr(&origin)?)? else {
        return Ok(());
    };
    let client = Client::local()?;
    let invalidate = [("X-Precache-Mode", "invalidate")];

    // Invalidate: 200, and the next GET revalidates with the origin (a 304 here) and is
    // served; the one after is a hit again.
    serve(&origin, "/soft.js");
    client.get(&cache, HOST, "/soft.js").await?;
    let answer = client
        .send(&cache, "PURGE", HOST, "/soft.js", &invalidate)
        .await?;
    expect_status(&answer, 200, "invalidate", &cache)?;
    client.get(&cache, HOST, "/soft.js").await?;
    expect_origin(&origin, "/soft.js", 2, "GET after invalidate", &[&cache])?;
    assert_eq!(
        origin.not_modified("/soft.js"),
        1,
        "the GET after invalidate revalidated"
    );
    client.get(&cache, HOST, "/soft.js").await?;
    expect_origin(&origin, "/soft.js", 2, "fresh again", &[&cache])?;
    let answer = client
        .send(&cache, "PURGE", HOST, "/never.js", &invalidate)
        .await?;
    expect_status(
        &answer,
        404,
        "invalidate of an object never fetched",
        &cache,
    )?;

    // BAN <prefix>: every object of the Host under the prefix, and nothing else; the prefix is
    // plain text (its dots are not regex wildcards).
    let under = ["/static/a.js", "/static/sub/b.css", "/static/q.js?v=1"];
    let beside = ["/static-other/c.js", "/staticx.js", "/top/static/d.js"];
    for path in under.iter().chain(&beside) {
        serve(&origin, path);
        client.get(&cache, HOST, path).await?;
    }
    client.get(&cache, OTHER_HOST, "/static/a.js").await?;
    let answer = client.send(&cache, "BAN", HOST, "/static/", &[]).await?;
    expect_status(&answer, 200, "BAN /static/", &cache)?;
    for path in under.iter().chain(&beside) {
        client.get(&cache, HOST, path).await?;
    }
    client.get(&cache, OTHER_HOST, "/static/a.js").await?;
    expect_origin(
        &origin,
        "/static/a.js",
        3,
        "banned (the other Host's kept)",
        &[&cache],
    )?;
    expect_origin(&origin, "/static/sub/b.css", 2, "banned", &[&cache])?;
    expect_origin(&origin, "/static/q.js", 2, "banned", &[&cache])?;
    for path in beside {
        expect_origin(&origin, path, 1, "beside the prefix", &[&cache])?;
    }

    for path in ["/v1.0/a.js", "/v1x0/a.js"] {
        serve(&origin, path);
        client.get(&cache, HOST, path).await?;
    }
    let answer = client.send(&cache, "BAN", HOST, "/v1.0/", &[]).await?;
    expect_status(&answer, 200, "BAN /v1.0/", &cache)?;
    client.get(&cache, HOST, "/v1.0/a.js").await?;
    client.get(&cache, HOST, "/v1x0/a.js").await?;
    expect_origin(&origin, "/v1.0/a.js", 2, "banned", &[&cache])?;
    expect_origin(
        &origin,
        "/v1x0/a.js",
        1,
        "a dot matches only a dot",
        &[&cache],
    )?;
    Ok(())
}

#[tokio::test]
async fn nginx_prefetches_purges_and_refuses_other_forms() -> TestResult {
    let origin = Origin::start().await?;
    let Some([first, second]) = fleet(caches::nginx, origin_addr(&origin)?)? else {
        return Ok(());
    };
    check_prefetch_and_exact_purge(
        [&first, &second],
        &origin,
        PurgeForm::GetWithPrefix("/purge"),
    )
    .await?;
    let client = Client::local()?;

    // A percent-encoded path is purged by the same encoded path after /purge.
    serve(&origin, "/sp%20ace.js");
    client.get(&first, HOST, "/sp%20ace.js").await?;
    client.get(&first, HOST, "/sp%20ace.js").await?;
    let answer = client
        .send(&first, "GET", HOST, "/purge/sp%20ace.js", &[])
        .await?;
    expect_status(&answer, 200, "purge of an encoded path", &first)?;
    client.get(&first, HOST, "/sp%20ace.js").await?;
    expect_origin(&origin, "/sp%20ace.js", 2, "encoded path purged", &[&first])?;

    // A `Vary: Accept-Encoding` object is one object, fetched uncompressed, whatever the
    // players accept; so the purge removes it for all of them.
    origin.set("/encoded.js", Behavior::VaryOnEncoding);
    for accept in [Some("gzip"), None, Some("gzip, br")] {
        let headers: Vec<(&str, &str)> = accept
            .map(|value| ("Accept-Encoding", value))
            .into_iter()
            .collect();
        let answer = client
            .send(&first, "GET", HOST, "/encoded.js", &headers)
            .await?;
        expect_status(&answer, 200, "GET of a Vary object", &first)?;
        assert_eq!(
            answer.body, PLAIN_VARIANT,
            "the origin was asked without Accept-Encoding"
        );
    }
    expect_origin(
        &origin,
        "/encoded.js",
        1,
        "one object for every Accept-Encoding",
        &[&first],
    )?;
    let answer = client
        .send(&first, "GET", HOST, "/purge/encoded.js", &[])
        .await?;
    expect_status(&answer, 200, "purge of a Vary object", &first)?;
    client
        .send(
            &first,
            "GET",
            HOST,
            "/encoded.js",
            &[("Accept-Encoding", "gzip")],
        )
        .await?;
    expect_origin(
        &origin,
        "/encoded.js",
        2,
        "purged for gzip players too",
        &[&first],
    )?;

    // The forms nginx refuses, leaving the object cached and the origin alone: PURGE on the
    // object's own path (405), and /purge from outside the allowed addresses (403).
    serve(&origin, "/kept.js");
    client.get(&first, HOST, "/kept.js").await?;
    let answer = client.send(&first, "PURGE", HOST, "/kept.js", &[]).await?;
    expect_status(&answer, 405, "PURGE <path>", &first)?;
    let answer = Client::from(STRANGER)?
        .send(&first, "GET", HOST, "/purge/kept.js", &[])
        .await?;
    expect_status(&answer, 403, "/purge from 127.0.0.2", &first)?;
    client.get(&first, HOST, "/kept.js").await?;
    expect_origin(&origin, "/kept.js", 1, "refused purges", &[&first])?;
    Ok(())
}

#[tokio::test]
async fn trafficserver_prefetches_purges_and_refuses_strangers() -> TestResult {
    let origin = Origin::start().await?;
    let Some([first, second]) = fleet(caches::trafficserver, origin_addr(&origin)?)? else {
        return Ok(());
    };
    check_prefetch_and_exact_purge([&first, &second], &origin, PurgeForm::PurgeMethod).await?;

    // One PURGE removes every Vary variant (alternates of one cache entry).
    check_variants_purged(&first, &origin, PurgeForm::PurgeMethod).await?;

    // PURGE from outside ip_allow.yaml's loopback rule: 403, and the object stays.
    let client = Client::local()?;
    serve(&origin, "/kept.js");
    client.get(&first, HOST, "/kept.js").await?;
    let answer = Client::from(STRANGER)?
        .send(&first, "PURGE", HOST, "/kept.js", &[])
        .await?;
    expect_status(&answer, 403, "PURGE from 127.0.0.2", &first)?;
    client.get(&first, HOST, "/kept.js").await?;
    expect_origin(&origin, "/kept.js", 1, "refused purge", &[&first])?;
    Ok(())
}
