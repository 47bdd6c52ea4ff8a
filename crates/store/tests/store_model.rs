//! Model-based test: random sequences of creates (all modes), sets, deletes,
//! checks, multis, session create/close and reaps, with restarts mixed in, run
//! against the RocksDB store and against `Model`, a deliberately simple
//! BTreeMap implementation of the same rules (whole-model clone for multi
//! rollback, linear scans for children, ephemerals and reap candidates).
//! Every outcome, event list, stat, children page, session list, reap
//! candidate list, the log and `tree_digest` must agree.
//!
//! Reproduce a failure with the seed it prints:
//! `KEEPER_STORE_SEED=<seed> cargo test -p keeper-store --test store_model`.

use bytes::Bytes;
use keeper_store::*;
use keeper_zab::Zxid;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::collections::BTreeMap;

const MAX_DATA: usize = 16;
const MAX_PATH: usize = 40;

fn config() -> StoreConfig {
    StoreConfig {
        max_data_bytes: MAX_DATA,
        max_path_bytes: MAX_PATH,
        max_children_page: 4,
        sync_log: false,
        ..StoreConfig::default()
    }
}

// ---- the model -------------------------------------------------------------

#[derive(Debug, Clone)]
struct MNode {
    data: Bytes,
    stat: Stat,
    mode: NodeMode,
    ttl_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Model {
    nodes: BTreeMap<String, MNode>,
    sessions: BTreeMap<SessionId, u64>,
}

fn parent_of(path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    Some(if i == 0 {
        "/".to_string()
    } else {
        path[..i].to_string()
    })
}

fn due(n: &MNode) -> Option<u64> {
    if n.stat.num_children > 0 {
        None
    } else if n.mode == NodeMode::Container && n.stat.cversion > 0 {
        Some(0)
    } else if matches!(n.mode, NodeMode::Ttl | NodeMode::TtlSequential) {
        Some(n.stat.mtime + n.ttl_ms.unwrap_or(0))
    } else {
        None
    }
}

fn bad(message: &str) -> TxnError {
    TxnError::BadArguments {
        message: message.into(),
    }
}

fn version_ok(path: &str, expected: i32, stat: &Stat) -> Result<(), TxnError> {
    if expected == -1 || expected == stat.version {
        Ok(())
    } else {
        Err(TxnError::BadVersion {
            path: path.into(),
            expected,
            actual: stat.version,
        })
    }
}

struct Ctx {
    zxid: u64,
    time: u64,
    events: Vec<ChangeEvent>,
}

impl Ctx {
    /// A change and the state it left: `node` is the changed node's stat and
    /// data (the parent's stat alone for `ChildrenChanged`, nothing for `Deleted`).
    fn ev(&mut self, path: &str, kind: ChangeKind, stat: Option<Stat>, data: Option<Bytes>) {
        self.events.push(ChangeEvent {
            zxid: Zxid(self.zxid),
            path: path.into(),
            kind,
            stat,
            data,
        });
    }
}

impl Model {
    fn new() -> Model {
        let mut nodes = BTreeMap::new();
        let root = MNode {
            data: Bytes::new(),
            stat: Stat::default(),
            mode: NodeMode::Persistent,
            ttl_ms: None,
        };
        nodes.insert("/".to_string(), root);
        Model {
            nodes,
            sessions: BTreeMap::new(),
        }
    }

