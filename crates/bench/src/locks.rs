//! The lock recipe under load: `--op lock` and `--op handoff`.
//!
//! Data flow: each client opens a session (`POST /v1/sessions`), keeps it alive on a
//! second connection, then loops until the deadline: acquire
//! (`POST /v1/locks/{name}/acquire`), release (`DELETE /v1/locks/{name}/{key}`).
//! - `lock`: client `i` uses lock `bench-{run}-{i}` (never contended); one sample per
//!   acquire+release, from the acquire's send to the release's answer.
//! - `handoff`: every client uses lock `bench-{run}-handoff`. A holder notes when it
//!   sends its release ([`Shared`]); the next grant's answer is one sample: release
//!   sent → grant answered. One lock has one holder at a time, so the last release
//!   noted before a grant is the one that let it through.
//!
//! The session is closed at the end (deleting anything left).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::time::Instant;

use crate::conn::{Connection, Endpoint, RequestError};
use crate::report::ClientStats;
use crate::runner::{status_kind, ClientConfig, Window};
use crate::workload::{build_request, parse_uri, OpKind};

/// Session timeout of a bench client's session.
const SESSION_TIMEOUT_MS: u64 = 30_000;
/// Keepalives per session timeout.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);
/// Longest server-side wait of one acquire.
const ACQUIRE_WAIT_MS: u64 = 10_000;

/// What the clients of one run share.
#[derive(Debug)]
pub struct Shared {
    run: u64,
    /// When the last release of the hand-off lock was sent.
    last_release: Mutex<Option<Instant>>,
}

impl Shared {
    /// For run `run` (lock names of two runs never collide).
    pub fn new(run: u64) -> Shared {
        Shared {
            run,
            last_release: Mutex::new(None),
        }
    }

    fn lock_name(&self, op: OpKind, client: usize) -> String {
        match op {
            OpKind::Handoff => format!("bench-{:x}-handoff", self.run),
            _ => format!("bench-{:x}-{client}", self.run),
        }
    }

