//! Lock safety: fenced writes never interleave, and no two clients believe they
//! hold a lock at once while one of them has already lost its session.
//!
//! The workload's lock holders acquire a lock (`LockAcquire`, the grant's
//! fencing token), then a few times read the counter linearizably and write
//! the value read plus one with `fence: {lock, token}`, then release. After a
//! write whose outcome is unknown or refused they write no more under that
//! grant. So in a correct run the counter goes up by exactly one at every
//! write that applied, and:
//! - **one sequence**: the acknowledged fenced writes of a counter, in `mzxid`
//!   order, write strictly increasing values with non-decreasing tokens, at
//!   distinct `mzxid`s (two holders writing from the same read would write the
//!   same value; an old token after a newer one is a write the fence let
//!   through late);
//! - **no interleaving**: between the read a write was computed from (the
//!   holder's read just before it) and the write itself, no other acknowledged
//!   write of the counter applied;
//! - **late writes are fenced**: a write with token `t` acknowledged at `mzxid`
//!   `m` while a grant with a larger token had already been answered at a zxid
//!   at or below `m` (its answer's `X-Keeper-Zxid`, which includes the removal
//!   of every older contender) let a deposed holder through;
//! - **tokens rise in grant order**: tokens are unique, and a grant asked for
//!   after another was answered has a larger token;
//! - **no two believers**: a holder believes it holds from its grant's answer
//!   until it invokes the release or its session is lost as the client sees it
//!   (the end of the last acknowledged keepalive's cover: its send + the
//!   session timeout; an acknowledgement arriving after that cover ran out
//!   comes too late, the client already reported the loss). The server may
//!   remove a contender only after both, so two holders of different sessions
//!   whose belief intervals overlap, or a fenced write refused `Fenced` while
//!   its holder still believed, mean a session was expired (or a contender
//!   removed) before the client could know.

use super::linearizable::describe;
use super::Verdict;
use crate::history::{Call, History, Op, Outcome};
use std::collections::BTreeMap;

