//! The leader election recipe.
//!
//! Election `name` is the container `/.keeper/elections/{name}`; each
//! campaign creates an ephemeral sequential candidate under it, owned by
//! the caller's session, whose data is the candidate's value. The lowest
//! candidate leads. Its *term* is its `czxid`: a later leader was created
//! by a later entry, so terms rise strictly from leader to leader, and a
//! term fences writes exactly like a lock token (`fence: {election, token}`,
//! `Txn::FencedBy` with `FenceScope::Election`).
//!
//! A campaign waits like a lock acquire: only for the deletion of the
//! candidate just ahead of it (no herd). A campaign that runs out of
//! `wait_ms` withdraws its candidate (`504 Timeout`). Resigning deletes the
//! candidate (a leader's or a waiting one's); a session that ends deletes
//! its candidates. Proclaim sets the leader's value with a write fenced by
//! its own term, so only the leader at apply time can proclaim.
//!
//! [`observe`] follows the leader through the member's watch hub: it
//! registers a stream on the election directory and, after each group of
//! changes, reads the leader again and yields it if it changed.

use super::contenders::{self, Abandon, Woken};
use crate::error::{ApiError, ErrorCode};
use crate::http::AppState;
use crate::watches::hub::{Admission, CutReason, StreamFeed};
use crate::watches::Scope;
use bytes::Bytes;
use keeper_store::{election_dir, Fence, FenceScope, Op, OpResult, Txn, TxnError};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// An elected candidate: its key and term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Elected {
    pub key: String,
    pub term: u64,
}

/// The leader of an election as `GET` and the event stream show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leader {
    pub key: String,
    /// The leader's value (UTF-8; invalid bytes are replaced).
    pub value: String,
    pub term: u64,
    pub session: u64,
}

/// The state of an election: its leader (`None`: nobody campaigns) and
/// how many candidates wait behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElectionState {
    pub name: String,
    pub leader: Option<Leader>,
    pub waiting: usize,
}

/// Campaigns in election `name` for `session` with `value`; returns once
/// elected, or `504 Timeout` after `wait_ms` (clamped to
/// `max_lock_wait_ms`; the candidate is withdrawn).
pub async fn campaign(
    state: &AppState,
    name: &str,
    session: u64,
    value: Bytes,
    wait_ms: u64,
) -> Result<Elected, ApiError> {
    if session == 0 {
        return Err(ApiError::bad_arguments("\"session\" is required"));
    }
    let dir = election_dir(name, state.config.max_path_bytes)?;
    let deadline =
        Instant::now() + Duration::from_millis(wait_ms.min(state.config.max_lock_wait_ms));
    // Subscribed before the candidate exists: no deletion after it is missed.
    let mut events = state.applied.subscribe_events();
    let (key, _) = contenders::create_contender(state, &dir, session, value, Bytes::new()).await?;
    let mut abandon = Abandon::new(state, format!("{dir}/{key}"));
    loop {
        let all = state.store.contenders(&dir);
        let predecessor = match all.iter().position(|(k, _, _)| *k == key) {
            None => {
                abandon.disarm();
                return Err(ApiError::new(
                    ErrorCode::SessionExpired,
                    format!("session {session} ended while campaigning in election {name:?}"),
                ));
            }
            Some(0) => {
                abandon.disarm();
                state.metrics.election_wins.inc();
                return Ok(Elected {
                    key,
                    term: all[0].1.czxid,
                });
            }
            Some(i) => format!("{dir}/{}", all[i - 1].0),
        };
        match contenders::wait_for_deletions(&mut events, HashSet::from([predecessor]), 1, deadline)
            .await
        {
            Woken::Deleted => {
                state.metrics.election_wakeups.inc();
            }
            Woken::Recheck => {}
            Woken::TimedOut => {
                abandon.delete_now().await?;
                return Err(ApiError::new(
                    ErrorCode::Timeout,
                    format!("not elected in election {name:?} within {wait_ms} ms"),
                ));
            }
        }
    }
}

/// Withdraws candidate `key` (the leader resigns, or a waiting candidate
/// stops campaigning). `404 NoNode` if there is no such candidate.
pub async fn resign(state: &AppState, name: &str, key: &str) -> Result<(), ApiError> {
    let dir = election_dir(name, state.config.max_path_bytes)?;
    contenders::delete_key(state, &dir, key).await
}

