//! Linearizability of the register operations, per key group.
//!
//! The model is a set of znodes, each absent or `(value, version)`; the operations
//! are linearizable gets, sets (with `version` -1 or a CAS version),
//! create-if-absent, deletes and multis of checks and sets. Keys that a multi
//! touches together form one group and are checked together; every other key is
//! its own group (P-compositionality: a history is linearizable iff each group's
//! is).
//!
//! The search is Wing & Gong's with Lowe's memoization, as in Porcupine: walk the
//! calls in time order, linearize any call whose model step matches its observed
//! result and whose (linearized set, state) is new, and backtrack at a return whose
//! call is not linearized yet. Definite failures (`NoNode`, `NodeExists`,
//! `BadVersion`) are operations too: the model must fail them the same way.
//! Indeterminate operations (timeouts, 503) return at infinity and accept
//! whatever the model does (applied or not: linearized last, a write is as if
//! it never happened). Default (sequential) reads are not here: see
//! [`super::reads`].

use super::Verdict;
use crate::history::{Call, History, Op, Outcome, TxnOp};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One key's state in the model: absent, or `(value id, version)`.
type Reg = Option<(u32, i64)>;

/// A model operation on the keys of one group (key indexes into the group).
#[derive(Debug, Clone)]
enum MOp {
    Get(usize),
    Write(Vec<MWrite>),
}

#[derive(Debug, Clone)]
enum MWrite {
    Check(usize, i64),
    Set(usize, u32, i64),
    Create(usize, u32),
    Delete(usize, i64),
}

/// What the history says an operation returned.
#[derive(Debug, Clone)]
enum MOut {
    /// A get's answer.
    Read(Reg),
    /// A write's success: the new version of each set/create, in order.
    Done(Vec<i64>),
    /// A definite failure at op `index` with `code`.
    Failed(usize, String),
    /// Unknown: anything goes.
    Any,
}

struct MEntry {
    op_id: u64,
    mop: MOp,
    out: MOut,
    invoke: u64,
    ret: u64,
    /// Interchangeable indeterminate writes share a class (see [`classes`]).
    class: Option<usize>,
}

/// Most (linearized set, state) pairs remembered per group (a few GiB at most)
/// before the search answers `unknown`.
const MAX_CACHED_CONFIGURATIONS: usize = 5_000_000;

/// Placeholder for every value that no read ever returned.
const UNSEEN: u32 = u32::MAX;

/// Symmetry breaking for indeterminate writes whose values nobody read.
///
/// Such writes, when they have the same shape (same keys, versions, op kinds),
/// change the state identically (their values all map to [`UNSEEN`]) and all
/// return at infinity, so any linearization that uses a later-invoked one of
/// them while an earlier-invoked one is still pending can swap the two. The
/// search therefore linearizes each class in invocation order only. This
/// turns the 2^k subsets of k pending timeouts into k+1 choices, which is what
/// keeps histories with many timed-out writes (a killed leader) checkable.
/// Returns, per class, its members' entry indexes in invocation order.
fn classes(entries: &mut [MEntry]) -> Vec<Vec<usize>> {
    let mut by_shape: BTreeMap<String, usize> = BTreeMap::new();
    let mut classes: Vec<Vec<usize>> = Vec::new();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].invoke, i));
    for i in order {
        let e = &entries[i];
        let MOp::Write(ws) = &e.mop else { continue };
        let unseen = ws.iter().all(|w| match w {
            MWrite::Set(_, v, _) | MWrite::Create(_, v) => *v == UNSEEN,
            MWrite::Check(..) | MWrite::Delete(..) => true,
        });
        if !matches!(e.out, MOut::Any) || !unseen {
            continue;
        }
        let shape = format!("{ws:?}");
        let c = *by_shape.entry(shape).or_insert_with(|| {
            classes.push(Vec::new());
            classes.len() - 1
        });
        classes[c].push(i);
        entries[i].class = Some(c);
    }
    classes
}