/// The client-side loss time (µs) of each session: see the module docs.
fn loss_times(history: &History) -> BTreeMap<u64, u64> {
    let mut opens: BTreeMap<u64, (u64, u64)> = BTreeMap::new(); // id -> (until, timeout µs)
    let mut keepalives: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        match (&op.call, &op.outcome) {
            (
                Call::OpenSession { .. },
                Outcome::Ok {
                    session: Some((id, t)),
                    ..
                },
            ) => {
                opens.insert(*id, (op.invoke_us + t * 1000, t * 1000));
            }
            (Call::Keepalive { session }, Outcome::Ok { .. }) => {
                keepalives.entry(*session).or_default().push(op);
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for (id, (mut until, timeout)) in opens {
        let mut acks = keepalives.remove(&id).unwrap_or_default();
        acks.sort_by_key(|k| k.complete_us);
        for k in acks {
            if k.complete_us >= until {
                break;
            }
            until = until.max(k.invoke_us + timeout);
        }
        out.insert(id, until);
    }
    out
}

/// One acknowledged grant.
struct Held<'a> {
    acquire: &'a Op,
    lock: &'a str,
    session: u64,
    token: u64,
    /// Belief interval (µs): from the grant's answer to the release's
    /// invocation or the session's loss.
    from: u64,
    until: u64,
}

/// Runs the lock checks on `history`.
pub fn check(history: &History) -> Verdict {
    let loss = loss_times(history);
    let mut violations = Vec::new();
    let mut ops: Vec<&Op> = history.ops.iter().collect();
    ops.sort_by_key(|o| (o.invoke_us, o.id));

    // Grants and their belief intervals.
    let mut grants: Vec<Held<'_>> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (Call::LockAcquire { name, session, .. }, Outcome::Ok { grant: Some(g), .. }) =
            (&op.call, &op.outcome)
        else {
            continue;
        };
        let release = ops[i + 1..].iter().find(|o| {
            o.client == op.client
                && matches!(&o.call, Call::LockRelease { name: n, key } if n == name && *key == g.key)
        });
        let lost = loss.get(session).copied().unwrap_or(op.complete_us);
        let until = release.map_or(lost, |r| r.invoke_us.min(lost));
        grants.push(Held {
            acquire: op,
            lock: name,
            session: *session,
            token: g.token,
            from: op.complete_us,
            until,
        });
    }

    // Tokens unique, rising in grant order.
    let mut by_token: BTreeMap<(&str, u64), &Held<'_>> = BTreeMap::new();
    for g in &grants {
        if let Some(other) = by_token.insert((g.lock, g.token), g) {
            violations.push(format!(
                "lock {}: token {} granted twice: {} and {}",
                g.lock,
                g.token,
                describe(other.acquire),
                describe(g.acquire)
            ));
        }
    }
    for a in &grants {
        for b in &grants {
            if a.lock == b.lock && a.acquire.complete_us < b.acquire.invoke_us && b.token <= a.token
            {
                violations.push(format!(
                    "lock {}: token {} granted after token {} was (tokens must rise in grant order): {} then {}",
                    a.lock,
                    b.token,
                    a.token,
                    describe(a.acquire),
                    describe(b.acquire)
                ));
            }
            if a.lock == b.lock
                && a.session != b.session
                && a.from < a.until
                && b.from < b.until
                && a.token < b.token
                && b.from < a.until
                && a.from < b.until
            {
                violations.push(format!(
                    "lock {}: two holders at once: session {} (token {}) believed it held it from {} to {} µs \
                     (release or loss of its session), session {} (token {}) was granted it at {} µs: {} and {}",
                    a.lock,
                    a.session,
                    a.token,
                    a.from,
                    a.until,
                    b.session,
                    b.token,
                    b.from,
                    describe(a.acquire),
                    describe(b.acquire)
                ));
            }
        }
    }

    // Fenced writes, per counter key.
    let mut fenced: BTreeMap<&str, Vec<(&Op, u64, u64, &str)>> = BTreeMap::new(); // key -> (op, mzxid, token, value)
    let mut base_of: BTreeMap<u64, u64> = BTreeMap::new(); // write op id -> mzxid read before it
    let mut refused = 0usize;
    for (i, op) in ops.iter().enumerate() {
        let Call::Set {
            key,
            value,
            fence: Some(f),
            ..
        } = &op.call
        else {
            continue;
        };
        if op.fail_code() == Some("Fenced") {
            refused += 1;
            // Refused while its holder still believed it held the lock.
            if let Some(g) = grants
                .iter()
                .find(|g| g.acquire.client == op.client && g.token == f.token && g.lock == f.lock)
            {
                if op.complete_us < g.until {
                    violations.push(format!(
                        "lock {}: a write of the holder of token {} was refused Fenced at {} µs while its \
                         holder had not released and its session could not have expired before {} µs: {}",
                        f.lock,
                        f.token,
                        op.complete_us,
                        g.until,
                        describe(op)
                    ));
                }
            }
        }
        let Some(n) = op.node() else { continue };
        fenced
            .entry(key)
            .or_default()
            .push((op, n.mzxid, f.token, value));
        // The holder's previous op: the read the value came from.
        let read = ops[..i].iter().rev().find(|o| o.client == op.client);
        if let Some(r) = read {
            if let (Call::Get { key: k, .. }, Some(rn)) = (&r.call, r.node()) {
                if k == key {
                    base_of.insert(op.id, rn.mzxid);
                }
            }
        }
        // Late writes: a newer grant answered at or below this write's zxid.
        for g in grants
            .iter()
            .filter(|g| g.lock == f.lock && g.token > f.token)
        {
            if g.acquire.zxid.is_some_and(|z| z <= n.mzxid) {
                violations.push(format!(
                    "lock {}: a write with token {} applied at zxid {} after token {} was granted at zxid {:?} \
                     (a deposed holder's write was not fenced): {}; the grant: {}",
                    f.lock,
                    f.token,
                    n.mzxid,
                    g.token,
                    g.acquire.zxid,
                    describe(op),
                    describe(g.acquire)
                ));
                break;
            }
        }
    }
    let mut writes = 0usize;
    for (key, ws) in &mut fenced {
        ws.sort_by_key(|w| w.1);
        writes += ws.len();
        for pair in ws.windows(2) {
            let ((a, am, at, av), (b, bm, bt, bv)) = (pair[0], pair[1]);
            let (an, bn) = (av.parse::<u64>().ok(), bv.parse::<u64>().ok());
            if am == bm {
                violations.push(format!(
                    "counter {key}: two acknowledged writes at one zxid {am}: {} and {}",
                    describe(a),
                    describe(b)
                ));
            }
            if bt < at {
                violations.push(format!(
                    "counter {key}: token {bt} wrote at zxid {bm} after token {at} had written at {am} \
                     (fenced writes interleaved): {} then {}",
                    describe(a),
                    describe(b)
                ));
            }
            if an.zip(bn).is_none_or(|(x, y)| y <= x) {
                violations.push(format!(
                    "counter {key}: the acknowledged fenced writes do not form one sequence: \
                     {av:?} at zxid {am} then {bv:?} at zxid {bm} (two holders computed from the same state?): {} then {}",
                    describe(a),
                    describe(b)
                ));
            }
        }
        for (w, m, _, _) in ws.iter() {
            let Some(base) = base_of.get(&w.id) else {
                continue;
            };
            if let Some((other, om, ot, _)) = ws
                .iter()
                .find(|(o, om, _, _)| o.id != w.id && *om > *base && om < m)
            {
                violations.push(format!(
                    "counter {key}: a write by token {ot} at zxid {om} came between the read at mzxid {base} \
                     and the fenced write at zxid {m} computed from it (interleaved): {} inside {}",
                    describe(other),
                    describe(w)
                ));
            }
        }
    }
    Verdict::from_violations(
        "locks",
        format!(
            "{} grants, {writes} acknowledged fenced writes, {refused} refused Fenced",
            grants.len()
        ),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::build::*;
    use crate::history::{Fence, Grant};

    const K: &str = "/l/counter";

    fn granted(key: &str, token: u64) -> Outcome {
        Outcome::Ok {
            node: None,
            results: vec![],
            created: None,
            session: None,
            grant: Some(Grant {
                key: key.into(),
                token,
            }),
        }
    }

    fn session_ok(id: u64) -> Outcome {
        Outcome::Ok {
            node: None,
            results: vec![],
            created: None,
            session: Some((id, 1_000)),
            grant: None,
        }
    }

    struct H(Builder);

    impl H {
        fn new() -> H {
            H(Builder::default())
        }
        fn open(&mut self, c: u64, sid: u64, t: u64) {
            self.0.op(
                c,
                Call::OpenSession { timeout_ms: 1_000 },
                t,
                t + 10,
                session_ok(sid),
                Some(sid),
            );
        }
        fn keepalive(&mut self, c: u64, sid: u64, t: u64) {
            self.0.op(
                c,
                Call::Keepalive { session: sid },
                t,
                t + 10,
                session_ok(sid),
                None,
            );
        }
        fn acquire(&mut self, c: u64, sid: u64, t: (u64, u64), key: &str, token: u64, zxid: u64) {
            self.0.op(
                c,
                Call::LockAcquire {
                    name: "l".into(),
                    session: sid,
                    wait_ms: 100,
                },
                t.0,
                t.1,
                granted(key, token),
                Some(zxid),
            );
        }
        fn release(&mut self, c: u64, t: u64, key: &str) {
            self.0.op(
                c,
                Call::LockRelease {
                    name: "l".into(),
                    key: key.into(),
                },
                t,
                t + 10,
                ok(None),
                None,
            );
        }
        fn read(&mut self, c: u64, t: u64, v: &str, mzxid: u64) {
            self.0.lget(c, K, (t, t + 10), ok(Some(seen(v, 0, mzxid))));
        }
        fn write(&mut self, c: u64, t: u64, token: u64, v: &str, out: Outcome) {
            self.0.op(
                c,
                Call::Set {
                    key: K.into(),
                    value: v.into(),
                    version: -1,
                    fence: Some(Fence {
                        lock: "l".into(),
                        token,
                    }),
                },
                t,
                t + 10,
                out,
                None,
            );
        }
    }

    /// Two holders one after the other, each incrementing twice.
    fn good() -> H {
        let mut h = H::new();
        h.open(1, 100, 0);
        h.open(2, 200, 0);
        h.keepalive(1, 100, 500);
        h.acquire(1, 100, (600, 610), "0000000001", 50, 50);
        h.read(1, 620, "0", 1);
        h.write(1, 640, 50, "1", ok(Some(seen("1", 1, 51))));
        h.read(1, 660, "1", 51);
        h.write(1, 680, 50, "2", ok(Some(seen("2", 2, 52))));
        h.acquire(2, 200, (650, 720), "0000000002", 53, 54);
        h.release(1, 700, "0000000001");
        h.read(2, 730, "2", 52);
        h.write(2, 740, 53, "3", ok(Some(seen("3", 3, 55))));
        h.release(2, 760, "0000000002");
        h
    }

    #[test]
    fn holders_one_after_the_other_are_valid() {
        let v = check(&good().0.history());
        assert!(!v.is_violation(), "{v:?}");
        assert!(v.checked.starts_with("2 grants, 3 acknowledged"), "{v:?}");
    }

    #[test]
    fn rejects_interleaved_fenced_writes() {
        // Holder 2 read 1 and wrote 2 while holder 1 still wrote.
        let mut h = H::new();
        h.open(1, 100, 0);
        h.open(2, 200, 0);
        h.acquire(1, 100, (10, 20), "0000000001", 50, 50);
        h.acquire(2, 200, (15, 30), "0000000002", 53, 53);
        h.read(1, 40, "0", 1);
        h.read(2, 45, "0", 1);
        h.write(1, 60, 50, "1", ok(Some(seen("1", 1, 54))));
        h.write(2, 70, 53, "1", ok(Some(seen("1", 2, 55))));
        let v = check(&h.0.history());
        assert!(v.is_violation(), "{v:?}");
        let all = v.violations.join("\n");
        assert!(all.contains("one sequence"), "{all}");
        assert!(all.contains("interleaved"), "{all}");
        assert!(all.contains("two holders at once"), "{all}");
    }

    #[test]
    fn rejects_an_old_token_writing_after_a_newer_one() {
        let mut h = good();
        // Holder 1 writes again with its old token after holder 2 wrote.
        h.read(1, 800, "3", 55);
        h.write(1, 810, 50, "4", ok(Some(seen("4", 4, 56))));
        let v = check(&h.0.history());
        assert!(v.is_violation(), "{v:?}");
        let all = v.violations.join("\n");
        assert!(
            all.contains("token 50 wrote at zxid 56 after token 53"),
            "{all}"
        );
        assert!(all.contains("not fenced"), "{all}");
    }

    #[test]
    fn rejects_tokens_that_do_not_rise_in_grant_order() {
        let mut h = H::new();
        h.open(1, 100, 0);
        h.open(2, 200, 0);
        h.acquire(1, 100, (10, 20), "0000000002", 60, 60);
        h.release(1, 30, "0000000002");
        h.acquire(2, 200, (40, 50), "0000000001", 55, 61);
        let v = check(&h.0.history());
        assert!(v.is_violation(), "{v:?}");
        assert!(v.violations[0].contains("rise in grant order"), "{v:?}");
    }

    #[test]
    fn rejects_a_grant_while_the_other_holder_still_believes() {
        // Session 100 (timeout 1 s) acknowledged a keepalive sent at 500 µs,
        // so it cannot be lost before 1_000_500 µs; session 200 is granted
        // the lock at 400_000 µs without a release by client 1.
        let mut h = H::new();
        h.open(1, 100, 0);
        h.open(2, 200, 0);
        h.acquire(1, 100, (100, 200), "0000000001", 50, 50);
        h.keepalive(3, 100, 500);
        h.acquire(2, 200, (300_000, 400_000), "0000000002", 53, 60);
        h.release(2, 450_000, "0000000002");
        h.release(1, 1_200_000, "0000000001");
        let v = check(&h.0.history());
        assert!(v.is_violation(), "{v:?}");
        assert!(v.violations[0].contains("two holders at once"), "{v:?}");
    }

    #[test]
    fn a_grant_after_the_old_holders_session_was_lost_is_valid() {
        // Same, but the grant comes after the session's cover ran out
        // (1_000_500 µs); the old holder's late release is harmless. A
        // keepalive acknowledged after the cover ran out does not revive it.
        let mut h = H::new();
        h.open(1, 100, 0);
        h.open(2, 200, 0);
        h.acquire(1, 100, (100, 200), "0000000001", 50, 50);
        h.keepalive(3, 100, 500);
        h.keepalive(3, 100, 1_100_000);
        h.keepalive(4, 200, 900_000);
        h.acquire(2, 200, (1_000_000, 1_050_000), "0000000002", 53, 60);
        h.release(2, 1_060_000, "0000000002");
        h.release(1, 1_200_000, "0000000001");
        let v = check(&h.0.history());
        assert!(!v.is_violation(), "{v:?}");
    }

    #[test]
    fn rejects_a_write_fenced_while_its_holder_still_believed() {
        let mut h = H::new();
        h.open(1, 100, 0);
        h.acquire(1, 100, (10, 20), "0000000001", 50, 50);
        h.read(1, 30, "0", 1);
        h.write(1, 40, 50, "1", fail(409, "Fenced"));
        h.release(1, 60, "0000000001");
        let v = check(&h.0.history());
        assert!(v.is_violation(), "{v:?}");
        assert!(v.violations[0].contains("refused Fenced"), "{v:?}");
    }
}
