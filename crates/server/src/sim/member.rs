//! One simulated member: the ZAB core, the driver's decision state (the
//! same plain-state modules the tokio driver runs: `Durability`,
//! `BatchQueue`, `Keepalives`, `Leases`), the forwarding and waiter tables,
//! snapshot transfer state, an applier, and a store on a simulated disk.
//!
//! Every input takes the simulated time; every effect goes into [`Out`],
//! which the world executes (sends on the network, answers to clients,
//! events for the checkers). Nothing here reads a clock or touches a disk.

use crate::sessions::{KeepaliveVerdict, Leases, Touch};
use crate::zab_driver::batching::{txn_wire_bytes, BatchQueue};
use crate::zab_driver::forwarding::{self, Forwards};
use crate::zab_driver::keepalive::{self, KeepaliveBounds, Keepalives, LeaseBook, Standing};
use crate::zab_driver::log_sync::{Durability, Persisted, SyncRequest};
use bytes::Bytes;
use keeper_store::sim_disk::{SimSnapshot, SimStore};
use keeper_store::{Entry, SessionId, StoreConfig, Txn, TxnOutcome};
use keeper_zab::{
    Action, Bootstrap, Config, Core, MemLog, Member as ZabMember, NodeId, Role, ZabError, Zxid,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// A client request id (the world's).
pub type ReqId = u64;

/// What travels between simulated members.
#[derive(Debug, Clone)]
pub enum Peer {
    Zab(keeper_zab::Message),
    Forward {
        reqs: Vec<(u64, Txn)>,
    },
    Forwarded {
        results: Vec<(u64, Result<Zxid, String>)>,
    },
    Keepalives {
        batch: u64,
        ids: Vec<SessionId>,
    },
    KeepalivesAck {
        batch: u64,
        results: Vec<(SessionId, KeepaliveVerdict)>,
    },
    SnapBegin {
        stream: u64,
        snap: SimSnapshot,
        chunks: u32,
    },
    SnapChunk {
        stream: u64,
        index: u32,
    },
    SnapEnd {
        stream: u64,
    },
    SnapAck {
        stream: u64,
        chunks: u32,
    },
    SnapWait {
        stream: u64,
    },
    /// A leader that is shutting down (`PeerMsg::Leaving`, a drain).
    Leaving,
}

/// Who waits for a write.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// A client of this member.
    Local(ReqId),
    /// A follower's forwarded write.
    Forwarded(NodeId, u64),
    /// This leader's expiry of a session in a leases term, decided at
    /// `decided_ms` (when `take_expired` took it out of the leases).
    Expiry {
        id: SessionId,
        term: u64,
        decided_ms: u64,
    },
}

/// What a member asks the world to do or judge.
#[derive(Debug)]
pub enum Event {
    /// Answer a client's write.
    WriteDone {
        req: ReqId,
        result: Result<(Zxid, TxnOutcome), String>,
    },
    /// Answer a client's keepalive.
    KeepaliveDone {
        req: ReqId,
        verdict: KeepaliveVerdict,
    },
    /// Answer a client's linearizable read: the applied zxid it was served
    /// at (at least the barrier's), or why not.
    ReadDone {
        req: ReqId,
        result: Result<Zxid, String>,
    },
    /// The leader proposed these entries (zxid, payload).
    Broadcast(Vec<(Zxid, u64)>),
    /// Entries applied by this member, in order.
    Applied(Vec<AppliedOne>),
    /// The core committed up to `upto` with the log durable to `durable`.
    Committed { upto: Zxid, durable: Zxid },
    /// An expiry close got its zxid.
    ExpiryProposed {
        zxid: Zxid,
        id: SessionId,
        decided_ms: u64,
        established_ms: u64,
    },
    /// This member became an established leader in `epoch`.
    Established { epoch: u32 },
    /// A snapshot was installed at `zxid`.
    Installed { zxid: Zxid },
    /// A snapshot stream was started.
    SnapshotSent,
    /// A TRUNC.
    Truncated,
    /// The core failed (a fatal error the driver would report).
    Fatal(String),
}

/// One applied entry, as the checkers see it.
#[derive(Debug)]
pub struct AppliedOne {
    pub zxid: Zxid,
    pub payload: u64,
    pub outcome: TxnOutcome,
    /// The session a `CloseSession` named.
    pub closes: Option<SessionId>,
}

/// Effects of one call.
#[derive(Debug, Default)]
pub struct Out {
    pub sends: Vec<(NodeId, Peer)>,
    pub events: Vec<Event>,
}

/// Bugs the simulator must catch, switched on only by its own tests (each
/// one an issue 9 problem put back, or a rule of the driver broken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Problem 1: a follower answers a keepalive alive from its own store.
    FollowerAcksLocally,
    /// Problem 2: an install deletes only the keys it sees (no range
    /// deletion), so a delete that was only in the memtable comes back.
    InstallDeletesVisibleKeys,
    /// Problem 6: a new leader keeps the old deadlines (no full timeout).
    NoFullTimeoutOnLeaderChange,
    /// Problem 7: a session this member has not applied yet is ended.
    EndedWhenNotApplied,
    /// Compaction ignores what the store has on disk.
    CompactAboveFlushed,
    /// A linearizable read is answered when its barrier passes, without
    /// waiting until this member applied the barrier's zxid.
    ReadSkipsTheApplyWait,
}

