//! The session contract of `docs/ARCHITECTURE.md`, judged on the history
//! the simulator reports (times in simulated milliseconds):
//!
//! - **KeepaliveAckHonoured**: a keepalive sent at `s` and answered alive
//!   with timeout `T` means no leader expires the session before `s + T`.
//! - **FullTimeoutOnLeaderChange**: a leader expires no session before its
//!   own establishment plus the session's timeout.
//! - **NoExpiryWithinTimeoutOfCreation**: nor before the session's creation
//!   (its first application anywhere) plus its timeout.
//! - **EndedOnlyWhenEnded**: `410` only for a session whose close has been
//!   applied somewhere (the replicated state says it ended).
//!
//! An expiry counts once its `CloseSession` is applied (first anywhere)
//! and closed the session; it is judged at its decision time, the moment
//! the leader took it out of its leases.

use super::Violation;
use keeper_store::SessionId;
use std::collections::HashMap;

/// The checker's state.
#[derive(Debug, Default)]
pub struct SessionContract {
    /// Latest `s + T` over every keepalive answered alive.
    promised_ms: HashMap<SessionId, u64>,
    /// Created: first application anywhere, and the timeout.
    created: HashMap<SessionId, (u64, u64)>,
    /// Closed in the applied state (first anywhere): at, and the expiry
    /// decision time if an expiry closed it.
    ended: HashMap<SessionId, (u64, Option<u64>)>,
}

impl SessionContract {
    /// A `CreateSession` with `timeout_ms` was first applied at `at_ms`.
    pub fn on_created(&mut self, id: SessionId, timeout_ms: u64, at_ms: u64) {
        self.created.entry(id).or_insert((at_ms, timeout_ms));
    }

    /// A keepalive sent at `sent_ms` was answered alive with `timeout_ms`.
    pub fn on_alive(
        &mut self,
        id: SessionId,
        sent_ms: u64,
        timeout_ms: u64,
    ) -> Result<(), Violation> {
        let until = sent_ms + timeout_ms;
        let p = self.promised_ms.entry(id).or_insert(0);
        *p = (*p).max(until);
        if let Some((at, decided)) = self.ended.get(&id) {
            let when = decided.unwrap_or(*at);
            if when < until {
                return Err(Violation::new(
                    "KeepaliveAckHonoured",
                    format!(
                        "session {id}: a keepalive sent at {sent_ms} ms was answered alive (timeout {timeout_ms} ms) but the session was closed, decided at {when} ms"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A keepalive was answered `410` at `at_ms`.
    pub fn on_ended_answer(&mut self, id: SessionId, at_ms: u64) -> Result<(), Violation> {
        match self.ended.get(&id) {
            Some((closed, _)) if *closed <= at_ms => Ok(()),
            _ => Err(Violation::new(
                "EndedOnlyWhenEnded",
                format!(
                    "session {id} answered 410 at {at_ms} ms but no member has applied its close"
                ),
            )),
        }
    }

    /// A `CloseSession` closed `id`, first applied at `at_ms`. `expiry` is
    /// `Some((decided_ms, leader_established_ms))` when a leader's expiry
    /// proposed it.
    pub fn on_closed(
        &mut self,
        id: SessionId,
        at_ms: u64,
        expiry: Option<(u64, u64)>,
    ) -> Result<(), Violation> {
        if self.ended.contains_key(&id) {
            return Ok(());
        }
        self.ended.insert(id, (at_ms, expiry.map(|e| e.0)));
        let Some((decided, established)) = expiry else {
            return Ok(());
        };
        if let Some(&until) = self.promised_ms.get(&id) {
            if decided < until {
                return Err(Violation::new(
                    "KeepaliveAckHonoured",
                    format!("session {id} expired by a decision at {decided} ms, but a keepalive was answered alive until {until} ms"),
                ));
            }
        }
        if let Some(&(created, timeout)) = self.created.get(&id) {
            if decided < created + timeout {
                return Err(Violation::new(
                    "NoExpiryWithinTimeoutOfCreation",
                    format!("session {id} created at {created} ms with timeout {timeout} ms expired by a decision at {decided} ms"),
                ));
            }
            if decided < established + timeout {
                return Err(Violation::new(
                    "FullTimeoutOnLeaderChange",
                    format!("session {id} (timeout {timeout} ms) expired at {decided} ms by a leader established at {established} ms"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_an_expiry_before_an_acknowledged_keepalive_runs_out() {
        let mut c = SessionContract::default();
        c.on_created(7, 1000, 0);
        c.on_alive(7, 500, 1000).unwrap();
        let v = c.on_closed(7, 1600, Some((1400, 0))).unwrap_err();
        assert_eq!(v.invariant, "KeepaliveAckHonoured");
        let mut c = SessionContract::default();
        c.on_created(7, 1000, 0);
        c.on_alive(7, 500, 1000).unwrap();
        c.on_closed(7, 1600, Some((1500, 0))).unwrap();
    }

    #[test]
    fn rejects_an_alive_answer_for_a_session_already_expired_within_it() {
        let mut c = SessionContract::default();
        c.on_created(7, 1000, 0);
        c.on_closed(7, 1100, Some((1000, 0))).unwrap();
        let v = c.on_alive(7, 900, 1000).unwrap_err();
        assert_eq!(v.invariant, "KeepaliveAckHonoured");
    }

    #[test]
    fn rejects_expiry_sooner_than_a_full_timeout_after_creation_or_a_new_leader() {
        let mut c = SessionContract::default();
        c.on_created(7, 1000, 100);
        let v = c.on_closed(7, 1200, Some((1050, 0))).unwrap_err();
        assert_eq!(v.invariant, "NoExpiryWithinTimeoutOfCreation");
        let mut c = SessionContract::default();
        c.on_created(7, 1000, 100);
        let v = c.on_closed(7, 3000, Some((2900, 2000))).unwrap_err();
        assert_eq!(v.invariant, "FullTimeoutOnLeaderChange");
    }

    #[test]
    fn rejects_410_for_a_session_whose_close_nobody_applied() {
        let mut c = SessionContract::default();
        c.on_created(7, 1000, 0);
        assert_eq!(
            c.on_ended_answer(7, 50).unwrap_err().invariant,
            "EndedOnlyWhenEnded"
        );
        c.on_closed(7, 60, None).unwrap();
        assert!(c.on_ended_answer(7, 50).is_err());
        c.on_ended_answer(7, 60).unwrap();
    }
}
