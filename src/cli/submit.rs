//! `precache prefetch` and `precache refresh`: a release's URLs, split into requests by domain
//! and by the per-request limit, submitted one after the other; rate limits are waited out
//! (`Retry-After`), a spent daily quota stops the rest, and one summary tells what happened.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::client::{Client, Refused};

/// Waits of at most this long are waited out; a longer `Retry-After` is a spent daily quota.
const LONGEST_WAIT: u64 = 120;
/// Rate-limited retries of one request before giving up on it.
const RATE_LIMIT_RETRIES: u32 = 20;

/// Where the URLs come from.
#[derive(Debug, Clone, clap::Args)]
pub struct Targets {
    /// URLs (absolute, http://domain/path).
    pub urls: Vec<String>,
    /// Read URLs from this file, one per line (`-` for standard input); blank lines and lines
    /// starting with `#` are skipped.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// URLs per request (the control plane's limit; 10 by default there).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
}

/// Every URL of `targets`, in order, without duplicates.
pub fn read_targets(targets: &Targets) -> anyhow::Result<Vec<String>> {
    let mut urls = Vec::new();
    let mut push = |line: &str| {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') && !urls.iter().any(|url| url == line) {
            urls.push(line.to_string());
        }
    };
    for url in &targets.urls {
        if url == "-" {
            for line in std::io::stdin().lock().lines() {
                push(&line.context("read standard input")?);
            }
        } else {
            push(url);
        }
    }
    if let Some(file) = &targets.from_file {
        if file.as_os_str() == "-" {
            for line in std::io::stdin().lock().lines() {
                push(&line.context("read standard input")?);
            }
        } else {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("read {}", file.display()))?;
            text.lines().for_each(&mut push);
        }
    }
    Ok(urls)
}

/// The host of an absolute URL, lowercased; `None` when it is not one.
fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
}

/// One request's worth: URLs (and, for a refresh, directories) of one domain.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The domain.
    pub domain: String,
    /// URLs.
    pub urls: Vec<String>,
    /// Refresh: directories.
    pub dirs: Vec<String>,
}

/// Splits targets into requests: by domain (in order of first appearance), then by `batch`.
/// Strings that are not absolute URLs come back apart, refused.
pub fn chunks(urls: &[String], dirs: &[String], batch: usize) -> (Vec<Chunk>, Vec<String>) {
    let mut by_domain: BTreeMap<usize, (String, Vec<String>, Vec<String>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut invalid = Vec::new();
    for (list, is_dir) in [(urls, false), (dirs, true)] {
        for url in list {
            let Some(host) = host_of(url) else {
                invalid.push(url.clone());
                continue;
            };
            let position = order
                .iter()
                .position(|seen| *seen == host)
                .unwrap_or_else(|| {
                    order.push(host.clone());
                    order.len() - 1
                });
            let entry = by_domain
                .entry(position)
                .or_insert_with(|| (host, Vec::new(), Vec::new()));
            if is_dir {
                entry.2.push(url.clone());
            } else {
                entry.1.push(url.clone());
            }
        }
    }
    let batch = batch.max(1);
    let mut chunks = Vec::new();
    for (_, (domain, urls, dirs)) in by_domain {
        let targets: Vec<(String, bool)> = urls
            .into_iter()
            .map(|url| (url, false))
            .chain(dirs.into_iter().map(|dir| (dir, true)))
            .collect();
        for group in targets.chunks(batch) {
            chunks.push(Chunk {
                domain: domain.clone(),
                urls: group
                    .iter()
                    .filter(|(_, dir)| !dir)
                    .map(|(u, _)| u.clone())
                    .collect(),
                dirs: group
                    .iter()
                    .filter(|(_, dir)| *dir)
                    .map(|(u, _)| u.clone())
                    .collect(),
            });
        }
    }
    (chunks, invalid)
}

/// What became of the requests.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Accepted tasks: `reqId` and its URLs.
    pub accepted: Vec<(String, Chunk)>,
    /// Refused URLs with the reason.
    pub refused: Vec<(Vec<String>, String)>,
}

/// Submits every chunk with `body_of`, in order.
pub async fn submit_all(
    client: &Client,
    kind: &str,
    chunks: Vec<Chunk>,
    body_of: impl Fn(&Chunk) -> Value,
    quiet: bool,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut remaining = chunks.into_iter();
    while let Some(chunk) = remaining.next() {
        let body = body_of(&chunk);
        let key = format!("cli-{}", crate::serve::random_secret());
        let mut retries = 0;
        loop {
            let answer = client
                .call_with(
                    Method::POST,
                    &format!("/cdn_api/{kind}"),
                    Some(&body),
                    Some(&key),
                )
                .await;
            match answer {
                Ok(fields) => {
                    let req_id = fields["reqId"].as_str().unwrap_or_default().to_string();
                    outcome.accepted.push((req_id, chunk));
                    break;
                }
                Err(Refused {
                    ret: 4001,
                    retry_after: Some(wait),
                    ..
                }) if wait <= LONGEST_WAIT && retries < RATE_LIMIT_RETRIES => {
                    retries += 1;
                    if !quiet {
                        eprintln!("rate limited; waiting {wait}s as the control plane asks");
                    }
                    tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
                }
                Err(refused) if refused.ret == 4001 => {
                    // The daily quota is spent: the rest would be refused too.
                    let reason = refused.to_string();
                    let mut urls = targets(&chunk);
                    for rest in remaining.by_ref() {
                        urls.extend(targets(&rest));
                    }
                    outcome.refused.push((urls, reason));
                    break;
                }
                Err(refused) if refused.status == 0 => {
                    // No answer: the same key makes a retry safe.
                    if retries >= 3 {
                        outcome.refused.push((targets(&chunk), refused.to_string()));
                        break;
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(refused) => {
                    outcome.refused.push((targets(&chunk), refused.to_string()));
                    break;
                }
            }
        }
    }
    outcome
}

fn targets(chunk: &Chunk) -> Vec<String> {
    chunk.urls.iter().chain(&chunk.dirs).cloned().collect()
}

/// The submission's part of the summary.
pub fn outcome_json(outcome: &Outcome) -> Value {
    json!({
        "submitted": outcome.accepted.iter().map(|(req_id, chunk)| json!({
            "reqId": req_id, "domain": chunk.domain, "urls": targets(chunk),
        })).collect::<Vec<_>>(),
        "refused": outcome.refused.iter().map(|(urls, reason)| json!({
            "urls": urls, "reason": reason,
        })).collect::<Vec<_>>(),
    })
}

/// Fails when nothing at all was given.
pub fn require_some(urls: &[String], dirs: &[String]) -> anyhow::Result<()> {
    if urls.is_empty() && dirs.is_empty() {
        return Err(anyhow!(
            "no URLs: give them as arguments, with --from-file FILE, or - for standard input"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_by_domain_then_by_batch() {
        let urls: Vec<String> = (0..12)
            .map(|n| format!("http://a.example.com/{n}"))
            .chain([
                "http://B.example.com/x".to_string(),
                "not a url".to_string(),
            ])
            .collect();
        let (chunks, invalid) = chunks(&urls, &["http://a.example.com/dir/".to_string()], 10);
        let shape: Vec<(String, usize, usize)> = chunks
            .iter()
            .map(|chunk| (chunk.domain.clone(), chunk.urls.len(), chunk.dirs.len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a.example.com".to_string(), 10, 0),
                ("a.example.com".to_string(), 2, 1),
                ("b.example.com".to_string(), 1, 0),
            ]
        );
        assert_eq!(invalid, vec!["not a url".to_string()]);
    }
}
