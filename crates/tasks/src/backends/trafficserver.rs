//! `trafficserver`: an Apache Traffic Server fleet configured as in docs/backends/trafficserver:
//! a URL purge is `PURGE <path>` (200 removed, 404 was not cached). Without plugins it has no
//! prefix purge and no invalidation (a refresh asking for it deletes, and says so).

use async_trait::async_trait;
use precache_model::edge_protocol::PairOutcome;
use reqwest::Method;
use serde_json::Value;

use super::http_cache::{check_purge, purge_outcome, HttpCache};
use super::{split_url, Away, Backend, Capabilities, Progress, Target};
use crate::PairJob;

/// A Traffic Server fleet.
pub struct TrafficServer {
    http: HttpCache,
}

impl TrafficServer {
    /// Settings: `concurrency`, `timeout`.
    pub fn new(settings: &Value) -> Result<TrafficServer, String> {
        Ok(TrafficServer {
            http: HttpCache::new("trafficserver", settings, &[])?,
        })
    }
}

#[async_trait]
impl Backend for TrafficServer {
    fn kind(&self) -> &'static str {
        "trafficserver"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            prefetch: true,
            url_purge: true,
            dir_purge: false,
            invalidate: false,
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
        let method = Method::from_bytes(b"PURGE").map_err(|e| Away(e.to_string()))?;
        let answer = self.http.send(target, method, &path, &host, &[]).await;
        Ok(purge_outcome(self.kind(), target, answer, &[200], &[404]))
    }

    async fn check(&self, target: &Target) -> Result<String, String> {
        check_purge(&self.http, "trafficserver", target, b"PURGE", "/").await
    }
}
