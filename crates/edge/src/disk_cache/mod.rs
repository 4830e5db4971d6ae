//! The disk cache: pingora-cache `Storage` backed by plain files and an in-memory index.
//!
//! Bodies stream to a temp file as they arrive and are published by rename, so objects of any
//! size take constant memory and a crash never leaves a partial object served as complete.
//! While a fill runs, other requests for the key stream from the temp file behind the writer
//! (pingora's "streaming partial write"). See `layout.rs` for the files, `meta_file.rs` for the
//! meta format and `store.rs` for how files and index are kept consistent.

mod body_stamp;
mod decoded_meta;
mod fill;
mod free_space;
#[doc(hidden)]
pub mod fuzzing;
mod hit;
mod index;
mod layout;
mod meta_file;
mod open_files;
mod read_buffers;
mod ready_head;
mod recency_file;
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
use pingora::cache::storage::streaming_write::U64WriteId;
use pingora::cache::storage::{PurgeOutcome, PurgeTarget, PurgeType, Storage};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, HitHandler, MissHandler};
use pingora::Result;
use std::any::Any;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use store::Store;

pub(crate) use ready_head::ReadyHead;
use sync::{blocking, blocking_io, io_error, lock};

/// A disk-backed pingora cache storage.
///
/// Used by pingora as `&'static` (leak a `Box<DiskCache>`). Cloning is cheap and shares the
/// same cache.
#[derive(Clone)]
pub struct DiskCache {
    store: Arc<Store>,
    limits: CacheLimits,
    /// The index's order-change count when the recency order was last saved.
    saved_order: Arc<std::sync::atomic::AtomicU64>,
}

/// How much the cache may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most bytes of published objects (bodies and metas) on disk; least recently used
    /// objects are evicted beyond it.
    pub size: u64,
    /// Largest body that is cached; larger responses are proxied without caching.
    pub max_object: u64,
    /// Free space to leave on the cache's file system: below it, responses are proxied
    /// without caching.
    pub min_free: u64,
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
    /// Bodies and metas on disk: what the budget limits.
    pub stored_bytes: u64,
    /// The budget.
    pub budget: u64,
    /// Objects evicted since start.
    pub evictions: u64,
}

/// What a purge applied to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Complete objects removed, marked stale or counted.
    pub objects: u64,
    /// Sum of their body lengths.
    pub bytes: u64,
    /// Fills in progress that will not be published (or, counting, that would not be).
    pub fills_stopped: u64,
}

/// What [`DiskCache::purge`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeAction {
    /// Remove the objects.
    Delete,
    /// Mark them stale, so the next request revalidates.
    Invalidate,
    /// Only count them.
    Count,
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
    /// the in-memory index by scanning meta files (deleting orphans / corrupt ones) in the saved
    /// least-recently-used order, and evicts down to `limits.size`.
    ///
    /// Blocks on file IO proportional to the number of stored objects.
    pub fn open(dir: impl Into<PathBuf>, limits: CacheLimits) -> std::io::Result<DiskCache> {
        let store = recovery::recover(&dir.into(), limits)?;
        let changes = lock(&store.index).order_changes();
        Ok(DiskCache {
            store: Arc::new(store),
            limits,
            saved_order: Arc::new(std::sync::atomic::AtomicU64::new(changes)),
        })
    }

    /// Whether new objects can be written now (the disk is not full). Measures the free space
    /// at most once a second.
    pub fn has_room(&self) -> bool {
        self.store.free_space.has_room()
    }

    /// The limits the cache was opened with.
    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// Saves the least-recently-used order if it changed since the last save, so the next
    /// start evicts in the same order. Blocks on file IO.
    pub fn save_recency(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let (changes, order) = {
            let index = lock(&self.store.index);
            let changes = index.order_changes();
            if changes == self.saved_order.load(Ordering::Relaxed) {
                return Ok(());
            }
            (changes, index.recency_order().cloned().collect::<Vec<_>>())
        };
        recency_file::save(self.store.layout.root(), order.iter())?;
        self.saved_order.store(changes, Ordering::Relaxed);
        Ok(())
    }

    /// Info about a complete (fully written) object stored for the primary key string
    /// `primary` (any variant). Used after a prefetch to verify the object really is cached.
    pub fn object_info(&self, primary: &str) -> Option<ObjectInfo> {
        let (body_bytes, meta) = {
            let index = lock(&self.store.index);
            let entry = index
                .variants(primary)
                .find_map(|combined| index.get(combined))?;
            (entry.body_len, entry.meta.clone())
        };
        let meta = CacheMeta::deserialize(&meta.internal, &meta.header).ok()?;
        Some(ObjectInfo {
            body_bytes,
            fresh_until: meta.fresh_until(),
            status: meta.response_header().status.as_u16(),
        })
    }

    /// Waits (at most `limit`) until no fill for the primary key string `primary` is running;
    /// returns whether none is. A prefetch waits for this before it checks
    /// [`DiskCache::object_info`], because the proxy publishes a fill after the last byte
    /// reached the client.
    pub async fn wait_for_fills(&self, primary: &str, limit: std::time::Duration) -> bool {
        let mut ended = lock(&self.store.index).watch_fills_ended();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Marked seen before the check, so an end between the check and the wait still wakes us.
            ended.borrow_and_update();
            if !lock(&self.store.index).has_attached_fill_for(primary) {
                return true;
            }
            match tokio::time::timeout_at(deadline, ended.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return !lock(&self.store.index).has_attached_fill_for(primary)
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
            stored_bytes: index.stored_bytes(),
            budget: self.limits.size,
            evictions: self.store.evictions(),
        }
    }

    /// Applies a purge to every stored variant of the object whose primary key string is
    /// `primary` (the string given to `CacheKey::new`), or with `prefix` to every object whose
    /// primary key starts with it. Returns what it applied to.
    ///
    /// `Delete` removes the objects and stops fills in progress for them from being published;
    /// `Invalidate` marks them stale; `Count` changes nothing. Blocks on file IO.
    pub fn purge_objects(
        &self,
        primary: &str,
        prefix: bool,
        action: PurgeAction,
    ) -> Result<Removed> {
        let targets = {
            let index = lock(&self.store.index);
            if prefix {
                index.combined_where((Bound::Included(primary), Bound::Unbounded), |p| {
                    p.starts_with(primary)
                })
            } else {
                index.combined_where((Bound::Included(primary), Bound::Included(primary)), |p| {
                    p == primary
                })
            }
        };
        let mut done = Removed::default();
        let now = SystemTime::now();
        for combined in targets {
            let body_len = match action {
                PurgeAction::Delete => {
                    let removal = self
                        .store
                        .remove_key(&combined)
                        .map_err(|e| io_error("purge cache object", e))?;
                    done.fills_stopped += removal.detached_fills as u64;
                    removal.entry.map(|entry| entry.body_len)
                }
                PurgeAction::Invalidate => {
                    let body_len = lock(&self.store.index).get(&combined).map(|e| e.body_len);
                    match self.store.expire(&combined, now)? {
                        true => body_len,
                        false => None,
                    }
                }
                PurgeAction::Count => {
                    let index = lock(&self.store.index);
                    done.fills_stopped += u64::from(index.has_attached_fill(&combined));
                    index.get(&combined).map(|e| e.body_len)
                }
            };
            if let Some(body_len) = body_len {
                done.objects += 1;
                done.bytes += body_len;
            }
        }
        Ok(done)
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
        _ => Some(crate::cache_key::combined_hex(target.key())),
    }
}

