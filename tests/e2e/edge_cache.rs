//! The edge as a CDN cache, observed over HTTP: collapsing, RFC 9111 semantics, per-domain
//! overrides, ranges, purges, capacity and failures.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::url;
use crate::support::origin::{large_bytes, GZIP_VARIANT, PLAIN_VARIANT};
use crate::support::server::Options;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A server with `HOST` registered to alice (with these cache overrides) against an origin.
struct Fixture {
    dir: tempfile::TempDir,
    server: Server,
    api: Api,
    origin: Origin,
    token: String,
}

async fn setup(options: Options, cache: Value) -> Result<Fixture, Error> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(dir.path(), options)?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let admin = api.admin().await?;
    let token = api.create_user(&admin, "alice").await?;
    let reply = api
        .call(
            Method::POST,
            "/cdn_api/domains",
            Some(&admin),
            Some(json!({"domain": HOST, "origin": origin.url(), "owner": "alice", "cache": cache})),
        )
        .await?;
    reply.expect(201, 0)?;
    Ok(Fixture {
        dir,
        server,
        api,
        origin,
        token,
    })
}

async fn get(
    api: &Api,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, reqwest::header::HeaderMap, Bytes), Error> {
    let response = api.edge_get_with(HOST, path, headers).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Ok((status, headers, response.bytes().await?))
}

/// Waits until the edge holds `count` objects: a fill is published just after its last byte
/// went out to the client.
async fn wait_for_objects(api: &Api, count: u64) -> Result<(), Error> {
    for _ in 0..100 {
        if api.edge_status().await?["objects"].as_u64() == Some(count) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("the edge never held {count} objects").into())
}

fn x_cache(headers: &reqwest::header::HeaderMap) -> &str {
    headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn a_hundred_cold_requests_for_64_mib_make_one_origin_fetch() -> TestResult {
    const SIZE: u64 = 64 * 1024 * 1024;
    let fixture = setup(Options::default(), Value::Null).await?;
    let Fixture { api, origin, .. } = &fixture;
    // Slow enough that all requests arrive while the fill runs.
    origin.set(
        "/big.pak",
        Behavior::SlowLarge(SIZE, Duration::from_millis(2)),
    );
    let expected = std::sync::Arc::new(large_bytes(0, SIZE as usize));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let api = api.clone();
        let expected = expected.clone();
        clients.spawn(async move {
            let mut response = api.edge_get_with(HOST, "/big.pak", &[]).await?;
            let status = response.status().as_u16();
            let mut offset = 0usize;
            let mut identical = true;
            while let Some(chunk) = response.chunk().await? {
                let end = offset + chunk.len();
                identical &= expected.get(offset..end) == Some(&chunk[..]);
                offset = end;
            }
            Ok::<_, Error>((status, offset, identical))
        });
    }
    let mut answers = 0;
    while let Some(joined) = clients.join_next().await {
        let (status, len, identical) = joined??;
        assert_eq!((status, len), (200, SIZE as usize));
        assert!(identical, "every client gets the origin's bytes");
        answers += 1;
    }
    assert_eq!(answers, 100);
    assert_eq!(
        origin.count("/big.pak"),
        1,
        "one origin fetch for 100 clients; server log:\n{}",
        fixture.server.log()
    );
    Ok(())
}