/// The next state and the new versions of a multi that applied, or the index
/// and code of its first failing op.
type Applied = Result<(Vec<Reg>, Vec<i64>), (usize, &'static str)>;

/// Applies a multi atomically; `Err((index, code))` on the first failing op.
fn apply_writes(state: &[Reg], ws: &[MWrite]) -> Applied {
    let mut s = state.to_vec();
    let mut versions = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        match *w {
            MWrite::Check(k, ver) => match s[k] {
                None => return Err((i, "NoNode")),
                Some((_, v)) if ver != -1 && v != ver => return Err((i, "BadVersion")),
                Some(_) => {}
            },
            MWrite::Set(k, val, ver) => match s[k] {
                None => return Err((i, "NoNode")),
                Some((_, v)) if ver != -1 && v != ver => return Err((i, "BadVersion")),
                Some((_, v)) => {
                    s[k] = Some((val, v + 1));
                    versions.push(v + 1);
                }
            },
            MWrite::Create(k, val) => match s[k] {
                Some(_) => return Err((i, "NodeExists")),
                None => {
                    s[k] = Some((val, 0));
                    versions.push(0);
                }
            },
            MWrite::Delete(k, ver) => match s[k] {
                None => return Err((i, "NoNode")),
                Some((_, v)) if ver != -1 && v != ver => return Err((i, "BadVersion")),
                Some(_) => s[k] = None,
            },
        }
    }
    Ok((s, versions))
}

/// The model's step: `Some(next state)` if `out` is what `op` may return in `state`.
fn step(state: &[Reg], op: &MOp, out: &MOut) -> Option<Vec<Reg>> {
    match op {
        MOp::Get(k) => match out {
            MOut::Read(r) if *r == state[*k] => Some(state.to_vec()),
            MOut::Any => Some(state.to_vec()),
            _ => None,
        },
        MOp::Write(ws) => match (apply_writes(state, ws), out) {
            (Ok((next, _)), MOut::Any) => Some(next),
            (Err(_), MOut::Any) => Some(state.to_vec()),
            (Ok((next, versions)), MOut::Done(seen)) => {
                (seen.is_empty() || *seen == versions).then_some(next)
            }
            (Err((i, code)), MOut::Failed(j, seen)) => {
                (i == *j && code == seen).then(|| state.to_vec())
            }
            _ => None,
        },
    }
}

/// Result of searching one group.
#[derive(Debug)]
enum Search {
    Ok,
    /// Not linearizable: the op ids linearized at the deepest point, and the
    /// op whose return could not be satisfied there.
    Illegal {
        stuck_op: u64,
        depth: usize,
    },
    Budget,
}

fn search(entries: &mut [MEntry], nkeys: usize, budget: u64) -> Search {
    let n = entries.len();
    if n == 0 {
        return Search::Ok;
    }
    let class_members = classes(entries);
    // Per class: how many of its members (a prefix, in invocation order) are linearized.
    let mut class_done = vec![0usize; class_members.len()];
    let entries: &[MEntry] = entries;
    // Events: (time, is_return, op index). Calls sort before returns at equal times.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in entries.iter().enumerate() {
        events.push((e.invoke, false, i));
        events.push((e.ret, true, i));
    }
    events.sort();
    // Doubly linked list over event slots 1..=2n; slot 0 is the head sentinel.
    let len = events.len() + 1;
    let mut next = vec![usize::MAX; len];
    let mut prev = vec![usize::MAX; len];
    let mut match_of = vec![0usize; len];
    let mut call_slot = vec![0usize; n];
    for (slot0, ev) in events.iter().enumerate() {
        let slot = slot0 + 1;
        if !ev.1 {
            call_slot[ev.2] = slot;
        }
    }
    for (slot0, ev) in events.iter().enumerate() {
        let slot = slot0 + 1;
        if ev.1 {
            match_of[call_slot[ev.2]] = slot;
        }
    }
    for i in 0..len {
        next[i] = if i + 1 < len { i + 1 } else { usize::MAX };
        prev[i] = if i == 0 { usize::MAX } else { i - 1 };
    }
    let op_of = |slot: usize| events[slot - 1].2;
    let is_call = |slot: usize| !events[slot - 1].1;

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Vec<Reg>)> = HashSet::new();
    let mut state: Vec<Reg> = vec![None; nkeys];
    let mut stack: Vec<(usize, Vec<Reg>)> = Vec::new();
    let mut steps = 0u64;
    let mut deepest = (0usize, entries[0].op_id);

    let lift = |slot: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, m: usize| {
        // Remove the call...
        let (p, nx) = (prev[slot], next[slot]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
        // ...and its return.
        let (p, nx) = (prev[m], next[m]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let unlift = |slot: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, m: usize| {
        let (p, nx) = (prev[m], next[m]);
        next[p] = m;
        if nx != usize::MAX {
            prev[nx] = m;
        }
        let (p, nx) = (prev[slot], next[slot]);
        next[p] = slot;
        if nx != usize::MAX {
            prev[nx] = slot;
        }
    };

    let mut cur = next[0];
    while next[0] != usize::MAX {
        steps += 1;
        if steps > budget || cache.len() > MAX_CACHED_CONFIGURATIONS {
            return Search::Budget;
        }
        if cur == usize::MAX {
            // Only reachable if every remaining entry is a call: cannot happen
            // (each call's return is after it), but stay safe.
            return Search::Ok;
        }
        if is_call(cur) {
            let i = op_of(cur);
            let e = &entries[i];
            let in_turn = e.class.is_none_or(|c| class_members[c][class_done[c]] == i);
            if !in_turn {
                cur = next[cur];
                continue;
            }
            if let Some(new_state) = step(&state, &e.mop, &e.out) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), new_state.clone())) {
                    if let Some(c) = e.class {
                        class_done[c] += 1;
                    }
                    let old = std::mem::replace(&mut state, new_state);
                    stack.push((cur, old));
                    lift(cur, &mut next, &mut prev, match_of[cur]);
                    cur = next[0];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            cur = next[cur];
        } else {
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), entries[op_of(cur)].op_id);
            }
            let Some((slot, old)) = stack.pop() else {
                return Search::Illegal {
                    stuck_op: deepest.1,
                    depth: deepest.0,
                };
            };
            state = old;
            let i = op_of(slot);
            linearized[i / 64] &= !(1 << (i % 64));
            if let Some(c) = entries[i].class {
                class_done[c] -= 1;
            }
            unlift(slot, &mut next, &mut prev, match_of[slot]);
            cur = next[slot];
        }
    }
    Search::Ok
}

