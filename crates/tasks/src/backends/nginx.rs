//! `nginx`: an nginx fleet with `proxy_cache` and the ngx_cache_purge module in its
//! separate-location form (docs/backends/nginx-cache-purge.conf): a URL purge is
//! `GET <purge_prefix><path>` (200 removed, 404 was not cached). The module purges exact keys
//! only (no directories) and cannot invalidate (a refresh asking for it deletes, and says so).

use async_trait::async_trait;
use precache_model::edge_protocol::PairOutcome;
use reqwest::Method;
use serde_json::Value;

use super::http_cache::{check_purge, purge_outcome, HttpCache};
use super::{split_url, Away, Backend, Capabilities, Progress, Target};
use crate::PairJob;

/// The purge location's prefix unless `settings.purge_prefix` says otherwise.
const DEFAULT_PURGE_PREFIX: &str = "/purge";

/// An nginx fleet.
pub struct Nginx {
    http: HttpCache,
    purge_prefix: String,
}

impl Nginx {
    /// Settings: `purge_prefix` (default `/purge`), `concurrency`, `timeout`.
    pub fn new(settings: &Value) -> Result<Nginx, String> {
        let purge_prefix = match settings.get("purge_prefix") {
            None => DEFAULT_PURGE_PREFIX.to_string(),
            Some(Value::String(prefix))
                if prefix.starts_with('/')
                    && prefix.len() > 1
                    && !prefix.ends_with('/')
                    && prefix
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#') =>
            {
                prefix.clone()
            }
            Some(_) => {
                return Err(
                    "settings.purge_prefix must be a path such as \"/purge\" (no trailing /)"
                        .into(),
                )
            }
        };
        Ok(Nginx {
            http: HttpCache::new("nginx", settings, &["purge_prefix"])?,
            purge_prefix,
        })
    }
}

#[async_trait]
impl Backend for Nginx {
    fn kind(&self) -> &'static str {
        "nginx"
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
        let purge_path = format!("{}{path}", self.purge_prefix);
        let answer = self
            .http
            .send(target, Method::GET, &purge_path, &host, &[])
            .await;
        Ok(purge_outcome(self.kind(), target, answer, &[200], &[404]))
    }

    async fn check(&self, target: &Target) -> Result<String, String> {
        check_purge(
            &self.http,
            "nginx",
            target,
            b"GET",
            &format!("{}/", self.purge_prefix),
        )
        .await
    }
}
