//! The store's error type.

/// Result of a store call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store call failed. Each variant is one the API answers differently.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The write queue is full: nothing was accepted, the client may retry (`5003`).
    #[error("storage is overloaded, try again")]
    Overloaded,
    /// The database could not be reached or could not commit (`5003`).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A row with the same unique name already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The named row does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The change breaks a rule of the data (e.g. deleting the last admin); nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The task's domain is not registered to the submitting account (or not at all).
    #[error("domain {0} is not registered to your account")]
    DomainNotOwned(String),
    /// A daily quota would be exceeded; nothing was consumed.
    #[error(
        "daily quota {kind} exceeded: {used} of {limit} used today, {requested} more requested"
    )]
    QuotaExceeded {
        /// Which quota.
        kind: precache_model::QuotaKind,
        /// The account's daily limit.
        limit: i64,
        /// Already used today.
        used: i64,
        /// What the rejected request needed.
        requested: i64,
    },
    /// A row could not be decoded: a bug or a schema from a newer release.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Error::Unavailable(error.to_string()),
            // SQLITE_BUSY, SQLITE_FULL, SQLITE_IOERR (and their extended codes), PostgreSQL's
            // "insufficient resources" and "operator intervention" classes: the database is
            // there but cannot take the write now.
            sqlx::Error::Database(db_error) => {
                let code = db_error.code().unwrap_or_default();
                let unavailable = ["5", "13", "10"].contains(&code.as_ref())
                    || code
                        .parse::<i64>()
                        .is_ok_and(|c| matches!(c & 0xff, 5 | 10 | 13))
                    || code.starts_with("53")
                    || code.starts_with("57");
                if unavailable {
                    Error::Unavailable(error.to_string())
                } else {
                    Error::Database(error)
                }
            }
            _ => Error::Database(error),
        }
    }
}

impl Error {
    /// Whether the error is a unique-constraint violation.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, Error::Database(sqlx::Error::Database(db_error)) if db_error.is_unique_violation())
    }
}
