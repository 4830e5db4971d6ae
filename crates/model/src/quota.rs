//! Daily quotas: what an account may submit per day.

use std::fmt;
use std::str::FromStr;

/// A quota counted per account and day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKind {
    /// URLs submitted for prefetch.
    PrefetchUrls,
    /// URLs submitted for refresh.
    RefreshUrls,
    /// Directories submitted for refresh.
    RefreshDirs,
}

impl QuotaKind {
    /// Every kind, in display order.
    pub const ALL: [QuotaKind; 3] = [
        QuotaKind::PrefetchUrls,
        QuotaKind::RefreshUrls,
        QuotaKind::RefreshDirs,
    ];

    /// The name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::PrefetchUrls => "prefetch_urls",
            QuotaKind::RefreshUrls => "refresh_urls",
            QuotaKind::RefreshDirs => "refresh_dirs",
        }
    }

    /// The name in the API: the limit is per day, and the name says so.
    pub fn api_name(self) -> &'static str {
        match self {
            QuotaKind::PrefetchUrls => "prefetch_urls_per_day",
            QuotaKind::RefreshUrls => "refresh_urls_per_day",
            QuotaKind::RefreshDirs => "refresh_dirs_per_day",
        }
    }

    /// The kind with this API name.
    pub fn from_api_name(name: &str) -> Result<QuotaKind, String> {
        QuotaKind::ALL.into_iter().find(|kind| kind.api_name() == name).ok_or_else(|| {
            format!("unknown quota {name:?} (expected prefetch_urls_per_day, refresh_urls_per_day or refresh_dirs_per_day)")
        })
    }

    /// The limit of an account nobody has set a limit for.
    pub fn default_daily_limit(self) -> i64 {
        match self {
            QuotaKind::PrefetchUrls | QuotaKind::RefreshUrls => 10_000,
            QuotaKind::RefreshDirs => 1_000,
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QuotaKind {
    type Err = String;

    fn from_str(text: &str) -> Result<QuotaKind, String> {
        QuotaKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown quota {text:?} (expected prefetch_urls, refresh_urls or refresh_dirs)"
                )
            })
    }
}