/// Groups of keys that multis touch together (union-find by key name).
fn key_groups(ops: &[&Op]) -> BTreeMap<String, String> {
    let mut parent: HashMap<String, String> = HashMap::new();
    fn find(parent: &mut HashMap<String, String>, k: &str) -> String {
        let p = parent.get(k).cloned().unwrap_or_else(|| k.to_string());
        if p == k {
            parent.insert(k.to_string(), p.clone());
            return p;
        }
        let root = find(parent, &p);
        parent.insert(k.to_string(), root.clone());
        root
    }
    for op in ops {
        let keys = keys_of(&op.call);
        if let Some(first) = keys.first() {
            let a = find(&mut parent, first);
            for k in &keys[1..] {
                let b = find(&mut parent, k);
                if a != b {
                    // Smaller name is the root, so groups have stable names.
                    let (lo, hi) = if a < b {
                        (a.clone(), b)
                    } else {
                        (b, a.clone())
                    };
                    parent.insert(hi, lo);
                }
            }
        }
    }
    let keys: Vec<String> = parent.keys().cloned().collect();
    keys.into_iter()
        .map(|k| {
            let r = find(&mut parent, &k);
            (k, r)
        })
        .collect()
}

fn keys_of(call: &Call) -> Vec<String> {
    match call {
        Call::Get { key, .. }
        | Call::Set { key, .. }
        | Call::Create { key, .. }
        | Call::Delete { key, .. } => vec![key.clone()],
        Call::Txn { ops } => ops
            .iter()
            .map(|o| match o {
                TxnOp::Check { key, .. } | TxnOp::Set { key, .. } => key.clone(),
            })
            .collect(),
        _ => vec![],
    }
}

/// True for the ops this checker judges.
fn in_model(op: &Op) -> bool {
    match &op.call {
        Call::Get { linearizable, .. } => *linearizable && !op.is_info(),
        Call::Set { .. } | Call::Create { .. } | Call::Delete { .. } | Call::Txn { .. } => true,
        _ => false,
    }
}

