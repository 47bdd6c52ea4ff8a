//! Watches: event streams that resume on another member without a gap or a
//! duplicate ([`Client::watch`]), and ZooKeeper-style one-shot watches armed
//! at the zxid of a read ([`Client::get_and_watch`], [`Client::children_and_watch`]).
//!
//! A stream reads the server's SSE messages (`GET /v1/events/...`). A
//! message with an `id:` completes its zxid: the stream remembers it as the
//! resume point. When the connection drops, goes quiet for
//! [`WatchOptions::idle_timeout`], or the server cuts it off, the stream
//! reconnects — to the next member — with `from_zxid` = the resume point
//! and `X-Keeper-Min-Zxid` = the same, and drops the events of a
//! half-received zxid that the server sends again. Only `410 Compacted` and
//! other definite refusals end it with an error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use reqwest::Method;
use serde::Deserialize;

use crate::client::{encode_path, Client};
use crate::error::{Error, ErrorCode, Result};
use crate::transport::{describe, response_zxid, Call, Safety, Transport, MIN_ZXID_HEADER};
use crate::types::{DataWire, Node, Stat};

/// What happened, as a watch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Created,
    Deleted,
    DataChanged,
    ChildrenChanged,
    /// Every matching change up to `zxid` has been delivered (streams with
    /// [`WatchOptions::progress`] only).
    Progress,
}

impl EventType {
    fn parse(name: &str) -> Option<EventType> {
        Some(match name {
            "created" => EventType::Created,
            "deleted" => EventType::Deleted,
            "data_changed" => EventType::DataChanged,
            "children_changed" => EventType::ChildrenChanged,
            "progress" => EventType::Progress,
            _ => return None,
        })
    }

    /// The wire name (`created`, `data_changed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "created",
            EventType::Deleted => "deleted",
            EventType::DataChanged => "data_changed",
            EventType::ChildrenChanged => "children_changed",
            EventType::Progress => "progress",
        }
    }
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventType,
    pub zxid: u64,
    /// The changed node (empty for `Progress`).
    pub path: String,
    /// The node's stat after the change (the parent's for `ChildrenChanged`);
    /// streams send it with [`WatchOptions::with_data`], one-shot watches always.
    pub stat: Option<Stat>,
    /// The node's data after a `Created` or `DataChanged` ([`WatchOptions::with_data`]).
    pub data: Option<Bytes>,
}

/// How [`Client::watch`] watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// The whole subtree; otherwise the node and its direct children.
    pub recursive: bool,
    /// Start with every change after this zxid (from the server's history).
    pub from_zxid: Option<u64>,
    /// Each change carries the node's stat and data after it.
    pub with_data: bool,
    /// Also yield `Progress` events.
    pub progress: bool,
    /// A connection silent for this long is taken for dead (the server
    /// sends progress events every second by default).
    pub idle_timeout: Duration,
    /// Failed connection attempts in a row (across members) before the
    /// stream gives up with the last error.
    pub max_reconnects: u32,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            recursive: false,
            from_zxid: None,
            with_data: false,
            progress: false,
            idle_timeout: Duration::from_secs(10),
            max_reconnects: 30,
        }
    }
}

impl WatchOptions {
    /// The whole subtree.
    pub fn recursive() -> WatchOptions {
        WatchOptions {
            recursive: true,
            ..WatchOptions::default()
        }
    }

    /// Starts after `zxid`.
    pub fn from_zxid(mut self, zxid: u64) -> WatchOptions {
        self.from_zxid = Some(zxid);
        self
    }
}

/// What a one-shot watch waits for (ZooKeeper's watch kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    /// `DataChanged` or `Deleted` of the node (getData).
    Data,
    /// `ChildrenChanged` or `Deleted` of the node (getChildren).
    Children,
    /// `Created`, `DataChanged` or `Deleted` of the node (exists).
    Exists,
}

impl WatchKind {
    fn as_str(self) -> &'static str {
        match self {
            WatchKind::Data => "data",
            WatchKind::Children => "children",
            WatchKind::Exists => "exists",
        }
    }
}

/// The wire form of an event.
#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    zxid: u64,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    stat: Option<Stat>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    data_b64: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

