//! `--wait`: following tasks to their end on their event streams, with a live progress bar
//! per task (URLs done and failed, bytes fetched of the expected, an ETA for large objects).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use crate::cli::client::Client;

/// Per task, what a bar shows.
struct Tally {
    done: u64,
    failed: u64,
    total: u64,
    bytes: u64,
    expected: u64,
}

/// Counts a status answer: URLs done and failed, bytes fetched so far and expected.
fn tally(task: &Value) -> Tally {
    let mut tally = Tally {
        done: 0,
        failed: 0,
        total: 0,
        bytes: 0,
        expected: 0,
    };
    for url in task["urls"].as_array().into_iter().flatten() {
        tally.total += 1;
        match url["status"].as_str() {
            Some("success") => tally.done += 1,
            Some("failed") | Some("cancelled") => tally.failed += 1,
            _ => {}
        }
        for pair in url["edges"].as_array().into_iter().flatten() {
            let bytes = pair["bytes"].as_u64().unwrap_or(0);
            tally.bytes += bytes;
            tally.expected += pair["expected_bytes"].as_u64().unwrap_or(bytes);
        }
    }
    tally
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Follows one task on its event stream until its `end` event; answers its final status.
/// Without a stream (an older server, a proxy that buffers), polls the status instead.
async fn follow_one(client: &Client, kind: &str, req_id: &str, bar: &ProgressBar) -> Value {
    let started = Instant::now();
    let show = |task: &Value| {
        let tally = tally(task);
        bar.set_length(tally.total.max(1));
        bar.set_position(tally.done + tally.failed);
        let mut message = format!(
            "{req_id}  {} done, {} failed of {}",
            tally.done, tally.failed, tally.total
        );
        if tally.expected > 0 && kind == "prefetch" {
            message.push_str(&format!(
                ", {} of {}",
                mib(tally.bytes),
                mib(tally.expected)
            ));
            let elapsed = started.elapsed().as_secs_f64();
            if tally.bytes > 0 && tally.bytes < tally.expected && elapsed > 0.5 {
                let rate = tally.bytes as f64 / elapsed;
                let left = (tally.expected - tally.bytes) as f64 / rate;
                message.push_str(&format!(", ETA {}s", left.ceil() as u64));
            }
        }
        bar.set_message(message);
    };
    if let Ok(response) = client.events(kind, req_id).await {
        let mut stream = response.bytes_stream();
        let mut pending = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let mut name = "message";
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = if value.trim() == "end" {
                            "end"
                        } else {
                            "progress"
                        };
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                let Ok(task) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                show(&task);
                if name == "end" {
                    return task;
                }
            }
        }
    }
    loop {
        if let Ok(task) = client
            .call(Method::GET, &format!("/cdn_api/{kind}/{req_id}"), None)
            .await
        {
            show(&task);
            let status = task["status"].as_str().unwrap_or("");
            if matches!(status, "done" | "failed" | "cancelled") {
                return task;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follows every task at once; answers their final states in the same order.
pub async fn follow_all(
    client: &Client,
    kind: &str,
    req_ids: &[String],
    quiet: bool,
) -> Vec<Value> {
    let bars = MultiProgress::new();
    if quiet {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let followers = req_ids.iter().map(|req_id| {
        let bar = bars.add(ProgressBar::new(1).with_style(style.clone()));
        let client = client.clone();
        async move {
            let task = follow_one(&client, kind, req_id, &bar).await;
            bar.finish();
            task
        }
    });
    futures_util::future::join_all(followers).await
}

/// Every failed (URL, edge) of finished tasks, as lines for people.
pub fn failures(tasks: &[Value]) -> Vec<String> {
    let mut lines = Vec::new();
    for task in tasks {
        for url in task["urls"].as_array().into_iter().flatten() {
            if url["status"] == "success" {
                continue;
            }
            for pair in url["edges"].as_array().into_iter().flatten() {
                if pair["status"] != "success" {
                    lines.push(format!(
                        "{}  {} on {}: {}",
                        task["reqId"].as_str().unwrap_or(""),
                        url["url"].as_str().unwrap_or(""),
                        pair["edge"].as_str().unwrap_or("?"),
                        pair["error"]
                            .as_str()
                            .unwrap_or(pair["status"].as_str().unwrap_or("")),
                    ));
                }
            }
        }
    }
    lines
}
