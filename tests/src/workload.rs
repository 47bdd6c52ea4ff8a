//! The chaos workload: concurrent clients spread over every member, each one
//! operation at a time, every operation recorded in the [`Recorder`].
//!
//! - **Register clients** run gets (default and linearizable), sets, versioned
//!   sets (compare-and-swap), create-if-absent and deletes on a few keys under
//!   `/chaos/r`, and multis (check+set, or two sets) on the pair `/chaos/p/{a,b}`.
//! - **Sequential clients** create `persistent_sequential` nodes under `/chaos/s`.
//! - **Session clients** open a session through their *home* member, create two
//!   ephemerals, keep the session alive through the home member only (so
//!   isolating that member tests keepalives through a cut-off follower), and read
//!   their ephemerals linearizably through other members. At the end of a
//!   session's life they close it or abandon it.
//!
//! Every client carries the highest `X-Keeper-Zxid` it has seen and sends it as
//! `X-Keeper-Min-Zxid`. An answer of 503/504/500 or a transport failure after the
//! request was sent is indeterminate ([`Outcome::Info`]); a refused connection
//! is a definite failure (nothing was sent).
//! - **Lock clients** open a session (kept alive by a second client that fails
//!   over between members), acquire [`LOCK`], increment [`COUNTER`] a few
//!   times with fenced writes (a linearizable read, then a fenced set of the
//!   value read plus one), and release. After a write whose outcome is unknown
//!   or refused they write no more under that grant: a late write can then only
//!   apply while the grant still holds (or be fenced). An acquire or release
//!   with an unknown outcome ends the session (closed, or left to expire): its
//!   contender may be granted with nobody to release it.
//! - **Watchers** hold a recursive event stream on [`WATCHED`]; when it drops,
//!   goes quiet, or every few seconds anyway, they resume on the next member
//!   with `from_zxid`; a `410 Compacted` restarts them fresh. Each connection
//!   is a [`WatchSegment`] of the history.

use crate::history::{
    Call, Fence, Grant, Op, Outcome, Recorder, Seen, TxnOp, WatchEvent, WatchSegment,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Root of every path the workload touches.
pub const ROOT: &str = "/chaos";
/// Parent of the registers.
pub const REGISTERS: &str = "/chaos/r";
/// The two keys multis change together.
pub const PAIR: [&str; 2] = ["/chaos/p/a", "/chaos/p/b"];
/// Parent of the sequential nodes.
pub const SEQ_PARENT: &str = "/chaos/s";
/// Parent of the ephemerals.
pub const EPHEMERALS: &str = "/chaos/e";
/// The lock the lock clients take.
pub const LOCK: &str = "chaos";
/// The counter lock holders increment with fenced writes.
pub const COUNTER: &str = "/chaos/l/counter";
/// What the watchers watch (recursively): everything the workload writes.
pub const WATCHED: &str = ROOT;

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// `(member id, base URL)` of every member.
    pub members: Vec<(u64, String)>,
    pub register_clients: usize,
    pub sequential_clients: usize,
    pub session_clients: usize,
    /// Lock holders (each with its own session and keepalive client).
    pub lock_clients: usize,
    /// Watchers holding a recursive event stream on [`WATCHED`].
    pub watchers: usize,
    /// Registers `/chaos/r/k0..`.
    pub keys: usize,
    /// Timeout asked for sessions (also the keepalive rhythm: a fifth of it).
    pub session_timeout_ms: u64,
    /// Client-side limit of one request (then it is indeterminate).
    pub op_timeout: Duration,
    /// Pause between two operations of a client.
    pub think: Duration,
}

impl WorkloadConfig {
    /// The register paths.
    pub fn register_keys(&self) -> Vec<String> {
        (0..self.keys)
            .map(|i| format!("{REGISTERS}/k{i}"))
            .collect()
    }
}

/// One logical client: one HTTP client, one zxid floor, one op at a time.
pub struct Client {
    pub id: u64,
    http: reqwest::Client,
    rec: Recorder,
    members: Vec<(u64, String)>,
    floor: u64,
    timeout: Duration,
    pub rng: ChaCha8Rng,
}

