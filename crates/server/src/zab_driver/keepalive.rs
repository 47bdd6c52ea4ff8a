//! Keepalive confirmation on a cluster member: plain state that emits
//! effects (no tokio, no clock: every input carries `now`), executed by the
//! driver in `mod.rs`.
//!
//! ```text
//! follower: request ─▶ pending ─(tick)─▶ Relay{batch, ids} ─▶ leader
//!                                     ◀─ KeepalivesAck{batch, verdicts} ─ answer each
//! leader:   request / relayed batch ─▶ queued ─(tick)─▶ touch every session,
//!           THEN core.read_index(ctx): a quorum round that starts after the touch
//!           ─▶ ReadReady{ctx, commit} ─▶ wait until applied >= commit
//!           ─▶ settle each (Leases::settle) ─▶ answer locals, Ack each follower batch
//! ```
//!
//! # The promises (see "The session contract" in `docs/ARCHITECTURE.md`)
//! - Only a serving member answers `Alive`: the established leader, or a
//!   follower in the broadcast phase that heard from its leader within
//!   `leader_silence`. Any other member answers `Unavailable` at once.
//! - `Alive` is answered only after the leader touched the session and a
//!   quorum then acknowledged a round that started after the touch. A
//!   stale leader cut off from its quorum therefore never acknowledges:
//!   the round cannot complete once a quorum has moved to a new epoch.
//! - Every keepalive is answered within `confirm_wait` of its arrival
//!   (checked on every tick): nothing waits for ever and nothing is dropped
//!   silently. A relay that cannot be sent is answered `Unavailable` at once.
//! - A change of role, leader or epoch answers everything waiting with
//!   `Unavailable`.

use crate::sessions::{KeepaliveVerdict, Touch};
use keeper_store::SessionId;
use keeper_zab::{NodeId, Zxid};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Read-barrier contexts at or above this value are keepalive rounds; the
/// driver's own read barriers count up from 1 and never get near it.
pub const ROUND_CTX_BASE: u64 = 1 << 63;

/// The bounds of the keepalive path (from `Config`).
#[derive(Debug, Clone)]
pub struct KeepaliveBounds {
    /// A keepalive not confirmed within this long after it arrived is
    /// answered `Unavailable` (`keepalive_confirm_wait_ms`).
    pub confirm_wait: Duration,
    /// A follower that has heard nothing from its leader for this long
    /// answers `Unavailable` at once (`keepalive_leader_silence_ms`).
    pub leader_silence: Duration,
    /// Most distinct sessions in one relayed batch.
    pub max_batch: usize,
    /// Most keepalives waiting on this member at once (local requests and,
    /// on the leader, relayed ones); further ones are answered `Unavailable`.
    pub max_waiting: usize,
}

/// Where this member stands, as far as keepalives are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Looking, synchronizing, or stopped: answers `Unavailable` at once.
    NotServing,
    /// A follower in the broadcast phase under this leader.
    Following(NodeId),
    /// The established leader.
    Leading,
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect<R> {
    /// Answer one local keepalive.
    Answer { reply: R, verdict: KeepaliveVerdict },
    /// Follower: send these sessions' keepalives to the leader as `batch`.
    /// If the send fails, call [`Keepalives::relay_failed`].
    Relay {
        to: NodeId,
        batch: u64,
        ids: Vec<SessionId>,
    },
    /// Leader: answer a follower's `batch`.
    Ack {
        to: NodeId,
        batch: u64,
        results: Vec<(SessionId, KeepaliveVerdict)>,
    },
}

/// The leader's session leases, as the keepalive path uses them.
pub trait LeaseBook {
    /// Touches each session now; says what each touch found.
    fn touch(&mut self, ids: &[SessionId]) -> Vec<Touch>;
    /// Settles a keepalive whose touch found `touch`, against this member's
    /// state applied up to (at least) `applied`.
    fn settle(&mut self, id: SessionId, touch: Touch, applied: Zxid) -> KeepaliveVerdict;
}