#[tokio::test]
async fn hits_answer_conditional_requests_and_ranges_from_the_cache() -> TestResult {
    let fixture = setup(Options::default(), Value::Null).await?;
    let Fixture { api, origin, .. } = &fixture;
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    origin.set("/a.bin", Behavior::Body(Bytes::from(body.clone())));
    let (status, headers, bytes) = get(api, "/a.bin", &[]).await?;
    assert_eq!((status, x_cache(&headers)), (200, "MISS"));
    assert_eq!(bytes.to_vec(), body);
    let etag = headers["etag"].to_str()?.to_string();

    let (status, headers, bytes) = get(api, "/a.bin", &[("If-None-Match", &etag)]).await?;
    assert_eq!((status, x_cache(&headers)), (304, "HIT"));
    assert!(bytes.is_empty());
    let (status, _, _) = get(
        api,
        "/a.bin",
        &[("If-Modified-Since", "Wed, 25 Nov 2015 00:00:00 GMT")],
    )
    .await?;
    assert_eq!(status, 304);
    let (status, _, bytes) = get(api, "/a.bin", &[("If-None-Match", "\"other\"")]).await?;
    assert_eq!((status, bytes.len()), (200, body.len()));

    let (status, headers, bytes) = get(api, "/a.bin", &[("Range", "bytes=100-199")]).await?;
    assert_eq!(status, 206);
    assert_eq!(headers["content-range"], "bytes 100-199/10000");
    assert_eq!(bytes.to_vec(), body[100..200].to_vec());
    let (status, headers, bytes) = get(api, "/a.bin", &[("Range", "bytes=0-9,-10")]).await?;
    assert_eq!(status, 206);
    let content_type = headers["content-type"].to_str()?;
    assert!(
        content_type.starts_with("multipart/byteranges"),
        "{content_type}"
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("Content-Range: bytes 0-9/10000"), "{text}");
    assert!(
        text.contains("Content-Range: bytes 9990-9999/10000"),
        "{text}"
    );
    let (status, headers, _) = get(api, "/a.bin", &[("Range", "bytes=20000-")]).await?;
    assert_eq!(status, 416);
    assert_eq!(headers["content-range"], "bytes */10000");
    assert_eq!(origin.count("/a.bin"), 1, "all of it from one fetch");
    Ok(())
}

#[tokio::test]
async fn a_stale_object_is_revalidated_and_a_304_refreshes_it() -> TestResult {
    let fixture = setup(Options::default(), Value::Null).await?;
    let Fixture { api, origin, .. } = &fixture;
    origin.set(
        "/short.txt",
        Behavior::WithHeaders(
            Bytes::from_static(b"v1\n"),
            vec![("cache-control", "max-age=1")],
        ),
    );
    let (_, headers, _) = get(api, "/short.txt", &[]).await?;
    assert_eq!(x_cache(&headers), "MISS");
    let (_, headers, _) = get(api, "/short.txt", &[]).await?;
    assert_eq!(x_cache(&headers), "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, headers, bytes) = get(api, "/short.txt", &[]).await?;
    assert_eq!((status, x_cache(&headers)), (200, "HIT"));
    assert_eq!(&bytes[..], b"v1\n");
    assert_eq!(
        origin.not_modified("/short.txt"),
        1,
        "revalidated with a 304"
    );
    // The 304 made it fresh again: no origin contact on the next hit.
    let (_, headers, _) = get(api, "/short.txt", &[]).await?;
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(origin.count("/short.txt"), 2);
    Ok(())
}

#[tokio::test]
async fn stale_copies_stand_in_while_revalidating_and_when_the_origin_fails() -> TestResult {
    let fixture = setup(Options::default(), Value::Null).await?;
    let Fixture { api, origin, .. } = &fixture;
    origin.set(
        "/swr.txt",
        Behavior::WithHeaders(
            Bytes::from_static(b"old\n"),
            vec![("cache-control", "max-age=1, stale-while-revalidate=60")],
        ),
    );
    origin.set(
        "/sie.txt",
        Behavior::WithHeaders(
            Bytes::from_static(b"kept\n"),
            vec![("cache-control", "max-age=1, stale-if-error=60")],
        ),
    );
    get(api, "/swr.txt", &[]).await?;
    get(api, "/sie.txt", &[]).await?;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Stale-while-revalidate: the stale copy at once, the origin asked in the background.
    origin.set(
        "/swr.txt",
        Behavior::Slow(Duration::from_millis(500), Bytes::from_static(b"newer\n")),
    );
    let (status, headers, bytes) = get(api, "/swr.txt", &[]).await?;
    assert_eq!(
        (status, x_cache(&headers), &bytes[..]),
        (200, "HIT", &b"old\n"[..])
    );
    let mut refreshed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, _, bytes) = get(api, "/swr.txt", &[]).await?;
        if &bytes[..] == b"newer\n" {
            refreshed = true;
            break;
        }
    }
    assert!(
        refreshed,
        "the background revalidation stored the new version"
    );
    assert_eq!(origin.count("/swr.txt"), 2);

    // Stale-if-error: the origin fails, the stale copy answers.
    origin.set("/sie.txt", Behavior::Status(503));
    let (status, _, bytes) = get(api, "/sie.txt", &[]).await?;
    assert_eq!((status, &bytes[..]), (200, &b"kept\n"[..]));
    assert_eq!(origin.count("/sie.txt"), 2);
    Ok(())
}

