//! Sequential names are unique and increasing: no two acknowledged sequential
//! creates under one parent get the same name; ordered by their `czxid`, their
//! counters strictly increase; and a create that completed before another was
//! invoked has the smaller counter.

use super::Verdict;
use crate::history::{Call, History, Outcome};
use std::collections::BTreeMap;

/// The 10-digit counter at the end of a sequential name.
fn counter(path: &str) -> Option<u64> {
    let digits = path.get(path.len().checked_sub(10)?..)?;
    digits.parse().ok()
}

/// `(counter, czxid, invoke, complete, path, op id)` of an acknowledged create.
type SeqCreate<'a> = (u64, u64, u64, u64, &'a str, u64);

/// Runs the sequential-name checks.
pub fn check(history: &History) -> Verdict {
    // parent prefix -> (counter, czxid, invoke, complete, path, op id)
    let mut by_prefix: BTreeMap<&str, Vec<SeqCreate<'_>>> = BTreeMap::new();
    let mut violations = Vec::new();
    for op in &history.ops {
        let (Call::CreateSeq { prefix }, Outcome::Ok { created, node, .. }) =
            (&op.call, &op.outcome)
        else {
            continue;
        };
        let Some(path) = created.as_deref() else {
            violations.push(format!(
                "sequential create #{} answered without a path",
                op.id
            ));
            continue;
        };
        let Some(c) = path
            .strip_prefix(prefix.as_str())
            .and_then(|_| counter(path))
        else {
            violations.push(format!(
                "sequential create #{} got {path:?}, not {prefix}<10 digits>",
                op.id
            ));
            continue;
        };
        let czxid = node.as_ref().map(|n| n.czxid).unwrap_or(0);
        by_prefix.entry(prefix).or_default().push((
            c,
            czxid,
            op.invoke_us,
            op.complete_us,
            path,
            op.id,
        ));
    }
    let mut total = 0;
    for (prefix, mut creates) in by_prefix {
        total += creates.len();
        creates.sort();
        for w in creates.windows(2) {
            if w[0].0 == w[1].0 {
                violations.push(format!(
                    "duplicate sequential name {} from ops #{} and #{}",
                    w[0].4, w[0].5, w[1].5
                ));
            } else if w[0].1 >= w[1].1 && w[1].1 != 0 {
                violations.push(format!(
                    "under {prefix}: {} (czxid {}) has a smaller counter than {} (czxid {})",
                    w[0].4, w[0].1, w[1].4, w[1].1
                ));
            }
        }
        // Real-time order: completed-before-invoked implies a smaller counter.
        let mut by_complete = creates.clone();
        by_complete.sort_by_key(|c| c.3);
        let mut max_done: Option<(u64, &str, u64)> = None; // (counter, path, complete)
        let mut by_invoke = creates.clone();
        by_invoke.sort_by_key(|c| c.2);
        let mut i = 0;
        for c in &by_invoke {
            while i < by_complete.len() && by_complete[i].3 < c.2 {
                let d = &by_complete[i];
                if max_done.is_none_or(|m| d.0 > m.0) {
                    max_done = Some((d.0, d.4, d.3));
                }
                i += 1;
            }
            if let Some((m, path, _)) = max_done {
                if c.0 <= m {
                    violations.push(format!(
                        "{} (op #{}) was invoked after {path} completed, yet has a counter not above it",
                        c.4, c.5
                    ));
                }
            }
        }
    }
    Verdict::from_violations(
        "sequential",
        format!("{total} sequential creates"),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::build::*;
    use crate::check::VerdictKind;

    fn seq(b: &mut Builder, t: (u64, u64), n: u64, czxid: u64) {
        let mut node = seen("", 0, czxid);
        node.czxid = czxid;
        b.op(
            1,
            Call::CreateSeq {
                prefix: "/s/n-".into(),
            },
            t.0,
            t.1,
            Outcome::Ok {
                node: Some(node),
                results: vec![],
                created: Some(format!("/s/n-{n:010}")),
                session: None,
                grant: None,
            },
            None,
        );
    }

    #[test]
    fn increasing_unique_names_are_valid() {
        let mut b = Builder::default();
        seq(&mut b, (0, 10), 1, 5);
        seq(&mut b, (5, 30), 3, 9);
        seq(&mut b, (20, 25), 2, 7);
        assert_eq!(check(&b.history()).result, VerdictKind::Valid);
    }

    #[test]
    fn rejects_duplicates() {
        let mut b = Builder::default();
        seq(&mut b, (0, 10), 1, 5);
        seq(&mut b, (20, 30), 1, 7);
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
        assert!(
            v.violations.iter().any(|m| m.contains("duplicate")),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_counters_that_go_down_in_real_time() {
        let mut b = Builder::default();
        seq(&mut b, (0, 10), 4, 5);
        seq(&mut b, (20, 30), 2, 7);
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
    }
}
