//! Open bodies of the most recently hit objects, like nginx's `open_file_cache`: a hit on a
//! hot object costs one `pread`, not an `open`, a `stat` and a `close`. Each also keeps its
//! meta decoded (`DecodedMeta`), so the hit does not parse it again.
//!
//! An entry is only used while it matches the index's body generation, so it can never serve a
//! replaced object. Entries are dropped when their object is removed, because an open
//! descriptor keeps a deleted file's blocks allocated on disk.

use super::decoded_meta::DecodedMeta;
use super::sync::lock;
use hashlink::LruCache;
use std::fs::File;
use std::sync::{Arc, Mutex};

/// Descriptors kept open at most; well under the usual 1,024 soft limit left for sockets.
const CAPACITY: usize = 512;

/// One hot object.
#[derive(Clone)]
pub(super) struct OpenObject {
    /// Which body file.
    pub generation: u64,
    /// The body, open for reading.
    pub file: Arc<File>,
    /// Its meta as last decoded; checked against the index's before use.
    pub decoded: Arc<DecodedMeta>,
}

/// The cache of open objects, by combined hash.
pub(super) struct OpenFiles {
    entries: Mutex<LruCache<String, OpenObject>>,
}

impl OpenFiles {
    pub(super) fn new() -> OpenFiles {
        OpenFiles {
            entries: Mutex::new(LruCache::new(CAPACITY)),
        }
    }

    /// The open object for `combined` if its body still is `generation`.
    pub(super) fn get(&self, combined: &str, generation: u64) -> Option<OpenObject> {
        let mut entries = lock(&self.entries);
        match entries.get(combined) {
            Some(open) if open.generation == generation => Some(open.clone()),
            Some(_) => {
                entries.remove(combined);
                None
            }
            None => None,
        }
    }

    /// Remembers an object just opened, or one whose meta was decoded again.
    pub(super) fn insert(&self, combined: &str, open: OpenObject) {
        lock(&self.entries).insert(combined.to_owned(), open);
    }

    /// Forgets (and closes, once no reader holds it) the object for `combined`.
    pub(super) fn forget(&self, combined: &str) {
        lock(&self.entries).remove(combined);
    }

    /// Forgets the object for `combined` if it still is body `generation` (a newer one another
    /// reader kept meanwhile stays).
    pub(super) fn forget_generation(&self, combined: &str, generation: u64) {
        let mut entries = lock(&self.entries);
        if entries
            .peek(combined)
            .is_some_and(|open| open.generation == generation)
        {
            entries.remove(combined);
        }
    }

    /// Whether an object for `combined` is kept.
    #[cfg(test)]
    pub(super) fn contains(&self, combined: &str) -> bool {
        lock(&self.entries).contains_key(combined)
    }
}