#[tokio::test]
async fn vary_accept_encoding_keeps_one_variant_per_encoding() -> TestResult {
    let fixture = setup(Options::default(), Value::Null).await?;
    let Fixture { api, origin, .. } = &fixture;
    origin.set("/v.js", Behavior::VaryOnEncoding);
    let gzip = [("Accept-Encoding", "gzip, deflate, br")];
    let (_, headers, bytes) = get(api, "/v.js", &gzip).await?;
    assert_eq!((x_cache(&headers), &bytes[..]), ("MISS", GZIP_VARIANT));
    let (_, headers, bytes) = get(api, "/v.js", &[]).await?;
    assert_eq!((x_cache(&headers), &bytes[..]), ("MISS", PLAIN_VARIANT));
    let (_, headers, bytes) =
        get(api, "/v.js", &[("Accept-Encoding", "br, gzip, deflate")]).await?;
    assert_eq!((x_cache(&headers), &bytes[..]), ("HIT", GZIP_VARIANT));
    let (_, headers, bytes) = get(api, "/v.js", &[]).await?;
    assert_eq!((x_cache(&headers), &bytes[..]), ("HIT", PLAIN_VARIANT));
    assert_eq!(origin.count("/v.js"), 2);

    // A URL purge removes every variant.
    let (status, answer) = api.edge_purge(json!({"url": url(HOST, "/v.js")})).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["objects"], 2, "{answer}");
    let (_, headers, _) = get(api, "/v.js", &gzip).await?;
    assert_eq!(x_cache(&headers), "MISS");
    Ok(())
}

#[tokio::test]
async fn origin_cache_control_is_obeyed_unless_the_domain_overrides_it() -> TestResult {
    let fixture = setup(Options::default(), Value::Null).await?;
    let Fixture { api, origin, .. } = &fixture;
    origin.set(
        "/private.json",
        Behavior::WithHeaders(
            Bytes::from_static(b"{}"),
            vec![("cache-control", "private")],
        ),
    );
    for _ in 0..2 {
        let (status, headers, _) = get(api, "/private.json", &[]).await?;
        assert_eq!((status, x_cache(&headers)), (200, "MISS"));
    }
    assert_eq!(origin.count("/private.json"), 2, "private is never stored");

    let fixture = setup(
        Options::default(),
        json!({"ignore_origin_no_cache": true, "cache_query_string": false, "default_ttl": 3600}),
    )
    .await?;
    let Fixture { api, origin, .. } = &fixture;
    origin.set(
        "/private.json",
        Behavior::WithHeaders(
            Bytes::from_static(b"{}"),
            vec![("cache-control", "no-store")],
        ),
    );
    get(api, "/private.json", &[]).await?;
    let (_, headers, _) = get(api, "/private.json", &[]).await?;
    assert_eq!(x_cache(&headers), "HIT", "the domain ignores no-store");
    origin.set("/p.pak", Behavior::Body(Bytes::from_static(b"pak")));
    get(api, "/p.pak?v=1", &[]).await?;
    let (_, headers, bytes) = get(api, "/p.pak?v=2", &[]).await?;
    assert_eq!((x_cache(&headers), &bytes[..]), ("HIT", &b"pak"[..]));
    assert_eq!(
        origin.count("/p.pak"),
        1,
        "the query is not part of the key"
    );
    Ok(())
}

