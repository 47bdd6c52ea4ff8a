//! One simulated run: members (core + in-memory disk), the network, the
//! client, the fault injector, and the event loop that ties them together.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::check::{Checker, Txn, Violation};
use super::faults::{FaultCounts, FaultPlan};
use super::network::{Network, Packet};
use crate::core::follows;
use crate::{
    Action, Bootstrap, Config, Core, MemLog, Member, MemberKind, NodeId, Role, ZabError, Zxid,
};

/// Knobs of a simulation run that are not drawn from the seed.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// After faults stop, a new proposal must commit everywhere and members
    /// must converge within this many ticks.
    pub liveness_bound_ticks: u64,
    /// Record a human-readable trace (slow; for reproducing a failure).
    pub trace: bool,
    #[cfg(test)]
    pub(crate) mutation: Option<crate::core::Mutation>,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            liveness_bound_ticks: 1_500,
            trace: false,
            #[cfg(test)]
            mutation: None,
        }
    }
}

/// Safety (an invariant broke), liveness (no progress after healing), or a
/// fatal error returned by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// An invariant checker rejected the history.
    Safety,
    /// After faults stopped, the cluster did not recover within the bound.
    Liveness,
    /// The core returned an error it should not have.
    Fatal,
}

/// Why a seed failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which kind of failure.
    pub kind: FailureKind,
    /// The invariant's name, or a short reason.
    pub invariant: String,
    /// Tick of the failure.
    pub tick: u64,
    /// What happened.
    pub detail: String,
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// The fault mix it drew.
    pub plan: FaultPlan,
    /// Ticks simulated.
    pub ticks: u64,
    /// Faults injected and protocol events.
    pub faults: FaultCounts,
    /// Transactions delivered (globally).
    pub committed: usize,
    /// Ticks from healing to full convergence (0 if the run failed first).
    pub recovery_ticks: u64,
    /// Hash of every action and fault, in order: equal runs have equal hashes.
    pub trace_hash: u64,
    /// The readable trace, if requested.
    pub trace: Vec<String>,
    /// The failure, if any.
    pub failure: Option<Failure>,
}

impl SeedReport {
    /// The one command that reproduces this seed (with a trace).
    pub fn reproduce_command(&self) -> String {
        format!(
            "cargo run --release -p keeper-zab --bin zab-sim -- --seeds 1 --seed-start {} --trace",
            self.seed
        )
    }
}

struct Node {
    id: NodeId,
    core: Option<Core>,
    log: MemLog,
    durable: Zxid,
    accepted_epoch: u32,
    current_epoch: u32,
    applied: Zxid,
    fsyncs: VecDeque<(u64, Zxid)>,
    down_until: u64,
    boots: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    Recover,
    Converge,
}

struct World {
    seed: u64,
    opts: SimOptions,
    plan: FaultPlan,
    rng: ChaCha8Rng,
    now: u64,
    nodes: Vec<Node>,
    members: Vec<Member>,
    net: Network,
    checker: Checker,
    counts: FaultCounts,
    hasher: DefaultHasher,
    trace: Vec<String>,
    next_payload: u64,
    next_ctx: u64,
    partition_until: u64,
    phase: Phase,
    heal_tick: u64,
    marker: Option<(u64, u64)>,
    failure: Option<Failure>,
    tokens: Vec<usize>,
}

/// Runs one seed to completion (or to its first failure).
pub fn run_seed(seed: u64, opts: &SimOptions) -> SeedReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plan = FaultPlan::draw(seed, &mut rng);
    let mut w = World::new(seed, opts.clone(), plan, rng);
    w.run();
    SeedReport {
        seed,
        plan: w.plan.clone(),
        ticks: w.now,
        faults: w.counts.clone(),
        committed: w.checker.prefix.global().len(),
        recovery_ticks: if w.failure.is_none() {
            w.now.saturating_sub(w.heal_tick)
        } else {
            0
        },
        trace_hash: w.hasher.finish(),
        trace: std::mem::take(&mut w.trace),
        failure: w.failure.take(),
    }
}