impl WireEvent {
    fn into_event(self) -> Result<WatchEvent> {
        let kind = EventType::parse(&self.kind)
            .ok_or_else(|| Error::decode(format!("unknown watch event type {:?}", self.kind)))?;
        let data = match (self.data, self.data_b64) {
            (None, None) => None,
            (data, b64) => Some(DataWire::decode(data, b64).map_err(Error::decode)?),
        };
        Ok(WatchEvent {
            kind,
            zxid: self.zxid,
            path: self.path.unwrap_or_default(),
            stat: self.stat,
            data,
        })
    }
}

#[derive(Debug, Deserialize)]
struct WatchAnswer {
    event: Option<WireEvent>,
}

/// A one-shot watch armed at a zxid: [`OneShotWatch::wait`] gives the first
/// matching change after it, even one made before `wait` was called.
#[derive(Debug, Clone)]
pub struct OneShotWatch {
    client: Client,
    path: String,
    kind: WatchKind,
    after_zxid: u64,
}

impl OneShotWatch {
    /// The zxid the watch is armed at.
    pub fn after_zxid(&self) -> u64 {
        self.after_zxid
    }

    /// Waits (long polls, failing over like a read) until the watch fires.
    pub async fn wait(&self) -> Result<WatchEvent> {
        loop {
            if let Some(event) = self.poll(None).await? {
                return Ok(event);
            }
        }
    }

    /// Waits at most `timeout`; `None` if nothing fired.
    pub async fn wait_for(&self, timeout: Duration) -> Result<Option<WatchEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if let Some(event) = self.poll(Some(left)).await? {
                return Ok(Some(event));
            }
        }
    }

    /// One long poll, shorter than the client's request timeout.
    async fn poll(&self, at_most: Option<Duration>) -> Result<Option<WatchEvent>> {
        let request_timeout = self.client.config().request_timeout;
        let mut wait = request_timeout
            .saturating_sub(Duration::from_secs(1))
            .max(request_timeout / 2);
        if let Some(at_most) = at_most {
            wait = wait.min(at_most);
        }
        let target = format!(
            "/v1/watch{}?kind={}&wait_ms={}&after_zxid={}",
            encode_path(&self.path)?,
            self.kind.as_str(),
            wait.as_millis(),
            self.after_zxid
        );
        let call = Call {
            method: Method::GET,
            target,
            body: None,
            safety: Safety::Idempotent,
            send_min_zxid: true,
            timeout: None,
        };
        let answer = self.client.transport.execute(&call).await?;
        let parsed: WatchAnswer = serde_json::from_slice(&answer.body)
            .map_err(|e| Error::decode(format!("watch answer: {e}")))?;
        parsed.event.map(WireEvent::into_event).transpose()
    }
}

impl Client {
    /// Reads a node and arms a data watch at the zxid of that read: the
    /// watch fires for the first `DataChanged` or `Deleted` after the state
    /// returned, however late [`OneShotWatch::wait`] is called.
    pub async fn get_and_watch(&self, path: &str) -> Result<(Node, OneShotWatch)> {
        let target = format!("/v1/nodes{}", encode_path(path)?);
        let call = Call {
            method: Method::GET,
            target,
            body: None,
            safety: Safety::Idempotent,
            send_min_zxid: true,
            timeout: None,
        };
        let answer = self.transport.execute(&call).await?;
        let node: Node = serde_json::from_slice(&answer.body)
            .map_err(|e| Error::decode(format!("node: {e}")))?;
        let watch = self.one_shot(
            path,
            WatchKind::Data,
            answer.zxid.unwrap_or(node.stat.mzxid),
        );
        Ok((node, watch))
    }

    /// Lists all children of `path` and arms a children watch at the zxid
    /// of the first page read: it fires for the first `ChildrenChanged` or
    /// `Deleted` after that state.
    pub async fn children_and_watch(&self, path: &str) -> Result<(Vec<String>, OneShotWatch)> {
        // Arm before listing: a change between pages fires the watch rather
        // than being missed.
        let before = self.sync_zxid(path).await?;
        let children = self.all_children(path).await?;
        Ok((children, self.one_shot(path, WatchKind::Children, before)))
    }

    /// A one-shot watch of `kind` on `path` armed at `after_zxid`.
    pub fn one_shot(&self, path: &str, kind: WatchKind, after_zxid: u64) -> OneShotWatch {
        OneShotWatch {
            client: self.clone(),
            path: path.to_string(),
            kind,
            after_zxid,
        }
    }