/// Bounds of the simulated driver (the seed's draw).
#[derive(Debug, Clone)]
pub struct MemberBounds {
    pub zab: Config,
    pub max_batch_entries: usize,
    pub max_batch_bytes: usize,
    pub keepalive: KeepaliveBounds,
    /// Keys per snapshot chunk.
    pub snap_chunk_keys: usize,
    /// Unacknowledged chunks in flight.
    pub snap_window: u32,
    /// Ticks an install takes.
    pub install_ticks: u64,
    /// Peer messages held while installing; more are dropped.
    pub install_stash: usize,
    pub max_pending_forwards: usize,
    /// An append is durable 0..=max_fsync_ticks after it is issued.
    pub max_fsync_ticks: u64,
    /// The applier applies a committed batch 0..=max_apply_lag_ticks later.
    pub max_apply_lag_ticks: u64,
    /// A bug put back on purpose (the simulator's own tests).
    pub mutation: Option<Mutation>,
}

struct OutStream {
    id: u64,
    snap: SimSnapshot,
    chunks: u32,
    sent: u32,
    acked: u32,
}

struct InStream {
    from: NodeId,
    id: u64,
    snap: SimSnapshot,
    chunks: u32,
    got: u32,
}

struct Installing {
    from: NodeId,
    stream: u64,
    snap: SimSnapshot,
    done_at: u64,
    stash: VecDeque<(NodeId, Peer)>,
}

/// Results of forwarded writes for one follower: request id and zxid.
type ForwardResults = Vec<(u64, Result<Zxid, String>)>;

/// A committed entry on its way to the applier (`applier::Committed`).
struct Committed {
    zxid: Zxid,
    payload: u64,
    entry: Entry,
    waiter: Option<Origin>,
}

/// The volatile part of a member: lost by a crash.
pub struct Running {
    pub core: Core,
    durability: Durability,
    /// Pending fsync reports: (due tick, request).
    fsyncs: VecDeque<(u64, SyncRequest)>,
    queued: BatchQueue<(Txn, Origin)>,
    waiters: HashMap<Zxid, Origin>,
    /// Highest zxid handed to the applier.
    submitted: Zxid,
    /// Batches handed to the applier: (due tick, entries).
    applier: VecDeque<(u64, Vec<Committed>)>,
    /// The driver's own forwarding state (`zab_driver/forwarding.rs`).
    forwards: Forwards<ReqId>,
    /// Linearizable reads waiting for their barrier (`Driver::reads`).
    reads: HashMap<u64, ReqId>,
    next_read: u64,
    /// Reads whose barrier passed, waiting until this member applied its
    /// zxid (the HTTP layer's wait for the applied zxid).
    read_waits: Vec<(Zxid, ReqId)>,
    pub keepalives: Keepalives<ReqId>,
    pub leases: Leases,
    pub known: (Role, Option<NodeId>, u32, bool),
    out_streams: HashMap<NodeId, OutStream>,
    incoming: Option<InStream>,
    installing: Option<Installing>,
    next_stream: u64,
    last_time_ms: u64,
    /// When this member last became an established leader (ms).
    pub established_ms: u64,
}

/// One member: its disk (log, epochs, store) and, while up, its running state.
pub struct SimMember {
    pub id: NodeId,
    pub log: MemLog,
    /// Every log entry up to here is on disk.
    pub log_durable: Zxid,
    pub accepted_epoch: u32,
    pub current_epoch: u32,
    pub store: SimStore,
    pub run: Option<Running>,
    pub boots: u64,
    pub down_until: u64,
    /// Disk stalled (no fsync completes, no install finishes) until then.
    pub stalled_until: u64,
    bounds: MemberBounds,
    rng: ChaCha8Rng,
}

/// Hash of an entry's bytes: the payload id the ZAB checkers see.
pub fn payload(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct Book<'a> {
    leases: &'a mut Leases,
    store: &'a SimStore,
    now: Instant,
}

impl LeaseBook for Book<'_> {
    fn touch(&mut self, ids: &[SessionId]) -> Vec<Touch> {
        ids.iter()
            .map(|id| self.leases.touch(*id, self.now))
            .collect()
    }

    fn settle(&mut self, id: SessionId, touch: Touch, applied: Zxid) -> KeepaliveVerdict {
        let stored = self.store.session(id);
        self.leases.settle(id, touch, stored, applied, self.now)
    }
}

/// Simulated time: tick and the instant it stands for.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub tick: u64,
    pub instant: Instant,
    pub ms: u64,
}

impl SimMember {
    pub fn new(id: NodeId, store: StoreConfig, bounds: MemberBounds, seed: u64) -> SimMember {
        SimMember {
            bounds,
            rng: ChaCha8Rng::seed_from_u64(seed ^ (id << 56) ^ 0x5EED),
            id,
            log: MemLog::new(),
            log_durable: Zxid::ZERO,
            accepted_epoch: 0,
            current_epoch: 0,
            store: SimStore::new(store),
            run: None,
            boots: 0,
            down_until: 0,
            stalled_until: 0,
        }
    }

