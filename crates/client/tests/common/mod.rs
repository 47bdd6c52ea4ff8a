//! A small in-process mock of Keeper's HTTP API (`docs/http-api.md`) for the
//! client's and keeperctl's tests: an in-memory tree shared by any number of
//! mock "members", each on its own 127.0.0.1:0 listener, with knobs to make a
//! member unavailable, lag behind, stall, or report a given zxid, and a log of
//! what each member received. Not a server: no replication, no expiry.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// One request as a member saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub min_zxid: Option<u64>,
    pub body: String,
}

#[derive(Clone, Default)]
struct MockNode {
    data: Vec<u8>,
    stat: Map<String, Value>,
    seq: u64,
}

/// The replicated state all members share.
#[derive(Default)]
pub struct Cluster {
    tree: Mutex<BTreeMap<String, MockNode>>,
    zxid: AtomicU64,
    sessions: Mutex<HashMap<u64, u64>>,
    closed_sessions: Mutex<Vec<u64>>,
    keepalives: Mutex<HashMap<u64, u64>>,
    next_session: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    pub fn new() -> Arc<Cluster> {
        let c = Cluster::default();
        lock(&c.tree).insert("/".to_string(), MockNode::default());
        c.next_session.store(0x1000, Ordering::SeqCst);
        let c = Arc::new(c);
        {
            let mut tree = lock(&c.tree);
            if let Some(root) = tree.get_mut("/") {
                root.stat = new_stat(0, 0, 0);
            }
        }
        c
    }

    pub fn zxid(&self) -> u64 {
        self.zxid.load(Ordering::SeqCst)
    }

    pub fn keepalives(&self, session: u64) -> u64 {
        lock(&self.keepalives).get(&session).copied().unwrap_or(0)
    }

    pub fn session_alive(&self, session: u64) -> bool {
        lock(&self.sessions).contains_key(&session)
    }

    /// Forget a session as if the server expired it.
    pub fn expire(&self, session: u64) {
        lock(&self.sessions).remove(&session);
    }

    pub fn closed_sessions(&self) -> Vec<u64> {
        lock(&self.closed_sessions).clone()
    }

    pub fn node_data(&self, path: &str) -> Option<Vec<u8>> {
        lock(&self.tree).get(path).map(|n| n.data.clone())
    }

    fn bump(&self) -> u64 {
        self.zxid.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// Per-member knobs and log.
#[derive(Default)]
pub struct Knobs {
    /// Answer every request with 503 Unavailable.
    pub unavailable: AtomicBool,
    /// Answer every request with 500 and code `Internal` (a broken member).
    pub internal_errors: AtomicBool,
    /// Answer 503 with a non-JSON body.
    pub html_errors: AtomicBool,
    /// Pretend to have applied only this zxid (0: up to date).
    pub applied_override: AtomicU64,
    /// Sleep this long before answering (ms).
    pub delay_ms: AtomicU64,
    /// Report this zxid in X-Keeper-Zxid (0: the real one).
    pub report_zxid: AtomicU64,
    /// Default children page size (0: 1000).
    pub page_limit: AtomicU64,
    pub seen: Mutex<Vec<Seen>>,
}

impl Knobs {
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }
    pub fn count(&self) -> usize {
        lock(&self.seen).len()
    }
}

/// One mock member. Dropping it stops its listener.
pub struct Member {
    pub url: String,
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
    pub cluster: Arc<Cluster>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a member of `cluster` on 127.0.0.1:0.
pub async fn start_member(cluster: &Arc<Cluster>) -> Member {
    let knobs = Arc::new(Knobs::default());
    let state = (cluster.clone(), knobs.clone());
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (cluster, knobs) = state.clone();
            async move { handle(cluster, knobs, method, uri, headers, body).await }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Member {
        url: format!("http://{addr}"),
        addr,
        knobs,
        cluster: cluster.clone(),
        task,
    }
}

/// An address nothing listens on (bound, then released).
pub fn dead_endpoint() -> String {
    // A socket bound but never listening: a connection to it is refused,
    // and no other test's server can take the port while this process
    // lives (binding and dropping a listener let a concurrent mock server
    // reuse the port, and the "dead" endpoint answered).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    std::mem::forget(socket);
    format!("http://{addr}")
}

fn status_of(code: &str) -> StatusCode {
    let s = match code {
        "NoNode" => 404,
        "NodeExists" | "BadVersion" | "NotEmpty" => 409,
        "NoChildrenForEphemerals" | "InvalidPath" | "BadArguments" => 400,
        "SessionExpired" | "Compacted" => 410,
        "TooLarge" => 413,
        "Unavailable" => 503,
        "Timeout" => 504,
        "Unauthorized" => 401,
        _ => 403,
    };
    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[derive(Debug)]
struct ApiErr {
    code: &'static str,
    message: String,
    path: Option<String>,
    index: Option<usize>,
}

fn err(code: &'static str, message: &str, path: Option<&str>) -> ApiErr {
    ApiErr {
        code,
        message: message.to_string(),
        path: path.map(str::to_string),
        index: None,
    }
}

fn err_response(e: ApiErr) -> (StatusCode, Value) {
    let mut detail = json!({"code": e.code, "message": e.message});
    if let Some(p) = e.path {
        detail["path"] = json!(p);
    }
    if let Some(i) = e.index {
        detail["index"] = json!(i);
    }
    (status_of(e.code), json!({ "error": detail }))
}

fn new_stat(zxid: u64, owner: u64, len: usize) -> Map<String, Value> {
    let v = json!({"czxid":zxid,"mzxid":zxid,"pzxid":zxid,"ctime":1_700_000_000_000u64,
        "mtime":1_700_000_000_000u64,"version":0,"cversion":0,"aversion":0,
        "ephemeral_owner":owner,"data_length":len,"num_children":0});
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn parent_of(path: &str) -> String {
    match path.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => path[..i].to_string(),
        None => "/".to_string(),
    }
}

fn decode_percent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode_percent(k), decode_percent(v))
        })
        .collect()
}

