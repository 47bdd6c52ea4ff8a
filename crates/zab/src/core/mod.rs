//! The ZAB state machine. Inputs: [`Core::tick`], [`Core::step`],
//! [`Core::propose`], [`Core::on_persisted`], [`Core::read_index`] and the
//! snapshot callbacks. Output: a list of [`Action`]s for the driver.
//!
//! The core holds the volatile protocol state and a cached copy of the
//! persisted epochs; the log is read through [`LogReader`] and every write goes
//! out as an action. Phases live in `election.rs` (FastLeaderElection),
//! `leader.rs` (discovery, sync and broadcast on the leader) and `follower.rs`.

mod election;
mod follower;
mod leader;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::action::{Action, Role};
use crate::config::{Bootstrap, Config, MemberKind};
use crate::error::ZabError;
use crate::log::LogReader;
use crate::message::{Message, NodeId};
use crate::status::Status;
use crate::Zxid;

use election::Election;
use follower::FollowerState;
use leader::LeaderState;

/// Protocol mutations used only by tests to prove the checkers are not vacuous.
/// They can only be switched on through a test-only `Config` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Mutation {
    /// The leader commits a proposal as soon as it makes it.
    CommitWithoutQuorum,
    /// The leader reuses the largest accepted epoch instead of a new one, and
    /// counts acks of members that had already accepted it.
    ReuseEpoch,
    /// Followers ack proposals before they are durable.
    AckBeforePersist,
    /// Followers answer read barriers from their own commit point.
    ReadLocally,
}

/// The result of a successful [`Core::propose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    /// The zxid given to the first entry.
    pub first: Zxid,
    /// The zxid given to the last entry.
    pub last: Zxid,
    /// What the driver must do (append, then send the proposals).
    pub actions: Vec<Action>,
}

pub(crate) enum RoleState {
    Looking,
    Following(FollowerState),
    Leading(LeaderState),
}

/// One member's ZAB state machine. Sans-IO: see the crate docs for how a
/// driver runs it.
pub struct Core {
    id: NodeId,
    cfg: Config,
    voters: Vec<NodeId>,
    rng: ChaCha8Rng,
    now: u64,
    accepted_epoch: u32,
    current_epoch: u32,
    /// Last zxid in the log as the core left it (durable or not).
    last_zxid: Zxid,
    /// Every entry up to here is durable.
    persisted: Zxid,
    /// Highest zxid known committed (may exceed `persisted`).
    committed: Zxid,
    /// Highest `Commit{upto}` emitted.
    commit_emitted: Zxid,
    /// Highest acceptedEpoch any member reported to us; a new epoch we pick
    /// is above it (picking higher than needed is always safe).
    epoch_floor: u32,
    election: Election,
    role: RoleState,
    out: Vec<Action>,
}

impl Core {
    /// Builds a member from its persisted state. It starts looking for a
    /// leader; the first [`Core::tick`] sends its first notifications.
    pub fn new<L: LogReader + ?Sized>(
        config: Config,
        boot: Bootstrap,
        log: &L,
    ) -> Result<Core, ZabError> {
        config.validate()?;
        boot.validate()?;
        let mut voters: Vec<NodeId> = boot
            .members
            .iter()
            .filter(|m| m.kind == MemberKind::Participant)
            .map(|m| m.id)
            .collect();
        voters.sort_unstable();
        let last = log.last_zxid()?;
        let applied = boot.applied_zxid.max(log.snapshot_zxid()?);
        let mut core = Core {
            id: boot.id,
            cfg: config,
            voters,
            rng: ChaCha8Rng::seed_from_u64(boot.seed),
            now: 0,
            accepted_epoch: boot.accepted_epoch,
            current_epoch: boot.current_epoch,
            last_zxid: last,
            persisted: last,
            committed: applied,
            commit_emitted: applied,
            epoch_floor: boot.accepted_epoch,
            election: Election::new(boot.id),
            role: RoleState::Looking,
            out: Vec::new(),
        };
        core.enter_looking(false);
        Ok(core)
    }

    /// Advances time by one tick: timeouts, heartbeats, election resends.
    pub fn tick<L: LogReader + ?Sized>(&mut self, log: &L) -> Result<Vec<Action>, ZabError> {
        self.now += 1;
        let r = match self.role {
            RoleState::Looking => {
                self.election_tick();
                Ok(())
            }
            RoleState::Following(_) => {
                self.follower_tick();
                Ok(())
            }
            RoleState::Leading(_) => self.leader_tick(log),
        };
        self.finish(r)
    }

