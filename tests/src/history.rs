//! The history of a chaos run: every client operation with its invocation time,
//! completion time and result, and every fault the nemesis injected.
//!
//! The workload ([`crate::workload`]) appends [`Op`]s to a shared [`Recorder`]; the
//! nemesis ([`crate::nemesis`]) appends [`Fault`]s; the checkers ([`crate::check`])
//! read the finished [`History`]. A history is written as JSON lines (one `Op` or
//! `Fault` per line) so a failing run can be read and re-checked later.
//!
//! Times are microseconds since the run started, on one monotonic clock shared by
//! every client and the nemesis (all processes are on one machine).

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// `GET /v1/nodes{key}`; `linearizable` adds `?consistency=linearizable`.
    Get { key: String, linearizable: bool },
    /// `PUT /v1/nodes{key}` with `version` (-1: any); with `fence`, it
    /// applies only while the fence's token holds its lock (else `Fenced`).
    Set {
        key: String,
        value: String,
        version: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<Fence>,
    },
    /// `POST /v1/nodes{key}` (persistent): create-if-absent.
    Create { key: String, value: String },
    /// `DELETE /v1/nodes{key}?version=`.
    Delete { key: String, version: i64 },
    /// `POST /v1/txn`: an atomic multi.
    Txn { ops: Vec<TxnOp> },
    /// `GET /v1/children{path}`, every page; the names are joined by `\n` in
    /// the outcome's `created`.
    List { path: String },
    /// `POST /v1/nodes{prefix}` with mode persistent_sequential.
    CreateSeq { prefix: String },
    /// `POST /v1/sessions`.
    OpenSession { timeout_ms: u64 },
    /// `POST /v1/sessions/{id}/keepalive`.
    Keepalive { session: u64 },
    /// `DELETE /v1/sessions/{id}`.
    CloseSession { session: u64 },
    /// `POST /v1/nodes{path}` with mode ephemeral, owned by `session`.
    CreateEphemeral { path: String, session: u64 },
    /// `POST /v1/locks/{name}/acquire` for `session`, waiting at most
    /// `wait_ms`; a grant is the outcome's `grant`.
    LockAcquire {
        name: String,
        session: u64,
        wait_ms: u64,
    },
    /// `DELETE /v1/locks/{name}/{key}`: releases a grant (deletes the contender).
    LockRelease { name: String, key: String },
}

/// The `fence` of a write: lock name and fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub lock: String,
    pub token: u64,
}

/// A granted lock: the contender's key and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub key: String,
    pub token: u64,
}

/// One operation of a multi.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnOp {
    Check {
        key: String,
        version: i64,
    },
    Set {
        key: String,
        value: String,
        version: i64,
    },
}

/// What a node looked like in an answer (data and the Stat fields checkers use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub value: String,
    pub version: i64,
    pub czxid: u64,
    pub mzxid: u64,
    pub ephemeral_owner: u64,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer.
    Ok {
        /// The node read or written (sets, creates, reads); `None` for deletes,
        /// keepalives, multis.
        node: Option<Seen>,
        /// Node stats of a multi's results, in order (set results only have one).
        results: Vec<Seen>,
        /// The path created (sequential creates).
        created: Option<String>,
        /// A session opened or kept alive: its id and granted timeout.
        session: Option<(u64, u64)>,
        /// A lock acquire's grant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<Grant>,
    },
    /// A definite failure: the request was refused or ran and failed
    /// deterministically (404, 409, 410, 400...). It did not change the state.
    Fail {
        status: u16,
        code: String,
        /// The failing op of a multi.
        index: Option<usize>,
    },
    /// Unknown whether it took effect: a timeout, a 503, a broken connection.
    Info { reason: String },
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the run, in invocation order of each client.
    pub id: u64,
    /// The client (one logical process: it runs one operation at a time).
    pub client: u64,
    /// Which member the request went to.
    pub member: u64,
    pub call: Call,
    /// `X-Keeper-Min-Zxid` sent, if any.
    pub min_zxid: Option<u64>,
    /// Invocation time (µs since the run started).
    pub invoke_us: u64,
    /// Completion time (µs); for `Info` outcomes, when the client gave up.
    pub complete_us: u64,
    pub outcome: Outcome,
    /// `X-Keeper-Zxid` of the answer, if any.
    pub zxid: Option<u64>,
    /// Part of the final read-back after the run healed (not under faults).
    #[serde(default)]
    pub final_read: bool,
}

impl Op {
    /// A 2xx answer.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }
    /// A definite failure.
    pub fn is_fail(&self) -> bool {
        matches!(self.outcome, Outcome::Fail { .. })
    }
    /// Unknown outcome.
    pub fn is_info(&self) -> bool {
        matches!(self.outcome, Outcome::Info { .. })
    }
    /// The failure code, if a definite failure.
    pub fn fail_code(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Fail { code, .. } => Some(code),
            _ => None,
        }
    }
    /// The node of an `Ok` answer.
    pub fn node(&self) -> Option<&Seen> {
        match &self.outcome {
            Outcome::Ok { node, .. } => node.as_ref(),
            _ => None,
        }
    }
}

