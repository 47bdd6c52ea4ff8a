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

use super::contenders::{self, Abandon, Woken};
use crate::error::{ApiError, ErrorCode};
use crate::http::AppState;
use bytes::Bytes;
use keeper_store::{lock_dir, Stat};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;
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
    let (key, _) =
        contenders::create_contender(state, &dir, session, Bytes::new(), Bytes::new()).await?;
    let mut abandon = Abandon::new(state, format!("{dir}/{key}"));
    loop {
        let waiting_for = match position(state, name, &key)? {
            Position::Holder(stat) => {
                abandon.disarm();
                state.metrics.lock_grants.inc();
                return Ok(Grant {
                    key,
                    fencing_token: stat.czxid,
                });
            }
            Position::Gone => {
                abandon.disarm();
                return Err(ApiError::new(
                    ErrorCode::SessionExpired,
                    format!("session {session} ended while waiting for lock {name:?}"),
                ));
            }
            Position::After(pred) => format!("{dir}/{pred}"),
        };
        // Wait for the predecessor's deletion, or re-check after a lag
        // (events were dropped, the predecessor may be gone).
        match contenders::wait_for_deletions(&mut events, HashSet::from([waiting_for]), 1, deadline)
            .await
        {
            Woken::Deleted => {
                // The applier writes the store before it publishes the
                // events, so the next look sees the deletion.
                state.metrics.lock_wakeups.inc();
            }
            Woken::Recheck => {}
            Woken::TimedOut => {
                // Granted at the very end is still a timeout: release it.
                abandon.delete_now().await?;
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
    contenders::delete_key(state, &dir, key).await
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