fn seen_from(value: &str, body: &Value) -> Option<Seen> {
    let stat = &body["stat"];
    Some(Seen {
        value: value.to_string(),
        version: stat["version"].as_i64()?,
        czxid: stat["czxid"].as_u64()?,
        mzxid: stat["mzxid"].as_u64()?,
        ephemeral_owner: stat["ephemeral_owner"].as_u64().unwrap_or(0),
    })
}

impl Client {
    /// A client over `members` recording into `rec`; `seed` drives its choices.
    pub fn new(
        id: u64,
        members: Vec<(u64, String)>,
        rec: Recorder,
        timeout: Duration,
        seed: u64,
    ) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_max_idle_per_host(4)
            .build()
            .expect("reqwest client");
        Client {
            id,
            http,
            rec,
            members,
            floor: 0,
            timeout,
            rng: ChaCha8Rng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        }
    }

    /// Index of a random member.
    pub fn any_member(&mut self) -> usize {
        self.rng.gen_range(0..self.members.len())
    }

    /// Runs `call` against member index `m`, records it and returns the op.
    pub async fn exec(&mut self, m: usize, call: Call) -> Op {
        self.exec_with(m, call, self.timeout, false).await
    }

    /// Like [`Client::exec`] with an explicit timeout; `final_read` marks the
    /// read-back after healing.
    pub async fn exec_with(
        &mut self,
        m: usize,
        call: Call,
        timeout: Duration,
        final_read: bool,
    ) -> Op {
        let (member, base) = self.members[m].clone();
        // A keepalive reads no state but its session's, so its floor is the
        // session's creation (the session id is that entry's zxid), not the
        // client's: a member behind the client's floor must still answer it
        // (or refuse it) at once, but never before it knows the session.
        let min_zxid = match &call {
            Call::Keepalive { session } => Some(*session),
            _ => (self.floor > 0).then_some(self.floor),
        };
        let invoke_us = self.rec.now_us();
        let (outcome, zxid) =
            match tokio::time::timeout(timeout, self.send(&base, &call, min_zxid)).await {
                Ok(r) => r,
                Err(_) => (
                    Outcome::Info {
                        reason: format!("client timeout after {timeout:?}"),
                    },
                    None,
                ),
            };
        let complete_us = self.rec.now_us();
        if let Some(z) = zxid {
            self.floor = self.floor.max(z);
        }
        let op = Op {
            id: self.rec.next_id(),
            client: self.id,
            member,
            call,
            min_zxid,
            invoke_us,
            complete_us,
            outcome,
            zxid,
            final_read,
        };
        self.rec.op(op.clone());
        op
    }

    async fn send(&self, base: &str, call: &Call, min_zxid: Option<u64>) -> (Outcome, Option<u64>) {
        use reqwest::Method;
        let (method, url, body) = match call {
            Call::Get { key, linearizable } => (
                Method::GET,
                format!(
                    "{base}/v1/nodes{key}{}",
                    if *linearizable {
                        "?consistency=linearizable"
                    } else {
                        ""
                    }
                ),
                None,
            ),
            Call::Set {
                key,
                value,
                version,
                fence,
            } => {
                let mut body = json!({"data": value, "version": version});
                if let Some(f) = fence {
                    body["fence"] = json!({"lock": f.lock, "token": f.token});
                }
                (Method::PUT, format!("{base}/v1/nodes{key}"), Some(body))
            }
            Call::Create { key, value } => (
                Method::POST,
                format!("{base}/v1/nodes{key}"),
                Some(json!({"data": value})),
            ),
            Call::Delete { key, version } => (
                Method::DELETE,
                format!("{base}/v1/nodes{key}?version={version}"),
                None,
            ),
            Call::Txn { ops } => {
                let ops: Vec<Value> = ops
                    .iter()
                    .map(|o| match o {
                        TxnOp::Check { key, version } => {
                            json!({"op": "check", "path": key, "version": version})
                        }
                        TxnOp::Set {
                            key,
                            value,
                            version,
                        } => {
                            json!({"op": "set", "path": key, "data": value, "version": version})
                        }
                    })
                    .collect();
                (
                    Method::POST,
                    format!("{base}/v1/txn"),
                    Some(json!({ "ops": ops })),
                )
            }
            Call::List { path } => return self.list(base, path, min_zxid).await,
            Call::CreateSeq { prefix } => (
                Method::POST,
                format!("{base}/v1/nodes{prefix}"),
                Some(json!({"data": "", "mode": "persistent_sequential"})),
            ),
            Call::OpenSession { timeout_ms } => (
                Method::POST,
                format!("{base}/v1/sessions"),
                Some(json!({ "timeout_ms": timeout_ms })),
            ),
            Call::Keepalive { session } => (
                Method::POST,
                format!("{base}/v1/sessions/{session}/keepalive"),
                None,
            ),
            Call::CloseSession { session } => (
                Method::DELETE,
                format!("{base}/v1/sessions/{session}"),
                None,
            ),
            Call::CreateEphemeral { path, session } => (
                Method::POST,
                format!("{base}/v1/nodes{path}"),
                Some(json!({"data": "", "mode": "ephemeral", "session": session})),
            ),
            Call::LockAcquire {
                name,
                session,
                wait_ms,
            } => (
                Method::POST,
                format!("{base}/v1/locks/{name}/acquire"),
                Some(json!({"session": session, "wait_ms": wait_ms})),
            ),
            Call::LockRelease { name, key } => (
                Method::DELETE,
                format!("{base}/v1/locks/{name}/{key}"),
                None,
            ),
        };
        let mut req = self.http.request(method, &url);
        if let Some(z) = min_zxid {
            req = req.header("X-Keeper-Min-Zxid", z.to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (transport_failure(&e), None),
        };
        let status = resp.status().as_u16();
        let zxid = resp
            .headers()
            .get("x-keeper-zxid")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok());
        let body: Value = match resp.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => {
                return (
                    Outcome::Info {
                        reason: format!("reading the answer: {e}"),
                    },
                    zxid,
                )
            }
        };
        (classify(call, status, &body), zxid)
    }

    async fn list(&self, base: &str, path: &str, min_zxid: Option<u64>) -> (Outcome, Option<u64>) {
        let mut names: Vec<String> = Vec::new();
        let mut zxid = None;
        loop {
            let mut url = format!("{base}/v1/children{path}?consistency=linearizable");
            if let Some(last) = names.last() {
                url.push_str(&format!("&after={last}"));
            }
            let mut req = self.http.get(&url);
            if let Some(z) = min_zxid {
                req = req.header("X-Keeper-Min-Zxid", z.to_string());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return (transport_failure(&e), zxid),
            };
            let status = resp.status().as_u16();
            zxid = resp
                .headers()
                .get("x-keeper-zxid")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok());
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status != 200 {
                return (
                    classify(&Call::List { path: path.into() }, status, &body),
                    zxid,
                );
            }
            let page: Vec<String> = body["children"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let more = body["more"].as_bool().unwrap_or(false);
            if page.is_empty() || !more {
                names.extend(page);
                break;
            }
            names.extend(page);
        }
        (
            Outcome::Ok {
                node: None,
                results: vec![],
                created: Some(names.join("\n")),
                session: None,
                grant: None,
            },
            zxid,
        )
    }
}