/// Who waits for a keepalive on the leader.
#[derive(Debug)]
enum Origin<R> {
    Local(R),
    Remote { from: NodeId, batch: u64 },
}

#[derive(Debug)]
struct Waiting<R> {
    id: SessionId,
    origin: Origin<R>,
    arrived: Instant,
}

/// A follower's batch on its way to the leader.
#[derive(Debug)]
struct Flight<R> {
    waiting: Vec<(SessionId, R, Instant)>,
}

/// Leader: keepalives touched, waiting for the quorum round `ctx`.
#[derive(Debug)]
struct Round<R> {
    started: Instant,
    items: Vec<(Waiting<R>, Touch)>,
    /// The commit point the round confirmed; settled once applied.
    confirmed: Option<Zxid>,
}

/// The keepalive path of one member. `R` is how a local keepalive is
/// answered (a oneshot sender in the driver; anything in tests).
#[derive(Debug)]
pub struct Keepalives<R> {
    bounds: KeepaliveBounds,
    standing: Standing,
    last_heard: Instant,
    waiting: usize,
    // follower side
    pending: Vec<(SessionId, R, Instant)>,
    flights: BTreeMap<u64, Flight<R>>,
    next_batch: u64,
    // leader side
    queued: Vec<Waiting<R>>,
    rounds: BTreeMap<u64, Round<R>>,
    next_ctx: u64,
    effects: Vec<Effect<R>>,
}

impl<R> Keepalives<R> {
    /// A member that is not serving yet.
    pub fn new(bounds: KeepaliveBounds, now: Instant) -> Keepalives<R> {
        Keepalives {
            bounds,
            standing: Standing::NotServing,
            last_heard: now,
            waiting: 0,
            pending: Vec::new(),
            flights: BTreeMap::new(),
            next_batch: 1,
            queued: Vec::new(),
            rounds: BTreeMap::new(),
            next_ctx: ROUND_CTX_BASE,
            effects: Vec::new(),
        }
    }

    /// The effects produced so far, in order.
    pub fn take_effects(&mut self) -> Vec<Effect<R>> {
        std::mem::take(&mut self.effects)
    }

    /// Keepalives waiting on this member.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// True when read-barrier `ctx` is a keepalive round.
    pub fn owns(ctx: u64) -> bool {
        ctx >= ROUND_CTX_BASE
    }

    /// The member's role, leader or epoch may have changed. On any change
    /// everything waiting is answered `Unavailable`.
    pub fn set_standing(&mut self, standing: Standing, now: Instant) {
        if standing == self.standing {
            return;
        }
        self.standing = standing;
        self.last_heard = now;
        self.fail_all("leadership changed");
    }

