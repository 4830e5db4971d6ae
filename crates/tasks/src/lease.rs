//! This engine's lease on its pairs, and taking over the pairs of engines that died.
//!
//! The contract with the store (`precache_store::Store::take_over_pairs`): another engine may
//! claim our pairs once our heartbeat is older than the lease. So we renew every sixth of the
//! lease, and if no renewal has succeeded for half of it (the database is gone, or we were
//! paused), we stop: the caller ends the engine before anyone can take its pairs, and no pair
//! runs twice at the same time.

use std::time::Duration;

use precache_store::Store;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{EngineHandle, PairJob};

/// Why the lease keeper stopped this engine.
#[derive(Debug, thiserror::Error)]
pub enum LeaseLost {
    /// Renewals kept failing.
    #[error("could not renew the engine's lease for {0:?}: {1}")]
    NotRenewed(Duration, String),
    /// Another engine declared this one dead and took its pairs.
    #[error("another engine took this engine's pairs over")]
    TakenOver,
}

/// Renews the lease and takes over dead engines' pairs until `shutdown`; returns an error when
/// the lease is lost, and the engine must stop at once.
pub async fn keep_lease(
    store: Store,
    engine: EngineHandle,
    lease: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LeaseLost> {
    let period = (lease / 6).max(Duration::from_millis(100));
    let mut renewed_at = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            _ = tokio::time::sleep(period) => {}
        }
        let sent_at = Instant::now();
        let must_stop_at = renewed_at + lease / 2;
        match tokio::time::timeout_at(must_stop_at, store.heartbeat()).await {
            Ok(Ok(true)) => renewed_at = sent_at,
            Ok(Ok(false)) => return Err(LeaseLost::TakenOver),
            Ok(Err(error)) if Instant::now() < must_stop_at => {
                tracing::warn!(%error, "could not renew the engine's lease; trying again");
                continue;
            }
            Ok(Err(error)) => return Err(LeaseLost::NotRenewed(lease / 2, error.to_string())),
            Err(_) => {
                return Err(LeaseLost::NotRenewed(
                    lease / 2,
                    "the database did not answer".into(),
                ))
            }
        }
        if let Err(error) = take_over(&store, &engine, lease).await {
            tracing::warn!(%error, "could not take over the pairs of dead engines");
        }
    }
}

/// Claims the pairs of engines whose lease ran out and queues them here.
pub async fn take_over(
    store: &Store,
    engine: &EngineHandle,
    lease: Duration,
) -> Result<u64, precache_store::Error> {
    let taken = store.take_over_pairs(lease, false).await?;
    if taken.pairs == 0 {
        return Ok(0);
    }
    tracing::info!(
        pairs = taken.pairs,
        tasks = taken.tasks.len(),
        "took over the pairs of an engine that stopped"
    );
    for task in &taken.tasks {
        // A warm phase whose purges ended while its engine was dying is released here.
        store.release_held(*task).await?;
    }
    let pending = store.pending_pairs_of(&taken.tasks).await?;
    engine.enqueue(pending.into_iter().map(PairJob::from).collect());
    Ok(taken.pairs)
}
