//! The built-in backend `edges`: precache's own edges, driven through the edge protocol.

use async_trait::async_trait;
use precache_model::edge_protocol::{PairOutcome, PurgeCommand, PurgeTarget};

use super::{Away, Backend, Capabilities, Progress, Target};
use crate::edge_client::EdgeCallError;
use crate::{EdgeClient, EdgeTarget, PairJob};

/// Every precache edge, through one edge-protocol client.
pub struct Edges {
    client: EdgeClient,
}

impl Edges {
    /// Drives edges with this client.
    pub fn new(client: EdgeClient) -> Edges {
        Edges { client }
    }
}

fn edge(target: &Target) -> EdgeTarget {
    EdgeTarget {
        id: target.id,
        name: target.name.clone(),
        admin_url: target.url.clone(),
        secret: target.secret.clone().unwrap_or_default(),
    }
}

/// An edge that did not answer waits for the pair (it catches up on purges when back); one that
/// answered with an error fails the attempt, to be retried.
fn answered(error: EdgeCallError) -> Result<PairOutcome, Away> {
    if error.unreachable {
        Err(Away(error.to_string()))
    } else {
        Ok(PairOutcome::failed(None, error.to_string(), true))
    }
}

#[async_trait]
impl Backend for Edges {
    fn kind(&self) -> &'static str {
        "edges"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            prefetch: true,
            url_purge: true,
            dir_purge: true,
            invalidate: true,
            reports_was_cached: true,
            confirms: true,
            dry_run: true,
        }
    }

    async fn prefetch(
        &self,
        target: &Target,
        job: &PairJob,
        max_bytes_per_sec: Option<u64>,
        progress: Progress<'_>,
    ) -> Result<PairOutcome, Away> {
        match self
            .client
            .prefetch(&edge(target), &job.url, max_bytes_per_sec, progress)
            .await
        {
            Ok(outcome) => Ok(outcome),
            Err(error) => answered(error),
        }
    }

    async fn purge(&self, target: &Target, job: &PairJob) -> Result<PairOutcome, Away> {
        let command = PurgeCommand {
            target: if job.is_dir {
                PurgeTarget::Prefix(job.url.clone())
            } else {
                PurgeTarget::Url(job.url.clone())
            },
            mode: job.mode,
            dry_run: job.dry_run,
        };
        match self.client.purge(&edge(target), &command).await {
            Ok(purged) => Ok(PairOutcome {
                success: true,
                http_status: None,
                bytes: purged.bytes,
                objects: Some(purged.objects),
                error: None,
                retryable: false,
            }),
            Err(error) => answered(error),
        }
    }

    async fn check(&self, target: &Target) -> Result<String, String> {
        self.client
            .status(&edge(target))
            .await
            .map(|status| {
                format!(
                    "edge {} holds {} objects ({} bytes)",
                    status.name, status.objects, status.bytes
                )
            })
            .map_err(|error| error.to_string())
    }
}
