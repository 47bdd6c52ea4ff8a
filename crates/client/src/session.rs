//! [`Session`]: a server session kept alive by a background task.
//!
//! Data flow: [`crate::Client::session`] creates the session
//! (`POST /v1/sessions`) and starts one tokio task that sends
//! `POST /v1/sessions/{id}/keepalive` every `timeout / 3`. The task publishes
//! the session's [`SessionState`] on a `watch` channel. It stops when the
//! handle is closed or dropped, or when the session is lost.
//!
//! When is a session lost? When the server answers `SessionExpired` (the
//! replicated state says it ended), or when no keepalive has been
//! acknowledged for a whole timeout, counted from the moment the last
//! acknowledged keepalive was *sent*. The server's session contract
//! (`docs/ARCHITECTURE.md`) promises that a keepalive sent at `t` and
//! acknowledged keeps the session alive until at least `t + timeout`, so the
//! second case is reported no later than the servers could expire the
//! session: nothing held through it (an ephemeral node, a lock) is relied on
//! after the ensemble may have handed it to someone else.
//!
//! A member that cannot confirm a keepalive (no leader, cut off from the
//! quorum, lagging) answers `503 Unavailable`; the transport then tries the
//! next member, and the session is kept alive through any member that can.
//!
//! The loss is an event the caller cannot miss: [`Session::lost`] resolves
//! with a [`SessionLoss`] (when, and why), and the state on
//! [`Session::subscribe`] turns [`SessionState::Expired`] at that moment and
//! stays there.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::SessionInfo;

/// Keepalives per session timeout.
pub const KEEPALIVES_PER_TIMEOUT: u32 = 3;
/// Retries of a failed keepalive per keepalive interval.
pub const KEEPALIVE_RETRIES_PER_INTERVAL: u32 = 4;
/// Shortest pause between keepalive attempts.
pub const MIN_KEEPALIVE_PAUSE: Duration = Duration::from_millis(10);

/// Where a [`Session`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Keepalives are being acknowledged.
    Alive,
    /// The session is lost (see the module docs); it cannot come back.
    Expired,
    /// The handle was closed or dropped; keepalives stopped.
    Closed,
}

/// Why a session was counted lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// A member answered `SessionExpired`: the replicated state says it ended.
    Expired,
    /// No keepalive sent within the last timeout was acknowledged.
    NotAcknowledged,
    /// The keepalive task stopped unexpectedly (it panicked): assume the worst.
    TaskStopped,
}

/// When and why a session was counted lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLoss {
    /// For [`LossReason::NotAcknowledged`]: the send time of the last
    /// acknowledged keepalive plus the timeout, the earliest moment the
    /// servers may expire the session. Otherwise when the loss was seen.
    pub at: Instant,
    pub reason: LossReason,
}