/// Checks every key group of `history`; `budget` bounds the search steps per group.
pub fn check(history: &History, budget: u64) -> Verdict {
    // Keys some modeled write touches (reads of other keys, such as ephemerals,
    // belong to other checkers).
    let written: HashSet<String> = history
        .ops
        .iter()
        .filter(|o| in_model(o) && !matches!(o.call, Call::Get { .. }))
        .flat_map(|o| keys_of(&o.call))
        .collect();
    let ops: Vec<&Op> = history
        .ops
        .iter()
        .filter(|o| in_model(o) && keys_of(&o.call).iter().all(|k| written.contains(k)))
        .collect();
    let groups = key_groups(&ops);
    // Every value some read returned (the others are interchangeable).
    let read_values: HashSet<&str> = history
        .ops
        .iter()
        .filter(|o| matches!(o.call, Call::Get { .. }))
        .filter_map(|o| o.node().map(|n| n.value.as_str()))
        .collect();
    let mut by_group: BTreeMap<String, Vec<&Op>> = BTreeMap::new();
    for op in &ops {
        let keys = keys_of(&op.call);
        if let Some(g) = keys.first().and_then(|k| groups.get(k)) {
            by_group.entry(g.clone()).or_default().push(op);
        }
    }
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    let mut counted = 0;
    for (group, gops) in &by_group {
        let mut key_index: BTreeMap<String, usize> = BTreeMap::new();
        for (k, g) in &groups {
            if g == group {
                let n = key_index.len();
                key_index.insert(k.clone(), n);
            }
        }
        let mut values: HashMap<String, u32> = HashMap::new();
        let mut intern = |v: &str| {
            if !read_values.contains(v) {
                return UNSEEN;
            }
            let n = values.len() as u32;
            *values.entry(v.to_string()).or_insert(n)
        };
        let mut entries = Vec::new();
        for op in gops {
            let Some(e) = to_entry(op, &key_index, &mut intern) else {
                continue;
            };
            entries.push(e);
        }
        counted += entries.len();
        match search(&mut entries, key_index.len(), budget) {
            Search::Ok => {}
            Search::Budget => unknown.push(format!(
                "group {group}: search budget of {budget} steps exhausted over {} ops",
                entries.len()
            )),
            Search::Illegal { stuck_op, depth } => {
                let stuck = history.ops.iter().find(|o| o.id == stuck_op);
                violations.push(format!(
                    "group {group} ({} ops) is not linearizable: no order of the ops \
                     explains op {stuck_op} after {depth} linearized ops: {}",
                    entries.len(),
                    stuck.map(describe).unwrap_or_default()
                ));
            }
        }
    }
    let mut v = Verdict::from_violations(
        "linearizable",
        format!("{counted} ops in {} key groups", by_group.len()),
        violations,
    );
    if v.violations.is_empty() && !unknown.is_empty() {
        v.result = super::VerdictKind::Unknown;
        v.violations = unknown;
    }
    v
}

fn to_entry(
    op: &Op,
    keys: &BTreeMap<String, usize>,
    intern: &mut impl FnMut(&str) -> u32,
) -> Option<MEntry> {
    let k = |key: &String| keys.get(key).copied();
    let mop = match &op.call {
        Call::Get { key, .. } => MOp::Get(k(key)?),
        Call::Set {
            key,
            value,
            version,
            ..
        } => MOp::Write(vec![MWrite::Set(k(key)?, intern(value), *version)]),
        Call::Create { key, value } => MOp::Write(vec![MWrite::Create(k(key)?, intern(value))]),
        Call::Delete { key, version } => MOp::Write(vec![MWrite::Delete(k(key)?, *version)]),
        Call::Txn { ops } => {
            let mut ws = Vec::new();
            for o in ops {
                ws.push(match o {
                    TxnOp::Check { key, version } => MWrite::Check(k(key)?, *version),
                    TxnOp::Set {
                        key,
                        value,
                        version,
                    } => MWrite::Set(k(key)?, intern(value), *version),
                });
            }
            MOp::Write(ws)
        }
        _ => return None,
    };
    let out = match (&op.outcome, &mop) {
        (Outcome::Info { .. }, _) => MOut::Any,
        (Outcome::Ok { node, .. }, MOp::Get(_)) => {
            MOut::Read(node.as_ref().map(|n| (intern(&n.value), n.version)))
        }
        (Outcome::Fail { code, .. }, MOp::Get(_)) if code == "NoNode" => MOut::Read(None),
        (Outcome::Fail { .. }, MOp::Get(_)) => return None,
        (Outcome::Ok { node, results, .. }, MOp::Write(_)) => {
            let mut versions: Vec<i64> = node.iter().map(|n| n.version).collect();
            versions.extend(results.iter().map(|n| n.version));
            MOut::Done(versions)
        }
        (Outcome::Fail { code, index, .. }, MOp::Write(_)) => {
            if matches!(code.as_str(), "NoNode" | "NodeExists" | "BadVersion") {
                MOut::Failed(index.unwrap_or(0), code.clone())
            } else {
                // Refused before it ran (bad request, session trouble): no effect.
                return None;
            }
        }
    };
    Some(MEntry {
        op_id: op.id,
        mop,
        out,
        invoke: op.invoke_us,
        ret: if op.is_info() {
            u64::MAX
        } else {
            op.complete_us
        },
        class: None,
    })
}

