//! `precache edge`: one caching edge on its own host, joined to a control plane.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use precache_model::edge_protocol::JoinRequest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ServeConfig;
use crate::serve::{bind, install_metrics, lock_data_dir, run_role, wait_for_signal};

/// What an edge keeps of its join, in `edge-credential.json` (mode 0600) in its data dir.
#[derive(Debug, Serialize, Deserialize)]
struct SavedCredential {
    name: String,
    credential: String,
    /// SHA-256 of the join token it was obtained with: a different token means join again.
    join_token_sha256: String,
}

const CREDENTIAL_FILE: &str = "edge-credential.json";

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn read_credential(path: &Path) -> Option<SavedCredential> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_credential(path: &Path, saved: &SavedCredential) -> anyhow::Result<()> {
    crate::serve::write_private(path, &serde_json::to_vec_pretty(saved)?)
}

fn advertised(
    explicit: Option<&String>,
    bound: SocketAddr,
    scheme: &str,
    flag: &str,
) -> anyhow::Result<String> {
    match explicit {
        Some(url) => Ok(url.trim_end_matches('/').to_string()),
        None if bound.ip().is_unspecified() => Err(anyhow!(
            "listening on {bound}: set --{flag} to the URL others reach it at"
        )),
        None => Ok(format!("{scheme}://{bound}")),
    }
}

/// Runs the edge until SIGTERM or SIGINT.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    run_role(config.log_format, edge(config))
}

async fn edge(config: ServeConfig) -> anyhow::Result<()> {
    let control = config
        .control
        .clone()
        .ok_or_else(|| anyhow!("--control (the control plane's URL) is required"))?;
    let name = config.edge_name.clone();
    let data_dir: PathBuf = config.data_dir.clone();
    let _lock = lock_data_dir(&data_dir)?;
    let data_listener = bind(config.edge_listen, "the edge")?;
    let tls_listener = config
        .edge_tls_listen
        .map(|address| bind(address, "the edge over TLS"))
        .transpose()?;
    let admin_listener = bind(config.edge_admin_listen, "the edge admin protocol")?;
    let admin_url = advertised(
        config.edge_admin_url.as_ref(),
        admin_listener.local_addr()?,
        if config.edge_admin_tls.is_some() {
            "https"
        } else {
            "http"
        },
        "edge-admin-url",
    )?;
    let data_url = advertised(
        config.edge_data_url.as_ref(),
        data_listener.local_addr()?,
        "http",
        "edge-data-url",
    )?;

    let credential_path = data_dir.join(CREDENTIAL_FILE);
    let saved = read_credential(&credential_path).filter(|saved| saved.name == name);
    let fresh_token = config.join_token.as_ref().filter(|token| {
        saved
            .as_ref()
            .is_none_or(|s| s.join_token_sha256 != sha256(token))
    });
    let credential = match (fresh_token, saved) {
        (Some(token), _) => {
            let credential = precache_edge::control_link::join(
                &control,
                config.tls_ca_pem.as_deref(),
                &JoinRequest {
                    name: name.clone(),
                    join_token: token.clone(),
                    admin_url: admin_url.clone(),
                    data_url: data_url.clone(),
                },
                &data_dir,
            )
            .await
            .with_context(|| format!("join the control plane at {control} as {name}"))?;
            // The control plane cannot tell a newly joined edge what it missed before, so
            // whatever this data dir cached under another identity goes.
            let cache_dir = data_dir.join("cache");
            if cache_dir.exists() {
                tracing::warn!(dir = %cache_dir.display(), "joined anew: dropping the cache this data dir held");
                std::fs::remove_dir_all(&cache_dir)
                    .with_context(|| format!("remove {}", cache_dir.display()))?;
            }
            write_credential(
                &credential_path,
                &SavedCredential {
                    name: name.clone(),
                    credential: credential.clone(),
                    join_token_sha256: sha256(token),
                },
            )?;
            tracing::info!(%name, %control, "joined the control plane");
            credential
        }
        (None, Some(saved)) => saved.credential,
        (None, None) => {
            return Err(anyhow!(
                "edge {name} has not joined yet: pass --join-token (from POST /cdn_api/edges)"
            ))
        }
    };

    let edge = precache_edge::start(precache_edge::EdgeConfig {
        name: name.clone(),
        data_listener,
        tls_listener,
        admin_listener,
        data_dir,
        admin_secret: credential.clone(),
        threads: config.edge_threads,
        nice: 0,
        cache_limits: config.cache_limits,
        timeouts: config.origin_timeouts,
        connection_limits: config.edge_connection_limits,
        control: Some(precache_edge::ControlConfig {
            control_url: control,
            credential,
            admin_url,
            data_url,
            offline_after: config.offline_after,
            ca_pem: config.tls_ca_pem.clone(),
        }),
        admin_tls: config.edge_admin_tls.clone(),
        render_metrics: install_metrics()?,
        access_log: config.edge_access_log.clone(),
        origin_ca: config.origin_ca.clone(),
    })
    .await
    .context("start the edge")?;
    eprintln!(
        "precache: serving edge=http://{} edge_admin=http://{}{}",
        edge.data_addr(),
        edge.admin_addr(),
        crate::serve::tls_field(&edge)
    );
    tracing::info!(%name, edge = %edge.data_addr(), edge_admin = %edge.admin_addr(), "edge ready");
    let result = wait_for_signal().await;
    edge.stop().await;
    tracing::info!("stopped");
    result
}
