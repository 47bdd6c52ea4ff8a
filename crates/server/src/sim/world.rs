//! One seeded run of whole members: the network, the clients, the faults,
//! the event loop and the checks after every step.

use super::contract::SessionContract;
use super::member::{Event, MemberBounds, Mutation, Now, Out, Peer, ReqId, SimMember};
use crate::sessions::KeepaliveVerdict;
use crate::zab_driver::keepalive::KeepaliveBounds;
use bytes::Bytes;
use keeper_store::{NodeMode, Op, SessionId, StoreConfig, Txn, TxnOutcome};
use keeper_zab::sim::check::{Checker, Violation};
use keeper_zab::sim::{FaultCounts, FaultPlan, Network};
use keeper_zab::{Config, Member, MemberKind, NodeId, Zxid};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Simulated milliseconds per tick (the driver's `tick_ms`).
pub const TICK_MS: u64 = 50;

/// The member-level part of a seed's fault mix (the ZAB part is the core
/// simulator's [`FaultPlan`], drawn first from the same generator).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPlan {
    /// Per tick and member: probability that its disk stalls.
    pub disk_stall: f64,
    /// Stall length in ticks: uniform in 1..=max_stall_ticks.
    pub max_stall_ticks: u64,
    /// Per tick and member: probability of a background store flush.
    pub flush: f64,
    /// Keys per snapshot chunk and chunks in flight (small: long transfers).
    pub snap_chunk_keys: usize,
    pub snap_window: u32,
    /// Ticks a snapshot install takes.
    pub install_ticks: u64,
    /// Per tick: probability that the client opens a session.
    pub session_open: f64,
    /// Session timeouts, in ticks: uniform in min..=max.
    pub min_session_ticks: u64,
    pub max_session_ticks: u64,
    /// Per tick and session: probability that the client closes it.
    pub session_close: f64,
    /// Keepalive period as a fraction of the timeout (0.2..0.5).
    pub keepalive_fraction: f64,
    /// Per tick and session: probability that the client pauses its
    /// keepalives for a while (a slow or paused client).
    pub client_pause: f64,
    /// Ticks the session expiry task waits between runs.
    pub session_tick: u64,
    /// The applier lags commits by 0..=max_apply_lag_ticks.
    pub max_apply_lag_ticks: u64,
    /// Probability that a member crashes on the tick after it installed a
    /// snapshot (before its store is flushed again).
    pub crash_after_install: f64,
    /// Per tick: probability that the serving leader is drained (SIGTERM:
    /// it tells its followers it leaves, flushes, stops).
    pub drain: f64,
}

impl MemberPlan {
    fn draw(rng: &mut ChaCha8Rng) -> MemberPlan {
        let on = |p: f64, rng: &mut ChaCha8Rng| rng.gen_bool(p);
        let long_snap = on(0.5, rng);
        MemberPlan {
            disk_stall: if on(0.4, rng) {
                rng.gen_range(0.0..0.02)
            } else {
                0.0
            },
            max_stall_ticks: rng.gen_range(1..30),
            // RocksDB flushes when a memtable fills, rarely under a small
            // load: most seeds flush seldom, so a crash loses a lot.
            flush: if on(0.6, rng) {
                rng.gen_range(0.0..0.01)
            } else {
                rng.gen_range(0.0..0.2)
            },
            snap_chunk_keys: if long_snap { rng.gen_range(1..4) } else { 64 },
            snap_window: if long_snap { rng.gen_range(1..4) } else { 16 },
            install_ticks: rng.gen_range(0..10),
            session_open: rng.gen_range(0.01..0.1),
            min_session_ticks: 20,
            max_session_ticks: rng.gen_range(20..80),
            session_close: if on(0.3, rng) {
                rng.gen_range(0.0..0.01)
            } else {
                0.0
            },
            keepalive_fraction: rng.gen_range(0.2..0.5),
            client_pause: if on(0.3, rng) {
                rng.gen_range(0.0..0.01)
            } else {
                0.0
            },
            session_tick: rng.gen_range(1..6),
            max_apply_lag_ticks: if on(0.5, rng) { rng.gen_range(1..8) } else { 0 },
            crash_after_install: if on(0.3, rng) {
                rng.gen_range(0.0..0.5)
            } else {
                0.0
            },
            drain: if on(0.3, rng) {
                rng.gen_range(0.0..0.02)
            } else {
                0.0
            },
        }
    }
}

/// Knobs of a run that are not drawn from the seed.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// After faults stop, every member must have applied the same state
    /// (and every acknowledged write) within this many ticks.
    pub liveness_bound_ticks: u64,
    /// Print a readable trace of faults and client answers.
    pub trace: bool,
    /// A bug put back on purpose (the simulator's own tests).
    pub mutation: Option<Mutation>,
    /// Stress snapshot installs over the seed's draw: small DIFF limits,
    /// no background flushes (only compaction and checkpoints flush), and a
    /// crash after every other install.
    pub stress_installs: bool,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            liveness_bound_ticks: 2_000,
            trace: false,
            mutation: None,
            stress_installs: false,
        }
    }
}

