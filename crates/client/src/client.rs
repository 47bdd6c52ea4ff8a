//! [`Client`]: one typed method per HTTP API endpoint.
//!
//! Data flow: a method checks its arguments, encodes the body and URL
//! ([`crate::types`]), hands a call to the transport (failover, zxid floor),
//! and decodes the 2xx body into a typed result.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::ClientConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::session::Session;
use crate::transport::{Answer, Call, Safety, Transport};
use crate::types::{
    ChildrenPage, ClusterInfo, CreateBody, CreateOptions, Created, DataWire, Fence,
    FencedTxnRequest, Health, Node, Op, OpResult, SessionBody, SessionInfo, SetAnswer, SetBody,
    Stat, SyncAnswer, TxnRequest, TxnResponse,
};

/// Read consistency of [`Client::get_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Served by the answering member from its applied state, never older
    /// than what this client has already seen (ZooKeeper's guarantee).
    #[default]
    Sequential,
    /// Confirmed with a quorum first: reflects every write committed before the call.
    Linearizable,
}

/// Bound on pages [`Client::all_children`] fetches before giving up.
pub const MAX_CHILDREN_PAGES: usize = 100_000;

/// An async Keeper client. Cheap to clone; clones share connections, the
/// preferred member and the zxid floor.
#[derive(Clone)]
pub struct Client {
    pub(crate) transport: Arc<Transport>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.transport.endpoints())
            .field("last_zxid", &self.transport.last_zxid())
            .finish()
    }
}

impl Client {
    /// Builds a client; fails with [`Error::Config`] on a bad config. Does no I/O.
    pub fn new(config: ClientConfig) -> Result<Client> {
        Ok(Client {
            transport: Arc::new(Transport::new(config)?),
        })
    }

    /// A client with default bounds for a comma-separated endpoint list.
    pub fn from_endpoints(list: &str) -> Result<Client> {
        Client::new(ClientConfig::from_endpoint_list(list))
    }

    /// The normalized endpoint URLs, in failover order.
    pub fn endpoints(&self) -> &[String] {
        self.transport.endpoints()
    }

    /// The highest zxid this client has seen in any answer; every request but
    /// keepalives and health probes asks for at least this much (`X-Keeper-Min-Zxid`).
    pub fn last_zxid(&self) -> u64 {
        self.transport.last_zxid()
    }

    /// Raises the zxid floor, e.g. to carry another client's view over.
    pub fn observe_zxid(&self, zxid: u64) {
        self.transport.observe_zxid(zxid)
    }

    /// The config this client was built with.
    pub fn config(&self) -> &ClientConfig {
        self.transport.config()
    }

    // ---- nodes ---------------------------------------------------------------

    /// Creates `path` with `data`. Returns the actual path (sequential modes
    /// append a suffix) and the new stat. Not retried once sent.
    pub async fn create(
        &self,
        path: &str,
        data: impl Into<Bytes>,
        options: CreateOptions,
    ) -> Result<Created> {
        self.create_guarded(path, data.into(), options, None).await
    }

    /// [`Client::create`] guarded by `fence`: applied only while the fence's
    /// token holds its lock (or its term leads its election), otherwise
    /// [`Error::Fenced`] and nothing changes. Checked by the servers when the
    /// write is applied, so no write of a deposed holder slips in.
    pub async fn create_fenced(
        &self,
        path: &str,
        data: impl Into<Bytes>,
        options: CreateOptions,
        fence: &Fence,
    ) -> Result<Created> {
        self.create_guarded(path, data.into(), options, Some(fence))
            .await
    }

    async fn create_guarded(
        &self,
        path: &str,
        data: Bytes,
        options: CreateOptions,
        fence: Option<&Fence>,
    ) -> Result<Created> {
        let body = CreateBody {
            data: DataWire::encode(&data),
            mode: options.mode,
            session: options.session,
            ttl_ms: options.ttl_ms,
            fence: fence.map(Fence::wire),
        };
        let target = format!("/v1/nodes{}", encode_path(path)?);
        self.json(Method::POST, target, Some(&body), Safety::Write)
            .await
    }

    /// Reads a node (sequential consistency).
    pub async fn get(&self, path: &str) -> Result<Node> {
        self.get_with(path, Consistency::Sequential).await
    }

