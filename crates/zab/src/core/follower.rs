//! The follower's side: FOLLOWERINFO, LEADERINFO -> persist acceptedEpoch ->
//! ACKEPOCH, applying TRUNC / DIFF / SNAP, NEWLEADER -> (log durable) persist
//! currentEpoch -> ack, UPTODATE, then PROPOSAL -> (durable) ACK and COMMIT.
//! A follower that loses its leader, or sees a gap in what the leader sends,
//! returns to election.

use std::collections::BTreeMap;

use super::{follows, Core, Mutation, RoleState};
use crate::action::{Action, Role};
use crate::message::{Entry, Message, NodeId};
use crate::Zxid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowerPhase {
    /// FOLLOWERINFO sent, waiting for LEADERINFO.
    AwaitLeaderInfo,
    /// ACKEPOCH sent, receiving TRUNC / DIFF / SNAP until NEWLEADER.
    Syncing,
    /// NEWLEADER received (ack sent once durable), waiting for UPTODATE.
    Synced,
    /// UPTODATE received: serving.
    Broadcast,
}

pub(crate) struct FollowerState {
    pub leader: NodeId,
    pub epoch: u32,
    phase: FollowerPhase,
    started: u64,
    last_heard: u64,
    /// While waiting for LEADERINFO, re-send FOLLOWERINFO at this tick (the
    /// first copy may reach the leader before it decided it leads).
    next_info: u64,
    timeout: u64,
    pub awaiting_snapshot: bool,
    /// The NEWLEADER zxid, once NEWLEADER was received.
    pub newleader: Option<Zxid>,
    /// NEWLEADER acked: currentEpoch persisted, ACKs may flow.
    acks_enabled: bool,
    last_ack_sent: Zxid,
    pub reads: BTreeMap<u64, u64>,
}

impl FollowerState {
    pub fn serving(&self) -> bool {
        self.phase == FollowerPhase::Broadcast
    }
}

impl Core {
    fn fl(&mut self) -> Option<&mut FollowerState> {
        match &mut self.role {
            RoleState::Following(f) => Some(f),
            _ => None,
        }
    }

    pub(super) fn become_follower(&mut self, leader: NodeId) {
        let timeout =
            self.cfg.election_timeout_ticks + self.random_extra(self.cfg.election_timeout_ticks);
        self.role = RoleState::Following(FollowerState {
            leader,
            epoch: 0,
            phase: FollowerPhase::AwaitLeaderInfo,
            started: self.now,
            last_heard: self.now,
            next_info: self.now + self.cfg.notification_resend_ticks,
            timeout,
            awaiting_snapshot: false,
            newleader: None,
            acks_enabled: false,
            last_ack_sent: Zxid::ZERO,
            reads: BTreeMap::new(),
        });
        self.out.push(Action::RoleChanged {
            role: Role::Following,
            leader: Some(leader),
            epoch: 0,
            serving: false,
        });
        let (accepted_epoch, last_zxid) = (self.accepted_epoch, self.last_zxid);
        self.send(
            leader,
            Message::FollowerInfo {
                accepted_epoch,
                last_zxid,
            },
        );
    }

    /// Leaves the leader and looks for a new one.
    pub(super) fn abandon_leader(&mut self) {
        self.enter_looking(true);
    }

