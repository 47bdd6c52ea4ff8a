//! Sessions: create and close through the write path, expiry tracked in memory.
//!
//! Data flow: `POST /v1/sessions` proposes `Txn::CreateSession` (the new id is
//! the entry's zxid); `DELETE` proposes `Txn::CloseSession`, which deletes the
//! session's ephemerals in the same entry. Keepalives are not logged: they
//! only push the session's deadline in the [`SessionTracker`]. Every
//! `session_tick_ms`, [`run_expiry`] takes the sessions past their deadline
//! out of the tracker and proposes `CloseSession` for each.
//!
//! The tracker is the leader's (here: the standalone member's). It is rebuilt
//! from `Store::sessions()` at startup with a fresh full timeout for every
//! session, so a restart never expires a session early.

use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::proposer::{ProposeError, Proposer};
use keeper_store::{SessionId, SessionInfo, Txn, TxnOutcome};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy)]
struct Tracked {
    timeout_ms: u64,
    deadline: Instant,
}

/// In-memory session deadlines. Thread-safe; every method takes `now`.
#[derive(Debug, Default)]
pub struct SessionTracker {
    sessions: Mutex<HashMap<SessionId, Tracked>>,
}

impl SessionTracker {
    /// A tracker holding `sessions`, each with a full timeout from `now`.
    pub fn rebuild(sessions: &[SessionInfo], now: Instant) -> SessionTracker {
        let tracker = SessionTracker::default();
        for s in sessions {
            tracker.track(s.id, s.timeout_ms, now);
        }
        tracker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Tracked>> {
        match self.sessions.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Starts (or restarts) tracking `id` with a full timeout from `now`.
    pub fn track(&self, id: SessionId, timeout_ms: u64, now: Instant) {
        let deadline = now + Duration::from_millis(timeout_ms);
        self.lock().insert(
            id,
            Tracked {
                timeout_ms,
                deadline,
            },
        );
    }

    /// Refreshes a live session's deadline; returns its timeout, or `None`
    /// if it is unknown or already past its deadline.
    pub fn touch(&self, id: SessionId, now: Instant) -> Option<u64> {
        let mut map = self.lock();
        let tracked = map.get_mut(&id)?;
        if tracked.deadline <= now {
            return None;
        }
        tracked.deadline = now + Duration::from_millis(tracked.timeout_ms);
        Some(tracked.timeout_ms)
    }

    /// Stops tracking `id`; returns whether it was tracked and still live.
    pub fn remove(&self, id: SessionId, now: Instant) -> bool {
        match self.lock().remove(&id) {
            Some(t) => t.deadline > now,
            None => false,
        }
    }

    /// Removes and returns every session past its deadline at `now`.
    pub fn take_expired(&self, now: Instant) -> Vec<SessionId> {
        let mut map = self.lock();
        let expired: Vec<SessionId> = map
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            map.remove(id);
        }
        expired
    }

    /// Number of sessions tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Session operations of the API, on top of the write path and the tracker.
pub struct Sessions {
    tracker: SessionTracker,
    proposer: Arc<dyn Proposer>,
    metrics: Arc<Metrics>,
    min_timeout_ms: u64,
    max_timeout_ms: u64,
}

impl Sessions {
    /// Sessions over `proposer`, tracking `existing` (from the store) afresh.
    pub fn new(
        proposer: Arc<dyn Proposer>,
        metrics: Arc<Metrics>,
        existing: &[SessionInfo],
        min_timeout_ms: u64,
        max_timeout_ms: u64,
    ) -> Sessions {
        Sessions {
            tracker: SessionTracker::rebuild(existing, Instant::now()),
            proposer,
            metrics,
            min_timeout_ms,
            max_timeout_ms,
        }
    }

    /// Number of live sessions tracked.
    pub fn count(&self) -> usize {
        self.tracker.len()
    }

    /// Creates a session with the requested timeout clamped into the
    /// configured range; returns `(id, granted timeout_ms)`.
    pub async fn create(&self, requested_timeout_ms: u64) -> Result<(SessionId, u64), ApiError> {
        let timeout_ms = requested_timeout_ms.clamp(self.min_timeout_ms, self.max_timeout_ms);
        let applied = self
            .proposer
            .propose(Txn::CreateSession { timeout_ms })
            .await?;
        match applied.outcome {
            TxnOutcome::SessionCreated { id, timeout_ms } => {
                self.tracker.track(id, timeout_ms, Instant::now());
                tracing::debug!(session = id, timeout_ms, "session created");
                Ok((id, timeout_ms))
            }
            other => Err(unexpected_outcome("CreateSession", &other)),
        }
    }

    /// Keeps a session alive; returns its timeout. Unknown or expired: 410.
    pub fn keepalive(&self, id: SessionId) -> Result<u64, ApiError> {
        self.tracker
            .touch(id, Instant::now())
            .ok_or_else(|| session_expired(id))
    }

    /// Closes a session (deleting its ephemerals). Unknown or expired: 410.
    pub async fn close(&self, id: SessionId) -> Result<(), ApiError> {
        if !self.tracker.remove(id, Instant::now()) {
            return Err(session_expired(id));
        }
        match self.propose_close(id).await {
            Ok(Ok(deleted)) => {
                tracing::debug!(session = id, ephemerals = deleted.len(), "session closed");
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => {
                // Not closed: keep expiring it (retried at the next tick).
                self.tracker.track(id, 0, Instant::now());
                Err(e.into())
            }
        }
    }

    async fn propose_close(
        &self,
        id: SessionId,
    ) -> Result<Result<Vec<String>, ApiError>, ProposeError> {
        let applied = self.proposer.propose(Txn::CloseSession { id }).await?;
        Ok(match applied.outcome {
            TxnOutcome::SessionClosed(Ok(paths)) => Ok(paths),
            TxnOutcome::SessionClosed(Err(e)) => Err(e.into()),
            other => Err(unexpected_outcome("CloseSession", &other)),
        })
    }

    /// Closes every session past its deadline; returns how many were closed.
    pub async fn expire_due(&self) -> usize {
        let expired = self.tracker.take_expired(Instant::now());
        let mut closed = 0;
        for id in expired {
            match self.propose_close(id).await {
                Ok(_) => {
                    tracing::info!(session = id, "session expired");
                    self.metrics
                        .sessions_expired
                        .fetch_add(1, Ordering::Relaxed);
                    closed += 1;
                }
                Err(e) => {
                    tracing::warn!(session = id, error = %e, "could not expire session; retrying");
                    self.tracker.track(id, 0, Instant::now());
                }
            }
        }
        closed
    }
}

fn session_expired(id: SessionId) -> ApiError {
    ApiError::new(
        ErrorCode::SessionExpired,
        format!("session {id} does not exist or has expired"),
    )
}

fn unexpected_outcome(what: &str, outcome: &TxnOutcome) -> ApiError {
    tracing::error!(?outcome, "unexpected outcome for {what}");
    ApiError::new(
        ErrorCode::Internal,
        format!("unexpected outcome for {what}"),
    )
}

/// Every `tick`, closes expired sessions, until `shutdown` turns true.
pub async fn run_expiry(
    sessions: Arc<Sessions>,
    tick: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                sessions.expire_due().await;
            }
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_expires_only_sessions_without_keepalives() {
        let t0 = Instant::now();
        let tracker = SessionTracker::rebuild(
            &[
                SessionInfo {
                    id: 1,
                    timeout_ms: 100,
                },
                SessionInfo {
                    id: 2,
                    timeout_ms: 100,
                },
            ],
            t0,
        );
        assert_eq!(tracker.touch(1, t0 + Duration::from_millis(80)), Some(100));
        assert!(tracker
            .take_expired(t0 + Duration::from_millis(50))
            .is_empty());
        assert_eq!(
            tracker.take_expired(t0 + Duration::from_millis(120)),
            vec![2]
        );
        // Gone now: keepalive and close report it expired.
        assert_eq!(tracker.touch(2, t0 + Duration::from_millis(121)), None);
        assert!(!tracker.remove(2, t0 + Duration::from_millis(121)));
        // Session 1 was refreshed at 80 and lives until 180.
        assert_eq!(tracker.touch(1, t0 + Duration::from_millis(170)), Some(100));
        assert_eq!(
            tracker.take_expired(t0 + Duration::from_millis(280)),
            vec![1]
        );
        assert!(tracker.is_empty());
    }

    #[test]
    fn keepalive_after_deadline_is_refused_even_before_the_tick() {
        let t0 = Instant::now();
        let tracker = SessionTracker::default();
        tracker.track(5, 100, t0);
        assert_eq!(tracker.touch(5, t0 + Duration::from_millis(100)), None);
        assert!(!tracker.remove(5, t0 + Duration::from_millis(100)));
    }
}