    /// Handles one message from peer `from`. Messages from non-members and
    /// messages that do not fit the current state are ignored.
    pub fn step<L: LogReader + ?Sized>(
        &mut self,
        log: &L,
        from: NodeId,
        msg: Message,
    ) -> Result<Vec<Action>, ZabError> {
        if from == self.id || !self.voters.contains(&from) {
            return Ok(self.take());
        }
        let r = match msg {
            Message::Notification { vote, round, state } => {
                self.on_notification(from, vote, round, state);
                Ok(())
            }
            msg => match self.role {
                RoleState::Looking => Ok(()),
                RoleState::Following(_) => {
                    self.follower_step(from, msg);
                    Ok(())
                }
                RoleState::Leading(_) => self.leader_step(log, from, msg),
            },
        };
        self.finish(r)
    }

    /// Proposes a batch of entries (one persist, one PROPOSAL per follower).
    /// Only an established leader accepts; the batch gets consecutive zxids.
    pub fn propose<L: LogReader + ?Sized>(
        &mut self,
        log: &L,
        entries: Vec<Bytes>,
    ) -> Result<Proposed, ZabError> {
        let _ = log;
        match self.leader_propose(entries) {
            Ok((first, last)) => Ok(Proposed {
                first,
                last,
                actions: self.take(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The driver reports that every log entry with zxid `<= upto` is durable.
    pub fn on_persisted<L: LogReader + ?Sized>(
        &mut self,
        log: &L,
        upto: Zxid,
    ) -> Result<Vec<Action>, ZabError> {
        let _ = log;
        let upto = upto.min(self.last_zxid);
        if upto > self.persisted {
            self.persisted = upto;
        }
        match self.role {
            RoleState::Looking => {}
            RoleState::Following(_) => self.follower_persisted(),
            RoleState::Leading(_) => self.leader_persisted(),
        }
        Ok(self.take())
    }

    /// Starts a read barrier with caller-chosen context `ctx`. Resolved later
    /// by [`Action::ReadReady`] or [`Action::ReadFailed`]. Works on the leader
    /// and on followers (which ask the leader). `ctx` must be unique among this
    /// member's pending reads; a duplicate fails at once.
    pub fn read_index(&mut self, ctx: u64) -> Vec<Action> {
        match self.role {
            RoleState::Looking => self.out.push(Action::ReadFailed { ctx }),
            RoleState::Following(_) => self.follower_read(ctx),
            RoleState::Leading(_) => self.leader_read(ctx, None),
        }
        self.take()
    }

    /// Follower: the leader `from` announced that it is shutting down (a drain,
    /// e.g. SIGTERM in a rolling restart). A follower of `from` looks for a new
    /// leader at once instead of after its election timeout. Anything else ignores
    /// it. Always safe: it is exactly what the election timeout would do later.
    pub fn leader_left(&mut self, from: NodeId) -> Vec<Action> {
        if matches!(&self.role, RoleState::Following(f) if f.leader == from) {
            self.abandon_leader();
        }
        self.take()
    }

    /// Leader: the driver finished streaming the snapshot at `zxid` to `to`
    /// (after an [`Action::SendSnapshot`]). The core sends the entries after
    /// `zxid` and NEWLEADER.
    pub fn snapshot_sent<L: LogReader + ?Sized>(
        &mut self,
        log: &L,
        to: NodeId,
        zxid: Zxid,
    ) -> Result<Vec<Action>, ZabError> {
        let r = self.leader_snapshot_sent(log, to, zxid);
        self.finish(r)
    }

    /// Follower: the driver installed the snapshot at `zxid` that the leader
    /// streamed (durably; the log now starts after `zxid`). Only valid while
    /// [`Core::expects_snapshot_from`] names the sender.
    pub fn snapshot_installed(&mut self, zxid: Zxid) -> Vec<Action> {
        self.follower_snapshot_installed(zxid);
        self.take()
    }

    /// A snapshot transfer with `peer` made progress (a chunk or a
    /// keep-alive arrived, or the receiver wrote or installed part of it).
    /// A follower awaiting a snapshot from `peer` counts it as hearing from
    /// its leader and restarts its sync deadline, so `sync_timeout_ticks`
    /// bounds the time without progress, not the whole transfer; a leader
    /// that is not yet established restarts its sync deadline while `peer`
    /// is receiving or installing a snapshot. Anything else is ignored.
    /// Timeouts only ever affect liveness, never safety.
    pub fn snapshot_progress(&mut self, peer: NodeId) {
        match &mut self.role {
            RoleState::Following(_) => self.follower_snapshot_progress(peer),
            RoleState::Leading(_) => self.leader_snapshot_progress(peer),
            RoleState::Looking => {}
        }
    }

    /// The leader from which a snapshot stream is expected now, if any. The
    /// driver drops a snapshot stream from anyone else.
    pub fn expects_snapshot_from(&self) -> Option<NodeId> {
        match &self.role {
            RoleState::Following(f) if f.awaiting_snapshot => Some(f.leader),
            _ => None,
        }
    }

    /// Current role (cheap; see [`Core::status`] for everything).
    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Looking => Role::Looking,
            RoleState::Following(_) => Role::Following,
            RoleState::Leading(_) => Role::Leading,
        }
    }

    /// True when this member serves: an established leader, or a follower
    /// that received UPTODATE.
    pub fn serving(&self) -> bool {
        match &self.role {
            RoleState::Looking => false,
            RoleState::Following(f) => f.serving(),
            RoleState::Leading(l) => l.serving(),
        }
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Ticks since construction.
    pub fn now_ticks(&self) -> u64 {
        self.now
    }

    /// Current status, for `/v1/cluster` and metrics.
    pub fn status(&self) -> Status {
        let (role, leader, serving, leader_epoch, followers) = match &self.role {
            RoleState::Looking => (Role::Looking, None, false, 0, Vec::new()),
            RoleState::Following(f) => (
                Role::Following,
                Some(f.leader),
                f.serving(),
                f.epoch,
                Vec::new(),
            ),
            RoleState::Leading(l) => (
                Role::Leading,
                Some(self.id),
                l.serving(),
                l.epoch,
                l.follower_status(self.now),
            ),
        };
        Status {
            id: self.id,
            role,
            leader,
            serving,
            accepted_epoch: self.accepted_epoch,
            current_epoch: self.current_epoch,
            leader_epoch,
            last_zxid: self.last_zxid,
            persisted_zxid: self.persisted,
            committed_zxid: self.committed,
            followers,
        }
    }

    // ---- shared helpers ----

    fn finish(&mut self, r: Result<(), ZabError>) -> Result<Vec<Action>, ZabError> {
        match r {
            Ok(()) => Ok(self.take()),
            Err(e) => {
                self.out.clear();
                Err(e)
            }
        }
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.out.push(Action::Send { to, msg });
    }

    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().copied().filter(move |v| *v != self.id)
    }

    fn random_extra(&mut self, upto: u64) -> u64 {
        if upto == 0 {
            0
        } else {
            self.rng.gen_range(0..upto)
        }
    }

    /// Is the test-only mutation `m` switched on? Always false outside tests.
    #[inline(always)]
    fn mutated(&self, m: Mutation) -> bool {
        #[cfg(test)]
        {
            self.cfg.mutation == Some(m)
        }
        #[cfg(not(test))]
        {
            let _ = m;
            false
        }
    }

    /// May this member apply commits now? Only when its log is known to be a
    /// prefix of the current leader's history.
    fn can_apply(&self) -> bool {
        match &self.role {
            RoleState::Looking => false,
            RoleState::Following(f) => f.newleader.is_some() && !f.awaiting_snapshot,
            RoleState::Leading(l) => l.serving(),
        }
    }

    /// Emits `Commit{upto}` for whatever is committed and durable here.
    fn emit_commit(&mut self) {
        if !self.can_apply() {
            return;
        }
        let c = self.committed.min(self.persisted);
        if c > self.commit_emitted {
            self.commit_emitted = c;
            self.out.push(Action::Commit { upto: c });
        }
    }

    /// Leaves the current role (failing its reads) and starts an election.
    fn enter_looking(&mut self, announce: bool) {
        self.fail_all_reads();
        self.role = RoleState::Looking;
        if announce {
            self.out.push(Action::RoleChanged {
                role: Role::Looking,
                leader: None,
                epoch: 0,
                serving: false,
            });
        }
        self.start_election();
    }
}

/// Is `next` the zxid that must follow `prev` in any log? Within an epoch
/// counters are consecutive; a new epoch starts at counter 1.
pub(crate) fn follows(prev: Zxid, next: Zxid) -> bool {
    if next.epoch() == prev.epoch() {
        prev.counter() != u32::MAX && next.counter() == prev.counter() + 1
    } else {
        next.epoch() > prev.epoch() && next.counter() == 1
    }
}