    /// Starts the member from its disk (as `Node::run` does).
    pub fn boot(&mut self, members: Vec<ZabMember>, seed: u64, now: Now) -> Result<(), ZabError> {
        let bounds = &self.bounds;
        self.boots += 1;
        let boot = Bootstrap {
            id: self.id,
            members,
            accepted_epoch: self.accepted_epoch,
            current_epoch: self.current_epoch,
            applied_zxid: self.store.last_applied(),
            seed: seed
                ^ self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ self.boots.wrapping_mul(0xD1B5_4A32_D192_ED03),
        };
        let core = Core::new(bounds.zab.clone(), boot, &self.log)?;
        let sessions = self.store.sessions();
        self.run = Some(Running {
            core,
            durability: Durability::new(self.log.last()),
            fsyncs: VecDeque::new(),
            queued: BatchQueue::new(bounds.max_batch_entries, bounds.max_batch_bytes),
            waiters: HashMap::new(),
            submitted: self.store.last_applied(),
            applier: VecDeque::new(),
            forwards: Forwards::new(
                bounds.max_batch_entries,
                bounds.max_batch_bytes,
                bounds.max_pending_forwards,
            ),
            reads: HashMap::new(),
            next_read: 1,
            read_waits: Vec::new(),
            keepalives: Keepalives::new(bounds.keepalive.clone(), now.instant),
            leases: Leases::rebuild(&sessions, now.instant),
            known: (Role::Looking, None, 0, false),
            out_streams: HashMap::new(),
            incoming: None,
            installing: None,
            next_stream: 0,
            last_time_ms: 0,
            established_ms: 0,
        });
        Ok(())
    }

    /// A clean stop (SIGTERM): the applier finishes and the store is closed
    /// with a flush. The world then stops the process (`crash`): the log
    /// keeps what was synced.
    pub fn stop_cleanly(&mut self, out: &mut Out) {
        if self.up() {
            self.drain_applier(out);
        }
        self.store.flush_tree();
    }

    /// The process dies: volatile state goes, the disk keeps what was synced.
    pub fn crash(&mut self) {
        self.run = None;
        let durable = self.log_durable.min(self.log.last());
        // The log's unsynced tail is lost.
        let _ = self.log.truncate(durable);
        self.log_durable = durable;
        self.store.crash();
    }

    pub fn up(&self) -> bool {
        self.run.is_some()
    }

    pub fn serving_leader(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.known.0 == Role::Leading && r.known.3)
    }

    fn applied(&self) -> Zxid {
        self.store.last_applied()
    }

    // ---- inputs ----------------------------------------------------------
}

/// Wall-clock milliseconds the simulated leader stamps entries with.
const EPOCH_MS: u64 = 1_700_000_000_000;

impl SimMember {
    fn r(&mut self) -> &mut Running {
        self.run.as_mut().expect("the simulated member is up")
    }

    // ---- inputs ----------------------------------------------------------

    /// One driver tick (`Driver::on_tick`, then the loop's flushes).
    pub fn tick(&mut self, now: Now, out: &mut Out) {
        self.complete_fsyncs(now, out);
        self.run_applier(now.tick, out);
        let Some(r) = self.run.as_mut() else { return };
        if let Some(inst) = &r.installing {
            let (from, stream, done_at) = (inst.from, inst.stream, inst.done_at);
            if now.tick >= done_at && now.tick >= self.stalled_until {
                self.finish_install(now, out);
            } else {
                // The core is paused while the snapshot installs; tell the
                // leader we are still at it.
                out.sends.push((
                    from,
                    Peer::SnapAck {
                        stream,
                        chunks: u32::MAX,
                    },
                ));
            }
            return;
        }
        let res = r.core.tick(&self.log);
        self.after(res, now, out);
        if !self.up() {
            return;
        }
        let waits: Vec<(NodeId, u64)> = self
            .r()
            .out_streams
            .iter()
            .map(|(to, s)| (*to, s.id))
            .collect();
        for (to, stream) in waits {
            out.sends.push((to, Peer::SnapWait { stream }));
        }
        self.pump_streams(now, out);
        self.keepalive_tick(now, out);
        self.flush_proposals(now, true, out);
        self.flush_forwards(out);
    }

    /// Completes the fsyncs that are due (the sync thread's reports).
    fn complete_fsyncs(&mut self, now: Now, out: &mut Out) {
        if now.tick < self.stalled_until {
            return;
        }
        loop {
            let last = self.log.last();
            let Some(r) = self.run.as_mut() else { return };
            match r.fsyncs.front() {
                Some((due, _)) if *due <= now.tick => {}
                _ => return,
            }
            let Some((_, req)) = r.fsyncs.pop_front() else {
                return;
            };
            let p = Persisted {
                generation: req.generation,
                upto: req.upto.min(last),
                fsync_us: 0,
            };
            // None: in flight across a truncation or snapshot install.
            let Some(upto) = r.durability.persisted(&p) else {
                continue;
            };
            if upto > self.log_durable {
                self.log_durable = upto;
            }
            let res = r.core.on_persisted(&self.log, upto);
            self.after(res, now, out);
        }
    }

    fn schedule_sync(&mut self, req: SyncRequest, now: Now) {
        let delay = self.rng.gen_range(0..=self.bounds.max_fsync_ticks);
        let r = self.run.as_mut().expect("up");
        let last_due = r.fsyncs.back().map_or(0, |f| f.0);
        r.fsyncs.push_back(((now.tick + delay).max(last_due), req));
    }

    /// A peer message (`Driver::on_peer_event`, then the loop's flushes).
    pub fn on_peer(&mut self, from: NodeId, msg: Peer, now: Now, out: &mut Out) {
        let stash = self.bounds.install_stash;
        let Some(r) = self.run.as_mut() else { return };
        if let Some(inst) = r.installing.as_mut() {
            if inst.stash.len() < stash {
                inst.stash.push_back((from, msg));
            }
            return;
        }
        self.on_peer_msg(from, msg, now, out);
        if self.up() {
            self.flush_proposals(now, false, out);
            self.flush_forwards(out);
        }
    }