/// A live session. Keepalives run in the background until [`Session::close`],
/// drop, or expiry. Dropping the handle only stops the keepalives: the server
/// expires the session after its timeout. Call [`Session::close`] to end it
/// (and delete its ephemeral nodes) at once.
#[derive(Debug)]
pub struct Session {
    client: Client,
    info: SessionInfo,
    state: watch::Receiver<SessionState>,
    loss: watch::Receiver<Option<SessionLoss>>,
    /// Dropping (or sending on) this stops the keepalive task.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Session {
    /// Starts keepalives for an existing session. Must run inside a tokio runtime.
    pub fn start(client: Client, info: SessionInfo) -> Session {
        let (state_tx, state_rx) = watch::channel(SessionState::Alive);
        let (loss_tx, loss_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let report = Report {
            state: state_tx,
            loss: loss_tx,
        };
        let task = tokio::spawn(keepalive_loop(client.clone(), info, report, stop_rx));
        Session {
            client,
            info,
            state: state_rx,
            loss: loss_rx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// The session id (use it as the `session` of ephemeral creates).
    pub fn id(&self) -> u64 {
        self.info.id
    }

    /// The timeout the server granted.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.info.timeout_ms)
    }

    /// Id and timeout as the server reported them.
    pub fn info(&self) -> SessionInfo {
        self.info
    }

    /// The client the session runs on.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        *self.state.borrow()
    }

    /// True once the session is lost.
    pub fn is_expired(&self) -> bool {
        self.state() == SessionState::Expired
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// Resolves when the session stops being alive, with the new state.
    pub async fn expired(&self) -> SessionState {
        let mut rx = self.state.clone();
        let result = match rx.wait_for(|s| *s != SessionState::Alive).await {
            Ok(state) => *state,
            // The task is gone without saying why: assume the worst.
            Err(_) => SessionState::Expired,
        };
        result
    }

    /// Resolves when the session is lost, with when and why; it never
    /// resolves for a session that stays alive. The moment is also kept:
    /// calling this after the loss resolves at once.
    pub async fn lost(&self) -> SessionLoss {
        let mut rx = self.loss.clone();
        let seen = match rx.wait_for(Option::is_some).await {
            Ok(loss) => *loss,
            Err(_) => None,
        };
        seen.unwrap_or(SessionLoss {
            at: Instant::now(),
            reason: LossReason::TaskStopped,
        })
    }

    /// The loss, once it happened.
    pub fn loss(&self) -> Option<SessionLoss> {
        *self.loss.borrow()
    }

    /// Stops the keepalives and closes the session on the server, deleting
    /// its ephemeral nodes. [`Error::SessionExpired`] if it was already gone.
    pub async fn close(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.client.close_session(self.info.id).await
    }
}

/// Where the keepalive task publishes what happened.
struct Report {
    state: watch::Sender<SessionState>,
    loss: watch::Sender<Option<SessionLoss>>,
}

impl Report {
    fn lost(&self, at: Instant, reason: LossReason) {
        // The loss first: whoever sees `Expired` can read it at once.
        let _ = self.loss.send(Some(SessionLoss { at, reason }));
        let _ = self.state.send(SessionState::Expired);
    }
}

async fn keepalive_loop(
    client: Client,
    info: SessionInfo,
    report: Report,
    mut stop: oneshot::Receiver<()>,
) {
    let timeout = Duration::from_millis(info.timeout_ms);
    let interval = (timeout / KEEPALIVES_PER_TIMEOUT).max(MIN_KEEPALIVE_PAUSE);
    let retry_pause = (interval / KEEPALIVE_RETRIES_PER_INTERVAL).max(MIN_KEEPALIVE_PAUSE);
    // Conservative: the server's clock started no later than now.
    let mut acked_at = Instant::now();
    let mut pause = interval;
    loop {
        let deadline = acked_at + timeout;
        // Wake at the deadline at the latest, so the loss is reported on time.
        let wake = (Instant::now() + pause).min(deadline);
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(
                session = info.id,
                "no keepalive acknowledged within the timeout"
            );
            report.lost(deadline, LossReason::NotAcknowledged);
            return;
        }
        let sent_at = now;
        let outcome = tokio::select! {
            biased;
            _ = &mut stop => break,
            r = tokio::time::timeout(deadline - now, client.keepalive(info.id)) => r,
        };
        match outcome {
            Ok(Ok(_)) => {
                acked_at = sent_at;
                pause = interval;
            }
            Ok(Err(Error::SessionExpired(detail))) => {
                tracing::warn!(session = info.id, %detail, "session expired");
                report.lost(Instant::now(), LossReason::Expired);
                return;
            }
            Ok(Err(err)) => {
                // 503 from every member tried, or no member reachable.
                tracing::debug!(session = info.id, %err, "keepalive failed; retrying");
                pause = retry_pause;
            }
            Err(_) => {
                // The deadline passed mid-call; the check at the loop top reports it.
                pause = Duration::ZERO;
            }
        }
    }
    let _ = report.state.send_if_modified(|s| {
        if *s == SessionState::Alive {
            *s = SessionState::Closed;
            true
        } else {
            false
        }
    });
}
