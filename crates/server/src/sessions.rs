//! Sessions: create and close through the write path, leases (deadlines) in
//! the leader's memory, keepalives confirmed by a quorum.
//!
//! Data flow: `POST /v1/sessions` proposes `Txn::CreateSession` (the new id is
//! the entry's zxid); `DELETE` proposes `Txn::CloseSession`, which deletes the
//! session's ephemerals in the same entry. Keepalives are not logged: they
//! push the session's deadline in the leader's [`Leases`]. Every
//! `session_tick_ms`, [`run_expiry`] takes the sessions past their deadline
//! out of the leases and proposes `CloseSession` for each.
//!
//! In a cluster a keepalive is answered only after the leader has touched the
//! session and then confirmed its leadership with a quorum round that started
//! after the touch (`zab_driver/keepalive.rs`); the verdict is settled here,
//! by [`Leases::settle`], against the leader's applied state. A standalone
//! member settles at once. "The session contract" in `docs/ARCHITECTURE.md`
//! states what an acknowledgement promises and why this keeps it.
//!
//! Only the leader's (or the standalone member's) leases count. They are
//! rebuilt from `Store::sessions()` at startup, and every time this member
//! becomes leader every session gets a full timeout from that moment.

use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::proposer::{ProposeError, Proposer};
use crate::zab_driver::SessionHooks;
use keeper_store::Store;
use keeper_store::{SessionId, SessionInfo, Txn, TxnOutcome};
use keeper_zab::Zxid;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a keepalive found in the leases when it touched them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Live: the deadline moved a full timeout ahead; here is the timeout.
    Touched(u64),
    /// Past its deadline, or its close is under way.
    Expired,
    /// Not tracked (created through another member a moment ago, or gone).
    Unknown,
}

/// The answer to one keepalive. The leader settles it and sends it to the
/// follower that relayed the keepalive (`PeerMsg::KeepalivesAck`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeepaliveVerdict {
    /// `200`: alive. The leader touched the session after the keepalive was
    /// sent and then confirmed its leadership with a quorum, so the session
    /// cannot expire before the keepalive's send time plus `timeout_ms`.
    Alive { timeout_ms: u64 },
    /// `410 SessionExpired`: the replicated state says the session ended
    /// (closed, expired, or never created). It cannot come back.
    Ended,
    /// `503 Unavailable`: not confirmed (no leader, no quorum, a lagging
    /// member, a close under way). The session may be alive: retry elsewhere.
    Unavailable(String),
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    timeout_ms: u64,
    deadline: Instant,
}

/// A session whose close this leader has proposed (or must propose again).
#[derive(Debug, Clone, Copy)]
struct Closing {
    timeout_ms: u64,
    /// The proposal failed; the next [`Leases::take_expired`] retries it.
    retry: bool,
}

/// Sessions past their deadline, taken out by [`Leases::take_expired`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    /// The leadership term they were taken in: a failure reported for an
    /// older term is ignored (see [`Leases::close_failed`]).
    pub term: u64,
    pub ids: Vec<SessionId>,
}

/// Session deadlines: plain state, no clock and no locks (every method takes
/// `now`). The leader's copy decides expiry.
///
/// Invariants (see "The session contract" in `docs/ARCHITECTURE.md`):
/// - a session is taken for expiry only when its deadline passed: no touch,
///   and no leadership gain, within its timeout;
/// - [`Leases::leadership_gained`] gives every session, those whose close
///   was under way included, a full timeout from that moment, and starts a
///   new term: what the old term had under way is forgotten.
#[derive(Debug, Default)]
pub struct Leases {
    live: HashMap<SessionId, Lease>,
    closing: HashMap<SessionId, Closing>,
    term: u64,
}

impl Leases {
    /// Leases for `sessions`, each with a full timeout from `now`.
    pub fn rebuild(sessions: &[SessionInfo], now: Instant) -> Leases {
        let mut leases = Leases::default();
        for s in sessions {
            leases.track(s.id, s.timeout_ms, now);
        }
        leases
    }

