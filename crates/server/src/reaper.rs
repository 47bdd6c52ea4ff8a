//! The reaper: deletes empty containers and expired ttl nodes.
//!
//! Every `reap_interval_ms` it asks the store for due candidates
//! (`Store::reap_candidates`, an index lookup) and proposes one `Txn::Reap`
//! through the ordinary write path. Apply re-checks each candidate with the
//! entry's timestamp, so a stale candidate (a child was added meanwhile, the
//! node was re-created) is left alone.

use crate::metrics::Metrics;
use crate::proposer::Proposer;
use keeper_store::{Store, Txn, TxnOutcome};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Runs one reap round; returns the number of nodes deleted.
pub async fn reap_once(
    store: &Arc<Store>,
    proposer: &dyn Proposer,
    metrics: &Metrics,
    max_batch: usize,
) -> usize {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let store = store.clone();
    let found = tokio::task::spawn_blocking(move || store.reap_candidates(now_ms, max_batch)).await;
    let candidates = match found {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reap: listing candidates failed");
            return 0;
        }
        Err(e) => {
            tracing::warn!(error = %e, "reap: task failed");
            return 0;
        }
    };
    if candidates.is_empty() {
        return 0;
    }
    match proposer.propose(Txn::Reap { candidates }).await {
        Ok(applied) => match applied.outcome {
            TxnOutcome::Reaped { paths } => {
                if !paths.is_empty() {
                    tracing::debug!(count = paths.len(), "reaped nodes");
                }
                metrics.nodes_reaped.inc_by(paths.len() as u64);
                paths.len()
            }
            other => {
                tracing::error!(?other, "reap: unexpected outcome");
                0
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "reap: proposal failed");
            0
        }
    }
}

/// Reaps every `interval` until `shutdown` turns true.
pub async fn run_reaper(
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    metrics: Arc<Metrics>,
    interval: Duration,
    max_batch: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // Only the leader (or the standalone member) proposes reaps.
                if proposer.is_leader() {
                    reap_once(&store, proposer.as_ref(), &metrics, max_batch).await;
                }
            }
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
        }
    }
}