    fn on_peer_msg(&mut self, from: NodeId, msg: Peer, now: Now, out: &mut Out) {
        let submitted = self.run.as_ref().map_or(Zxid::ZERO, |r| r.submitted);
        let install_ticks = self.bounds.install_ticks;
        let SimMember { run, log, .. } = self;
        let Some(r) = run.as_mut() else { return };
        if r.known.1 == Some(from) {
            r.keepalives.heard_from_leader(now.instant);
        }
        match msg {
            Peer::Zab(m) => {
                let res = r.core.step(log, from, m);
                self.after(res, now, out);
            }
            Peer::Forward { reqs } => {
                if self.serving_leader() {
                    for (req, txn) in reqs {
                        self.enqueue(txn, Origin::Forwarded(from, req), out);
                    }
                } else {
                    let results = reqs
                        .into_iter()
                        .map(|(req, _)| (req, Err("not the leader any more".to_string())))
                        .collect();
                    out.sends.push((from, Peer::Forwarded { results }));
                }
            }
            Peer::Forwarded { results } => {
                for outcome in r.forwards.answered(results, submitted) {
                    match outcome {
                        forwarding::Outcome::Wait { zxid, reply } => {
                            r.waiters.insert(zxid, Origin::Local(reply));
                        }
                        forwarding::Outcome::Fail { reply, why } => {
                            out.events.push(Event::WriteDone {
                                req: reply,
                                result: Err(why),
                            })
                        }
                    }
                }
            }
            Peer::Keepalives { batch, ids } => {
                r.keepalives.relayed(from, batch, ids, now.instant);
                self.keepalive_effects(out);
            }
            Peer::KeepalivesAck { batch, results } => {
                r.keepalives.acked(from, batch, results, now.instant);
                self.keepalive_effects(out);
            }
            Peer::SnapBegin {
                stream,
                snap,
                chunks,
            } => {
                if r.core.expects_snapshot_from() != Some(from) {
                    return;
                }
                // A newer stream replaces an older one.
                r.incoming = Some(InStream {
                    from,
                    id: stream,
                    snap,
                    chunks,
                    got: 0,
                });
                r.core.snapshot_progress(from);
            }
            Peer::SnapWait { stream } => {
                if receiving(r, from, stream) {
                    r.core.snapshot_progress(from);
                }
            }
            Peer::SnapChunk { stream, index } => {
                if !receiving(r, from, stream) {
                    return;
                }
                let Some(inc) = r.incoming.as_mut() else {
                    return;
                };
                if index != inc.got {
                    r.incoming = None;
                    return;
                }
                inc.got += 1;
                let got = inc.got;
                r.core.snapshot_progress(from);
                out.sends.push((
                    from,
                    Peer::SnapAck {
                        stream,
                        chunks: got,
                    },
                ));
            }
            Peer::SnapEnd { stream } => {
                if !receiving(r, from, stream) {
                    return;
                }
                let Some(inc) = r.incoming.take() else { return };
                if inc.got != inc.chunks {
                    return;
                }
                r.installing = Some(Installing {
                    from,
                    stream,
                    snap: inc.snap,
                    done_at: now.tick + install_ticks,
                    stash: VecDeque::new(),
                });
                r.durability.invalidate();
            }
            Peer::Leaving => {
                let actions = r.core.leader_left(from);
                self.execute(actions, now, out);
            }
            Peer::SnapAck { stream, chunks } => {
                if let Some(s) = r.out_streams.get_mut(&from).filter(|s| s.id == stream) {
                    if chunks != u32::MAX {
                        s.acked = s.acked.max(chunks);
                    }
                }
                r.core.snapshot_progress(from);
                self.pump_streams(now, out);
            }
        }
    }

    /// The peer link to `peer` broke (`PeerEvent::Disconnected`).
    pub fn link_down(&mut self, peer: NodeId, out: &mut Out) {
        let Some(r) = self.run.as_mut() else { return };
        if r.installing.is_some() {
            return;
        }
        if r.incoming.as_ref().is_some_and(|i| i.from == peer) {
            r.incoming = None;
        }
        r.out_streams.remove(&peer);
        if r.known.1 == Some(peer) && r.known.0 == Role::Following {
            self.fail_forwards("link to the leader broke; outcome unknown", out);
        }
    }

    /// A client's write on this member (`Driver::on_cmds`).
    pub fn client_write(&mut self, req: ReqId, txn: Txn, now: Now, out: &mut Out) {
        if self.serving_leader() {
            self.enqueue(txn, Origin::Local(req), out);
        } else {
            let r = self.r();
            if r.known.0 == Role::Following && r.known.3 {
                if let Err((req, why)) = r.forwards.push(txn, req) {
                    out.events.push(Event::WriteDone {
                        req,
                        result: Err(format!("{why:?}")),
                    });
                    return;
                }
            } else {
                out.events.push(Event::WriteDone {
                    req,
                    result: Err("no leader".into()),
                });
                return;
            }
        }
        self.flush_proposals(now, false, out);
        self.flush_forwards(out);
    }

    /// A client's linearizable read on this member (`Cmd::Read`): a read
    /// barrier through the core, then a wait until applied.
    pub fn client_read(&mut self, req: ReqId, now: Now, out: &mut Out) {
        let r = self.r();
        let ctx = r.next_read;
        r.next_read += 1;
        r.reads.insert(ctx, req);
        let actions = r.core.read_index(ctx);
        self.execute(actions, now, out);
    }

    /// A client's keepalive on this member.
    pub fn client_keepalive(&mut self, req: ReqId, id: SessionId, now: Now, out: &mut Out) {
        if self.bounds.mutation == Some(Mutation::FollowerAcksLocally) && !self.serving_leader() {
            if let Some(info) = self.store.session(id) {
                out.events.push(Event::KeepaliveDone {
                    req,
                    verdict: KeepaliveVerdict::Alive {
                        timeout_ms: info.timeout_ms,
                    },
                });
                return;
            }
        }
        self.r().keepalives.request(id, req, now.instant);
        self.keepalive_effects(out);
    }

