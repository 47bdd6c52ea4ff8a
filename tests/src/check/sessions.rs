//! Session safety: an ephemeral disappears only after its session ended, and no
//! member acknowledges a keepalive for a session that is already expired.
//!
//! The promise (DESIGN.md, Sessions): a keepalive acknowledged for a request sent
//! at time `t` means the session cannot expire before `t + timeout`. So for each
//! session, with `alive_until` = (the latest invocation time among its open and
//! its acknowledged keepalives) + its timeout:
//! - **early expiry**: a read (linearizable, or at a zxid that includes the
//!   ephemeral's creation) that completed at `c < alive_until` and found one of
//!   its ephemerals gone is a violation, unless the client had asked to close the
//!   session before `c`. This is also how an acknowledgement of a keepalive by a
//!   member cut off from the quorum shows: the majority expires the session while
//!   the client keeps hearing "alive";
//! - **resurrection**: a keepalive acknowledged after another one was answered
//!   `SessionExpired` by a member that had applied the session's creation (the
//!   keepalive carried the session id, its creation's zxid, as its floor);
//! - **outliving**: an ephemeral still there in a state after its session's close
//!   was acknowledged, or still there in the final read-back after healing,
//!   when every session had long been abandoned (sessions must expire);
//! - an ephemeral owned by another session than the one that created it.

use super::linearizable::describe;
use super::Verdict;
use crate::history::{Call, History, Op, Outcome};
use std::collections::BTreeMap;

#[derive(Default)]
struct Session<'a> {
    timeout_ms: u64,
    open: Option<&'a Op>,
    acked_keepalives: Vec<&'a Op>,
    expired_answers: Vec<&'a Op>,
    /// Earliest invocation of a close that did not definitely fail.
    close_invoked: Option<u64>,
    /// An acknowledged close.
    close_acked: Option<&'a Op>,
    /// path -> create op
    ephemerals: BTreeMap<String, &'a Op>,
}