    fn note_release(&self) {
        *self.last_release.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn last_release(&self) -> Option<Instant> {
        *self.last_release.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The value of `"field":<number>` or `"field":"<text>"` in a small JSON body.
fn json_field(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match &value[field] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One request on `conn` with its body; errors by kind.
async fn call(
    conn: &mut Connection,
    endpoint: &Endpoint,
    method: Method,
    target: String,
    body: Bytes,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let uri = parse_uri(target)?;
    let request = build_request(method, uri, body, &endpoint.host);
    conn.send_reading_within(request, timeout)
        .await
        .map_err(|e: RequestError| e.kind().to_string())
}

/// Keeps `session` alive on its own connection until `deadline`.
async fn keepalive(endpoint: Endpoint, config: ClientConfig, session: u64, deadline: Instant) {
    let mut conn: Option<Connection> = None;
    while Instant::now() < deadline {
        tokio::time::sleep(KEEPALIVE_EVERY.min(deadline - Instant::now())).await;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(&endpoint, config.connect_timeout).await {
                Ok(c) => conn.insert(c),
                Err(_) => continue,
            },
        };
        let target = format!("/v1/sessions/{session}/keepalive");
        if call(
            c,
            &endpoint,
            Method::POST,
            target,
            Bytes::new(),
            config.request_timeout,
        )
        .await
        .is_err()
        {
            conn = None;
        }
    }
}

/// One lock client (see the module docs).
pub async fn client_loop(
    config: ClientConfig,
    endpoint: Endpoint,
    op: OpKind,
    shared: std::sync::Arc<Shared>,
    window: Window,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut conn: Option<Connection> = None;
    let mut session: Option<u64> = None;
    let name = shared.lock_name(op, config.id);
    let timeout = config
        .request_timeout
        .max(Duration::from_millis(ACQUIRE_WAIT_MS + 5_000));
    let mut alive = None;
    while Instant::now() < window.deadline {
        let measuring = Instant::now() >= window.measure_from;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(&endpoint, config.connect_timeout).await {
                Ok(c) => conn.insert(c),
                Err(error) => {
                    if measuring {
                        stats.error(error.kind());
                    }
                    tokio::time::sleep(config.reconnect_backoff).await;
                    continue;
                }
            },
        };
        let Some(id) = session else {
            let body = Bytes::from(format!(r#"{{"timeout_ms":{SESSION_TIMEOUT_MS}}}"#));
            match call(
                c,
                &endpoint,
                Method::POST,
                "/v1/sessions".into(),
                body,
                timeout,
            )
            .await
            {
                Ok((StatusCode::CREATED, body)) => {
                    let id = json_field(&body, "id").and_then(|v| v.parse().ok());
                    session = id;
                    if let Some(id) = id {
                        alive = Some(tokio::spawn(keepalive(
                            endpoint.clone(),
                            config,
                            id,
                            window.deadline,
                        )));
                    }
                }
                Ok((status, _)) => {
                    stats.error(&status_kind(status));
                    tokio::time::sleep(config.reconnect_backoff).await;
                }
                Err(kind) => {
                    stats.error(&kind);
                    conn = None;
                }
            }
            continue;
        };
        let started = Instant::now();
        let body = Bytes::from(format!(r#"{{"session":{id},"wait_ms":{ACQUIRE_WAIT_MS}}}"#));
        let target = format!("/v1/locks/{name}/acquire");
        let key = match call(c, &endpoint, Method::POST, target, body, timeout).await {
            Ok((StatusCode::OK, body)) => json_field(&body, "key"),
            Ok((status, _)) => {
                if started >= window.measure_from {
                    stats.error(&status_kind(status));
                }
                None
            }
            Err(kind) => {
                if started >= window.measure_from {
                    stats.error(&kind);
                }
                conn = None;
                None
            }
        };
        let Some(key) = key else {
            continue;
        };
        let granted = Instant::now();
        if op == OpKind::Handoff && started >= window.measure_from && granted <= window.deadline {
            if let Some(released) = shared.last_release() {
                stats.record(OpKind::Handoff, granted.saturating_duration_since(released));
            }
        }
        if op == OpKind::Handoff {
            shared.note_release();
        }
        let target = format!("/v1/locks/{name}/{key}");
        let Some(c) = conn.as_mut() else {
            continue;
        };
        match call(c, &endpoint, Method::DELETE, target, Bytes::new(), timeout).await {
            Ok((StatusCode::NO_CONTENT, _)) => {
                let finished = Instant::now();
                if op == OpKind::Lock
                    && started >= window.measure_from
                    && finished <= window.deadline
                {
                    stats.record(OpKind::Lock, finished - started);
                }
            }
            Ok((status, _)) => {
                if started >= window.measure_from {
                    stats.error(&status_kind(status));
                }
            }
            Err(kind) => {
                if started >= window.measure_from {
                    stats.error(&kind);
                }
                conn = None;
            }
        }
    }
    if let Some(task) = alive {
        task.abort();
    }
    if let (Some(id), Some(c)) = (session, conn.as_mut()) {
        let target = format!("/v1/sessions/{id}");
        let _ = call(c, &endpoint, Method::DELETE, target, Bytes::new(), timeout).await;
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_json_answers() {
        assert_eq!(
            json_field(br#"{"key":"0000000003","fencing_token":7}"#, "key").as_deref(),
            Some("0000000003")
        );
        assert_eq!(
            json_field(br#"{"id":42,"timeout_ms":1}"#, "id").as_deref(),
            Some("42")
        );
        assert_eq!(json_field(b"not json", "id"), None);
    }

    #[test]
    fn handoff_clients_share_one_lock_and_lock_clients_do_not() {
        let shared = Shared::new(0xab);
        assert_eq!(
            shared.lock_name(OpKind::Handoff, 1),
            shared.lock_name(OpKind::Handoff, 2)
        );
        assert_ne!(
            shared.lock_name(OpKind::Lock, 1),
            shared.lock_name(OpKind::Lock, 2)
        );
    }
}