/// A one-line description of an op for violation messages.
pub fn describe(op: &Op) -> String {
    format!(
        "#{} client {} via member {} [{}..{}] {:?} -> {:?} (zxid {:?})",
        op.id, op.client, op.member, op.invoke_us, op.complete_us, op.call, op.outcome, op.zxid
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::build::*;
    use crate::check::VerdictKind;

    const BUDGET: u64 = 1_000_000;

    #[test]
    fn sequential_register_history_is_linearizable() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
        b.set(1, "/k", "b", (20, 30), ok(Some(seen("b", 1, 2))));
        b.lget(2, "/k", (40, 50), ok(Some(seen("b", 1, 2))));
        b.cas(2, "/k", "c", 1, (60, 70), ok(Some(seen("c", 2, 3))));
        b.cas(1, "/k", "d", 1, (80, 90), fail(409, "BadVersion"));
        b.create(1, "/k", "e", (100, 110), fail(409, "NodeExists"));
        b.delete(2, "/k", (120, 130), ok(None));
        b.lget(1, "/k", (140, 150), fail(404, "NoNode"));
        let v = check(&b.history(), BUDGET);
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
    }

    #[test]
    fn concurrent_writes_may_take_either_order() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
        b.set(1, "/k", "b", (20, 100), ok(Some(seen("b", 2, 3))));
        b.set(2, "/k", "c", (30, 90), ok(Some(seen("c", 1, 2))));
        b.lget(3, "/k", (40, 95), ok(Some(seen("c", 1, 2))));
        b.lget(3, "/k", (110, 120), ok(Some(seen("b", 2, 3))));
        assert_eq!(check(&b.history(), BUDGET).result, VerdictKind::Valid);
    }

    #[test]
    fn rejects_a_stale_linearizable_read() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
        b.set(1, "/k", "b", (20, 30), ok(Some(seen("b", 1, 2))));
        // Invoked after the set completed, yet shows the old value.
        b.lget(2, "/k", (40, 50), ok(Some(seen("a", 0, 1))));
        let v = check(&b.history(), BUDGET);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(v.violations[0].contains("not linearizable"));
    }

    #[test]
    fn rejects_a_lost_acknowledged_write_seen_by_a_later_read() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
        b.set(1, "/k", "b", (20, 30), ok(Some(seen("b", 1, 2))));
        b.set(2, "/k", "c", (25, 35), info());
        b.lget(2, "/k", (40, 50), ok(Some(seen("c", 2, 3))));
        // c may have applied after b: fine. But then a read of b again is not.
        b.lget(3, "/k", (60, 70), ok(Some(seen("b", 1, 2))));
        assert_eq!(check(&b.history(), BUDGET).result, VerdictKind::Invalid);
    }

    #[test]
    fn rejects_two_successful_cas_from_the_same_version() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
        b.cas(1, "/k", "b", 0, (20, 40), ok(Some(seen("b", 1, 2))));
        b.cas(2, "/k", "c", 0, (21, 41), ok(Some(seen("c", 1, 3))));
        assert_eq!(check(&b.history(), BUDGET).result, VerdictKind::Invalid);
    }

    #[test]
    fn rejects_two_successful_creates_of_one_node() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
        b.create(2, "/k", "b", (5, 15), ok(Some(seen("b", 0, 2))));
        assert_eq!(check(&b.history(), BUDGET).result, VerdictKind::Invalid);
    }

    #[test]
    fn rejects_a_failure_the_model_cannot_explain() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
        // Nothing changed the version, so a CAS on version 0 must succeed.
        b.cas(1, "/k", "b", 0, (20, 30), fail(409, "BadVersion"));
        assert_eq!(check(&b.history(), BUDGET).result, VerdictKind::Invalid);
    }

    #[test]
    fn indeterminate_write_may_or_may_not_apply() {
        for observed in ["a", "b"] {
            let mut b = Builder::default();
            b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
            b.set(1, "/k", "b", (20, 30), info());
            let version = if observed == "a" { 0 } else { 1 };
            b.lget(2, "/k", (40, 50), ok(Some(seen(observed, version, 1))));
            assert_eq!(check(&b.history(), BUDGET).result, VerdictKind::Valid);
        }
    }

    #[test]
    fn multi_is_atomic_across_keys() {
        let both = |b: &mut Builder, t: (u64, u64), out| {
            b.txn(
                1,
                vec![
                    TxnOp::Set {
                        key: "/a".into(),
                        value: "a1".into(),
                        version: -1,
                    },
                    TxnOp::Set {
                        key: "/b".into(),
                        value: "b1".into(),
                        version: -1,
                    },
                ],
                t,
                out,
            )
        };
        let mut good = Builder::default();
        good.create(1, "/a", "a0", (0, 1), ok(Some(seen("a0", 0, 1))));
        good.create(1, "/b", "b0", (2, 3), ok(Some(seen("b0", 0, 2))));
        both(&mut good, (10, 20), info());
        good.lget(2, "/a", (30, 40), ok(Some(seen("a1", 1, 3))));
        good.lget(2, "/b", (50, 60), ok(Some(seen("b1", 1, 3))));
        assert_eq!(check(&good.history(), BUDGET).result, VerdictKind::Valid);

        // Half a multi: /a changed, /b did not, after the multi was over.
        let mut bad = Builder::default();
        bad.create(1, "/a", "a0", (0, 1), ok(Some(seen("a0", 0, 1))));
        bad.create(1, "/b", "b0", (2, 3), ok(Some(seen("b0", 0, 2))));
        both(&mut bad, (10, 20), info());
        bad.lget(2, "/a", (30, 40), ok(Some(seen("a1", 1, 3))));
        bad.lget(2, "/b", (50, 60), ok(Some(seen("b0", 0, 2))));
        let v = check(&bad.history(), BUDGET);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(v.violations[0].contains("group /a"), "{v:?}");
    }

    #[test]
    fn failed_multi_must_fail_at_the_right_op() {
        let mut b = Builder::default();
        b.create(1, "/a", "a0", (0, 1), ok(Some(seen("a0", 0, 1))));
        b.create(1, "/b", "b0", (2, 3), ok(Some(seen("b0", 0, 2))));
        let ops = vec![
            TxnOp::Check {
                key: "/a".into(),
                version: 0,
            },
            TxnOp::Check {
                key: "/b".into(),
                version: 5,
            },
        ];
        let failing_at = |index| crate::history::Outcome::Fail {
            status: 409,
            code: "BadVersion".into(),
            index: Some(index),
        };
        let mut right = Builder { ops: b.ops.clone() };
        right.txn(1, ops.clone(), (10, 20), failing_at(1));
        assert_eq!(check(&right.history(), BUDGET).result, VerdictKind::Valid);
        b.txn(1, ops, (10, 20), failing_at(0));
        assert_eq!(check(&b.history(), BUDGET).result, VerdictKind::Invalid);
    }

    #[test]
    fn many_unobserved_timeouts_stay_cheap_to_check() {
        let history = |last_read: &str| {
            let mut b = Builder::default();
            b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
            for i in 0..40 {
                b.set(100 + i, "/k", &format!("lost{i}"), (20 + i, 30 + i), info());
            }
            b.lget(1, "/k", (200, 210), ok(Some(seen("a", 0, 1))));
            // Three of the timed-out sets applied before this one.
            b.set(1, "/k", "b", (220, 230), ok(Some(seen("b", 4, 9))));
            let version = if last_read == "b" { 4 } else { 0 };
            b.lget(1, "/k", (240, 250), ok(Some(seen(last_read, version, 9))));
            b.history()
        };
        // Without symmetry breaking this needs ~2^40 steps.
        let v = check(&history("b"), 200_000);
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
        let v = check(&history("a"), 200_000);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
    }

    #[test]
    fn budget_exhaustion_is_unknown_not_valid() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 1))));
        for i in 0..30 {
            b.set(i, "/k", &format!("v{i}"), (20, 30), info());
        }
        b.lget(99, "/k", (40, 50), ok(Some(seen("zz", 9, 9))));
        let v = check(&b.history(), 50);
        assert_eq!(v.result, VerdictKind::Unknown, "{v:?}");
    }
}
