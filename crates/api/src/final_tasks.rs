//! Rendered status answers of tasks that have ended, kept in memory.
//!
//! A task that is `done` or `failed` never changes again, and clients poll status until that
//! point and often a while after (a release script checks every `reqId` it got). Serving those
//! answers from memory skips the database and the JSON rendering; memory is bounded by
//! [`CAPACITY`] answers, the oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::Bytes;
use precache_model::{AccountId, TaskId};

/// Answers kept (a 10-URL answer is about 3 KiB, so about 50 MiB at most).
const CAPACITY: usize = 16_384;

type Key = (AccountId, TaskId);

/// The cache.
#[derive(Default)]
pub(crate) struct FinalTasks {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<Key, Bytes>,
    order: VecDeque<Key>,
}

impl FinalTasks {
    /// The answer for `account`'s task `id`, if it ended and was asked for recently.
    pub(crate) fn get(&self, account: AccountId, id: TaskId) -> Option<Bytes> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.answers.get(&(account, id)).cloned()
    }

    /// Keeps the answer of a task that ended.
    pub(crate) fn put(&self, account: AccountId, id: TaskId, answer: Bytes) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.answers.insert((account, id), answer).is_none() {
            inner.order.push_back((account, id));
        }
        while inner.order.len() > CAPACITY {
            if let Some(oldest) = inner.order.pop_front() {
                inner.answers.remove(&oldest);
            }
        }
    }
}
