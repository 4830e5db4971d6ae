//! The audit log: who did what and when. The API decides what is recorded (never a secret); the
//! store keeps the entries, answers filtered pages newest first and forgets the old ones.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Result, Store};

/// An entry to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// When, ms since the epoch.
    pub at: i64,
    /// The account acting, when it is one (a failed log-in of an unknown name is not).
    pub actor_id: Option<i64>,
    /// The account's name, the name a log-in tried, or an edge's name.
    pub actor: String,
    /// The client's address.
    pub client: Option<String>,
    /// The request's id (`X-Request-Id`).
    pub request_id: Option<String>,
    /// What was done, e.g. `domain.create`.
    pub action: String,
    /// What it was done to: a name, a domain, a `reqId`.
    pub target: Option<String>,
    /// A small JSON object with more (never a secret).
    pub detail: Option<String>,
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its id: later entries have larger ones.
    pub id: i64,
    /// The entry as recorded.
    pub entry: NewAuditEntry,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this actor's entries.
    pub actor: Option<String>,
    /// Only this action's, or with a trailing `.`, every action it begins (`domain.`).
    pub action: Option<String>,
    /// Only entries at or after this time (ms).
    pub since: Option<i64>,
    /// Only entries before this time (ms).
    pub until: Option<i64>,
    /// Only entries older than this id (the previous page's last).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

const COLUMNS: &str = "id, at, actor_id, actor, client, request_id, action, target, detail";

fn decode(row: &AnyRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        entry: NewAuditEntry {
            at: row.try_get("at")?,
            actor_id: row.try_get("actor_id")?,
            actor: row.try_get("actor")?,
            client: row.try_get("client")?,
            request_id: row.try_get("request_id")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            detail: row.try_get("detail")?,
        },
    })
}

/// Writes `entry` in the caller's transaction.
pub(crate) async fn insert(connection: &mut AnyConnection, entry: &NewAuditEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor_id, actor, client, request_id, action, target, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.at)
    .bind(entry.actor_id)
    .bind(&entry.actor)
    .bind(&entry.client)
    .bind(&entry.request_id)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(&entry.detail)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

impl Store {
    /// Records `entry`; committed when this returns.
    pub async fn record_audit(&self, entry: NewAuditEntry) -> Result<()> {
        self.writer
            .run(move |connection| Box::pin(async move { insert(connection, &entry).await }))
            .await
    }

    /// A page of entries matching `query`, newest first.
    pub async fn audit_entries(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if query.actor.is_some() {
            conditions.push(format!("actor = {}", next()));
        }
        let action_prefix = query
            .action
            .as_deref()
            .filter(|action| action.ends_with('.'));
        if action_prefix.is_some() {
            // A prefix match on the first characters: no LIKE, whose wildcards an action
            // name could hold.
            conditions.push(format!("SUBSTR(action, 1, {}) = {}", next(), next()));
        } else if query.action.is_some() {
            conditions.push(format!("action = {}", next()));
        }
        if query.since.is_some() {
            conditions.push(format!("at >= {}", next()));
        }
        if query.until.is_some() {
            conditions.push(format!("at < {}", next()));
        }
        if query.before.is_some() {
            conditions.push(format!("id < {}", next()));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log {filter} ORDER BY id DESC LIMIT {}",
            next()
        );
        let mut statement = sqlx::query(&sql);
        if let Some(actor) = &query.actor {
            statement = statement.bind(actor);
        }
        if let Some(prefix) = action_prefix {
            // An INTEGER on both databases: PostgreSQL has no SUBSTR taking a BIGINT length.
            let length = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
            statement = statement.bind(length).bind(prefix);
        } else if let Some(action) = &query.action {
            statement = statement.bind(action);
        }
        for value in [query.since, query.until, query.before]
            .into_iter()
            .flatten()
        {
            statement = statement.bind(value);
        }
        let rows = statement.bind(query.limit).fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }

    /// Deletes the entries recorded before `before` (ms); answers how many went.
    pub async fn delete_audit_before(&self, before: i64) -> Result<u64> {
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    Ok(sqlx::query("DELETE FROM audit_log WHERE at < $1")
                        .bind(before)
                        .execute(&mut *connection)
                        .await?
                        .rows_affected())
                })
            })
            .await
    }
}