    /// The session expiry task (`Sessions::expire_due`), on the leader.
    pub fn expire_due(&mut self, now: Now, out: &mut Out) {
        if !self.serving_leader() {
            return;
        }
        let live = self.store.sessions();
        let r = self.r();
        r.leases.reconcile(&live, now.instant);
        let expiring = r.leases.take_expired(now.instant);
        for id in expiring.ids {
            self.enqueue(
                Txn::CloseSession { id },
                Origin::Expiry {
                    id,
                    term: expiring.term,
                    decided_ms: now.ms,
                },
                out,
            );
        }
        self.flush_proposals(now, false, out);
    }

    /// Compacts the log behind the applied state (`Driver::maybe_compact`):
    /// never above what the store has on disk (flushing first), nor above
    /// what a live snapshot stream's DIFF needs.
    pub fn compact(&mut self, keep: usize) -> bool {
        let Some(r) = self.run.as_ref() else {
            return false;
        };
        if r.installing.is_some() {
            return false;
        }
        let pinned = r.out_streams.values().map(|s| s.snap.zxid).min();
        let applied = self.store.last_applied();
        let zs: Vec<Zxid> = self
            .log
            .iter()
            .map(|e| e.zxid)
            .take_while(|z| *z <= applied)
            .collect();
        if zs.len() <= keep {
            return false;
        }
        let mut cut = zs[zs.len() - keep - 1];
        if let Some(p) = pinned {
            cut = cut.min(p);
        }
        if self.bounds.mutation != Some(Mutation::CompactAboveFlushed) {
            if cut > self.store.durable_applied() {
                self.store.flush_tree();
            }
            cut = cut.min(self.store.durable_applied());
        }
        if cut <= self.log.base() {
            return false;
        }
        self.log.compact(cut);
        true
    }

    // ---- executing the core's actions -------------------------------------

    fn after(&mut self, r: Result<Vec<Action>, ZabError>, now: Now, out: &mut Out) {
        match r {
            Ok(actions) => self.execute(actions, now, out),
            Err(e) => out
                .events
                .push(Event::Fatal(format!("member {}: core: {e}", self.id))),
        }
    }