    /// Reads a node with the given consistency.
    pub async fn get_with(&self, path: &str, consistency: Consistency) -> Result<Node> {
        let mut target = format!("/v1/nodes{}", encode_path(path)?);
        if consistency == Consistency::Linearizable {
            target.push_str("?consistency=linearizable");
        }
        self.json(Method::GET, target, None::<&()>, Safety::Idempotent)
            .await
    }

    /// Replaces a node's data if its version is `version` ([`crate::ANY_VERSION`]:
    /// any). Returns the new stat. Not retried once sent.
    pub async fn set(&self, path: &str, data: impl Into<Bytes>, version: i32) -> Result<Stat> {
        self.set_guarded(path, data.into(), version, None).await
    }

    /// [`Client::set`] guarded by `fence` (see [`Client::create_fenced`]).
    pub async fn set_fenced(
        &self,
        path: &str,
        data: impl Into<Bytes>,
        version: i32,
        fence: &Fence,
    ) -> Result<Stat> {
        self.set_guarded(path, data.into(), version, Some(fence))
            .await
    }

    async fn set_guarded(
        &self,
        path: &str,
        data: Bytes,
        version: i32,
        fence: Option<&Fence>,
    ) -> Result<Stat> {
        let body = SetBody {
            data: DataWire::encode(&data),
            version,
            fence: fence.map(Fence::wire),
        };
        let target = format!("/v1/nodes{}", encode_path(path)?);
        let answer: SetAnswer = self
            .json(Method::PUT, target, Some(&body), Safety::Write)
            .await?;
        Ok(answer.stat)
    }

    /// Deletes a node if its version is `version` ([`crate::ANY_VERSION`]: any).
    /// Not retried once sent.
    pub async fn delete(&self, path: &str, version: i32) -> Result<()> {
        let target = format!("/v1/nodes{}?version={version}", encode_path(path)?);
        self.call(Method::DELETE, target, None, Safety::Write, true)
            .await
            .map(drop)
    }

    /// [`Client::delete`] guarded by `fence` (see [`Client::create_fenced`]).
    pub async fn delete_fenced(&self, path: &str, version: i32, fence: &Fence) -> Result<()> {
        let target = format!(
            "/v1/nodes{}?version={version}&{}",
            encode_path(path)?,
            fence.query()
        );
        self.call(Method::DELETE, target, None, Safety::Write, true)
            .await
            .map(drop)
    }