    /// The zxid of a fresh read of `path`'s stat (at least the client's floor).
    async fn sync_zxid(&self, path: &str) -> Result<u64> {
        let target = format!("/v1/nodes{}?encoding=base64", encode_path(path)?);
        let call = Call {
            method: Method::GET,
            target,
            body: None,
            safety: Safety::Idempotent,
            send_min_zxid: true,
            timeout: None,
        };
        let answer = self.transport.execute(&call).await?;
        Ok(answer.zxid.unwrap_or_else(|| self.last_zxid()))
    }

    /// A stream of the changes at `path` (and its children, or with
    /// `recursive` its subtree), in zxid order, each exactly once, across
    /// connection drops and member failures (see the module docs). Ends with
    /// an error only when the server refuses for good (e.g. `Compacted`:
    /// the resume point is older than any member's history).
    pub fn watch(
        &self,
        path: &str,
        options: WatchOptions,
    ) -> impl Stream<Item = Result<WatchEvent>> + Send + 'static {
        let state = WatchStream {
            transport: self.transport.clone(),
            path: path.to_string(),
            resume: options.from_zxid,
            options,
            partial: None,
            skip: None,
            conn: None,
            endpoint: self.transport.preferred(),
            failures: 0,
            done: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
    }
}

/// One SSE message.
#[derive(Debug, Default)]
pub(crate) struct Message {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// An open SSE response.
struct Conn {
    response: reqwest::Response,
    parser: SseParser,
}

impl Conn {
    /// The next message; `Ok(None)` at the end of the stream.
    async fn next(&mut self) -> std::result::Result<Option<Message>, String> {
        loop {
            if let Some(m) = self.parser.ready.pop_front() {
                return Ok(Some(m));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.parser.feed(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => return Err(describe(&e)),
            }
        }
    }
}

/// Server-sent events from bytes: complete messages in `ready`.
#[derive(Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    pub ready: VecDeque<Message>,
    current: Message,
}

impl SseParser {
    /// Takes more bytes; moves every complete line into messages.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let mut line = &self.buf[start..start + nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start += nl + 1;
            if line.is_empty() {
                let m = std::mem::take(&mut self.current);
                if !m.data.is_empty() || !m.event.is_empty() {
                    self.ready.push_back(m);
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment (keep-alive)
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.current.event = value,
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(&value);
                }
                "id" => self.current.id = Some(value),
                _ => {}
            }
        }
        self.buf.drain(..start);
    }
}

/// Why a connection attempt failed.
enum ConnectError {
    /// Another member (or a later attempt) may do better.
    Retry(Error),
    /// The server refused for good.
    Fatal(Error),
}

struct WatchStream {
    transport: Arc<Transport>,
    path: String,
    options: WatchOptions,
    /// Every matching change up to here has been yielded.
    resume: Option<u64>,
    /// Changes of a zxid whose last change has not arrived yet: (zxid, count).
    partial: Option<(u64, usize)>,
    /// After a reconnect: drop this many re-sent changes of this zxid.
    skip: Option<(u64, usize)>,
    conn: Option<Conn>,
    endpoint: usize,
    failures: u32,
    done: bool,
}

