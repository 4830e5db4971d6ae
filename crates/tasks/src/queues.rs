//! The engine's waiting rooms: fetches queued per origin, purges per edge, pairs parked while
//! their edge is down, child edges' purges held until their parent's is done, and prefetches
//! held until the earlier purges of their URL on their edge are done.

use std::collections::{HashMap, HashSet, VecDeque};

use precache_model::{EdgeId, Origin, TaskKind};
use precache_store::PairKey;

use crate::purge_order::PurgeTargets;
use crate::PairJob;

/// Every pair the engine holds, wherever it waits.
#[derive(Default)]
pub(crate) struct Queues {
    purges: OriginQueues,
    fetches: OriginQueues,
    /// Pairs whose edge did not answer, until it does or their deadline passes.
    parked: HashMap<PairKey, PairJob>,
    /// Pairs waiting for another pair to be done here: child edges' purges behind their
    /// parent's, prefetches behind earlier purges of their URL on their edge.
    behind: HashMap<PairKey, Vec<PairJob>>,
    /// The refresh pairs held here, by target.
    purge_targets: PurgeTargets,
    /// Every pair queued, running, parked or held here: a pair arriving twice (taken over, or
    /// released twice) is queued once.
    known: HashSet<PairKey>,
}

impl Queues {
    /// Queues a new pair, unless it is here already.
    pub(crate) fn push(&mut self, job: PairJob) {
        if self.known.insert(job.key) {
            self.purge_targets.insert(&job);
            self.requeue(job);
        }
    }

    /// Queues a pair that is already known (back from parking or from behind its parent).
    pub(crate) fn requeue(&mut self, job: PairJob) {
        match job.kind {
            TaskKind::Refresh => self.purges.push(job),
            TaskKind::Prefetch => self.fetches.push(job),
        }
    }

    /// The next pair of `kind` to start.
    pub(crate) fn next(&mut self, kind: TaskKind, per_queue: usize) -> Option<(String, PairJob)> {
        match kind {
            TaskKind::Refresh => self.purges.next(per_queue, false),
            TaskKind::Prefetch => self.fetches.next(per_queue, false),
        }
    }

    /// The next pair of `kind` for a target that gathers pairs into vendor calls (within the
    /// target's own allowance; such pairs take none of the engine's slots).
    pub(crate) fn next_gathered(&mut self, kind: TaskKind) -> Option<(String, PairJob)> {
        match kind {
            TaskKind::Refresh => self.purges.next(usize::MAX, true),
            TaskKind::Prefetch => self.fetches.next(usize::MAX, true),
        }
    }

    /// A pair taken with [`Queues::next`] stopped holding its queue's slot.
    pub(crate) fn finished(&mut self, kind: TaskKind, queue_key: &str) {
        match kind {
            TaskKind::Refresh => self.purges.finished(queue_key),
            TaskKind::Prefetch => self.fetches.finished(queue_key),
        }
    }

    /// The pair is done here (recorded or dropped); purges waiting for it may run.
    pub(crate) fn forget(&mut self, key: PairKey) {
        self.known.remove(&key);
        self.purge_targets.remove(key);
        self.release_waiting(key);
    }

    /// Sets a pair aside until its edge answers. Child edges' purges behind it need not wait:
    /// a parent that was away catches up before it serves from its cache again. Prefetches
    /// behind a parked purge keep waiting for it.
    pub(crate) fn park(&mut self, job: PairJob) {
        let key = job.key;
        self.parked.insert(key, job);
        self.release_children(key);
    }

