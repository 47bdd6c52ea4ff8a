//! What every recipe is made of: a directory (a container) of ephemeral
//! sequential *contender* nodes owned by sessions, ordered by sequence
//! number, and waiters that wait only for the deletions that can unblock
//! them. The [`lock`](super::lock), [`semaphore`](super::semaphore) and
//! [`election`](super::election) recipes differ only in who holds (the
//! lowest contender, or the lowest `permits_max`) and in what a contender
//! carries as data.
//!
//! A waiter reads the applier's change runs (the member's broadcast of
//! every applied change) and counts the deletions of the contenders it
//! waits for; it looks at the tree again only when enough of them went (or
//! when it may have missed some: a lagged receiver or a snapshot reset).

use crate::applier::AppliedChanges;
use crate::error::{ApiError, ErrorCode};
use crate::http::AppState;
use bytes::Bytes;
use keeper_store::{ChangeKind, NodeMode, Op, OpResult, Stat, Txn, TxnError, TxnOutcome};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

/// Times a contender create is retried when its directory vanished in
/// between (an empty container reaped between create-parent and create).
const CREATE_ATTEMPTS: usize = 5;

/// Proposes one op and returns its deterministic result.
pub async fn propose_op(state: &AppState, op: Op) -> Result<Result<OpResult, TxnError>, ApiError> {
    outcome_of(state.proposer.propose(Txn::Op(op)).await?.outcome)
}

/// Proposes `txn` (an op, possibly fenced) and returns its result.
pub async fn propose_single(
    state: &AppState,
    txn: Txn,
) -> Result<Result<OpResult, TxnError>, ApiError> {
    outcome_of(state.proposer.propose(txn).await?.outcome)
}

fn outcome_of(outcome: TxnOutcome) -> Result<Result<OpResult, TxnError>, ApiError> {
    match outcome {
        TxnOutcome::Op(result) => Ok(result),
        other => {
            tracing::error!(?other, "unexpected outcome for a single op");
            Err(ApiError::new(ErrorCode::Internal, "unexpected outcome"))
        }
    }
}

/// Creates `path` (persistent or container, with `data`) unless it exists.
async fn ensure(state: &AppState, path: &str, mode: NodeMode, data: Bytes) -> Result<(), ApiError> {
    let op = Op::Create {
        path: path.to_string(),
        data,
        mode,
        session: 0,
        ttl_ms: None,
    };
    match propose_op(state, op).await? {
        Ok(_) | Err(TxnError::NodeExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates a contender under `dir` (`/.keeper/{kind}/{name}`) for
/// `session` with `data`, creating `/.keeper`, the kind's prefix and the
/// directory (a container with `dir_data`) if needed; returns its name and
/// stat.
pub async fn create_contender(
    state: &AppState,
    dir: &str,
    session: u64,
    data: Bytes,
    dir_data: Bytes,
) -> Result<(String, Stat), ApiError> {
    for _ in 0..CREATE_ATTEMPTS {
        let op = Op::Create {
            path: format!("{dir}/"),
            data: data.clone(),
            mode: NodeMode::EphemeralSequential,
            session,
            ttl_ms: None,
        };
        match propose_op(state, op).await? {
            Ok(OpResult::Created { path, stat }) => {
                let key = path.rsplit('/').next().unwrap_or_default().to_string();
                return Ok((key, stat));
            }
            Err(TxnError::NoNode { .. }) => {
                let prefix = dir.rsplit_once('/').map_or("/", |(p, _)| p);
                let keeper = prefix.rsplit_once('/').map_or("/", |(p, _)| p);
                ensure(state, keeper, NodeMode::Persistent, Bytes::new()).await?;
                ensure(state, prefix, NodeMode::Persistent, Bytes::new()).await?;
                ensure(state, dir, NodeMode::Container, dir_data.clone()).await?;
            }
            Ok(other) => {
                tracing::error!(?other, "unexpected op result");
                return Err(ApiError::new(ErrorCode::Internal, "unexpected op result"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        ErrorCode::Unavailable,
        format!("directory {dir} kept vanishing; try again"),
    ))
}

/// Deletes the contender at `path` (already gone is fine).
pub async fn delete_contender(state: &AppState, path: String) -> Result<(), ApiError> {
    match propose_op(state, Op::Delete { path, version: -1 }).await? {
        Ok(_) | Err(TxnError::NoNode { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `key` under `dir` (a release, a resign); `404 NoNode` if there
/// is no such contender, `400` if `key` is not a contender name.
pub async fn delete_key(state: &AppState, dir: &str, key: &str) -> Result<(), ApiError> {
    if !keeper_store::is_contender_name(key) {
        return Err(ApiError::bad_arguments(format!(
            "key {key:?} is not a contender name (10 digits)"
        )));
    }
    let path = format!("{dir}/{key}");
    match propose_op(state, Op::Delete { path, version: -1 }).await? {
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a contender in the background unless disarmed: a waiter whose
/// request went away (dropped future) leaves nothing behind.
pub struct Abandon {
    state: AppState,
    path: Option<String>,
}

impl Abandon {
    /// Armed for the contender at `path`.
    pub fn new(state: &AppState, path: String) -> Abandon {
        Abandon {
            state: state.clone(),
            path: Some(path),
        }
    }

    /// The contender is granted (or gone): keep it.
    pub fn disarm(&mut self) {
        self.path = None;
    }

    /// Deletes the contender now (a wait that ran out).
    pub async fn delete_now(&mut self) -> Result<(), ApiError> {
        match self.path.take() {
            Some(path) => delete_contender(&self.state, path).await,
            None => Ok(()),
        }
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let state = self.state.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = delete_contender(&state, path.clone()).await {
                        tracing::warn!(%path, %e, "could not delete an abandoned contender");
                    }
                });
            }
        }
    }
}

/// How a wait for deletions ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// Enough of the awaited contenders were deleted: look again.
    Deleted,
    /// Deletions may have been missed (lag, snapshot reset): look again.
    Recheck,
    /// The deadline passed.
    TimedOut,
}

/// Waits until `needed` of the contenders at `paths` are deleted (each
/// counts once), or until the deadline. `events` must have been subscribed
/// before the tree was read that produced `paths`, so no deletion after
/// that read is missed.
pub async fn wait_for_deletions(
    events: &mut broadcast::Receiver<Arc<AppliedChanges>>,
    mut paths: HashSet<String>,
    needed: usize,
    deadline: Instant,
) -> Woken {
    let mut needed = needed.max(1);
    let woken = tokio::time::timeout_at(deadline, async {
        loop {
            match events.recv().await {
                Ok(run) if run.reset => return Woken::Recheck,
                Ok(run) => {
                    for ev in &run.events {
                        if ev.kind == ChangeKind::Deleted && paths.remove(&ev.path) {
                            needed -= 1;
                            if needed == 0 {
                                return Woken::Deleted;
                            }
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => return Woken::Recheck,
                Err(RecvError::Closed) => {
                    // The applier stopped (shutting down): no busy loop.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    return Woken::Recheck;
                }
            }
        }
    })
    .await;
    let woken = woken.unwrap_or(Woken::TimedOut);
    if woken == Woken::Recheck {
        *events = events.resubscribe();
    }
    woken
}