    /// Starts (or restarts) tracking `id` with a full timeout from `now`.
    pub fn track(&mut self, id: SessionId, timeout_ms: u64, now: Instant) {
        self.closing.remove(&id);
        self.live.insert(
            id,
            Lease {
                timeout_ms,
                deadline: now + Duration::from_millis(timeout_ms),
            },
        );
    }

    /// A keepalive at `now`: moves a live session's deadline a full timeout ahead.
    pub fn touch(&mut self, id: SessionId, now: Instant) -> Touch {
        if self.closing.contains_key(&id) {
            return Touch::Expired;
        }
        let Some(lease) = self.live.get_mut(&id) else {
            return Touch::Unknown;
        };
        if lease.deadline <= now {
            return Touch::Expired;
        }
        lease.deadline = now + Duration::from_millis(lease.timeout_ms);
        Touch::Touched(lease.timeout_ms)
    }

    /// Settles a keepalive that found `touch`, once leadership was confirmed
    /// after the touch and this member has applied up to `applied` (at least
    /// the commit point the confirmation named). `stored` is the session in
    /// that applied state.
    ///
    /// `Ended` only when the applied state has passed the session's creation
    /// (its id is its creating zxid) and no longer holds it: a member that
    /// lags answers `Unavailable`, never `Ended` (problem 7 of issue 9).
    pub fn settle(
        &mut self,
        id: SessionId,
        touch: Touch,
        stored: Option<SessionInfo>,
        applied: Zxid,
        now: Instant,
    ) -> KeepaliveVerdict {
        let Some(info) = stored else {
            if id <= applied.0 {
                // Closed in the replicated state (maybe by an earlier leader).
                self.live.remove(&id);
                return KeepaliveVerdict::Ended;
            }
            return KeepaliveVerdict::Unavailable(format!(
                "session {id} is not applied here yet (applied up to zxid {})",
                applied.0
            ));
        };
        if self.closing.contains_key(&id) {
            return KeepaliveVerdict::Unavailable(format!(
                "session {id} is past its deadline; its close is under way"
            ));
        }
        match touch {
            Touch::Touched(timeout_ms) => KeepaliveVerdict::Alive { timeout_ms },
            Touch::Expired => KeepaliveVerdict::Unavailable(format!(
                "session {id} is past its deadline; its close is under way"
            )),
            Touch::Unknown => {
                // Created through another member and not reconciled yet: a
                // full timeout from now (later than the touch, so safe).
                self.live.entry(id).or_insert(Lease {
                    timeout_ms: info.timeout_ms,
                    deadline: now + Duration::from_millis(info.timeout_ms),
                });
                KeepaliveVerdict::Alive {
                    timeout_ms: info.timeout_ms,
                }
            }
        }
    }

    /// Makes the leases match the store's live sessions: sessions created
    /// through other members start with a full timeout from `now`; closed
    /// ones are forgotten.
    pub fn reconcile(&mut self, live: &[SessionInfo], now: Instant) {
        let ids: HashSet<SessionId> = live.iter().map(|s| s.id).collect();
        self.closing.retain(|id, _| ids.contains(id));
        self.live.retain(|id, _| ids.contains(id));
        for s in live {
            if !self.closing.contains_key(&s.id) {
                self.live.entry(s.id).or_insert(Lease {
                    timeout_ms: s.timeout_ms,
                    deadline: now + Duration::from_millis(s.timeout_ms),
                });
            }
        }
    }

    /// This member just became leader: a new term; every session, those
    /// whose close an earlier term had under way included, gets a full
    /// timeout from `now` (keepalives may have gone to the old leader).
    pub fn leadership_gained(&mut self, now: Instant) {
        self.term += 1;
        for (id, c) in self.closing.drain() {
            self.live.insert(
                id,
                Lease {
                    timeout_ms: c.timeout_ms,
                    deadline: now,
                },
            );
        }
        for lease in self.live.values_mut() {
            lease.deadline = now + Duration::from_millis(lease.timeout_ms);
        }
    }

