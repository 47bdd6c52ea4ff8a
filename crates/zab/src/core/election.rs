//! Leader election in the style of ZooKeeper's FastLeaderElection: rounds of
//! notifications, votes ordered by (currentEpoch, last zxid, id), a quorum of
//! matching votes followed by a finalize wait, and joining an existing
//! leadership from the notifications of members that already follow it.

use std::collections::BTreeMap;

use super::{Core, RoleState};
use crate::message::{Message, NodeId, ServerState, Vote};

pub(crate) struct Election {
    /// The election round (ZooKeeper's logical clock). Volatile.
    pub round: u64,
    /// Our current vote (while looking) or the vote we decided on.
    pub vote: Vote,
    /// Votes of looking members in our round (ours included).
    recv: BTreeMap<NodeId, Vote>,
    /// Votes of members that are following or leading, any round.
    out_of_election: BTreeMap<NodeId, (Vote, ServerState)>,
    /// When a quorum agrees, decide at this tick unless the vote changes.
    finalize_at: Option<u64>,
    next_resend: u64,
}

impl Election {
    pub fn new(id: NodeId) -> Election {
        Election {
            round: 0,
            vote: Vote {
                leader: id,
                zxid: crate::Zxid::ZERO,
                epoch: 0,
            },
            recv: BTreeMap::new(),
            out_of_election: BTreeMap::new(),
            finalize_at: None,
            next_resend: 0,
        }
    }
}

impl Core {
    fn self_vote(&self) -> Vote {
        Vote {
            leader: self.id,
            zxid: self.last_zxid,
            epoch: self.current_epoch,
        }
    }

    fn our_state(&self) -> ServerState {
        match self.role {
            RoleState::Looking => ServerState::Looking,
            RoleState::Following(_) => ServerState::Following,
            RoleState::Leading(_) => ServerState::Leading,
        }
    }

    fn notification(&self) -> Message {
        Message::Notification {
            vote: self.election.vote,
            round: self.election.round,
            state: self.our_state(),
        }
    }

    fn broadcast_notification(&mut self) {
        let msg = self.notification();
        let peers: Vec<NodeId> = self.peers().collect();
        for p in peers {
            self.send(p, msg.clone());
        }
        let jitter = self.random_extra(self.cfg.notification_resend_ticks / 2 + 1);
        self.election.next_resend = self.now + self.cfg.notification_resend_ticks + jitter;
    }

    /// Starts a new round voting for ourselves. The notifications go out now,
    /// except at construction where the first tick sends them.
    pub(super) fn start_election(&mut self) {
        self.election.round += 1;
        self.election.vote = self.self_vote();
        self.election.recv.clear();
        self.election.recv.insert(self.id, self.election.vote);
        self.election.out_of_election.clear();
        self.election.finalize_at = None;
        if self.now == 0 {
            self.election.next_resend = 0;
        } else {
            self.broadcast_notification();
            self.check_vote_quorum();
        }
    }

    pub(super) fn election_tick(&mut self) {
        if self.now >= self.election.next_resend {
            self.broadcast_notification();
            self.check_vote_quorum();
        }
        if let Some(at) = self.election.finalize_at {
            if self.now >= at && self.agreeing(&self.election.vote) >= self.quorum() {
                let vote = self.election.vote;
                self.decide(vote);
            }
        }
    }

    fn agreeing(&self, vote: &Vote) -> usize {
        self.election.recv.values().filter(|v| *v == vote).count()
    }

    fn set_vote(&mut self, vote: Vote) {
        if vote != self.election.vote {
            self.election.vote = vote;
            self.election.finalize_at = None;
        }
        self.election.recv.insert(self.id, vote);
    }

    /// After any change of our looking state: decide at once if every voter
    /// agrees, or arm the finalize wait once a quorum agrees.
    fn check_vote_quorum(&mut self) {
        let vote = self.election.vote;
        let agree = self.agreeing(&vote);
        if agree == self.voters.len() {
            self.decide(vote);
        } else if agree >= self.quorum() && self.election.finalize_at.is_none() {
            self.election.finalize_at = Some(self.now + self.cfg.finalize_wait_ticks);
            if self.cfg.finalize_wait_ticks == 0 {
                self.decide(vote);
            }
        }
    }

    pub(super) fn on_notification(
        &mut self,
        from: NodeId,
        vote: Vote,
        round: u64,
        state: ServerState,
    ) {
        if !matches!(self.role, RoleState::Looking) {
            // Help a looking member find the current leadership.
            if state == ServerState::Looking {
                let msg = self.notification();
                self.send(from, msg);
            }
            return;
        }
        match state {
            ServerState::Looking => {
                if round > self.election.round {
                    self.election.round = round;
                    self.election.recv.clear();
                    self.election.finalize_at = None;
                    let best = vote.max(self.self_vote());
                    self.election.vote = best;
                    self.election.recv.insert(self.id, best);
                    self.election.recv.insert(from, vote);
                    self.broadcast_notification();
                } else if round < self.election.round {
                    let msg = self.notification();
                    self.send(from, msg);
                    return;
                } else {
                    self.election.recv.insert(from, vote);
                    if vote > self.election.vote {
                        self.set_vote(vote);
                        self.broadcast_notification();
                    }
                }
                self.check_vote_quorum();
            }
            ServerState::Following | ServerState::Leading => {
                if round == self.election.round {
                    self.election.recv.insert(from, vote);
                }
                self.election.out_of_election.insert(from, (vote, state));
                let leader = vote.leader;
                if leader == self.id {
                    return;
                }
                let leader_claims = matches!(
                    self.election.out_of_election.get(&leader),
                    Some((v, ServerState::Leading)) if v.leader == leader
                );
                let supporters = self
                    .election
                    .out_of_election
                    .values()
                    .filter(|(v, _)| v.leader == leader)
                    .count();
                if leader_claims && supporters >= self.quorum() {
                    self.election.round = self.election.round.max(round);
                    self.decide(vote);
                }
            }
            ServerState::Observing => {}
        }
    }

    fn decide(&mut self, vote: Vote) {
        self.election.vote = vote;
        self.election.finalize_at = None;
        if vote.leader == self.id {
            self.become_leader();
        } else {
            self.become_follower(vote.leader);
        }
    }
}
