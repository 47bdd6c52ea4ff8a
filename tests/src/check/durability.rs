//! No acknowledged write is lost: after the run healed, the final read-back of
//! every key (ops marked `final_read`) shows the last acknowledged write or
//! something that replaced it, and every acknowledged sequential create is
//! still listed.

use super::linearizable::describe;
use super::Verdict;
use crate::history::{Call, History, Outcome, TxnOp};
use std::collections::{BTreeMap, BTreeSet};

/// Runs the durability checks.
pub fn check(history: &History) -> Verdict {
    // key -> acked writes (mzxid, op id)
    let mut acked: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    // key -> upper bounds of deletes that did not definitely fail
    let mut deletes: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut seq_acked: BTreeMap<String, u64> = BTreeMap::new();
    for op in &history.ops {
        if op.final_read {
            continue;
        }
        match (&op.call, &op.outcome) {
            (
                Call::Set { key, .. } | Call::Create { key, .. },
                Outcome::Ok { node: Some(n), .. },
            ) => {
                acked.entry(key).or_default().push((n.mzxid, op.id));
            }
            (Call::Txn { ops }, Outcome::Ok { results, .. }) => {
                let sets = ops.iter().filter_map(|t| match t {
                    TxnOp::Set { key, .. } => Some(key.as_str()),
                    TxnOp::Check { .. } => None,
                });
                for (key, n) in sets.zip(results) {
                    acked.entry(key).or_default().push((n.mzxid, op.id));
                }
            }
            (Call::Delete { key, .. }, Outcome::Ok { .. }) => {
                deletes
                    .entry(key)
                    .or_default()
                    .push(op.zxid.unwrap_or(u64::MAX));
            }
            (Call::Delete { key, .. }, Outcome::Info { .. }) => {
                deletes.entry(key).or_default().push(u64::MAX);
            }
            (
                Call::CreateSeq { .. },
                Outcome::Ok {
                    created: Some(p), ..
                },
            ) => {
                seq_acked.insert(p.clone(), op.id);
            }
            _ => {}
        }
    }
    let mut violations = Vec::new();
    let mut finals = 0;
    let mut listed: Option<BTreeSet<String>> = None;
    for op in history.ops.iter().filter(|o| o.final_read) {
        match &op.call {
            Call::Get { key, .. } => {
                finals += 1;
                let writes = acked.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                let Some(&(last, wop)) = writes.iter().max() else {
                    continue;
                };
                match &op.outcome {
                    Outcome::Ok { node: Some(n), .. } if n.mzxid < last => {
                        violations.push(format!(
                            "lost write: op #{wop} wrote {key} at zxid {last}, but after healing it shows mzxid {}: {}",
                            n.mzxid,
                            describe(op)
                        ));
                    }
                    Outcome::Fail { code, .. } if code == "NoNode" => {
                        let dels = deletes.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                        if dels.iter().all(|u| *u <= last) {
                            violations.push(format!(
                                "lost write: op #{wop} wrote {key} at zxid {last}; after healing it is gone and no delete came later: {}",
                                describe(op)
                            ));
                        }
                    }
                    Outcome::Ok { .. } | Outcome::Fail { .. } => {}
                    Outcome::Info { reason } => violations.push(format!(
                        "final read of {key} failed after healing ({reason}): {}",
                        describe(op)
                    )),
                }
            }
            // A final listing of the sequential parent: `created` holds the
            // child names joined by '\n'.
            Call::List { path } => {
                if let Outcome::Ok {
                    created: Some(names),
                    ..
                } = &op.outcome
                {
                    let parent = path.as_str();
                    let set = listed.get_or_insert_with(BTreeSet::new);
                    set.extend(
                        names
                            .lines()
                            .filter(|n| !n.is_empty())
                            .map(|n| format!("{parent}/{n}")),
                    );
                } else {
                    violations.push(format!("final listing failed: {}", describe(op)));
                }
            }
            _ => {}
        }
    }
    if let Some(listed) = &listed {
        for (path, op) in &seq_acked {
            if !listed.contains(path) {
                violations.push(format!(
                    "lost sequential create: op #{op} created {path}, missing after healing"
                ));
            }
        }
    }
    Verdict::from_violations(
        "durability",
        format!(
            "{finals} final reads, {} keys written, {} sequential creates",
            acked.len(),
            seq_acked.len()
        ),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::build::*;
    use crate::check::VerdictKind;

    fn final_get(b: &mut Builder, key: &str, out: Outcome) {
        let id = b.lget(99, key, (1000, 1010), out);
        b.ops[id as usize].final_read = true;
    }

    #[test]
    fn final_state_with_the_last_write_is_valid() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 10))));
        b.set(1, "/k", "b", (20, 30), ok(Some(seen("b", 1, 20))));
        final_get(&mut b, "/k", ok(Some(seen("b", 1, 20))));
        assert_eq!(check(&b.history()).result, VerdictKind::Valid);
    }

    #[test]
    fn rejects_a_final_state_older_than_an_acknowledged_write() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 10))));
        b.set(1, "/k", "b", (20, 30), ok(Some(seen("b", 1, 20))));
        final_get(&mut b, "/k", ok(Some(seen("a", 0, 10))));
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
        assert!(v.violations[0].contains("lost write"), "{v:?}");
    }

    #[test]
    fn rejects_a_vanished_node_without_a_delete() {
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 10))));
        final_get(&mut b, "/k", fail(404, "NoNode"));
        assert_eq!(check(&b.history()).result, VerdictKind::Invalid);
        let mut b = Builder::default();
        b.create(1, "/k", "a", (0, 10), ok(Some(seen("a", 0, 10))));
        b.delete(2, "/k", (20, 30), info());
        final_get(&mut b, "/k", fail(404, "NoNode"));
        assert_eq!(check(&b.history()).result, VerdictKind::Valid);
    }

    #[test]
    fn rejects_a_missing_sequential_node() {
        let mut b = Builder::default();
        b.op(
            1,
            Call::CreateSeq {
                prefix: "/s/n-".into(),
            },
            0,
            10,
            Outcome::Ok {
                node: None,
                results: vec![],
                created: Some("/s/n-0000000001".into()),
                session: None,
                grant: None,
            },
            None,
        );
        let id = b.op(
            99,
            Call::List { path: "/s".into() },
            100,
            110,
            Outcome::Ok {
                node: None,
                results: vec![],
                created: Some("n-0000000002\n".into()),
                session: None,
                grant: None,
            },
            None,
        );
        b.ops[id as usize].final_read = true;
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
        assert!(v.violations[0].contains("n-0000000001"), "{v:?}");
    }
}
