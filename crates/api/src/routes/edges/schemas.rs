//! What `/cdn_api/edges` reads and answers.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handlers read and build them as JSON"
)]

use utoipa::ToSchema;

/// An edge to create.
#[derive(ToSchema)]
pub(crate) struct NewEdge {
    /// 1–63 of `a-z 0-9 - _ .`; a taken name is `2007`.
    #[schema(example = "edge-sh-1", pattern = "^[a-z0-9._-]{1,63}$")]
    name: String,
    /// An existing edge this one fetches through instead of the origin (an origin shield);
    /// fixed at creation. An unknown one is `3002`.
    parent: Option<String>,
}

/// An edge's name and parent.
#[derive(ToSchema)]
pub(crate) struct EdgeName {
    /// Its name.
    name: String,
    /// Its parent's name, if it has one.
    #[schema(required = true)]
    parent: Option<String>,
}

/// An edge with a one-time join token, shown once (only its SHA-256 is stored).
#[derive(ToSchema)]
pub(crate) struct JoinToken {
    edge: EdgeName,
    /// For `precache edge --join-token`.
    join_token: String,
    /// The token is valid for 24 h.
    #[schema(format = DateTime)]
    join_token_expires_at: String,
}

/// Where an edge stands.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EdgeState {
    /// Created, never joined.
    WaitingToJoin,
    /// Joined and answering.
    Up,
    /// Joined, not answering.
    Down,
    /// Its credential was revoked; it must join again with a new token.
    Revoked,
}

/// A revoked edge.
#[derive(ToSchema)]
pub(crate) struct Revoked {
    edge: RevokedEdge,
}

/// Its name and state.
#[derive(ToSchema)]
pub(crate) struct RevokedEdge {
    /// Its name.
    name: String,
    /// `revoked`.
    state: EdgeState,
}

/// Every edge.
#[derive(ToSchema)]
pub(crate) struct Edges {
    edges: Vec<EdgeEntry>,
}

/// An edge, its state and backlog. The cache figures are null until the edge answered a poll
/// of this process.
#[derive(ToSchema)]
pub(crate) struct EdgeEntry {
    /// Its name.
    name: String,
    /// Its parent's name, if it has one.
    #[schema(required = true)]
    parent: Option<String>,
    /// Where it stands.
    state: EdgeState,
    /// Whether it answers (never when revoked).
    up: bool,
    /// The later of this process's last answered poll and the edge's last hello.
    #[schema(required = true, format = DateTime)]
    last_seen_at: Option<String>,
    /// Why the last poll failed.
    #[schema(required = true)]
    error: Option<String>,
    /// Its admin listener, once it joined.
    #[schema(required = true)]
    admin_url: Option<String>,
    /// Its data plane, once it said.
    #[schema(required = true)]
    data_url: Option<String>,
    /// Work it has not done.
    backlog: Backlog,
    /// Revision of the domain table it serves.
    #[schema(required = true)]
    domains_revision: Option<i64>,
    /// Complete objects in its cache.
    #[schema(required = true)]
    cached_objects: Option<u64>,
    /// Bytes of their bodies.
    #[schema(required = true)]
    cached_bytes: Option<u64>,
    /// Origin fetches being written to its cache.
    #[schema(required = true)]
    fills_in_progress: Option<u64>,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When its credential was revoked.
    #[schema(required = true, format = DateTime)]
    revoked_at: Option<String>,
}

/// An edge's unfinished work.
#[derive(ToSchema)]
pub(crate) struct Backlog {
    /// Unfinished (URL, edge) pairs on it.
    pairs: i64,
    /// Purges it has not confirmed.
    owed_purges: i64,
}