    /// Stops tracking `id` (a client closes it); returns its timeout if it
    /// was tracked and live.
    pub fn remove(&mut self, id: SessionId, now: Instant) -> Option<u64> {
        match self.live.remove(&id) {
            Some(l) if l.deadline > now => Some(l.timeout_ms),
            _ => None,
        }
    }

    /// Takes every session past its deadline at `now`, plus those whose
    /// close failed in this term, for a `CloseSession` proposal each.
    pub fn take_expired(&mut self, now: Instant) -> Expiring {
        let expired: Vec<(SessionId, u64)> = self
            .live
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, l)| (*id, l.timeout_ms))
            .collect();
        let mut ids = Vec::with_capacity(expired.len());
        for (id, timeout_ms) in expired {
            self.live.remove(&id);
            self.closing.insert(
                id,
                Closing {
                    timeout_ms,
                    retry: false,
                },
            );
            ids.push(id);
        }
        for (id, c) in self.closing.iter_mut() {
            if c.retry {
                c.retry = false;
                ids.push(*id);
            }
        }
        Expiring {
            term: self.term,
            ids,
        }
    }

    /// The `CloseSession` proposed for `id` in `term` failed. In the same
    /// term the close is retried at the next [`Leases::take_expired`]; the
    /// session stays refused meanwhile. After a leadership change the
    /// report is stale and ignored: [`Leases::leadership_gained`] already
    /// gave the session a full timeout (problem 6 of issue 9: it used to be
    /// tracked again with a deadline of 0, and a later leader expired the
    /// live session at once).
    pub fn close_failed(&mut self, id: SessionId, term: u64) {
        if term != self.term {
            return;
        }
        if let Some(c) = self.closing.get_mut(&id) {
            c.retry = true;
        }
    }

    /// The current leadership term (bumped by every leadership gain).
    pub fn term(&self) -> u64 {
        self.term
    }

    /// True when `id`'s close is under way in this term.
    pub fn is_closing(&self, id: SessionId) -> bool {
        self.closing.contains_key(&id)
    }

    /// Number of sessions tracked as live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when no session is tracked as live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// [`Leases`] behind a mutex, shared by the session API, the expiry task and
/// the replication driver (through [`SessionHooks`]).
#[derive(Debug, Default)]
pub struct SessionTracker {
    leases: Mutex<Leases>,
}

impl SessionTracker {
    /// A tracker holding `sessions`, each with a full timeout from `now`.
    pub fn rebuild(sessions: &[SessionInfo], now: Instant) -> SessionTracker {
        SessionTracker {
            leases: Mutex::new(Leases::rebuild(sessions, now)),
        }
    }

    /// The leases, locked (a poisoned lock is taken over: the state is plain data).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        match self.leases.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Number of sessions tracked as live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is tracked as live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionHooks for SessionTracker {
    fn touch(&self, ids: &[SessionId]) -> Vec<Touch> {
        let now = Instant::now();
        let mut leases = self.lock();
        ids.iter().map(|id| leases.touch(*id, now)).collect()
    }

    fn settle(
        &self,
        id: SessionId,
        touch: Touch,
        stored: Option<SessionInfo>,
        applied: Zxid,
    ) -> KeepaliveVerdict {
        self.lock()
            .settle(id, touch, stored, applied, Instant::now())
    }

    fn leadership_gained(&self) {
        self.lock().leadership_gained(Instant::now());
    }
}

/// Session operations of the API, on top of the write path and the tracker.
///
/// In a cluster only the leader's tracker counts: it expires sessions and
/// settles every keepalive (followers relay theirs through the driver and
/// answer with the leader's verdict).
pub struct Sessions {
    tracker: Arc<SessionTracker>,
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    metrics: Arc<Metrics>,
    min_timeout_ms: u64,
    max_timeout_ms: u64,
}