/// Runs the session checks.
pub fn check(history: &History) -> Verdict {
    let mut sessions: BTreeMap<u64, Session<'_>> = BTreeMap::new();
    let mut owner_of: BTreeMap<&str, u64> = BTreeMap::new();
    for op in &history.ops {
        match (&op.call, &op.outcome) {
            (
                Call::OpenSession { .. },
                Outcome::Ok {
                    session: Some((id, t)),
                    ..
                },
            ) => {
                let s = sessions.entry(*id).or_default();
                s.timeout_ms = *t;
                s.open = Some(op);
            }
            (Call::Keepalive { session }, Outcome::Ok { .. }) => {
                sessions
                    .entry(*session)
                    .or_default()
                    .acked_keepalives
                    .push(op);
            }
            // Only an answer from a state that includes the session's creation
            // (the session id is its creation's zxid) says it ended.
            (Call::Keepalive { session }, Outcome::Fail { code, .. })
                if code == "SessionExpired" && op.min_zxid.is_some_and(|f| f >= *session) =>
            {
                sessions
                    .entry(*session)
                    .or_default()
                    .expired_answers
                    .push(op);
            }
            (Call::CloseSession { session }, o) => {
                let s = sessions.entry(*session).or_default();
                if !matches!(o, Outcome::Fail { .. }) {
                    s.close_invoked = Some(
                        s.close_invoked
                            .map_or(op.invoke_us, |c| c.min(op.invoke_us)),
                    );
                }
                if matches!(o, Outcome::Ok { .. }) {
                    s.close_acked = Some(op);
                }
            }
            (Call::CreateEphemeral { path, session }, Outcome::Ok { .. }) => {
                sessions
                    .entry(*session)
                    .or_default()
                    .ephemerals
                    .insert(path.clone(), op);
                owner_of.insert(path, *session);
            }
            _ => {}
        }
    }

    let mut violations = Vec::new();
    let mut observations = 0;
    for (id, s) in &sessions {
        let Some(open) = s.open else { continue };
        let last_alive = s
            .acked_keepalives
            .iter()
            .map(|k| (k.invoke_us, Some(*k)))
            .chain(std::iter::once((open.invoke_us, None)))
            .max_by_key(|(t, _)| *t)
            .unwrap_or((open.invoke_us, None));
        let alive_until = last_alive.0 + s.timeout_ms * 1000;
        for e in &s.expired_answers {
            if let Some(k) = s
                .acked_keepalives
                .iter()
                .find(|k| k.invoke_us > e.complete_us)
            {
                violations.push(format!(
                    "session {id}: keepalive acknowledged after the session was answered expired \
                     (expired: {}; acknowledged later: {})",
                    describe(e),
                    describe(k)
                ));
            }
        }
        let mut reported_early = false;
        let mut gone: Vec<&Op> = Vec::new();
        for op in &history.ops {
            if let Call::Get { key, linearizable } = &op.call {
                if let Some(create) = s.ephemerals.get(key) {
                    let czxid = create.node().map(|n| n.czxid).unwrap_or(u64::MAX);
                    let includes_create = op.min_zxid.is_some_and(|f| f >= czxid)
                        || (*linearizable && op.invoke_us > create.complete_us);
                    if includes_create && op.fail_code() == Some("NoNode") {
                        gone.push(op);
                    }
                }
            }
        }
        gone.sort_by_key(|o| o.complete_us);
        for (path, create) in &s.ephemerals {
            let czxid = create.node().map(|n| n.czxid).unwrap_or(u64::MAX);
            for op in history
                .ops
                .iter()
                .filter(|o| matches!(&o.call, Call::Get { key, .. } if key == path))
            {
                let Call::Get { linearizable, .. } = &op.call else {
                    continue;
                };
                // A state that includes the creation: the floor covers it, or
                // a linearizable read invoked after the create was answered.
                let includes_create = op.min_zxid.is_some_and(|f| f >= czxid)
                    || (*linearizable && op.invoke_us > create.complete_us);
                match &op.outcome {
                    Outcome::Fail { code, .. } if code == "NoNode" && includes_create => {
                        observations += 1;
                        let closing = s.close_invoked.is_some_and(|c| c < op.complete_us);
                        if op.complete_us < alive_until
                            && !closing
                            && !op.final_read
                            && !reported_early
                        {
                            // One report per session: its first observation.
                            reported_early = true;
                            let because = match last_alive.1 {
                                Some(k) => format!(
                                    "member {} acknowledged a keepalive sent at {} µs (timeout {} ms): {}",
                                    k.member,
                                    k.invoke_us,
                                    s.timeout_ms,
                                    describe(k)
                                ),
                                None => format!("the session was opened at {} µs", open.invoke_us),
                            };
                            let first_gone = gone.first().copied().unwrap_or(op);
                            let acked_after = s
                                .acked_keepalives
                                .iter()
                                .filter(|k| k.invoke_us > first_gone.complete_us)
                                .count();
                            violations.push(format!(
                                "session {id}: ephemeral {path} was gone at {} µs, before the session \
                                 could expire ({alive_until} µs); {because}; {acked_after} keepalives \
                                 were acknowledged after an ephemeral of the session was first seen \
                                 gone at {} µs; the read: {}",
                                op.complete_us,
                                first_gone.complete_us,
                                describe(op)
                            ));
                        }
                    }
                    Outcome::Ok { node: Some(n), .. } => {
                        observations += 1;
                        if n.ephemeral_owner != *id {
                            violations.push(format!(
                                "ephemeral {path} of session {id} shows owner {}: {}",
                                n.ephemeral_owner,
                                describe(op)
                            ));
                        }
                        if op.final_read {
                            violations.push(format!(
                                "session {id} never expired: its ephemeral {path} is still there after \
                                 healing and waiting out its timeout: {}",
                                describe(op)
                            ));
                        } else if let Some(close) = s.close_acked {
                            let after = op.min_zxid.zip(close.zxid).is_some_and(|(f, c)| f >= c)
                                || (*linearizable && op.invoke_us > close.complete_us);
                            if after {
                                violations.push(format!(
                                    "ephemeral {path} outlived the acknowledged close of session {id} ({}): {}",
                                    describe(close),
                                    describe(op)
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for op in &history.ops {
        if let (Call::Get { key, .. }, Some(n)) = (&op.call, op.node()) {
            if n.ephemeral_owner != 0
                && owner_of
                    .get(key.as_str())
                    .is_some_and(|o| *o != n.ephemeral_owner)
            {
                violations.push(format!("{key} shows a foreign owner: {}", describe(op)));
            }
        }
    }
    Verdict::from_violations(
        "sessions",
        format!(
            "{} sessions, {} keepalives acknowledged, {observations} ephemeral observations",
            sessions.values().filter(|s| s.open.is_some()).count(),
            sessions
                .values()
                .map(|s| s.acked_keepalives.len())
                .sum::<usize>()
        ),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::build::*;
    use crate::check::VerdictKind;

    const S: u64 = 100;
    const MS: u64 = 1000;

    /// Session 100 (timeout 1000 ms) opened at 0, ephemeral /e created at 10 ms.
    fn base() -> Builder {
        let mut b = Builder::default();
        b.op(
            1,
            Call::OpenSession { timeout_ms: 1000 },
            0,
            5 * MS,
            Outcome::Ok {
                node: None,
                results: vec![],
                created: None,
                session: Some((S, 1000)),
                grant: None,
            },
            Some(S),
        );
        let mut node = seen("", 0, 101);
        node.ephemeral_owner = S;
        b.op(
            1,
            Call::CreateEphemeral {
                path: "/e".into(),
                session: S,
            },
            10 * MS,
            12 * MS,
            ok(Some(node)),
            Some(101),
        );
        b
    }

    fn keepalive(b: &mut Builder, at_ms: u64, out: Outcome, zxid: u64) {
        let id = b.op(
            1,
            Call::Keepalive { session: S },
            at_ms * MS,
            at_ms * MS + 500,
            out,
            Some(zxid),
        );
        // Keepalives carry their session's creation as their floor.
        b.ops[id as usize].min_zxid = Some(S);
    }

    fn lread(b: &mut Builder, at_ms: u64, out: Outcome) -> u64 {
        b.op(
            2,
            Call::Get {
                key: "/e".into(),
                linearizable: true,
            },
            at_ms * MS,
            at_ms * MS + 500,
            out,
            Some(200),
        )
    }

    #[test]
    fn expiry_after_the_last_keepalive_plus_timeout_is_valid() {
        let mut b = base();
        keepalive(&mut b, 500, ok(None), 101);
        keepalive(&mut b, 900, ok(None), 101);
        lread(
            &mut b,
            1200,
            ok(Some({
                let mut n = seen("", 0, 101);
                n.ephemeral_owner = S;
                n
            })),
        );
        lread(&mut b, 2000, fail(404, "NoNode"));
        keepalive(&mut b, 2100, fail(410, "SessionExpired"), 300);
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Valid, "{v:?}");
    }

    #[test]
    fn rejects_an_ephemeral_gone_while_keepalives_are_acknowledged() {
        // The cut-off follower keeps saying "alive" while the majority expired it.
        let mut b = base();
        keepalive(&mut b, 500, ok(None), 101);
        keepalive(&mut b, 1400, ok(None), 101);
        lread(&mut b, 1600, fail(404, "NoNode"));
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid, "{v:?}");
        assert!(
            v.violations[0].contains("before the session could expire"),
            "{v:?}"
        );
    }

    #[test]
    fn closing_the_session_allows_the_ephemeral_to_go() {
        let mut b = base();
        keepalive(&mut b, 500, ok(None), 101);
        b.op(
            1,
            Call::CloseSession { session: S },
            600 * MS,
            700 * MS,
            ok(None),
            Some(150),
        );
        lread(&mut b, 800, fail(404, "NoNode"));
        assert_eq!(check(&b.history()).result, VerdictKind::Valid);
        // ...but it must not outlive the acknowledged close.
        let mut b = base();
        b.op(
            1,
            Call::CloseSession { session: S },
            600 * MS,
            700 * MS,
            ok(None),
            Some(150),
        );
        lread(
            &mut b,
            800,
            ok(Some({
                let mut n = seen("", 0, 101);
                n.ephemeral_owner = S;
                n
            })),
        );
        assert_eq!(check(&b.history()).result, VerdictKind::Invalid);
    }

    #[test]
    fn rejects_a_keepalive_acknowledged_after_expired() {
        let mut b = base();
        keepalive(&mut b, 1500, fail(410, "SessionExpired"), 300);
        keepalive(&mut b, 1700, ok(None), 101);
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
        assert!(
            v.violations.iter().any(|m| m.contains("answered expired")),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_a_session_that_never_expires() {
        let mut b = base();
        let id = lread(
            &mut b,
            60_000,
            ok(Some({
                let mut n = seen("", 0, 101);
                n.ephemeral_owner = S;
                n
            })),
        );
        b.ops[id as usize].final_read = true;
        let v = check(&b.history());
        assert_eq!(v.result, VerdictKind::Invalid);
        assert!(v.violations[0].contains("never expired"), "{v:?}");
    }
}
