//! One persistent HTTP/1.1 connection to one member, and the errors a request can meet.
//!
//! Data flow: the runner opens a [`Connection`] per client (TCP with `TCP_NODELAY`, then a
//! bare `hyper` HTTP/1.1 handshake, no pool), sends one request at a time on it and gets back
//! only the status: the response body is drained, never parsed, to keep the generator's CPU
//! per request small.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::error::BenchError;

/// A member to connect to: its resolved address and the Host header to send.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` as configured.
    pub authority: String,
    /// The address connections go to (the first one the name resolved to).
    pub addr: SocketAddr,
    /// `Host:` header value (the authority).
    pub host: HeaderValue,
}

impl Endpoint {
    /// Resolves `authority` (`host:port`) once, before the run.
    pub async fn resolve(authority: &str) -> Result<Self, BenchError> {
        let resolve_error = |reason: String| BenchError::Resolve {
            endpoint: authority.to_string(),
            reason,
        };
        let addr = tokio::net::lookup_host(authority)
            .await
            .map_err(|e| resolve_error(e.to_string()))?
            .next()
            .ok_or_else(|| resolve_error("no addresses".into()))?;
        let host = HeaderValue::from_str(authority).map_err(|e| resolve_error(e.to_string()))?;
        Ok(Self {
            authority: authority.to_string(),
            addr,
            host,
        })
    }
}

/// Why a request got no answer (an answer with an unexpected status is not a
/// `RequestError`: the runner counts it by status).
#[derive(Debug)]
pub enum RequestError {
    /// The TCP connect or the HTTP handshake failed or timed out.
    Connect(String),
    /// The connection broke while sending or receiving.
    Io(String),
    /// No complete answer within the per-request timeout.
    Timeout,
}

impl RequestError {
    /// Short, stable name used as the error kind in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::Connect(_) => "connect",
            RequestError::Io(_) => "io",
            RequestError::Timeout => "timeout",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Connect(detail) => write!(f, "connect failed: {detail}"),
            RequestError::Io(detail) => write!(f, "connection error: {detail}"),
            RequestError::Timeout => write!(f, "request timed out"),
        }
    }
}

/// One open HTTP/1.1 connection. Requests go one at a time (closed loop); dropping the
/// connection closes it.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Connection {
    /// Connects to `endpoint` within `connect_timeout`.
    pub async fn open(
        endpoint: &Endpoint,
        connect_timeout: Duration,
    ) -> Result<Self, RequestError> {
        let connect = async {
            let stream = TcpStream::connect(endpoint.addr)
                .await
                .map_err(|e| RequestError::Connect(e.to_string()))?;
            stream
                .set_nodelay(true)
                .map_err(|e| RequestError::Connect(e.to_string()))?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| RequestError::Connect(e.to_string()))?;
            // The connection future does the actual reading and writing; it ends when the
            // sender is dropped or the peer closes.
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Self { sender, driver })
        };
        match tokio::time::timeout(connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::Connect(format!(
                "no connection to {} within {connect_timeout:?}",
                endpoint.authority
            ))),
        }
    }

    /// Sends `request`, waits for the whole response and returns its status. The body is
    /// read to the end (so the connection can be reused) and dropped.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<StatusCode, RequestError> {
        self.sender
            .ready()
            .await
            .map_err(|e| RequestError::Io(e.to_string()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| RequestError::Io(e.to_string()))?;
        let status = response.status();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| RequestError::Io(e.to_string()))?;
        }
        Ok(status)
    }

    /// [`Connection::send`] bounded by `timeout`.
    pub async fn send_within(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<StatusCode, RequestError> {
        tokio::time::timeout(timeout, self.send(request))
            .await
            .unwrap_or(Err(RequestError::Timeout))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
