//! Sequential consistency of reads, through zxids: no read goes back in time.
//!
//! Every answer carries `X-Keeper-Zxid`, the last zxid the member had applied
//! when it answered (at least the state the answer shows, maybe more), and every
//! write's Stat carries its own zxid (`mzxid`). A request with
//! `X-Keeper-Min-Zxid: f` is served from a state that includes every zxid up to
//! `f` (the member waits for it first). A client that sends its highest zxid
//! seen as its floor must:
//! 1. never get an answer below the floor it sent, and never see the zxid of its
//!    answers go down;
//! 2. never see a key's `mzxid` go down (its own writes included);
//!
//! And every read, default or linearizable, must show a state between its floor
//! and its answer's zxid:
//! 3. a value with the `mzxid` and version of the acknowledged write that wrote it,
//!    and never a value that no client ever wrote;
//! 4. no write newer than the answer's zxid, and not an older value when an
//!    acknowledged write to the key with a zxid above the value's but not above
//!    the floor is known (a stale read);
//! 5. not "no node" when an acknowledged write to the key is at or below the
//!    floor and no delete can lie between them.

use super::linearizable::describe;
use super::Verdict;
use crate::history::{Call, History, Op, Outcome, TxnOp};
use std::collections::{BTreeMap, HashMap};

/// An acknowledged write of `value` to a key at `mzxid`.
#[derive(Debug, Clone)]
struct Written {
    op: u64,
    mzxid: u64,
    version: i64,
}

/// The writes (acknowledged and not) and deletes of each key.
#[derive(Default)]
struct KeyWrites {
    /// Acknowledged: value -> write.
    acked: HashMap<String, Written>,
    /// Every value any call tried to write (acknowledged or not).
    attempted: std::collections::HashSet<String>,
    /// Acknowledged writes by zxid.
    by_zxid: BTreeMap<u64, u64>,
    /// Upper bounds of the zxids of deletes that did not definitely fail
    /// (`u64::MAX` when unknown).
    delete_upper: Vec<u64>,
}

/// `(key, value, Some((mzxid, version)) if acknowledged)` of a write.
type WrittenValue = (String, String, Option<(u64, i64)>);

fn written_values(op: &Op) -> Vec<WrittenValue> {
    let mut out = Vec::new();
    match (&op.call, &op.outcome) {
        (Call::Set { key, value, .. }, o) | (Call::Create { key, value }, o) => {
            let ack = match o {
                Outcome::Ok { node: Some(n), .. } => Some((n.mzxid, n.version)),
                _ => None,
            };
            out.push((key.clone(), value.clone(), ack));
        }
        (Call::Txn { ops }, o) => {
            let results: &[crate::history::Seen] = match o {
                Outcome::Ok { results, .. } => results,
                _ => &[],
            };
            let mut r = results.iter();
            for t in ops {
                if let TxnOp::Set { key, value, .. } = t {
                    let ack = r.next().map(|n| (n.mzxid, n.version));
                    out.push((key.clone(), value.clone(), ack));
                }
            }
        }
        _ => {}
    }
    out
}

