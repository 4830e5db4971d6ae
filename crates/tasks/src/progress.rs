//! Byte-level progress of the prefetches in flight: what each edge reported last, written to
//! the store about once a second so a status query on any control-plane process shows it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use precache_store::{PairKey, Store};
use tokio::sync::watch;

/// How often reported progress is written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Reported {
    bytes: u64,
    total: Option<u64>,
    written: bool,
}

/// The latest progress of every prefetch pair in flight in this engine.
#[derive(Debug, Default)]
pub struct ProgressBoard {
    pairs: Mutex<HashMap<PairKey, Reported>>,
}

impl ProgressBoard {
    fn pairs(&self) -> std::sync::MutexGuard<'_, HashMap<PairKey, Reported>> {
        self.pairs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The edge reported `bytes` of `total` for this pair.
    pub fn report(&self, key: PairKey, bytes: u64, total: Option<u64>) {
        self.pairs().insert(
            key,
            Reported {
                bytes,
                total,
                written: false,
            },
        );
    }

    /// The pair ended; its outcome carries the final numbers.
    pub fn finished(&self, key: &PairKey) {
        self.pairs().remove(key);
    }

    fn unwritten(&self) -> Vec<(PairKey, i64, Option<i64>)> {
        let mut pairs = self.pairs();
        pairs
            .iter_mut()
            .filter(|(_, reported)| !reported.written)
            .map(|(key, reported)| {
                reported.written = true;
                let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                (*key, as_i64(reported.bytes), reported.total.map(as_i64))
            })
            .collect()
    }

    /// Writes new progress every `FLUSH_EVERY` until `shutdown`.
    pub async fn run(
        self: std::sync::Arc<Self>,
        store: Store,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            if let Err(error) = store.record_progress(self.unwritten()).await {
                tracing::debug!(%error, "could not record prefetch progress");
            }
        }
    }
}
