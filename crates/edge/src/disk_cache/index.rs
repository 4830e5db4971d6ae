//! The in-memory index: every published object plus every fill in progress.
//!
//! Lookups are answered from here without touching the meta file. The index is only ever
//! changed together with the files it describes (see `Store`), and it is never held across IO.

use super::fill::FillShared;
use super::meta_file::SerializedMeta;
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
    /// The serialized `CacheMeta`, shared with lookups in flight.
    pub meta: Arc<SerializedMeta>,
}

/// Published objects and fills in progress.
pub(super) struct Index {
    /// combined hash -> object
    entries: HashMap<String, Entry>,
    /// primary key -> combined hashes of its variants; ordered for prefix scans
    by_primary: BTreeMap<Arc<str>, BTreeSet<String>>,
    /// sum of `body_len` over `entries`
    bytes: u64,
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
            entries: HashMap::new(),
            by_primary: BTreeMap::new(),
            bytes: 0,
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

    /// Publishes `entry`, returning the one it replaces.
    pub(super) fn insert(&mut self, combined: String, entry: Entry) -> Option<Entry> {
        let old = self.remove(&combined);
        self.bytes += entry.body_len;
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

    /// Replaces the meta of a published object; `false` if there is none.
    pub(super) fn set_meta(&mut self, combined: &str, meta: SerializedMeta) -> bool {
        match self.entries.get_mut(combined) {
            Some(entry) => {
                entry.meta = Arc::new(meta);
                true
            }
            None => false,
        }
    }

    /// Forgets a published object.
    pub(super) fn remove(&mut self, combined: &str) -> Option<Entry> {
        let entry = self.entries.remove(combined)?;
        self.bytes -= entry.body_len;
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