#[tokio::test]
async fn purges_delete_invalidate_and_count_by_url_and_prefix() -> TestResult {
    let fixture = setup(Options::default(), Value::Null).await?;
    let Fixture { api, origin, .. } = &fixture;
    for (path, len) in [
        ("/dir/a.bin", 100),
        ("/dir/b.bin", 200),
        ("/other/c.bin", 400),
    ] {
        origin.set(path, Behavior::Body(Bytes::from(vec![7u8; len])));
        get(api, path, &[]).await?;
    }
    wait_for_objects(api, 3).await?;
    let (status, answer) = api
        .edge_purge(json!({"prefix": url(HOST, "/dir/"), "dry_run": true}))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(
        (answer["objects"].clone(), answer["bytes"].clone()),
        (json!(2), json!(300))
    );
    let (_, headers, _) = get(api, "/dir/a.bin", &[]).await?;
    assert_eq!(x_cache(&headers), "HIT", "a dry run removes nothing");

    let (_, answer) = api
        .edge_purge(json!({"prefix": url(HOST, "/dir/"), "mode": "invalidate"}))
        .await?;
    assert_eq!(answer["objects"], 2);
    let (status, headers, _) = get(api, "/dir/a.bin", &[]).await?;
    assert_eq!((status, x_cache(&headers)), (200, "HIT"));
    assert_eq!(
        origin.not_modified("/dir/a.bin"),
        1,
        "invalidated: revalidated with a 304"
    );

    let (_, answer) = api
        .edge_purge(json!({"url": url(HOST, "/other/c.bin")}))
        .await?;
    assert_eq!(
        (answer["objects"].clone(), answer["bytes"].clone()),
        (json!(1), json!(400))
    );
    let (_, headers, _) = get(api, "/other/c.bin", &[]).await?;
    assert_eq!(x_cache(&headers), "MISS");
    assert_eq!(origin.count("/other/c.bin"), 2);
    let (_, answer) = api
        .edge_purge(json!({"url": url(HOST, "/nothing.bin")}))
        .await?;
    assert_eq!(answer["objects"], 0);
    let (status, _) = api.edge_purge(json!({"url": "not a url"})).await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test]
