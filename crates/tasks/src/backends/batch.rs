//! Gathering pairs into vendor calls: a CDN's API takes many URLs per call, and its limits
//! count calls, so the pairs of one backend that arrive together become one call. The first
//! pair of a kind of call opens a window; when it closes, everything gathered is sent in calls
//! of at most the vendor's per-call limit, and each pair waits for its own answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use precache_model::edge_protocol::PairOutcome;
use tokio::sync::oneshot;

/// One pair's item (a URL, a path, a prefix) in a call, and where its answer goes.
pub struct Waiting {
    /// What the vendor is sent for this pair.
    pub item: String,
    reply: oneshot::Sender<PairOutcome>,
}

impl Waiting {
    /// Answers this pair.
    pub fn answer(self, outcome: PairOutcome) {
        // The pair may have been given up (its task cancelled, the engine stopping).
        let _ = self.reply.send(outcome);
    }
}

/// Sends one call of a kind `K` for a batch, answering each of its pairs.
#[async_trait]
pub trait BatchSender<K>: Send + Sync {
    /// Sends `batch` (at most the per-call limit) and answers every pair in it.
    async fn send(&self, kind: K, batch: Vec<Waiting>);
}

/// Gathers pairs per kind of call for a window, then hands them to the sender.
pub struct Batcher<K> {
    window: Duration,
    per_call: usize,
    sender: Arc<dyn BatchSender<K>>,
    waiting: Mutex<BTreeMap<K, Vec<Waiting>>>,
}

impl<K: Ord + Copy + Send + Sync + 'static> Batcher<K> {
    /// Calls of at most `per_call` items, gathered for `window`.
    pub fn new(window: Duration, per_call: usize, sender: Arc<dyn BatchSender<K>>) -> Arc<Self> {
        Arc::new(Batcher {
            window,
            per_call: per_call.max(1),
            sender,
            waiting: Mutex::new(BTreeMap::new()),
        })
    }

    /// Joins the next call of `kind` and waits for this item's answer.
    pub async fn submit(self: &Arc<Self>, kind: K, item: String) -> PairOutcome {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock();
            let queue = waiting.entry(kind).or_default();
            queue.push(Waiting { item, reply });
            queue.len() == 1
        };
        if first {
            let batcher = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(batcher.window).await;
                batcher.flush(kind).await;
            });
        }
        answer
            .await
            .unwrap_or_else(|_| PairOutcome::failed(None, "the vendor call was abandoned", true))
    }

    async fn flush(self: Arc<Self>, kind: K) {
        let mut rest = self.waiting.lock().remove(&kind).unwrap_or_default();
        let mut calls = tokio::task::JoinSet::new();
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(self.per_call));
            let batch = std::mem::replace(&mut rest, tail);
            let sender = Arc::clone(&self.sender);
            calls.spawn(async move { sender.send(kind, batch).await });
        }
        while calls.join_next().await.is_some() {}
    }
}