/// Runs the read checks on `history`.
pub fn check(history: &History) -> Verdict {
    let mut keys: HashMap<String, KeyWrites> = HashMap::new();
    for op in &history.ops {
        for (key, value, ack) in written_values(op) {
            let kw = keys.entry(key).or_default();
            kw.attempted.insert(value.clone());
            if let Some((mzxid, version)) = ack {
                kw.by_zxid.insert(mzxid, op.id);
                kw.acked.insert(
                    value,
                    Written {
                        op: op.id,
                        mzxid,
                        version,
                    },
                );
            }
        }
        if let Call::Delete { key, .. } = &op.call {
            let upper = match &op.outcome {
                Outcome::Ok { .. } => op.zxid.unwrap_or(u64::MAX),
                Outcome::Info { .. } => u64::MAX,
                Outcome::Fail { .. } => continue,
            };
            keys.entry(key.clone())
                .or_default()
                .delete_upper
                .push(upper);
        }
    }

    let mut violations = Vec::new();
    let mut reads = 0usize;
    // Per-client program order (clients run one op at a time).
    let mut by_client: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        by_client.entry(op.client).or_default().push(op);
    }
    for (client, ops) in &mut by_client {
        ops.sort_by_key(|o| (o.invoke_us, o.id));
        let mut high: Option<(u64, u64)> = None; // (zxid, op id)
        let mut key_high: HashMap<String, (u64, u64)> = HashMap::new();
        for op in ops.iter() {
            if !op.is_ok() {
                continue;
            }
            if let (Some(floor), Some(z)) = (op.min_zxid, op.zxid) {
                if z < floor {
                    violations.push(format!(
                        "client {client}: answered at zxid {z} below the X-Keeper-Min-Zxid {floor} it sent: {}",
                        describe(op)
                    ));
                }
            }
            // A keepalive's floor is its session's creation, not the client's
            // highest zxid (see workload): it may be answered by a member behind.
            let carries_client_floor = !matches!(op.call, Call::Keepalive { .. });
            if let Some(z) = op.zxid.filter(|_| carries_client_floor) {
                if let Some((h, hop)) = high {
                    if z < h && op.min_zxid.is_some() {
                        violations.push(format!(
                            "client {client}: went back in time from zxid {h} (op #{hop}) to {z}: {}",
                            describe(op)
                        ));
                    }
                }
                if high.is_none_or(|(h, _)| z > h) {
                    high = Some((z, op.id));
                }
            }
            let key = match &op.call {
                Call::Get { key, .. } | Call::Set { key, .. } | Call::Create { key, .. } => key,
                _ => continue,
            };
            if let Some(n) = op.node() {
                if let Some((m, mop)) = key_high.get(key) {
                    if n.mzxid < *m {
                        violations.push(format!(
                            "client {client}: key {key} went back from mzxid {m} (op #{mop}) to {}: {}",
                            n.mzxid,
                            describe(op)
                        ));
                    }
                }
                if key_high.get(key).is_none_or(|(m, _)| n.mzxid > *m) {
                    key_high.insert(key.clone(), (n.mzxid, op.id));
                }
            }
        }
    }

    for op in &history.ops {
        let Call::Get { key, .. } = &op.call else {
            continue;
        };
        let Some(z) = op.zxid else {
            continue;
        };
        // The state read includes everything up to the floor (not up to `z`:
        // the answer's zxid is taken after the read).
        let floor = op.min_zxid.unwrap_or(0);
        let Some(kw) = keys.get(key) else {
            continue;
        };
        match &op.outcome {
            Outcome::Ok { node: Some(n), .. } => {
                reads += 1;
                if !kw.attempted.contains(&n.value) {
                    violations.push(format!(
                        "read of {key} shows value {:?} that no client wrote: {}",
                        n.value,
                        describe(op)
                    ));
                    continue;
                }
                if let Some(w) = kw.acked.get(&n.value) {
                    if w.mzxid != n.mzxid || w.version != n.version {
                        violations.push(format!(
                            "read of {key} shows {:?} at mzxid {} version {}, but op #{} wrote it at mzxid {} version {}: {}",
                            n.value, n.mzxid, n.version, w.op, w.mzxid, w.version, describe(op)
                        ));
                    }
                }
                if n.mzxid > z {
                    violations.push(format!(
                        "read of {key} at zxid {z} shows a write from zxid {}: {}",
                        n.mzxid,
                        describe(op)
                    ));
                }
                let newer = if n.mzxid < floor {
                    kw.by_zxid.range(n.mzxid + 1..=floor).next_back()
                } else {
                    None
                };
                if let Some((m, wop)) = newer {
                    violations.push(format!(
                        "stale read of {key}: a state including zxid {floor} (the client's floor) shows mzxid {}, but op #{wop} wrote it at zxid {m}: {}",
                        n.mzxid,
                        describe(op)
                    ));
                }
            }
            Outcome::Fail { code, .. } if code == "NoNode" => {
                reads += 1;
                if let Some((m, wop)) = kw.by_zxid.range(..=floor).next_back() {
                    if kw.delete_upper.iter().all(|u| *u <= *m) {
                        violations.push(format!(
                            "read of {key} from a state including zxid {floor} says no node, but op #{wop} wrote it at zxid {m} and no delete can come after: {}",
                            describe(op)
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Verdict::from_violations(
        "reads",
        format!("{reads} reads, {} clients", by_client.len()),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::build::*;
    use crate::check::VerdictKind;
    use crate::history::Call;

    fn get(
        b: &mut Builder,
        client: u64,
        key: &str,
        t: u64,
        out: Outcome,
        zxid: u64,
        floor: Option<u64>,
    ) {
        let id = b.op(
            client,
            Call::Get {
                key: key.into(),
                linearizable: false,
            },
            t,
            t + 5,
            out,
            Some(zxid),
        );
        b.ops[id as usize].min_zxid = floor;
    }

    fn base() -> Builder {
        let mut b = Builder::default();
        let c = b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 10))));
        b.ops[c as usize].zxid = Some(10);
        let s = b.set(1, "/k", "b", (20, 30), ok(Some(seen("b", 1, 20))));
        b.ops[s as usize].zxid = Some(20);
        b
    }

    #[test]
    fn reads_that_follow_their_zxid_are_valid() {
        let mut b = base();
        get(&mut b, 2, "/k", 40, ok(Some(seen("a", 0, 10))), 15, None);
        get(
            &mut b,
            2,
            "/k",
            50,
            ok(Some(seen("b", 1, 20))),
            25,
            Some(15),
        );
        get(
            &mut b,
            2,
            "/k",
            60,
            ok(Some(seen("b", 1, 20))),
            25,
            Some(25),
        );
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
    }

    #[test]
    fn rejects_an_answer_below_the_clients_floor() {
        let mut b = base();
        get(
            &mut b,
            2,
            "/k",
            40,
            ok(Some(seen("a", 0, 10))),
            12,
            Some(20),
        );
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
        assert!(
            v.violations
                .iter()
                .any(|m| m.contains("below the X-Keeper-Min-Zxid")),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_going_back_in_time() {
        let mut b = base();
        get(&mut b, 2, "/k", 40, ok(Some(seen("b", 1, 20))), 25, Some(0));
        get(&mut b, 2, "/k", 50, ok(Some(seen("a", 0, 10))), 15, Some(0));
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
        assert!(v.violations.iter().any(|m| m.contains("back")), "{v:?}");
    }

    #[test]
    fn rejects_a_stale_value_at_a_newer_zxid() {
        let mut b = base();
        // Asked for a state including zxid 25 but shows the value of zxid 10.
        get(
            &mut b,
            3,
            "/k",
            40,
            ok(Some(seen("a", 0, 10))),
            25,
            Some(25),
        );
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
        assert!(
            v.violations.iter().any(|m| m.contains("stale read")),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_a_phantom_value_and_a_wrong_stat() {
        let mut b = base();
        get(&mut b, 3, "/k", 40, ok(Some(seen("zzz", 0, 10))), 25, None);
        get(&mut b, 4, "/k", 40, ok(Some(seen("b", 7, 20))), 25, None);
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
        assert!(
            v.violations.iter().any(|m| m.contains("no client wrote")),
            "{v:?}"
        );
        assert!(v.violations.iter().any(|m| m.contains("version")), "{v:?}");
    }

    #[test]
    fn answer_zxid_taken_after_the_read_is_not_a_stale_read() {
        // The member applied zxid 20 between reading (zxid 10) and answering.
        let mut b = base();
        get(
            &mut b,
            3,
            "/k",
            40,
            ok(Some(seen("a", 0, 10))),
            20,
            Some(10),
        );
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
    }

    #[test]
    fn keepalive_answered_behind_the_clients_floor_is_not_going_back() {
        let mut b = base();
        get(
            &mut b,
            2,
            "/k",
            40,
            ok(Some(seen("b", 1, 20))),
            25,
            Some(20),
        );
        // Its floor is the session's creation (zxid 5), not the client's 25.
        let id = b.op(
            2,
            Call::Keepalive { session: 5 },
            50,
            55,
            ok(None),
            Some(12),
        );
        b.ops[id as usize].min_zxid = Some(5);
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
    }

    #[test]
    fn rejects_no_node_after_a_write_with_no_delete() {
        let mut b = base();
        get(&mut b, 3, "/k", 40, fail(404, "NoNode"), 25, Some(25));
        assert_eq!(check(&b.history()).result, VerdictKind::Invalid);
        // With a delete that may come after the write, it is fine.
        let mut b = base();
        b.delete(5, "/k", (35, 36), info());
        get(&mut b, 3, "/k", 40, fail(404, "NoNode"), 25, Some(25));
        assert_eq!(check(&b.history()).result, VerdictKind::Valid);
    }
}
