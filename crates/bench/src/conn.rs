//! One persistent HTTP/1.1 connection to one member, and the errors a request can meet.
//!
//! Data flow: the runner opens a [`Connection`] per client (TCP with `TCP_NODELAY`, no
//! pool), sends one HTTP/1.1 request at a time on it and gets back only the status: the
//! response body is drained, never parsed, to keep the generator's CPU per request small.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
///
/// The client is a plain one on purpose: it writes the request and reads the response on
/// the calling task, with one buffer each, where a `hyper` client connection moves every
/// request through a second task. On a machine whose cores the generator shares with the
/// members it measures, the generator's CPU per request is taken from the members.
pub struct Connection {
    stream: TcpStream,
    addr: SocketAddr,
    out: Vec<u8>,
    input: Vec<u8>,
    /// The server answered `Connection: close`: the next request reconnects.
    closed: bool,
}

/// Most bytes of response head (status line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Most response headers parsed.
const MAX_HEADERS: usize = 32;

impl Connection {
    /// Connects to `endpoint` within `connect_timeout`.
    pub async fn open(
        endpoint: &Endpoint,
        connect_timeout: Duration,
    ) -> Result<Self, RequestError> {
        match tokio::time::timeout(connect_timeout, connect(endpoint.addr)).await {
            Ok(result) => Ok(Self {
                stream: result?,
                addr: endpoint.addr,
                out: Vec::with_capacity(1024),
                input: Vec::with_capacity(8192),
                closed: false,
            }),
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
        self.exchange(request, None).await
    }

    /// [`Connection::send`] that also returns the body (content-length
    /// bodies; a chunked body comes back empty), bounded by `timeout`.
    pub async fn send_reading_within(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), RequestError> {
        let mut body = Vec::new();
        let status = tokio::time::timeout(timeout, self.exchange(request, Some(&mut body)))
            .await
            .unwrap_or(Err(RequestError::Timeout))?;
        Ok((status, Bytes::from(body)))
    }

    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
        keep_body: Option<&mut Vec<u8>>,
    ) -> Result<StatusCode, RequestError> {
        if self.closed {
            self.stream = connect(self.addr).await?;
            self.closed = false;
            self.input.clear();
        }
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        encode_request(&mut self.out, &parts, &body);
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| RequestError::Io(e.to_string()))?;
        self.read_response(keep_body).await
    }

    async fn read_response(
        &mut self,
        keep_body: Option<&mut Vec<u8>>,
    ) -> Result<StatusCode, RequestError> {
        let head = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.input) {
                Ok(httparse::Status::Complete(len)) => {
                    break ResponseHead::from_parsed(&response, len)?;
                }
                Ok(httparse::Status::Partial) if self.input.len() < MAX_HEAD_BYTES => {}
                Ok(httparse::Status::Partial) => {
                    return Err(RequestError::Io("response head too long".into()))
                }
                Err(e) => return Err(RequestError::Io(format!("bad response: {e}"))),
            }
            self.fill().await?;
        };
        self.input.drain(..head.len);
        if head.chunked {
            self.skip_chunked().await?;
        } else {
            while self.input.len() < head.content_length {
                self.fill().await?;
            }
            let body = self.input.drain(..head.content_length);
            if let Some(keep) = keep_body {
                keep.extend(body);
            }
        }
        self.closed = head.close;
        Ok(head.status)
    }

    /// Reads a chunked body to its end (trailers included) and drops it.
    async fn skip_chunked(&mut self) -> Result<(), RequestError> {
        loop {
            let line_end = loop {
                if let Some(i) = self.input.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if self.input.len() > MAX_HEAD_BYTES {
                    return Err(RequestError::Io("chunk size line too long".into()));
                }
                self.fill().await?;
            };
            let line = std::str::from_utf8(&self.input[..line_end])
                .map_err(|_| RequestError::Io("bad chunk size".into()))?;
            let hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| RequestError::Io(format!("bad chunk size {hex:?}")))?;
            self.input.drain(..line_end + 2);
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    if let Some(i) = self.input.windows(2).position(|w| w == b"\r\n") {
                        self.input.drain(..i + 2);
                        if i == 0 {
                            return Ok(());
                        }
                        continue;
                    }
                    self.fill().await?;
                }
            }
            while self.input.len() < size + 2 {
                self.fill().await?;
            }
            self.input.drain(..size + 2);
        }
    }

    /// Reads more bytes into the input buffer; the peer closing is an error.
    async fn fill(&mut self) -> Result<(), RequestError> {
        let n = self
            .stream
            .read_buf(&mut self.input)
            .await
            .map_err(|e| RequestError::Io(e.to_string()))?;
        if n == 0 {
            return Err(RequestError::Io("connection closed by the server".into()));
        }
        Ok(())
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

async fn connect(addr: SocketAddr) -> Result<TcpStream, RequestError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| RequestError::Connect(e.to_string()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| RequestError::Connect(e.to_string()))?;
    Ok(stream)
}

