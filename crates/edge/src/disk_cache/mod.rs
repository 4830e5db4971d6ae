//! The disk cache: pingora-cache `Storage` backed by plain files and an in-memory index.
//!
//! Bodies stream to a temp file as they arrive and are published by rename, so objects of any
//! size take constant memory and a crash never leaves a partial object served as complete.
//! While a fill runs, other requests for the key stream from the temp file behind the writer
//! (pingora's "streaming partial write"). See `layout.rs` for the files, `meta_file.rs` for the
//! meta format and `store.rs` for how files and index are kept consistent.

mod fill;
mod hit;
mod index;
mod layout;
mod meta_file;
mod recovery;
mod store;
mod sync;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use fill::FillHandler;
use hit::{CompleteHit, DiskHit, PartialHit};
use meta_file::SerializedMeta;
use pingora::cache::eviction::CacheEntryKey;
use pingora::cache::key::CacheHashKey;
use pingora::cache::storage::streaming_write::U64WriteId;
use pingora::cache::storage::{PurgeOutcome, PurgeTarget, PurgeType, Storage};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, HitHandler, MissHandler};
use pingora::Result;
use std::any::Any;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use store::Store;
use sync::{blocking, blocking_io, io_error, lock};

/// A disk-backed pingora cache storage.
///
/// Used by pingora as `&'static` (leak a `Box<DiskCache>`). Cloning is cheap and shares the
/// same cache.
#[derive(Clone)]
pub struct DiskCache {
    store: Arc<Store>,
}

/// A complete object in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Length of the stored body.
    pub body_bytes: u64,
    /// Until when the object is fresh.
    pub fresh_until: SystemTime,
    /// The stored response status.
    pub status: u16,
}

/// Cache totals for health checks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Complete objects stored.
    pub objects: u64,
    /// Sum of their body lengths.
    pub bytes: u64,
    /// Fills (downloads into the cache) currently running.
    pub fills_in_progress: u64,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Complete objects removed.
    pub objects: u64,
    /// Sum of their body lengths.
    pub bytes: u64,
}

/// Whether a hit handler from this cache streams a fill that is still being written.
pub fn is_partial_hit(hit: &HitHandler) -> bool {
    matches!(
        hit.as_any().downcast_ref::<DiskHit>(),
        Some(DiskHit::Partial(_))
    )
}

impl DiskCache {
    /// Opens (creating if needed) the cache under `dir`; deletes leftover temp files; rebuilds
    /// the in-memory index by scanning meta files (deleting orphans / corrupt ones).
    ///
    /// Blocks on file IO proportional to the number of stored objects.
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<DiskCache> {
        let store = recovery::recover(&dir.into())?;
        Ok(DiskCache {
            store: Arc::new(store),
        })
    }

    /// Info about the complete (fully written) object stored for this key, if any. Used after
    /// a prefetch to verify the object really is in the cache.
    pub fn object_info(&self, key: &CacheKey) -> Option<ObjectInfo> {
        let (body_bytes, meta) = {
            let index = lock(&self.store.index);
            let entry = index.get(&key.combined())?;
            (entry.body_len, entry.meta.clone())
        };
        let meta = CacheMeta::deserialize(&meta.internal, &meta.header).ok()?;
        Some(ObjectInfo {
            body_bytes,
            fresh_until: meta.fresh_until(),
            status: meta.response_header().status.as_u16(),
        })
    }

