//! [`Session`]: a server session kept alive by a background task.
//!
//! Data flow: [`crate::Client::session`] creates the session
//! (`POST /v1/sessions`) and starts one tokio task that sends
//! `POST /v1/sessions/{id}/keepalive` every `timeout / 3`. The task publishes
//! the session's [`SessionState`] on a `watch` channel. It stops when the
//! handle is closed or dropped, or when the session is lost.
//!
//! When is a session lost? When the server answers `SessionExpired`, or when
//! no keepalive has been acknowledged for a whole timeout (counted from the
//! moment the last acknowledged keepalive was *sent*). In the second case the
//! server may not have expired it yet, but nothing held through it (an
//! ephemeral node, a lock) can be relied on any more.

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

/// A live session. Keepalives run in the background until [`Session::close`],
/// drop, or expiry. Dropping the handle only stops the keepalives: the server
/// expires the session after its timeout. Call [`Session::close`] to end it
/// (and delete its ephemeral nodes) at once.
#[derive(Debug)]
pub struct Session {
    client: Client,
    info: SessionInfo,
    state: watch::Receiver<SessionState>,
    /// Dropping (or sending on) this stops the keepalive task.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Session {
    /// Starts keepalives for an existing session. Must run inside a tokio runtime.
    pub fn start(client: Client, info: SessionInfo) -> Session {
        let (state_tx, state_rx) = watch::channel(SessionState::Alive);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(keepalive_loop(client.clone(), info, state_tx, stop_rx));
        Session {
            client,
            info,
            state: state_rx,
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

async fn keepalive_loop(
    client: Client,
    info: SessionInfo,
    state: watch::Sender<SessionState>,
    mut stop: oneshot::Receiver<()>,
) {
    let timeout = Duration::from_millis(info.timeout_ms);
    let interval = (timeout / KEEPALIVES_PER_TIMEOUT).max(MIN_KEEPALIVE_PAUSE);
    let retry_pause = (interval / KEEPALIVE_RETRIES_PER_INTERVAL).max(MIN_KEEPALIVE_PAUSE);
    // Conservative: the server's clock started no later than now.
    let mut acked_at = Instant::now();
    let mut pause = interval;
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tokio::time::sleep(pause) => {}
        }
        let deadline = acked_at + timeout;
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(
                session = info.id,
                "no keepalive acknowledged within the timeout"
            );
            let _ = state.send(SessionState::Expired);
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
                let _ = state.send(SessionState::Expired);
                return;
            }
            Ok(Err(err)) => {
                tracing::debug!(session = info.id, %err, "keepalive failed; retrying");
                pause = retry_pause;
            }
            Err(_) => {
                // The deadline passed mid-call; the check at the loop top reports it.
                pause = Duration::ZERO;
            }
        }
    }
    let _ = state.send_if_modified(|s| {
        if *s == SessionState::Alive {
            *s = SessionState::Closed;
            true
        } else {
            false
        }
    });
}