/// Writes `parts` and `body` as one HTTP/1.1 request into `out` (cleared first).
fn encode_request(out: &mut Vec<u8>, parts: &hyper::http::request::Parts, body: &[u8]) {
    use std::io::Write;
    out.clear();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let _ = write!(out, "{} {target} HTTP/1.1\r\n", parts.method);
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || !matches!(parts.method, hyper::Method::GET | hyper::Method::HEAD) {
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// What the runner needs from a response head.
struct ResponseHead {
    status: StatusCode,
    len: usize,
    content_length: usize,
    chunked: bool,
    close: bool,
}

impl ResponseHead {
    fn from_parsed(
        response: &httparse::Response<'_, '_>,
        len: usize,
    ) -> Result<Self, RequestError> {
        let status = response
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| RequestError::Io("response without a status".into()))?;
        let mut head = ResponseHead {
            status,
            len,
            content_length: 0,
            chunked: false,
            close: response.version == Some(0),
        };
        for header in response.headers.iter() {
            let value = std::str::from_utf8(header.value).unwrap_or("").trim();
            if header.name.eq_ignore_ascii_case("content-length") {
                head.content_length = value
                    .parse()
                    .map_err(|_| RequestError::Io(format!("bad content-length {value:?}")))?;
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.to_ascii_lowercase().ends_with("chunked");
            } else if header.name.eq_ignore_ascii_case("connection") {
                head.close = value.eq_ignore_ascii_case("close");
            }
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves two requests on one connection: the first answered with a chunked body
    /// written in pieces, the second with a content-length body split across writes.
    async fn serve_in_pieces() -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let answers: [&[&[u8]]; 2] = [
                &[
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
                    b"\r\n5\r\nhel",
                    b"lo\r\n3;ext=1\r\nabc\r\n0\r\nx-trailer: 1\r\n",
                    b"\r\n",
                ],
                &[
                    b"HTTP/1.1 409 Conflict\r\ncontent-len",
                    b"gth: 4\r\n\r\nab",
                    b"cd",
                ],
            ];
            for pieces in answers {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    request.extend_from_slice(&buf[..n]);
                }
                for piece in pieces {
                    stream.write_all(piece).await.unwrap();
                    stream.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Endpoint::resolve(&addr).await.unwrap()
    }

    #[tokio::test]
    async fn responses_split_across_reads_chunked_or_not_are_read_whole() {
        let endpoint = serve_in_pieces().await;
        let mut conn = Connection::open(&endpoint, Duration::from_secs(5))
            .await
            .unwrap();
        let get = Request::get("/v1/nodes/a")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let status = conn.send_within(get, Duration::from_secs(5)).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let put = Request::put("/v1/nodes/a")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let status = conn.send_within(put, Duration::from_secs(5)).await.unwrap();
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(conn.input.is_empty(), "the whole body was consumed");
    }

    #[test]
    fn requests_carry_their_length_and_headers() {
        let (parts, ()) = Request::put("/v1/nodes/a?x=1")
            .header("host", "h:1")
            .body(())
            .unwrap()
            .into_parts();
        let mut out = Vec::new();
        encode_request(&mut out, &parts, b"{}");
        assert_eq!(
            out,
            b"PUT /v1/nodes/a?x=1 HTTP/1.1\r\nhost: h:1\r\ncontent-length: 2\r\n\r\n{}"
        );
    }
}
