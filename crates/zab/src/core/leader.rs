//! The leader's side of discovery, synchronization and broadcast, plus its
//! failure detector and the read barrier.
//!
//! Discovery: collect FOLLOWERINFO from a quorum (self included), choose an
//! epoch greater than every acceptedEpoch seen, persist it, send LEADERINFO,
//! and wait for a quorum of fresh ACKEPOCHs; step down if an acker is ahead.
//! Sync: per follower choose DIFF, TRUNC+DIFF or SNAP (`sync_follower`), end
//! with NEWLEADER; once currentEpoch is persisted here and a quorum acked
//! NEWLEADER, the leader is established, commits its initial history and
//! sends UPTODATE. Broadcast: PROPOSAL / ACK / COMMIT, pipelined.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::{Core, Mutation, RoleState};
use crate::action::{Action, Role};
use crate::error::ZabError;
use crate::log::LogReader;
use crate::message::{Entry, Message, NodeId};
use crate::status::FollowerStatus;
use crate::Zxid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaderPhase {
    /// Collecting FOLLOWERINFO from a quorum.
    Discovery,
    /// Epoch chosen, LEADERINFO sent, collecting ACKEPOCH from a quorum.
    EpochAck,
    /// Synchronizing followers, collecting NEWLEADER acks from a quorum.
    Sync,
    /// Established: proposals flow.
    Broadcast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerStage {
    /// FOLLOWERINFO received before the epoch was chosen.
    InfoReceived,
    /// LEADERINFO sent, waiting for ACKEPOCH.
    LeaderInfoSent,
    /// ACKEPOCH received, waiting for the sync phase.
    EpochAcked,
    /// SNAP decided, waiting for the driver's `snapshot_sent`.
    AwaitSnapshot,
    /// Sync data and NEWLEADER sent; proposals are forwarded.
    Synced,
    /// NEWLEADER acked: counts toward quorums.
    Active,
}

pub(crate) struct Peer {
    stage: PeerStage,
    peer_last: Zxid,
    acked: Zxid,
    last_heard: u64,
    read_round: u64,
}

impl Peer {
    fn forwarding(&self) -> bool {
        matches!(self.stage, PeerStage::Synced | PeerStage::Active)
    }
}

struct PendingRead {
    ctx: u64,
    origin: Option<NodeId>,
    zxid: Zxid,
    deadline: u64,
}

pub(crate) struct LeaderState {
    pub epoch: u32,
    phase: LeaderPhase,
    started: u64,
    infos: BTreeMap<NodeId, u32>,
    epoch_acks: BTreeSet<NodeId>,
    newleader_acks: BTreeSet<NodeId>,
    self_synced: bool,
    initial_last: Zxid,
    peers: BTreeMap<NodeId, Peer>,
    next_heartbeat: u64,
    rollover_since: Option<u64>,
    read_round: u64,
    reads_in_flight: Vec<PendingRead>,
    reads_round: u64,
    reads_queued: Vec<PendingRead>,
}

impl LeaderState {
    pub fn serving(&self) -> bool {
        self.phase == LeaderPhase::Broadcast
    }

    pub fn follower_status(&self, now: u64) -> Vec<FollowerStatus> {
        self.peers
            .iter()
            .map(|(id, p)| FollowerStatus {
                id: *id,
                active: p.stage == PeerStage::Active,
                acked_zxid: p.acked,
                idle_ticks: now.saturating_sub(p.last_heard),
            })
            .collect()
    }

    fn pending_reads(&self) -> usize {
        self.reads_in_flight.len() + self.reads_queued.len()
    }
}

/// What the leader sends a follower to synchronize it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SyncPlan {
    /// Optionally truncate, then send these entries.
    Diff {
        trunc: Option<Zxid>,
        start: Zxid,
        entries: Vec<Entry>,
    },
    /// Send a snapshot, then the entries after it.
    Snap,
}