fn transport_failure(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        // Nothing was sent: a definite failure.
        Outcome::Fail {
            status: 0,
            code: "Unreachable".into(),
            index: None,
        }
    } else {
        Outcome::Info {
            reason: format!("transport: {e}"),
        }
    }
}

/// Maps an HTTP answer to an outcome (the status decides; the body adds detail).
fn classify(call: &Call, status: u16, body: &Value) -> Outcome {
    if (200..300).contains(&status) {
        let ok = |node, results, created, session| Outcome::Ok {
            node,
            results,
            created,
            session,
            grant: None,
        };
        return match call {
            Call::Get { .. } => {
                let value = body["data"]
                    .as_str()
                    .or_else(|| body["data_b64"].as_str())
                    .unwrap_or_default();
                ok(seen_from(value, body), vec![], None, None)
            }
            Call::Set { value, .. } | Call::Create { value, .. } => {
                ok(seen_from(value, body), vec![], None, None)
            }
            Call::Txn { ops } => {
                let results = body["results"].as_array().cloned().unwrap_or_default();
                let mut seen = Vec::new();
                for (o, r) in ops.iter().zip(results.iter()) {
                    if let TxnOp::Set { value, .. } = o {
                        if let Some(s) = seen_from(value, r) {
                            seen.push(s);
                        }
                    }
                }
                ok(None, seen, None, None)
            }
            Call::CreateSeq { .. } | Call::CreateEphemeral { .. } => ok(
                seen_from("", body),
                vec![],
                body["path"].as_str().map(String::from),
                None,
            ),
            Call::OpenSession { .. } | Call::Keepalive { .. } => ok(
                None,
                vec![],
                None,
                body["id"].as_u64().zip(body["timeout_ms"].as_u64()),
            ),
            Call::LockAcquire { .. } => {
                match (body["key"].as_str(), body["fencing_token"].as_u64()) {
                    (Some(key), Some(token)) => Outcome::Ok {
                        node: None,
                        results: vec![],
                        created: None,
                        session: None,
                        grant: Some(Grant {
                            key: key.to_string(),
                            token,
                        }),
                    },
                    // A grant the client cannot read is no grant it can use.
                    _ => Outcome::Info {
                        reason: format!("{status} without key and fencing_token: {body}"),
                    },
                }
            }
            Call::Delete { .. }
            | Call::CloseSession { .. }
            | Call::List { .. }
            | Call::LockRelease { .. } => ok(None, vec![], None, None),
        };
    }
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    if matches!(status, 500 | 503 | 504) || code.is_empty() && status >= 500 {
        return Outcome::Info {
            reason: format!("{status} {code}"),
        };
    }
    Outcome::Fail {
        status,
        code,
        index: body["error"]["index"].as_u64().map(|i| i as usize),
    }
}