    /// Any message from the current leader arrived (followers).
    pub fn heard_from_leader(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// A client's keepalive for `id` on this member.
    pub fn request(&mut self, id: SessionId, reply: R, now: Instant) {
        if let Some(why) = self.refusal(now) {
            self.answer(reply, KeepaliveVerdict::Unavailable(why));
            return;
        }
        if self.waiting >= self.bounds.max_waiting {
            self.answer(
                reply,
                KeepaliveVerdict::Unavailable("too many keepalives waiting on this member".into()),
            );
            return;
        }
        self.waiting += 1;
        match self.standing {
            Standing::Leading => self.queued.push(Waiting {
                id,
                origin: Origin::Local(reply),
                arrived: now,
            }),
            _ => {
                self.pending.push((id, reply, now));
                if self.pending.len() >= self.bounds.max_batch {
                    self.flush(now);
                }
            }
        }
    }

    /// Why this member cannot take a keepalive now, if it cannot.
    fn refusal(&self, now: Instant) -> Option<String> {
        match self.standing {
            Standing::NotServing => {
                Some("no leader: this member is electing, syncing or cut off from a quorum".into())
            }
            Standing::Leading => None,
            Standing::Following(leader) => {
                let silent = now.saturating_duration_since(self.last_heard);
                (silent > self.bounds.leader_silence).then(|| {
                    format!(
                        "nothing heard from leader {leader} for {} ms",
                        silent.as_millis()
                    )
                })
            }
        }
    }

    /// Leader: a follower relayed keepalives for `ids` as its `batch`.
    pub fn relayed(&mut self, from: NodeId, batch: u64, ids: Vec<SessionId>, now: Instant) {
        let refuse = if self.standing != Standing::Leading {
            Some("not the leader")
        } else if self.waiting.saturating_add(ids.len()) > self.bounds.max_waiting {
            Some("too many keepalives waiting on the leader")
        } else {
            None
        };
        if let Some(why) = refuse {
            let results = ids
                .into_iter()
                .map(|id| (id, KeepaliveVerdict::Unavailable(why.into())))
                .collect();
            self.effects.push(Effect::Ack {
                to: from,
                batch,
                results,
            });
            return;
        }
        self.waiting += ids.len();
        self.queued.extend(ids.into_iter().map(|id| Waiting {
            id,
            origin: Origin::Remote { from, batch },
            arrived: now,
        }));
    }

    /// Follower: the leader answered `batch`.
    pub fn acked(
        &mut self,
        from: NodeId,
        batch: u64,
        results: Vec<(SessionId, KeepaliveVerdict)>,
        now: Instant,
    ) {
        if self.standing != Standing::Following(from) {
            return;
        }
        self.heard_from_leader(now);
        let Some(flight) = self.flights.remove(&batch) else {
            return; // answered already (timed out)
        };
        let verdicts: HashMap<SessionId, KeepaliveVerdict> = results.into_iter().collect();
        for (id, reply, _) in flight.waiting {
            let verdict = verdicts.get(&id).cloned().unwrap_or_else(|| {
                KeepaliveVerdict::Unavailable("the leader did not answer for this session".into())
            });
            self.waiting -= 1;
            self.answer(reply, verdict);
        }
    }

    /// Follower: the relay of `batch` could not be sent.
    pub fn relay_failed(&mut self, batch: u64, why: &str) {
        if let Some(flight) = self.flights.remove(&batch) {
            for (_, reply, _) in flight.waiting {
                self.waiting -= 1;
                self.answer(
                    reply,
                    KeepaliveVerdict::Unavailable(format!("cannot reach the leader: {why}")),
                );
            }
        }
    }

    /// Once per driver tick: relays what a follower gathered, answers what
    /// waited longer than `confirm_wait`, and settles confirmed rounds that
    /// this member has applied far enough for (`applied`).
    pub fn tick(&mut self, now: Instant, applied: Zxid, book: &mut dyn LeaseBook) {
        self.flush(now);
        self.expire(now);
        let ready: Vec<u64> = self
            .rounds
            .iter()
            .filter(|(_, r)| r.confirmed.is_some_and(|z| z <= applied))
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in ready {
            self.settle_round(ctx, applied, book);
        }
    }

    /// Follower: sends the gathered keepalives to the leader as one batch.
    fn flush(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let leader = match (self.standing, self.refusal(now)) {
            (Standing::Following(leader), None) => leader,
            (_, why) => {
                let why = why.unwrap_or_else(|| "leadership changed".into());
                for (_, reply, _) in pending {
                    self.waiting -= 1;
                    self.answer(reply, KeepaliveVerdict::Unavailable(why.clone()));
                }
                return;
            }
        };
        let mut ids: Vec<SessionId> = pending.iter().map(|(id, _, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let batch = self.next_batch;
        self.next_batch += 1;
        self.flights.insert(batch, Flight { waiting: pending });
        self.effects.push(Effect::Relay {
            to: leader,
            batch,
            ids,
        });
    }

    /// Answers everything that waited longer than `confirm_wait`.
    fn expire(&mut self, now: Instant) {
        let wait = self.bounds.confirm_wait;
        let late = |arrived: Instant| now.saturating_duration_since(arrived) >= wait;
        let timed_out = || {
            KeepaliveVerdict::Unavailable(format!(
                "not confirmed by the leader within {} ms",
                wait.as_millis()
            ))
        };
        // Follower batches: every item of a batch arrived before it was sent.
        let batches: Vec<u64> = self
            .flights
            .iter()
            .filter(|(_, f)| f.waiting.iter().any(|(_, _, a)| late(*a)))
            .map(|(b, _)| *b)
            .collect();
        for b in batches {
            let Some(flight) = self.flights.remove(&b) else {
                continue;
            };
            for (_, reply, _) in flight.waiting {
                self.waiting -= 1;
                self.answer(reply, timed_out());
            }
        }
        // Leader rounds (a round waits on its oldest item).
        let rounds: Vec<u64> = self
            .rounds
            .iter()
            .filter(|(_, r)| late(r.started) || r.items.iter().any(|(w, _)| late(w.arrived)))
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in rounds {
            self.fail_round(ctx, &timed_out());
        }
    }

    /// Leader, once per tick: touches every queued session and registers a
    /// round for them. The driver must then start the quorum round with
    /// `core.read_index(ctx)`: it begins after the touch, as the contract
    /// requires. `None` when nothing is queued or this member is not the
    /// established leader.
    pub fn start_round(&mut self, now: Instant, book: &mut dyn LeaseBook) -> Option<u64> {
        if self.standing != Standing::Leading || self.queued.is_empty() {
            return None;
        }
        let queued = std::mem::take(&mut self.queued);
        let ids: Vec<SessionId> = queued.iter().map(|w| w.id).collect();
        let touches = book.touch(&ids);
        let items = queued
            .into_iter()
            .enumerate()
            .map(|(i, w)| (w, touches.get(i).copied().unwrap_or(Touch::Unknown)))
            .collect();
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        self.rounds.insert(
            ctx,
            Round {
                started: now,
                items,
                confirmed: None,
            },
        );
        Some(ctx)
    }

    /// Leader: the quorum round `ctx` completed (`ReadReady`); `commit` is
    /// the commit point it confirmed, `applied` what this member applied.
    pub fn round_confirmed(
        &mut self,
        ctx: u64,
        commit: Zxid,
        applied: Zxid,
        book: &mut dyn LeaseBook,
    ) {
        let Some(round) = self.rounds.get_mut(&ctx) else {
            return;
        };
        round.confirmed = Some(commit);
        if commit <= applied {
            self.settle_round(ctx, applied, book);
        }
    }

    /// Leader: the quorum round `ctx` failed (`ReadFailed`).
    pub fn round_failed(&mut self, ctx: u64) {
        self.fail_round(
            ctx,
            &KeepaliveVerdict::Unavailable("leadership not confirmed by a quorum".into()),
        );
    }

    fn settle_round(&mut self, ctx: u64, applied: Zxid, book: &mut dyn LeaseBook) {
        let Some(round) = self.rounds.remove(&ctx) else {
            return;
        };
        let results = round
            .items
            .into_iter()
            .map(|(w, touch)| {
                let verdict = book.settle(w.id, touch, applied);
                (w, verdict)
            })
            .collect();
        self.answer_items(results);
    }

    fn fail_round(&mut self, ctx: u64, verdict: &KeepaliveVerdict) {
        let Some(round) = self.rounds.remove(&ctx) else {
            return;
        };
        let results = round
            .items
            .into_iter()
            .map(|(w, _)| (w, verdict.clone()))
            .collect();
        self.answer_items(results);
    }

    /// Answers leader-side waiters: locals directly, remote ones as one
    /// `Ack` per follower batch.
    fn answer_items(&mut self, results: Vec<(Waiting<R>, KeepaliveVerdict)>) {
        let mut acks: BTreeMap<(NodeId, u64), Vec<(SessionId, KeepaliveVerdict)>> = BTreeMap::new();
        for (w, verdict) in results {
            self.waiting -= 1;
            match w.origin {
                Origin::Local(reply) => self.answer(reply, verdict),
                Origin::Remote { from, batch } => {
                    acks.entry((from, batch)).or_default().push((w.id, verdict));
                }
            }
        }
        for ((to, batch), results) in acks {
            self.effects.push(Effect::Ack { to, batch, results });
        }
    }

    /// Answers everything waiting with `Unavailable(why)`.
    fn fail_all(&mut self, why: &str) {
        let verdict = KeepaliveVerdict::Unavailable(why.into());
        for (_, reply, _) in std::mem::take(&mut self.pending) {
            self.waiting -= 1;
            self.answer(reply, verdict.clone());
        }
        for (_, flight) in std::mem::take(&mut self.flights) {
            for (_, reply, _) in flight.waiting {
                self.waiting -= 1;
                self.answer(reply, verdict.clone());
            }
        }
        let queued = std::mem::take(&mut self.queued);
        let mut items: Vec<(Waiting<R>, KeepaliveVerdict)> =
            queued.into_iter().map(|w| (w, verdict.clone())).collect();
        for (_, round) in std::mem::take(&mut self.rounds) {
            items.extend(round.items.into_iter().map(|(w, _)| (w, verdict.clone())));
        }
        self.answer_items(items);
    }

    fn answer(&mut self, reply: R, verdict: KeepaliveVerdict) {
        self.effects.push(Effect::Answer { reply, verdict });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{Leases, Touch};
    use keeper_store::SessionInfo;

    const LEADER: NodeId = 1;

    fn bounds() -> KeepaliveBounds {
        KeepaliveBounds {
            confirm_wait: Duration::from_millis(1_000),
            leader_silence: Duration::from_millis(400),
            max_batch: 100,
            max_waiting: 1_000,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The leader's leases plus a fake applied store, recording every call
    /// in order so tests can check that touches come before rounds.
    struct Book {
        leases: Leases,
        stored: HashMap<SessionId, u64>,
        now: Instant,
        log: Vec<String>,
    }

    impl Book {
        fn new(now: Instant, sessions: &[(SessionId, u64)]) -> Book {
            let infos: Vec<SessionInfo> = sessions
                .iter()
                .map(|(id, t)| SessionInfo {
                    id: *id,
                    timeout_ms: *t,
                })
                .collect();
            Book {
                leases: Leases::rebuild(&infos, now),
                stored: sessions.iter().copied().collect(),
                now,
                log: Vec::new(),
            }
        }
    }

    impl LeaseBook for Book {
        fn touch(&mut self, ids: &[SessionId]) -> Vec<Touch> {
            self.log.push(format!("touch {ids:?}"));
            ids.iter()
                .map(|id| self.leases.touch(*id, self.now))
                .collect()
        }
        fn settle(&mut self, id: SessionId, touch: Touch, applied: Zxid) -> KeepaliveVerdict {
            self.log.push(format!("settle {id}"));
            let stored = self
                .stored
                .get(&id)
                .map(|t| SessionInfo { id, timeout_ms: *t });
            self.leases.settle(id, touch, stored, applied, self.now)
        }
    }

    fn answers<R: Copy>(effects: &[Effect<R>]) -> Vec<(R, KeepaliveVerdict)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Answer { reply, verdict } => Some((*reply, verdict.clone())),
                _ => None,
            })
            .collect()
    }

    fn unavailable(v: &KeepaliveVerdict) -> bool {
        matches!(v, KeepaliveVerdict::Unavailable(_))
    }

    /// Problem 1 of issue 9: a member that is electing (or whose driver
    /// stopped) answered 200 from its own store.
    #[test]
    fn problem_1_a_member_that_is_not_serving_answers_unavailable_at_once() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(bounds(), t0);
        k.request(7, 1, t0);
        let e = k.take_effects();
        assert_eq!(e.len(), 1);
        assert!(unavailable(&answers(&e)[0].1), "{e:?}");
        assert_eq!(k.waiting(), 0);
    }

    /// Problem 1: a follower cut off from its leader kept answering 200.
    #[test]
    fn problem_1_a_follower_that_has_not_heard_from_its_leader_answers_unavailable_at_once() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(bounds(), t0);
        k.set_standing(Standing::Following(LEADER), t0);
        k.heard_from_leader(t0 + ms(100));
        // Within the silence bound: taken and relayed at the next tick.
        k.request(7, 1, t0 + ms(450));
        assert!(k.take_effects().is_empty());
        // Past it: refused at once, not relayed.
        k.request(7, 2, t0 + ms(501));
        let e = k.take_effects();
        assert_eq!(answers(&e).len(), 1);
        assert_eq!(answers(&e)[0].0, 2);
        assert!(unavailable(&answers(&e)[0].1));
        // And the one taken earlier is not relayed to a silent leader either.
        let mut book = Book::new(t0, &[]);
        k.tick(t0 + ms(502), Zxid(0), &mut book);
        let e = k.take_effects();
        assert!(
            !e.iter().any(|e| matches!(e, Effect::Relay { .. })),
            "{e:?}"
        );
        assert_eq!(answers(&e), vec![(1, answers(&e)[0].1.clone())]);
        assert!(unavailable(&answers(&e)[0].1));
        assert_eq!(k.waiting(), 0);
    }

    /// Problem 1: a relay the leader never confirms (dropped, partitioned)
    /// is answered Unavailable within `confirm_wait`, never 200.
    #[test]
    fn problem_1_an_unconfirmed_relay_is_unavailable_within_the_confirm_wait() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(bounds(), t0);
        k.set_standing(Standing::Following(LEADER), t0);
        let mut book = Book::new(t0, &[]);
        k.request(7, 1, t0 + ms(10));
        k.tick(t0 + ms(50), Zxid(0), &mut book);
        let e = k.take_effects();
        assert_eq!(
            e,
            vec![Effect::Relay {
                to: LEADER,
                batch: 1,
                ids: vec![7]
            }]
        );
        // The leader keeps heart-beating but never answers the batch.
        for t in (100..1_000).step_by(50) {
            k.heard_from_leader(t0 + ms(t));
            k.tick(t0 + ms(t), Zxid(0), &mut book);
            assert!(k.take_effects().is_empty(), "answered early at {t} ms");
        }
        k.tick(t0 + ms(1_010), Zxid(0), &mut book);
        let a = answers(&k.take_effects());
        assert_eq!(a.len(), 1);
        assert!(unavailable(&a[0].1), "{a:?}");
        // A late answer from the leader changes nothing.
        k.acked(
            LEADER,
            1,
            vec![(7, KeepaliveVerdict::Alive { timeout_ms: 9 })],
            t0 + ms(1_020),
        );
        assert!(k.take_effects().is_empty());
        assert_eq!(k.waiting(), 0);
    }