impl WatchStream {
    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if self.done {
                return None;
            }
            if self.conn.is_none() {
                match self.connect().await {
                    Ok(conn) => self.conn = Some(conn),
                    Err(ConnectError::Fatal(e)) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    Err(ConnectError::Retry(e)) => {
                        self.failures += 1;
                        if self.failures > self.options.max_reconnects {
                            self.done = true;
                            return Some(Err(e));
                        }
                        tracing::debug!(error = %e, "watch: reconnecting");
                        self.endpoint += 1;
                        let passes = self.failures / self.transport.endpoints().len() as u32;
                        let config = self.transport.config();
                        let pause = config
                            .backoff_initial
                            .saturating_mul(1 << passes.min(10))
                            .min(config.backoff_max);
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            let message = match tokio::time::timeout(self.options.idle_timeout, conn.next()).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    self.drop_connection();
                    continue;
                }
            };
            match self.handle(message) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Forgets the connection; the next one resumes at `resume` and skips
    /// what it already yielded of a half-received zxid.
    fn drop_connection(&mut self) {
        self.conn = None;
        self.skip = self.partial.take();
        self.endpoint += 1;
    }

    /// One message: the event to yield, if any.
    fn handle(&mut self, message: Message) -> Result<Option<WatchEvent>> {
        let wire: WireEvent = serde_json::from_str(&message.data)
            .map_err(|e| Error::decode(format!("watch event {:?}: {e}", message.data)))?;
        match wire.kind.as_str() {
            "progress" => {
                self.failures = 0;
                self.resume = Some(self.resume.unwrap_or(0).max(wire.zxid));
                if self.options.progress {
                    return wire.into_event().map(Some);
                }
                Ok(None)
            }
            "cut_off" => {
                tracing::debug!(zxid = wire.zxid, reason = ?wire.reason, "watch: cut off; resuming");
                self.resume = Some(self.resume.unwrap_or(0).max(wire.zxid));
                self.partial = None;
                self.drop_connection();
                Ok(None)
            }
            _ => {
                let has_id = message.id.is_some();
                let event = wire.into_event()?;
                self.failures = 0;
                if let Some((zxid, left)) = self.skip {
                    if zxid == event.zxid && left > 0 {
                        self.skip = Some((zxid, left - 1));
                        if left == 1 {
                            self.skip = None;
                        }
                        // Sent again after a reconnect; yielded before.
                        self.partial = Some((zxid, self.partial.map_or(0, |p| p.1) + 1));
                        if has_id {
                            self.resume = Some(zxid);
                            self.partial = None;
                        }
                        return Ok(None);
                    }
                    self.skip = None;
                }
                if has_id {
                    self.resume = Some(event.zxid);
                    self.partial = None;
                } else {
                    let count = match self.partial {
                        Some((zxid, n)) if zxid == event.zxid => n + 1,
                        _ => 1,
                    };
                    self.partial = Some((event.zxid, count));
                }
                Ok(Some(event))
            }
        }
    }

    async fn connect(&mut self) -> std::result::Result<Conn, ConnectError> {
        let endpoints = self.transport.endpoints();
        let endpoint = &endpoints[self.endpoint % endpoints.len()];
        let path = encode_path(&self.path).map_err(ConnectError::Fatal)?;
        let mut url = format!(
            "{endpoint}/v1/events{path}?recursive={}&with_data={}",
            self.options.recursive, self.options.with_data
        );
        if let Some(from) = self.resume {
            url.push_str(&format!("&from_zxid={from}"));
        }
        // The member must have applied what the stream resumes from (a
        // fresh stream: what this client has seen), or it answers 504.
        let floor = self.resume.unwrap_or_else(|| self.transport.last_zxid());
        let response = self
            .transport
            .stream_http()
            .get(&url)
            .header(MIN_ZXID_HEADER, floor.to_string())
            .send()
            .await
            .map_err(|e| {
                ConnectError::Retry(Error::Transport {
                    message: format!("{url}: {}", describe(&e)),
                })
            })?;
        if let Some(zxid) = response_zxid(&response) {
            self.transport.observe_zxid(zxid);
        }
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(Conn {
                response,
                parser: SseParser::default(),
            });
        }
        let body = response.bytes().await.unwrap_or_default();
        let err = Error::from_response(status, &body);
        match err.code() {
            Some(ErrorCode::Compacted) => Err(ConnectError::Fatal(err)),
            Some(ErrorCode::Unavailable | ErrorCode::Timeout) => Err(ConnectError::Retry(err)),
            None if status >= 500 => Err(ConnectError::Retry(err)),
            _ => Err(ConnectError::Fatal(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_splits_messages_across_chunks() {
        let mut parser = SseParser::default();
        for chunk in [
            &b"event: progress\ndata: {\"type\":\"progress\",\"zxid\":3}\nid: 3\n\n: keep"[..],
            &b"-alive\n\nevent: created\r\ndata: {\"a\":"[..],
            &b"1}\n\n"[..],
        ] {
            parser.feed(chunk);
        }
        let got: Vec<(String, String, Option<String>)> = parser
            .ready
            .drain(..)
            .map(|m| (m.event, m.data, m.id))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "progress".to_string(),
                    "{\"type\":\"progress\",\"zxid\":3}".to_string(),
                    Some("3".to_string())
                ),
                ("created".to_string(), "{\"a\":1}".to_string(), None),
            ]
        );
    }
}
