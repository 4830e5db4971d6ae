//! The store: files plus index, changed together. All methods block on file IO; async callers
//! run them on the blocking pool.
//!
//! Locking: every change to an entry's files and its index entry happens under that entry's
//! stripe lock, so a publish, purge or meta rewrite of one key never interleaves with another
//! of the same key. The index lock is taken inside a stripe lock (never the other way round)
//! and only for in-memory work, so lookups never wait on disk.

use super::body_stamp::BodyStamp;
use super::decoded_meta::DecodedMeta;
use super::fill::{FillShared, FillState, FillStatus};
use super::free_space::FreeSpace;
use super::index::{Entry, Index};
use super::layout::Layout;
use super::meta_file::{self, MetaRecord, SerializedMeta};
use super::open_files::{OpenFiles, OpenObject};
use super::sync::{io_error, lock, remove_if_exists, remove_in_background};
use pingora::cache::CacheMeta;
use pingora::Result;
use std::fs::{File, OpenOptions};
use std::io;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::watch;

/// Stripe locks serialising writers of the same key; more stripes than cores is plenty.
const STRIPES: usize = 64;

/// Files and index of one cache directory.
pub(super) struct Store {
    pub(super) layout: Layout,
    pub(super) index: Mutex<Index>,
    stripes: Box<[Mutex<()>]>,
    /// Source of write ids, which double as body generations; starts above every generation
    /// found on disk so a new body never reuses the name of an old one.
    next_id: AtomicU64,
    /// Most bytes (bodies and metas) the published objects may take.
    budget: u64,
    /// Objects evicted to stay within the budget, since start.
    evictions: AtomicU64,
    /// Whether the disk has room for new objects.
    pub(super) free_space: FreeSpace,
    /// Hot objects' open bodies and decoded metas.
    open_files: OpenFiles,
}

/// What `Store::publish` did with a finished fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Publish {
    /// The fill is now the object for its key.
    Published,
    /// A purge detached the fill while it ran, so it was thrown away.
    Discarded,
}

/// What `Store::remove_key` removed.
#[derive(Debug, Default)]
pub(super) struct KeyRemoval {
    /// The published object, if there was one.
    pub entry: Option<Entry>,
    /// How many fills in progress will no longer be published.
    pub detached_fills: usize,
}

/// A published object opened for reading.
pub(super) struct OpenedObject {
    /// Its meta.
    pub meta: CacheMeta,
    /// Its body file.
    pub file: Arc<File>,
    /// Its body length.
    pub body_len: u64,
}

impl Store {
    /// A store over `layout` whose index was rebuilt from disk, holding at most `budget` bytes
    /// and writing only while `min_free` bytes are free on its disk.
    pub(super) fn new(
        layout: Layout,
        index: Index,
        max_generation: u64,
        budget: u64,
        min_free: u64,
    ) -> Self {
        let free_space = FreeSpace::new(layout.root().to_path_buf(), min_free);
        Store {
            free_space,
            open_files: OpenFiles::new(),
            layout,
            index: Mutex::new(index),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            next_id: AtomicU64::new(max_generation + 1),
            budget,
            evictions: AtomicU64::new(0),
        }
    }

    /// Objects evicted since start.
    pub(super) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Removes least recently used objects until the published ones fit the budget.
    ///
    /// Runs after a publish, outside its stripe lock: taking a victim's stripe while holding
    /// another could deadlock with a publish of the victim evicting ours.
    pub(super) fn evict_to_budget(&self) -> io::Result<()> {
        loop {
            let victim = {
                let index = lock(&self.index);
                if index.stored_bytes() <= self.budget {
                    return Ok(());
                }
                match index.least_recently_used() {
                    Some((combined, entry)) => (combined.clone(), entry.generation),
                    None => return Ok(()),
                }
            };
            let (combined, generation) = victim;
            if self.remove_generation(&combined, generation)? {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(combined, "disk cache: evicted");
            }
        }
    }

