//! The mutex recipe (ZooKeeper's lock recipe, run by the server).
//!
//! Lock `name` is the container `/.keeper/locks/{name}`; each acquire
//! creates an ephemeral sequential contender `/.keeper/locks/{name}/NNNNNNNNNN`
//! owned by the caller's session. The contender with the lowest sequence
//! number holds the lock; its `czxid` is the fencing token, so tokens rise
//! strictly from one holder to the next (a later contender was created by a
//! later entry). Grants are FIFO: sequence numbers are handed out in commit
//! order.
//!
//! A waiter waits only for the deletion of its immediate predecessor (the
//! contender just below it), so one release wakes one waiter: no herd
//! effect. When woken it looks again: the predecessor may have gone because
//! its session ended while an older contender still holds, and then it waits
//! for the new predecessor. Once a contender is the lowest it stays the
//! lowest until it is deleted (later contenders sort above it), so a grant
//! read from this member's applied tree is safe on any member.
//!
//! A wait that runs out deletes the contender (`504 Timeout`); so does a
//! request that goes away while waiting (its contender is deleted in the
//! background). A session that ends deletes its contenders, which releases
//! its locks. Release is a delete of the contender.

use crate::error::{ApiError, ErrorCode};
use crate::http::AppState;
use bytes::Bytes;
use keeper_store::{lock_dir, ChangeKind, NodeMode, Op, OpResult, Stat, Txn, TxnError, TxnOutcome};
use serde::Serialize;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// A granted lock: the contender's name and the fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub key: String,
    pub fencing_token: u64,
}

/// One contender as `GET /v1/locks/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contender {
    pub key: String,
    pub fencing_token: u64,
    pub session: u64,
}

impl Contender {
    fn new(key: String, stat: &Stat) -> Contender {
        Contender {
            key,
            fencing_token: stat.czxid,
            session: stat.ephemeral_owner,
        }
    }
}

/// The state of a lock: its holder (if any) and the waiters in grant order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockState {
    pub name: String,
    pub holder: Option<Contender>,
    pub queue: Vec<Contender>,
}

/// Times a contender create is retried when its lock directory vanished
/// in between (an empty container reaped between create-parent and create).
const CREATE_ATTEMPTS: usize = 5;

async fn propose_op(state: &AppState, op: Op) -> Result<Result<OpResult, TxnError>, ApiError> {
    match state.proposer.propose(Txn::Op(op)).await?.outcome {
        TxnOutcome::Op(result) => Ok(result),
        other => {
            tracing::error!(?other, "unexpected outcome for a single op");
            Err(ApiError::new(ErrorCode::Internal, "unexpected outcome"))
        }
    }
}