fn stat_i64(stat: &Map<String, Value>, k: &str) -> i64 {
    stat.get(k).and_then(Value::as_i64).unwrap_or(0)
}

fn set_stat(stat: &mut Map<String, Value>, k: &str, v: i64) {
    stat.insert(k.to_string(), json!(v));
}

fn data_of(body: &Map<String, Value>) -> Result<Vec<u8>, ApiErr> {
    match (body.get("data"), body.get("data_b64")) {
        (Some(_), Some(_)) => Err(err("BadArguments", "both data and data_b64", None)),
        (Some(Value::String(s)), None) => Ok(s.as_bytes().to_vec()),
        (None, Some(Value::String(s))) => B64
            .decode(s)
            .map_err(|_| err("BadArguments", "bad base64", None)),
        (None, None) => Ok(Vec::new()),
        _ => Err(err("BadArguments", "data must be a string", None)),
    }
}

fn check_fields(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiErr> {
    for k in body.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(err("BadArguments", &format!("unknown field {k}"), None));
        }
    }
    Ok(())
}

fn node_json(path: &str, n: &MockNode, force_b64: bool) -> Value {
    let mut v = json!({"path": path, "stat": Value::Object(n.stat.clone())});
    match std::str::from_utf8(&n.data) {
        Ok(s) if !force_b64 => v["data"] = json!(s),
        _ => v["data_b64"] = json!(B64.encode(&n.data)),
    }
    v
}

type Tree = BTreeMap<String, MockNode>;

fn do_create(
    tree: &mut Tree,
    zxid: u64,
    sessions: &HashMap<u64, u64>,
    path: &str,
    body: &Map<String, Value>,
) -> Result<Value, ApiErr> {
    let data = data_of(body)?;
    let mode = body
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("persistent");
    let modes = [
        "persistent",
        "ephemeral",
        "persistent_sequential",
        "ephemeral_sequential",
        "container",
        "ttl",
        "ttl_sequential",
    ];
    if !modes.contains(&mode) {
        return Err(err("BadArguments", "unknown mode", Some(path)));
    }
    let session = body.get("session").and_then(Value::as_u64).unwrap_or(0);
    let ephemeral = mode.starts_with("ephemeral");
    if ephemeral && !sessions.contains_key(&session) {
        return Err(err("SessionExpired", "no such session", Some(path)));
    }
    if mode.starts_with("ttl") && body.get("ttl_ms").is_none() {
        return Err(err("BadArguments", "ttl_ms required", Some(path)));
    }
    if path == "/" {
        return Err(err("NodeExists", "node exists", Some(path)));
    }
    let parent = parent_of(path);
    let parent_node = tree
        .get(&parent)
        .ok_or_else(|| err("NoNode", "parent does not exist", Some(&parent)))?;
    if stat_i64(&parent_node.stat, "ephemeral_owner") != 0 {
        return Err(err(
            "NoChildrenForEphemerals",
            "parent is ephemeral",
            Some(&parent),
        ));
    }
    let actual = if mode.ends_with("sequential") {
        format!("{path}{:010}", parent_node.seq)
    } else {
        path.to_string()
    };
    if tree.contains_key(&actual) {
        return Err(err("NodeExists", "node exists", Some(&actual)));
    }
    if let Some(p) = tree.get_mut(&parent) {
        p.seq += 1;
        let nc = stat_i64(&p.stat, "num_children") + 1;
        let cv = stat_i64(&p.stat, "cversion") + 1;
        set_stat(&mut p.stat, "num_children", nc);
        set_stat(&mut p.stat, "cversion", cv);
        set_stat(&mut p.stat, "pzxid", zxid as i64);
    }
    let node = MockNode {
        stat: new_stat(zxid, if ephemeral { session } else { 0 }, data.len()),
        data,
        seq: 0,
    };
    let stat = Value::Object(node.stat.clone());
    tree.insert(actual.clone(), node);
    Ok(json!({"path": actual, "stat": stat}))
}