/// Creates the workload's parents and the pair (retrying until the cluster takes
/// them, at most `limit`). Recorded like any other op.
pub async fn setup(client: &mut Client, limit: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    let parents = [
        ROOT, REGISTERS, "/chaos/p", SEQ_PARENT, EPHEMERALS, "/chaos/l",
    ];
    let mut todo: Vec<(String, String)> = parents
        .iter()
        .map(|p| (p.to_string(), String::new()))
        .collect();
    todo.push((PAIR[0].to_string(), "init-a".into()));
    todo.push((PAIR[1].to_string(), "init-b".into()));
    todo.push((COUNTER.to_string(), "0".into()));
    for (path, value) in todo {
        loop {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("setup could not create {path}"));
            }
            let m = client.any_member();
            let op = client
                .exec(
                    m,
                    Call::Create {
                        key: path.clone(),
                        value: value.clone(),
                    },
                )
                .await;
            if op.is_ok() || op.fail_code() == Some("NodeExists") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A register client: mixed register ops and pair multis until `stop`.
pub async fn register_client(mut c: Client, cfg: WorkloadConfig, stop: Arc<AtomicBool>) {
    let keys = cfg.register_keys();
    let mut known: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let m = c.any_member();
        let value = format!("c{}-{n}", c.id);
        let roll = c.rng.gen_range(0..100);
        let key = keys[c.rng.gen_range(0..keys.len())].clone();
        let any_key = if c.rng.gen_bool(0.2) {
            PAIR[c.rng.gen_range(0..2)].to_string()
        } else {
            key.clone()
        };
        let call = match roll {
            0..20 => Call::Get {
                key: any_key,
                linearizable: true,
            },
            20..35 => Call::Get {
                key: any_key,
                linearizable: false,
            },
            35..55 => Call::Set {
                key,
                value,
                version: -1,
                fence: None,
            },
            55..72 => Call::Set {
                version: known.get(&key).copied().unwrap_or(0),
                key,
                value,
                fence: None,
            },
            72..82 => Call::Create { key, value },
            82..88 => Call::Delete { key, version: -1 },
            _ => {
                let sets = PAIR.iter().enumerate().map(|(i, k)| TxnOp::Set {
                    key: k.to_string(),
                    value: format!("{value}-{i}"),
                    version: -1,
                });
                if c.rng.gen_bool(0.5) {
                    let checks = PAIR.iter().map(|k| TxnOp::Check {
                        key: k.to_string(),
                        version: known.get(*k).copied().unwrap_or(0),
                    });
                    Call::Txn {
                        ops: checks.chain(sets).collect(),
                    }
                } else {
                    Call::Txn {
                        ops: sets.collect(),
                    }
                }
            }
        };
        let op = c.exec(m, call).await;
        match (&op.call, &op.outcome) {
            (
                Call::Get { key, .. } | Call::Set { key, .. } | Call::Create { key, .. },
                Outcome::Ok { node: Some(s), .. },
            ) => {
                known.insert(key.clone(), s.version);
            }
            (Call::Txn { ops }, Outcome::Ok { results, .. }) => {
                let set_keys = ops.iter().filter_map(|o| match o {
                    TxnOp::Set { key, .. } => Some(key),
                    TxnOp::Check { .. } => None,
                });
                for (k, s) in set_keys.zip(results) {
                    known.insert(k.clone(), s.version);
                }
            }
            _ => {}
        }
        if op.is_info() || op.fail_code() == Some("Unreachable") {
            // Back off while the cluster is unavailable, as a real client would:
            // fewer indeterminate ops keep the history checkable.
            tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
        }
        tokio::time::sleep(cfg.think).await;
    }
}

