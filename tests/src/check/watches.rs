//! Watch completeness: every watcher got every change of its prefix, once, in
//! zxid order, over every zxid range its streams covered.
//!
//! A watcher's history is a list of [`WatchSegment`]s (one per connection).
//! Segment `s` covers the window `(start_zxid, covered_zxid]`: the server
//! promised every matching change in it (the first progress event names the
//! start of a fresh stream, `from_zxid` the start of a resumed one; the last
//! SSE `id:`, progress or cut-off zxid the end). The checks:
//! - **order**: within the watcher's whole record, zxids never go down, and a
//!   zxid's changes come in one run (a zxid recurring later is a duplicate);
//! - **duplicates**: no zxid delivered twice (its changes come in one run), no
//!   two segments of a watcher whose windows overlap (a resume must start where
//!   the last one was covered, never earlier: an earlier `from_zxid`
//!   redelivers), and no more changes of a zxid than the history has (one
//!   entry may make the same change twice: two ephemerals of one session
//!   deleted together change their parent twice);
//! - **bounds**: every change of a segment lies in its window, and a fresh
//!   stream's first message is the progress event naming its start;
//! - **gaps**: the windows of a watcher chain (each resume starts at the
//!   previous coverage) except after a `410 Compacted` refusal, which restarts
//!   the watcher fresh; such gaps are legitimate and counted, never hidden;
//! - **completeness against the reference**: within the reference replay's
//!   window (a fresh replay from a healthy member after healing, from the
//!   earliest zxid any watcher covered up to the fence write), a segment's
//!   changes equal the reference's changes of its window, one for one;
//! - **completeness against the acknowledged writes** (independent of the
//!   reference): every acknowledged set (`data_changed` at its `mzxid`) and
//!   create (`created` at its `czxid`) under the prefix whose zxid lies in a
//!   segment's window is among that segment's changes; the reference is held to
//!   the same;
//! - **liveness**: after healing every watcher's coverage reaches the fence (the
//!   acknowledged set of the prefix itself to [`FENCE_VALUE`]).

use super::linearizable::describe;
use super::Verdict;
use crate::history::{Call, History, Op, Outcome, TxnOp, WatchEvent, WatchSegment};
use std::collections::{BTreeMap, BTreeSet};

/// Changes an acknowledged write must show on a stream over its prefix:
/// `(zxid, type, path)`.
fn expected_changes(op: &Op, prefix: &str) -> Vec<(u64, &'static str, String)> {
    let under =
        |p: &str| p == prefix || p.starts_with(&format!("{}/", prefix.trim_end_matches('/')));
    let mut out = Vec::new();
    match (&op.call, &op.outcome) {
        (Call::Set { key, .. }, Outcome::Ok { node: Some(n), .. }) => {
            out.push((n.mzxid, "data_changed", key.clone()));
        }
        (
            Call::Create { key: path, .. } | Call::CreateEphemeral { path, .. },
            Outcome::Ok { node: Some(n), .. },
        ) => out.push((n.czxid, "created", path.clone())),
        (
            Call::CreateSeq { .. },
            Outcome::Ok {
                node: Some(n),
                created: Some(path),
                ..
            },
        ) => out.push((n.czxid, "created", path.clone())),
        (Call::Txn { ops }, Outcome::Ok { results, .. }) => {
            let sets = ops.iter().filter_map(|t| match t {
                TxnOp::Set { key, .. } => Some(key),
                TxnOp::Check { .. } => None,
            });
            for (key, n) in sets.zip(results) {
                out.push((n.mzxid, "data_changed", key.clone()));
            }
        }
        _ => {}
    }
    out.retain(|(_, _, p)| under(p));
    out
}

/// The value of the fence write after healing (a set of the watched prefix).
pub const FENCE_VALUE: &str = "fence";

fn window(s: &WatchSegment) -> Option<(u64, u64)> {
    let start = s.start_zxid?;
    Some((start, s.covered_zxid.unwrap_or(start).max(start)))
}

fn show(e: &WatchEvent) -> String {
    format!("{} {} {}", e.zxid, e.kind, e.path)
}