fn version_of(v: Option<&Value>) -> Result<i64, ApiErr> {
    match v {
        None => Ok(-1),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| err("BadArguments", "bad version", None)),
    }
}

fn do_set(
    tree: &mut Tree,
    zxid: u64,
    path: &str,
    body: &Map<String, Value>,
) -> Result<Value, ApiErr> {
    let data = data_of(body)?;
    let version = version_of(body.get("version"))?;
    let n = tree
        .get_mut(path)
        .ok_or_else(|| err("NoNode", "no node", Some(path)))?;
    let cur = stat_i64(&n.stat, "version");
    if version != -1 && version != cur {
        return Err(err("BadVersion", "version mismatch", Some(path)));
    }
    set_stat(&mut n.stat, "version", cur + 1);
    set_stat(&mut n.stat, "mzxid", zxid as i64);
    set_stat(&mut n.stat, "data_length", data.len() as i64);
    n.data = data;
    Ok(json!({"path": path, "stat": Value::Object(n.stat.clone())}))
}

fn do_delete(tree: &mut Tree, zxid: u64, path: &str, version: i64) -> Result<(), ApiErr> {
    let n = tree
        .get(path)
        .ok_or_else(|| err("NoNode", "no node", Some(path)))?;
    if version != -1 && version != stat_i64(&n.stat, "version") {
        return Err(err("BadVersion", "version mismatch", Some(path)));
    }
    if stat_i64(&n.stat, "num_children") > 0 {
        return Err(err("NotEmpty", "node has children", Some(path)));
    }
    tree.remove(path);
    if let Some(p) = tree.get_mut(&parent_of(path)) {
        let nc = stat_i64(&p.stat, "num_children") - 1;
        let cv = stat_i64(&p.stat, "cversion") + 1;
        set_stat(&mut p.stat, "num_children", nc);
        set_stat(&mut p.stat, "cversion", cv);
        set_stat(&mut p.stat, "pzxid", zxid as i64);
    }
    Ok(())
}

fn do_check(tree: &Tree, path: &str, version: i64) -> Result<(), ApiErr> {
    let n = tree
        .get(path)
        .ok_or_else(|| err("NoNode", "no node", Some(path)))?;
    if version != -1 && version != stat_i64(&n.stat, "version") {
        return Err(err("BadVersion", "version mismatch", Some(path)));
    }
    Ok(())
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, ApiErr> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(err("BadArguments", "malformed JSON", None)),
    }
}

async fn handle(
    cluster: Arc<Cluster>,
    knobs: Arc<Knobs>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let min_zxid = headers
        .get("x-keeper-min-zxid")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    lock(&knobs.seen).push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        min_zxid,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let delay = knobs.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let applied = match knobs.applied_override.load(Ordering::SeqCst) {
        0 => cluster.zxid(),
        z => z,
    };
    let (status, value) = if knobs.unavailable.load(Ordering::SeqCst) {
        if knobs.html_errors.load(Ordering::SeqCst) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("x-keeper-zxid", applied.to_string())],
                "<html>down for maintenance</html>",
            )
                .into_response();
        }
        err_response(err("Unavailable", "no leader", None))
    } else if knobs.internal_errors.load(Ordering::SeqCst) {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error":{"code":"Internal","message":"storage failure"}}),
        )
    } else if min_zxid.is_some_and(|m| m > applied) {
        err_response(err("Timeout", "member is behind the requested zxid", None))
    } else {
        match route(&cluster, &knobs, &method, &uri, &body) {
            Ok((status, value)) => (status, value),
            Err(e) => err_response(e),
        }
    };
    let reported = match knobs.report_zxid.load(Ordering::SeqCst) {
        0 => match knobs.applied_override.load(Ordering::SeqCst) {
            0 => cluster.zxid(),
            z => z,
        },
        z => z,
    };
    let hdr = [("x-keeper-zxid", reported.to_string())];
    if status == StatusCode::NO_CONTENT {
        return (status, hdr).into_response();
    }
    (status, hdr, axum::Json(value)).into_response()
}