/// Creates `path` (persistent or container) unless it exists.
async fn ensure(state: &AppState, path: &str, mode: NodeMode) -> Result<(), ApiError> {
    let op = Op::Create {
        path: path.to_string(),
        data: Bytes::new(),
        mode,
        session: 0,
        ttl_ms: None,
    };
    match propose_op(state, op).await? {
        Ok(_) | Err(TxnError::NodeExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates this acquire's contender; returns its name and stat.
async fn create_contender(
    state: &AppState,
    dir: &str,
    session: u64,
) -> Result<(String, Stat), ApiError> {
    for _ in 0..CREATE_ATTEMPTS {
        let op = Op::Create {
            path: format!("{dir}/"),
            data: Bytes::new(),
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
                let locks = keeper_store::LOCKS_PREFIX;
                let keeper = locks.rsplit_once('/').map_or("/", |(p, _)| p);
                ensure(state, keeper, NodeMode::Persistent).await?;
                ensure(state, locks, NodeMode::Persistent).await?;
                ensure(state, dir, NodeMode::Container).await?;
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
        format!("lock directory {dir} kept vanishing; try again"),
    ))
}

/// Deletes the contender at `path` (already gone is fine).
async fn delete_contender(state: &AppState, path: String) -> Result<(), ApiError> {
    match propose_op(state, Op::Delete { path, version: -1 }).await? {
        Ok(_) | Err(TxnError::NoNode { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a contender in the background unless disarmed: a waiter whose
/// request went away (dropped future) leaves nothing behind.
struct Abandon {
    state: AppState,
    path: Option<String>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let state = self.state.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = delete_contender(&state, path.clone()).await {
                        tracing::warn!(%path, %e, "could not delete an abandoned lock contender");
                    }
                });
            }
        }
    }
}

/// Where a contender stands.
enum Position {
    /// It holds the lock.
    Holder(Stat),
    /// It waits for the contender with this name.
    After(String),
    /// It is gone (its session ended).
    Gone,
}

fn position(state: &AppState, name: &str, key: &str) -> Result<Position, ApiError> {
    let contenders = state.store.lock_contenders(name)?;
    let Some(i) = contenders.iter().position(|(k, _)| k == key) else {
        return Ok(Position::Gone);
    };
    Ok(match i {
        0 => Position::Holder(contenders[0].1),
        _ => Position::After(contenders[i - 1].0.clone()),
    })
}

/// Acquires lock `name` for `session`, waiting at most `wait_ms` (clamped
/// to `max_lock_wait_ms`). See the module docs.
pub async fn acquire(
    state: &AppState,
    name: &str,
    session: u64,
    wait_ms: u64,
) -> Result<Grant, ApiError> {
    if session == 0 {
        return Err(ApiError::bad_arguments("\"session\" is required"));
    }
    let dir = lock_dir(name, state.config.max_path_bytes)?;
    let deadline =
        Instant::now() + Duration::from_millis(wait_ms.min(state.config.max_lock_wait_ms));
    // Subscribed before the contender exists: no deletion after it is missed.
    let mut events = state.applied.subscribe_events();
    let (key, _) = create_contender(state, &dir, session).await?;
    let mut abandon = Abandon {
        state: state.clone(),
        path: Some(format!("{dir}/{key}")),
    };
    loop {
        let waiting_for = match position(state, name, &key)? {
            Position::Holder(stat) => {
                abandon.path = None;
                state.metrics.lock_grants.inc();
                return Ok(Grant {
                    key,
                    fencing_token: stat.czxid,
                });
            }
            Position::Gone => {
                abandon.path = None;
                return Err(ApiError::new(
                    ErrorCode::SessionExpired,
                    format!("session {session} ended while waiting for lock {name:?}"),
                ));
            }
            Position::After(pred) => format!("{dir}/{pred}"),
        };
        // Wait for the predecessor's deletion, or re-check after a lag
        // (events were dropped, the predecessor may be gone).
        let woken = tokio::time::timeout_at(deadline, async {
            loop {
                match events.recv().await {
                    Ok(run) if run.reset => return false,
                    Ok(run)
                        if run
                            .events
                            .iter()
                            .any(|ev| ev.kind == ChangeKind::Deleted && ev.path == waiting_for) =>
                    {
                        return true
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return false,
                    Err(RecvError::Closed) => return false,
                }
            }
        })
        .await;
        match woken {
            Ok(true) => {
                // The applier writes the store before it publishes the
                // events, so the next look sees the deletion.
                state.metrics.lock_wakeups.inc();
            }
            Ok(false) => events = events.resubscribe(),
            Err(_) => {
                // Granted at the very end is still a timeout: release it.
                let path = abandon.path.take().unwrap_or_default();
                delete_contender(state, path).await?;
                return Err(ApiError::new(
                    ErrorCode::Timeout,
                    format!("lock {name:?} not granted within {wait_ms} ms"),
                ));
            }
        }
    }
}

/// Releases the lock (or gives up waiting): deletes contender `key`.
/// `404 NoNode` if it does not exist.
pub async fn release(state: &AppState, name: &str, key: &str) -> Result<(), ApiError> {
    let dir = lock_dir(name, state.config.max_path_bytes)?;
    if !keeper_store::is_contender_name(key) {
        return Err(ApiError::bad_arguments(format!(
            "lock key {key:?} is not a contender name (10 digits)"
        )));
    }
    let path = format!("{dir}/{key}");
    match propose_op(state, Op::Delete { path, version: -1 }).await? {
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The holder and the queue of lock `name`, from this member's applied tree.
pub fn describe(state: &AppState, name: &str) -> Result<LockState, ApiError> {
    let mut contenders = state
        .store
        .lock_contenders(name)?
        .into_iter()
        .map(|(key, stat)| Contender::new(key, &stat));
    let holder = contenders.next();
    Ok(LockState {
        name: name.to_string(),
        holder,
        queue: contenders.collect(),
    })
}