    fn execute(&mut self, actions: Vec<Action>, now: Now, out: &mut Out) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            if !self.up() {
                return;
            }
            match a {
                Action::Send { to, msg } => out.sends.push((to, Peer::Zab(msg))),
                Action::Append { entries } => {
                    let Some(last) = entries.last().map(|e| e.zxid) else {
                        continue;
                    };
                    if let Err(e) = self.log.append(&entries) {
                        out.events
                            .push(Event::Fatal(format!("member {}: append: {}", self.id, e.0)));
                        return;
                    }
                    let req = self.r().durability.appended(last);
                    self.schedule_sync(req, now);
                }
                Action::Truncate { to } => {
                    let submitted = self.r().submitted;
                    if to < submitted {
                        out.events.push(Event::Fatal(format!(
                            "member {}: asked to truncate to {to} below the applied {submitted}",
                            self.id,
                        )));
                        return;
                    }
                    if let Err(e) = self.log.truncate(to) {
                        out.events.push(Event::Fatal(format!(
                            "member {}: truncate: {}",
                            self.id, e.0
                        )));
                        return;
                    }
                    self.log_durable = self.log_durable.min(to);
                    let req = self.r().durability.truncated(to);
                    self.schedule_sync(req, now);
                    out.events.push(Event::Truncated);
                }
                Action::PersistAcceptedEpoch { epoch } => self.accepted_epoch = epoch,
                Action::PersistCurrentEpoch { epoch } => self.current_epoch = epoch,
                Action::Commit { upto } => {
                    out.events.push(Event::Committed {
                        upto,
                        durable: self.log_durable,
                    });
                    self.commit(upto, now, out);
                }
                Action::SendSnapshot { to } => self.start_stream(to, now, out),
                Action::RoleChanged {
                    role,
                    leader,
                    epoch,
                    serving,
                } => self.role_changed(role, leader, epoch, serving, now, out),
                Action::ReadReady { ctx, zxid } if Keepalives::<ReqId>::owns(ctx) => {
                    let applied = self.keepalive_applied();
                    let SimMember { run, store, .. } = self;
                    let Some(r) = run.as_mut() else { return };
                    let Running {
                        keepalives, leases, ..
                    } = r;
                    let mut book = Book {
                        leases,
                        store,
                        now: now.instant,
                    };
                    keepalives.round_confirmed(ctx, zxid, applied, &mut book);
                    self.keepalive_effects(out);
                }
                Action::ReadFailed { ctx } if Keepalives::<ReqId>::owns(ctx) => {
                    self.r().keepalives.round_failed(ctx);
                    self.keepalive_effects(out);
                }
                Action::ReadReady { ctx, zxid } => {
                    let applied = self.applied();
                    let skip = self.bounds.mutation == Some(Mutation::ReadSkipsTheApplyWait);
                    let r = self.r();
                    if let Some(req) = r.reads.remove(&ctx) {
                        if zxid <= applied || skip {
                            out.events.push(Event::ReadDone {
                                req,
                                result: Ok(applied),
                            });
                        } else {
                            r.read_waits.push((zxid, req));
                        }
                    }
                }
                Action::ReadFailed { ctx } => {
                    if let Some(req) = self.r().reads.remove(&ctx) {
                        out.events.push(Event::ReadDone {
                            req,
                            result: Err("read barrier failed".into()),
                        });
                    }
                }
            }
        }
    }

    /// Applies the newly committed entries and answers their waiters.
    /// Hands the newly committed entries, with their waiters, to the
    /// applier (`Driver::commit`); it applies them `apply_lag` ticks later.
    fn commit(&mut self, upto: Zxid, now: Now, out: &mut Out) {
        let lag = self.rng.gen_range(0..=self.bounds.max_apply_lag_ticks);
        let id = self.id;
        let SimMember { run, log, .. } = self;
        let Some(r) = run.as_mut() else { return };
        let submitted = r.submitted;
        if upto <= submitted {
            return;
        }
        let rows: Vec<(Zxid, Bytes)> = log
            .range(submitted, upto)
            .map(|e| (e.zxid, e.data.clone()))
            .collect();
        if rows.last().map(|r| r.0) != Some(upto) {
            out.events.push(Event::Fatal(format!(
                "member {id}: committed entries after {submitted} up to {upto} are not in the local log"
            )));
            return;
        }
        let mut batch = Vec::with_capacity(rows.len());
        for (zxid, bytes) in rows {
            match Entry::decode(&bytes) {
                Ok(e) => batch.push(Committed {
                    zxid,
                    payload: payload(&bytes),
                    entry: e,
                    waiter: r.waiters.remove(&zxid),
                }),
                Err(e) => {
                    out.events
                        .push(Event::Fatal(format!("member {id}: decode {zxid}: {e}")));
                    return;
                }
            }
        }
        r.submitted = upto;
        let due = (now.tick + lag).max(r.applier.back().map_or(0, |b| b.0));
        r.applier.push_back((due, batch));
        self.run_applier(now.tick, out);
    }

    /// The applier task: applies the batches due by `tick`, in order, and
    /// answers their waiters.
    fn run_applier(&mut self, tick: u64, out: &mut Out) {
        loop {
            let Some(r) = self.run.as_mut() else { return };
            match r.applier.front() {
                Some((due, _)) if *due <= tick => {}
                _ => return,
            }
            let Some((_, batch)) = r.applier.pop_front() else {
                return;
            };
            self.apply(batch, out);
        }
    }

    fn apply(&mut self, batch: Vec<Committed>, out: &mut Out) {
        let applied = self.applied();
        let batch: Vec<Committed> = batch.into_iter().filter(|c| c.zxid > applied).collect();
        let entries: Vec<(Zxid, Entry)> = batch.iter().map(|c| (c.zxid, c.entry.clone())).collect();
        let results = match self.store.apply(&entries) {
            Ok(r) => r,
            Err(e) => {
                out.events
                    .push(Event::Fatal(format!("member {}: apply: {e}", self.id)));
                return;
            }
        };
        let mut done = Vec::with_capacity(results.len());
        let mut answers = Vec::new();
        for (a, c) in results.into_iter().zip(batch) {
            let closes = match &c.entry.txn {
                Txn::CloseSession { id } => Some(*id),
                _ => None,
            };
            if let Some(Origin::Local(req)) = c.waiter {
                answers.push((req, a.zxid, a.outcome.clone()));
            }
            done.push(AppliedOne {
                zxid: a.zxid,
                payload: c.payload,
                outcome: a.outcome,
                closes,
            });
        }
        out.events.push(Event::Applied(done));
        let applied = self.applied();
        if let Some(r) = self.run.as_mut() {
            let mut i = 0;
            while i < r.read_waits.len() {
                if r.read_waits[i].0 <= applied {
                    let (_, req) = r.read_waits.remove(i);
                    out.events.push(Event::ReadDone {
                        req,
                        result: Ok(applied),
                    });
                } else {
                    i += 1;
                }
            }
        }
        for (req, zxid, outcome) in answers {
            out.events.push(Event::WriteDone {
                req,
                result: Ok((zxid, outcome)),
            });
        }
    }

    /// Applies everything handed to the applier (before a checkpoint or an
    /// install: `OutStream` waits for the applier, an install drains it).
    fn drain_applier(&mut self, out: &mut Out) {
        self.run_applier(u64::MAX, out);
    }

    fn role_changed(
        &mut self,
        role: Role,
        leader: Option<NodeId>,
        epoch: u32,
        serving: bool,
        now: Now,
        out: &mut Out,
    ) {
        let r = self.r();
        let old = r.known;
        r.known = (role, leader, epoch, serving);
        if (old.0, old.1, old.2) != (role, leader, epoch) {
            self.fail_all_waiting("leadership changed; the write's outcome is unknown", out);
            let r = self.r();
            r.out_streams.clear();
            if role != Role::Following || leader != old.1 {
                r.incoming = None;
            }
        }
        let standing = match (role, leader, serving) {
            (Role::Leading, _, true) => Standing::Leading,
            (Role::Following, Some(l), true) => Standing::Following(l),
            _ => Standing::NotServing,
        };
        self.r().keepalives.set_standing(standing, now.instant);
        self.keepalive_effects(out);
        let became_leader = role == Role::Leading && serving && !(old.0 == Role::Leading && old.3);
        if became_leader {
            let mutated = self.bounds.mutation == Some(Mutation::NoFullTimeoutOnLeaderChange);
            let r = self.r();
            if !mutated {
                r.leases.leadership_gained(now.instant);
            }
            r.established_ms = now.ms;
            out.events.push(Event::Established { epoch });
        }
    }

    fn answer_err(&mut self, origin: Origin, why: String, out: &mut Out) {
        match origin {
            Origin::Local(req) => out.events.push(Event::WriteDone {
                req,
                result: Err(why),
            }),
            Origin::Forwarded(from, req) => out.sends.push((
                from,
                Peer::Forwarded {
                    results: vec![(req, Err(why))],
                },
            )),
            Origin::Expiry { id, term, .. } => self.r().leases.close_failed(id, term),
        }
    }

    fn fail_all_waiting(&mut self, why: &str, out: &mut Out) {
        let r = self.r();
        let mut origins: Vec<(Zxid, Origin)> = r.waiters.drain().collect();
        origins.sort_by_key(|(z, _)| *z);
        let queued = r.queued.take_all();
        for (_, origin) in origins {
            self.answer_err(origin, why.to_string(), out);
        }
        for (_, origin) in queued {
            self.answer_err(origin, why.to_string(), out);
        }
        self.fail_forwards(why, out);
    }

    fn fail_forwards(&mut self, why: &str, out: &mut Out) {
        for req in self.r().forwards.fail_all() {
            out.events.push(Event::WriteDone {
                req,
                result: Err(why.to_string()),
            });
        }
    }

    // ---- the leader's batches ---------------------------------------------

    fn enqueue(&mut self, txn: Txn, origin: Origin, out: &mut Out) {
        let bytes = txn_wire_bytes(&txn);
        if let Err((_, origin)) = self.r().queued.push((txn, origin), bytes) {
            self.answer_err(origin, "too large".into(), out);
        }
    }

    fn batch_in_flight(&self) -> bool {
        let r = self.run.as_ref().expect("up");
        r.durability.syncing() || r.submitted < r.durability.appended_zxid()
    }

    /// `Driver::flush_proposals`: one batch in flight at a time.
    fn flush_proposals(&mut self, now: Now, force: bool, out: &mut Out) {
        loop {
            if !self.up() || self.r().queued.is_empty() {
                return;
            }
            if !force && self.batch_in_flight() && !self.r().queued.has_full_batch() {
                return;
            }
            let batch = self.r().queued.take_batch();
            let (txns, origins): (Vec<Txn>, Vec<Origin>) = batch.into_iter().unzip();
            let proposed = if self.serving_leader() {
                self.propose_batch(txns, now, out)
            } else {
                Err("not the leader any more".to_string())
            };
            let mut forwarded: Vec<(NodeId, ForwardResults)> = Vec::new();
            for (i, origin) in origins.into_iter().enumerate() {
                let result = proposed.clone().map(|first| Zxid(first.0 + i as u64));
                match (origin, result) {
                    (Origin::Forwarded(from, req), result) => {
                        match forwarded.iter_mut().find(|(f, _)| *f == from) {
                            Some((_, v)) => v.push((req, result)),
                            None => forwarded.push((from, vec![(req, result)])),
                        }
                    }
                    (origin, Ok(zxid)) => {
                        if let Origin::Expiry { id, decided_ms, .. } = origin {
                            let established_ms = self.r().established_ms;
                            out.events.push(Event::ExpiryProposed {
                                zxid,
                                id,
                                decided_ms,
                                established_ms,
                            });
                        }
                        if let Some(r) = self.run.as_mut() {
                            r.waiters.insert(zxid, origin);
                        }
                    }
                    (origin, Err(why)) => self.answer_err(origin, why, out),
                }
            }
            for (from, results) in forwarded {
                out.sends.push((from, Peer::Forwarded { results }));
            }
        }
    }

    fn propose_batch(&mut self, txns: Vec<Txn>, now: Now, out: &mut Out) -> Result<Zxid, String> {
        let r = self.r();
        r.last_time_ms = r.last_time_ms.max(EPOCH_MS + now.ms);
        let time_ms = r.last_time_ms;
        let payloads: Vec<Bytes> = txns
            .into_iter()
            .map(|txn| Bytes::from(Entry { time_ms, txn }.encode()))
            .collect();
        let hashes: Vec<u64> = payloads.iter().map(|b| payload(b)).collect();
        let r = self.run.as_mut().expect("up");
        match r.core.propose(&self.log, payloads) {
            Ok(p) => {
                let txns = hashes
                    .into_iter()
                    .enumerate()
                    .map(|(i, h)| (Zxid(p.first.0 + i as u64), h))
                    .collect();
                out.events.push(Event::Broadcast(txns));
                self.execute(p.actions, now, out);
                Ok(p.first)
            }
            Err(ZabError::Log(e)) => {
                out.events
                    .push(Event::Fatal(format!("member {}: propose: {e}", self.id)));
                Err(e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// `Driver::flush_forwards` (a simulated send never fails at once: a
    /// lost message breaks the link, which fails them all).
    fn flush_forwards(&mut self, out: &mut Out) {
        let Some(r) = self.run.as_mut() else { return };
        if r.forwards.nothing_to_send() {
            return;
        }
        let leader = match r.known {
            (Role::Following, Some(leader), _, true) => leader,
            _ => {
                for req in r.forwards.fail_unsent() {
                    out.events.push(Event::WriteDone {
                        req,
                        result: Err("no leader".into()),
                    });
                }
                return;
            }
        };
        while !r.forwards.nothing_to_send() {
            let reqs = r.forwards.take_batch();
            out.sends.push((leader, Peer::Forward { reqs }));
        }
    }

    // ---- keepalives -------------------------------------------------------

    /// What the keepalive path takes as applied (the whole truth under the
    /// `EndedWhenNotApplied` mutation, as a member answering from its own
    /// store did).
    fn keepalive_applied(&self) -> Zxid {
        match self.bounds.mutation {
            Some(Mutation::EndedWhenNotApplied) => Zxid(u64::MAX),
            _ => self.applied(),
        }
    }

    fn keepalive_tick(&mut self, now: Now, out: &mut Out) {
        let applied = self.keepalive_applied();
        let SimMember { run, store, .. } = self;
        let Some(r) = run.as_mut() else { return };
        let Running {
            keepalives, leases, ..
        } = r;
        let mut book = Book {
            leases,
            store,
            now: now.instant,
        };
        keepalives.tick(now.instant, applied, &mut book);
        let round = keepalives.start_round(now.instant, &mut book);
        if let Some(ctx) = round {
            // The round starts after the touch (the session contract).
            let actions = r.core.read_index(ctx);
            self.execute(actions, now, out);
        }
        self.keepalive_effects(out);
    }

    fn keepalive_effects(&mut self, out: &mut Out) {
        loop {
            let Some(r) = self.run.as_mut() else { return };
            let effects = r.keepalives.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    keepalive::Effect::Answer { reply, verdict } => {
                        out.events.push(Event::KeepaliveDone {
                            req: reply,
                            verdict,
                        })
                    }
                    keepalive::Effect::Relay { to, batch, ids } => {
                        out.sends.push((to, Peer::Keepalives { batch, ids }))
                    }
                    keepalive::Effect::Ack { to, batch, results } => {
                        out.sends.push((to, Peer::KeepalivesAck { batch, results }))
                    }
                }
            }
        }
    }

    // ---- snapshots ----------------------------------------------------------

    fn start_stream(&mut self, to: NodeId, now: Now, out: &mut Out) {
        // The stream's snapshot holds every commit emitted before it.
        self.drain_applier(out);
        let chunk_keys = self.bounds.snap_chunk_keys.max(1);
        let snap = self.store.checkpoint();
        let chunks = snap.keys().div_ceil(chunk_keys).max(1) as u32;
        let r = self.r();
        r.out_streams.remove(&to);
        r.next_stream += 1;
        let id = r.next_stream;
        out.sends.push((
            to,
            Peer::SnapBegin {
                stream: id,
                snap: snap.clone(),
                chunks,
            },
        ));
        r.out_streams.insert(
            to,
            OutStream {
                id,
                snap,
                chunks,
                sent: 0,
                acked: 0,
            },
        );
        out.events.push(Event::SnapshotSent);
        self.pump_streams(now, out);
    }

    /// Sends what each stream's window allows; a stream sent whole ends
    /// and the core is told (`Internal::SnapshotSent`).
    fn pump_streams(&mut self, now: Now, out: &mut Out) {
        let window = self.bounds.snap_window.max(1);
        let Some(r) = self.run.as_mut() else { return };
        let mut finished = Vec::new();
        let mut tos: Vec<NodeId> = r.out_streams.keys().copied().collect();
        tos.sort_unstable();
        for to in tos {
            let Some(s) = r.out_streams.get_mut(&to) else {
                continue;
            };
            while s.sent < s.chunks && s.sent - s.acked.min(s.sent) < window {
                out.sends.push((
                    to,
                    Peer::SnapChunk {
                        stream: s.id,
                        index: s.sent,
                    },
                ));
                s.sent += 1;
            }
            if s.sent == s.chunks {
                out.sends.push((to, Peer::SnapEnd { stream: s.id }));
                finished.push((to, s.snap.zxid));
            }
        }
        for (to, zxid) in finished {
            if let Some(r) = self.run.as_mut() {
                r.out_streams.remove(&to);
                let res = r.core.snapshot_sent(&self.log, to, zxid);
                self.after(res, now, out);
            }
        }
    }

    fn finish_install(&mut self, now: Now, out: &mut Out) {
        let r = self.r();
        let Some(inst) = r.installing.take() else {
            return;
        };
        if r.core.expects_snapshot_from() != Some(inst.from) {
            let req = r.durability.install_abandoned();
            self.schedule_sync(req, now);
        } else {
            // The applier is drained before an install.
            self.drain_applier(out);
            let range_delete = self.bounds.mutation != Some(Mutation::InstallDeletesVisibleKeys);
            let zxid = self.store.install_snapshot_with(&inst.snap, range_delete);
            self.log.reset(zxid);
            self.log_durable = zxid;
            let r = self.r();
            r.durability.installed(zxid);
            r.fsyncs.clear();
            r.submitted = zxid;
            // Writes waiting at or below the snapshot will not be applied here.
            let stale: Vec<Zxid> = r.waiters.keys().filter(|z| **z <= zxid).copied().collect();
            let mut origins: Vec<(Zxid, Origin)> = stale
                .into_iter()
                .filter_map(|z| r.waiters.remove(&z).map(|o| (z, o)))
                .collect();
            origins.sort_by_key(|(z, _)| *z);
            for (_, o) in origins {
                self.answer_err(
                    o,
                    "a snapshot replaced this member's state; outcome unknown".into(),
                    out,
                );
            }
            out.events.push(Event::Installed { zxid });
            let actions = self.r().core.snapshot_installed(zxid);
            self.execute(actions, now, out);
        }
        for (from, msg) in inst.stash {
            if !self.up() {
                return;
            }
            self.on_peer(from, msg, now, out);
        }
    }
}

fn receiving(r: &Running, from: NodeId, stream: u64) -> bool {
    r.core.expects_snapshot_from() == Some(from)
        && r.incoming
            .as_ref()
            .is_some_and(|i| i.from == from && i.id == stream)
}