/// Pause of a client after an indeterminate answer or an unreachable member.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(250);

/// A sequential client: sequential creates until `stop`.
pub async fn sequential_client(mut c: Client, cfg: WorkloadConfig, stop: Arc<AtomicBool>) {
    let prefix = format!("{SEQ_PARENT}/n-");
    while !stop.load(Ordering::Relaxed) {
        let m = c.any_member();
        let op = c
            .exec(
                m,
                Call::CreateSeq {
                    prefix: prefix.clone(),
                },
            )
            .await;
        if !op.is_ok() {
            tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
        }
        tokio::time::sleep(cfg.think * 2).await;
    }
}

/// A session client keeping its sessions alive through member index `home`.
pub async fn session_client(
    mut c: Client,
    home: usize,
    cfg: WorkloadConfig,
    stop: Arc<AtomicBool>,
) {
    let n = c.members.len();
    let beat = Duration::from_millis(cfg.session_timeout_ms / 5);
    let keepalive_timeout = Duration::from_millis(cfg.session_timeout_ms / 2);
    while !stop.load(Ordering::Relaxed) {
        let open = c
            .exec(
                home,
                Call::OpenSession {
                    timeout_ms: cfg.session_timeout_ms,
                },
            )
            .await;
        let Outcome::Ok {
            session: Some((sid, _)),
            ..
        } = open.outcome
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut mine = Vec::new();
        let mut attempt = 0u64;
        let mut create_ephemerals = async |c: &mut Client, mine: &mut Vec<String>| {
            // A fresh path per attempt: an unanswered create may exist.
            while mine.len() < 2 && attempt < 8 {
                let path = format!("{EPHEMERALS}/s{sid}-{attempt}");
                attempt += 1;
                let op = c
                    .exec(
                        home,
                        Call::CreateEphemeral {
                            path: path.clone(),
                            session: sid,
                        },
                    )
                    .await;
                if op.is_ok() {
                    mine.push(path);
                } else {
                    return;
                }
            }
        };
        create_ephemerals(&mut c, &mut mine).await;
        let lifetime = Duration::from_millis(c.rng.gen_range(3_000..8_000));
        let born = tokio::time::Instant::now();
        let mut alive = true;
        let mut beat_no = 0u64;
        while alive && born.elapsed() < lifetime && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(beat).await;
            beat_no += 1;
            let ka = c
                .exec_with(
                    home,
                    Call::Keepalive { session: sid },
                    keepalive_timeout,
                    false,
                )
                .await;
            if ka.fail_code() == Some("SessionExpired") {
                alive = false;
            } else if ka.is_ok() && mine.len() < 2 {
                // The session's life is only visible through its ephemerals.
                create_ephemerals(&mut c, &mut mine).await;
            }
            if beat_no % 2 == 0 && !mine.is_empty() {
                let path = mine[c.rng.gen_range(0..mine.len())].clone();
                let other = if n > 1 {
                    (home + c.rng.gen_range(1..n)) % n
                } else {
                    home
                };
                c.exec(
                    other,
                    Call::Get {
                        key: path,
                        linearizable: true,
                    },
                )
                .await;
            }
        }
        if alive && !stop.load(Ordering::Relaxed) && c.rng.gen_bool(0.5) {
            c.exec(home, Call::CloseSession { session: sid }).await;
        }
        // Otherwise abandoned: it must expire by itself (checked after healing).
    }
}

