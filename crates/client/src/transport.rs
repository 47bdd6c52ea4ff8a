//! One HTTP call to the ensemble, with failover: endpoint choice, bounded
//! retries with backoff, the retry-safety rule, and the zxid floor.
//!
//! Data flow: `client` describes a call ([`Call`]); [`Transport::execute`]
//! sends it to the preferred member, moves to the next member on a connect
//! error, or (reads only) on a lost answer, `503`, `504` or another 5xx, and hands
//! back the first 2xx body or the mapped [`Error`].
//!
//! Retry safety: a connect error proves the request reached no server, so
//! anything may be retried. Once a write has been sent, a lost answer means
//! its outcome is unknown: the call fails with [`Error::ConnectionLoss`].
//!
//! Consistency: every response's `X-Keeper-Zxid` raises the client's floor;
//! every request (but keepalives and health probes) carries it as
//! `X-Keeper-Min-Zxid`, so a member that lags
//! behind what this client has seen waits (or answers 504) instead of serving
//! older state.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use reqwest::Method;

use crate::config::ClientConfig;
use crate::error::{Error, ErrorCode, Result};

/// Response header: the answering member's last applied zxid.
pub const ZXID_HEADER: &str = "x-keeper-zxid";
/// Request header: the zxid the member must have applied before answering.
pub const MIN_ZXID_HEADER: &str = "x-keeper-min-zxid";

/// Whether repeating a call after its answer was lost is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Reads, keepalives, sync: repeat freely.
    Idempotent,
    /// Writes: repeat only if it provably reached no server.
    Write,
}

/// One logical call.
pub(crate) struct Call {
    pub method: Method,
    /// Path and query, e.g. `/v1/nodes/a?version=3`.
    pub target: String,
    pub body: Option<Vec<u8>>,
    pub safety: Safety,
    /// Send `X-Keeper-Min-Zxid` (everything but keepalives and health probes).
    pub send_min_zxid: bool,
    /// A per-attempt timeout instead of the config's (a long server-side
    /// wait: a lock acquire, a campaign).
    pub timeout: Option<std::time::Duration>,
}

/// A 2xx answer.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// The answering member's `X-Keeper-Zxid`: the state the answer reflects.
    pub zxid: Option<u64>,
}

/// Shared by all clones of a client.
pub(crate) struct Transport {
    http: reqwest::Client,
    /// For event streams: no overall timeout (a stream lives until dropped).
    stream_http: reqwest::Client,
    endpoints: Vec<String>,
    config: ClientConfig,
    /// Index of the member to try first.
    preferred: AtomicUsize,
    /// Highest `X-Keeper-Zxid` seen.
    last_zxid: AtomicU64,
}

/// Why one attempt failed, for the final error.
enum Failure {
    /// Reached no server.
    NotSent(String),
    /// Sent; answer lost.
    Lost(String),
    /// The server answered 503/504: another member may do better.
    Answered(Error),
    /// An answer that settles the call (any other error).
    Final(Error),
}