    /// The node's stat, or `None` if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>> {
        match self.stat(path).await {
            Ok(stat) => Ok(Some(stat)),
            Err(Error::NoNode(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The node's stat; [`Error::NoNode`] if it does not exist.
    pub async fn stat(&self, path: &str) -> Result<Stat> {
        let target = format!("/v1/nodes{}?encoding=base64", encode_path(path)?);
        let node: Node = self
            .json(Method::GET, target, None::<&()>, Safety::Idempotent)
            .await?;
        Ok(node.stat)
    }

    /// One page of children, sorted bytewise: at most `limit` (server default
    /// and cap when `None`), starting after the name `after`.
    pub async fn children(
        &self,
        path: &str,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<ChildrenPage> {
        let mut target = format!("/v1/children{}", encode_path(path)?);
        let mut sep = '?';
        if let Some(limit) = limit {
            target.push_str(&format!("{sep}limit={limit}"));
            sep = '&';
        }
        if let Some(after) = after {
            target.push_str(&format!("{sep}after={}", encode_query_value(after)));
        }
        self.json(Method::GET, target, None::<&()>, Safety::Idempotent)
            .await
    }

    /// All children of `path`, paging through the server's pages. The pages
    /// are read at non-decreasing zxids, so the result is a merge of views
    /// that never goes backwards, not one snapshot; use a txn `check` on the
    /// parent's `cversion` if you need one.
    pub async fn all_children(&self, path: &str) -> Result<Vec<String>> {
        let mut all: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_CHILDREN_PAGES {
            let page = self.children(path, None, after.as_deref()).await?;
            let more = page.more;
            let last = page.children.last().cloned();
            if let (Some(prev), Some(first)) = (after.as_ref(), page.children.first()) {
                if first.as_bytes() <= prev.as_bytes() {
                    return Err(Error::decode(format!(
                        "children page of {path} went backwards ({first:?} after {prev:?})"
                    )));
                }
            }
            all.extend(page.children);
            match (more, last) {
                (false, _) => return Ok(all),
                (true, Some(last)) => after = Some(last),
                (true, None) => {
                    return Err(Error::decode(format!(
                        "children page of {path} is empty but says more follow"
                    )))
                }
            }
        }
        Err(Error::decode(format!(
            "children of {path}: more than {MAX_CHILDREN_PAGES} pages"
        )))
    }

    /// Applies `ops` atomically: all or none. On failure the error names the
    /// failing op in [`crate::ApiError::index`]. Not retried once sent.
    pub async fn multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let body = TxnRequest { ops };
        let answer: TxnResponse = self
            .json(
                Method::POST,
                "/v1/txn".to_string(),
                Some(&body),
                Safety::Write,
            )
            .await?;
        Ok(answer.results)
    }

    /// [`Client::multi`] guarded by `fence` as a whole (see
    /// [`Client::create_fenced`]); a refused fence is [`Error::Fenced`] at op 0.
    pub async fn multi_fenced(&self, ops: Vec<Op>, fence: &Fence) -> Result<Vec<OpResult>> {
        let body = FencedTxnRequest {
            ops,
            fence: fence.wire(),
        };
        let answer: TxnResponse = self
            .json(
                Method::POST,
                "/v1/txn".to_string(),
                Some(&body),
                Safety::Write,
            )
            .await?;
        Ok(answer.results)
    }

    /// Same as [`Client::multi`] (the endpoint's name).
    pub async fn txn(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.multi(ops).await
    }

    /// Linearizable barrier: afterwards the answering member (and so this
    /// client's floor) has every write committed before the call. Returns that zxid.
    pub async fn sync(&self) -> Result<u64> {
        let answer: SyncAnswer = self
            .json(
                Method::POST,
                "/v1/sync".to_string(),
                None::<&()>,
                Safety::Idempotent,
            )
            .await?;
        self.transport.observe_zxid(answer.zxid);
        Ok(answer.zxid)
    }

    // ---- sessions ------------------------------------------------------------

    /// Creates a session and returns it with the server's (clamped) timeout.
    /// Prefer [`Client::session`], which also keeps it alive.
    pub async fn create_session(&self, timeout: Duration) -> Result<SessionInfo> {
        let body = SessionBody {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        self.json(
            Method::POST,
            "/v1/sessions".to_string(),
            Some(&body),
            Safety::Write,
        )
        .await
    }

    /// Resets session `id`'s expiry clock; [`Error::SessionExpired`] if it is gone.
    ///
    /// Carries no `X-Keeper-Min-Zxid`: it reads no tree state, and waiting for
    /// a lagging member to catch up could let the session expire.
    pub async fn keepalive(&self, id: u64) -> Result<SessionInfo> {
        let answer = self
            .call(
                Method::POST,
                format!("/v1/sessions/{id}/keepalive"),
                None,
                Safety::Idempotent,
                false,
            )
            .await?;
        decode(&answer)
    }

    /// Closes session `id`, deleting its ephemeral nodes.
    pub async fn close_session(&self, id: u64) -> Result<()> {
        self.call(
            Method::DELETE,
            format!("/v1/sessions/{id}"),
            None,
            Safety::Write,
            true,
        )
        .await
        .map(drop)
    }

    /// Creates a session and keeps it alive in the background until it is
    /// closed, dropped, or expires. See [`Session`].
    pub async fn session(&self, timeout: Duration) -> Result<Session> {
        let info = self.create_session(timeout).await?;
        Ok(Session::start(self.clone(), info))
    }

    // ---- cluster -------------------------------------------------------------

    /// The answering member's view of the ensemble.
    pub async fn cluster(&self) -> Result<ClusterInfo> {
        self.json(
            Method::GET,
            "/v1/cluster".to_string(),
            None::<&()>,
            Safety::Idempotent,
        )
        .await
    }

    /// `GET /healthz` on the first member that answers.
    pub async fn healthz(&self) -> Result<Health> {
        self.probe("/healthz").await
    }

    /// `GET /readyz` on the first member that is ready; the last
    /// [`Error::Unavailable`] if none is.
    pub async fn readyz(&self) -> Result<Health> {
        self.probe("/readyz").await
    }

    async fn probe(&self, target: &str) -> Result<Health> {
        let answer = self
            .call(
                Method::GET,
                target.to_string(),
                None,
                Safety::Idempotent,
                false,
            )
            .await?;
        decode(&answer)
    }

    // ---- plumbing --------------------------------------------------------------

    async fn json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        target: String,
        body: Option<&B>,
        safety: Safety,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Some(
                serde_json::to_vec(b).map_err(|e| Error::decode(format!("encoding body: {e}")))?,
            ),
            None => None,
        };
        let answer = self.call(method, target, body, safety, true).await?;
        decode(&answer)
    }

    async fn call(
        &self,
        method: Method,
        target: String,
        body: Option<Vec<u8>>,
        safety: Safety,
        send_min_zxid: bool,
    ) -> Result<Answer> {
        let call = Call {
            method,
            target,
            body,
            safety,
            send_min_zxid,
            timeout: None,
        };
        self.transport.execute(&call).await
    }

    /// A JSON call whose server-side wait may last `wait`: the attempt's
    /// timeout is `wait` plus the configured request timeout.
    pub(crate) async fn json_waiting<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        target: String,
        body: Option<&B>,
        wait: Duration,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Some(
                serde_json::to_vec(b).map_err(|e| Error::decode(format!("encoding body: {e}")))?,
            ),
            None => None,
        };
        let call = Call {
            method,
            target,
            body,
            safety: Safety::Write,
            send_min_zxid: true,
            timeout: Some(wait + self.config().request_timeout),
        };
        let answer = self.transport.execute(&call).await?;
        decode(&answer)
    }