/// The client-side view of a lock client's session: lost once no
/// acknowledged keepalive covers the present (last acknowledged send +
/// timeout), and lost for good then, as the client library reports it.
struct SessionLife {
    /// Microseconds (recorder clock) until which the session is surely alive.
    alive_until: std::sync::atomic::AtomicU64,
    lost: AtomicBool,
    /// The holder is done with the session: its keepalives stop.
    done: AtomicBool,
}

impl SessionLife {
    fn alive(&self, now_us: u64) -> bool {
        !self.lost.load(Ordering::Relaxed) && now_us < self.alive_until.load(Ordering::Relaxed)
    }
}

/// Keeps session `sid` alive until the holder is done or it is lost, failing
/// over to the next member on an unknown answer; returns the client.
async fn lock_keepalives(
    mut ka: Client,
    sid: u64,
    timeout_ms: u64,
    life: Arc<SessionLife>,
) -> Client {
    let beat = Duration::from_millis(timeout_ms / 5);
    let mut m = ka.any_member();
    while !life.done.load(Ordering::Relaxed) && !life.lost.load(Ordering::Relaxed) {
        tokio::time::sleep(beat).await;
        let op = ka
            .exec_with(
                m,
                Call::Keepalive { session: sid },
                Duration::from_millis(timeout_ms / 2),
                false,
            )
            .await;
        let until = life.alive_until.load(Ordering::Relaxed);
        if op.is_ok() && op.complete_us < until {
            life.alive_until
                .fetch_max(op.invoke_us + timeout_ms * 1000, Ordering::Relaxed);
        } else if op.complete_us >= until || op.fail_code() == Some("SessionExpired") {
            life.lost.store(true, Ordering::Relaxed);
        }
        if !op.is_ok() {
            m = (m + 1) % ka.members.len();
        }
    }
    ka
}

/// A lock client: sessions, grants, fenced increments of [`COUNTER`],
/// releases, until `stop`. `c` does the lock work, `ka` the keepalives.
pub async fn lock_client(
    mut c: Client,
    mut ka: Client,
    cfg: WorkloadConfig,
    stop: Arc<AtomicBool>,
) {
    let op_timeout = cfg.op_timeout;
    while !stop.load(Ordering::Relaxed) {
        let m = c.any_member();
        let open = c
            .exec(
                m,
                Call::OpenSession {
                    timeout_ms: cfg.session_timeout_ms,
                },
            )
            .await;
        let Outcome::Ok {
            session: Some((sid, timeout_ms)),
            ..
        } = open.outcome
        else {
            tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
            continue;
        };
        let life = Arc::new(SessionLife {
            alive_until: (open.invoke_us + timeout_ms * 1000).into(),
            lost: AtomicBool::new(false),
            done: AtomicBool::new(false),
        });
        let keepalives = tokio::spawn(lock_keepalives(ka, sid, timeout_ms, life.clone()));
        let mut abandon = false;
        while !stop.load(Ordering::Relaxed) && life.alive(c.rec.now_us()) && !abandon {
            let m = c.any_member();
            let acquire = c
                .exec(
                    m,
                    Call::LockAcquire {
                        name: LOCK.into(),
                        session: sid,
                        wait_ms: (op_timeout.as_millis() as u64) / 2,
                    },
                )
                .await;
            let grant = match &acquire.outcome {
                Outcome::Ok { grant: Some(g), .. } => g.clone(),
                Outcome::Fail { code, .. } if code == "SessionExpired" => break,
                Outcome::Info { .. } => {
                    // Its contender may exist, even be granted, with nobody
                    // to release it while this session lives: end the
                    // session (as a ZooKeeper client must), start afresh.
                    abandon = true;
                    continue;
                }
                _ => {
                    tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
                    continue;
                }
            };
            let increments = c.rng.gen_range(1..=4);
            for _ in 0..increments {
                if !life.alive(c.rec.now_us()) {
                    break;
                }
                let m = c.any_member();
                let read = c
                    .exec(
                        m,
                        Call::Get {
                            key: COUNTER.into(),
                            linearizable: true,
                        },
                    )
                    .await;
                let Some(n) = read.node().and_then(|n| n.value.parse::<u64>().ok()) else {
                    break;
                };
                if !life.alive(c.rec.now_us()) {
                    break;
                }
                let write = c
                    .exec(
                        m,
                        Call::Set {
                            key: COUNTER.into(),
                            value: (n + 1).to_string(),
                            version: -1,
                            fence: Some(Fence {
                                lock: LOCK.into(),
                                token: grant.token,
                            }),
                        },
                    )
                    .await;
                if !write.is_ok() {
                    // Unknown or fenced: no more writes under this grant.
                    break;
                }
                tokio::time::sleep(cfg.think).await;
            }
            let mut released = false;
            for _ in 0..3 {
                let m = c.any_member();
                let release = c
                    .exec(
                        m,
                        Call::LockRelease {
                            name: LOCK.into(),
                            key: grant.key.clone(),
                        },
                    )
                    .await;
                if !release.is_info() {
                    released = true;
                    break;
                }
                tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
            }
            // A grant whose release stayed unknown ends with its session.
            abandon = !released;
            tokio::time::sleep(cfg.think * 4).await;
        }
        life.done.store(true, Ordering::Relaxed);
        ka = match keepalives.await {
            Ok(ka) => ka,
            Err(_) => return,
        };
        // A session with a contender nobody will release is closed (its
        // contenders go with it); others are closed or left to expire.
        if !stop.load(Ordering::Relaxed)
            && life.alive(c.rec.now_us())
            && (abandon || c.rng.gen_bool(0.5))
        {
            let m = c.any_member();
            c.exec(m, Call::CloseSession { session: sid }).await;
        }
    }
}

