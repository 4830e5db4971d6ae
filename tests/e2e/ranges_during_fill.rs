//! Ranges of an object the edge is still filling (issue 16): segmented downloads of a cold
//! object get `206` with their segment from the first request on, with one origin fetch.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::origin::large_bytes;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "launcher.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A server with `HOST` registered against an origin.
async fn setup(dir: &std::path::Path) -> Result<(Server, Api, Origin), Error> {
    let server = Server::start(dir)?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
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
    Ok((server, api, origin))
}

/// What the edge answered to a range request.
struct RangeAnswer {
    status: u16,
    content_range: String,
    body: bytes::Bytes,
}

async fn get_range(api: &Api, path: &str, range: &str) -> Result<RangeAnswer, Error> {
    let response = api.edge_get_with(HOST, path, &[("Range", range)]).await?;
    let status = response.status().as_u16();
    let content_range = response
        .headers()
        .get("content-range")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok(RangeAnswer {
        status,
        content_range,
        body: response.bytes().await?,
    })
}

#[tokio::test]
async fn eight_segments_of_a_cold_object_are_each_answered_206_with_one_origin_fetch() -> TestResult
{
    const LEN: u64 = 50 * 1024 * 1024;
    const SEGMENTS: u64 = 8;
    let dir = tempfile::tempdir()?;
    let (_server, api, origin) = setup(dir.path()).await?;
    // A pause after every 64 KiB keeps the fill going for a few seconds, so the segments are
    // asked for while it is in progress: seven of them wait on the cache lock and then tail the
    // fill, one fetches.
    origin.set(
        "/game.pak",
        Behavior::SlowLarge(LEN, Duration::from_millis(2)),
    );

    let segment_len = LEN / SEGMENTS;
    let requests = (0..SEGMENTS).map(|segment| {
        let api = api.clone();
        async move {
            let start = segment * segment_len;
            // The last segment is open-ended, as segmented downloaders ask for it.
            let (range, end) = if segment + 1 == SEGMENTS {
                (format!("bytes={start}-"), LEN - 1)
            } else {
                let end = start + segment_len - 1;
                (format!("bytes={start}-{end}"), end)
            };
            let answer = get_range(&api, "/game.pak", &range).await?;
            Ok::<_, Error>((start, end, answer))
        }
    });
    let answers = futures_util::future::try_join_all(requests).await?;

    for (start, end, answer) in answers {
        assert_eq!(answer.status, 206, "segment at {start}");
        assert_eq!(answer.content_range, format!("bytes {start}-{end}/{LEN}"));
        let expected = large_bytes(start, (end - start + 1) as usize);
        assert!(
            answer.body[..] == expected[..],
            "segment at {start}: {} bytes, not the slice of {} bytes",
            answer.body.len(),
            expected.len()
        );
    }
    assert_eq!(
        origin.count("/game.pak"),
        1,
        "one origin fetch for all segments"
    );
    Ok(())
}

#[tokio::test]
async fn a_range_joining_a_fill_in_progress_waits_for_its_bytes() -> TestResult {
    const LEN: u64 = 8 * 1024 * 1024;
    let dir = tempfile::tempdir()?;
    let (_server, api, origin) = setup(dir.path()).await?;
    origin.set(
        "/patch.bin",
        Behavior::SlowLarge(LEN, Duration::from_millis(5)),
    );

    // A plain GET starts the fill; the ranges come once the edge reports it running.
    let whole = {
        let api = api.clone();
        tokio::spawn(async move {
            let response = api.edge_get(HOST, "/patch.bin").await?;
            let status = response.status().as_u16();
            Ok::<_, Error>((status, response.bytes().await?.len()))
        })
    };
    let mut filling = false;
    for _ in 0..200 {
        if api.edge_status().await?["fills_in_progress"].as_u64() == Some(1) {
            filling = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(filling, "the fill never started");

    let near_start = get_range(&api, "/patch.bin", "bytes=0-99").await?;
    assert_eq!(near_start.status, 206);
    assert_eq!(near_start.content_range, format!("bytes 0-99/{LEN}"));
    assert_eq!(near_start.body[..], large_bytes(0, 100)[..]);

    let suffix = get_range(&api, "/patch.bin", "bytes=-1000").await?;
    assert_eq!(suffix.status, 206);
    assert_eq!(
        suffix.content_range,
        format!("bytes {}-{}/{LEN}", LEN - 1000, LEN - 1)
    );
    assert_eq!(suffix.body[..], large_bytes(LEN - 1000, 1000)[..]);

    let beyond = get_range(&api, "/patch.bin", &format!("bytes={LEN}-")).await?;
    assert_eq!(beyond.status, 416);

    let (status, len) = whole.await??;
    assert_eq!((status, len as u64), (200, LEN));
    assert_eq!(origin.count("/patch.bin"), 1);
    Ok(())
}
