//! Live progress: byte counts of prefetches in flight, and the Server-Sent Events stream.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::support::client::url;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";
const SIZE: u64 = 8 << 20;

/// Reads SSE events (name, data) from `response` until the `end` event or the time limit.
async fn read_events(
    response: reqwest::Response,
    limit: Duration,
) -> Result<Vec<(String, Value)>, Box<dyn std::error::Error + Send + Sync>> {
    let mut events = Vec::new();
    let mut stream = response.bytes_stream();
    let mut pending = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await {
        pending.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let ended = name == "end";
            events.push((name, serde_json::from_str(&data)?));
            if ended {
                return Ok(events);
            }
        }
    }
    Err(format!("no end event within {limit:?}; got {events:?}").into())
}

#[tokio::test]
async fn a_prefetch_streams_byte_progress_and_ends_with_its_final_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    // 128 chunks of 64 KiB, 30 ms apart: about 4 s of transfer.
    origin.set(
        "/patch.pak",
        Behavior::SlowLarge(SIZE, Duration::from_millis(30)),
    );
    let req_id = api.prefetch_ok(&token, &[url(HOST, "/patch.pak")]).await?;
    let response = reqwest::Client::new()
        .get(format!("{}/cdn_api/prefetch/{req_id}/events", api.base))
        .header("X-Auth-Token", &token)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    let events = read_events(response, Duration::from_secs(60)).await?;
    let in_flight: Vec<(i64, i64)> = events
        .iter()
        .filter(|(name, _)| name == "progress")
        .filter_map(|(_, task)| {
            let pair = &task["urls"][0]["edges"][0];
            (pair["status"] == "running").then(|| {
                (
                    pair["bytes"].as_i64().unwrap_or(-1),
                    pair["expected_bytes"].as_i64().unwrap_or(-1),
                )
            })
        })
        .collect();
    assert!(
        in_flight.iter().any(|(bytes, expected)| *bytes > 0
            && *bytes < SIZE as i64
            && *expected == SIZE as i64),
        "a progress event shows part of the bytes of the expected size: {in_flight:?}"
    );
    let (name, last) = events.last().ok_or("events")?;
    assert_eq!(name, "end");
    assert_eq!(last["status"], "done", "{last}");
    assert_eq!(last["urls"][0]["edges"][0]["bytes"], SIZE);

    // An unknown task has no stream.
    let unknown = api
        .call(
            reqwest::Method::GET,
            "/cdn_api/prefetch/00000000-0000-4000-8000-000000000000/events",
            Some(&token),
            None,
        )
        .await?;
    unknown.expect(404, 3001)?;
    Ok(())
}