/// What a watcher shares with the run: the fence zxid to reach (0: not yet)
/// and the order to give up.
#[derive(Default)]
pub struct WatchControl {
    pub fence: std::sync::atomic::AtomicU64,
    pub give_up: AtomicBool,
}

/// No SSE message for this long: the stream is dead (progress events come
/// every few hundred ms); the watcher resumes elsewhere.
const WATCH_IDLE: Duration = Duration::from_secs(2);

/// One SSE message: event name, data, id.
#[derive(Default, Debug)]
struct SseMessage {
    data: String,
    id: Option<String>,
}

/// Splits bytes into SSE messages (comments skipped, CRLF accepted).
#[derive(Default)]
struct Sse {
    buf: Vec<u8>,
    current: SseMessage,
}

impl Sse {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseMessage>) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let mut line = &self.buf[start..start + nl];
            start += nl + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if line.is_empty() {
                let m = std::mem::take(&mut self.current);
                if !m.data.is_empty() {
                    out.push(m);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                "id" => self.current.id = Some(value.to_string()),
                _ => {}
            }
        }
        self.buf.drain(..start);
    }
}

/// Opens one stream on member `(member, base)` and reads it until it ends,
/// the fence is reached, the run gives up, or `rotate_after` passes.
#[allow(clippy::too_many_arguments)]
pub async fn watch_segment(
    http: &reqwest::Client,
    rec: &Recorder,
    watcher: u64,
    (member, base): (u64, &str),
    from_zxid: Option<u64>,
    floor: u64,
    rotate_after: Option<Duration>,
    ctl: &WatchControl,
) -> WatchSegment {
    let mut seg = WatchSegment {
        watcher,
        member,
        prefix: WATCHED.into(),
        from_zxid,
        start_us: rec.now_us(),
        end_us: 0,
        start_zxid: None,
        covered_zxid: None,
        events: Vec::new(),
        end: String::new(),
        compacted: false,
        oldest_zxid: None,
        reference: false,
    };
    let mut url = format!("{base}/v1/events{WATCHED}?recursive=true");
    if let Some(f) = from_zxid {
        url.push_str(&format!("&from_zxid={f}"));
    }
    let mut req = http.get(&url);
    if floor > 0 {
        req = req.header("X-Keeper-Min-Zxid", floor.to_string());
    }
    let resp = match tokio::time::timeout(Duration::from_secs(3), req.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            seg.end = format!("connect: {e}");
            seg.end_us = rec.now_us();
            return seg;
        }
        Err(_) => {
            seg.end = "no answer within 3 s".into();
            seg.end_us = rec.now_us();
            return seg;
        }
    };
    let status = resp.status().as_u16();
    if status != 200 {
        let body: Value = tokio::time::timeout(Duration::from_secs(2), resp.json())
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("").to_string();
        seg.compacted = status == 410 && code == "Compacted";
        seg.oldest_zxid = body["error"]["oldest_zxid"].as_u64();
        seg.end = format!("refused {status} {code}");
        seg.end_us = rec.now_us();
        return seg;
    }
    seg.start_zxid = from_zxid;
    seg.covered_zxid = from_zxid;
    let mut resp = resp;
    let mut sse = Sse::default();
    let mut pending: Vec<WatchEvent> = Vec::new();
    let opened = tokio::time::Instant::now();
    let fence_reached = |seg: &WatchSegment| {
        let f = ctl.fence.load(Ordering::Relaxed);
        f > 0 && seg.covered_zxid.is_some_and(|c| c >= f)
    };
    loop {
        if fence_reached(&seg) {
            seg.end = "fence reached".into();
            break;
        }
        if ctl.give_up.load(Ordering::Relaxed) {
            seg.end = "gave up".into();
            break;
        }
        if rotate_after.is_some_and(|r| opened.elapsed() >= r)
            && ctl.fence.load(Ordering::Relaxed) == 0
        {
            seg.end = "rotated".into();
            break;
        }
        let chunk = match tokio::time::timeout(WATCH_IDLE, resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => {
                seg.end = "eof".into();
                break;
            }
            Ok(Err(e)) => {
                seg.end = format!("error: {e}");
                break;
            }
            Err(_) => {
                seg.end = "idle".into();
                break;
            }
        };
        let mut messages = Vec::new();
        sse.feed(&chunk, &mut messages);
        let mut cut = None;
        for m in messages {
            let Ok(v) = serde_json::from_str::<Value>(&m.data) else {
                cut = Some(format!("undecodable message {:?}", m.data));
                break;
            };
            let kind = v["type"].as_str().unwrap_or("").to_string();
            let Some(zxid) = v["zxid"].as_u64() else {
                cut = Some(format!("message without zxid {:?}", m.data));
                break;
            };
            match kind.as_str() {
                "progress" | "cut_off" => {
                    if seg.start_zxid.is_none() {
                        seg.start_zxid = Some(zxid);
                    }
                    // Every change up to `zxid` has been sent.
                    let (done, rest): (Vec<_>, Vec<_>) =
                        pending.drain(..).partition(|e| e.zxid <= zxid);
                    seg.events.extend(done);
                    pending = rest;
                    seg.covered_zxid = Some(seg.covered_zxid.map_or(zxid, |c| c.max(zxid)));
                    if kind == "cut_off" {
                        cut = Some(format!("cut_off {}", v["reason"].as_str().unwrap_or("")));
                        break;
                    }
                }
                _ => {
                    pending.push(WatchEvent {
                        zxid,
                        kind,
                        path: v["path"].as_str().unwrap_or("").to_string(),
                    });
                    if m.id.is_some() {
                        seg.events.append(&mut pending);
                        seg.covered_zxid = Some(seg.covered_zxid.map_or(zxid, |c| c.max(zxid)));
                    }
                }
            }
        }
        if let Some(why) = cut {
            seg.end = why;
            break;
        }
    }
    seg.end_us = rec.now_us();
    seg
}