/// Why a seed failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The invariant's name, or a short reason.
    pub invariant: String,
    /// Tick of the failure.
    pub tick: u64,
    /// What happened.
    pub detail: String,
}

/// Counts of one run.
#[derive(Debug, Clone, Default)]
pub struct MemberCounts {
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub sessions_created: u64,
    pub keepalives_alive: u64,
    pub keepalives_unavailable: u64,
    pub keepalives_ended: u64,
    pub expired: u64,
    pub closed: u64,
    pub disk_stalls: u64,
    pub flushes: u64,
    pub installs: u64,
    pub compactions: u64,
    pub reads_served: u64,
    pub drains: u64,
    pub reads_failed: u64,
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub seed: u64,
    pub plan: FaultPlan,
    pub member_plan: MemberPlan,
    pub ticks: u64,
    pub faults: FaultCounts,
    pub counts: MemberCounts,
    pub committed: usize,
    pub trace: Vec<String>,
    pub failure: Option<Failure>,
    /// Run with `SimOptions::stress_installs`.
    pub stress_installs: bool,
}

impl SeedReport {
    /// The one command that reproduces this seed, with a trace.
    pub fn reproduce_command(&self) -> String {
        format!(
            "cargo run --release -p keeper-server --bin member-sim -- --seeds 1 --seed-start {} --trace{}",
            self.seed,
            if self.stress_installs {
                " --stress-installs"
            } else {
                ""
            }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    Recover,
}

enum Pending {
    Write {
        started: u64,
    },
    CreateSession {
        timeout_ms: u64,
        started: u64,
    },
    Keepalive {
        session: SessionId,
        sent_ms: u64,
        started: u64,
    },
    /// A linearizable read; `floor` is the highest zxid of a write
    /// acknowledged before it started.
    Read {
        floor: Zxid,
        started: u64,
    },
}

struct ClientSession {
    id: SessionId,
    timeout_ms: u64,
    next_keepalive: u64,
    in_flight: bool,
    paused_until: u64,
    /// The client library's view: lost at (send time of the last
    /// acknowledged keepalive + timeout).
    alive_until_ms: u64,
    member: NodeId,
    closing: bool,
}

struct World {
    seed: u64,
    opts: SimOptions,
    plan: FaultPlan,
    mp: MemberPlan,
    rng: ChaCha8Rng,
    tick: u64,
    base: Instant,
    members: Vec<SimMember>,
    zab_members: Vec<Member>,
    net: Network<Peer>,
    checker: Checker,
    contract: SessionContract,
    counts: FaultCounts,
    mc: MemberCounts,
    trace: Vec<String>,
    phase: Phase,
    heal_tick: u64,
    partition_until: u64,
    failure: Option<Failure>,
    tokens: Vec<usize>,
    next_req: ReqId,
    next_value: u64,
    pending: HashMap<ReqId, (NodeId, Pending)>,
    sessions: Vec<ClientSession>,
    /// Acknowledged writes: zxid -> payload of the entry.
    acked: BTreeMap<Zxid, u64>,
    /// Expiry closes by zxid: (decided ms, leader established ms).
    expiries: HashMap<Zxid, (u64, u64)>,
    /// Tree digest of the state at each applied zxid, first seen.
    digests: HashMap<Zxid, (u64, NodeId)>,
    /// Members to crash on the next tick (after an install).
    crash_next: Vec<NodeId>,
}

/// Runs one seed to completion (or to its first failure).
pub fn run_seed(seed: u64, opts: &SimOptions) -> SeedReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plan = FaultPlan::draw(seed, &mut rng);
    let mut mp = MemberPlan::draw(&mut rng);
    if opts.stress_installs {
        plan.max_diff_entries = plan.max_diff_entries.min(4);
        plan.compaction = plan.compaction.max(0.05);
        mp.flush = 0.0;
        mp.crash_after_install = 0.5;
    }
    let mut w = World::new(seed, opts.clone(), plan, mp, rng);
    w.run();
    SeedReport {
        seed,
        plan: w.plan.clone(),
        member_plan: w.mp.clone(),
        ticks: w.tick,
        faults: w.counts.clone(),
        counts: w.mc.clone(),
        committed: w.checker.prefix.global().len(),
        trace: std::mem::take(&mut w.trace),
        failure: w.failure.take(),
        stress_installs: opts.stress_installs,
    }
}

impl World {
    fn new(seed: u64, opts: SimOptions, plan: FaultPlan, mp: MemberPlan, rng: ChaCha8Rng) -> World {
        let n = plan.nodes;
        let zab = Config {
            epoch_counter_limit: plan.epoch_counter_limit,
            max_diff_entries: plan.max_diff_entries,
            max_sync_batch_entries: plan.max_sync_batch_entries,
            ..Config::default()
        };
        let bounds = MemberBounds {
            zab,
            max_batch_entries: plan.max_batch.max(1) * 2,
            max_batch_bytes: 8 << 20,
            keepalive: KeepaliveBounds {
                confirm_wait: Duration::from_millis(20 * TICK_MS),
                leader_silence: Duration::from_millis(10 * TICK_MS),
                max_batch: 64,
                max_waiting: 1_000,
            },
            snap_chunk_keys: mp.snap_chunk_keys,
            snap_window: mp.snap_window,
            install_ticks: mp.install_ticks,
            install_stash: 256,
            max_pending_forwards: 1_000,
            max_fsync_ticks: plan.max_fsync_ticks,
            max_apply_lag_ticks: mp.max_apply_lag_ticks,
            mutation: opts.mutation,
        };
        let zab_members: Vec<Member> = (1..=n as NodeId)
            .map(|id| Member {
                id,
                kind: MemberKind::Participant,
            })
            .collect();
        let members = (1..=n as NodeId)
            .map(|id| SimMember::new(id, StoreConfig::default(), bounds.clone(), seed))
            .collect();
        let mut w = World {
            seed,
            opts,
            plan,
            mp,
            rng,
            tick: 0,
            base: Instant::now(),
            members,
            zab_members,
            net: Network::new(n),
            checker: Checker::new(n),
            contract: SessionContract::default(),
            counts: FaultCounts::default(),
            mc: MemberCounts::default(),
            trace: Vec::new(),
            phase: Phase::Faults,
            heal_tick: 0,
            partition_until: 0,
            failure: None,
            tokens: Vec::new(),
            next_req: 1,
            next_value: 1,
            pending: HashMap::new(),
            sessions: Vec::new(),
            acked: BTreeMap::new(),
            expiries: HashMap::new(),
            digests: HashMap::new(),
            crash_next: Vec::new(),
        };
        for id in 1..=n as NodeId {
            w.boot(id);
        }
        w
    }

