//! Request ids, metrics on the API and on the edge.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;

use crate::support::client::url;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";

/// The value of the sample line `name{labels...}` (labels in any order), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn requests_carry_ids_and_metrics_count_api_and_edge_work() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"abc")));

    // An id comes back on every answer: the client's when it sent a sane one.
    let http = reqwest::Client::new();
    let mine = http
        .get(format!("{}/cdn_api/quota", api.base))
        .header("X-Auth-Token", &token)
        .header("X-Request-Id", "release-42.step-7")
        .send()
        .await?;
    assert_eq!(mine.headers()["x-request-id"], "release-42.step-7");
    let generated = http
        .get(format!("{}/cdn_api/quota", api.base))
        .header("X-Request-Id", "not/ok at all")
        .send()
        .await?;
    let id = generated.headers()["x-request-id"].to_str()?.to_string();
    assert!(
        id.len() >= 12 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id}"
    );

    let req_id = api.prefetch_ok(&token, &[url(HOST, "/a.pak")]).await?;
    api.wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    api.edge_get(HOST, "/a.pak").await?;
    api.edge_get(HOST, "/a.pak").await?;
    // Gauges are refreshed every second.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let metrics = http.get(format!("{}/metrics", api.base)).send().await?;
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"]
        .to_str()?
        .starts_with("text/plain"));
    let text = metrics.text().await?;
    let count = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels).unwrap_or(-1.0);
    assert_eq!(
        count(
            "precache_api_requests_total",
            &[
                ("route", "/cdn_api/prefetch"),
                ("method", "POST"),
                ("ret", "0")
            ]
        ),
        1.0,
        "{text}"
    );
    assert!(
        count(
            "precache_api_request_duration_seconds_count",
            &[("route", "/cdn_api/prefetch")]
        ) >= 1.0
    );
    assert_eq!(
        count(
            "precache_pairs_finished_total",
            &[("kind", "prefetch"), ("outcome", "success")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "precache_tasks_finished_total",
            &[("kind", "prefetch"), ("status", "done")]
        ),
        1.0
    );
    assert_eq!(
        count("precache_edge_requests_total", &[("cache", "hit")]),
        2.0,
        "{text}"
    );
    assert_eq!(count("precache_edge_bytes_served_total", &[]), 6.0);
    assert_eq!(
        count(
            "precache_edge_upstream_fetches_total",
            &[("upstream", "origin")]
        ),
        1.0
    );
    assert_eq!(count("precache_edge_cache_objects", &[]), 1.0);
    assert_eq!(count("precache_edge_hit_ratio", &[]), 1.0);
    assert!(count("precache_engine_pairs", &[("state", "held")]) >= 0.0);

    // The embedded edge's admin listener serves them too, without its secret.
    let edge_metrics = http
        .get(format!("{}/metrics", api.edge_admin))
        .send()
        .await?;
    assert_eq!(edge_metrics.status(), 200);
    assert!(edge_metrics
        .text()
        .await?
        .contains("precache_edge_requests_total"));
    let status = api.call(Method::GET, "/edge/v1/status", None, None).await?;
    assert_eq!(status.status, 404, "API routes stay apart from the edge's");
    Ok(())
}

#[tokio::test]
async fn json_logs_carry_the_request_id() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        crate::support::server::Options {
            args: vec!["--log-format".into(), "json".into()],
            ..Default::default()
        },
    )?;
    let answer = reqwest::Client::new()
        .get(format!("{}/cdn_api/quota", server.api))
        .header("X-Request-Id", "trace-me-1")
        .send()
        .await?;
    assert_eq!(answer.status(), 401);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = server.log();
        let found = log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|line| line["span"]["request_id"] == "trace-me-1");
        if found {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("no JSON log line with the request id:\n{log}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_server_raises_its_open_file_limit_to_the_hard_limit() -> TestResult {
    // Started with a soft limit of 512 under the hard one (prlimit, from util-linux).
    let hard = std::fs::read_to_string("/proc/self/limits")?
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(4).map(str::to_string))
        .ok_or("no open-files line in /proc/self/limits")?;
    if hard == "unlimited" || hard.parse::<u64>().is_ok_and(|hard| hard <= 512) {
        eprintln!("SKIPPED: the hard open-files limit ({hard}) leaves nothing to raise");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        crate::support::server::Options {
            wrapper: vec![
                "prlimit".into(),
                format!("--nofile=512:{hard}"),
                "--".into(),
            ],
            ..Default::default()
        },
    )?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid()))?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .ok_or("no open-files line in /proc/PID/limits")?;
    let numbers: Vec<&str> = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .take(2)
        .collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_eq!(
        numbers,
        [hard.as_str(), hard.as_str()],
        "soft limit raised: {line}"
    );
    assert!(server.log().contains("open files:"), "{}", server.log());
    Ok(())
}