    fn op(&mut self, c: &mut Ctx, op: &Op) -> Result<OpResult, TxnError> {
        match op {
            Op::Create {
                path,
                data,
                mode,
                session,
                ttl_ms,
            } => {
                if mode.is_ttl() && ttl_ms.is_none() {
                    return Err(bad("ttl modes need ttl_ms"));
                }
                if mode.is_ttl() && *ttl_ms == Some(0) {
                    return Err(bad("ttl_ms must be above 0"));
                }
                if !mode.is_ttl() && ttl_ms.is_some() {
                    return Err(bad("ttl_ms is only for ttl modes"));
                }
                if mode.is_ephemeral() && *session == 0 {
                    return Err(bad("ephemeral nodes need a session"));
                }
                let shape = if mode.is_sequential() {
                    format!("{path}0000000000")
                } else {
                    path.clone()
                };
                validate_path(&shape, MAX_PATH)?;
                if data.len() > MAX_DATA {
                    return Err(TxnError::TooLarge {
                        size: data.len(),
                        limit: MAX_DATA,
                    });
                }
                if mode.is_ephemeral() && !self.sessions.contains_key(session) {
                    return Err(TxnError::SessionExpired { id: *session });
                }
                let Some(parent) = parent_of(&shape) else {
                    return Err(TxnError::NodeExists { path: "/".into() });
                };
                let Some(p) = self.nodes.get(&parent) else {
                    return Err(TxnError::NoNode { path: parent });
                };
                let full = if mode.is_sequential() {
                    format!("{path}{:010}", p.stat.cversion)
                } else {
                    shape
                };
                if self.nodes.contains_key(&full) {
                    return Err(TxnError::NodeExists { path: full });
                }
                if p.mode.is_ephemeral() {
                    return Err(TxnError::NoChildrenForEphemerals { path: full });
                }
                let stat = Stat {
                    czxid: c.zxid,
                    mzxid: c.zxid,
                    pzxid: c.zxid,
                    ctime: c.time,
                    mtime: c.time,
                    ephemeral_owner: if mode.is_ephemeral() { *session } else { 0 },
                    data_length: data.len() as u32,
                    ..Stat::default()
                };
                self.nodes.insert(
                    full.clone(),
                    MNode {
                        data: data.clone(),
                        stat,
                        mode: *mode,
                        ttl_ms: *ttl_ms,
                    },
                );
                let p = self.nodes.get_mut(&parent).unwrap();
                p.stat.cversion += 1;
                p.stat.pzxid = c.zxid;
                p.stat.num_children += 1;
                let parent_stat = p.stat;
                c.ev(&full, ChangeKind::Created, Some(stat), Some(data.clone()));
                c.ev(
                    &parent,
                    ChangeKind::ChildrenChanged,
                    Some(parent_stat),
                    None,
                );
                Ok(OpResult::Created { path: full, stat })
            }
            Op::Set {
                path,
                data,
                version,
            } => {
                validate_path(path, MAX_PATH)?;
                if data.len() > MAX_DATA {
                    return Err(TxnError::TooLarge {
                        size: data.len(),
                        limit: MAX_DATA,
                    });
                }
                let n = self
                    .nodes
                    .get_mut(path)
                    .ok_or_else(|| TxnError::NoNode { path: path.clone() })?;
                version_ok(path, *version, &n.stat)?;
                n.stat.version += 1;
                n.stat.mzxid = c.zxid;
                n.stat.mtime = c.time;
                n.stat.data_length = data.len() as u32;
                n.data = data.clone();
                let stat = n.stat;
                c.ev(
                    path,
                    ChangeKind::DataChanged,
                    Some(stat),
                    Some(data.clone()),
                );
                Ok(OpResult::Set {
                    path: path.clone(),
                    stat,
                })
            }
            Op::Delete { path, version } => {
                validate_path(path, MAX_PATH)?;
                if path == "/" {
                    return Err(bad("the root cannot be deleted"));
                }
                let n = self
                    .nodes
                    .get(path)
                    .ok_or_else(|| TxnError::NoNode { path: path.clone() })?;
                version_ok(path, *version, &n.stat)?;
                if n.stat.num_children > 0 {
                    return Err(TxnError::NotEmpty { path: path.clone() });
                }
                self.remove(c, path);
                Ok(OpResult::Deleted { path: path.clone() })
            }
            Op::Check { path, version } => {
                validate_path(path, MAX_PATH)?;
                let n = self
                    .nodes
                    .get(path)
                    .ok_or_else(|| TxnError::NoNode { path: path.clone() })?;
                version_ok(path, *version, &n.stat)?;
                Ok(OpResult::Checked { path: path.clone() })
            }
        }
    }

    fn remove(&mut self, c: &mut Ctx, path: &str) {
        self.nodes.remove(path);
        let parent = parent_of(path).unwrap();
        let p = self.nodes.get_mut(&parent).unwrap();
        p.stat.cversion += 1;
        p.stat.pzxid = c.zxid;
        p.stat.num_children -= 1;
        let parent_stat = p.stat;
        c.ev(path, ChangeKind::Deleted, None, None);
        c.ev(
            &parent,
            ChangeKind::ChildrenChanged,
            Some(parent_stat),
            None,
        );
    }

