//! `varnish`: a Varnish fleet with the VCL of docs/backends/varnish.vcl. A URL purge is
//! `PURGE <path>` (200 removed, 404 was not cached; with `X-Precache-Mode: invalidate` a soft
//! purge that leaves a stale copy to revalidate), a directory purge `BAN <prefix>` (applied by
//! Varnish's ban lurker; it cannot say what was cached).

use async_trait::async_trait;
use precache_model::edge_protocol::{PairOutcome, PurgeMode};
use reqwest::Method;
use serde_json::Value;

use super::http_cache::{check_purge, purge_outcome, HttpCache};
use super::{split_url, Away, Backend, Capabilities, Progress, Target};
use crate::PairJob;

/// A Varnish fleet.
pub struct Varnish {
    http: HttpCache,
}

impl Varnish {
    /// Settings: `concurrency`, `timeout`.
    pub fn new(settings: &Value) -> Result<Varnish, String> {
        Ok(Varnish {
            http: HttpCache::new("varnish", settings, &[])?,
        })
    }
}

#[async_trait]
impl Backend for Varnish {
    fn kind(&self) -> &'static str {
        "varnish"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            prefetch: true,
            url_purge: true,
            dir_purge: true,
            invalidate: true,
            reports_was_cached: true,
            confirms: true,
            dry_run: false,
        }
    }

    async fn prefetch(
        &self,
        target: &Target,
        job: &PairJob,
        _max_bytes_per_sec: Option<u64>,
        progress: Progress<'_>,
    ) -> Result<PairOutcome, Away> {
        Ok(self.http.prefetch(target, job, progress).await)
    }

    async fn purge(&self, target: &Target, job: &PairJob) -> Result<PairOutcome, Away> {
        let Some((host, path)) = split_url(&job.url) else {
            return Ok(PairOutcome::failed(
                None,
                format!("not a URL: {}", job.url),
                false,
            ));
        };
        if job.is_dir {
            let method = Method::from_bytes(b"BAN").map_err(|e| Away(e.to_string()))?;
            let answer = self.http.send(target, method, &path, &host, &[]).await;
            // A ban removes what matches as Varnish gets to it: how much was cached is unknown.
            return Ok(PairOutcome {
                objects: None,
                ..purge_outcome(self.kind(), target, answer, &[200], &[])
            });
        }
        let method = Method::from_bytes(b"PURGE").map_err(|e| Away(e.to_string()))?;
        let headers: &[(&str, &str)] = match job.mode {
            PurgeMode::Invalidate => &[("x-precache-mode", "invalidate")],
            PurgeMode::Delete => &[],
        };
        let answer = self.http.send(target, method, &path, &host, headers).await;
        Ok(purge_outcome(self.kind(), target, answer, &[200], &[404]))
    }

    async fn check(&self, target: &Target) -> Result<String, String> {
        check_purge(&self.http, "varnish", target, b"PURGE", "/").await
    }
}