impl Sessions {
    /// Sessions over `proposer` and `tracker` (rebuilt from the store).
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

    /// Number of live sessions tracked (by the leader or standalone member).
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
                if self.proposer.is_leader() {
                    self.tracker.lock().track(id, timeout_ms, Instant::now());
                }
                tracing::debug!(session = id, timeout_ms, "session created");
                Ok((id, timeout_ms))
            }
            other => Err(unexpected_outcome("CreateSession", &other)),
        }
    }

    /// Keeps a session alive; returns its timeout. Ended: 410. Not
    /// confirmed by a leader with a quorum: 503 (see the module docs).
    pub async fn keepalive(&self, id: SessionId) -> Result<u64, ApiError> {
        if self.proposer.failed() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "this member failed; try another member",
            ));
        }
        let verdict = match self.proposer.keepalive(id) {
            Some(confirmed) => confirmed.await,
            None => {
                // Standalone: this member owns the leases and has applied
                // everything it committed, so its store is the whole truth.
                let touch = self.tracker.lock().touch(id, Instant::now());
                let stored = self.store.session(id).map_err(ApiError::from)?;
                self.tracker
                    .lock()
                    .settle(id, touch, stored, Zxid(u64::MAX), Instant::now())
            }
        };
        match verdict {
            KeepaliveVerdict::Alive { timeout_ms } => Ok(timeout_ms),
            KeepaliveVerdict::Ended => Err(session_expired(id)),
            KeepaliveVerdict::Unavailable(why) => Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("keepalive for session {id} not confirmed: {why}"),
            )),
        }
    }

    /// Closes a session (deleting its ephemerals). Unknown or expired: 410.
    pub async fn close(&self, id: SessionId) -> Result<(), ApiError> {
        let leader = self.proposer.is_leader();
        let removed = if leader {
            self.tracker.lock().remove(id, Instant::now())
        } else {
            None
        };
        // The replicated outcome decides: an unknown session is SessionExpired.
        match self.propose_close(id).await {
            Ok(Ok(deleted)) => {
                tracing::debug!(session = id, ephemerals = deleted.len(), "session closed");
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => {
                // Not closed (or fate unknown): it lives on with a full
                // timeout; the client may close it again.
                if let Some(timeout_ms) = removed {
                    self.tracker.lock().track(id, timeout_ms, Instant::now());
                }
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
        let live = self.store.sessions();
        let expiring = {
            let mut leases = self.tracker.lock();
            match live {
                Ok(live) => leases.reconcile(&live, Instant::now()),
                Err(e) => tracing::warn!(error = %e, "cannot read sessions to reconcile"),
            }
            leases.take_expired(Instant::now())
        };
        let mut closed = 0;
        for id in expiring.ids {
            if self.tracker.lock().term() != expiring.term {
                // Leadership changed meanwhile: the new term re-tracked it.
                break;
            }
            match self.propose_close(id).await {
                Ok(_) => {
                    tracing::info!(session = id, "session expired");
                    self.metrics.sessions_expired.inc();
                    closed += 1;
                }
                Err(e) => {
                    tracing::warn!(session = id, error = %e, "could not expire session; retrying");
                    self.tracker.lock().close_failed(id, expiring.term);
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn info(id: SessionId, timeout_ms: u64) -> SessionInfo {
        SessionInfo { id, timeout_ms }
    }

    #[test]
    fn leases_expire_only_sessions_without_keepalives() {
        let t0 = Instant::now();
        let mut l = Leases::rebuild(&[info(1, 100), info(2, 100)], t0);
        assert_eq!(l.touch(1, t0 + ms(80)), Touch::Touched(100));
        assert!(l.take_expired(t0 + ms(50)).ids.is_empty());
        assert_eq!(l.take_expired(t0 + ms(120)).ids, vec![2]);
        // Being closed: a keepalive finds it expired, close finds nothing live.
        assert_eq!(l.touch(2, t0 + ms(121)), Touch::Expired);
        assert_eq!(l.remove(2, t0 + ms(121)), None);
        // Session 1 was refreshed at 80 and lives until 180.
        assert_eq!(l.touch(1, t0 + ms(170)), Touch::Touched(100));
        assert_eq!(l.take_expired(t0 + ms(280)).ids, vec![1]);
        assert!(l.is_empty());
    }

    #[test]
    fn keepalive_after_deadline_is_refused_even_before_the_tick() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        l.track(5, 100, t0);
        assert_eq!(l.touch(5, t0 + ms(100)), Touch::Expired);
        assert_eq!(l.remove(5, t0 + ms(100)), None);
    }

    /// Problem 6 of issue 9: a failed expiry proposal used to track the
    /// session again with a deadline of 0, so a member that later became
    /// leader expired the live session at once.
    #[test]
    fn problem_6_failed_expiry_then_new_term_gives_a_full_timeout() {
        let t0 = Instant::now();
        let mut l = Leases::rebuild(&[info(7, 1_000)], t0);
        let expiring = l.take_expired(t0 + ms(1_000));
        assert_eq!(expiring.ids, vec![7]);
        // The close proposal fails: leadership was lost meanwhile.
        l.close_failed(7, expiring.term);
        // Much later this member leads again.
        let t1 = t0 + ms(5_000);
        l.leadership_gained(t1);
        assert_eq!(l.touch(7, t1 + ms(10)), Touch::Touched(1_000));
        assert!(l.take_expired(t1 + ms(999)).ids.is_empty());
        // Without keepalives it expires a full timeout after the last touch.
        assert_eq!(l.take_expired(t1 + ms(1_010)).ids, vec![7]);
    }

    #[test]
    fn problem_6_failure_reported_after_a_new_term_is_ignored() {
        let t0 = Instant::now();
        let mut l = Leases::rebuild(&[info(7, 1_000)], t0);
        let expiring = l.take_expired(t0 + ms(1_000));
        // Leadership is lost and regained before the failure is reported.
        let t1 = t0 + ms(3_000);
        l.leadership_gained(t1);
        l.close_failed(7, expiring.term);
        assert!(l.take_expired(t1 + ms(999)).ids.is_empty());
        assert_eq!(l.touch(7, t1 + ms(500)), Touch::Touched(1_000));
    }

    #[test]
    fn failed_expiry_is_retried_in_the_same_term_and_stays_refused() {
        let t0 = Instant::now();
        let mut l = Leases::rebuild(&[info(7, 100)], t0);
        let expiring = l.take_expired(t0 + ms(100));
        l.close_failed(7, expiring.term);
        assert_eq!(l.touch(7, t0 + ms(101)), Touch::Expired);
        assert_eq!(l.take_expired(t0 + ms(102)).ids, vec![7]);
        // Retried once per failure, not on every tick.
        assert!(l.take_expired(t0 + ms(103)).ids.is_empty());
    }

    #[test]
    fn a_new_leader_gives_every_session_a_full_timeout_from_takeover() {
        let t0 = Instant::now();
        let mut l = Leases::rebuild(&[info(1, 100), info(2, 300)], t0);
        // Long after every deadline, this member becomes leader.
        let t1 = t0 + ms(10_000);
        l.leadership_gained(t1);
        assert!(l.take_expired(t1 + ms(99)).ids.is_empty());
        assert_eq!(l.take_expired(t1 + ms(100)).ids, vec![1]);
        assert!(l.take_expired(t1 + ms(299)).ids.is_empty());
        assert_eq!(l.take_expired(t1 + ms(300)).ids, vec![2]);
    }

    /// Problem 7 of issue 9: a lagging member answered 410 for a live
    /// session. `Ended` needs an applied state past the session's creation
    /// that no longer holds it.
    #[test]
    fn problem_7_a_lagging_member_never_says_ended_for_a_session_it_has_not_applied() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        let id = Zxid::new(3, 10).0;
        // Not applied yet (a restarted member, a new leader whose applier lags).
        let v = l.settle(id, Touch::Unknown, None, Zxid::new(3, 9), t0);
        assert!(matches!(v, KeepaliveVerdict::Unavailable(_)), "{v:?}");
        // Applied past its creation and gone: it ended.
        assert_eq!(
            l.settle(id, Touch::Unknown, None, Zxid::new(3, 11), t0),
            KeepaliveVerdict::Ended
        );
        // Applied and present: alive with a full timeout, now tracked.
        assert_eq!(
            l.settle(
                id,
                Touch::Unknown,
                Some(info(id, 500)),
                Zxid::new(3, 11),
                t0
            ),
            KeepaliveVerdict::Alive { timeout_ms: 500 }
        );
        assert_eq!(l.touch(id, t0 + ms(400)), Touch::Touched(500));
    }

    #[test]
    fn problem_7_a_session_closed_by_an_earlier_leader_is_not_kept_alive_from_stale_leases() {
        let t0 = Instant::now();
        // This member's leases still hold session 9 (closed under another leader).
        let mut l = Leases::rebuild(&[info(9, 1_000)], t0);
        l.leadership_gained(t0);
        let touch = l.touch(9, t0 + ms(1));
        assert_eq!(touch, Touch::Touched(1_000));
        // Once applied up to the confirmed commit point, the store says gone.
        assert_eq!(
            l.settle(9, touch, None, Zxid(100), t0 + ms(2)),
            KeepaliveVerdict::Ended
        );
        assert!(l.is_empty());
    }

    #[test]
    fn a_session_past_its_deadline_or_being_closed_is_unavailable_not_alive() {
        let t0 = Instant::now();
        let mut l = Leases::rebuild(&[info(4, 100)], t0);
        let touch = l.touch(4, t0 + ms(150));
        assert_eq!(touch, Touch::Expired);
        let v = l.settle(4, touch, Some(info(4, 100)), Zxid(10), t0 + ms(151));
        assert!(matches!(v, KeepaliveVerdict::Unavailable(_)), "{v:?}");
        // Touched before the expiry tick took it: still refused once closing.
        let mut l = Leases::rebuild(&[info(4, 100)], t0);
        let touch = l.touch(4, t0 + ms(50));
        let _ = l.take_expired(t0 + ms(500));
        let v = l.settle(4, touch, Some(info(4, 100)), Zxid(10), t0 + ms(501));
        assert!(matches!(v, KeepaliveVerdict::Unavailable(_)), "{v:?}");
    }

    #[test]
    fn reconcile_adds_new_sessions_and_forgets_closed_ones_but_not_closing_ones() {
        let t0 = Instant::now();
        let mut l = Leases::rebuild(&[info(1, 100), info(2, 100)], t0);
        let _ = l.take_expired(t0 + ms(100));
        l.track(3, 100, t0 + ms(100));
        // 1 closed, 2 still in the store (its close not applied), 4 new.
        l.reconcile(&[info(2, 100), info(3, 100), info(4, 100)], t0 + ms(110));
        assert!(l.is_closing(2));
        assert!(!l.is_closing(1));
        assert_eq!(l.touch(2, t0 + ms(111)), Touch::Expired);
        assert_eq!(l.touch(4, t0 + ms(111)), Touch::Touched(100));
        assert_eq!(l.touch(1, t0 + ms(111)), Touch::Unknown);
        // Closed in the store: forgotten.
        l.reconcile(&[info(3, 100), info(4, 100)], t0 + ms(120));
        assert!(!l.is_closing(2));
        assert_eq!(l.touch(2, t0 + ms(121)), Touch::Unknown);
    }
}