async fn the_cache_stays_within_its_budget_by_evicting_the_least_recently_used() -> TestResult {
    const OBJECT: usize = 300 * 1024;
    let options = Options {
        args: [
            "--cache-size",
            "1MiB",
            "--max-object-size",
            "400KiB",
            "--cache-min-free",
            "0",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    };
    let Fixture {
        dir,
        server,
        api,
        origin,
        token,
    } = setup(options.clone(), Value::Null).await?;
    for name in ["a", "b", "c"] {
        origin.set(
            &format!("/{name}.bin"),
            Behavior::Body(Bytes::from(vec![1u8; OBJECT])),
        );
        get(&api, &format!("/{name}.bin"), &[]).await?;
    }
    get(&api, "/a.bin", &[]).await?; // "b" is now the least recently used
    origin.set("/d.bin", Behavior::Body(Bytes::from(vec![2u8; OBJECT])));
    get(&api, "/d.bin", &[]).await?;

    let (_, headers, _) = get(&api, "/a.bin", &[]).await?;
    assert_eq!(x_cache(&headers), "HIT");
    // A fill is published (and evicts) just after its last byte went out: wait for it.
    let mut status = api.edge_status().await?;
    for _ in 0..50 {
        if status["evictions"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = api.edge_status().await?;
    }
    assert_eq!(status["evictions"], 1, "{status}");
    let stored = status["stored_bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(stored <= 1024 * 1024, "{status}");
    assert!(cache_files_bytes(dir.path()) <= 1024 * 1024 + OBJECT as u64);

    // Larger than the max object size: served, never stored.
    origin.set("/huge.bin", Behavior::Large(500 * 1024));
    for _ in 0..2 {
        let (status, _, bytes) = get(&api, "/huge.bin", &[]).await?;
        assert_eq!((status, bytes.len()), (200, 500 * 1024));
    }
    assert_eq!(origin.count("/huge.bin"), 2);
    let req_id = api.prefetch_ok(&token, &[url(HOST, "/huge.bin")]).await?;
    let task = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    let error = task["urls"][0]["error"].as_str().unwrap_or("");
    assert!(error.contains("max object size"), "{task}");

    // The eviction order survives a restart: after it, "c" (not "a") goes first.
    server.terminate()?;
    let server = Server::start_with(dir.path(), options)?;
    let api = Api::new(&server);
    origin.set("/e.bin", Behavior::Body(Bytes::from(vec![3u8; OBJECT])));
    get(&api, "/e.bin", &[]).await?;
    let (_, headers, _) = get(&api, "/a.bin", &[]).await?;
    assert_eq!(x_cache(&headers), "HIT", "a was used recently");
    let (_, headers, _) = get(&api, "/c.bin", &[]).await?;
    assert_eq!(x_cache(&headers), "MISS", "c was the least recently used");
    Ok(())
}

fn cache_files_bytes(data_dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![data_dir.join("edge/cache/objects")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(path),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[tokio::test]
async fn a_broken_origin_body_is_never_served_as_complete_or_cached() -> TestResult {
    let fixture = setup(Options::default(), Value::Null).await?;
    let Fixture { api, origin, .. } = &fixture;
    origin.set(
        "/cut.bin",
        Behavior::Truncated(4 * 1024 * 1024, 1024 * 1024),
    );
    let outcome = async {
        let mut response = api.edge_get_with(HOST, "/cut.bin", &[]).await?;
        let mut received = 0usize;
        while let Some(chunk) = response.chunk().await? {
            received += chunk.len();
        }
        Ok::<usize, Error>(received)
    }
    .await;
    assert!(
        !matches!(outcome, Ok(len) if len == 4 * 1024 * 1024),
        "a truncated body must not arrive whole: {outcome:?}"
    );
    origin.set("/cut.bin", Behavior::Large(4 * 1024 * 1024));
    let (status, headers, bytes) = get(api, "/cut.bin", &[]).await?;
    assert_eq!(
        (status, x_cache(&headers)),
        (200, "MISS"),
        "nothing was cached"
    );
    assert_eq!(bytes.to_vec(), large_bytes(0, 4 * 1024 * 1024));
    Ok(())
}

#[tokio::test]
async fn on_a_full_disk_responses_are_proxied_without_caching() -> TestResult {
    // More free space required than any disk has: the edge treats its disk as full.
    let options = Options {
        args: ["--cache-min-free", "1000000TiB"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    };
    let Fixture {
        dir,
        server,
        api,
        origin,
        ..
    } = setup(options, Value::Null).await?;
    origin.set("/f.bin", Behavior::Body(Bytes::from_static(b"full disk")));
    for _ in 0..2 {
        let (status, headers, bytes) = get(&api, "/f.bin", &[]).await?;
        assert_eq!(
            (status, x_cache(&headers), &bytes[..]),
            (200, "MISS", &b"full disk"[..])
        );
    }
    assert_eq!(origin.count("/f.bin"), 2);
    assert_eq!(cache_files_bytes(dir.path()), 0, "nothing written");
    // The server's log reaches us through a pipe a thread reads: give it a moment.
    let mut logged = false;
    for _ in 0..50 {
        if server.log().contains("disk is full") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged, "{}", server.log());
    Ok(())
}

#[tokio::test]
async fn a_kill_during_fills_leaves_no_temp_files_and_only_complete_objects() -> TestResult {
    let Fixture {
        dir,
        server,
        api,
        origin,
        ..
    } = setup(Options::default(), Value::Null).await?;
    origin.set("/done.bin", Behavior::Body(Bytes::from_static(b"complete")));
    get(&api, "/done.bin", &[]).await?;
    origin.set(
        "/slow.bin",
        Behavior::SlowLarge(8 * 1024 * 1024, Duration::from_millis(20)),
    );
    let reader = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut response = api.edge_get_with(HOST, "/slow.bin", &[]).await?;
            while response.chunk().await?.is_some() {}
            Ok::<_, Error>(())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tmp = dir.path().join("edge/cache/tmp");
    assert!(std::fs::read_dir(&tmp)?.count() > 0, "a fill is running");
    server.kill9();
    let _ = reader.await;

    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    assert_eq!(std::fs::read_dir(&tmp)?.count(), 0, "temp files are gone");
    let (_, headers, bytes) = get(&api, "/done.bin", &[]).await?;
    assert_eq!((x_cache(&headers), &bytes[..]), ("HIT", &b"complete"[..]));
    origin.set("/slow.bin", Behavior::Large(8 * 1024 * 1024));
    let (_, headers, bytes) = get(&api, "/slow.bin", &[]).await?;
    assert_eq!(
        x_cache(&headers),
        "MISS",
        "the interrupted fill was not kept"
    );
    assert_eq!(bytes.to_vec(), large_bytes(0, 8 * 1024 * 1024));
    Ok(())
}