/// Sets the leader's value. Only the leader can: the write is fenced by
/// the candidate's own term, checked when it is applied. `409 Fenced` if
/// `key` is not the leader then, `404 NoNode` if there is no such
/// candidate.
pub async fn proclaim(
    state: &AppState,
    name: &str,
    key: &str,
    value: Bytes,
) -> Result<Leader, ApiError> {
    let dir = election_dir(name, state.config.max_path_bytes)?;
    if !keeper_store::is_contender_name(key) {
        return Err(ApiError::bad_arguments(format!(
            "key {key:?} is not a candidate name (10 digits)"
        )));
    }
    let path = format!("{dir}/{key}");
    let Some((_, stat)) = state.store.get(&path)? else {
        return Err(ApiError::new(
            ErrorCode::NoNode,
            format!("election {name:?} has no candidate {key:?}"),
        )
        .with_path(path));
    };
    let txn = Txn::FencedBy {
        scope: FenceScope::Election,
        fence: Fence {
            lock: name.to_string(),
            token: stat.czxid,
        },
        txn: Box::new(Txn::Op(Op::Set {
            path: path.clone(),
            data: value.clone(),
            version: -1,
        })),
    };
    match contenders::propose_single(state, txn).await? {
        Ok(OpResult::Set { stat, .. }) => Ok(Leader {
            key: key.to_string(),
            value: String::from_utf8_lossy(&value).into_owned(),
            term: stat.czxid,
            session: stat.ephemeral_owner,
        }),
        Ok(other) => {
            tracing::error!(?other, "unexpected op result");
            Err(ApiError::new(ErrorCode::Internal, "unexpected op result"))
        }
        Err(TxnError::Fenced { holder, .. }) => Err(ApiError::new(
            ErrorCode::Fenced,
            format!(
                "candidate {key:?} (term {}) is not the leader of election {name:?}; \
                 the leader's term is {holder:?}",
                stat.czxid
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The leader of election `name` in this member's applied tree.
pub fn leader(state: &AppState, name: &str) -> Result<Option<Leader>, ApiError> {
    Ok(describe(state, name)?.leader)
}

/// The leader and the number of waiting candidates of election `name`.
pub fn describe(state: &AppState, name: &str) -> Result<ElectionState, ApiError> {
    let dir = election_dir(name, state.config.max_path_bytes)?;
    let all = state.store.contenders(&dir);
    let waiting = all.len().saturating_sub(1);
    let leader = all.into_iter().next().map(|(key, stat, data)| Leader {
        key,
        value: String::from_utf8_lossy(&data).into_owned(),
        term: stat.czxid,
        session: stat.ephemeral_owner,
    });
    Ok(ElectionState {
        name: name.to_string(),
        leader,
        waiting,
    })
}

/// What an observer of an election is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The leader now (`None`: nobody leads), as of `zxid`.
    Leader { leader: Option<Leader>, zxid: u64 },
    /// The stream was cut off (too slow, reset, shutting down); the
    /// observer should reconnect.
    CutOff(CutReason),
}

/// Follows the leader of an election (see the module docs); made by
/// [`Observer::start`].
pub struct Observer {
    state: AppState,
    name: String,
    feed: StreamFeed,
    last: Option<Option<Leader>>,
    done: bool,
    _admission: Admission,
}

impl Observer {
    /// Registers the watch on the election's directory. The first
    /// [`Observer::next`] is the leader at that point.
    pub fn start(state: &AppState, name: &str) -> Result<Observer, ApiError> {
        let dir = election_dir(name, state.config.max_path_bytes)?;
        let admission = state.watches.admit().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                "too many watch streams open on this member (max_watch_streams)",
            )
        })?;
        let feed = state
            .watches
            .register_stream(&[(dir, Scope::NodeAndChildren)]);
        Ok(Observer {
            state: state.clone(),
            name: name.to_string(),
            feed,
            last: None,
            done: false,
            _admission: admission,
        })
    }

    /// The next change of leader; `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Observed> {
        loop {
            if self.done {
                return None;
            }
            // Registered before this read: a change after it comes as a group.
            let zxid = self.state.applied.applied_zxid().0;
            match leader(&self.state, &self.name) {
                Ok(now) if self.last.as_ref() != Some(&now) => {
                    self.last = Some(now.clone());
                    return Some(Observed::Leader { leader: now, zxid });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%e, "election observer could not read the leader");
                    self.done = true;
                    return None;
                }
            }
            if self.feed.recv().await.is_none() {
                self.done = true;
                let reason = self.feed.cut_reason().unwrap_or(CutReason::Shutdown);
                return Some(Observed::CutOff(reason));
            }
        }
    }
}