fn seg_name(s: &WatchSegment) -> String {
    format!(
        "watcher {} segment via member {} [{}..{} µs] from_zxid {:?} window {:?}..{:?} ({} changes, ended: {})",
        s.watcher,
        s.member,
        s.start_us,
        s.end_us,
        s.from_zxid,
        s.start_zxid,
        s.covered_zxid,
        s.events.len(),
        s.end
    )
}

/// Violations of one segment taken alone (order, duplicates, bounds).
fn check_segment(s: &WatchSegment, violations: &mut Vec<String>) {
    let Some((lo, hi)) = window(s) else {
        if !s.events.is_empty() {
            violations.push(format!(
                "changes before the stream's first progress event (it must name the start): {}",
                seg_name(s)
            ));
        }
        return;
    };
    for e in &s.events {
        if e.zxid <= lo || e.zxid > hi {
            violations.push(format!(
                "change {} outside the segment's window ({lo}, {hi}]: {}",
                show(e),
                seg_name(s)
            ));
            break;
        }
    }
}

/// Runs the watch checks on `history`.
pub fn check(history: &History) -> Verdict {
    let mut violations = Vec::new();
    let reference = history
        .watches
        .iter()
        .find(|w| w.reference && w.start_zxid.is_some());
    let mut by_watcher: BTreeMap<u64, Vec<&WatchSegment>> = BTreeMap::new();
    for w in history.watches.iter().filter(|w| !w.reference) {
        by_watcher.entry(w.watcher).or_default().push(w);
    }
    let prefix = history
        .watches
        .first()
        .map(|w| w.prefix.clone())
        .unwrap_or_default();
    // zxid -> the changes every acknowledged write at that zxid must show.
    let mut acked: BTreeMap<u64, Vec<(&'static str, String, &Op)>> = BTreeMap::new();
    if !prefix.is_empty() {
        for op in &history.ops {
            for (z, kind, path) in expected_changes(op, &prefix) {
                acked.entry(z).or_default().push((kind, path, op));
            }
        }
    }
    // The fence: the acknowledged set of the prefix itself to "fence" after
    // healing. (Not the reference's coverage, which may go past it: a
    // progress event names a later zxid.)
    let fence = history
        .ops
        .iter()
        .filter(|o| {
            matches!(&o.call, Call::Set { key, value, .. } if *key == prefix && value == FENCE_VALUE)
        })
        .filter_map(|o| o.node().map(|n| n.mzxid))
        .max();
    let mut compacted = 0usize;
    let mut resumed = 0usize;
    let mut events = 0usize;
    let mut acked_covered = 0usize;
    let mut compared = 0usize;

    // Segments are judged against the acknowledged writes of their window.
    let mut judge_acked = |s: &WatchSegment, violations: &mut Vec<String>| {
        let Some((lo, hi)) = window(s) else { return };
        if hi <= lo {
            return;
        }
        let have: BTreeSet<(u64, &str, &str)> = s
            .events
            .iter()
            .map(|e| (e.zxid, e.kind.as_str(), e.path.as_str()))
            .collect();
        for (z, writes) in acked.range(lo + 1..=hi) {
            for (kind, path, op) in writes {
                acked_covered += 1;
                if !have.contains(&(*z, *kind, path.as_str())) {
                    violations.push(format!(
                        "gap: the acknowledged write's change {z} {kind} {path} is missing from {}; the write: {}",
                        seg_name(s),
                        describe(op)
                    ));
                }
            }
        }
    };

    if let Some(r) = reference {
        check_segment(r, &mut violations);
        if !r.events.windows(2).all(|w| w[0].zxid <= w[1].zxid) {
            violations.push(format!(
                "the reference replay is out of zxid order: {}",
                seg_name(r)
            ));
        }
        judge_acked(r, &mut violations);
    }

    for (watcher, segs) in &mut by_watcher {
        segs.sort_by_key(|s| s.start_us);
        let mut last: Option<(&WatchEvent, &WatchSegment)> = None;
        let mut zxid_runs: BTreeSet<u64> = BTreeSet::new();
        let mut prev_window: Option<(u64, u64, &WatchSegment)> = None;
        let mut restart_pending = false;
        for s in segs.iter() {
            if s.compacted {
                compacted += 1;
                restart_pending = true;
            }
            check_segment(s, &mut violations);
            let Some((lo, hi)) = window(s) else { continue };
            if s.from_zxid.is_some() {
                resumed += 1;
            }
            if let Some((plo, phi, p)) = prev_window {
                if lo < phi {
                    violations.push(format!(
                        "duplicate: watcher {watcher} resumed at {lo}, below the {phi} its previous stream had covered (window ({plo}, {phi}]): {} after {}",
                        seg_name(s),
                        seg_name(p)
                    ));
                } else if lo > phi && !restart_pending {
                    violations.push(format!(
                        "gap: watcher {watcher}'s stream covered up to {phi}, the next starts after {lo} with no 410 Compacted in between: {} after {}",
                        seg_name(s),
                        seg_name(p)
                    ));
                }
            }
            restart_pending = false;
            for e in &s.events {
                events += 1;
                if let Some((l, ls)) = last {
                    if e.zxid < l.zxid {
                        violations.push(format!(
                            "out of order: watcher {watcher} got {} after {} ({} after {})",
                            show(e),
                            show(l),
                            seg_name(s),
                            seg_name(ls)
                        ));
                    } else if e.zxid > l.zxid && zxid_runs.contains(&e.zxid) {
                        violations.push(format!(
                            "duplicate: watcher {watcher} got changes of zxid {} again after other zxids: {}",
                            e.zxid,
                            seg_name(s)
                        ));
                    }
                }
                if last.is_none_or(|(l, _)| l.zxid != e.zxid) {
                    zxid_runs.insert(e.zxid);
                }
                last = Some((e, s));
            }
            if let Some(r) = reference {
                if let Some((rlo, rhi)) = window(r) {
                    let (a, b) = (lo.max(rlo), hi.min(rhi));
                    if a < b {
                        compared += 1;
                        let want: Vec<&WatchEvent> = r
                            .events
                            .iter()
                            .filter(|e| e.zxid > a && e.zxid <= b)
                            .collect();
                        let got: Vec<&WatchEvent> = s
                            .events
                            .iter()
                            .filter(|e| e.zxid > a && e.zxid <= b)
                            .collect();
                        if got != want {
                            // Multisets: one entry can make the same change
                            // twice (two ephemerals of a session deleted at
                            // once change their parent twice).
                            let mut count: BTreeMap<&WatchEvent, i64> = BTreeMap::new();
                            for e in &want {
                                *count.entry(e).or_default() += 1;
                            }
                            for e in &got {
                                *count.entry(e).or_default() -= 1;
                            }
                            let missing: Vec<String> = count
                                .iter()
                                .filter(|(_, n)| **n > 0)
                                .map(|(e, _)| show(e))
                                .collect();
                            let extra: Vec<String> = count
                                .iter()
                                .filter(|(_, n)| **n < 0)
                                .map(|(e, _)| show(e))
                                .collect();
                            let what = if !missing.is_empty() && extra.is_empty() {
                                format!(
                                    "gap: {} changes missing, first {}",
                                    missing.len(),
                                    missing[0]
                                )
                            } else if !extra.is_empty() {
                                format!(
                                    "more changes than the history has (duplicates or inventions), first {}",
                                    extra[0]
                                )
                            } else {
                                let i = got.iter().zip(&want).position(|(g, w)| g != w);
                                match i {
                                    Some(i) => format!(
                                        "order or count: the {}th change is {} where the history has {}",
                                        i + 1,
                                        show(got[i]),
                                        show(want[i])
                                    ),
                                    None => format!(
                                        "count: {} changes where the history has {}",
                                        got.len(),
                                        want.len()
                                    ),
                                }
                            };
                            violations.push(format!(
                                "watcher {watcher} differs from the change history over ({a}, {b}]: {what}: {}",
                                seg_name(s)
                            ));
                        }
                    }
                }
            }
            judge_acked(s, &mut violations);
            prev_window = Some((lo, hi, s));
        }
        if let Some(fence) = fence {
            let reached = segs
                .iter()
                .filter_map(|s| s.covered_zxid)
                .max()
                .unwrap_or(0);
            if reached < fence {
                violations.push(format!(
                    "liveness: watcher {watcher} covered only up to {reached} after healing; the fence is at {fence} (last: {})",
                    segs.last().map(|s| seg_name(s)).unwrap_or_default()
                ));
            }
        }
    }
    let watchers = by_watcher.len();
    let segments: usize = by_watcher.values().map(Vec::len).sum();
    Verdict::from_violations(
        "watches",
        format!(
            "{watchers} watchers, {segments} segments ({resumed} resumed, {compacted} 410 Compacted restarts), \
             {events} changes, {acked_covered} acknowledged writes in covered windows, {}",
            match reference {
                Some(r) => format!(
                    "{compared} windows compared with a {}-change reference replay",
                    r.events.len()
                ),
                None => "no reference replay".into(),
            }
        ),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::build::*;
    use crate::check::VerdictKind;

    fn ev(zxid: u64, kind: &str, path: &str) -> WatchEvent {
        WatchEvent {
            zxid,
            kind: kind.into(),
            path: path.into(),
        }
    }

    fn seg(
        watcher: u64,
        t: u64,
        from: Option<u64>,
        window: (u64, u64),
        events: Vec<WatchEvent>,
    ) -> WatchSegment {
        WatchSegment {
            watcher,
            member: 1,
            prefix: "/c".into(),
            from_zxid: from,
            start_us: t,
            end_us: t + 10,
            start_zxid: Some(window.0),
            covered_zxid: Some(window.1),
            events,
            end: "eof".into(),
            compacted: false,
            oldest_zxid: None,
            reference: false,
        }
    }

    /// The change history: zxids 11..=16 under /c (a multi at 13).
    fn changes() -> Vec<WatchEvent> {
        vec![
            ev(11, "created", "/c/a"),
            ev(11, "children_changed", "/c"),
            ev(12, "data_changed", "/c/a"),
            ev(13, "data_changed", "/c/a"),
            ev(13, "data_changed", "/c/b"),
            ev(14, "created", "/c/d"),
            ev(14, "children_changed", "/c"),
            ev(15, "data_changed", "/c/d"),
            ev(16, "data_changed", "/c"),
        ]
    }

    fn reference() -> WatchSegment {
        let mut r = seg(0, 1_000, Some(10), (10, 16), changes());
        r.reference = true;
        r
    }

    fn upto(lo: u64, hi: u64) -> Vec<WatchEvent> {
        changes()
            .into_iter()
            .filter(|e| e.zxid > lo && e.zxid <= hi)
            .collect()
    }

    /// Writes acknowledged at 12 (set /c/a) and 15 (set /c/d).
    fn history(watches: Vec<WatchSegment>) -> History {
        let mut b = Builder::default();
        b.set(1, "/c/a", "x", (0, 5), ok(Some(seen("x", 1, 12))));
        b.set(1, "/c/d", "y", (6, 9), ok(Some(seen("y", 1, 15))));
        b.set(
            1,
            "/c",
            FENCE_VALUE,
            (20, 30),
            ok(Some(seen(FENCE_VALUE, 1, 16))),
        );
        let mut h = b.history();
        h.watches = watches;
        h
    }

    #[test]
    fn a_watcher_resumed_across_members_without_gap_is_valid() {
        let mut fresh = seg(1, 0, None, (10, 12), upto(10, 12));
        fresh.from_zxid = None;
        let h = history(vec![
            fresh,
            seg(1, 100, Some(12), (12, 14), upto(12, 14)),
            seg(1, 200, Some(14), (14, 16), upto(14, 16)),
            seg(2, 0, Some(10), (10, 16), upto(10, 16)),
            reference(),
        ]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
        assert!(v.checked.contains("3 resumed"), "{}", v.checked);
    }

    #[test]
    fn a_reference_covering_past_the_fence_does_not_move_it() {
        // Regression (campaign seed 12002): the reference replay's last
        // progress event named a zxid after the fence; the watchers, which
        // stop at the fence, were wrongly held to it.
        let mut r = reference();
        r.covered_zxid = Some(17);
        let h = history(vec![seg(1, 0, Some(10), (10, 16), upto(10, 16)), r]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
    }

    #[test]
    fn an_empty_window_is_valid() {
        // Opened at 12 and dropped before anything new (a regression: the
        // acknowledged-write lookup over (12, 12] panicked).
        let h = history(vec![
            seg(1, 0, Some(10), (10, 12), upto(10, 12)),
            seg(1, 50, Some(12), (12, 12), vec![]),
            seg(1, 100, Some(12), (12, 16), upto(12, 16)),
            reference(),
        ]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
    }

    #[test]
    fn a_compacted_restart_is_a_counted_gap_not_a_violation() {
        let mut refused = seg(1, 100, Some(11), (0, 0), vec![]);
        refused.start_zxid = None;
        refused.covered_zxid = None;
        refused.compacted = true;
        refused.end = "refused 410 Compacted".into();
        let mut fresh = seg(1, 200, None, (13, 16), upto(13, 16));
        fresh.from_zxid = None;
        let h = history(vec![
            seg(1, 0, Some(10), (10, 11), upto(10, 11)),
            refused,
            fresh,
            reference(),
        ]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
        assert!(v.checked.contains("1 410 Compacted"), "{}", v.checked);
    }

    #[test]
    fn rejects_a_gap_inside_a_segment() {
        let mut events = upto(10, 16);
        events.retain(|e| e.zxid != 14);
        let h = history(vec![seg(1, 0, Some(10), (10, 16), events), reference()]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(v.violations[0].contains("gap"), "{v:?}");
    }

    #[test]
    fn rejects_a_missing_acknowledged_write_without_a_reference() {
        let mut events = upto(10, 16);
        events.retain(|e| e.zxid != 15);
        let h = history(vec![seg(1, 0, Some(10), (10, 16), events)]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(
            v.violations[0].contains("15 data_changed /c/d is missing"),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_a_gap_between_resumed_segments() {
        // Covered to 12, resumed after 13: zxid 13 never delivered.
        let h = history(vec![
            seg(1, 0, Some(10), (10, 12), upto(10, 12)),
            seg(1, 100, Some(13), (13, 16), upto(13, 16)),
            reference(),
        ]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(v.violations.iter().any(|m| m.contains("gap")), "{v:?}");
    }

    #[test]
    fn rejects_a_duplicate_from_a_resume_below_the_coverage() {
        let h = history(vec![
            seg(1, 0, Some(10), (10, 13), upto(10, 13)),
            seg(1, 100, Some(12), (12, 16), upto(12, 16)),
            reference(),
        ]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(
            v.violations.iter().any(|m| m.contains("duplicate")),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_a_change_delivered_twice_in_one_segment() {
        // Within its zxid's run: only the history's count shows it.
        let mut events = upto(10, 16);
        events.insert(3, ev(12, "data_changed", "/c/a"));
        let h = history(vec![seg(1, 0, Some(10), (10, 16), events), reference()]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(v.violations[0].contains("more changes than"), "{v:?}");
        // After other zxids: a zxid delivered twice.
        let mut events = upto(10, 16);
        events.insert(5, ev(12, "data_changed", "/c/a"));
        let h = history(vec![seg(1, 0, Some(10), (10, 16), events)]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(
            v.violations.iter().any(|m| m.contains("out of order")),
            "{v:?}"
        );
    }

    #[test]
    fn a_change_made_twice_by_one_entry_is_valid() {
        let mut r = reference();
        r.events.insert(2, ev(11, "children_changed", "/c"));
        let mut events = upto(10, 16);
        events.insert(2, ev(11, "children_changed", "/c"));
        let h = history(vec![seg(1, 0, Some(10), (10, 16), events), r]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
    }

    #[test]
    fn rejects_changes_out_of_zxid_order() {
        let mut events = upto(10, 16);
        let i = events.iter().position(|e| e.zxid == 15).unwrap();
        let moved = events.remove(i);
        events.insert(2, moved);
        let h = history(vec![seg(1, 0, Some(10), (10, 16), events), reference()]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(
            v.violations.iter().any(|m| m.contains("out of order")),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_a_change_outside_the_window_and_a_watcher_short_of_the_fence() {
        let h = history(vec![
            seg(1, 0, Some(12), (12, 14), upto(10, 14)),
            reference(),
        ]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(v.violations.iter().any(|m| m.contains("outside")), "{v:?}");
        assert!(v.violations.iter().any(|m| m.contains("liveness")), "{v:?}");
    }

    #[test]
    fn rejects_a_change_the_history_does_not_have() {
        let mut events = upto(10, 16);
        events.insert(4, ev(13, "deleted", "/c/zz"));
        let h = history(vec![seg(1, 0, Some(10), (10, 16), events), reference()]);
        let v = check(&h);
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(
            v.violations[0].contains("more changes than the history has"),
            "{v:?}"
        );
    }
}