    /// Waits (at most `limit`) until no fill for this key is running; returns whether none is.
    /// A prefetch waits for this before it checks [`DiskCache::object_info`], because the proxy
    /// publishes a fill after the last byte reached the client.
    pub async fn wait_for_fills(&self, key: &CacheKey, limit: std::time::Duration) -> bool {
        let combined = key.combined();
        let mut ended = lock(&self.store.index).watch_fills_ended();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Marked seen before the check, so an end between the check and the wait still wakes us.
            ended.borrow_and_update();
            if !lock(&self.store.index).has_attached_fill(&combined) {
                return true;
            }
            match tokio::time::timeout_at(deadline, ended.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return !lock(&self.store.index).has_attached_fill(&combined)
                }
            }
        }
    }

    /// Totals for health/metrics.
    pub fn stats(&self) -> CacheStats {
        let index = lock(&self.store.index);
        CacheStats {
            objects: index.objects(),
            bytes: index.bytes(),
            fills_in_progress: index.fills_in_progress(),
        }
    }

    /// Remove every stored variant of the object whose primary key string is `primary` (the
    /// string given to CacheKey::new). Returns what was removed.
    ///
    /// Fills in progress for it are not published. Blocks on file IO.
    pub fn purge_primary(&self, primary: &str) -> std::io::Result<Removed> {
        let targets = lock(&self.store.index)
            .combined_where((Bound::Included(primary), Bound::Included(primary)), |p| {
                p == primary
            });
        self.remove_all(targets)
    }

    /// Remove every object whose primary key string starts with `prefix`. Returns what was
    /// removed.
    ///
    /// Fills in progress for them are not published. Blocks on file IO.
    pub fn purge_prefix(&self, prefix: &str) -> std::io::Result<Removed> {
        let targets = lock(&self.store.index)
            .combined_where((Bound::Included(prefix), Bound::Unbounded), |p| {
                p.starts_with(prefix)
            });
        self.remove_all(targets)
    }

    fn remove_all(&self, targets: BTreeSet<String>) -> std::io::Result<Removed> {
        let mut removed = Removed::default();
        for combined in targets {
            if let Some(entry) = self.store.remove_key(&combined)?.entry {
                removed.objects += 1;
                removed.bytes += entry.body_len;
            }
        }
        Ok(removed)
    }

    fn partial_hit(fill: &fill::FillShared) -> Result<(CacheMeta, HitHandler)> {
        let meta = CacheMeta::deserialize(&fill.meta.internal, &fill.meta.header)?;
        let hit = PartialHit::new(fill.file.clone(), fill.state.subscribe());
        Ok((meta, Box::new(DiskHit::Partial(hit))))
    }
}

/// The combined hash a purge or expire targets, or `None` if it cannot be one of ours: this
/// storage does not assign entry ids, so an identified entry never matches.
fn target_combined(target: PurgeTarget<'_>) -> Option<String> {
    match target {
        PurgeTarget::Exact(CacheEntryKey::Identified { .. }) => None,
        _ => Some(target.key().combined()),
    }
}

#[async_trait]
impl Storage for DiskCache {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let combined = key.combined();
        // A fill in progress wins over a stored object, which is likely stale (that is why it
        // is being refetched); otherwise the new response would stay invisible until complete.
        let fill = lock(&self.store.index).attached_fill(&combined).cloned();
        if let Some(fill) = fill {
            return Self::partial_hit(&fill).map(Some);
        }
        let store = self.store.clone();
        let object = blocking_io("open cache object", move || store.open_object(&combined)).await?;
        let Some(object) = object else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(&object.meta.internal, &object.meta.header)?;
        let hit = CompleteHit::new(object.file, object.body_len);
        Ok(Some((meta, Box::new(DiskHit::Complete(hit)))))
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(tag) = streaming_write_tag else {
            return self.lookup(key, trace).await;
        };
        // The contract: a hit for exactly this write or none at all.
        let Ok(id) = U64WriteId::try_from(tag) else {
            return Ok(None);
        };
        let combined = key.combined();
        let fill = lock(&self.store.index)
            .fill(id.into())
            .filter(|fill| fill.combined == combined)
            .cloned();
        fill.map(|fill| Self::partial_hit(&fill)).transpose()
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let (internal, header) = meta.serialize()?;
        let meta = SerializedMeta { internal, header };
        let combined = key.combined();
        let primary: Arc<str> = Arc::from(String::from_utf8_lossy(key.primary_key()));
        // Created right here rather than on the blocking pool: creating an empty file costs
        // microseconds, the hop there and back costs more (two context switches).
        let fill = self
            .store
            .start_fill(combined, primary, meta)
            .map_err(|e| io_error("create cache temp file", e))?;
        Ok(Box::new(FillHandler::new(self.store.clone(), fill)))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let Some(combined) = target_combined(target) else {
            return Ok(PurgeOutcome::NotFound);
        };
        let store = self.store.clone();
        let removal =
            blocking_io("purge cache object", move || store.remove_key(&combined)).await?;
        Ok(if removal.entry.is_some() || removal.detached_fills > 0 {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let Some(combined) = target_combined(target) else {
            return Ok(PurgeOutcome::NotFound);
        };
        let store = self.store.clone();
        let now = SystemTime::now();
        let expired = blocking(move || store.expire(&combined, now)).await?;
        Ok(if expired {
            PurgeOutcome::Expired
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let (internal, header) = meta.serialize()?;
        let meta = SerializedMeta { internal, header };
        let combined = key.combined();
        let store = self.store.clone();
        blocking_io("update cache meta", move || {
            store.rewrite_meta(&combined, meta)
        })
        .await
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