/// A watcher: one recursive stream on [`WATCHED`] at a time, starting on
/// member index `first`, resuming on the next member with `from_zxid` when
/// it ends (and every 3-8 s while no fence is set), restarting fresh after
/// `410 Compacted`; until its stream covers the fence or the run gives up.
pub async fn watcher(
    id: u64,
    members: Vec<(u64, String)>,
    rec: Recorder,
    first: usize,
    ctl: Arc<WatchControl>,
    seed: u64,
) {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("reqwest client");
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut resume: Option<u64> = None;
    let mut floor = 0u64;
    let mut m = first % members.len();
    while !ctl.give_up.load(Ordering::Relaxed) {
        let rotate = Duration::from_millis(rng.gen_range(3_000..8_000));
        let (member, base) = &members[m];
        let seg = watch_segment(
            &http,
            &rec,
            id,
            (*member, base),
            resume,
            floor,
            Some(rotate),
            &ctl,
        )
        .await;
        let opened = seg.start_zxid.is_some();
        if seg.compacted {
            resume = None;
        } else if let Some(c) = seg.covered_zxid {
            resume = Some(c);
            floor = floor.max(c);
        }
        let done = seg.end == "fence reached";
        rec.watch(seg);
        if done {
            return;
        }
        m = (m + 1) % members.len();
        if !opened {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