    fn stripe(&self, combined: &str) -> MutexGuard<'_, ()> {
        let hash = combined.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        lock(&self.stripes[hash % STRIPES])
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates the temp body file of a new fill and registers the fill in the index.
    pub(super) fn start_fill(
        &self,
        combined: String,
        primary: Arc<str>,
        meta: SerializedMeta,
    ) -> io::Result<Arc<FillShared>> {
        let id = self.next_id();
        let temp_path = self.layout.temp_body_path(&combined, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
        let (state, _) = watch::channel(FillState {
            written: 0,
            status: FillStatus::Writing,
        });
        let fill = Arc::new(FillShared {
            id,
            combined,
            primary,
            file: Arc::new(file),
            temp_path,
            meta: Arc::new(meta),
            state,
        });
        lock(&self.index).add_fill(fill.clone());
        Ok(fill)
    }

    /// Forgets a fill that will never be published.
    pub(super) fn forget_fill(&self, combined: &str, id: u64) {
        lock(&self.index).remove_fill(combined, id);
    }

    /// Makes a finished fill of `body_len` bytes the object for its key, unless a purge
    /// detached it meanwhile.
    ///
    /// Crash safety: the body is fsynced, then renamed to its final, generation-specific name,
    /// and only then is the meta that points at it written (in place, over the old meta). At
    /// runtime the index, not the meta file, is what lookups read, and the index switches to the
    /// new body only when both files are in place. The files matter at the next `open`: a meta
    /// torn by a crash fails its checksum, and a meta whose body is missing or of another length
    /// is dropped, so what survives is always a complete object (or a miss). Neither the meta
    /// nor the directories are fsynced: after a power loss a recent object may be gone, never
    /// corrupt, because the body's bytes are durable before any name points at them. One fsync
    /// and one new inode per object is what lets small objects be published by the thousand.
    pub(super) fn publish(&self, fill: &FillShared, body_len: u64) -> io::Result<Publish> {
        let combined = fill.combined.as_str();
        // Cheap early exit before the (possibly GiB) fsync; the check that counts is repeated
        // under the stripe lock below.
        if !lock(&self.index).is_attached(combined, fill.id) {
            return self.discard(fill);
        }
        fill.file.sync_data()?;
        let record = MetaRecord {
            combined: combined.to_owned(),
            primary: fill.primary.as_bytes().to_vec(),
            generation: fill.id,
            body_len,
            meta: SerializedMeta::clone(&fill.meta),
        }
        .encode()?;
        let meta_len = record.len() as u64;
        let body_path = self.layout.body_path(combined, fill.id);
        self.layout.ensure_shard(combined)?;
        let stripe = self.stripe(combined);
        if !lock(&self.index).is_attached(combined, fill.id) {
            drop(stripe);
            return self.discard(fill);
        }
        std::fs::rename(&fill.temp_path, &body_path)?;
        // After the rename, which changes the inode's ctime.
        let body_stamp = match fill.file.metadata() {
            Ok(metadata) => BodyStamp::of(&metadata),
            Err(e) => {
                let _ = remove_if_exists(&body_path);
                return Err(e);
            }
        };
        if let Err(e) = meta_file::write(&self.layout.meta_path(combined), &record) {
            let _ = remove_if_exists(&body_path);
            return Err(e);
        }
        let entry = Entry {
            primary: fill.primary.clone(),
            generation: fill.id,
            body_len,
            body_stamp,
            meta_len,
            meta: fill.meta.clone(),
        };
        let old = {
            let mut index = lock(&self.index);
            index.remove_fill(combined, fill.id);
            index.insert(combined.to_owned(), entry)
        };
        drop(stripe);
        self.open_files.forget(combined);
        if let Some(old) = old.filter(|old| old.generation != fill.id) {
            // Readers still streaming the old body hold its descriptor and are unaffected.
            // A failure only leaves an orphan that the next open() deletes.
            let old_body = self.layout.body_path(combined, old.generation);
            if let Err(e) = remove_if_exists(&old_body) {
                tracing::warn!(error = %e, path = %old_body.display(), "disk cache: cannot remove replaced body");
            }
        }
        self.evict_to_budget()?;
        Ok(Publish::Published)
    }

    /// Throws away a fill a purge detached.
    fn discard(&self, fill: &FillShared) -> io::Result<Publish> {
        self.forget_fill(&fill.combined, fill.id);
        remove_if_exists(&fill.temp_path)?;
        Ok(Publish::Discarded)
    }

    /// Opens the published object for `combined` (from the open-files cache when it is hot).
    pub(super) fn open_object(&self, combined: &str) -> io::Result<Option<OpenedObject>> {
        let Some((open, body_len)) = self.open_decoded(combined)? else {
            return Ok(None);
        };
        let meta = open
            .decoded
            .to_meta()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(Some(OpenedObject {
            meta,
            file: open.file,
            body_len,
        }))
    }

    /// The published object for `combined`, open, with its meta decoded, and its body length.
    pub(super) fn open_decoded(&self, combined: &str) -> io::Result<Option<(OpenObject, u64)>> {
        // A publish or purge may delete the body between reading the index and opening the
        // file; both update the index before deleting, so a retry sees the new state.
        for _ in 0..4 {
            let Some((generation, body_len, body_stamp, serialized)) = lock(&self.index)
                .use_entry(combined)
                .map(|e| (e.generation, e.body_len, e.body_stamp, e.meta.clone()))
            else {
                return Ok(None);
            };
            let invalid =
                |e: Box<pingora::Error>| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
            if let Some(open) = self.open_files.get(combined, generation) {
                // One fstat per hit: an open descriptor would go on reading a file that was
                // truncated or overwritten since it was opened.
                if BodyStamp::of(&open.file.metadata()?) != body_stamp {
                    tracing::warn!(combined, "disk cache: body changed on disk, dropping");
                    self.drop_broken(combined, generation)?;
                    return Ok(None);
                }
                if open.decoded.is_of(&serialized) {
                    return Ok(Some((open, body_len)));
                }
                // Revalidated or expired since: decode the new meta once.
                let decoded = DecodedMeta::decode(&serialized).map_err(invalid)?;
                let open = OpenObject {
                    decoded: Arc::new(decoded),
                    ..open
                };
                self.remember_open(combined, open.clone());
                return Ok(Some((open, body_len)));
            }
            match File::open(self.layout.body_path(combined, generation)) {
                Ok(file) => {
                    if BodyStamp::of(&file.metadata()?) != body_stamp {
                        tracing::warn!(combined, "disk cache: body changed on disk, dropping");
                        self.drop_broken(combined, generation)?;
                        return Ok(None);
                    }
                    let decoded = DecodedMeta::decode(&serialized).map_err(invalid)?;
                    let open = OpenObject {
                        generation,
                        file: Arc::new(file),
                        decoded: Arc::new(decoded),
                    };
                    self.remember_open(combined, open.clone());
                    return Ok(Some((open, body_len)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let unchanged = lock(&self.index)
                        .get(combined)
                        .is_some_and(|e| e.generation == generation);
                    if unchanged {
                        tracing::warn!(combined, "disk cache: body file missing, dropping");
                        self.drop_broken(combined, generation)?;
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Keeps `open` among the open objects, unless its generation left the index meanwhile. A
    /// purge or a replacement between this reader's look at the index and this insert forgot
    /// nothing (the object was not there yet) and deleted the body: keeping the descriptor would
    /// hold a deleted file's blocks until the LRU dropped it. Removals change the index before
    /// they forget, so either they forget this entry or this check sees them.
    pub(super) fn remember_open(&self, combined: &str, open: OpenObject) {
        let generation = open.generation;
        self.open_files.insert(combined, open);
        let current = lock(&self.index)
            .get(combined)
            .is_some_and(|entry| entry.generation == generation);
        if !current {
            self.open_files.forget_generation(combined, generation);
        }
    }

    /// Whether a descriptor of `combined`'s body is kept open.
    #[cfg(test)]
    pub(super) fn holds_open(&self, combined: &str) -> bool {
        self.open_files.contains(combined)
    }

    /// Removes an object whose files were damaged behind the cache's back, if it is still the
    /// `generation` found damaged.
    fn drop_broken(&self, combined: &str, generation: u64) -> io::Result<()> {
        self.remove_generation(combined, generation).map(drop)
    }

    /// Removes the object for `combined` if it is still `generation`; whether it was. Fills in
    /// progress for the key are left alone.
    fn remove_generation(&self, combined: &str, generation: u64) -> io::Result<bool> {
        let stripe = self.stripe(combined);
        let removed = {
            let mut index = lock(&self.index);
            let current = index
                .get(combined)
                .is_some_and(|e| e.generation == generation);
            current.then(|| index.remove(combined)).flatten()
        };
        if removed.is_none() {
            return Ok(false);
        }
        self.open_files.forget(combined);
        remove_if_exists(&self.layout.meta_path(combined))?;
        drop(stripe);
        remove_if_exists(&self.layout.body_path(combined, generation))?;
        Ok(true)
    }

    /// Removes the object for `combined` and stops its fills in progress from being published.
    pub(super) fn remove_key(&self, combined: &str) -> io::Result<KeyRemoval> {
        let stripe = self.stripe(combined);
        let removal = {
            let mut index = lock(&self.index);
            KeyRemoval {
                detached_fills: index.detach_fills(combined),
                entry: index.remove(combined),
            }
        };
        if let Some(entry) = &removal.entry {
            self.open_files.forget(combined);
            // Meta first: a crash in between leaves an orphan body, which open() deletes,
            // rather than a meta without its body.
            remove_if_exists(&self.layout.meta_path(combined))?;
            drop(stripe);
            remove_in_background(self.layout.body_path(combined, entry.generation));
        }
        Ok(removal)
    }

    /// Replaces the meta of the object for `combined`, keeping its body; `false` if there is
    /// no such object.
    pub(super) fn rewrite_meta(&self, combined: &str, meta: SerializedMeta) -> io::Result<bool> {
        let _stripe = self.stripe(combined);
        let Some(entry) = lock(&self.index).get(combined).cloned() else {
            return Ok(false);
        };
        let meta_len = self.write_meta(combined, &entry, &meta)?;
        Ok(lock(&self.index).set_meta(combined, meta, meta_len))
    }

    /// Marks the object for `combined` stale as of `at`, keeping its body; `false` if there is
    /// no such object.
    pub(super) fn expire(&self, combined: &str, at: SystemTime) -> Result<bool> {
        // The stripe lock makes this read-modify-write safe against a concurrent update_meta.
        let _stripe = self.stripe(combined);
        let Some(entry) = lock(&self.index).get(combined).cloned() else {
            return Ok(false);
        };
        let mut meta = CacheMeta::deserialize(&entry.meta.internal, &entry.meta.header)?;
        meta.expire_at(at);
        let (internal, header) = meta.serialize()?;
        let meta = SerializedMeta { internal, header };
        let meta_len = self
            .write_meta(combined, &entry, &meta)
            .map_err(|e| io_error("write expired cache meta", e))?;
        Ok(lock(&self.index).set_meta(combined, meta, meta_len))
    }

    /// Rewrites the meta file of an existing object (see `publish` for why in place is enough);
    /// returns its new length. Caller holds the stripe lock.
    fn write_meta(&self, combined: &str, entry: &Entry, meta: &SerializedMeta) -> io::Result<u64> {
        let record = MetaRecord {
            combined: combined.to_owned(),
            primary: entry.primary.as_bytes().to_vec(),
            generation: entry.generation,
            body_len: entry.body_len,
            meta: meta.clone(),
        };
        let bytes = record.encode()?;
        meta_file::write(&self.layout.meta_path(combined), &bytes)?;
        Ok(bytes.len() as u64)
    }
}
