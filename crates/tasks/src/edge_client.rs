//! The control plane's side of the edge protocol.

use std::time::Duration;

use precache_model::edge_protocol::{
    DomainTable, EdgeStatus, PairOutcome, PrefetchCommand, PrefetchEvent, PurgeCommand,
    PurgeOutcome, DOMAINS_PATH, PREFETCH_PATH, PURGE_PATH, STATUS_PATH,
};
use precache_model::EdgeId;

/// Where and how to reach one edge's admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeTarget {
    /// The edge's id.
    pub id: EdgeId,
    /// The edge's name, quoted in errors.
    pub name: String,
    /// Base URL of the admin listener, e.g. `http://127.0.0.1:8082`.
    pub admin_url: String,
    /// Bearer secret.
    pub secret: String,
}

/// A call to an edge that failed.
#[derive(Debug, thiserror::Error)]
#[error("edge {edge} {}: {reason}", if *.unreachable { "unreachable" } else { "failed" })]
pub struct EdgeCallError {
    /// The edge's name.
    pub edge: String,
    /// What went wrong.
    pub reason: String,
    /// No answer came from the edge at all (refused, timed out, reset before an answer): the
    /// edge is down or cut off, rather than failing the work.
    pub unreachable: bool,
}

/// An HTTP client for edges' admin listeners.
#[derive(Clone)]
pub struct EdgeClient {
    http: reqwest::Client,
    quick_call: Duration,
    stream_idle: Duration,
}

impl EdgeClient {
    /// A client whose status and configuration calls give up after `quick_call`, and whose
    /// prefetch streams give up when the edge sends nothing (not even progress) for `stream_idle`.
    /// For https admin listeners, `ca_pem` is a CA (PEM) trusted besides the public roots.
    pub fn new(
        quick_call: Duration,
        stream_idle: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<EdgeClient, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(quick_call)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(pem) = ca_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        let http = builder.build()?;
        Ok(EdgeClient {
            http,
            quick_call,
            stream_idle,
        })
    }

    fn fail(edge: &EdgeTarget, reason: impl ToString) -> EdgeCallError {
        EdgeCallError {
            edge: edge.name.clone(),
            reason: reason.to_string(),
            unreachable: false,
        }
    }

    fn unreachable(edge: &EdgeTarget, error: reqwest::Error) -> EdgeCallError {
        EdgeCallError {
            edge: edge.name.clone(),
            reason: error.to_string(),
            unreachable: true,
        }
    }

    fn url(edge: &EdgeTarget, path: &str) -> String {
        format!("{}{path}", edge.admin_url.trim_end_matches('/'))
    }

    async fn checked(
        edge: &EdgeTarget,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, EdgeCallError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(Self::fail(
            edge,
            format!("answered {status}: {}", body.trim()),
        ))
    }

    /// The edge's status.
    pub async fn status(&self, edge: &EdgeTarget) -> Result<EdgeStatus, EdgeCallError> {
        let response = self
            .http
            .get(Self::url(edge, STATUS_PATH))
            .bearer_auth(&edge.secret)
            .timeout(self.quick_call)
            .send()
            .await
            .map_err(|e| Self::unreachable(edge, e))?;
        Self::checked(edge, response)
            .await?
            .json()
            .await
            .map_err(|e| Self::fail(edge, e))
    }

    /// Purges (or counts) cached objects on the edge.
    pub async fn purge(
        &self,
        edge: &EdgeTarget,
        command: &PurgeCommand,
    ) -> Result<PurgeOutcome, EdgeCallError> {
        let response = self
            .http
            .post(Self::url(edge, PURGE_PATH))
            .bearer_auth(&edge.secret)
            .json(command)
            // A prefix purge of a large directory deletes many files.
            .timeout(self.quick_call * 12)
            .send()
            .await
            .map_err(|e| Self::unreachable(edge, e))?;
        Self::checked(edge, response)
            .await?
            .json()
            .await
            .map_err(|e| Self::fail(edge, e))
    }

    /// Replaces the edge's domain table.
    pub async fn push_domains(
        &self,
        edge: &EdgeTarget,
        table: &DomainTable,
    ) -> Result<(), EdgeCallError> {
        let response = self
            .http
            .put(Self::url(edge, DOMAINS_PATH))
            .bearer_auth(&edge.secret)
            .json(table)
            .timeout(self.quick_call)
            .send()
            .await
            .map_err(|e| Self::unreachable(edge, e))?;
        Self::checked(edge, response).await.map(|_| ())
    }

    /// Asks the edge to prefetch `url` and waits for the outcome, however long the object takes:
    /// the edge streams progress lines, so only silence counts as a failure.
    pub async fn prefetch(
        &self,
        edge: &EdgeTarget,
        url: &str,
        max_bytes_per_sec: Option<u64>,
        on_progress: impl Fn(u64, Option<u64>),
    ) -> Result<PairOutcome, EdgeCallError> {
        let response = self
            .http
            .post(Self::url(edge, PREFETCH_PATH))
            .bearer_auth(&edge.secret)
            .json(&PrefetchCommand {
                url: url.to_string(),
                max_bytes_per_sec,
            })
            .send()
            .await
            .map_err(|e| Self::unreachable(edge, e))?;
        let mut response = Self::checked(edge, response).await?;
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::time::timeout(self.stream_idle, response.chunk())
                .await
                .map_err(|_| {
                    Self::fail(
                        edge,
                        format!(
                            "no word for {}s during a prefetch",
                            self.stream_idle.as_secs()
                        ),
                    )
                })?
                .map_err(|e| Self::fail(edge, e))?;
            let Some(chunk) = chunk else {
                return Err(Self::fail(
                    edge,
                    "the edge ended the prefetch stream without an outcome",
                ));
            };
            pending.extend_from_slice(&chunk);
            while let Some(newline) = pending.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=newline).collect();
                match serde_json::from_slice::<PrefetchEvent>(&line) {
                    Ok(PrefetchEvent::Finished(outcome)) => return Ok(outcome),
                    Ok(PrefetchEvent::Progress { bytes, total }) => on_progress(bytes, total),
                    Err(error) => {
                        return Err(Self::fail(
                            edge,
                            format!("sent an unreadable line: {error}"),
                        ))
                    }
                }
            }
        }
    }
}
