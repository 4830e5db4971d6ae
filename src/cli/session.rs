//! The CLI's login: the control plane's URL and a token, kept in the user's config dir
//! (`$XDG_CONFIG_HOME/precache/session.json`, else `~/.config/precache/session.json`), readable
//! by the user only.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};

/// What `precache login` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Base URL of the control plane.
    pub control: String,
    /// The account.
    pub user: String,
    /// The API token (`X-Auth-Token`).
    pub token: String,
    /// When the token expires (RFC 3339).
    pub expires_at: String,
}

fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir).join("precache"));
    }
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .ok_or_else(|| anyhow!("neither XDG_CONFIG_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".config").join("precache"))
}

/// Where the session is kept.
pub fn path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("session.json"))
}

/// The saved session, if there is one.
pub fn load() -> anyhow::Result<Option<Session>> {
    let path = path()?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("read {}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("read {}", path.display())),
    }
}

/// Saves the session with mode 0600 (the directory 0700), replacing any earlier one.
pub fn save(session: &Session) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let path = path()?;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    crate::serve::write_private(&path, &serde_json::to_vec_pretty(session)?)?;
    Ok(path)
}