impl Core {
    fn ld(&mut self) -> Option<&mut LeaderState> {
        match &mut self.role {
            RoleState::Leading(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn become_leader(&mut self) {
        let mut infos = BTreeMap::new();
        infos.insert(self.id, self.accepted_epoch);
        self.role = RoleState::Leading(LeaderState {
            epoch: 0,
            phase: LeaderPhase::Discovery,
            started: self.now,
            infos,
            epoch_acks: BTreeSet::new(),
            newleader_acks: BTreeSet::new(),
            self_synced: false,
            initial_last: Zxid::ZERO,
            peers: BTreeMap::new(),
            next_heartbeat: self.now,
            rollover_since: None,
            read_round: 0,
            reads_in_flight: Vec::new(),
            reads_round: 0,
            reads_queued: Vec::new(),
        });
        self.out.push(Action::RoleChanged {
            role: Role::Leading,
            leader: Some(self.id),
            epoch: 0,
            serving: false,
        });
        self.try_choose_epoch();
    }

    fn step_down(&mut self) {
        self.enter_looking(true);
    }

    pub(super) fn leader_step<L: LogReader + ?Sized>(
        &mut self,
        log: &L,
        from: NodeId,
        msg: Message,
    ) -> Result<(), ZabError> {
        let now = self.now;
        let Some(ld) = self.ld() else { return Ok(()) };
        let epoch = ld.epoch;
        if let Some(p) = ld.peers.get_mut(&from) {
            p.last_heard = now;
        }
        match msg {
            Message::FollowerInfo {
                accepted_epoch,
                last_zxid,
            } => {
                self.on_follower_info(from, accepted_epoch, last_zxid);
            }
            Message::AckEpoch {
                epoch: e,
                current_epoch,
                last_zxid,
                fresh,
            } if e == epoch => {
                self.on_ack_epoch(log, from, current_epoch, last_zxid, fresh)?;
            }
            Message::AckNewLeader { epoch: e, zxid } if e == epoch => {
                self.on_ack_newleader(from, zxid)
            }
            Message::Ack { epoch: e, zxid } if e == epoch => {
                if let Some(p) = ld_peer_active(&mut self.role, from) {
                    p.acked = p.acked.max(zxid);
                }
                self.try_advance_commit();
            }
            Message::HeartbeatAck {
                epoch: e,
                read_round,
                acked,
            } if e == epoch => {
                if let Some(p) = ld_peer_active(&mut self.role, from) {
                    p.acked = p.acked.max(acked);
                    p.read_round = p.read_round.max(read_round);
                }
                self.try_advance_commit();
                self.check_reads();
            }
            Message::ReadRequest { epoch: e, ctx } if e == epoch => {
                let active = ld_peer_active(&mut self.role, from).is_some();
                if active {
                    self.leader_read(ctx, Some(from));
                } else {
                    self.send(
                        from,
                        Message::ReadResponse {
                            epoch,
                            ctx,
                            zxid: None,
                        },
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_follower_info(&mut self, from: NodeId, accepted_epoch: u32, last_zxid: Zxid) {
        let now = self.now;
        self.epoch_floor = self.epoch_floor.max(accepted_epoch);
        let Some(ld) = self.ld() else { return };
        let promised_later = accepted_epoch > ld.epoch
            // Our own epoch, accepted before: it rejoins us (its ACKEPOCH is
            // not fresh). That only matters while we still need fresh acks.
            || (accepted_epoch == ld.epoch && ld.phase == LeaderPhase::EpochAck);
        if ld.phase != LeaderPhase::Discovery && promised_later {
            // This member promised a later epoch: it can never follow us. Give
            // up leadership so that a new epoch (above its promise) includes it.
            self.step_down();
            return;
        }
        ld.epoch_acks.remove(&from);
        ld.newleader_acks.remove(&from);
        let stage = if ld.phase == LeaderPhase::Discovery {
            ld.infos.insert(from, accepted_epoch);
            PeerStage::InfoReceived
        } else {
            PeerStage::LeaderInfoSent
        };
        ld.peers.insert(
            from,
            Peer {
                stage,
                peer_last: last_zxid,
                acked: Zxid::ZERO,
                last_heard: now,
                read_round: 0,
            },
        );
        let epoch = ld.epoch;
        if stage == PeerStage::LeaderInfoSent {
            self.send(from, Message::LeaderInfo { epoch });
        } else {
            self.try_choose_epoch();
        }
    }

    /// With FOLLOWERINFO from a quorum (self included), pick an epoch above
    /// every acceptedEpoch seen, persist it, and send LEADERINFO.
    fn try_choose_epoch(&mut self) {
        let quorum = self.quorum();
        let reuse = self.mutated(Mutation::ReuseEpoch);
        let floor = self.epoch_floor;
        let me = self.id;
        let Some(ld) = self.ld() else { return };
        if ld.phase != LeaderPhase::Discovery || ld.infos.len() < quorum {
            return;
        }
        let max = ld.infos.values().copied().max().unwrap_or(0);
        let epoch = if reuse {
            max.max(1)
        } else {
            max.max(floor).saturating_add(1)
        };
        ld.epoch = epoch;
        ld.phase = LeaderPhase::EpochAck;
        let mut targets = Vec::new();
        for (id, p) in ld.peers.iter_mut() {
            if p.stage == PeerStage::InfoReceived {
                p.stage = PeerStage::LeaderInfoSent;
                targets.push(*id);
            }
        }
        ld.epoch_acks.insert(me);
        self.accepted_epoch = epoch;
        self.out.push(Action::PersistAcceptedEpoch { epoch });
        self.out.push(Action::RoleChanged {
            role: Role::Leading,
            leader: Some(self.id),
            epoch,
            serving: false,
        });
        for t in targets {
            self.send(t, Message::LeaderInfo { epoch });
        }
        self.try_finish_epoch_ack();
    }

    fn on_ack_epoch<L: LogReader + ?Sized>(
        &mut self,
        log: &L,
        from: NodeId,
        current_epoch: u32,
        last_zxid: Zxid,
        fresh: bool,
    ) -> Result<(), ZabError> {
        let mine = (self.current_epoch, self.last_zxid);
        let reuse = self.mutated(Mutation::ReuseEpoch);
        let Some(ld) = self.ld() else { return Ok(()) };
        let Some(p) = ld.peers.get_mut(&from) else {
            return Ok(());
        };
        if p.stage != PeerStage::LeaderInfoSent {
            return Ok(());
        }
        p.peer_last = last_zxid;
        p.stage = PeerStage::EpochAcked;
        match ld.phase {
            LeaderPhase::EpochAck => {
                if fresh || reuse {
                    if (current_epoch, last_zxid) > mine {
                        // A member of our discovery quorum knows more than we
                        // do: we must not lead (ZooKeeper does the same).
                        self.step_down();
                        return Ok(());
                    }
                    ld.epoch_acks.insert(from);
                }
                self.try_finish_epoch_ack_with(log)
            }
            LeaderPhase::Sync | LeaderPhase::Broadcast => self.sync_follower(log, from),
            LeaderPhase::Discovery => Ok(()),
        }
    }

    fn try_finish_epoch_ack(&mut self) {
        // Only reached without followers to sync (e.g. a single member), so no log reads happen.
        let quorum = self.quorum();
        let Some(ld) = self.ld() else { return };
        if ld.phase != LeaderPhase::EpochAck || ld.epoch_acks.len() < quorum {
            return;
        }
        ld.phase = LeaderPhase::Sync;
        let last = self.last_zxid;
        if let Some(ld) = self.ld() {
            ld.initial_last = last;
        }
        self.try_self_newleader();
    }

    fn try_finish_epoch_ack_with<L: LogReader + ?Sized>(
        &mut self,
        log: &L,
    ) -> Result<(), ZabError> {
        let before = self.ld().map(|l| l.phase);
        self.try_finish_epoch_ack();
        let Some(ld) = self.ld() else { return Ok(()) };
        if before == Some(LeaderPhase::EpochAck) && ld.phase != LeaderPhase::EpochAck {
            let waiting: Vec<NodeId> = ld
                .peers
                .iter()
                .filter(|(_, p)| p.stage == PeerStage::EpochAcked)
                .map(|(id, _)| *id)
                .collect();
            for id in waiting {
                self.sync_follower(log, id)?;
            }
        }
        Ok(())
    }

    /// The leader acks its own NEWLEADER: once its initial history is durable,
    /// persist currentEpoch.
    fn try_self_newleader(&mut self) {
        let persisted = self.persisted;
        let Some(ld) = self.ld() else { return };
        if ld.self_synced || ld.phase != LeaderPhase::Sync || persisted < ld.initial_last {
            return;
        }
        ld.self_synced = true;
        let epoch = ld.epoch;
        self.current_epoch = epoch;
        self.out.push(Action::PersistCurrentEpoch { epoch });
        self.try_establish();
    }

    fn try_establish(&mut self) {
        let quorum = self.quorum();
        let Some(ld) = self.ld() else { return };
        if ld.phase != LeaderPhase::Sync || !ld.self_synced || ld.newleader_acks.len() + 1 < quorum
        {
            return;
        }
        ld.phase = LeaderPhase::Broadcast;
        let epoch = ld.epoch;
        let initial_last = ld.initial_last;
        let active: Vec<NodeId> = ld
            .peers
            .iter()
            .filter(|(_, p)| p.stage == PeerStage::Active)
            .map(|(id, _)| *id)
            .collect();
        self.committed = self.committed.max(initial_last);
        let commit = self.committed;
        self.out.push(Action::RoleChanged {
            role: Role::Leading,
            leader: Some(self.id),
            epoch,
            serving: true,
        });
        for id in active {
            self.send(id, Message::UpToDate { epoch, commit });
        }
        self.emit_commit();
    }

    /// ZooKeeper's `LearnerHandler.syncFollower`, over our log:
    /// same last zxid -> empty DIFF; follower ahead -> TRUNC to our last;
    /// follower inside our retained log -> DIFF (after a TRUNC to the largest
    /// zxid we share if its last is not in our log); otherwise SNAP. A DIFF
    /// larger than `max_diff_entries` becomes a SNAP when the follower's last
    /// zxid is already applied here.
    pub(super) fn plan_sync<L: LogReader + ?Sized>(
        &self,
        log: &L,
        peer_last: Zxid,
    ) -> Result<SyncPlan, ZabError> {
        let leader_last = self.last_zxid;
        if peer_last == leader_last {
            return Ok(SyncPlan::Diff {
                trunc: None,
                start: leader_last,
                entries: Vec::new(),
            });
        }
        if peer_last > leader_last {
            return Ok(SyncPlan::Diff {
                trunc: Some(leader_last),
                start: leader_last,
                entries: Vec::new(),
            });
        }
        let Some(shared) = log.floor(peer_last)? else {
            return Ok(SyncPlan::Snap);
        };
        let trunc = (shared != peer_last).then_some(shared);
        let limit = self.cfg.max_diff_entries;
        let limit_bytes = self.cfg.max_diff_bytes;
        // One entry past either bound shows the DIFF is too large.
        let mut entries = self.read_range(log, shared, limit + 1, limit_bytes.saturating_add(1))?;
        let bytes: usize = entries.iter().map(Entry::wire_bytes).sum();
        if entries.len() > limit || bytes > limit_bytes {
            // A snapshot is taken at an applied zxid >= our last emitted
            // commit (driver contract); only send one if it does not move
            // the follower's state backwards. Otherwise the DIFF must be
            // whole, however large.
            if self.commit_emitted >= peer_last {
                return Ok(SyncPlan::Snap);
            }
            entries = self.read_range(log, shared, usize::MAX, usize::MAX)?;
        }
        Ok(SyncPlan::Diff {
            trunc,
            start: shared,
            entries,
        })
    }

    /// Entries after `after` up to our last zxid, at most `limit` of them
    /// and, once past `limit_bytes` (of `Entry::wire_bytes`), none more.
    fn read_range<L: LogReader + ?Sized>(
        &self,
        log: &L,
        after: Zxid,
        limit: usize,
        limit_bytes: usize,
    ) -> Result<Vec<Entry>, ZabError> {
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes = 0usize;
        let mut cursor = after;
        while cursor < self.last_zxid && out.len() < limit && bytes < limit_bytes {
            let want = (limit - out.len()).min(self.cfg.max_sync_batch_entries);
            let want_bytes = (limit_bytes - bytes).min(self.cfg.max_sync_batch_bytes);
            let chunk = log.entries_after(cursor, want, want_bytes)?;
            bytes = chunk
                .iter()
                .fold(bytes, |b, e| b.saturating_add(e.wire_bytes()));
            let Some(last) = chunk.last() else {
                return Err(ZabError::Log(crate::error::LogError(format!(
                    "log ends at {cursor}, core expected {}",
                    self.last_zxid
                ))));
            };
            cursor = last.zxid;
            out.extend(chunk.into_iter().filter(|e| e.zxid <= self.last_zxid));
        }
        Ok(out)
    }

    fn sync_follower<L: LogReader + ?Sized>(
        &mut self,
        log: &L,
        id: NodeId,
    ) -> Result<(), ZabError> {
        let Some(ld) = self.ld() else { return Ok(()) };
        let epoch = ld.epoch;
        let Some(p) = ld.peers.get(&id) else {
            return Ok(());
        };
        let peer_last = p.peer_last;
        let plan = self.plan_sync(log, peer_last)?;
        match plan {
            SyncPlan::Diff {
                trunc,
                start,
                entries,
            } => {
                if let Some(to) = trunc {
                    self.send(id, Message::Trunc { epoch, to });
                }
                self.send_diff_and_newleader(id, epoch, start, entries);
            }
            SyncPlan::Snap => {
                if let Some(p) = self.ld().and_then(|l| l.peers.get_mut(&id)) {
                    p.stage = PeerStage::AwaitSnapshot;
                }
                self.send(id, Message::Snap { epoch });
                self.out.push(Action::SendSnapshot { to: id });
            }
        }
        Ok(())
    }

    fn send_diff_and_newleader(
        &mut self,
        id: NodeId,
        epoch: u32,
        start: Zxid,
        entries: Vec<Entry>,
    ) {
        let chunk = self.cfg.max_sync_batch_entries.max(1);
        let chunk_bytes = self.cfg.max_sync_batch_bytes;
        let mut it = entries.into_iter().peekable();
        let mut prev = start;
        while it.peek().is_some() {
            // At most `chunk` entries and `chunk_bytes` bytes; one entry at least.
            let mut batch: Vec<Entry> = Vec::new();
            let mut bytes = 0usize;
            while let Some(e) = it.peek() {
                let next = bytes.saturating_add(e.wire_bytes());
                if batch.len() >= chunk || (next > chunk_bytes && !batch.is_empty()) {
                    break;
                }
                bytes = next;
                batch.extend(it.next());
            }
            let next_prev = batch.last().map_or(prev, |e| e.zxid);
            self.send(
                id,
                Message::Diff {
                    epoch,
                    prev,
                    entries: batch,
                },
            );
            prev = next_prev;
        }
        let last = self.last_zxid;
        self.send(
            id,
            Message::NewLeader {
                epoch,
                last_zxid: last,
            },
        );
        if let Some(p) = self.ld().and_then(|l| l.peers.get_mut(&id)) {
            p.stage = PeerStage::Synced;
        }
    }

    pub(super) fn leader_snapshot_sent<L: LogReader + ?Sized>(
        &mut self,
        log: &L,
        to: NodeId,
        zxid: Zxid,
    ) -> Result<(), ZabError> {
        let last = self.last_zxid;
        let Some(ld) = self.ld() else { return Ok(()) };
        let epoch = ld.epoch;
        match ld.peers.get(&to) {
            Some(p) if p.stage == PeerStage::AwaitSnapshot => {}
            _ => return Ok(()),
        }
        if zxid > last {
            return Err(ZabError::Log(crate::error::LogError(format!(
                "snapshot at {zxid} is beyond the leader's log end {last}"
            ))));
        }
        let entries = self.read_range(log, zxid, usize::MAX, usize::MAX)?;
        self.send_diff_and_newleader(to, epoch, zxid, entries);
        Ok(())
    }

    pub(super) fn leader_snapshot_progress(&mut self, peer: NodeId) {
        let now = self.now;
        let Some(ld) = self.ld() else { return };
        let Some(p) = ld.peers.get_mut(&peer) else {
            return;
        };
        if !matches!(p.stage, PeerStage::AwaitSnapshot | PeerStage::Synced) {
            return;
        }
        p.last_heard = now;
        if ld.phase == LeaderPhase::Sync {
            ld.started = now;
        }
    }

    fn on_ack_newleader(&mut self, from: NodeId, zxid: Zxid) {
        let Some(ld) = self.ld() else { return };
        let epoch = ld.epoch;
        let phase = ld.phase;
        let Some(p) = ld.peers.get_mut(&from) else {
            return;
        };
        if p.stage != PeerStage::Synced {
            return;
        }
        p.stage = PeerStage::Active;
        p.acked = p.acked.max(zxid);
        match phase {
            LeaderPhase::Sync => {
                ld.newleader_acks.insert(from);
                self.try_establish();
            }
            LeaderPhase::Broadcast => {
                let commit = self.committed;
                self.send(from, Message::UpToDate { epoch, commit });
                self.try_advance_commit();
            }
            _ => {}
        }
    }

    pub(super) fn leader_persisted(&mut self) {
        self.try_self_newleader();
        self.try_advance_commit();
        self.emit_commit();
    }

    /// Commit the largest zxid that a quorum (self included) holds durably.
    fn try_advance_commit(&mut self) {
        let quorum = self.quorum();
        let persisted = self.persisted;
        let committed = self.committed;
        let last = self.last_zxid;
        let without_quorum = self.mutated(Mutation::CommitWithoutQuorum);
        let Some(ld) = self.ld() else { return };
        if ld.phase != LeaderPhase::Broadcast {
            return;
        }
        let mut acks: Vec<Zxid> = ld
            .peers
            .values()
            .filter(|p| p.stage == PeerStage::Active)
            .map(|p| p.acked)
            .collect();
        acks.push(persisted);
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let mut q = match acks.get(quorum - 1) {
            Some(z) => *z,
            None => return,
        };
        if without_quorum {
            q = last;
        }
        if q <= committed {
            return;
        }
        let epoch = ld.epoch;
        let targets: Vec<NodeId> = ld
            .peers
            .iter()
            .filter(|(_, p)| p.forwarding())
            .map(|(id, _)| *id)
            .collect();
        self.committed = q;
        for t in targets {
            self.send(t, Message::Commit { epoch, zxid: q });
        }
        self.emit_commit();
    }

    pub(super) fn leader_propose(&mut self, data: Vec<Bytes>) -> Result<(Zxid, Zxid), ZabError> {
        let max_batch = self.cfg.max_batch_entries;
        let max_batch_bytes = self.cfg.max_batch_bytes;
        let max_in_flight = self.cfg.max_in_flight_entries;
        let limit = self.cfg.epoch_counter_limit;
        let last = self.last_zxid;
        let committed = self.committed;
        let commit_now = self.mutated(Mutation::CommitWithoutQuorum);
        let now = self.now;
        let Some(ld) = self.ld() else {
            let leader = match &self.role {
                RoleState::Following(f) => Some(f.leader),
                _ => None,
            };
            return Err(ZabError::NotLeader { leader });
        };
        if ld.phase != LeaderPhase::Broadcast {
            return Err(ZabError::NotLeader { leader: None });
        }
        let epoch = ld.epoch;
        if data.is_empty() || data.len() > max_batch {
            return Err(ZabError::BadBatch {
                len: data.len(),
                max: max_batch,
            });
        }
        let bytes: usize = data
            .iter()
            .map(|d| crate::message::wire_bytes(d.len()))
            .sum();
        if bytes > max_batch_bytes {
            return Err(ZabError::BatchTooLarge {
                bytes,
                max: max_batch_bytes,
            });
        }
        let n = data.len() as u64;
        let base_counter = if last.epoch() == epoch {
            u64::from(last.counter())
        } else {
            0
        };
        let committed_counter = if committed.epoch() == epoch {
            u64::from(committed.counter())
        } else {
            0
        };
        let in_flight = base_counter.saturating_sub(committed_counter);
        if in_flight + n > max_in_flight {
            return Err(ZabError::Backpressure {
                in_flight,
                max: max_in_flight,
            });
        }
        if base_counter + n > u64::from(limit) {
            ld.rollover_since.get_or_insert(now);
            return Err(ZabError::EpochExhausted { epoch });
        }
        let entries: Vec<Entry> = data
            .into_iter()
            .enumerate()
            .map(|(i, d)| Entry {
                zxid: Zxid::new(epoch, (base_counter + 1 + i as u64) as u32),
                data: d,
            })
            .collect();
        let first = entries[0].zxid;
        let new_last = entries[entries.len() - 1].zxid;
        let targets: Vec<NodeId> = ld
            .peers
            .iter()
            .filter(|(_, p)| p.forwarding())
            .map(|(id, _)| *id)
            .collect();
        if base_counter + n >= u64::from(limit) {
            ld.rollover_since.get_or_insert(now);
        }
        self.last_zxid = new_last;
        self.out.push(Action::Append {
            entries: entries.clone(),
        });
        let commit = self.committed;
        for t in targets {
            self.send(
                t,
                Message::Proposal {
                    epoch,
                    prev: last,
                    entries: entries.clone(),
                    commit,
                },
            );
        }
        if commit_now {
            self.committed = new_last;
        }
        Ok((first, new_last))
    }

    pub(super) fn leader_tick<L: LogReader + ?Sized>(&mut self, log: &L) -> Result<(), ZabError> {
        let _ = log;
        let now = self.now;
        let quorum = self.quorum();
        let cfg_step_down = self.cfg.step_down_ticks;
        let sync_timeout = self.cfg.sync_timeout_ticks;
        let hb = self.cfg.heartbeat_interval_ticks;
        let committed = self.committed;
        let last = self.last_zxid;
        let Some(ld) = self.ld() else { return Ok(()) };
        if ld.phase != LeaderPhase::Broadcast {
            if now.saturating_sub(ld.started) > sync_timeout {
                self.step_down();
            }
            return Ok(());
        }
        let heard = ld
            .peers
            .values()
            .filter(|p| {
                p.stage == PeerStage::Active && now.saturating_sub(p.last_heard) <= cfg_step_down
            })
            .count();
        if heard + 1 < quorum {
            self.step_down();
            return Ok(());
        }
        if let Some(since) = ld.rollover_since {
            // Let in-flight proposals commit, then give the epoch up.
            if committed >= last || now.saturating_sub(since) > cfg_step_down {
                self.step_down();
                return Ok(());
            }
        }
        self.expire_reads();
        let Some(ld) = self.ld() else { return Ok(()) };
        if now >= ld.next_heartbeat {
            ld.next_heartbeat = now + hb;
            self.send_heartbeats();
        }
        Ok(())
    }

    fn send_heartbeats(&mut self) {
        let commit = self.committed;
        let last = self.last_zxid;
        let Some(ld) = self.ld() else { return };
        let epoch = ld.epoch;
        let read_round = ld.read_round;
        let targets: Vec<NodeId> = ld
            .peers
            .iter()
            .filter(|(_, p)| p.forwarding())
            .map(|(id, _)| *id)
            .collect();
        for t in targets {
            self.send(
                t,
                Message::Heartbeat {
                    epoch,
                    commit,
                    last,
                    read_round,
                },
            );
        }
    }

    // ---- read barrier (ReadIndex) ----

    /// Registers a read barrier; `origin` is the follower that asked, or
    /// `None` for a local caller.
    pub(super) fn leader_read(&mut self, ctx: u64, origin: Option<NodeId>) {
        let committed = self.committed;
        let deadline = self.now + self.cfg.read_timeout_ticks;
        let max = self.cfg.max_pending_reads;
        let Some(ld) = self.ld() else { return };
        let epoch = ld.epoch;
        let duplicate = origin.is_none()
            && ld
                .reads_in_flight
                .iter()
                .chain(ld.reads_queued.iter())
                .any(|r| r.ctx == ctx && r.origin.is_none());
        if ld.phase != LeaderPhase::Broadcast || ld.pending_reads() >= max || duplicate {
            self.resolve_read(epoch, ctx, origin, None);
            return;
        }
        ld.reads_queued.push(PendingRead {
            ctx,
            origin,
            zxid: committed,
            deadline,
        });
        self.start_read_round();
    }

    fn resolve_read(&mut self, epoch: u32, ctx: u64, origin: Option<NodeId>, zxid: Option<Zxid>) {
        match (origin, zxid) {
            (None, Some(zxid)) => self.out.push(Action::ReadReady { ctx, zxid }),
            (None, None) => self.out.push(Action::ReadFailed { ctx }),
            (Some(p), zxid) => self.send(p, Message::ReadResponse { epoch, ctx, zxid }),
        }
    }

    /// Starts a heartbeat round for queued reads if none is in flight. The
    /// round begins after the reads were registered, as ReadIndex requires.
    fn start_read_round(&mut self) {
        let Some(ld) = self.ld() else { return };
        if !ld.reads_in_flight.is_empty() || ld.reads_queued.is_empty() {
            return;
        }
        ld.read_round += 1;
        ld.reads_round = ld.read_round;
        ld.reads_in_flight = std::mem::take(&mut ld.reads_queued);
        self.send_heartbeats();
        self.check_reads();
    }

    fn check_reads(&mut self) {
        let quorum = self.quorum();
        let Some(ld) = self.ld() else { return };
        if ld.reads_in_flight.is_empty() {
            return;
        }
        let round = ld.reads_round;
        let confirmed = 1 + ld
            .peers
            .values()
            .filter(|p| p.stage == PeerStage::Active && p.read_round >= round)
            .count();
        if confirmed < quorum {
            return;
        }
        let epoch = ld.epoch;
        let done = std::mem::take(&mut ld.reads_in_flight);
        for r in done {
            self.resolve_read(epoch, r.ctx, r.origin, Some(r.zxid));
        }
        self.start_read_round();
    }

    fn expire_reads(&mut self) {
        let now = self.now;
        let Some(ld) = self.ld() else { return };
        let epoch = ld.epoch;
        let mut failed = Vec::new();
        if ld.reads_in_flight.iter().any(|r| r.deadline < now) {
            failed.append(&mut ld.reads_in_flight);
        }
        let (expired, kept): (Vec<PendingRead>, Vec<PendingRead>) =
            std::mem::take(&mut ld.reads_queued)
                .into_iter()
                .partition(|r| r.deadline < now);
        ld.reads_queued = kept;
        failed.extend(expired);
        for r in failed {
            self.resolve_read(epoch, r.ctx, r.origin, None);
        }
        self.start_read_round();
    }

    /// Fails every read pending on this member (called when leaving a role).
    pub(super) fn fail_all_reads(&mut self) {
        match &mut self.role {
            RoleState::Leading(ld) => {
                let epoch = ld.epoch;
                let mut all = std::mem::take(&mut ld.reads_in_flight);
                all.append(&mut ld.reads_queued);
                for r in all {
                    self.resolve_read(epoch, r.ctx, r.origin, None);
                }
            }
            RoleState::Following(f) => {
                let ctxs: Vec<u64> = std::mem::take(&mut f.reads).into_keys().collect();
                for ctx in ctxs {
                    self.out.push(Action::ReadFailed { ctx });
                }
            }
            RoleState::Looking => {}
        }
    }
}

fn ld_peer_active(role: &mut RoleState, id: NodeId) -> Option<&mut Peer> {
    match role {
        RoleState::Leading(ld) => ld
            .peers
            .get_mut(&id)
            .filter(|p| p.stage == PeerStage::Active),
        _ => None,
    }
}
