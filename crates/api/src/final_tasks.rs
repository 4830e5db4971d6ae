//! Rendered status answers of tasks that have ended, kept in memory.
//!
//! A task that is `done` or `failed` never changes again, and clients poll status until that
//! point and often a while after (a release script checks every `reqId` it got). Serving those
//! answers from memory skips the database and the JSON rendering; memory is bounded by
//! [`CAPACITY`] answers, the oldest dropped first. A task past its retention window is deleted
//! from the database (by whichever control-plane process sweeps first), so its answer is not
//! served from here any more either.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use precache_model::time::now_millis;
use precache_model::{AccountId, TaskId};

/// Answers kept (a 10-URL answer is about 3 KiB, so about 50 MiB at most).
const CAPACITY: usize = 16_384;

type Key = (AccountId, TaskId);

/// The cache.
pub(crate) struct FinalTasks {
    inner: Mutex<Inner>,
    /// `--task-retention` in ms.
    retention_ms: i64,
}

#[derive(Default)]
struct Inner {
    /// Each answer with when its task ended (ms).
    answers: HashMap<Key, (Bytes, i64)>,
    order: VecDeque<Key>,
}

impl FinalTasks {
    /// A cache for tasks kept `retention` after they end.
    pub(crate) fn new(retention: Duration) -> FinalTasks {
        FinalTasks {
            inner: Mutex::default(),
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The answer for `account`'s task `id`, if it ended within the retention window and was
    /// asked for recently.
    pub(crate) fn get(&self, account: AccountId, id: TaskId) -> Option<Bytes> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (answer, finished_at) = inner.answers.get(&(account, id))?;
        let kept_until = finished_at.saturating_add(self.retention_ms);
        (now_millis() < kept_until).then(|| answer.clone())
    }

    /// Keeps the answer of a task that ended at `finished_at` (ms).
    pub(crate) fn put(&self, account: AccountId, id: TaskId, finished_at: i64, answer: Bytes) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner
            .answers
            .insert((account, id), (answer, finished_at))
            .is_none()
        {
            inner.order.push_back((account, id));
        }
        while inner.order.len() > CAPACITY {
            if let Some(oldest) = inner.order.pop_front() {
                inner.answers.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_not_served_past_its_tasks_retention() {
        let cache = FinalTasks::new(Duration::from_secs(60));
        let (account, recent, old) = (AccountId(1), TaskId::new_random(), TaskId::new_random());
        let now = now_millis();
        cache.put(account, recent, now - 1_000, Bytes::from_static(b"recent"));
        cache.put(account, old, now - 61_000, Bytes::from_static(b"old"));
        assert_eq!(
            cache.get(account, recent),
            Some(Bytes::from_static(b"recent"))
        );
        assert_eq!(cache.get(account, old), None);
        assert_eq!(cache.get(AccountId(2), recent), None);
    }
}