    /// A JSON call (crate-internal, for the recipes).
    pub(crate) async fn json_call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        target: String,
        body: Option<&B>,
        safety: Safety,
    ) -> Result<T> {
        self.json(method, target, body, safety).await
    }

    /// A call whose answer has no body to decode (crate-internal).
    pub(crate) async fn empty_call(
        &self,
        method: Method,
        target: String,
        body: Option<Vec<u8>>,
        safety: Safety,
    ) -> Result<()> {
        self.call(method, target, body, safety, true)
            .await
            .map(drop)
    }
}

fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        let start: String = String::from_utf8_lossy(&answer.body)
            .chars()
            .take(200)
            .collect();
        Error::decode(format!("HTTP {} body: {e}: {start}", answer.status))
    })
}

/// Bytes kept as-is in a URL path (RFC 3986 unreserved, sub-delims, `:@/`).
fn path_byte_is_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
}

/// The URL form of a znode path (`/a b` -> `/a%20b`). Refuses relative paths
/// and `.`/`..` segments locally, because URL normalization would silently
/// rewrite them into a different path.
pub(crate) fn encode_path(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(Error::local(
            ErrorCode::InvalidPath,
            "path must start with /",
            Some(path),
        ));
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(Error::local(
            ErrorCode::InvalidPath,
            "path must not contain . or .. segments",
            Some(path),
        ));
    }
    Ok(percent_encode(path, path_byte_is_safe))
}

/// A query value with everything but unreserved bytes escaped.
pub(crate) fn encode_query_value(value: &str) -> String {
    percent_encode(value, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn percent_encode(text: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded_but_slashes_kept() {
        assert_eq!(encode_path("/").ok().as_deref(), Some("/"));
        assert_eq!(
            encode_path("/app/config").ok().as_deref(),
            Some("/app/config")
        );
        assert_eq!(
            encode_path("/a b/%?#/é").ok().as_deref(),
            Some("/a%20b/%25%3F%23/%C3%A9")
        );
    }

    #[test]
    fn relative_and_dot_paths_are_refused_locally() {
        for bad in ["a", "", "/a/./b", "/a/..", "/."] {
            let err = encode_path(bad).err();
            assert_eq!(
                err.as_ref().and_then(Error::code),
                Some(ErrorCode::InvalidPath),
                "{bad}"
            );
        }
        assert!(encode_path("/a/.b/..c").is_ok());
    }

    #[test]
    fn query_values_escape_separators() {
        assert_eq!(encode_query_value("a&b=c d/+"), "a%26b%3Dc%20d%2F%2B");
    }
}