    pub(super) fn follower_step(&mut self, from: NodeId, msg: Message) {
        let now = self.now;
        let Some(f) = self.fl() else { return };
        if from != f.leader {
            return;
        }
        f.last_heard = now;
        let (epoch, phase) = (f.epoch, f.phase);
        match msg {
            Message::LeaderInfo { epoch: e } if phase == FollowerPhase::AwaitLeaderInfo => {
                self.on_leader_info(e)
            }
            Message::Trunc { epoch: e, to } if e == epoch && self.accepting_sync() => {
                if to > self.last_zxid {
                    self.abandon_leader();
                    return;
                }
                self.out.push(Action::Truncate { to });
                self.last_zxid = to;
                self.persisted = self.persisted.min(to);
            }
            Message::Diff {
                epoch: e,
                prev,
                entries,
            } if e == epoch && self.accepting_sync() => {
                self.append_from_leader(prev, entries);
            }
            Message::Snap { epoch: e } if e == epoch && self.accepting_sync() => {
                if let Some(f) = self.fl() {
                    f.awaiting_snapshot = true;
                }
            }
            Message::NewLeader {
                epoch: e,
                last_zxid,
            } if e == epoch && self.accepting_sync() => {
                if last_zxid != self.last_zxid {
                    // Part of the sync stream was lost: start over.
                    self.abandon_leader();
                    return;
                }
                if let Some(f) = self.fl() {
                    f.newleader = Some(last_zxid);
                    f.phase = FollowerPhase::Synced;
                }
                self.try_ack_newleader();
            }
            Message::UpToDate { epoch: e, commit }
                if e == epoch && phase == FollowerPhase::Synced =>
            {
                if let Some(f) = self.fl() {
                    f.phase = FollowerPhase::Broadcast;
                }
                let leader = Some(from);
                self.out.push(Action::RoleChanged {
                    role: Role::Following,
                    leader,
                    epoch,
                    serving: true,
                });
                self.learn_commit(commit);
            }
            Message::Proposal {
                epoch: e,
                prev,
                entries,
                commit,
            } if e == epoch && self.past_newleader() => {
                let last = entries.last().map(|x| x.zxid);
                if !self.append_from_leader(prev, entries) {
                    return;
                }
                if self.mutated(Mutation::AckBeforePersist) {
                    if let Some(z) = last {
                        self.send(from, Message::Ack { epoch, zxid: z });
                    }
                }
                self.learn_commit(commit);
            }
            Message::Commit { epoch: e, zxid } if e == epoch && self.past_newleader() => {
                self.learn_commit(zxid)
            }
            Message::Heartbeat {
                epoch: e,
                commit,
                last,
                read_round,
            } if e == epoch && self.past_newleader() => {
                if last > self.last_zxid || commit > self.last_zxid {
                    // The leader sent entries up to `last` before this
                    // heartbeat on the same FIFO link, and we do not have
                    // them: a message was lost (a broken link). Waiting for
                    // the next proposal to reveal the gap leaves this member
                    // behind, and the leader's last proposals uncommitted,
                    // for as long as the ensemble stays idle (found by the
                    // whole-member simulator, seeds 43 and 70): resynchronize.
                    self.abandon_leader();
                    return;
                }
                self.learn_commit(commit);
                let acked = match self.fl() {
                    Some(f) if f.acks_enabled => f.last_ack_sent,
                    _ => Zxid::ZERO,
                };
                self.send(
                    from,
                    Message::HeartbeatAck {
                        epoch,
                        read_round,
                        acked,
                    },
                );
            }
            Message::ReadResponse {
                epoch: e,
                ctx,
                zxid,
            } if e == epoch => {
                let pending = self.fl().and_then(|f| f.reads.remove(&ctx)).is_some();
                if pending {
                    self.out.push(match zxid {
                        Some(zxid) => Action::ReadReady { ctx, zxid },
                        None => Action::ReadFailed { ctx },
                    });
                }
            }
            _ => {}
        }
    }

    fn accepting_sync(&mut self) -> bool {
        matches!(self.fl(), Some(f) if f.phase == FollowerPhase::Syncing && !f.awaiting_snapshot)
    }

    fn past_newleader(&mut self) -> bool {
        matches!(self.fl(), Some(f) if matches!(f.phase, FollowerPhase::Synced | FollowerPhase::Broadcast))
    }

    fn on_leader_info(&mut self, epoch: u32) {
        let fresh = if epoch > self.accepted_epoch {
            self.accepted_epoch = epoch;
            self.out.push(Action::PersistAcceptedEpoch { epoch });
            true
        } else if epoch == self.accepted_epoch {
            // Rejoining a leader whose epoch we already accepted: we may sync,
            // but this ack must not count toward its discovery quorum again.
            false
        } else {
            self.abandon_leader();
            return;
        };
        let Some(f) = self.fl() else { return };
        f.epoch = epoch;
        f.phase = FollowerPhase::Syncing;
        let leader = f.leader;
        let (current_epoch, last_zxid) = (self.current_epoch, self.last_zxid);
        self.out.push(Action::RoleChanged {
            role: Role::Following,
            leader: Some(leader),
            epoch,
            serving: false,
        });
        self.send(
            leader,
            Message::AckEpoch {
                epoch,
                current_epoch,
                last_zxid,
                fresh,
            },
        );
    }

    /// Appends entries that must continue our log exactly; a gap means a lost
    /// message, and we resynchronize through a new election. Returns false
    /// when the follower left the leader.
    fn append_from_leader(&mut self, prev: Zxid, entries: Vec<Entry>) -> bool {
        if prev != self.last_zxid {
            self.abandon_leader();
            return false;
        }
        let mut prev = prev;
        for e in &entries {
            if !follows(prev, e.zxid) {
                self.abandon_leader();
                return false;
            }
            prev = e.zxid;
        }
        if entries.is_empty() {
            return true;
        }
        self.last_zxid = prev;
        self.out.push(Action::Append { entries });
        true
    }