impl Transport {
    pub fn new(config: ClientConfig) -> Result<Transport> {
        let endpoints = config.validate()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| Error::config(format!("http client: {e}")))?;
        let stream_http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| Error::config(format!("http client: {e}")))?;
        Ok(Transport {
            http,
            stream_http,
            endpoints,
            config,
            preferred: AtomicUsize::new(0),
            last_zxid: AtomicU64::new(0),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn last_zxid(&self) -> u64 {
        self.last_zxid.load(Ordering::Acquire)
    }

    pub fn observe_zxid(&self, zxid: u64) {
        self.last_zxid.fetch_max(zxid, Ordering::AcqRel);
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The HTTP client for long-lived event streams.
    pub fn stream_http(&self) -> &reqwest::Client {
        &self.stream_http
    }

    /// The index of the member tried first.
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Acquire) % self.endpoints.len()
    }

    /// After a failure at `idx`, prefer the next member (unless another call
    /// already moved on).
    fn demote(&self, idx: usize) {
        let next = (idx + 1) % self.endpoints.len();
        let _ = self
            .preferred
            .compare_exchange(idx, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Sends `call` with failover; see the module docs for the rules.
    pub async fn execute(&self, call: &Call) -> Result<Answer> {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Acquire) % n;
        let mut backoff = self.config.backoff_initial;
        // The last failure per endpoint, in endpoint order.
        let mut failures: Vec<Option<String>> = vec![None; n];
        let mut last_answer: Option<Error> = None;
        for attempt in 0..self.config.max_attempts as usize {
            if attempt > 0 && attempt % n == 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
            let idx = (start + attempt) % n;
            let endpoint = &self.endpoints[idx];
            match self.attempt(endpoint, call).await {
                Ok(answer) => {
                    self.preferred.store(idx, Ordering::Release);
                    return Ok(answer);
                }
                Err(Failure::NotSent(why)) => {
                    tracing::debug!(endpoint, target = %call.target, %why, "not sent; failing over");
                    self.demote(idx);
                    failures[idx] = Some(format!("{endpoint}: {why}"));
                }
                Err(Failure::Lost(why)) => {
                    self.demote(idx);
                    if call.safety == Safety::Write {
                        return Err(Error::ConnectionLoss {
                            message: format!(
                                "{} {} via {endpoint}: {why}",
                                call.method, call.target
                            ),
                        });
                    }
                    tracing::debug!(endpoint, target = %call.target, %why, "answer lost; retrying read");
                    failures[idx] = Some(format!("{endpoint}: {why}"));
                }
                Err(Failure::Final(err)) => {
                    if matches!(
                        err.code(),
                        Some(ErrorCode::Unavailable | ErrorCode::Timeout)
                    ) {
                        // Not retried (a write), but the next call should go elsewhere.
                        self.demote(idx);
                    }
                    return Err(err);
                }
                Err(Failure::Answered(err)) => {
                    tracing::debug!(endpoint, target = %call.target, %err, "member refused; failing over");
                    self.demote(idx);
                    failures[idx] = Some(format!("{endpoint}: {err}"));
                    last_answer = Some(err);
                }
            }
        }
        match last_answer {
            Some(err) => Err(err),
            None => Err(Error::Transport {
                message: format!(
                    "{} {}: no member answered after {} attempts: {}",
                    call.method,
                    call.target,
                    self.config.max_attempts,
                    failures
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }),
        }
    }

    /// One attempt at one member: a 2xx answer, or why not.
    async fn attempt(&self, endpoint: &str, call: &Call) -> Result<Answer, Failure> {
        let mut request = self
            .http
            .request(call.method.clone(), format!("{endpoint}{}", call.target));
        if call.send_min_zxid {
            request = request.header(MIN_ZXID_HEADER, self.last_zxid().to_string());
        }
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        if let Some(body) = &call.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Err(Failure::NotSent(describe(&e))),
            Err(e) if e.is_builder() => {
                return Err(Failure::Final(Error::config(describe(&e))));
            }
            Err(e) => return Err(Failure::Lost(describe(&e))),
        };
        let zxid = response_zxid(&response);
        if let Some(zxid) = zxid {
            self.observe_zxid(zxid);
        }
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::Lost(format!("reading body: {}", describe(&e))))?;
        if (200..300).contains(&status) {
            return Ok(Answer { status, body, zxid });
        }
        let err = Error::from_response(status, &body);
        let retry = match err.code() {
            Some(ErrorCode::Unavailable) => {
                call.safety == Safety::Idempotent || self.config.retry_writes_on_unavailable
            }
            // The member could not catch up to our floor (or a quorum timed
            // out): another member may serve a read; a write's fate is unknown.
            Some(ErrorCode::Timeout) => call.safety == Safety::Idempotent,
            // A broken member (e.g. the server's `Internal`, 500): another may serve a read.
            None => call.safety == Safety::Idempotent && status >= 500,
            Some(_) => false,
        };
        if retry {
            Err(Failure::Answered(err))
        } else {
            Err(Failure::Final(err))
        }
    }
}

/// The `X-Keeper-Zxid` of a response, if present and numeric.
pub(crate) fn response_zxid(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(ZXID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Error text from its source chain (reqwest's top-level message only repeats
/// the URL); the top-level message when there are no sources.
pub(crate) fn describe(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = err.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}
