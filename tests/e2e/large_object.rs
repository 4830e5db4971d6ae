//! A 512 MiB object: prefetched with flat memory, then served from the cache, ranges included.

use std::time::Duration;

use reqwest::Method;

use crate::support::client::url;
use crate::support::origin::large_bytes;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const SIZE: u64 = 512 * 1024 * 1024;
const RSS_LIMIT: u64 = 200 * 1024 * 1024;

#[tokio::test]
async fn a_512_mib_object_is_prefetched_with_rss_under_200_mib() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api
        .user_with_domain("alice", "game.example.com", &origin.url())
        .await?;
    origin.set("/patch/huge.pak", Behavior::Large(SIZE));

    let req_id = api
        .prefetch_ok(&token, &[url("game.example.com", "/patch/huge.pak")])
        .await?;
    let status = api
        .wait_final(&token, &req_id, Duration::from_secs(600))
        .await?;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["urls"][0]["bytes"], SIZE);
    let peak = server.peak_rss().ok_or("no VmHWM for the server")?;
    assert!(
        peak < RSS_LIMIT,
        "peak RSS {} MiB while prefetching 512 MiB",
        peak / (1024 * 1024)
    );

    // Served from the cache: a range deep inside, then the whole object's length.
    let http = reqwest::Client::builder().no_proxy().build()?;
    let range = http
        .request(
            Method::GET,
            format!("http://{}/patch/huge.pak", server.edge),
        )
        .header("Host", "game.example.com")
        .header("Range", "bytes=500000000-500000099")
        .send()
        .await?;
    assert_eq!(range.status(), 206);
    assert_eq!(range.headers()["x-cache"], "HIT");
    assert_eq!(
        range.headers()["content-range"],
        format!("bytes 500000000-500000099/{SIZE}").as_str()
    );
    assert_eq!(range.bytes().await?.to_vec(), large_bytes(500_000_000, 100));
    let head = http
        .request(
            Method::HEAD,
            format!("http://{}/patch/huge.pak", server.edge),
        )
        .header("Host", "game.example.com")
        .send()
        .await?;
    assert_eq!(head.headers()["content-length"], SIZE.to_string().as_str());
    assert_eq!(
        origin.count("/patch/huge.pak"),
        1,
        "one origin fetch for the prefetch, none for the hits"
    );
    Ok(())
}
