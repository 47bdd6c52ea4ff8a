//! The counting semaphore recipe: at most `permits_max` holders at once.
//!
//! Semaphore `name` is the container `/.keeper/semaphores/{name}`; its data
//! is `permits_max` (decimal), written when the directory is created. Each
//! acquire creates an ephemeral sequential contender under it (its data is
//! the `permits_max` it asked with). A contender holds a permit while fewer
//! than `permits_max` contenders precede it; grants are FIFO.
//!
//! An acquire whose `permits_max` differs from the directory's is refused
//! (`400 BadArguments`, naming both): it is checked before the contender is
//! created and again after (the directory cannot be reaped while our
//! contender is in it, so the second check reads the directory that counts;
//! a mismatch then deletes the contender).
//!
//! No herd: a waiter at position `i` (`i >= permits_max`) needs `i -
//! permits_max + 1` of the `i` contenders ahead of it to go. It counts the
//! deletions of exactly those contenders and looks at the tree again only
//! when enough went, so one release wakes one waiter (the next in line).
//! Later contenders sort after it, so its set of predecessors only shrinks.

use super::contenders::{self, Abandon, Woken};
use crate::error::{ApiError, ErrorCode};
use crate::http::AppState;
use bytes::Bytes;
use keeper_store::{semaphore_dir, Stat};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// A granted permit: the contender's name (release it with
/// `DELETE /v1/semaphores/{name}/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permit {
    pub key: String,
    pub permits_max: u64,
}

/// One contender as `GET /v1/semaphores/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SemaphoreContender {
    pub key: String,
    pub session: u64,
}

/// The state of a semaphore: `permits_max` (none while nobody contends),
/// the holders and the waiters, each in grant order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SemaphoreState {
    pub name: String,
    pub permits_max: Option<u64>,
    pub holders: Vec<SemaphoreContender>,
    pub queue: Vec<SemaphoreContender>,
}

/// `permits_max` as stored in the directory's data; `Err` names what is
/// there instead (the directory was not made by a semaphore acquire).
fn parse_permits(data: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| String::from_utf8_lossy(data).into_owned())
}

/// Refuses `asked` unless the semaphore's stored `permits_max` is the same
/// (or the directory does not exist yet).
fn check_permits(state: &AppState, name: &str, dir: &str, asked: u64) -> Result<(), ApiError> {
    let Some((data, _)) = state.store.get(dir)? else {
        return Ok(());
    };
    match parse_permits(&data) {
        Ok(stored) if stored == asked => Ok(()),
        Ok(stored) => Err(ApiError::bad_arguments(format!(
            "semaphore {name:?} has permits_max {stored}; this acquire asked for {asked} \
             (every contender must agree; it changes once nobody contends)"
        ))),
        Err(found) => Err(ApiError::bad_arguments(format!(
            "{dir} holds {found:?}, not a semaphore's permits_max"
        ))),
    }
}

/// Where a contender stands.
enum Position {
    Holder,
    /// Waits for `needed` of these predecessors to go.
    Waiting {
        ahead: HashSet<String>,
        needed: usize,
    },
    Gone,
}

fn position(state: &AppState, dir: &str, key: &str, permits_max: u64) -> Position {
    let all = state.store.contenders(dir);
    let Some(i) = all.iter().position(|(k, _, _)| k == key) else {
        return Position::Gone;
    };
    let permits = usize::try_from(permits_max).unwrap_or(usize::MAX);
    if i < permits {
        return Position::Holder;
    }
    Position::Waiting {
        ahead: all[..i]
            .iter()
            .map(|(k, _, _)| format!("{dir}/{k}"))
            .collect(),
        needed: i - permits + 1,
    }
}

/// Acquires a permit of semaphore `name` for `session`, waiting at most
/// `wait_ms` (clamped to `max_lock_wait_ms`). See the module docs.
pub async fn acquire(
    state: &AppState,
    name: &str,
    session: u64,
    permits_max: u64,
    wait_ms: u64,
) -> Result<Permit, ApiError> {
    if session == 0 {
        return Err(ApiError::bad_arguments("\"session\" is required"));
    }
    if permits_max == 0 {
        return Err(ApiError::bad_arguments(
            "\"permits_max\" must be at least 1",
        ));
    }
    let dir = semaphore_dir(name, state.config.max_path_bytes)?;
    check_permits(state, name, &dir, permits_max)?;
    let deadline =
        Instant::now() + Duration::from_millis(wait_ms.min(state.config.max_lock_wait_ms));
    // Subscribed before the contender exists: no deletion after it is missed.
    let mut events = state.applied.subscribe_events();
    let permits = Bytes::from(permits_max.to_string());
    let (key, _) =
        contenders::create_contender(state, &dir, session, permits.clone(), permits).await?;
    let mut abandon = Abandon::new(state, format!("{dir}/{key}"));
    // Our contender keeps the directory alive: this reads the one that counts.
    if let Err(e) = check_permits(state, name, &dir, permits_max) {
        abandon.delete_now().await?;
        return Err(e);
    }
    loop {
        let (ahead, needed) = match position(state, &dir, &key, permits_max) {
            Position::Holder => {
                abandon.disarm();
                state.metrics.semaphore_grants.inc();
                return Ok(Permit { key, permits_max });
            }
            Position::Gone => {
                abandon.disarm();
                return Err(ApiError::new(
                    ErrorCode::SessionExpired,
                    format!("session {session} ended while waiting for semaphore {name:?}"),
                ));
            }
            Position::Waiting { ahead, needed } => (ahead, needed),
        };
        match contenders::wait_for_deletions(&mut events, ahead, needed, deadline).await {
            Woken::Deleted => {
                state.metrics.semaphore_wakeups.inc();
            }
            Woken::Recheck => {}
            Woken::TimedOut => {
                abandon.delete_now().await?;
                return Err(ApiError::new(
                    ErrorCode::Timeout,
                    format!("no permit of semaphore {name:?} within {wait_ms} ms"),
                ));
            }
        }
    }
}

/// Releases a permit (or gives up waiting): deletes contender `key`.
pub async fn release(state: &AppState, name: &str, key: &str) -> Result<(), ApiError> {
    let dir = semaphore_dir(name, state.config.max_path_bytes)?;
    contenders::delete_key(state, &dir, key).await
}

/// `permits_max`, holders and queue of semaphore `name`, from this
/// member's applied tree.
pub fn describe(state: &AppState, name: &str) -> Result<SemaphoreState, ApiError> {
    let dir = semaphore_dir(name, state.config.max_path_bytes)?;
    let permits_max = state
        .store
        .get(&dir)?
        .and_then(|(data, _)| parse_permits(&data).ok());
    let all: Vec<SemaphoreContender> = state
        .store
        .contenders(&dir)
        .into_iter()
        .map(|(key, stat, _): (String, Stat, Bytes)| SemaphoreContender {
            key,
            session: stat.ephemeral_owner,
        })
        .collect();
    let held = permits_max.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let (holders, queue) = if all.len() > held {
        let mut holders = all;
        let queue = holders.split_off(held);
        (holders, queue)
    } else {
        (all, Vec::new())
    };
    Ok(SemaphoreState {
        name: name.to_string(),
        permits_max,
        holders,
        queue,
    })
}
