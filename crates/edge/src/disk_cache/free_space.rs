//! Whether the cache's disk has room for new objects.
//!
//! Checked before a response is admitted, so that on a full disk responses are proxied without
//! caching instead of failing halfway through a write. The disk counts as full when its free
//! space is under the configured minimum, or when a write failed recently (`ENOSPC`, a quota,
//! a file size limit): a fill that fails mid-way loses its own response, the ones after it are
//! proxied uncached until the disk has room again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a measurement of the free space is trusted.
const RECHECK: Duration = Duration::from_secs(1);
/// How long after a failed write the disk counts as full.
const AFTER_WRITE_FAILURE: Duration = Duration::from_secs(10);

/// The free-space guard of one cache directory.
pub(super) struct FreeSpace {
    dir: PathBuf,
    min_free: u64,
    /// Milliseconds since the epoch of the last measurement.
    checked_at: AtomicU64,
    /// Milliseconds since the epoch of the last failed write.
    write_failed_at: AtomicU64,
    /// The last verdict, so a change is logged once rather than per request.
    room: AtomicBool,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl FreeSpace {
    /// A guard requiring `min_free` bytes free on the file system of `dir`.
    pub(super) fn new(dir: PathBuf, min_free: u64) -> FreeSpace {
        FreeSpace {
            dir,
            min_free,
            checked_at: AtomicU64::new(0),
            write_failed_at: AtomicU64::new(0),
            room: AtomicBool::new(true),
        }
    }

    /// Records that writing to the cache failed.
    pub(super) fn write_failed(&self, error: &std::io::Error) {
        self.write_failed_at.store(now_millis(), Ordering::Relaxed);
        if self.room.swap(false, Ordering::Relaxed) {
            tracing::error!(%error, dir = %self.dir.display(), "disk cache: a write failed; responses are served without caching until the disk has room");
        }
    }

    /// Whether new objects may be written. Measures at most once per [`RECHECK`].
    pub(super) fn has_room(&self) -> bool {
        let now = now_millis();
        let failed_at = self.write_failed_at.load(Ordering::Relaxed);
        if now.saturating_sub(failed_at) < AFTER_WRITE_FAILURE.as_millis() as u64 {
            return false;
        }
        let checked_at = self.checked_at.load(Ordering::Relaxed);
        let due = now.saturating_sub(checked_at) >= RECHECK.as_millis() as u64;
        // One caller measures; the others use the last verdict meanwhile.
        if due
            && self
                .checked_at
                .compare_exchange(checked_at, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let room = match self.free_bytes() {
                Ok(free) => {
                    let room = free >= self.min_free;
                    if !room && self.room.load(Ordering::Relaxed) {
                        tracing::error!(free, min_free = self.min_free, dir = %self.dir.display(), "disk cache: the disk is full; responses are served without caching");
                    } else if room && !self.room.load(Ordering::Relaxed) {
                        tracing::warn!(free, dir = %self.dir.display(), "disk cache: the disk has room again; caching resumes");
                    }
                    room
                }
                Err(error) => {
                    tracing::warn!(%error, "disk cache: cannot measure free space");
                    true
                }
            };
            self.room.store(room, Ordering::Relaxed);
        }
        self.room.load(Ordering::Relaxed)
    }

    fn free_bytes(&self) -> std::io::Result<u64> {
        let stats = rustix::fs::statvfs(&self.dir)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }
}
