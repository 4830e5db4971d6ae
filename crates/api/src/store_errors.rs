//! How store errors become `ret` codes: the one place this mapping lives.

use precache_store::Error;

use crate::envelope::{ApiError, Ret};

/// The API error for a store error.
pub(crate) fn from_store(error: Error) -> ApiError {
    match error {
        Error::Overloaded | Error::Unavailable(_) => {
            ApiError::new(Ret::Unavailable, error.to_string())
        }
        Error::Conflict(_) | Error::Refused(_) => ApiError::new(Ret::Conflict, error.to_string()),
        Error::NotFound(_) => ApiError::new(Ret::NotFound, error.to_string()),
        Error::QuotaExceeded { .. } => {
            metrics::counter!("precache_quota_rejections_total", "reason" => "daily_quota")
                .increment(1);
            ApiError::new(Ret::Limited, error.to_string())
        }
        Error::DomainNotOwned(_) => ApiError::new(Ret::DomainNotYours, error.to_string()),
        Error::Corrupt(_) | Error::Database(_) => ApiError::internal(error),
    }
}
