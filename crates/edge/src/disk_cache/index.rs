//! The in-memory index: every published object plus every fill in progress.
//!
//! Lookups are answered from here without touching the meta file. The index is only ever
//! changed together with the files it describes (see `Store`), and it is never held across IO.
//! Objects are kept in least-recently-used order: a lookup moves its object to the back, and
//! eviction takes from the front.

use super::body_stamp::BodyStamp;
use super::fill::FillShared;
use super::meta_file::SerializedMeta;
use hashlink::LinkedHashMap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

/// What the cache knows about one published object.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The primary key string, for purges by primary key or prefix.
    pub primary: Arc<str>,
    /// Which body file is current.
    pub generation: u64,
    /// Length of that body file.
    pub body_len: u64,
    /// That body file as it was published (or found at start).
    pub body_stamp: BodyStamp,
    /// Length of the meta file.
    pub meta_len: u64,
    /// The serialized `CacheMeta`, shared with lookups in flight.
    pub meta: Arc<SerializedMeta>,
}

/// Published objects and fills in progress.
pub(super) struct Index {
    /// combined hash -> object, least recently used first
    entries: LinkedHashMap<String, Entry>,
    /// primary key -> combined hashes of its variants; ordered for prefix scans
    by_primary: BTreeMap<Arc<str>, BTreeSet<String>>,
    /// sum of `body_len` over `entries`
    bytes: u64,
    /// sum of `body_len + meta_len` over `entries`: what the disk budget is checked against
    stored_bytes: u64,
    /// bumped whenever the recency order changes, so the order is saved only when it did
    order_changes: u64,
    /// every live fill by write id, including ones a purge detached: the request that started
    /// a fill must still find it through its write tag
    fills: HashMap<u64, Arc<FillShared>>,
    /// combined hash -> write ids of the fills that will be published when they finish
    attached: HashMap<String, BTreeSet<u64>>,
    /// Counts fills that stopped being attached (published, failed or detached), so a waiter
    /// can sleep until the fill it waits for may have ended instead of polling.
    fills_ended: tokio::sync::watch::Sender<u64>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            entries: LinkedHashMap::new(),
            by_primary: BTreeMap::new(),
            bytes: 0,
            stored_bytes: 0,
            order_changes: 0,
            fills: HashMap::new(),
            attached: HashMap::new(),
            fills_ended: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Index {
    /// The published object for `combined`.
    pub(super) fn get(&self, combined: &str) -> Option<&Entry> {
        self.entries.get(combined)
    }

    /// The published object for `combined`, which is being used now: it becomes the most
    /// recently used.
    pub(super) fn use_entry(&mut self, combined: &str) -> Option<&Entry> {
        let entry = self.entries.to_back(combined)?;
        self.order_changes += 1;
        Some(entry)
    }

    /// The least recently used object.
    pub(super) fn least_recently_used(&self) -> Option<(&String, &Entry)> {
        self.entries.front()
    }

    /// Combined hashes from the least to the most recently used.
    pub(super) fn recency_order(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// A counter that moves whenever the recency order changes.
    pub(super) fn order_changes(&self) -> u64 {
        self.order_changes
    }

    /// Publishes `entry` as the most recently used object, returning the one it replaces.
    pub(super) fn insert(&mut self, combined: String, entry: Entry) -> Option<Entry> {
        let old = self.remove(&combined);
        self.order_changes += 1;
        self.bytes += entry.body_len;
        self.stored_bytes += entry.body_len + entry.meta_len;
        self.by_primary
            .entry(entry.primary.clone())
            .or_default()
            .insert(combined.clone());
        self.entries.insert(combined, entry);
        old
    }

    /// Whether a fill that will be published is running for `combined`.
    pub(super) fn has_attached_fill(&self, combined: &str) -> bool {
        self.attached
            .get(combined)
            .is_some_and(|ids| !ids.is_empty())
    }

    /// Combined hashes of the published variants of a primary key.
    pub(super) fn variants(&self, primary: &str) -> impl Iterator<Item = &String> {
        self.by_primary.get(primary).into_iter().flatten()
    }

    /// Whether a fill that will be published is running for any variant of `primary`.
    pub(super) fn has_attached_fill_for(&self, primary: &str) -> bool {
        self.attached.values().any(|ids| {
            ids.iter().any(|id| {
                self.fills
                    .get(id)
                    .is_some_and(|fill| &*fill.primary == primary)
            })
        })
    }

    /// Replaces the meta of a published object (its meta file is now `meta_len` bytes);
    /// `false` if there is none.
    pub(super) fn set_meta(&mut self, combined: &str, meta: SerializedMeta, meta_len: u64) -> bool {
        match self.entries.get_mut(combined) {
            Some(entry) => {
                entry.meta = Arc::new(meta);
                self.stored_bytes = self.stored_bytes - entry.meta_len + meta_len;
                entry.meta_len = meta_len;
                true
            }
            None => false,
        }
    }

    /// Forgets a published object.
    pub(super) fn remove(&mut self, combined: &str) -> Option<Entry> {
        let entry = self.entries.remove(combined)?;
        self.order_changes += 1;
        self.bytes -= entry.body_len;
        self.stored_bytes -= entry.body_len + entry.meta_len;
        if let Some(set) = self.by_primary.get_mut(&entry.primary) {
            set.remove(combined);
            if set.is_empty() {
                self.by_primary.remove(&entry.primary);
            }
        }
        Some(entry)
    }

    /// Combined hashes of every object or attached fill whose primary key satisfies `select`,
    /// considering only primaries in `range` of the ordered primary index.
    pub(super) fn combined_where(
        &self,
        range: (Bound<&str>, Bound<&str>),
        select: impl Fn(&str) -> bool,
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .by_primary
            .range::<str, _>(range)
            .take_while(|(primary, _)| select(primary))
            .flat_map(|(_, set)| set.iter().cloned())
            .collect();
        // Fills are few (one per object being downloaded right now), so a scan is fine.
        out.extend(self.attached.iter().filter_map(|(combined, ids)| {
            let fill = self.fills.get(ids.iter().next()?)?;
            select(&fill.primary).then(|| combined.clone())
        }));
        out
    }

    /// Number of published objects.
    pub(super) fn objects(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Sum of published body sizes.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Published bodies and metas together: the space the cache takes on disk.
    pub(super) fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// Number of fills still running, including detached ones.
    pub(super) fn fills_in_progress(&self) -> u64 {
        self.fills.len() as u64
    }

    /// Registers a fill that has just started.
    pub(super) fn add_fill(&mut self, fill: Arc<FillShared>) {
        self.attached
            .entry(fill.combined.clone())
            .or_default()
            .insert(fill.id);
        self.fills.insert(fill.id, fill);
    }

    /// The newest attached fill for `combined`; the newest is the most likely to hold the
    /// freshest response.
    pub(super) fn attached_fill(&self, combined: &str) -> Option<&Arc<FillShared>> {
        let id = self.attached.get(combined)?.iter().next_back()?;
        self.fills.get(id)
    }

    /// A live fill by write id, attached or not.
    pub(super) fn fill(&self, id: u64) -> Option<&Arc<FillShared>> {
        self.fills.get(&id)
    }

    /// Whether the fill will still be published when it finishes.
    pub(super) fn is_attached(&self, combined: &str, id: u64) -> bool {
        self.attached
            .get(combined)
            .is_some_and(|ids| ids.contains(&id))
    }

    /// Detaches every fill of `combined` so none of them gets published; returns how many.
    /// They keep running so readers already streaming from them are served to the end.
    pub(super) fn detach_fills(&mut self, combined: &str) -> usize {
        let detached = self.attached.remove(combined).map_or(0, |ids| ids.len());
        self.fills_ended.send_modify(|ended| *ended += 1);
        detached
    }

    /// Forgets a fill that finished, failed or was dropped.
    pub(super) fn remove_fill(&mut self, combined: &str, id: u64) {
        self.fills.remove(&id);
        if let Some(ids) = self.attached.get_mut(combined) {
            ids.remove(&id);
            if ids.is_empty() {
                self.attached.remove(combined);
            }
        }
        self.fills_ended.send_modify(|ended| *ended += 1);
    }

    /// A receiver that changes whenever a fill stops being attached.
    pub(super) fn watch_fills_ended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.fills_ended.subscribe()
    }
}