fn route(
    cluster: &Cluster,
    knobs: &Knobs,
    method: &Method,
    uri: &Uri,
    raw: &Bytes,
) -> Result<(StatusCode, Value), ApiErr> {
    let path = uri.path();
    let q = query_map(uri.query().unwrap_or(""));
    let node_path = |prefix: &str| -> String {
        let rest = decode_percent(&path[prefix.len()..]);
        if rest.is_empty() || rest == "/" {
            "/".to_string()
        } else {
            rest
        }
    };
    if path == "/healthz" {
        return Ok((StatusCode::OK, json!({"status":"ok"})));
    }
    if path == "/readyz" {
        return Ok((StatusCode::OK, json!({"status":"ready"})));
    }
    if path == "/v1/cluster" {
        return Ok((
            StatusCode::OK,
            json!({"id":1,"role":"leader","leader":1,"epoch":1,
                "last_logged_zxid":cluster.zxid(),"committed_zxid":cluster.zxid(),
                "applied_zxid":cluster.zxid(),"members":[
                {"id":1,"client_addr":"127.0.0.1:7181","peer_addr":"127.0.0.1:7888","role":"leader"}]}),
        ));
    }
    if path == "/v1/sync" && method == Method::POST {
        return Ok((StatusCode::OK, json!({"zxid": cluster.zxid()})));
    }
    if path == "/v1/sessions" && method == Method::POST {
        let body = parse_body(raw)?;
        check_fields(&body, &["timeout_ms"])?;
        let t = body
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| err("BadArguments", "timeout_ms required", None))?;
        let t = t.clamp(100, 60_000);
        let id = cluster.next_session.fetch_add(1, Ordering::SeqCst);
        cluster.bump();
        lock(&cluster.sessions).insert(id, t);
        return Ok((StatusCode::CREATED, json!({"id": id, "timeout_ms": t})));
    }
    if let Some(rest) = path.strip_prefix("/v1/sessions/") {
        let (id_text, keepalive) = match rest.strip_suffix("/keepalive") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        let id: u64 = id_text
            .parse()
            .map_err(|_| err("BadArguments", "bad session id", None))?;
        let mut sessions = lock(&cluster.sessions);
        let Some(&t) = sessions.get(&id) else {
            return Err(err("SessionExpired", "session expired", None));
        };
        if keepalive && method == Method::POST {
            *lock(&cluster.keepalives).entry(id).or_insert(0) += 1;
            return Ok((StatusCode::OK, json!({"id": id, "timeout_ms": t})));
        }
        if !keepalive && method == Method::DELETE {
            sessions.remove(&id);
            drop(sessions);
            lock(&cluster.closed_sessions).push(id);
            let zxid = cluster.bump();
            let mut tree = lock(&cluster.tree);
            let owned: Vec<String> = tree
                .iter()
                .filter(|(_, n)| stat_i64(&n.stat, "ephemeral_owner") as u64 == id)
                .map(|(p, _)| p.clone())
                .collect();
            for p in owned {
                let _ = do_delete(&mut tree, zxid, &p, -1);
            }
            return Ok((StatusCode::NO_CONTENT, Value::Null));
        }
        return Err(err("BadArguments", "method not allowed", None));
    }
    if path == "/v1/txn" && method == Method::POST {
        let body = parse_body(raw)?;
        check_fields(&body, &["ops"])?;
        let ops = body
            .get("ops")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let zxid = cluster.zxid() + 1;
        let sessions = lock(&cluster.sessions).clone();
        let mut tree = lock(&cluster.tree);
        let mut scratch = tree.clone();
        let mut results = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let with_index = |mut e: ApiErr| {
                e.index = Some(i);
                e
            };
            let Value::Object(op) = op else {
                return Err(with_index(err(
                    "BadArguments",
                    "op must be an object",
                    None,
                )));
            };
            let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
            let p = op
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let r = match kind {
                "create" => check_fields(
                    op,
                    &[
                        "op", "path", "data", "data_b64", "mode", "session", "ttl_ms",
                    ],
                )
                .and_then(|_| do_create(&mut scratch, zxid, &sessions, &p, op))
                .map(|v| json!({"op":"create","path":v["path"],"stat":v["stat"]})),
                "set" => check_fields(op, &["op", "path", "data", "data_b64", "version"])
                    .and_then(|_| do_set(&mut scratch, zxid, &p, op))
                    .map(|v| json!({"op":"set","path":p,"stat":v["stat"]})),
                "delete" => check_fields(op, &["op", "path", "version"])
                    .and_then(|_| version_of(op.get("version")))
                    .and_then(|v| do_delete(&mut scratch, zxid, &p, v))
                    .map(|_| json!({"op":"delete","path":p})),
                "check" => check_fields(op, &["op", "path", "version"])
                    .and_then(|_| version_of(op.get("version")))
                    .and_then(|v| do_check(&scratch, &p, v))
                    .map(|_| json!({"op":"check","path":p})),
                _ => Err(err("BadArguments", "unknown op", None)),
            };
            results.push(r.map_err(with_index)?);
        }
        *tree = scratch;
        cluster.bump();
        return Ok((StatusCode::OK, json!({ "results": results })));
    }
    if path.starts_with("/v1/children") && method == Method::GET {
        let p = node_path("/v1/children");
        let tree = lock(&cluster.tree);
        let n = tree
            .get(&p)
            .ok_or_else(|| err("NoNode", "no node", Some(&p)))?;
        let prefix = if p == "/" {
            "/".to_string()
        } else {
            format!("{p}/")
        };
        let mut names: Vec<String> = tree
            .keys()
            .filter(|k| k.starts_with(&prefix) && k.len() > prefix.len())
            .map(|k| k[prefix.len()..].to_string())
            .filter(|k| !k.contains('/'))
            .collect();
        names.sort();
        if let Some(after) = q.get("after") {
            names.retain(|c| c.as_bytes() > after.as_bytes());
        }
        let limit: usize = match q.get("limit") {
            Some(l) => l
                .parse()
                .map_err(|_| err("BadArguments", "bad limit", None))?,
            None => match knobs.page_limit.load(Ordering::SeqCst) {
                0 => 1000,
                l => l as usize,
            },
        };
        let more = names.len() > limit;
        names.truncate(limit);
        return Ok((
            StatusCode::OK,
            json!({"children": names, "stat": Value::Object(n.stat.clone()), "more": more}),
        ));
    }
    if path.starts_with("/v1/nodes") {
        let p = node_path("/v1/nodes");
        let sessions = lock(&cluster.sessions).clone();
        let mut tree = lock(&cluster.tree);
        return match *method {
            Method::GET => {
                let n = tree
                    .get(&p)
                    .ok_or_else(|| err("NoNode", "no node", Some(&p)))?;
                let force = q.get("encoding").map(String::as_str) == Some("base64");
                Ok((StatusCode::OK, node_json(&p, n, force)))
            }
            Method::POST => {
                let body = parse_body(raw)?;
                check_fields(&body, &["data", "data_b64", "mode", "session", "ttl_ms"])?;
                let zxid = cluster.zxid() + 1;
                let v = do_create(&mut tree, zxid, &sessions, &p, &body)?;
                cluster.bump();
                Ok((StatusCode::CREATED, v))
            }
            Method::PUT => {
                let body = parse_body(raw)?;
                check_fields(&body, &["data", "data_b64", "version"])?;
                let zxid = cluster.zxid() + 1;
                let v = do_set(&mut tree, zxid, &p, &body)?;
                cluster.bump();
                Ok((StatusCode::OK, v))
            }
            Method::DELETE => {
                let version = match q.get("version") {
                    Some(v) => v
                        .parse()
                        .map_err(|_| err("BadArguments", "bad version", None))?,
                    None => -1,
                };
                let zxid = cluster.zxid() + 1;
                do_delete(&mut tree, zxid, &p, version)?;
                cluster.bump();
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            _ => Err(err("BadArguments", "method not allowed", None)),
        };
    }
    Err(err("NoNode", "no such endpoint", None))
}