    /// Pairs held here (queued, running, parked or behind a parent), and of them parked.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.known.len(), self.parked.len())
    }

    /// Whether any pair is parked.
    pub(crate) fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Whether fetches are waiting.
    pub(crate) fn has_fetches(&self) -> bool {
        !self.fetches.is_empty()
    }

    /// Takes every parked pair (to requeue, fail or park again).
    pub(crate) fn take_parked(&mut self) -> Vec<PairJob> {
        self.parked.drain().map(|(_, job)| job).collect()
    }

    /// Holds `job` (a purge on a child of `parent`) while the parent's purge of the same target
    /// is still to run here; otherwise gives it back to run now.
    pub(crate) fn hold_behind(&mut self, parent: EdgeId, job: PairJob) -> Option<PairJob> {
        let parent_key = PairKey {
            edge_id: parent,
            ..job.key
        };
        if self.known.contains(&parent_key) && !self.parked.contains_key(&parent_key) {
            self.behind.entry(parent_key).or_default().push(job);
            None
        } else {
            Some(job)
        }
    }

    /// Holds `job` (a prefetch) while a purge of its URL on its edge, accepted no later, is
    /// still to be done here, parked or not (an edge that answers the fill may not have
    /// answered the purge a moment before); otherwise gives it back to run now.
    pub(crate) fn hold_behind_purges(&mut self, job: PairJob) -> Option<PairJob> {
        match self.purge_targets.earlier_purge(&job) {
            Some(purge) => {
                self.behind.entry(purge).or_default().push(job);
                None
            }
            None => Some(job),
        }
    }

    fn release_waiting(&mut self, first: PairKey) {
        if let Some(waiting) = self.behind.remove(&first) {
            for job in waiting {
                self.requeue(job);
            }
        }
    }

    /// Releases the child edges' purges behind `parent`; prefetches stay behind it.
    fn release_children(&mut self, parent: PairKey) {
        let Some(waiting) = self.behind.remove(&parent) else {
            return;
        };
        let (children, prefetches): (Vec<PairJob>, Vec<PairJob>) = waiting
            .into_iter()
            .partition(|job| job.kind == TaskKind::Refresh);
        if !prefetches.is_empty() {
            self.behind.insert(parent, prefetches);
        }
        for child in children {
            self.requeue(child);
        }
    }
}

/// Waiting pairs per origin, and how many of each origin's are running.
#[derive(Default)]
struct OriginQueues {
    waiting: HashMap<String, VecDeque<PairJob>>,
    running: HashMap<String, usize>,
    /// Origins with waiting pairs, in turn order.
    turns: VecDeque<String>,
    /// Queues with a limit of their own (a domain's `max_concurrent_fetches`, a gathering
    /// target's allowance).
    caps: HashMap<String, usize>,
    /// Queues of targets that gather pairs into vendor calls.
    gathering: HashSet<String>,
}

impl OriginQueues {
    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    fn push(&mut self, job: PairJob) {
        // Purges queue per edge; fetches per origin, or per domain when an admin capped the
        // domain's concurrent fetches. Pairs of an unregistered domain have no origin to
        // protect; they fail at once.
        let cap = job.origin_limits.max_concurrent_fetches;
        let origin_key = if let Some(allowance) = job.gathered {
            // A vendor fetches on its own schedule; the pairs only wait for its answers.
            let key = format!("gather:{}", job.key.edge_id);
            self.caps.insert(key.clone(), allowance.max(1));
            self.gathering.insert(key.clone());
            key
        } else if job.kind == TaskKind::Refresh {
            format!("edge:{}", job.key.edge_id)
        } else if let Some(cap) = cap {
            let key = format!("domain:{}", job.domain);
            self.caps.insert(
                key.clone(),
                usize::try_from(cap).unwrap_or(usize::MAX).max(1),
            );
            key
        } else {
            job.origin
                .as_ref()
                .map_or_else(|| format!("unregistered:{}", job.domain), Origin::authority)
        };
        let queue = self.waiting.entry(origin_key.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(origin_key);
        }
        queue.push_back(job);
    }