    #[test]
    fn problem_1_a_relay_that_cannot_be_sent_is_unavailable_at_once() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(bounds(), t0);
        k.set_standing(Standing::Following(LEADER), t0);
        let mut book = Book::new(t0, &[]);
        k.request(7, 1, t0);
        k.request(8, 2, t0);
        k.tick(t0 + ms(1), Zxid(0), &mut book);
        let Some(Effect::Relay { batch, .. }) = k.take_effects().pop() else {
            panic!("no relay");
        };
        k.relay_failed(batch, "link down");
        let a = answers(&k.take_effects());
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|(_, v)| unavailable(v)));
    }

    #[test]
    fn a_follower_answers_with_the_leaders_verdicts_and_dedups_the_batch() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(bounds(), t0);
        k.set_standing(Standing::Following(LEADER), t0);
        let mut book = Book::new(t0, &[]);
        k.request(7, 1, t0);
        k.request(7, 2, t0);
        k.request(8, 3, t0);
        k.request(9, 4, t0);
        k.tick(t0 + ms(1), Zxid(0), &mut book);
        assert_eq!(
            k.take_effects(),
            vec![Effect::Relay {
                to: LEADER,
                batch: 1,
                ids: vec![7, 8, 9]
            }]
        );
        // An answer from someone else than the leader is ignored.
        k.acked(2, 1, vec![(7, KeepaliveVerdict::Ended)], t0 + ms(2));
        assert!(k.take_effects().is_empty());
        k.acked(
            LEADER,
            1,
            vec![
                (7, KeepaliveVerdict::Alive { timeout_ms: 500 }),
                (8, KeepaliveVerdict::Ended),
            ],
            t0 + ms(3),
        );
        let mut a = answers(&k.take_effects());
        a.sort_by_key(|(r, _)| *r);
        assert_eq!(a[0], (1, KeepaliveVerdict::Alive { timeout_ms: 500 }));
        assert_eq!(a[1], (2, KeepaliveVerdict::Alive { timeout_ms: 500 }));
        assert_eq!(a[2], (3, KeepaliveVerdict::Ended));
        // The leader said nothing about 9: not confirmed.
        assert!(unavailable(&a[3].1));
        assert_eq!(k.waiting(), 0);
    }

    #[test]
    fn a_full_batch_is_relayed_at_once() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(
            KeepaliveBounds {
                max_batch: 2,
                ..bounds()
            },
            t0,
        );
        k.set_standing(Standing::Following(LEADER), t0);
        k.request(1, 1, t0);
        assert!(k.take_effects().is_empty());
        k.request(2, 2, t0);
        assert!(matches!(k.take_effects()[..], [Effect::Relay { .. }]));
    }

    #[test]
    fn waiting_keepalives_are_bounded() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(
            KeepaliveBounds {
                max_waiting: 2,
                ..bounds()
            },
            t0,
        );
        k.set_standing(Standing::Leading, t0);
        k.request(1, 1, t0);
        k.request(2, 2, t0);
        k.request(3, 3, t0);
        let a = answers(&k.take_effects());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, 3);
        assert!(unavailable(&a[0].1));
        k.relayed(2, 5, vec![4], t0);
        let e = k.take_effects();
        assert!(
            matches!(&e[..], [Effect::Ack { to: 2, batch: 5, results }] if unavailable(&results[0].1)),
            "{e:?}"
        );
    }

    /// The leader touches first, then the round starts; nothing is
    /// acknowledged before the round is confirmed and applied.
    #[test]
    fn problem_1_the_leader_acknowledges_only_after_a_quorum_round_that_started_after_the_touch() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(bounds(), t0);
        k.set_standing(Standing::Leading, t0);
        let mut book = Book::new(t0, &[(7, 3_000), (8, 3_000)]);
        k.request(7, 1, t0);
        k.relayed(2, 41, vec![8, 9, 99], t0);
        assert!(k.take_effects().is_empty(), "answered before any round");
        book.log.push("tick".into());
        k.tick(t0 + ms(1), Zxid(10), &mut book);
        let ctx = k.start_round(t0 + ms(1), &mut book).expect("a round");
        book.log.push(format!("read_index {ctx}"));
        assert!(Keepalives::<u32>::owns(ctx));
        assert!(k.take_effects().is_empty(), "answered before the round");
        let expected = [
            "tick".to_string(),
            "touch [7, 8, 9, 99]".to_string(),
            format!("read_index {ctx}"),
        ];
        assert_eq!(book.log, expected);
        // Confirmed at commit 20 while only 15 is applied: still waiting.
        k.round_confirmed(ctx, Zxid(20), Zxid(15), &mut book);
        assert!(k.take_effects().is_empty());
        k.tick(t0 + ms(5), Zxid(20), &mut book);
        let e = k.take_effects();
        assert_eq!(
            e,
            vec![
                Effect::Answer {
                    reply: 1,
                    verdict: KeepaliveVerdict::Alive { timeout_ms: 3_000 }
                },
                Effect::Ack {
                    to: 2,
                    batch: 41,
                    results: vec![
                        (8, KeepaliveVerdict::Alive { timeout_ms: 3_000 }),
                        // 9 <= applied and not stored: it ended.
                        (9, KeepaliveVerdict::Ended),
                        // 99 > applied: not known here yet, so not "ended".
                        (
                            99,
                            KeepaliveVerdict::Unavailable(
                                "session 99 is not applied here yet (applied up to zxid 20)".into()
                            )
                        ),
                    ]
                },
            ]
        );
        assert_eq!(k.waiting(), 0);
    }

    /// A stale leader cut off from its quorum: its rounds fail or time out,
    /// so it never acknowledges (the majority may have a new leader).
    #[test]
    fn problem_1_a_leader_whose_round_fails_or_stalls_never_acknowledges() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(bounds(), t0);
        k.set_standing(Standing::Leading, t0);
        let mut book = Book::new(t0, &[(7, 3_000)]);
        k.request(7, 1, t0);
        k.relayed(2, 3, vec![7], t0);
        let ctx = k.start_round(t0, &mut book).expect("round");
        k.round_failed(ctx);
        let e = k.take_effects();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().all(|e| match e {
            Effect::Answer { verdict, .. } => unavailable(verdict),
            Effect::Ack { results, .. } => results.iter().all(|(_, v)| unavailable(v)),
            Effect::Relay { .. } => false,
        }));
        // A round that is never answered times out.
        k.request(7, 2, t0 + ms(10));
        let ctx = k.start_round(t0 + ms(10), &mut book).expect("round");
        k.tick(t0 + ms(1_009), Zxid(0), &mut book);
        assert!(k.take_effects().is_empty());
        k.tick(t0 + ms(1_010), Zxid(0), &mut book);
        let a = answers(&k.take_effects());
        assert_eq!(a.len(), 1);
        assert!(unavailable(&a[0].1));
        // Its confirmation arriving later is ignored.
        k.round_confirmed(ctx, Zxid(0), Zxid(0), &mut book);
        assert!(k.take_effects().is_empty());
    }

    #[test]
    fn a_leadership_change_answers_everything_waiting_unavailable() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(bounds(), t0);
        let mut book = Book::new(t0, &[(7, 3_000)]);
        k.set_standing(Standing::Leading, t0);
        k.request(7, 1, t0);
        let _ = k.start_round(t0, &mut book);
        k.request(7, 2, t0);
        k.relayed(3, 9, vec![7], t0);
        k.set_standing(Standing::NotServing, t0 + ms(1));
        let e = k.take_effects();
        assert_eq!(answers(&e).len(), 2);
        assert!(answers(&e).iter().all(|(_, v)| unavailable(v)));
        assert!(e.iter().any(|e| matches!(
            e,
            Effect::Ack {
                to: 3,
                batch: 9,
                ..
            }
        )));
        assert_eq!(k.waiting(), 0);
        // A round confirmed after the change answers nothing.
        assert!(k.start_round(t0 + ms(2), &mut book).is_none());
        // Follower side too.
        k.set_standing(Standing::Following(2), t0 + ms(3));
        k.request(7, 3, t0 + ms(3));
        k.tick(t0 + ms(4), Zxid(0), &mut book);
        let _ = k.take_effects();
        k.set_standing(Standing::Following(3), t0 + ms(5));
        let a = answers(&k.take_effects());
        assert_eq!(a.len(), 1);
        assert!(unavailable(&a[0].1));
    }

    #[test]
    fn a_relayed_batch_on_a_member_that_is_not_leader_is_refused() {
        let t0 = Instant::now();
        let mut k: Keepalives<u32> = Keepalives::new(bounds(), t0);
        k.set_standing(Standing::Following(3), t0);
        k.relayed(2, 4, vec![5, 6], t0);
        let e = k.take_effects();
        assert!(
            matches!(&e[..], [Effect::Ack { to: 2, batch: 4, results }]
                if results.len() == 2 && results.iter().all(|(_, v)| unavailable(v))),
            "{e:?}"
        );
    }
}