/// A fault the nemesis injected, and when it was undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The fault's kind (e.g. `kill-leader`, `isolate-leader`).
    pub kind: String,
    /// What exactly was done (members, links, durations).
    pub detail: String,
    pub start_us: u64,
    /// When it was undone (`None`: it lasted until the final heal).
    pub end_us: Option<u64>,
}

/// One change event as a watch stream delivered it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WatchEvent {
    pub zxid: u64,
    /// `created`, `deleted`, `data_changed` or `children_changed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
}

/// One connection of a watcher's `GET /v1/events{prefix}?recursive=true`
/// stream. A watcher whose stream drops (or that moves on) resumes on another
/// member with `from_zxid` = the `covered_zxid` of its last segment: a new
/// segment. Only changes of complete zxids are kept (the last change of a
/// zxid carries the SSE `id:`; a progress event completes every zxid up to
/// its own): a half-delivered zxid is sent again after a resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSegment {
    /// The watcher (one logical client holding one stream at a time).
    pub watcher: u64,
    /// The member the stream went to.
    pub member: u64,
    /// The watched prefix (recursive).
    pub prefix: String,
    /// `from_zxid` asked; `None`: a fresh stream, which starts at the
    /// member's applied zxid (its first progress event).
    pub from_zxid: Option<u64>,
    pub start_us: u64,
    pub end_us: u64,
    /// The stream covers the changes after this zxid (`from_zxid`, or the
    /// first progress event of a fresh stream); `None`: it never opened.
    pub start_zxid: Option<u64>,
    /// Every change up to this zxid was delivered (the last complete zxid,
    /// progress or cut-off zxid); the segment's window is
    /// `(start_zxid, covered_zxid]`.
    pub covered_zxid: Option<u64>,
    /// The changes of complete zxids, in the order delivered.
    pub events: Vec<WatchEvent>,
    /// How it ended (`eof`, `error: ...`, `idle`, `cut_off <reason>`,
    /// `rotated`, `fence reached`, `refused <status> <code>`...).
    pub end: String,
    /// Refused `410 Compacted`: the watcher restarts with a fresh stream
    /// (a legitimate gap, counted in the report).
    #[serde(default)]
    pub compacted: bool,
    /// With `compacted`: the oldest zxid the member could resume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_zxid: Option<u64>,
    /// The reference: a replay from a healthy member after healing, from the
    /// earliest zxid any watcher covered up to the fence write.
    #[serde(default)]
    pub reference: bool,
}

/// One line of the JSON-lines history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Op(Op),
    Fault(Fault),
    Watch(WatchSegment),
}

/// A finished history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub watches: Vec<WatchSegment>,
}

impl History {
    /// Writes the history as JSON lines (ops by invocation time, then faults,
    /// then watch segments).
    pub fn write_jsonl(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for op in &self.ops {
            serde_json::to_writer(&mut out, op)?;
            out.write_all(b"\n")?;
        }
        for f in &self.faults {
            serde_json::to_writer(&mut out, f)?;
            out.write_all(b"\n")?;
        }
        for w in &self.watches {
            serde_json::to_writer(&mut out, w)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Reads a history written by [`History::write_jsonl`].
    pub fn read_jsonl(path: &std::path::Path) -> Result<History, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let mut h = History::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(line) {
                Ok(Line::Op(op)) => h.ops.push(op),
                Ok(Line::Fault(f)) => h.faults.push(f),
                Ok(Line::Watch(w)) => h.watches.push(w),
                Err(e) => return Err(format!("line {}: {e}", i + 1)),
            }
        }
        Ok(h)
    }
}

/// The shared sink of a running history.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<History>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            inner: Arc::new(Mutex::new(History::default())),
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// A fresh operation id.
    pub fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a finished operation.
    pub fn op(&self, op: Op) {
        self.lock().ops.push(op);
    }

    /// Appends a finished watch stream segment.
    pub fn watch(&self, segment: WatchSegment) {
        self.lock().watches.push(segment);
    }

    /// Marks op `id` as part of the final read-back after healing.
    pub fn mark_final(&self, id: u64) {
        if let Some(op) = self.lock().ops.iter_mut().rev().find(|o| o.id == id) {
            op.final_read = true;
        }
    }

    /// Records a fault starting now; returns its index for [`Recorder::end_fault`].
    pub fn start_fault(&self, kind: &str, detail: String) -> usize {
        let start_us = self.now_us();
        let mut h = self.lock();
        h.faults.push(Fault {
            kind: kind.to_string(),
            detail,
            start_us,
            end_us: None,
        });
        h.faults.len() - 1
    }

    /// Marks fault `index` undone now.
    pub fn end_fault(&self, index: usize) {
        let now = self.now_us();
        if let Some(f) = self.lock().faults.get_mut(index) {
            if f.end_us.is_none() {
                f.end_us = Some(now);
            }
        }
    }

    /// Marks every open fault undone now.
    pub fn end_all_faults(&self) {
        let now = self.now_us();
        for f in &mut self.lock().faults {
            if f.end_us.is_none() {
                f.end_us = Some(now);
            }
        }
    }

    /// The history so far, ops sorted by invocation time.
    pub fn snapshot(&self) -> History {
        let mut h = self.lock().clone();
        h.ops.sort_by_key(|o| (o.invoke_us, o.id));
        h.watches.sort_by_key(|w| (w.watcher, w.start_us));
        h
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}