fn payload(data: &Bytes) -> Option<u64> {
    let b: [u8; 8] = data.as_ref().try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

impl World {
    fn new(seed: u64, opts: SimOptions, plan: FaultPlan, rng: ChaCha8Rng) -> World {
        let n = plan.nodes;
        let members: Vec<Member> = (1..=n as NodeId)
            .map(|id| Member {
                id,
                kind: MemberKind::Participant,
            })
            .collect();
        let nodes = (1..=n as NodeId)
            .map(|id| Node {
                id,
                core: None,
                log: MemLog::new(),
                durable: Zxid::ZERO,
                accepted_epoch: 0,
                current_epoch: 0,
                applied: Zxid::ZERO,
                fsyncs: VecDeque::new(),
                down_until: 0,
                boots: 0,
            })
            .collect();
        let mut w = World {
            seed,
            opts,
            plan,
            rng,
            now: 0,
            nodes,
            members,
            net: Network::new(n),
            checker: Checker::new(n),
            counts: FaultCounts::default(),
            hasher: DefaultHasher::new(),
            trace: Vec::new(),
            next_payload: 1,
            next_ctx: 1,
            partition_until: 0,
            phase: Phase::Faults,
            heal_tick: 0,
            marker: None,
            failure: None,
            tokens: Vec::new(),
        };
        for id in 1..=n as NodeId {
            w.boot(id);
        }
        w
    }

    fn config(&self) -> Config {
        Config {
            epoch_counter_limit: self.plan.epoch_counter_limit,
            max_diff_entries: self.plan.max_diff_entries,
            max_sync_batch_entries: self.plan.max_sync_batch_entries,
            max_batch_bytes: self.plan.max_batch_bytes,
            max_sync_batch_bytes: self.plan.max_sync_batch_bytes,
            max_diff_bytes: self.plan.max_diff_bytes,
            #[cfg(test)]
            mutation: self.opts.mutation,
            ..Config::default()
        }
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn fail(&mut self, kind: FailureKind, invariant: &str, detail: String) {
        if self.failure.is_none() {
            self.failure = Some(Failure {
                kind,
                invariant: invariant.to_string(),
                tick: self.now,
                detail,
            });
        }
    }

    fn violated(&mut self, v: Violation) {
        self.fail(FailureKind::Safety, v.invariant, v.detail);
    }

    fn event(&mut self, what: &str, node: NodeId) {
        (self.now, what, node).hash(&mut self.hasher);
        if self.opts.trace {
            self.trace
                .push(format!("t={} n{} {}", self.now, node, what));
        }
    }

    // ---- life cycle of members ----

    fn boot(&mut self, id: NodeId) {
        let cfg = self.config();
        let members = self.members.clone();
        let seed = self.seed;
        let n = self.node(id);
        n.boots += 1;
        let boot = Bootstrap {
            id,
            members,
            accepted_epoch: n.accepted_epoch,
            current_epoch: n.current_epoch,
            applied_zxid: n.applied,
            seed: seed
                ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ n.boots.wrapping_mul(0xD1B5_4A32_D192_ED03),
        };
        match Core::new(cfg, boot, &n.log) {
            Ok(core) => n.core = Some(core),
            Err(e) => self.fail(FailureKind::Fatal, "CoreNew", e.to_string()),
        }
    }

    fn crash(&mut self, id: NodeId) {
        self.counts.crashes += 1;
        self.event("CRASH", id);
        let down = self.rng.gen_range(1..=self.plan.max_down_ticks);
        let now = self.now;
        let n = self.node(id);
        n.core = None;
        n.down_until = now + down;
        n.fsyncs.clear();
        let durable = n.durable;
        if let Err(e) = n.log.truncate(durable) {
            self.fail(FailureKind::Fatal, "CrashTruncate", e.0);
        }
        self.counts.broken_in_flight += self.net.isolate(id);
        self.checker.reads.on_crash(id);
    }

    fn restart(&mut self, id: NodeId) {
        self.counts.restarts += 1;
        self.event("RESTART", id);
        self.boot(id);
    }

    // ---- the event loop ----

    fn run(&mut self) {
        let fault_end = self.plan.fault_ticks;
        loop {
            self.now += 1;
            match self.phase {
                Phase::Faults if self.now > fault_end => self.heal_all(),
                Phase::Faults => self.inject_faults(),
                _ => {}
            }
            self.deliver_messages();
            self.complete_fsyncs();
            self.tick_cores();
            self.client();
            self.compact_logs();
            self.liveness();
            if self.failure.is_some() {
                return;
            }
            if self.phase == Phase::Converge && self.converged() {
                return;
            }
        }
    }

    fn heal_all(&mut self) {
        self.phase = Phase::Recover;
        self.heal_tick = self.now;
        self.event("HEAL", 0);
        self.net.heal();
        for id in 1..=self.plan.nodes as NodeId {
            if self.node(id).core.is_none() {
                self.restart(id);
            }
        }
    }

    fn inject_faults(&mut self) {
        let n = self.plan.nodes as NodeId;
        for id in 1..=n {
            let node = self.node(id);
            if node.core.is_none() && node.down_until <= self.now {
                self.restart(id);
            }
        }
        if self.plan.crash > 0.0 && self.rng.gen_bool(self.plan.crash) {
            let id = self.rng.gen_range(1..=n);
            if self.node(id).core.is_some() {
                self.crash(id);
            }
        }
        if self.net.partitioned() && self.now >= self.partition_until {
            self.net.heal();
            self.event("PARTITION_HEAL", 0);
        } else if !self.net.partitioned()
            && self.plan.partition > 0.0
            && self.rng.gen_bool(self.plan.partition)
        {
            let groups: Vec<u8> = (0..n).map(|_| self.rng.gen_range(0..2u8)).collect();
            if groups.iter().any(|g| *g != groups[0]) {
                self.counts.partitions += 1;
                self.event("PARTITION", 0);
                self.counts.broken_in_flight += self.net.partition(groups);
                self.partition_until =
                    self.now + self.rng.gen_range(1..=self.plan.max_partition_ticks);
            }
        }
        if self.plan.link_break > 0.0 && self.rng.gen_bool(self.plan.link_break) {
            let a = self.rng.gen_range(1..=n);
            let b = self.rng.gen_range(1..=n);
            if a != b {
                self.counts.link_breaks += 1;
                self.event("LINK_BREAK", a * 100 + b);
                self.counts.broken_in_flight += self.net.break_link(a, b);
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, p: Packet) {
        if self.node(to).core.is_none() {
            self.counts.broken_in_flight += 1;
            return;
        }
        if !self.net.connected(from, to) {
            self.counts.partitioned += 1;
            return;
        }
        if self.phase == Phase::Faults && self.plan.loss > 0.0 && self.rng.gen_bool(self.plan.loss)
        {
            self.counts.lost += 1;
            return;
        }
        let delay = self.rng.gen_range(1..=self.plan.max_delay_ticks);
        self.net.push(from, to, self.now + delay, p);
    }

    fn deliver_messages(&mut self) {
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.clear();
        self.net.due_tokens(self.now, &mut tokens);
        tokens.shuffle(&mut self.rng);
        for &i in &tokens {
            let Some((from, to, p)) = self.net.pop(i, self.now) else {
                continue;
            };
            match p {
                Packet::Msg(msg) => {
                    let n = &mut self.nodes[to as usize - 1];
                    let Some(core) = n.core.as_mut() else {
                        continue;
                    };
                    let r = core.step(&n.log, from, msg);
                    self.after_call(to, r);
                }
                Packet::Snapshot { zxid, len } => self.install_snapshot(from, to, zxid, len),
            }
            if self.failure.is_some() {
                break;
            }
        }
        self.tokens = tokens;
    }

    fn install_snapshot(&mut self, from: NodeId, to: NodeId, zxid: Zxid, len: usize) {
        let n = &mut self.nodes[to as usize - 1];
        let Some(core) = n.core.as_ref() else { return };
        if core.expects_snapshot_from() != Some(from) {
            return;
        }
        if let Err(v) = self.checker.on_snapshot(to, len) {
            self.violated(v);
            return;
        }
        self.event("SNAPSHOT_INSTALLED", to);
        let n = &mut self.nodes[to as usize - 1];
        n.log.reset(zxid);
        n.durable = zxid;
        n.applied = zxid;
        n.fsyncs.clear();
        let Some(core) = n.core.as_mut() else { return };
        let actions = core.snapshot_installed(zxid);
        self.exec(to, actions);
    }

    fn complete_fsyncs(&mut self) {
        for i in 0..self.nodes.len() {
            loop {
                let n = &mut self.nodes[i];
                match n.fsyncs.front() {
                    Some((due, _)) if *due <= self.now => {}
                    _ => break,
                }
                let Some((_, upto)) = n.fsyncs.pop_front() else {
                    break;
                };
                let upto = upto.min(n.log.last());
                if upto > n.durable {
                    n.durable = upto;
                }
                let Some(core) = n.core.as_mut() else { break };
                let r = core.on_persisted(&n.log, upto);
                let id = n.id;
                self.after_call(id, r);
            }
        }
    }

    fn tick_cores(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            let Some(core) = n.core.as_mut() else {
                continue;
            };
            let r = core.tick(&n.log);
            let id = n.id;
            self.after_call(id, r);
        }
    }

    fn serving_leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| matches!(&n.core, Some(c) if c.role() == Role::Leading && c.serving()))
            .map(|n| n.id)
            .collect()
    }

    fn client(&mut self) {
        if self.phase == Phase::Converge {
            return;
        }
        if self.rng.gen_bool(self.plan.propose) {
            let leaders = self.serving_leaders();
            let target = if !leaders.is_empty() && self.rng.gen_bool(0.95) {
                leaders[self.rng.gen_range(0..leaders.len())]
            } else {
                self.rng.gen_range(1..=self.plan.nodes as NodeId)
            };
            let k = self.rng.gen_range(1..=self.plan.max_batch);
            self.propose(target, k);
        }
        if self.plan.read > 0.0 && self.rng.gen_bool(self.plan.read) {
            let target = self.rng.gen_range(1..=self.plan.nodes as NodeId);
            if self.node(target).core.is_some() {
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                let bound = self
                    .checker
                    .prefix
                    .global()
                    .last()
                    .map_or(Zxid::ZERO, |t| t.0);
                self.checker.reads.on_start(target, ctx, bound);
                let n = self.node(target);
                if let Some(core) = n.core.as_mut() {
                    let actions = core.read_index(ctx);
                    self.exec(target, actions);
                }
            }
        }
    }

    /// Proposes `k` fresh payloads at `target`; returns the payload of the last one if accepted.
    fn propose(&mut self, target: NodeId, k: usize) -> Option<u64> {
        let first_payload = self.next_payload;
        let data: Vec<Bytes> = (0..k as u64)
            .map(|i| Bytes::copy_from_slice(&(first_payload + i).to_le_bytes()))
            .collect();
        let n = &mut self.nodes[target as usize - 1];
        let core = n.core.as_mut()?;
        match core.propose(&n.log, data) {
            Ok(p) => {
                self.next_payload += k as u64;
                self.counts.proposed += k as u64;
                let txns: Vec<Txn> = (0..k as u32)
                    .map(|i| {
                        (
                            Zxid::new(p.first.epoch(), p.first.counter() + i),
                            first_payload + u64::from(i),
                        )
                    })
                    .collect();
                if txns.last().map(|t| t.0) != Some(p.last) {
                    self.fail(
                        FailureKind::Fatal,
                        "ProposeZxids",
                        format!("{} .. {}", p.first, p.last),
                    );
                }
                if let Err(v) = self.checker.on_broadcast(target, &txns) {
                    self.violated(v);
                }
                self.exec(target, p.actions);
                Some(first_payload + k as u64 - 1)
            }
            Err(ZabError::EpochExhausted { .. }) => {
                self.counts.epoch_exhausted += 1;
                None
            }
            Err(ZabError::NotLeader { .. }) | Err(ZabError::Backpressure { .. }) => None,
            Err(e) => {
                self.fail(FailureKind::Fatal, "Propose", e.to_string());
                None
            }
        }
    }

    fn compact_logs(&mut self) {
        if self.plan.compaction == 0.0 {
            return;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() || !self.rng.gen_bool(self.plan.compaction) {
                continue;
            }
            let keep = self.plan.compaction_keep;
            let n = &mut self.nodes[i];
            let applied: Vec<Zxid> = n
                .log
                .iter()
                .map(|e| e.zxid)
                .take_while(|z| *z <= n.applied)
                .collect();
            if applied.len() > keep {
                let upto = applied[applied.len() - keep - 1];
                n.log.compact(upto);
                self.counts.compactions += 1;
            }
        }
    }

    // ---- executing actions ----

    fn after_call(&mut self, id: NodeId, r: Result<Vec<Action>, ZabError>) {
        match r {
            Ok(actions) => self.exec(id, actions),
            Err(e) => self.fail(FailureKind::Fatal, "CoreError", format!("member {id}: {e}")),
        }
    }

    fn exec(&mut self, id: NodeId, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            if self.failure.is_some() {
                return;
            }
            (self.now, id, &a).hash(&mut self.hasher);
            if self.opts.trace {
                self.trace.push(format!("t={} n{} {:?}", self.now, id, a));
            }
            match a {
                Action::Send { to, msg } => self.send(id, to, Packet::Msg(msg)),
                Action::Append { entries } => {
                    let now = self.now;
                    let delay = self.rng.gen_range(0..=self.plan.max_fsync_ticks);
                    let n = self.node(id);
                    if let Err(e) = n.log.append(&entries) {
                        self.fail(
                            FailureKind::Safety,
                            "LogOrder",
                            format!("member {id}: {}", e.0),
                        );
                        return;
                    }
                    let last_due = n.fsyncs.back().map_or(0, |f| f.0);
                    let upto = n.log.last();
                    n.fsyncs.push_back(((now + delay).max(last_due), upto));
                }
                Action::Truncate { to } => {
                    self.counts.truncations += 1;
                    let n = self.node(id);
                    if to < n.applied {
                        let applied = n.applied;
                        self.fail(
                            FailureKind::Safety,
                            "TruncateCommitted",
                            format!("member {id} told to truncate to {to} below applied {applied}"),
                        );
                        return;
                    }
                    if let Err(e) = n.log.truncate(to) {
                        self.fail(
                            FailureKind::Safety,
                            "LogOrder",
                            format!("member {id}: {}", e.0),
                        );
                        return;
                    }
                    n.durable = n.durable.min(to);
                }
                Action::PersistAcceptedEpoch { epoch } => {
                    let n = self.node(id);
                    if epoch < n.accepted_epoch {
                        let old = n.accepted_epoch;
                        self.fail(
                            FailureKind::Safety,
                            "EpochMonotonic",
                            format!("acceptedEpoch {old} -> {epoch}"),
                        );
                        return;
                    }
                    n.accepted_epoch = epoch;
                }
                Action::PersistCurrentEpoch { epoch } => {
                    let n = self.node(id);
                    if epoch < n.current_epoch || epoch > n.accepted_epoch {
                        let (c, acc) = (n.current_epoch, n.accepted_epoch);
                        self.fail(
                            FailureKind::Safety,
                            "EpochMonotonic",
                            format!(
                                "member {id} currentEpoch {c} -> {epoch} with acceptedEpoch {acc}"
                            ),
                        );
                        return;
                    }
                    n.current_epoch = epoch;
                }
                Action::Commit { upto } => self.deliver(id, upto),
                Action::SendSnapshot { to } => {
                    self.counts.snapshots += 1;
                    let zxid = self.node(id).applied;
                    let len = self.checker.prefix.position(id);
                    self.send(id, to, Packet::Snapshot { zxid, len });
                    let n = &mut self.nodes[id as usize - 1];
                    if let Some(core) = n.core.as_mut() {
                        match core.snapshot_sent(&n.log, to, zxid) {
                            Ok(more) => queue.extend(more),
                            Err(e) => self.fail(FailureKind::Fatal, "SnapshotSent", e.to_string()),
                        }
                    }
                }
                Action::RoleChanged {
                    role,
                    epoch,
                    serving,
                    ..
                } => {
                    if role == Role::Leading && serving {
                        self.counts.leaders += 1;
                        let n = &self.nodes[id as usize - 1];
                        let log: Vec<Txn> = n
                            .log
                            .iter()
                            .filter_map(|e| payload(&e.data).map(|p| (e.zxid, p)))
                            .collect();
                        let applied_len = self.checker.prefix.position(id);
                        if let Err(v) = self.checker.on_established(id, epoch, applied_len, &log) {
                            self.violated(v);
                        }
                    }
                }
                Action::ReadReady { ctx, zxid } => {
                    self.counts.reads_ready += 1;
                    if let Err(v) = self.checker.reads.on_ready(id, ctx, zxid) {
                        self.violated(v);
                    }
                }
                Action::ReadFailed { ctx } => {
                    self.counts.reads_failed += 1;
                    self.checker.reads.on_failed(id, ctx);
                }
            }
        }
    }

    /// Applies committed entries on member `id` and judges every delivery.
    fn deliver(&mut self, id: NodeId, upto: Zxid) {
        let idx = id as usize - 1;
        let (applied, durable) = (self.nodes[idx].applied, self.nodes[idx].durable);
        if upto <= applied {
            return;
        }
        if let Err(v) = self.checker.durability.on_commit(id, upto, durable) {
            self.violated(v);
            return;
        }
        let txns: Vec<(Zxid, Option<u64>)> = self.nodes[idx]
            .log
            .range(applied, upto)
            .map(|e| (e.zxid, payload(&e.data)))
            .collect();
        let mut prev = applied;
        for (z, p) in txns {
            let Some(p) = p else {
                self.fail(
                    FailureKind::Safety,
                    "Integrity",
                    format!("member {id} applies malformed entry {z}"),
                );
                return;
            };
            if !follows(prev, z) {
                self.fail(
                    FailureKind::Safety,
                    "LocalPrimaryOrder",
                    format!("member {id} log has {z} after {prev}"),
                );
                return;
            }
            let holders = self.durable_holders(z, p);
            if let Err(v) = self.checker.on_deliver(id, (z, p), holders) {
                self.violated(v);
                return;
            }
            self.nodes[idx].applied = z;
            prev = z;
        }
        if prev != upto {
            self.fail(
                FailureKind::Safety,
                "CommitGap",
                format!("member {id} told to commit {upto}, log has up to {prev}"),
            );
        }
    }

    fn durable_holders(&self, z: Zxid, p: u64) -> usize {
        self.nodes
            .iter()
            .filter(|n| {
                n.applied >= z
                    || (z <= n.durable && n.log.get(z).and_then(|e| payload(&e.data)) == Some(p))
            })
            .count()
    }

    // ---- liveness ----

    fn liveness(&mut self) {
        if self.phase == Phase::Faults {
            return;
        }
        if self.now > self.heal_tick + self.opts.liveness_bound_ticks {
            let state = self.describe();
            let what = if self.phase == Phase::Recover {
                "NoProgressAfterHeal"
            } else {
                "NoConvergence"
            };
            self.fail(FailureKind::Liveness, what, state);
            return;
        }
        if self.phase != Phase::Recover {
            return;
        }
        if let Some((payload, _)) = self.marker {
            let global = self.checker.prefix.global();
            if let Some(k) = global.iter().rposition(|t| t.1 == payload) {
                let everywhere =
                    (1..=self.plan.nodes as NodeId).all(|id| self.checker.prefix.position(id) > k);
                if everywhere {
                    self.phase = Phase::Converge;
                    self.event("MARKER_COMMITTED", 0);
                    return;
                }
            }
        }
        let retry = match self.marker {
            None => true,
            Some((_, at)) => self.now > at + 60,
        };
        if retry {
            if let Some(&leader) = self.serving_leaders().first() {
                if let Some(p) = self.propose(leader, 1) {
                    self.marker = Some((p, self.now));
                }
            }
        }
    }

    fn converged(&self) -> bool {
        let Some(first) = self.nodes.first().and_then(|n| n.core.as_ref()) else {
            return false;
        };
        let last = first.status().last_zxid;
        let leaders = self.serving_leaders().len();
        leaders == 1
            && self.nodes.iter().all(|n| match &n.core {
                Some(c) => c.serving() && n.log.last() == last && n.applied == last,
                None => false,
            })
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            match &n.core {
                None => s.push_str(&format!("[n{} down] ", n.id)),
                Some(c) => {
                    let st = c.status();
                    s.push_str(&format!(
                        "[n{} {:?} serving={} leader={:?} epoch={} acc={} cur={} last={} durable={} applied={}] ",
                        n.id,
                        st.role,
                        st.serving,
                        st.leader,
                        st.leader_epoch,
                        st.accepted_epoch,
                        st.current_epoch,
                        st.last_zxid,
                        n.durable,
                        n.applied
                    ));
                }
            }
        }
        s
    }
}