    /// The next pair of the first origin in turn that is under `per_origin`, among the
    /// gathering targets' queues or among the others.
    fn next(&mut self, per_origin: usize, gathering: bool) -> Option<(String, PairJob)> {
        for _ in 0..self.turns.len() {
            let origin_key = self.turns.pop_front()?;
            if self.gathering.contains(&origin_key) != gathering {
                self.turns.push_back(origin_key);
                continue;
            }
            let running = self.running.get(&origin_key).copied().unwrap_or(0);
            let limit = self.caps.get(&origin_key).copied().unwrap_or(per_origin);
            if running >= limit {
                self.turns.push_back(origin_key);
                continue;
            }
            let Some(queue) = self.waiting.get_mut(&origin_key) else {
                continue;
            };
            let Some(job) = queue.pop_front() else {
                continue;
            };
            if queue.is_empty() {
                self.waiting.remove(&origin_key);
            } else {
                self.turns.push_back(origin_key.clone());
            }
            *self.running.entry(origin_key.clone()).or_default() += 1;
            return Some((origin_key, job));
        }
        None
    }

    fn finished(&mut self, origin_key: &str) {
        if let Some(running) = self.running.get_mut(origin_key) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                self.running.remove(origin_key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use precache_model::edge_protocol::PurgeMode;
    use precache_model::TaskId;

    fn job(origin: &str, url_idx: i64) -> PairJob {
        PairJob {
            key: PairKey {
                task_id: TaskId::new_random(),
                url_idx,
                edge_id: EdgeId(1),
            },
            kind: TaskKind::Prefetch,
            url: format!("http://a.com/{url_idx}"),
            is_dir: false,
            mode: PurgeMode::Delete,
            dry_run: false,
            releases: false,
            domain: "a.com".into(),
            origin: Some(Origin::parse(origin).expect("origin")),
            created_at: 0,
            origin_limits: Default::default(),
            gathered: None,
            waited_for_edge: false,
        }
    }

    #[test]
    fn origins_take_turns_and_respect_their_limit() {
        let mut queues = OriginQueues::default();
        for n in 0..3 {
            queues.push(job("http://127.0.0.1:1", n));
        }
        queues.push(job("http://127.0.0.1:2", 9));
        let first = queues.next(2, false).expect("work");
        let second = queues.next(2, false).expect("work");
        assert_ne!(
            first.0, second.0,
            "the second origin gets a turn before the first one's backlog"
        );
        let third = queues.next(2, false).expect("work");
        assert_eq!(third.0, "127.0.0.1:1");
        assert!(
            queues.next(2, false).is_none(),
            "origin 1 is at its limit and origin 2 is empty"
        );
        queues.finished("127.0.0.1:1");
        assert_eq!(
            queues.next(2, false).map(|(origin, _)| origin).as_deref(),
            Some("127.0.0.1:1")
        );
    }

    fn purge(task_id: TaskId, edge: i64) -> PairJob {
        PairJob {
            key: PairKey {
                task_id,
                url_idx: 0,
                edge_id: EdgeId(edge),
            },
            kind: TaskKind::Refresh,
            ..job("http://127.0.0.1:1", 0)
        }
    }

    #[test]
    fn a_child_purge_waits_for_its_parent_unless_the_parent_is_parked() {
        let task = TaskId::new_random();
        let mut queues = Queues::default();
        queues.push(purge(task, 1));
        queues.push(purge(task, 2));
        let parent = queues.next(TaskKind::Refresh, 8).map(|(_, job)| job);
        assert_eq!(parent.map(|job| job.key.edge_id), Some(EdgeId(1)));
        let child = queues.next(TaskKind::Refresh, 8).map(|(_, job)| job);
        let child = child.expect("the child's purge");
        assert!(
            queues.hold_behind(EdgeId(1), child).is_none(),
            "held while the parent's purge is still to finish"
        );
        assert!(queues.next(TaskKind::Refresh, 8).is_none());
        queues.forget(PairKey {
            task_id: task,
            url_idx: 0,
            edge_id: EdgeId(1),
        });
        let released = queues
            .next(TaskKind::Refresh, 8)
            .map(|(_, job)| job.key.edge_id);
        assert_eq!(
            released,
            Some(EdgeId(2)),
            "released once the parent's is done"
        );

        let other = TaskId::new_random();
        queues.push(purge(other, 1));
        queues.park(purge(other, 1));
        assert!(
            queues.hold_behind(EdgeId(1), purge(other, 2)).is_some(),
            "a parked parent holds nobody back"
        );
    }

    fn pair(kind: TaskKind, edge: i64, url: &str, created_at: i64) -> PairJob {
        PairJob {
            key: PairKey {
                task_id: TaskId::new_random(),
                url_idx: 0,
                edge_id: EdgeId(edge),
            },
            kind,
            url: url.into(),
            is_dir: url.ends_with('/'),
            created_at,
            ..job("http://127.0.0.1:1", 0)
        }
    }

    #[test]
    fn a_prefetch_waits_for_the_earlier_purges_of_its_url_on_its_edge() {
        let mut queues = Queues::default();
        let purge = pair(TaskKind::Refresh, 1, "http://a.com/p.pak", 10);
        let purge_key = purge.key;
        queues.push(purge);
        let (_, purge) = queues.next(TaskKind::Refresh, 8).expect("the purge");

        let prefetch = pair(TaskKind::Prefetch, 1, "http://a.com/p.pak", 10);
        assert!(
            queues.hold_behind_purges(prefetch.clone()).is_none(),
            "held behind a purge accepted in the same millisecond"
        );
        for free in [
            pair(TaskKind::Prefetch, 2, "http://a.com/p.pak", 20),
            pair(TaskKind::Prefetch, 1, "http://a.com/other.pak", 20),
            pair(TaskKind::Prefetch, 1, "http://a.com/p.pak", 9),
        ] {
            assert!(
                queues.hold_behind_purges(free).is_some(),
                "another edge, another URL or an earlier prefetch does not wait"
            );
        }
        queues.park(purge);
        assert!(
            queues.next(TaskKind::Prefetch, 8).is_none(),
            "still held while the purge waits for its edge"
        );
        queues.forget(purge_key);
        let released = queues.next(TaskKind::Prefetch, 8).map(|(_, job)| job.key);
        assert_eq!(
            released,
            Some(prefetch.key),
            "released once the purge is done"
        );
        assert!(queues.hold_behind_purges(prefetch).is_some());
    }

    #[test]
    fn a_directory_purge_holds_the_prefetches_under_it() {
        let mut queues = Queues::default();
        let purge = pair(TaskKind::Refresh, 1, "http://a.com/patch/", 10);
        let purge_key = purge.key;
        queues.push(purge);
        let under = pair(TaskKind::Prefetch, 1, "http://a.com/patch/v2/data.pak", 11);
        assert!(queues.hold_behind_purges(under).is_none());
        let beside = pair(TaskKind::Prefetch, 1, "http://a.com/patches.txt", 11);
        assert!(queues.hold_behind_purges(beside).is_some());
        queues.forget(purge_key);
        assert!(queues.next(TaskKind::Prefetch, 8).is_some());
    }

    #[test]
    fn gathered_pairs_wait_apart_within_their_target_s_allowance() {
        let mut queues = Queues::default();
        for n in 0..3 {
            queues.push(PairJob {
                gathered: Some(2),
                ..job("http://a.com", n)
            });
        }
        queues.push(job("http://a.com", 9));
        // The engine's slots only see the ordinary pair...
        let (_, ordinary) = queues.next(TaskKind::Prefetch, 8).expect("ordinary pair");
        assert_eq!(ordinary.key.url_idx, 9);
        assert!(queues.next(TaskKind::Prefetch, 8).is_none());
        // ...and the gathered ones start up to the target's allowance.
        let (key, _) = queues.next_gathered(TaskKind::Prefetch).expect("gathered");
        assert!(queues.next_gathered(TaskKind::Prefetch).is_some());
        assert!(queues.next_gathered(TaskKind::Prefetch).is_none());
        queues.finished(TaskKind::Prefetch, &key);
        assert!(queues.next_gathered(TaskKind::Prefetch).is_some());
    }
}