    /// Acks NEWLEADER once the synced log is durable: persist currentEpoch
    /// first (after the log, so a restart never claims the epoch without its
    /// history), then send the ack, then any proposal acks.
    fn try_ack_newleader(&mut self) {
        let persisted = self.persisted;
        let Some(f) = self.fl() else { return };
        let Some(nl) = f.newleader else { return };
        if f.acks_enabled || persisted < nl {
            return;
        }
        f.acks_enabled = true;
        f.last_ack_sent = nl;
        let (epoch, leader) = (f.epoch, f.leader);
        self.current_epoch = epoch;
        self.out.push(Action::PersistCurrentEpoch { epoch });
        self.send(leader, Message::AckNewLeader { epoch, zxid: nl });
        self.maybe_send_ack();
    }

    fn maybe_send_ack(&mut self) {
        let persisted = self.persisted;
        let Some(f) = self.fl() else { return };
        if !f.acks_enabled || persisted <= f.last_ack_sent {
            return;
        }
        f.last_ack_sent = persisted;
        let (epoch, leader) = (f.epoch, f.leader);
        self.send(
            leader,
            Message::Ack {
                epoch,
                zxid: persisted,
            },
        );
    }

    fn learn_commit(&mut self, commit: Zxid) {
        if commit > self.committed {
            self.committed = commit;
        }
        self.emit_commit();
    }

    pub(super) fn follower_persisted(&mut self) {
        self.try_ack_newleader();
        self.maybe_send_ack();
        self.emit_commit();
    }

    pub(super) fn follower_snapshot_progress(&mut self, from: NodeId) {
        let now = self.now;
        let Some(f) = self.fl() else { return };
        if f.awaiting_snapshot && f.leader == from {
            f.last_heard = now;
            f.started = now;
        }
    }

    pub(super) fn follower_snapshot_installed(&mut self, zxid: Zxid) {
        let now = self.now;
        let Some(f) = self.fl() else { return };
        if !f.awaiting_snapshot {
            return;
        }
        f.awaiting_snapshot = false;
        // The rest of the sync (DIFF after the snapshot, NEWLEADER) gets a
        // full sync timeout from here.
        f.started = now;
        f.last_heard = now;
        self.last_zxid = zxid;
        self.persisted = zxid;
        self.committed = self.committed.max(zxid);
        self.commit_emitted = self.commit_emitted.max(zxid);
    }

    pub(super) fn follower_tick(&mut self) {
        let now = self.now;
        let sync_timeout = self.cfg.sync_timeout_ticks;
        let resend = self.cfg.notification_resend_ticks;
        let Some(f) = self.fl() else { return };
        let syncing =
            f.phase != FollowerPhase::Broadcast && now.saturating_sub(f.started) > sync_timeout;
        let silent = now.saturating_sub(f.last_heard) > f.timeout;
        if syncing || silent {
            self.abandon_leader();
            return;
        }
        if f.phase == FollowerPhase::AwaitLeaderInfo && now >= f.next_info {
            f.next_info = now + resend;
            let leader = f.leader;
            let (accepted_epoch, last_zxid) = (self.accepted_epoch, self.last_zxid);
            self.send(
                leader,
                Message::FollowerInfo {
                    accepted_epoch,
                    last_zxid,
                },
            );
            return;
        }
        let expired: Vec<u64> = f
            .reads
            .iter()
            .filter(|(_, d)| **d < now)
            .map(|(c, _)| *c)
            .collect();
        for ctx in &expired {
            f.reads.remove(ctx);
        }
        for ctx in expired {
            self.out.push(Action::ReadFailed { ctx });
        }
    }

    pub(super) fn follower_read(&mut self, ctx: u64) {
        let deadline = self.now + self.cfg.read_timeout_ticks;
        let max = self.cfg.max_pending_reads;
        let local = self.mutated(Mutation::ReadLocally);
        let committed = self.committed;
        let Some(f) = self.fl() else { return };
        if f.phase != FollowerPhase::Broadcast || f.reads.len() >= max || f.reads.contains_key(&ctx)
        {
            self.out.push(Action::ReadFailed { ctx });
            return;
        }
        if local {
            self.out.push(Action::ReadReady {
                ctx,
                zxid: committed,
            });
            return;
        }
        f.reads.insert(ctx, deadline);
        let (epoch, leader) = (f.epoch, f.leader);
        self.send(leader, Message::ReadRequest { epoch, ctx });
    }
}