/// A fresh, complete object the edge's own hit path may answer (see `ReadyHead`).
pub(crate) struct ReadyHit {
    /// The stored part of the answer's head.
    pub(crate) head: Arc<ReadyHead>,
    file: Arc<std::fs::File>,
    /// The body's length.
    pub(crate) body_len: u64,
}

impl ReadyHit {
    /// Appends the whole body to `out`: read right here when it is in the page cache (as
    /// `read_chunk` does for pingora's hits), on the blocking pool otherwise.
    pub(crate) async fn append_body(&self, out: &mut bytes::BytesMut) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let len = usize::try_from(self.body_len).map_err(std::io::Error::other)?;
        let start = out.len();
        out.resize(start + len, 0);
        let hot = hit::read_hot(&self.file, &mut out[start..], 0);
        if hot < len {
            let file = Arc::clone(&self.file);
            let rest = tokio::task::spawn_blocking(move || {
                let mut rest = vec![0; len - hot];
                file.read_exact_at(&mut rest, hot as u64).map(|()| rest)
            })
            .await
            .map_err(std::io::Error::other)??;
            out[start + hot..].copy_from_slice(&rest);
        }
        Ok(())
    }
}

impl DiskCache {
    /// The object stored under `combined`, if the edge's own hit path may answer it at `now`:
    /// published with no fill in progress, fresh, with a ready head whose `Content-Length` is
    /// the body's, and a body of at most `max_body` bytes. Anything else (errors included) is
    /// left to pingora's path, which reports it.
    pub(crate) fn ready_hit(
        &self,
        combined: &str,
        now: SystemTime,
        max_body: u64,
    ) -> Option<ReadyHit> {
        if lock(&self.store.index).attached_fill(combined).is_some() {
            return None;
        }
        let (open, body_len) = self.store.open_decoded(combined).ok()??;
        let head = open.decoded.ready.clone()?;
        if head.content_length != body_len || body_len > max_body || !head.is_fresh(now) {
            return None;
        }
        Some(ReadyHit {
            head,
            file: open.file,
            body_len,
        })
    }
}

#[async_trait]
impl Storage for DiskCache {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let combined = crate::cache_key::combined_hex(key);
        // A fill in progress wins over a stored object, which is likely stale (that is why it
        // is being refetched); otherwise the new response would stay invisible until complete.
        let (fill, stored) = {
            let index = lock(&self.store.index);
            (
                index.attached_fill(&combined).cloned(),
                index.get(&combined).is_some(),
            )
        };
        if let Some(fill) = fill {
            return Self::partial_hit(&fill).map(Some);
        }
        if !stored {
            // A miss answers without IO or an await, so that between this answer and the
            // cache lock pingora takes next, no other request can start a fill and release
            // the lock: that would let this request start a second fill of the same object.
            return Ok(None);
        }
        // Opened on this worker thread, as nginx does: opening a file whose inode is cached
        // costs microseconds, less than the two context switches of a blocking-pool hop.
        let object = self
            .store
            .open_object(&combined)
            .map_err(|e| io_error("open cache object", e))?;
        let Some(object) = object else {
            // Purged or evicted meanwhile; a fill may have started since.
            let fill = lock(&self.store.index).attached_fill(&combined).cloned();
            return fill.map(|fill| Self::partial_hit(&fill)).transpose();
        };
        let hit = CompleteHit::new(object.file, object.body_len);
        Ok(Some((object.meta, Box::new(DiskHit::Complete(hit)))))
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
        let combined = crate::cache_key::combined_hex(key);
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
        let combined = crate::cache_key::combined_hex(key);
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
        let combined = crate::cache_key::combined_hex(key);
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
