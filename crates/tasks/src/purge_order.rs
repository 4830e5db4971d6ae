//! A prefetch after a refresh of the same URL must not lose to it: the purges this engine holds,
//! by edge and target, so a prefetch pair can wait for the earlier purges of its URL on its edge.
//!
//! Without it, a refresh and a prefetch submitted one after the other run independently, and a
//! purge that reaches the edge after the prefetch's fill removes the fresh copy although both
//! tasks end `done`: the "refresh, then prefetch" step of a release would leave the edge cold.
//! The other order needs nothing: a fill that runs after a later refresh's purge fetched from
//! the origin after that refresh was accepted.

use std::collections::HashMap;

use precache_model::{EdgeId, TaskKind};
use precache_store::PairKey;

use crate::PairJob;

/// Refresh pairs by edge: exact URLs in a map, directories (URL prefixes) in a list, since a
/// release refreshes many files and few directories.
#[derive(Default)]
pub(crate) struct PurgeTargets {
    files: HashMap<EdgeId, HashMap<String, Vec<Accepted>>>,
    directories: HashMap<EdgeId, Vec<(String, Accepted)>>,
    /// Each pair's target, to forget it by its key: (URL or prefix, whether a prefix).
    targets: HashMap<PairKey, (String, bool)>,
}

/// A purge pair and when its task was accepted (ms since the epoch).
#[derive(Clone, Copy)]
struct Accepted {
    key: PairKey,
    created_at: i64,
}

impl PurgeTargets {
    /// Remembers a refresh pair (other pairs are ignored).
    pub(crate) fn insert(&mut self, job: &PairJob) {
        if job.kind != TaskKind::Refresh {
            return;
        }
        let accepted = Accepted {
            key: job.key,
            created_at: job.created_at,
        };
        self.targets.insert(job.key, (job.url.clone(), job.is_dir));
        if job.is_dir {
            self.directories
                .entry(job.key.edge_id)
                .or_default()
                .push((job.url.clone(), accepted));
        } else {
            self.files
                .entry(job.key.edge_id)
                .or_default()
                .entry(job.url.clone())
                .or_default()
                .push(accepted);
        }
    }

    /// Forgets a pair (nothing if it is not a refresh pair held here).
    pub(crate) fn remove(&mut self, key: PairKey) {
        let Some((url, is_dir)) = self.targets.remove(&key) else {
            return;
        };
        if is_dir {
            if let Some(list) = self.directories.get_mut(&key.edge_id) {
                list.retain(|(_, accepted)| accepted.key != key);
                if list.is_empty() {
                    self.directories.remove(&key.edge_id);
                }
            }
        } else {
            if let Some(urls) = self.files.get_mut(&key.edge_id) {
                if let Some(list) = urls.get_mut(&url) {
                    list.retain(|accepted| accepted.key != key);
                    if list.is_empty() {
                        urls.remove(&url);
                    }
                }
                if urls.is_empty() {
                    self.files.remove(&key.edge_id);
                }
            }
        }
    }

    /// A purge of `prefetch`'s URL on its edge held here, accepted no later than the prefetch;
    /// the prefetch waits for it. Equal acceptance times count as earlier: the purge then goes
    /// first, which the later of the two tasks asked for either way.
    pub(crate) fn earlier_purge(&self, prefetch: &PairJob) -> Option<PairKey> {
        let edge = prefetch.key.edge_id;
        let earlier = |accepted: &&Accepted| accepted.created_at <= prefetch.created_at;
        let file = self
            .files
            .get(&edge)
            .and_then(|urls| urls.get(prefetch.url.as_str()))
            .and_then(|list| list.iter().find(earlier));
        let directory = || {
            self.directories.get(&edge).and_then(|list| {
                list.iter()
                    .filter(|(prefix, _)| prefetch.url.starts_with(prefix.as_str()))
                    .map(|(_, accepted)| accepted)
                    .find(earlier)
            })
        };
        file.or_else(directory).map(|accepted| accepted.key)
    }
}