    fn apply(&mut self, zxid: u64, entry: &Entry) -> (TxnOutcome, Vec<ChangeEvent>) {
        let mut c = Ctx {
            zxid,
            time: entry.time_ms,
            events: Vec::new(),
        };
        let outcome = match &entry.txn {
            Txn::Op(op) => {
                let backup = self.clone();
                let r = self.op(&mut c, op);
                if r.is_err() {
                    *self = backup;
                    c.events.clear();
                }
                TxnOutcome::Op(r)
            }
            Txn::Multi(ops) => {
                let backup = self.clone();
                let mut results = Vec::new();
                let mut failed = None;
                for (index, op) in ops.iter().enumerate() {
                    match self.op(&mut c, op) {
                        Ok(r) => results.push(r),
                        Err(error) => {
                            failed = Some(MultiError { index, error });
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => {
                        *self = backup;
                        c.events.clear();
                        TxnOutcome::Multi(Err(e))
                    }
                    None => TxnOutcome::Multi(Ok(results)),
                }
            }
            Txn::CreateSession { timeout_ms } => {
                self.sessions.insert(zxid, *timeout_ms);
                TxnOutcome::SessionCreated {
                    id: zxid,
                    timeout_ms: *timeout_ms,
                }
            }
            Txn::CloseSession { id } => {
                if self.sessions.remove(id).is_none() {
                    TxnOutcome::SessionClosed(Err(TxnError::SessionExpired { id: *id }))
                } else {
                    let owned: Vec<String> = self
                        .nodes
                        .iter()
                        .filter(|(_, n)| n.stat.ephemeral_owner == *id)
                        .map(|(p, _)| p.clone())
                        .collect();
                    for p in &owned {
                        self.remove(&mut c, p);
                    }
                    TxnOutcome::SessionClosed(Ok(owned))
                }
            }
            Txn::Reap { candidates } => {
                let mut paths = Vec::new();
                for cand in candidates {
                    let reap = self.nodes.get(&cand.path).is_some_and(|n| {
                        cand.path != "/"
                            && n.stat.czxid == cand.czxid
                            && due(n).is_some_and(|d| d <= entry.time_ms)
                    });
                    if reap {
                        self.remove(&mut c, &cand.path);
                        paths.push(cand.path.clone());
                    }
                }
                TxnOutcome::Reaped { paths }
            }
            Txn::Noop => TxnOutcome::Noop,
            Txn::Fenced { fence, txn } | Txn::FencedBy { fence, txn, .. } => {
                let scope = match &entry.txn {
                    Txn::FencedBy { scope, .. } => *scope,
                    _ => FenceScope::Lock,
                };
                let refuse = |error: TxnError| match &**txn {
                    Txn::Multi(_) => TxnOutcome::Multi(Err(MultiError { index: 0, error })),
                    _ => TxnOutcome::Op(Err(error)),
                };
                if !matches!(&**txn, Txn::Op(_) | Txn::Multi(_)) {
                    let message = "a fence guards only an op or a multi".to_string();
                    return (refuse(TxnError::BadArguments { message }), Vec::new());
                }
                let dir = match scope.dir(&fence.lock, MAX_PATH) {
                    Ok(dir) => dir,
                    Err(e) => return (refuse(e), Vec::new()),
                };
                // The holder: the contender child with the smallest name.
                let holder = self
                    .nodes
                    .iter()
                    .filter(|(p, _)| {
                        p.strip_prefix(&format!("{dir}/"))
                            .is_some_and(is_contender_name)
                    })
                    .min_by(|a, b| a.0.cmp(b.0))
                    .map(|(_, n)| n.stat.czxid);
                if holder != Some(fence.token) {
                    let error = TxnError::Fenced {
                        lock: fence.lock.clone(),
                        token: fence.token,
                        holder,
                    };
                    return (refuse(error), Vec::new());
                }
                let inner = Entry {
                    time_ms: entry.time_ms,
                    txn: (**txn).clone(),
                };
                return self.apply(zxid, &inner);
            }
        };
        (outcome, c.events)
    }

    fn children(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| parent_of(k).as_deref() == Some(path))
            .map(|k| k.rsplit('/').next().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    fn reap_candidates(&self, now: u64, limit: usize) -> Vec<ReapCandidate> {
        let mut due_nodes: Vec<(u64, String, u64)> = self
            .nodes
            .iter()
            .filter_map(|(p, n)| {
                due(n)
                    .filter(|d| *d <= now)
                    .map(|d| (d, p.clone(), n.stat.czxid))
            })
            .collect();
        due_nodes.sort();
        due_nodes
            .into_iter()
            .take(limit)
            .map(|(_, path, czxid)| ReapCandidate { path, czxid })
            .collect()
    }

    fn digest(&self) -> u64 {
        let nodes = self
            .nodes
            .iter()
            .map(|(p, n)| node_digest(p, &n.data, &n.stat, n.mode, n.ttl_ms));
        let sessions = self.sessions.iter().map(|(id, t)| {
            session_digest(&SessionInfo {
                id: *id,
                timeout_ms: *t,
            })
        });
        nodes.chain(sessions).fold(0u64, u64::wrapping_add)
    }
}

// ---- generated actions -----------------------------------------------------

/// A path, chosen at generation time or resolved against the model's current nodes.
#[derive(Debug, Clone)]
enum PathSel {
    Fixed(String),
    Existing(u16),
    ChildOf(u16, &'static str),
}

#[derive(Debug, Clone)]
enum SessSel {
    Known(u8),
    Zero,
    Unknown,
}

#[derive(Debug, Clone)]
enum OpGen {
    Create {
        path: PathSel,
        data: Vec<u8>,
        mode: NodeMode,
        session: SessSel,
        ttl_ms: Option<u64>,
    },
    Set {
        path: PathSel,
        data: Vec<u8>,
        version: i32,
    },
    Delete {
        path: PathSel,
        version: i32,
    },
    Check {
        path: PathSel,
        version: i32,
    },
}

#[derive(Debug, Clone)]
enum Action {
    Op(OpGen),
    Multi(Vec<OpGen>),
    CreateSession(u16),
    CloseSession(SessSel),
    /// Ask for candidates at now + query_ahead (up to limit), apply them at now + apply_ahead.
    Reap {
        query_ahead: u16,
        apply_ahead: u16,
        limit: usize,
        stale: Option<PathSel>,
    },
    Restart,
    Noop,
    /// Several txns (ops, multis, sessions, no-ops) applied with one
    /// `apply_batch`; each is resolved against the model as it stands after
    /// the ones before it.
    Batch(Vec<Action>),
}

/// A path for a create (`for_create`: mostly a new child of an existing node)
/// or for set/delete/check (mostly an existing node).
fn path_sel(for_create: bool) -> impl Strategy<Value = PathSel> {
    let (existing, child) = if for_create { (1, 8) } else { (8, 1) };
    let fixed = prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=2)
        .prop_map(|segs| PathSel::Fixed(format!("/{}", segs.join("/"))));
    let odd = prop::sample::select(vec![
        "/",
        "/a/",
        "//a",
        "/a/..",
        "",
        "a",
        "/a\u{1}",
        "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p",
    ])
    .prop_map(|p| PathSel::Fixed(p.to_string()));
    prop_oneof![
        2 => fixed,
        1 => odd,
        existing => any::<u16>().prop_map(PathSel::Existing),
        child => (any::<u16>(), prop::sample::select(vec!["x", "y", "z", "w", "v", "s-", ""])).prop_map(|(i, n)| PathSel::ChildOf(i, n)),
    ]
}

fn sess_sel() -> impl Strategy<Value = SessSel> {
    prop_oneof![16 => any::<u8>().prop_map(SessSel::Known), 1 => Just(SessSel::Zero), 1 => Just(SessSel::Unknown)]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![10 => prop::collection::vec(any::<u8>(), 0..6), 1 => Just(vec![9u8; MAX_DATA + 1]), 1 => Just(vec![0u8; MAX_DATA])]
}

fn mode() -> impl Strategy<Value = NodeMode> {
    prop::sample::select(vec![
        NodeMode::Persistent,
        NodeMode::Persistent,
        NodeMode::Persistent,
        NodeMode::Ephemeral,
        NodeMode::PersistentSequential,
        NodeMode::EphemeralSequential,
        NodeMode::Container,
        NodeMode::Ttl,
        NodeMode::TtlSequential,
    ])
}

fn op_gen() -> impl Strategy<Value = OpGen> {
    let version = prop_oneof![3 => Just(-1i32), 2 => 0i32..3];
    let create = (
        path_sel(true),
        data(),
        mode(),
        sess_sel(),
        prop_oneof![6 => Just(false), 1 => Just(true)],
        0u64..300,
    )
        .prop_map(|(path, data, mode, session, odd_ttl, ttl)| {
            // Mostly well-formed ttl arguments; sometimes the wrong way round.
            let ttl_ms = match (mode.is_ttl(), odd_ttl) {
                (true, false) => Some(ttl.max(1)),
                (true, true) => [None, Some(0)][(ttl % 2) as usize],
                (false, false) => None,
                (false, true) => Some(ttl),
            };
            OpGen::Create {
                path,
                data,
                mode,
                session,
                ttl_ms,
            }
        });
    prop_oneof![
        8 => create,
        3 => (path_sel(false), data(), version.clone()).prop_map(|(path, data, version)| OpGen::Set { path, data, version }),
        2 => (path_sel(false), version.clone()).prop_map(|(path, version)| OpGen::Delete { path, version }),
        1 => (path_sel(false), version).prop_map(|(path, version)| OpGen::Check { path, version }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => op_gen().prop_map(Action::Op),
        3 => prop::collection::vec(op_gen(), 0..4).prop_map(Action::Multi),
        2 => (1u16..10_000).prop_map(Action::CreateSession),
        1 => sess_sel().prop_map(Action::CloseSession),
        3 => (0u16..400, 0u16..400, 1usize..6, prop::option::of(path_sel(false)))
            .prop_map(|(query_ahead, apply_ahead, limit, stale)| Action::Reap { query_ahead, apply_ahead, limit, stale }),
        1 => Just(Action::Restart),
        1 => Just(Action::Noop),
        3 => prop::collection::vec(batch_item(), 1..8).prop_map(Action::Batch),
    ]
}

fn batch_item() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => op_gen().prop_map(Action::Op),
        3 => prop::collection::vec(op_gen(), 0..4).prop_map(Action::Multi),
        2 => (1u16..10_000).prop_map(Action::CreateSession),
        2 => sess_sel().prop_map(Action::CloseSession),
        1 => Just(Action::Noop),
    ]
}

// ---- running a case --------------------------------------------------------

struct Run {
    dir: tempfile::TempDir,
    store: Option<Store>,
    model: Model,
    zxid: u64,
    now: u64,
    all_sessions: Vec<SessionId>,
    log: Vec<(Zxid, Vec<u8>)>,
}

fn fail<E: std::fmt::Debug>(e: E) -> TestCaseError {
    TestCaseError::fail(format!("{e:?}"))
}

impl Run {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn resolve_path(&self, sel: &PathSel) -> String {
        let existing = |i: u16| {
            let keys: Vec<&String> = self.model.nodes.keys().collect();
            keys[i as usize % keys.len()].clone()
        };
        match sel {
            PathSel::Fixed(p) => p.clone(),
            PathSel::Existing(i) => existing(*i),
            PathSel::ChildOf(i, name) => {
                let parent = existing(*i);
                if parent == "/" {
                    format!("/{name}")
                } else {
                    format!("{parent}/{name}")
                }
            }
        }
    }

    fn resolve_session(&self, sel: &SessSel) -> SessionId {
        match sel {
            SessSel::Known(i) if !self.all_sessions.is_empty() => {
                self.all_sessions[*i as usize % self.all_sessions.len()]
            }
            SessSel::Known(_) | SessSel::Zero => 0,
            SessSel::Unknown => 424_242,
        }
    }

    fn resolve_op(&self, g: &OpGen) -> Op {
        match g {
            OpGen::Create {
                path,
                data,
                mode,
                session,
                ttl_ms,
            } => Op::Create {
                path: self.resolve_path(path),
                data: Bytes::from(data.clone()),
                mode: *mode,
                session: self.resolve_session(session),
                ttl_ms: *ttl_ms,
            },
            OpGen::Set {
                path,
                data,
                version,
            } => Op::Set {
                path: self.resolve_path(path),
                data: Bytes::from(data.clone()),
                version: *version,
            },
            OpGen::Delete { path, version } => Op::Delete {
                path: self.resolve_path(path),
                version: *version,
            },
            OpGen::Check { path, version } => Op::Check {
                path: self.resolve_path(path),
                version: *version,
            },
        }
    }

    fn apply(&mut self, time_ms: u64, txn: Txn) -> Result<(), TestCaseError> {
        self.zxid += 1;
        let zxid = Zxid(self.zxid);
        let entry = Entry { time_ms, txn };
        let bytes = entry.encode();
        self.store()
            .append_log(&[(zxid, bytes.clone())])
            .map_err(fail)?;
        self.log.push((zxid, bytes));
        let got = self.store().apply(zxid, &entry).map_err(fail)?;
        let (outcome, events) = self.model.apply(self.zxid, &entry);
        prop_assert_eq!(&got.outcome, &outcome, "outcome of {:?}", entry);
        prop_assert_eq!(&got.events, &events, "events of {:?}", entry);
        prop_assert_eq!(self.store().last_applied(), zxid);
        if let TxnOutcome::SessionCreated { id, .. } = got.outcome {
            self.all_sessions.push(id);
        }
        Ok(())
    }

    /// Applies `items` with one `Store::apply_batch` and checks every
    /// outcome and event against the model applying them one by one.
    fn apply_batch(&mut self, items: &[Action]) -> Result<(), TestCaseError> {
        let mut entries = Vec::new();
        let mut expected = Vec::new();
        for item in items {
            let txn = match item {
                Action::Op(g) => Txn::Op(self.resolve_op(g)),
                Action::Multi(gs) => Txn::Multi(gs.iter().map(|g| self.resolve_op(g)).collect()),
                Action::CreateSession(t) => Txn::CreateSession {
                    timeout_ms: u64::from(*t),
                },
                Action::CloseSession(sel) => Txn::CloseSession {
                    id: self.resolve_session(sel),
                },
                _ => Txn::Noop,
            };
            self.zxid += 1;
            let entry = Entry {
                time_ms: self.now,
                txn,
            };
            let (outcome, events) = self.model.apply(self.zxid, &entry);
            if let TxnOutcome::SessionCreated { id, .. } = outcome {
                self.all_sessions.push(id);
            }
            let bytes = entry.encode();
            self.store()
                .append_log(&[(Zxid(self.zxid), bytes.clone())])
                .map_err(fail)?;
            self.log.push((Zxid(self.zxid), bytes));
            entries.push((Zxid(self.zxid), entry));
            expected.push((outcome, events));
        }
        let got = self
            .store()
            .apply_batch(entries.iter().map(|(z, e)| (*z, e)))
            .map_err(fail)?;
        prop_assert_eq!(got.len(), entries.len());
        for ((got, (outcome, events)), (zxid, entry)) in got.iter().zip(&expected).zip(&entries) {
            prop_assert_eq!(got.zxid, *zxid);
            prop_assert_eq!(&got.outcome, outcome, "outcome of {:?} in a batch", entry);
            prop_assert_eq!(&got.events, events, "events of {:?} in a batch", entry);
        }
        prop_assert_eq!(self.store().last_applied(), Zxid(self.zxid));
        Ok(())
    }

    fn step(&mut self, dt: u8, action: &Action) -> Result<(), TestCaseError> {
        self.now += u64::from(dt);
        match action {
            Action::Op(g) => {
                let op = self.resolve_op(g);
                self.apply(self.now, Txn::Op(op))?;
            }
            Action::Multi(gs) => {
                let ops = gs.iter().map(|g| self.resolve_op(g)).collect();
                self.apply(self.now, Txn::Multi(ops))?;
            }
            Action::CreateSession(t) => self.apply(
                self.now,
                Txn::CreateSession {
                    timeout_ms: u64::from(*t),
                },
            )?,
            Action::CloseSession(s) => {
                let id = self.resolve_session(s);
                self.apply(self.now, Txn::CloseSession { id })?;
            }
            Action::Reap {
                query_ahead,
                apply_ahead,
                limit,
                stale,
            } => {
                let q = self.now + u64::from(*query_ahead);
                let mut cands = self.store().reap_candidates(q, *limit).map_err(fail)?;
                prop_assert_eq!(
                    &cands,
                    &self.model.reap_candidates(q, *limit),
                    "reap candidates at {}",
                    q
                );
                if let Some(sel) = stale {
                    let path = self.resolve_path(sel);
                    let czxid = self.model.nodes.get(&path).map_or(7, |n| n.stat.czxid);
                    cands.push(ReapCandidate {
                        path: path.clone(),
                        czxid,
                    });
                    cands.push(ReapCandidate {
                        path,
                        czxid: czxid + 1,
                    });
                }
                self.now += u64::from(*apply_ahead);
                self.apply(self.now, Txn::Reap { candidates: cands })?;
            }
            Action::Restart => {
                self.store = None;
                self.store = Some(Store::open(self.dir.path(), config()).map_err(fail)?);
                prop_assert_eq!(self.store().last_applied(), Zxid(self.zxid));
                prop_assert_eq!(self.store().last_logged(), Zxid(self.zxid));
                let log = self.store().read_log(Zxid(0), usize::MAX).map_err(fail)?;
                prop_assert_eq!(&log, &self.log);
                self.compare_all()?;
            }
            Action::Noop => self.apply(self.now, Txn::Noop)?,
            Action::Batch(items) => self.apply_batch(items)?,
        }
        prop_assert_eq!(
            self.store().tree_digest().map_err(fail)?,
            self.model.digest(),
            "tree digest"
        );
        Ok(())
    }

    /// Every node's data and stat, every children listing (paged by 2 and by
    /// the configured maximum), the sessions, and a few absent paths.
    fn compare_all(&self) -> Result<(), TestCaseError> {
        let store = self.store();
        for (path, n) in &self.model.nodes {
            let got = store.get(path).map_err(fail)?;
            prop_assert_eq!(got, Some((n.data.clone(), n.stat)), "get {}", path);
            let want = self.model.children(path);
            prop_assert_eq!(want.len(), n.stat.num_children as usize);
            let mut paged = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store
                    .children(path, after.as_deref(), 2)
                    .map_err(fail)?
                    .ok_or_else(|| fail("no page"))?;
                prop_assert_eq!(page.stat, n.stat);
                paged.extend(page.children.iter().cloned());
                prop_assert_eq!(page.more, paged.len() < want.len(), "more flag of {}", path);
                if !page.more {
                    break;
                }
                after = page.children.last().cloned();
            }
            prop_assert_eq!(&paged, &want, "children of {}", path);
            let capped = store
                .children(path, None, usize::MAX)
                .map_err(fail)?
                .ok_or_else(|| fail("no page"))?;
            prop_assert_eq!(&capped.children[..], &want[..want.len().min(4)]);
        }
        for absent in ["/zz", "/a/zz", "/a/b/c/zz"] {
            prop_assert_eq!(store.get(absent).map_err(fail)?, None);
            prop_assert_eq!(store.children(absent, None, 2).map_err(fail)?, None);
        }
        let sessions: Vec<SessionInfo> = self
            .model
            .sessions
            .iter()
            .map(|(id, t)| SessionInfo {
                id: *id,
                timeout_ms: *t,
            })
            .collect();
        prop_assert_eq!(store.sessions().map_err(fail)?, sessions);
        Ok(())
    }
}

fn run_case(steps: &[(u8, Action)]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(fail)?;
    let store = Store::open(dir.path(), config()).map_err(fail)?;
    let mut run = Run {
        dir,
        store: Some(store),
        model: Model::new(),
        zxid: 0,
        now: 1_000,
        all_sessions: Vec::new(),
        log: Vec::new(),
    };
    // Most cases need a live session for their ephemerals.
    run.step(0, &Action::CreateSession(5_000))?;
    for (dt, action) in steps {
        run.step(*dt, action)?;
    }
    run.compare_all()?;
    // Everything survives a final restart.
    run.step(0, &Action::Restart)
}

#[test]
fn store_matches_the_model() {
    let seed: u64 = std::env::var("KEEPER_STORE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let cases: u32 = std::env::var("KEEPER_STORE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    eprintln!("store_model: seed {seed}, {cases} cases (reproduce: KEEPER_STORE_SEED={seed} cargo test -p keeper-store --test store_model)");
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = prop::collection::vec((0u8..40, action()), 1..150);
    match runner.run(&strategy, |steps| run_case(&steps)) {
        Ok(()) => {}
        Err(TestError::Fail(reason, steps)) => panic!(
            "store and model disagree: {reason}\nminimal steps: {steps:#?}\nreproduce: KEEPER_STORE_SEED={seed} cargo test -p keeper-store --test store_model"
        ),
        Err(e) => panic!("{e}\nreproduce: KEEPER_STORE_SEED={seed} cargo test -p keeper-store --test store_model"),
    }
}
