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
use crate::zab_driver::SessionHooks;
use keeper_store::Store;
use keeper_store::{SessionId, SessionInfo, Txn, TxnOutcome};
use std::collections::{HashMap, HashSet};
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
    /// Sessions taken out as expired whose close is not applied yet: a
    /// keepalive for them is refused, and a reconcile does not revive them.
    closing: Mutex<HashSet<SessionId>>,
}

/// What a keepalive found in the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Live: the deadline moved; here is the session's timeout.
    Touched(u64),
    /// Past its deadline or being closed.
    Expired,
    /// Not tracked (maybe created through another member a moment ago).
    Unknown,
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
        match self.touch_state(id, now) {
            Touch::Touched(t) => Some(t),
            Touch::Expired | Touch::Unknown => None,
        }
    }

    /// Like [`Self::touch`], telling "expired" apart from "unknown".
    pub fn touch_state(&self, id: SessionId, now: Instant) -> Touch {
        if self.closing_lock().contains(&id) {
            return Touch::Expired;
        }
        let mut map = self.lock();
        let Some(tracked) = map.get_mut(&id) else {
            return Touch::Unknown;
        };
        if tracked.deadline <= now {
            return Touch::Expired;
        }
        tracked.deadline = now + Duration::from_millis(tracked.timeout_ms);
        Touch::Touched(tracked.timeout_ms)
    }

    fn closing_lock(&self) -> std::sync::MutexGuard<'_, HashSet<SessionId>> {
        match self.closing.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes the tracker match the store's live sessions: sessions created
    /// through other members start with a full timeout from `now`; closed
    /// ones are forgotten.
    pub fn reconcile(&self, live: &[SessionInfo], now: Instant) {
        let ids: HashSet<SessionId> = live.iter().map(|s| s.id).collect();
        let mut closing = self.closing_lock();
        closing.retain(|id| ids.contains(id));
        let mut map = self.lock();
        map.retain(|id, _| ids.contains(id));
        for s in live {
            if !closing.contains(&s.id) {
                map.entry(s.id).or_insert(Tracked {
                    timeout_ms: s.timeout_ms,
                    deadline: now + Duration::from_millis(s.timeout_ms),
                });
            }
        }
    }

    /// Gives every tracked session a full timeout from `now` (a new leader
    /// must not expire sessions whose keepalives went to the old one).
    pub fn refresh_all(&self, now: Instant) {
        for t in self.lock().values_mut() {
            t.deadline = now + Duration::from_millis(t.timeout_ms);
        }
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
        self.closing_lock().extend(expired.iter().copied());
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

impl SessionHooks for SessionTracker {
    fn touched(&self, ids: &[SessionId]) {
        let now = Instant::now();
        for id in ids {
            self.touch(*id, now);
        }
    }

    fn leadership_gained(&self) {
        self.refresh_all(Instant::now());
    }
}

/// Session operations of the API, on top of the write path and the tracker.
///
/// In a cluster only the leader's tracker counts: it expires sessions and
/// hears every keepalive (followers relay theirs through
/// [`Proposer::relay_keepalive`] and answer from their own store). A member
/// that becomes leader reconciles its tracker with the store and gives every
/// session a full timeout.
pub struct Sessions {
    tracker: Arc<SessionTracker>,
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    metrics: Arc<Metrics>,
    min_timeout_ms: u64,
    max_timeout_ms: u64,
}

impl Sessions {
    /// Sessions over `proposer`, tracking `existing` (from the store) afresh.
    pub fn new(
        tracker: Arc<SessionTracker>,
        store: Arc<Store>,
        proposer: Arc<dyn Proposer>,
        metrics: Arc<Metrics>,
        min_timeout_ms: u64,
        max_timeout_ms: u64,
    ) -> Sessions {
        Sessions {
            tracker,
            store,
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
        if self.proposer.failed() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "this member failed; try another member",
            ));
        }
        if !self.proposer.is_leader() {
            // A follower answers from its own applied state and relays the
            // keepalive to the leader, which owns the deadlines.
            return match self.store.session(id).map_err(ApiError::from)? {
                Some(info) => {
                    self.proposer.relay_keepalive(id);
                    Ok(info.timeout_ms)
                }
                None => Err(session_expired(id)),
            };
        }
        let now = Instant::now();
        match self.tracker.touch_state(id, now) {
            Touch::Touched(timeout_ms) => Ok(timeout_ms),
            Touch::Expired => Err(session_expired(id)),
            Touch::Unknown => match self.store.session(id).map_err(ApiError::from)? {
                // Created through another member and not reconciled yet.
                Some(info) => {
                    self.tracker.track(id, info.timeout_ms, now);
                    Ok(info.timeout_ms)
                }
                None => Err(session_expired(id)),
            },
        }
    }

    /// Closes a session (deleting its ephemerals). Unknown or expired: 410.
    pub async fn close(&self, id: SessionId) -> Result<(), ApiError> {
        if self.proposer.is_leader() {
            if self.tracker.touch_state(id, Instant::now()) == Touch::Expired {
                return Err(session_expired(id));
            }
            self.tracker.remove(id, Instant::now());
        }
        // The replicated outcome decides: an unknown session is SessionExpired.
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
        if !self.proposer.is_leader() {
            return 0;
        }
        match self.store.sessions() {
            Ok(live) => self.tracker.reconcile(&live, Instant::now()),
            Err(e) => tracing::warn!(error = %e, "cannot read sessions to reconcile"),
        }
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