    fn now(&self) -> Now {
        Now {
            tick: self.tick,
            instant: self.base + Duration::from_millis(self.tick * TICK_MS),
            ms: self.tick * TICK_MS,
        }
    }

    fn fail(&mut self, invariant: &str, detail: String) {
        if self.failure.is_none() {
            self.failure = Some(Failure {
                invariant: invariant.to_string(),
                tick: self.tick,
                detail,
            });
        }
    }

    fn violated(&mut self, v: Violation) {
        self.fail(v.invariant, v.detail);
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        if self.opts.trace {
            let line = format!("t={} {}", self.tick, what());
            self.trace.push(line);
        }
    }

    fn m(&mut self, id: NodeId) -> &mut SimMember {
        &mut self.members[id as usize - 1]
    }

    // ---- life cycle ------------------------------------------------------

    fn boot(&mut self, id: NodeId) {
        let (members, seed, now) = (self.zab_members.clone(), self.seed, self.now());
        if let Err(e) = self.m(id).boot(members, seed, now) {
            self.fail("CoreNew", e.to_string());
        }
    }

    fn crash(&mut self, id: NodeId) {
        self.counts.crashes += 1;
        self.note(|| format!("n{id} CRASH"));
        let down = self.rng.gen_range(1..=self.plan.max_down_ticks);
        let tick = self.tick;
        let m = self.m(id);
        m.crash();
        m.down_until = tick + down;
        let applied = m.store.last_applied();
        self.check_digest(id);
        // The store came back at its last flush: the member delivers the
        // entries above it again, and each must match what it delivered.
        let len = self.prefix_len(applied);
        if let Err(v) = self.checker.prefix.on_restart(id, len) {
            self.violated(v);
        }
        self.break_links_of(id);
        self.checker.reads.on_crash(id);
        // Its clients' connections break: what they waited for fails.
        let mut reqs: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, (m, _))| *m == id)
            .map(|(r, _)| *r)
            .collect();
        reqs.sort_unstable();
        for r in reqs {
            match self.pending.get(&r) {
                Some((_, Pending::Keepalive { .. })) => {
                    self.keepalive_done(r, KeepaliveVerdict::Unavailable("connection reset".into()))
                }
                Some((_, Pending::Read { .. })) => {
                    self.pending.remove(&r);
                }
                _ => self.write_done(r, Err("connection reset".into())),
            }
        }
    }

    /// A drain (rolling restart): the leader announces it leaves, closes
    /// its store cleanly and stops; it comes back like a crashed member.
    fn drain(&mut self, id: NodeId) {
        self.mc.drains += 1;
        self.note(|| format!("n{id} DRAIN"));
        let mut out = Out::default();
        for other in 1..=self.plan.nodes as NodeId {
            if other != id {
                out.sends.push((other, Peer::Leaving));
            }
        }
        self.m(id).stop_cleanly(&mut out);
        self.process(id, out);
        if self.failure.is_none() {
            self.crash(id);
        }
    }

    /// How many global transactions a state applied up to `z` holds.
    fn prefix_len(&self, z: Zxid) -> usize {
        self.checker.prefix.global().partition_point(|t| t.0 <= z)
    }

    fn restart(&mut self, id: NodeId) {
        self.counts.restarts += 1;
        self.note(|| format!("n{id} RESTART"));
        self.boot(id);
    }

    fn break_link(&mut self, a: NodeId, b: NodeId) {
        self.counts.broken_in_flight += self.net.break_link(a, b);
        let mut out = Out::default();
        self.m(a).link_down(b, &mut out);
        self.process(a, out);
        let mut out = Out::default();
        self.m(b).link_down(a, &mut out);
        self.process(b, out);
    }

    fn break_links_of(&mut self, id: NodeId) {
        for other in 1..=self.plan.nodes as NodeId {
            if other != id {
                self.break_link(id, other);
            }
        }
    }

    // ---- the event loop ----------------------------------------------------

    fn run(&mut self) {
        let fault_end = self.plan.fault_ticks;
        loop {
            self.tick += 1;
            match self.phase {
                Phase::Faults if self.tick > fault_end => self.heal_all(),
                Phase::Faults => self.inject_faults(),
                Phase::Recover => {}
            }
            self.deliver();
            self.tick_members();
            self.clients();
            self.background();
            if self.failure.is_some() {
                return;
            }
            if self.phase == Phase::Recover {
                if self.converged() {
                    self.check_final();
                    return;
                }
                if self.tick > self.heal_tick + self.opts.liveness_bound_ticks {
                    let state = self.describe();
                    self.fail("NoConvergence", state);
                    return;
                }
            }
        }
    }

    fn heal_all(&mut self) {
        self.phase = Phase::Recover;
        self.heal_tick = self.tick;
        self.note(|| "HEAL".into());
        self.net.heal();
        for id in 1..=self.plan.nodes as NodeId {
            self.m(id).stalled_until = 0;
            if !self.m(id).up() {
                self.restart(id);
            }
        }
    }

    fn inject_faults(&mut self) {
        let n = self.plan.nodes as NodeId;
        for id in std::mem::take(&mut self.crash_next) {
            if self.m(id).up() {
                self.crash(id);
            }
        }
        for id in 1..=n {
            let tick = self.tick;
            let m = self.m(id);
            if !m.up() && m.down_until <= tick {
                self.restart(id);
            }
        }
        if self.plan.crash > 0.0 && self.rng.gen_bool(self.plan.crash) {
            let id = self.rng.gen_range(1..=n);
            if self.m(id).up() {
                self.crash(id);
            }
        }
        if self.net.partitioned() && self.tick >= self.partition_until {
            self.net.heal();
            self.note(|| "PARTITION_HEAL".into());
        } else if !self.net.partitioned()
            && self.plan.partition > 0.0
            && self.rng.gen_bool(self.plan.partition)
        {
            let groups: Vec<u8> = (0..n).map(|_| self.rng.gen_range(0..2u8)).collect();
            if groups.iter().any(|g| *g != groups[0]) {
                self.counts.partitions += 1;
                self.note(|| format!("PARTITION {groups:?}"));
                self.net.partition(groups.clone());
                for a in 1..=n {
                    for b in a + 1..=n {
                        if groups[a as usize - 1] != groups[b as usize - 1] {
                            self.break_link(a, b);
                        }
                    }
                }
                self.partition_until =
                    self.tick + self.rng.gen_range(1..=self.plan.max_partition_ticks);
            }
        }
        if self.mp.drain > 0.0 && self.rng.gen_bool(self.mp.drain) {
            let leader = (1..=n).find(|id| self.members[*id as usize - 1].serving_leader());
            if let Some(id) = leader {
                self.drain(id);
            }
        }
        if self.plan.link_break > 0.0 && self.rng.gen_bool(self.plan.link_break) {
            let a = self.rng.gen_range(1..=n);
            let b = self.rng.gen_range(1..=n);
            if a != b {
                self.counts.link_breaks += 1;
                self.break_link(a, b);
            }
        }
        if self.mp.disk_stall > 0.0 {
            for id in 1..=n {
                if self.rng.gen_bool(self.mp.disk_stall) {
                    let len = self.rng.gen_range(1..=self.mp.max_stall_ticks);
                    self.mc.disk_stalls += 1;
                    let tick = self.tick;
                    self.note(|| format!("n{id} DISK_STALL {len}"));
                    let m = self.m(id);
                    m.stalled_until = m.stalled_until.max(tick + len);
                }
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, p: Peer) {
        if !self.m(to).up() {
            self.counts.broken_in_flight += 1;
            return;
        }
        if !self.net.connected(from, to) {
            self.counts.partitioned += 1;
            return;
        }
        if self.phase == Phase::Faults && self.plan.loss > 0.0 && self.rng.gen_bool(self.plan.loss)
        {
            // A lost message is a broken TCP connection: both ends see it.
            self.counts.lost += 1;
            self.break_link(from, to);
            return;
        }
        let delay = self.rng.gen_range(1..=self.plan.max_delay_ticks);
        self.net.push(from, to, self.tick + delay, p);
    }

    fn deliver(&mut self) {
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.clear();
        self.net.due_tokens(self.tick, &mut tokens);
        tokens.shuffle(&mut self.rng);
        for &i in &tokens {
            let Some((from, to, p)) = self.net.pop(i, self.tick) else {
                continue;
            };
            if !self.m(to).up() {
                continue;
            }
            let now = self.now();
            let mut out = Out::default();
            self.m(to).on_peer(from, p, now, &mut out);
            self.process(to, out);
            if self.failure.is_some() {
                break;
            }
        }
        self.tokens = tokens;
    }

    fn tick_members(&mut self) {
        for id in 1..=self.plan.nodes as NodeId {
            if !self.m(id).up() {
                continue;
            }
            let now = self.now();
            let mut out = Out::default();
            self.m(id).tick(now, &mut out);
            self.process(id, out);
            if self.tick % self.mp.session_tick == 0 && self.m(id).up() {
                let mut out = Out::default();
                self.m(id).expire_due(now, &mut out);
                self.process(id, out);
            }
        }
    }

    fn background(&mut self) {
        for id in 1..=self.plan.nodes as NodeId {
            if !self.m(id).up() || self.tick < self.m(id).stalled_until {
                continue;
            }
            if self.rng.gen_bool(self.mp.flush) {
                self.m(id).store.flush_tree();
                self.mc.flushes += 1;
            }
            if self.plan.compaction > 0.0 && self.rng.gen_bool(self.plan.compaction) {
                let keep = self.plan.compaction_keep;
                if self.m(id).compact(keep) {
                    self.counts.compactions += 1;
                    self.mc.compactions += 1;
                }
            }
        }
    }

    // ---- what members did -----------------------------------------------------

    fn process(&mut self, id: NodeId, out: Out) {
        if self.opts.trace {
            for ev in &out.events {
                let line = format!("t={} n{id} {ev:?}", self.tick);
                self.trace.push(line);
            }
            for (to, p) in &out.sends {
                let line = format!("t={} n{id} -> n{to} {}", self.tick, short(p));
                self.trace.push(line);
            }
        }
        for ev in out.events {
            self.event(id, ev);
            if self.failure.is_some() {
                return;
            }
        }
        self.check_digest(id);
        for (to, p) in out.sends {
            self.send(id, to, p);
        }
    }

    fn event(&mut self, id: NodeId, ev: Event) {
        match ev {
            Event::Fatal(e) => self.fail("Fatal", e),
            Event::Broadcast(txns) => {
                self.counts.proposed += txns.len() as u64;
                if let Err(v) = self.checker.on_broadcast(id, &txns) {
                    self.violated(v);
                }
            }
            Event::Committed { upto, durable } => {
                if let Err(v) = self.checker.durability.on_commit(id, upto, durable) {
                    self.violated(v);
                }
            }
            Event::Applied(list) => {
                for a in list {
                    let holders = self.durable_holders(a.zxid, a.payload);
                    let first =
                        self.checker.prefix.position(id) == self.checker.prefix.global().len();
                    if let Err(v) = self.checker.on_deliver(id, (a.zxid, a.payload), holders) {
                        self.violated(v);
                        return;
                    }
                    if first {
                        self.first_applied(a.zxid, &a.outcome, a.closes);
                        if self.failure.is_some() {
                            return;
                        }
                    }
                }
            }
            Event::Established { epoch } => {
                self.counts.leaders += 1;
                self.note(|| format!("n{id} LEADS epoch {epoch}"));
                let m = &self.members[id as usize - 1];
                let log: Vec<(Zxid, u64)> = m
                    .log
                    .iter()
                    .map(|e| (e.zxid, super::member::payload(&e.data)))
                    .collect();
                let applied_len = self.checker.prefix.position(id);
                if let Err(v) = self.checker.on_established(id, epoch, applied_len, &log) {
                    self.violated(v);
                }
            }
            Event::Installed { zxid } => {
                self.mc.installs += 1;
                self.note(|| format!("n{id} INSTALLED {zxid}"));
                if self.phase == Phase::Faults
                    && self.mp.crash_after_install > 0.0
                    && self.rng.gen_bool(self.mp.crash_after_install)
                {
                    self.crash_next.push(id);
                }
                let len = self.prefix_len(zxid);
                let have = self.checker.prefix.position(id);
                // A snapshot never moves a member backwards; a crashed
                // member's position was rewound to its disk already.
                if let Err(v) = self.checker.on_snapshot(id, len.max(have.min(len))) {
                    self.violated(v);
                }
            }
            Event::SnapshotSent => self.counts.snapshots += 1,
            Event::Truncated => self.counts.truncations += 1,
            Event::ExpiryProposed {
                zxid,
                id: session,
                decided_ms,
                established_ms,
            } => {
                self.note(|| format!("n{id} EXPIRES session {session} at {zxid}"));
                self.expiries.insert(zxid, (decided_ms, established_ms));
            }
            Event::WriteDone { req, result } => self.write_done(req, result),
            Event::KeepaliveDone { req, verdict } => self.keepalive_done(req, verdict),
            Event::ReadDone { req, result } => self.read_done(req, result),
        }
    }

    fn durable_holders(&self, z: Zxid, p: u64) -> usize {
        self.members
            .iter()
            .filter(|m| {
                m.store.durable_applied() >= z
                    || (z <= m.log_durable
                        && m.log.get(z).map(|e| super::member::payload(&e.data)) == Some(p))
            })
            .count()
    }

    /// The first application anywhere of an entry.
    fn first_applied(&mut self, zxid: Zxid, outcome: &TxnOutcome, closes: Option<SessionId>) {
        let at = self.tick * TICK_MS;
        match outcome {
            TxnOutcome::SessionCreated { id, timeout_ms } => {
                self.contract.on_created(*id, *timeout_ms, at);
            }
            TxnOutcome::SessionClosed(Ok(_)) => {
                let Some(id) = closes else { return };
                let expiry = self.expiries.get(&zxid).copied();
                if expiry.is_some() {
                    self.mc.expired += 1;
                } else {
                    self.mc.closed += 1;
                }
                if let Err(v) = self.contract.on_closed(id, at, expiry) {
                    self.violated(v);
                }
            }
            _ => {}
        }
    }

    // ---- the clients -----------------------------------------------------------

    fn random_member(&mut self) -> NodeId {
        self.rng.gen_range(1..=self.plan.nodes as NodeId)
    }

    fn clients(&mut self) {
        // Requests that waited too long: the client gives up (fate unknown).
        let tick = self.tick;
        let mut late: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, (_, p))| match p {
                Pending::Write { started, .. }
                | Pending::CreateSession { started, .. }
                | Pending::Read { started, .. } => tick > started + 200,
                Pending::Keepalive { started, .. } => tick > started + 200,
            })
            .map(|(r, _)| *r)
            .collect();
        late.sort_unstable();
        for r in late {
            if let Some((_, Pending::Keepalive { .. })) = self.pending.get(&r) {
                self.fail(
                    "KeepaliveAnswered",
                    format!("keepalive request {r} waited 200 ticks without an answer (the bound is confirm_wait)"),
                );
                return;
            }
            self.pending.remove(&r);
        }
        if self.phase == Phase::Faults {
            if self.rng.gen_bool(self.plan.propose) {
                self.client_write();
            }
            if self.plan.read > 0.0 && self.rng.gen_bool(self.plan.read) {
                self.client_read();
            }
            if self.rng.gen_bool(self.mp.session_open) && self.sessions.len() < 8 {
                let t = self.rng.gen_range(
                    self.mp.min_session_ticks
                        ..=self.mp.max_session_ticks.max(self.mp.min_session_ticks),
                );
                let target = self.random_member();
                let req = self.next_req;
                self.next_req += 1;
                self.pending.insert(
                    req,
                    (
                        target,
                        Pending::CreateSession {
                            timeout_ms: t * TICK_MS,
                            started: self.tick,
                        },
                    ),
                );
                self.submit_write(
                    target,
                    req,
                    Txn::CreateSession {
                        timeout_ms: t * TICK_MS,
                    },
                );
            }
        }
        self.keepalives();
    }

    /// A linearizable read through a random member (`plan.read`).
    fn client_read(&mut self) {
        let target = self.random_member();
        if !self.m(target).up() {
            return;
        }
        let floor = self.acked.keys().next_back().copied().unwrap_or(Zxid::ZERO);
        let req = self.next_req;
        self.next_req += 1;
        self.pending.insert(
            req,
            (
                target,
                Pending::Read {
                    floor,
                    started: self.tick,
                },
            ),
        );
        let now = self.now();
        let mut out = Out::default();
        self.m(target).client_read(req, now, &mut out);
        self.process(target, out);
    }

    /// A linearizable read is served from a state that holds every write
    /// acknowledged before it started.
    fn read_done(&mut self, req: ReqId, result: Result<Zxid, String>) {
        let Some((member, Pending::Read { floor, .. })) = self.pending.remove(&req) else {
            return;
        };
        match result {
            Ok(served) if served < floor => {
                self.fail(
                    "LinearizableRead",
                    format!("member {member} served a linearizable read at applied {served}, below {floor} acknowledged before the read started"),
                );
            }
            Ok(_) => self.mc.reads_served += 1,
            Err(_) => self.mc.reads_failed += 1,
        }
    }

    fn client_write(&mut self) {
        let target = self.random_member();
        let k = self.rng.gen_range(0..6u32);
        let path = format!("/k{k}");
        let value = self.next_value;
        self.next_value += 1;
        let data = Bytes::copy_from_slice(&value.to_le_bytes());
        let live: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|s| !s.closing)
            .map(|s| s.id)
            .collect();
        let txn = match self.rng.gen_range(0..10) {
            0..=3 => Txn::Op(Op::Set {
                path: path.clone(),
                data,
                version: -1,
            }),
            4..=5 => Txn::Op(Op::Create {
                path: path.clone(),
                data,
                mode: NodeMode::Persistent,
                session: 0,
                ttl_ms: None,
            }),
            6 => Txn::Op(Op::Delete {
                path: path.clone(),
                version: -1,
            }),
            7 if !live.is_empty() => {
                let s = live[self.rng.gen_range(0..live.len())];
                Txn::Op(Op::Create {
                    path: format!("/e{s}-"),
                    data,
                    mode: NodeMode::EphemeralSequential,
                    session: s,
                    ttl_ms: None,
                })
            }
            _ => Txn::Multi(vec![
                Op::Create {
                    path: format!("/m{k}"),
                    data: data.clone(),
                    mode: NodeMode::Persistent,
                    session: 0,
                    ttl_ms: None,
                },
                Op::Set {
                    path: path.clone(),
                    data,
                    version: -1,
                },
            ]),
        };
        let req = self.next_req;
        self.next_req += 1;
        self.pending
            .insert(req, (target, Pending::Write { started: self.tick }));
        self.submit_write(target, req, txn);
    }

    fn submit_write(&mut self, target: NodeId, req: ReqId, txn: Txn) {
        if !self.m(target).up() {
            self.write_done(req, Err("connection refused".into()));
            return;
        }
        let now = self.now();
        let mut out = Out::default();
        self.m(target).client_write(req, txn, now, &mut out);
        self.process(target, out);
    }

    fn keepalives(&mut self) {
        let now_ms = self.tick * TICK_MS;
        let tick = self.tick;
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|s| {
                !(s.closing || s.in_flight || tick < s.next_keepalive || tick < s.paused_until)
            })
            .map(|s| s.id)
            .collect();
        for sid in due {
            // Answers (at once, on a refusal) may drop sessions meanwhile.
            let Some(i) = self.sessions.iter().position(|s| s.id == sid) else {
                continue;
            };
            if self.mp.client_pause > 0.0 && self.rng.gen_bool(self.mp.client_pause) {
                let ticks = self
                    .rng
                    .gen_range(1..=self.sessions[i].timeout_ms / TICK_MS * 2);
                self.sessions[i].paused_until = self.tick + ticks;
                continue;
            }
            if self.phase == Phase::Faults
                && self.mp.session_close > 0.0
                && self.rng.gen_bool(self.mp.session_close)
            {
                let id = self.sessions[i].id;
                self.sessions[i].closing = true;
                let target = self.random_member();
                let req = self.next_req;
                self.next_req += 1;
                self.pending
                    .insert(req, (target, Pending::Write { started: self.tick }));
                self.submit_write(target, req, Txn::CloseSession { id });
                continue;
            }
            let s = &mut self.sessions[i];
            s.in_flight = true;
            let (id, member) = (s.id, s.member);
            let req = self.next_req;
            self.next_req += 1;
            self.pending.insert(
                req,
                (
                    member,
                    Pending::Keepalive {
                        session: id,
                        sent_ms: now_ms,
                        started: self.tick,
                    },
                ),
            );
            if !self.m(member).up() {
                self.keepalive_done(
                    req,
                    KeepaliveVerdict::Unavailable("connection refused".into()),
                );
                continue;
            }
            let now = self.now();
            let mut out = Out::default();
            self.m(member).client_keepalive(req, id, now, &mut out);
            self.process(member, out);
        }
    }

    fn write_done(&mut self, req: ReqId, result: Result<(Zxid, TxnOutcome), String>) {
        let Some((member, p)) = self.pending.remove(&req) else {
            return;
        };
        match (p, result) {
            (
                Pending::CreateSession { timeout_ms, .. },
                Ok((_, TxnOutcome::SessionCreated { id, .. })),
            ) => {
                self.mc.sessions_created += 1;
                self.mc.writes_acked += 1;
                let period =
                    ((timeout_ms / TICK_MS) as f64 * self.mp.keepalive_fraction).max(1.0) as u64;
                self.note(|| format!("session {id} created on n{member} timeout {timeout_ms}"));
                self.sessions.push(ClientSession {
                    id,
                    timeout_ms,
                    next_keepalive: self.tick + period,
                    in_flight: false,
                    paused_until: 0,
                    alive_until_ms: self.tick * TICK_MS + timeout_ms,
                    member,
                    closing: false,
                });
            }
            (_, Ok((zxid, _))) => {
                self.mc.writes_acked += 1;
                // An acknowledged write: the member applied it, so it was
                // delivered; it must stay in the history.
                let global = self.checker.prefix.global();
                match global.binary_search_by_key(&zxid, |t| t.0) {
                    Ok(i) => {
                        let p = global[i].1;
                        self.acked.insert(zxid, p);
                    }
                    Err(_) => self.fail(
                        "AckedWriteDelivered",
                        format!("write acknowledged at {zxid}, never delivered"),
                    ),
                }
            }
            (_, Err(_)) => self.mc.writes_failed += 1,
        }
    }

    fn keepalive_done(&mut self, req: ReqId, verdict: KeepaliveVerdict) {
        let Some((
            member,
            Pending::Keepalive {
                session, sent_ms, ..
            },
        )) = self.pending.remove(&req)
        else {
            return;
        };
        let now_ms = self.tick * TICK_MS;
        let Some(i) = self.sessions.iter().position(|s| s.id == session) else {
            return;
        };
        self.sessions[i].in_flight = false;
        match verdict {
            KeepaliveVerdict::Alive { timeout_ms } => {
                self.mc.keepalives_alive += 1;
                let s = &mut self.sessions[i];
                let period =
                    ((timeout_ms / TICK_MS) as f64 * self.mp.keepalive_fraction).max(1.0) as u64;
                s.next_keepalive = self.tick + period;
                s.alive_until_ms = s.alive_until_ms.max(sent_ms + timeout_ms);
                if let Err(v) = self.contract.on_alive(session, sent_ms, timeout_ms) {
                    self.violated(v);
                }
            }
            KeepaliveVerdict::Ended => {
                self.mc.keepalives_ended += 1;
                self.note(|| format!("session {session} ended (410 from n{member})"));
                if let Err(v) = self.contract.on_ended_answer(session, now_ms) {
                    self.violated(v);
                }
                self.sessions.remove(i);
            }
            KeepaliveVerdict::Unavailable(_) => {
                self.mc.keepalives_unavailable += 1;
                // On 503 the client tries another member.
                let next = self.random_member();
                let s = &mut self.sessions[i];
                s.member = next;
                s.next_keepalive = self.tick + 1;
                if now_ms >= s.alive_until_ms {
                    // The client library reports the session lost.
                    self.sessions.remove(i);
                }
            }
        }
    }

    // ---- checks -------------------------------------------------------------------

    /// Members with equal applied zxids have equal tree digests (also
    /// across time: the state at a zxid is the same whenever it is seen).
    /// Judged after every step of every member.
    fn check_digest(&mut self, id: NodeId) {
        if self.failure.is_some() {
            return;
        }
        let m = &self.members[id as usize - 1];
        let (z, d) = (m.store.last_applied(), m.store.digest());
        match self.digests.get(&z) {
            Some((d0, other)) if *d0 != d => {
                let other = *other;
                self.fail(
                    "EqualAppliedEqualDigest",
                    format!("member {id} at applied {z} has digest {d:#x}, member {other} had {d0:#x} there"),
                );
            }
            Some(_) => {}
            None => {
                self.digests.insert(z, (d, id));
            }
        }
    }

    fn converged(&self) -> bool {
        let Some(first) = self.members.first() else {
            return false;
        };
        let z = first.store.last_applied();
        let leaders = self.members.iter().filter(|m| m.serving_leader()).count();
        leaders == 1
            && self.members.iter().all(|m| {
                m.up()
                    && m.run.as_ref().is_some_and(|r| r.core.serving())
                    && m.store.last_applied() == z
                    && m.log.last() == z
            })
            && self.acked.keys().next_back().is_none_or(|a| *a <= z)
    }

    /// After convergence: no acknowledged write is lost, and every member
    /// holds the same state.
    fn check_final(&mut self) {
        let global: HashMap<Zxid, u64> = self.checker.prefix.global().iter().copied().collect();
        for (z, p) in self.acked.clone() {
            if global.get(&z) != Some(&p) {
                self.fail(
                    "AckedWriteLost",
                    format!("acknowledged write at {z} is not in the delivered history"),
                );
                return;
            }
        }
        let d0 = self.members[0].store.digest();
        for m in &self.members {
            if m.store.digest() != d0 {
                let (id, d) = (m.id, m.store.digest());
                self.fail(
                    "ConvergedDigest",
                    format!("member {id} digest {d:#x} != member 1's {d0:#x}"),
                );
                return;
            }
        }
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            match &m.run {
                None => s.push_str(&format!("[n{} down] ", m.id)),
                Some(r) => {
                    let st = r.core.status();
                    s.push_str(&format!(
                        "[n{} {:?} serving={} leader={:?} epoch={} last={} durable={} applied={} flushed={}] ",
                        m.id,
                        st.role,
                        st.serving,
                        st.leader,
                        st.leader_epoch,
                        m.log.last(),
                        m.log_durable,
                        m.store.last_applied(),
                        m.store.durable_applied(),
                    ));
                }
            }
        }
        s.push_str(&format!(
            "pending={} acked_max={:?}",
            self.pending.len(),
            self.acked.keys().next_back()
        ));
        s
    }
}

fn short(p: &Peer) -> String {
    match p {
        Peer::SnapBegin {
            stream,
            snap,
            chunks,
        } => {
            format!(
                "SnapBegin {{ stream: {stream}, zxid: {}, chunks: {chunks} }}",
                snap.zxid
            )
        }
        p => format!("{p:?}"),
    }
}
