//! Handler tests: each asserts the exact actions a handler emits.

use bytes::Bytes;

use super::leader::SyncPlan;
use super::*;
use crate::action::{Action, Role};
use crate::config::{Bootstrap, Config, Member, MemberKind};
use crate::message::{Entry, Message, ServerState, Vote};
use crate::{MemLog, Zxid};

fn members(n: u64) -> Vec<Member> {
    (1..=n)
        .map(|id| Member {
            id,
            kind: MemberKind::Participant,
        })
        .collect()
}

fn core_with(id: u64, n: u64, accepted: u32, current: u32, log: &MemLog, cfg: Config) -> Core {
    let boot = Bootstrap {
        id,
        members: members(n),
        accepted_epoch: accepted,
        current_epoch: current,
        applied_zxid: Zxid::ZERO,
        seed: id,
    };
    Core::new(cfg, boot, log).unwrap()
}

fn z(e: u32, c: u32) -> Zxid {
    Zxid::new(e, c)
}

fn entry(e: u32, c: u32) -> Entry {
    Entry {
        zxid: z(e, c),
        data: Bytes::from(vec![c as u8]),
    }
}

fn sends(actions: &[Action]) -> Vec<(u64, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

/// Makes member `id` (of 3) follow member 1 through out-of-election notifications.
fn follower_of_1(id: u64, accepted: u32, current: u32, log: &MemLog) -> Core {
    let mut c = core_with(id, 3, accepted, current, log, Config::default());
    let v = Vote {
        leader: 1,
        zxid: Zxid::ZERO,
        epoch: 0,
    };
    c.step(
        log,
        1,
        Message::Notification {
            vote: v,
            round: 1,
            state: ServerState::Leading,
        },
    )
    .unwrap();
    let other = if id == 2 { 3 } else { 2 };
    let a = c
        .step(
            log,
            other,
            Message::Notification {
                vote: v,
                round: 1,
                state: ServerState::Following,
            },
        )
        .unwrap();
    assert_eq!(
        a,
        vec![
            Action::RoleChanged {
                role: Role::Following,
                leader: Some(1),
                epoch: 0,
                serving: false
            },
            Action::Send {
                to: 1,
                msg: Message::FollowerInfo {
                    accepted_epoch: accepted,
                    last_zxid: log.last()
                }
            },
        ]
    );
    c
}

#[test]
fn follower_persists_accepted_epoch_before_sending_ackepoch() {
    let log = MemLog::new();
    let mut c = follower_of_1(2, 0, 0, &log);
    let a = c.step(&log, 1, Message::LeaderInfo { epoch: 1 }).unwrap();
    assert_eq!(
        a,
        vec![
            Action::PersistAcceptedEpoch { epoch: 1 },
            Action::RoleChanged {
                role: Role::Following,
                leader: Some(1),
                epoch: 1,
                serving: false
            },
            Action::Send {
                to: 1,
                msg: Message::AckEpoch {
                    epoch: 1,
                    current_epoch: 0,
                    last_zxid: Zxid::ZERO,
                    fresh: true
                }
            },
        ]
    );
}

#[test]
fn follower_rejoining_an_accepted_epoch_acks_without_counting_as_fresh() {
    let log = MemLog::new();
    let mut c = follower_of_1(2, 4, 4, &log);
    let a = c.step(&log, 1, Message::LeaderInfo { epoch: 4 }).unwrap();
    assert_eq!(
        sends(&a),
        vec![(
            1,
            Message::AckEpoch {
                epoch: 4,
                current_epoch: 4,
                last_zxid: Zxid::ZERO,
                fresh: false
            }
        )]
    );
    assert!(!a
        .iter()
        .any(|x| matches!(x, Action::PersistAcceptedEpoch { .. })));
}

#[test]
fn follower_returns_to_election_on_leaderinfo_older_than_accepted_epoch() {
    let log = MemLog::new();
    let mut c = follower_of_1(2, 5, 5, &log);
    let a = c.step(&log, 1, Message::LeaderInfo { epoch: 3 }).unwrap();
    assert_eq!(
        a[0],
        Action::RoleChanged {
            role: Role::Looking,
            leader: None,
            epoch: 0,
            serving: false
        }
    );
    assert_eq!(c.role(), Role::Looking);
}

/// A follower of member 1 in epoch 1 that has received the sync stream up to NEWLEADER.
fn synced_follower(log: &mut MemLog) -> Core {
    let mut c = follower_of_1(2, 0, 0, log);
    c.step(log, 1, Message::LeaderInfo { epoch: 1 }).unwrap();
    let a = c
        .step(
            log,
            1,
            Message::Diff {
                epoch: 1,
                prev: Zxid::ZERO,
                entries: vec![entry(1, 1), entry(1, 2)],
            },
        )
        .unwrap();
    assert_eq!(
        a,
        vec![Action::Append {
            entries: vec![entry(1, 1), entry(1, 2)]
        }]
    );
    log.append(&[entry(1, 1), entry(1, 2)]).unwrap();
    c
}

#[test]
fn follower_acks_newleader_only_after_its_log_is_durable_then_persists_current_epoch_first() {
    let mut log = MemLog::new();
    let mut c = synced_follower(&mut log);
    let a = c
        .step(
            &log,
            1,
            Message::NewLeader {
                epoch: 1,
                last_zxid: z(1, 2),
            },
        )
        .unwrap();
    assert_eq!(a, vec![], "nothing durable yet: no ack, no currentEpoch");
    let a = c.on_persisted(&log, z(1, 1)).unwrap();
    assert_eq!(a, vec![]);
    let a = c.on_persisted(&log, z(1, 2)).unwrap();
    assert_eq!(
        a,
        vec![
            Action::PersistCurrentEpoch { epoch: 1 },
            Action::Send {
                to: 1,
                msg: Message::AckNewLeader {
                    epoch: 1,
                    zxid: z(1, 2)
                }
            },
        ]
    );
}

#[test]
fn follower_acks_a_proposal_only_once_durable_and_commits_no_further_than_its_disk() {
    let mut log = MemLog::new();
    let mut c = synced_follower(&mut log);
    c.step(
        &log,
        1,
        Message::NewLeader {
            epoch: 1,
            last_zxid: z(1, 2),
        },
    )
    .unwrap();
    c.on_persisted(&log, z(1, 2)).unwrap();
    let a = c
        .step(
            &log,
            1,
            Message::UpToDate {
                epoch: 1,
                commit: z(1, 2),
            },
        )
        .unwrap();
    assert_eq!(
        a,
        vec![
            Action::RoleChanged {
                role: Role::Following,
                leader: Some(1),
                epoch: 1,
                serving: true
            },
            Action::Commit { upto: z(1, 2) },
        ]
    );
    let p = Message::Proposal {
        epoch: 1,
        prev: z(1, 2),
        entries: vec![entry(1, 3), entry(1, 4)],
        commit: z(1, 4),
    };
    let a = c.step(&log, 1, p).unwrap();
    assert_eq!(
        a,
        vec![Action::Append {
            entries: vec![entry(1, 3), entry(1, 4)]
        }],
        "no ACK, no commit past disk"
    );
    log.append(&[entry(1, 3), entry(1, 4)]).unwrap();
    let a = c.on_persisted(&log, z(1, 3)).unwrap();
    assert_eq!(
        a,
        vec![
            Action::Send {
                to: 1,
                msg: Message::Ack {
                    epoch: 1,
                    zxid: z(1, 3)
                }
            },
            Action::Commit { upto: z(1, 3) }
        ]
    );
}

#[test]
fn follower_that_sees_a_gap_in_proposals_returns_to_election() {
    let mut log = MemLog::new();
    let mut c = synced_follower(&mut log);
    c.step(
        &log,
        1,
        Message::NewLeader {
            epoch: 1,
            last_zxid: z(1, 2),
        },
    )
    .unwrap();
    let p = Message::Proposal {
        epoch: 1,
        prev: z(1, 3),
        entries: vec![entry(1, 4)],
        commit: Zxid::ZERO,
    };
    let a = c.step(&log, 1, p).unwrap();
    assert_eq!(
        a[0],
        Action::RoleChanged {
            role: Role::Looking,
            leader: None,
            epoch: 0,
            serving: false
        }
    );
}

#[test]
fn follower_that_lost_the_last_proposals_resyncs_on_the_next_heartbeat() {
    // Whole-member simulator seeds 43 and 70: a broken link dropped the
    // leader's last PROPOSALs and the idle ensemble sent no other, so the
    // gap was never seen: the follower stayed behind (43), or the entries
    // stayed uncommitted with their writes waiting (70).
    let mut log = MemLog::new();
    let mut c = synced_follower(&mut log);
    c.step(
        &log,
        1,
        Message::NewLeader {
            epoch: 1,
            last_zxid: z(1, 2),
        },
    )
    .unwrap();
    let hb = |commit, last| Message::Heartbeat {
        epoch: 1,
        commit,
        last,
        read_round: 0,
    };
    let a = c.step(&log, 1, hb(z(1, 1), z(1, 2))).unwrap();
    assert!(
        !a.iter().any(|a| matches!(a, Action::RoleChanged { .. })),
        "a heartbeat within the log keeps the follower: {a:?}"
    );
    let looking = Action::RoleChanged {
        role: Role::Looking,
        leader: None,
        epoch: 0,
        serving: false,
    };
    // Seed 70: the leader's last proposals were lost; nothing committed them.
    {
        let mut log2 = MemLog::new();
        let mut c2 = synced_follower(&mut log2);
        c2.step(
            &log2,
            1,
            Message::NewLeader {
                epoch: 1,
                last_zxid: z(1, 2),
            },
        )
        .unwrap();
        let a = c2.step(&log2, 1, hb(z(1, 2), z(1, 4))).unwrap();
        assert_eq!(a[0], looking);
    }
    // Seed 43: committed entries were lost.
    let a = c.step(&log, 1, hb(z(1, 3), z(1, 3))).unwrap();
    assert_eq!(a[0], looking);
}

#[test]
fn follower_applies_trunc_as_a_truncate_action() {
    let mut log = MemLog::new();
    log.append(&[entry(1, 1), entry(1, 2), entry(1, 3)])
        .unwrap();
    let mut c = follower_of_1(2, 1, 1, &log);
    c.step(&log, 1, Message::LeaderInfo { epoch: 2 }).unwrap();
    let a = c
        .step(
            &log,
            1,
            Message::Trunc {
                epoch: 2,
                to: z(1, 1),
            },
        )
        .unwrap();
    assert_eq!(a, vec![Action::Truncate { to: z(1, 1) }]);
    assert_eq!(c.status().last_zxid, z(1, 1));
}

/// A leader (member 1 of 3) that got FOLLOWERINFO from member 2.
fn leader_with_info(
    log: &MemLog,
    accepted: u32,
    current: u32,
    peer_accepted: u32,
    peer_last: Zxid,
) -> (Core, Vec<Action>) {
    leader_with_info_cfg(
        log,
        Config::default(),
        accepted,
        current,
        peer_accepted,
        peer_last,
    )
}

/// [`leader_with_info`] with a given config.
fn leader_with_info_cfg(
    log: &MemLog,
    cfg: Config,
    accepted: u32,
    current: u32,
    peer_accepted: u32,
    peer_last: Zxid,
) -> (Core, Vec<Action>) {
    let mut c = core_with(1, 3, accepted, current, log, cfg);
    let v = Vote {
        leader: 1,
        zxid: log.last(),
        epoch: current,
    };
    c.step(
        log,
        2,
        Message::Notification {
            vote: v,
            round: 1,
            state: ServerState::Looking,
        },
    )
    .unwrap();
    // Quorum of matching votes: decide after the finalize wait.
    for _ in 0..5 {
        c.tick(log).unwrap();
    }
    assert_eq!(c.role(), Role::Leading);
    let a = c
        .step(
            log,
            2,
            Message::FollowerInfo {
                accepted_epoch: peer_accepted,
                last_zxid: peer_last,
            },
        )
        .unwrap();
    (c, a)
}

#[test]
fn leader_picks_an_epoch_above_every_accepted_epoch_and_persists_it_before_leaderinfo() {
    let log = MemLog::new();
    let (_, a) = leader_with_info(&log, 2, 2, 6, Zxid::ZERO);
    assert_eq!(
        a,
        vec![
            Action::PersistAcceptedEpoch { epoch: 7 },
            Action::RoleChanged {
                role: Role::Leading,
                leader: Some(1),
                epoch: 7,
                serving: false
            },
            Action::Send {
                to: 2,
                msg: Message::LeaderInfo { epoch: 7 }
            },
        ]
    );
}

#[test]
fn leader_steps_down_when_a_fresh_epoch_acker_is_ahead_of_it() {
    let log = MemLog::new();
    let (mut c, _) = leader_with_info(&log, 1, 1, 1, z(1, 5));
    let a = c
        .step(
            &log,
            2,
            Message::AckEpoch {
                epoch: 2,
                current_epoch: 1,
                last_zxid: z(1, 5),
                fresh: true,
            },
        )
        .unwrap();
    assert_eq!(
        a[0],
        Action::RoleChanged {
            role: Role::Looking,
            leader: None,
            epoch: 0,
            serving: false
        }
    );
}

#[test]
fn leader_establishes_after_newleader_quorum_and_then_commits_only_with_quorum_acks() {
    let mut log = MemLog::new();
    log.append(&[entry(1, 1)]).unwrap();
    let (mut c, _) = leader_with_info(&log, 1, 1, 1, Zxid::ZERO);
    let a = c
        .step(
            &log,
            2,
            Message::AckEpoch {
                epoch: 2,
                current_epoch: 0,
                last_zxid: Zxid::ZERO,
                fresh: true,
            },
        )
        .unwrap();
    assert_eq!(
        a,
        vec![
            Action::PersistCurrentEpoch { epoch: 2 },
            Action::Send {
                to: 2,
                msg: Message::Diff {
                    epoch: 2,
                    prev: Zxid::ZERO,
                    entries: vec![entry(1, 1)]
                }
            },
            Action::Send {
                to: 2,
                msg: Message::NewLeader {
                    epoch: 2,
                    last_zxid: z(1, 1)
                }
            },
        ]
    );
    let a = c
        .step(
            &log,
            2,
            Message::AckNewLeader {
                epoch: 2,
                zxid: z(1, 1),
            },
        )
        .unwrap();
    assert_eq!(
        a,
        vec![
            Action::RoleChanged {
                role: Role::Leading,
                leader: Some(1),
                epoch: 2,
                serving: true
            },
            Action::Send {
                to: 2,
                msg: Message::UpToDate {
                    epoch: 2,
                    commit: z(1, 1)
                }
            },
            Action::Commit { upto: z(1, 1) },
        ]
    );
    let p = c.propose(&log, vec![Bytes::from_static(b"x")]).unwrap();
    assert_eq!((p.first, p.last), (z(2, 1), z(2, 1)));
    let e = Entry {
        zxid: z(2, 1),
        data: Bytes::from_static(b"x"),
    };
    assert_eq!(
        p.actions,
        vec![
            Action::Append {
                entries: vec![e.clone()]
            },
            Action::Send {
                to: 2,
                msg: Message::Proposal {
                    epoch: 2,
                    prev: z(1, 1),
                    entries: vec![e.clone()],
                    commit: z(1, 1)
                }
            },
        ]
    );
    log.append(&[e]).unwrap();
    let a = c.on_persisted(&log, z(2, 1)).unwrap();
    assert_eq!(a, vec![], "the leader alone is not a quorum of 3");
    let a = c
        .step(
            &log,
            2,
            Message::Ack {
                epoch: 2,
                zxid: z(2, 1),
            },
        )
        .unwrap();
    assert_eq!(
        a,
        vec![
            Action::Send {
                to: 2,
                msg: Message::Commit {
                    epoch: 2,
                    zxid: z(2, 1)
                }
            },
            Action::Commit { upto: z(2, 1) }
        ]
    );
    // Read barrier: answered only after a quorum heartbeat round.
    let a = c.read_index(42);
    assert_eq!(
        a,
        vec![Action::Send {
            to: 2,
            msg: Message::Heartbeat {
                epoch: 2,
                commit: z(2, 1),
                last: z(2, 1),
                read_round: 1
            }
        }]
    );
    let a = c
        .step(
            &log,
            2,
            Message::HeartbeatAck {
                epoch: 2,
                read_round: 1,
                acked: z(2, 1),
            },
        )
        .unwrap();
    assert_eq!(
        a,
        vec![Action::ReadReady {
            ctx: 42,
            zxid: z(2, 1)
        }]
    );
    // Losing the quorum: step down within step_down_ticks, failing pending reads.
    let _ = c.read_index(43);
    let mut stepped = None;
    for t in 1..=Config::default().step_down_ticks + 2 {
        let a = c.tick(&log).unwrap();
        if a.contains(&Action::RoleChanged {
            role: Role::Looking,
            leader: None,
            epoch: 0,
            serving: false,
        }) {
            assert!(
                a.contains(&Action::ReadFailed { ctx: 43 })
                    || t > Config::default().read_timeout_ticks
            );
            stepped = Some(t);
            break;
        }
    }
    assert!(stepped.is_some(), "leader without a quorum must step down");
}

#[test]
fn sync_plan_follows_sync_follower_rules() {
    let mut log = MemLog::new();
    log.append(&[
        entry(1, 1),
        entry(1, 2),
        entry(1, 3),
        entry(3, 1),
        entry(3, 2),
    ])
    .unwrap();
    let mut c = core_with(
        1,
        3,
        3,
        3,
        &log,
        Config {
            max_diff_entries: 3,
            ..Config::default()
        },
    );
    c.commit_emitted = z(1, 3);
    // Same last zxid: empty DIFF.
    assert_eq!(
        c.plan_sync(&log, z(3, 2)).unwrap(),
        SyncPlan::Diff {
            trunc: None,
            start: z(3, 2),
            entries: vec![]
        }
    );
    // Follower ahead: TRUNC to our last.
    assert_eq!(
        c.plan_sync(&log, z(3, 5)).unwrap(),
        SyncPlan::Diff {
            trunc: Some(z(3, 2)),
            start: z(3, 2),
            entries: vec![]
        }
    );
    // Follower behind with a zxid we have: DIFF.
    assert_eq!(
        c.plan_sync(&log, z(1, 3)).unwrap(),
        SyncPlan::Diff {
            trunc: None,
            start: z(1, 3),
            entries: vec![entry(3, 1), entry(3, 2)]
        }
    );
    // Follower with an entry we never had (epoch 2): TRUNC to the largest shared zxid, then DIFF.
    assert_eq!(
        c.plan_sync(&log, z(2, 4)).unwrap(),
        SyncPlan::Diff {
            trunc: Some(z(1, 3)),
            start: z(1, 3),
            entries: vec![entry(3, 1), entry(3, 2)]
        }
    );
    // Too far behind for a DIFF, and its last zxid is applied here: SNAP.
    assert_eq!(c.plan_sync(&log, z(1, 1)).unwrap(), SyncPlan::Snap);
    // Behind our compacted prefix: SNAP.
    log.compact(z(1, 2));
    assert_eq!(c.plan_sync(&log, z(1, 1)).unwrap(), SyncPlan::Snap);
}

#[test]
fn a_single_member_elects_itself_and_commits_its_own_proposals() {
    let mut log = MemLog::new();
    let mut c = core_with(1, 1, 0, 0, &log, Config::default());
    let a = c.tick(&log).unwrap();
    assert_eq!(
        a,
        vec![
            Action::RoleChanged {
                role: Role::Leading,
                leader: Some(1),
                epoch: 0,
                serving: false
            },
            Action::PersistAcceptedEpoch { epoch: 1 },
            Action::RoleChanged {
                role: Role::Leading,
                leader: Some(1),
                epoch: 1,
                serving: false
            },
            Action::PersistCurrentEpoch { epoch: 1 },
            Action::RoleChanged {
                role: Role::Leading,
                leader: Some(1),
                epoch: 1,
                serving: true
            },
        ]
    );
    let p = c
        .propose(
            &log,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        )
        .unwrap();
    assert_eq!(p.actions.len(), 1, "one append for the batch, no peers");
    if let Some(Action::Append { entries }) = p.actions.first() {
        log.append(entries).unwrap();
    }
    assert_eq!(
        c.on_persisted(&log, p.last).unwrap(),
        vec![Action::Commit { upto: z(1, 2) }]
    );
}

#[test]
fn propose_on_a_follower_is_refused_with_a_leader_hint() {
    let log = MemLog::new();
    let mut c = follower_of_1(2, 0, 0, &log);
    assert_eq!(
        c.propose(&log, vec![Bytes::new()]).unwrap_err(),
        ZabError::NotLeader { leader: Some(1) }
    );
}

#[test]
fn follower_read_goes_through_the_leader_and_fails_when_the_leader_is_lost() {
    let mut log = MemLog::new();
    let mut c = synced_follower(&mut log);
    c.step(
        &log,
        1,
        Message::NewLeader {
            epoch: 1,
            last_zxid: z(1, 2),
        },
    )
    .unwrap();
    c.on_persisted(&log, z(1, 2)).unwrap();
    c.step(
        &log,
        1,
        Message::UpToDate {
            epoch: 1,
            commit: z(1, 2),
        },
    )
    .unwrap();
    assert_eq!(
        c.read_index(7),
        vec![Action::Send {
            to: 1,
            msg: Message::ReadRequest { epoch: 1, ctx: 7 }
        }]
    );
    let a = c
        .step(
            &log,
            1,
            Message::ReadResponse {
                epoch: 1,
                ctx: 7,
                zxid: Some(z(1, 2)),
            },
        )
        .unwrap();
    assert_eq!(
        a,
        vec![Action::ReadReady {
            ctx: 7,
            zxid: z(1, 2)
        }]
    );
    c.read_index(8);
    let mut failed = false;
    for _ in 0..100 {
        if c.tick(&log)
            .unwrap()
            .contains(&Action::ReadFailed { ctx: 8 })
        {
            failed = true;
            break;
        }
    }
    assert!(
        failed,
        "a read pending on a follower that loses its leader fails"
    );
}

#[test]
fn looking_member_adopts_a_better_vote_and_rebroadcasts_it() {
    let log = MemLog::new();
    let mut c = core_with(1, 3, 0, 0, &log, Config::default());
    c.tick(&log).unwrap();
    let better = Vote {
        leader: 3,
        zxid: z(1, 1),
        epoch: 1,
    };
    let a = c
        .step(
            &log,
            3,
            Message::Notification {
                vote: better,
                round: 1,
                state: ServerState::Looking,
            },
        )
        .unwrap();
    let expected = Message::Notification {
        vote: better,
        round: 1,
        state: ServerState::Looking,
    };
    assert_eq!(sends(&a), vec![(2, expected.clone()), (3, expected)]);
    assert!(
        Vote {
            leader: 1,
            zxid: z(1, 2),
            epoch: 1
        } > better
    );
    assert!(
        Vote {
            leader: 9,
            zxid: z(9, 9),
            epoch: 0
        } < better,
        "epoch orders first"
    );
}

#[test]
fn leader_out_of_zxid_counter_refuses_and_steps_down_for_a_new_epoch() {
    let log = MemLog::new();
    let mut c = core_with(
        1,
        1,
        0,
        0,
        &log,
        Config {
            epoch_counter_limit: 2,
            ..Config::default()
        },
    );
    c.tick(&log).unwrap();
    c.propose(&log, vec![Bytes::new(), Bytes::new()]).unwrap();
    assert_eq!(
        c.propose(&log, vec![Bytes::new()]).unwrap_err(),
        ZabError::EpochExhausted { epoch: 1 }
    );
    let mut stepped = false;
    for _ in 0..Config::default().step_down_ticks + 2 {
        if c.tick(&log).unwrap().contains(&Action::RoleChanged {
            role: Role::Looking,
            leader: None,
            epoch: 0,
            serving: false,
        }) {
            stepped = true;
            break;
        }
    }
    assert!(stepped);
}

// ---- regression tests for bugs the simulator found ----

#[test]
fn lost_diff_carrying_the_last_entry_of_an_epoch_is_detected_not_skipped() {
    // Seed 177: the DIFF with 1:27 was lost; the next DIFF started epoch 5 at
    // counter 1, which looked contiguous. DIFF now carries `prev`.
    let mut log = MemLog::new();
    let mut c = follower_of_1(2, 0, 0, &log);
    c.step(&log, 1, Message::LeaderInfo { epoch: 6 }).unwrap();
    c.step(
        &log,
        1,
        Message::Diff {
            epoch: 6,
            prev: Zxid::ZERO,
            entries: vec![entry(1, 1)],
        },
    )
    .unwrap();
    log.append(&[entry(1, 1)]).unwrap();
    // The DIFF with 1:2 is lost; the next one says it follows 1:2.
    let a = c
        .step(
            &log,
            1,
            Message::Diff {
                epoch: 6,
                prev: z(1, 2),
                entries: vec![entry(5, 1)],
            },
        )
        .unwrap();
    assert_eq!(
        a[0],
        Action::RoleChanged {
            role: Role::Looking,
            leader: None,
            epoch: 0,
            serving: false
        }
    );
}

#[test]
fn snap_is_not_chosen_when_the_snapshot_would_move_the_follower_backwards() {
    // Seed 1097: a size-triggered SNAP at the leader's applied zxid was older
    // than what the follower had already applied.
    let mut log = MemLog::new();
    log.append(&[entry(1, 1), entry(1, 2), entry(1, 3), entry(1, 4)])
        .unwrap();
    let mut c = core_with(
        1,
        3,
        1,
        1,
        &log,
        Config {
            max_diff_entries: 1,
            ..Config::default()
        },
    );
    c.commit_emitted = z(1, 1);
    assert_eq!(
        c.plan_sync(&log, z(1, 2)).unwrap(),
        SyncPlan::Diff {
            trunc: None,
            start: z(1, 2),
            entries: vec![entry(1, 3), entry(1, 4)]
        }
    );
}

#[test]
fn leader_steps_down_for_a_member_that_promised_a_later_epoch() {
    // Seed 14964: a member with acceptedEpoch 4 could never join an epoch-3
    // leader that kept its quorum, so it never converged.
    let log = MemLog::new();
    let (mut c, _) = leader_with_info(&log, 1, 1, 1, Zxid::ZERO);
    let a = c
        .step(
            &log,
            3,
            Message::FollowerInfo {
                accepted_epoch: 9,
                last_zxid: Zxid::ZERO,
            },
        )
        .unwrap();
    assert_eq!(
        a[0],
        Action::RoleChanged {
            role: Role::Looking,
            leader: None,
            epoch: 0,
            serving: false
        }
    );
    // Its next epoch is above the promise it heard about.
    for _ in 0..50 {
        c.tick(&log).unwrap();
        let v = Vote {
            leader: 1,
            zxid: Zxid::ZERO,
            epoch: 1,
        };
        let round = c.election.round;
        c.step(
            &log,
            2,
            Message::Notification {
                vote: v,
                round,
                state: ServerState::Looking,
            },
        )
        .unwrap();
        if c.role() == Role::Leading {
            break;
        }
    }
    let a = c
        .step(
            &log,
            2,
            Message::FollowerInfo {
                accepted_epoch: 1,
                last_zxid: Zxid::ZERO,
            },
        )
        .unwrap();
    assert_eq!(a[0], Action::PersistAcceptedEpoch { epoch: 10 });
}

#[test]
fn follower_resends_followerinfo_until_the_leader_answers() {
    // Seed 351662: FOLLOWERINFO reached the chosen leader one tick before it
    // finished its own finalize wait; it was dropped and the election
    // alternated between two leaders for ~900 ticks.
    let log = MemLog::new();
    let mut c = follower_of_1(2, 0, 0, &log);
    let mut resent = 0;
    for _ in 0..Config::default().notification_resend_ticks * 2 {
        let a = c.tick(&log).unwrap();
        resent += sends(&a)
            .iter()
            .filter(|(to, m)| *to == 1 && matches!(m, Message::FollowerInfo { .. }))
            .count();
    }
    assert!(
        resent >= 1,
        "FOLLOWERINFO must be re-sent while LEADERINFO is missing"
    );
    c.step(&log, 1, Message::LeaderInfo { epoch: 1 }).unwrap();
    for _ in 0..Config::default().notification_resend_ticks * 2 {
        let a = c.tick(&log).unwrap();
        assert!(!sends(&a)
            .iter()
            .any(|(_, m)| matches!(m, Message::FollowerInfo { .. })));
    }
}

#[test]
fn follower_looks_for_a_new_leader_at_once_when_its_leader_leaves() {
    let mut log = MemLog::new();
    let mut c = synced_follower(&mut log);
    // A member that is not its leader leaving changes nothing.
    assert!(c.leader_left(3).is_empty());
    assert_eq!(c.role(), Role::Following);
    c.tick(&log).unwrap();
    let a = c.leader_left(1);
    assert_eq!(
        a[0],
        Action::RoleChanged {
            role: Role::Looking,
            leader: None,
            epoch: 0,
            serving: false
        }
    );
    assert_eq!(c.role(), Role::Looking);
    // It votes right away, without waiting for an election timeout.
    assert!(sends(&a)
        .iter()
        .any(|(_, m)| matches!(m, Message::Notification { .. })));
}

/// Regression (issue 9, problem 3): a follower waiting for a large snapshot
/// heard nothing from its leader and gave up after its sync or silence
/// timeout, so a big SNAP never finished. Snapshot progress now counts as
/// hearing from the leader; without progress the timeouts still fire.
#[test]
fn follower_awaiting_a_snapshot_stays_while_it_progresses_and_leaves_without() {
    let log = MemLog::new();
    let mut c = follower_of_1(2, 0, 0, &log);
    c.step(&log, 1, Message::LeaderInfo { epoch: 1 }).unwrap();
    c.step(&log, 1, Message::Snap { epoch: 1 }).unwrap();
    assert_eq!(c.expects_snapshot_from(), Some(1));
    let cfg = Config::default();
    let long = cfg.sync_timeout_ticks * 5;
    for _ in 0..long {
        // Progress from anyone but the leader does not count.
        c.snapshot_progress(3);
        c.snapshot_progress(1);
        let a = c.tick(&log).unwrap();
        assert!(
            a.is_empty(),
            "follower left during a progressing snapshot: {a:?}"
        );
    }
    assert_eq!(c.expects_snapshot_from(), Some(1));
    // Installed: the rest of the sync gets a fresh sync timeout.
    c.snapshot_installed(z(1, 7));
    assert_eq!(c.expects_snapshot_from(), None);
    for _ in 0..cfg.election_timeout_ticks {
        assert!(c.tick(&log).unwrap().is_empty());
    }
    // Without progress (and no leader traffic) it gives up.
    let mut left = false;
    for _ in 0..=cfg.sync_timeout_ticks {
        let a = c.tick(&log).unwrap();
        if a.iter().any(|x| {
            matches!(
                x,
                Action::RoleChanged {
                    role: Role::Looking,
                    ..
                }
            )
        }) {
            left = true;
            break;
        }
    }
    assert!(left, "a follower with no progress must return to election");

    // Progress reported by a member it does not await a snapshot from is ignored.
    let mut c = follower_of_1(2, 0, 0, &log);
    c.step(&log, 1, Message::LeaderInfo { epoch: 1 }).unwrap();
    c.step(&log, 1, Message::Snap { epoch: 1 }).unwrap();
    let mut left = false;
    for _ in 0..=cfg.sync_timeout_ticks + 2 * cfg.election_timeout_ticks {
        c.snapshot_progress(3);
        if c.tick(&log).unwrap().iter().any(|x| {
            matches!(
                x,
                Action::RoleChanged {
                    role: Role::Looking,
                    ..
                }
            )
        }) {
            left = true;
            break;
        }
    }
    assert!(left, "progress from a non-leader kept the follower waiting");
}

/// Regression (issue 9, problem 3): a leader that needs a snapshot follower
/// for its first quorum gave up after `sync_timeout_ticks` however the
/// transfer went. Progress of the transfer now restarts its sync deadline.
#[test]
fn unestablished_leader_waits_for_a_progressing_snapshot_follower_and_not_for_a_silent_one() {
    let cfg = Config::default();
    for progress in [true, false] {
        let mut log = MemLog::new();
        log.append(&[entry(1, 1), entry(1, 2), entry(1, 3)])
            .unwrap();
        log.compact(z(1, 2));
        let (mut c, _) = leader_with_info(&log, 1, 1, 1, Zxid::ZERO);
        let a = c
            .step(
                &log,
                2,
                Message::AckEpoch {
                    epoch: 2,
                    current_epoch: 0,
                    last_zxid: Zxid::ZERO,
                    fresh: true,
                },
            )
            .unwrap();
        assert!(
            a.contains(&Action::SendSnapshot { to: 2 }),
            "expected SNAP: {a:?}"
        );
        let mut stepped_down = false;
        for _ in 0..cfg.sync_timeout_ticks * 3 {
            if progress {
                c.snapshot_progress(2);
            }
            c.tick(&log).unwrap();
            if c.role() != Role::Leading {
                stepped_down = true;
                break;
            }
        }
        assert_eq!(
            stepped_down, !progress,
            "progress={progress}: the leader's sync deadline ignored the snapshot transfer"
        );
    }
}

/// Regression (found by the SNAP catch-up test, issue 9): a follower that
/// rejoined the established leader, having accepted that leader's own epoch
/// before (any restart or timeout), made the leader step down, so every
/// rejoining follower cost the ensemble an election. It now rejoins.
#[test]
fn established_leader_keeps_leading_when_a_follower_of_its_own_epoch_rejoins() {
    let log = MemLog::new();
    let (mut c, _) = leader_with_info(&log, 1, 1, 1, Zxid::ZERO);
    c.step(
        &log,
        2,
        Message::AckEpoch {
            epoch: 2,
            current_epoch: 1,
            last_zxid: Zxid::ZERO,
            fresh: true,
        },
    )
    .unwrap();
    c.step(
        &log,
        2,
        Message::AckNewLeader {
            epoch: 2,
            zxid: Zxid::ZERO,
        },
    )
    .unwrap();
    assert!(c.serving(), "the leader is established");
    // Member 3 accepted epoch 2 earlier (e.g. it restarted): it rejoins.
    let a = c
        .step(
            &log,
            3,
            Message::FollowerInfo {
                accepted_epoch: 2,
                last_zxid: Zxid::ZERO,
            },
        )
        .unwrap();
    assert_eq!(
        a,
        vec![Action::Send {
            to: 3,
            msg: Message::LeaderInfo { epoch: 2 }
        }]
    );
    assert!(c.serving());
    // A promise above our epoch still makes us step down.
    let a = c
        .step(
            &log,
            3,
            Message::FollowerInfo {
                accepted_epoch: 3,
                last_zxid: Zxid::ZERO,
            },
        )
        .unwrap();
    assert!(matches!(
        a[0],
        Action::RoleChanged {
            role: Role::Looking,
            ..
        }
    ));
}

fn big_entry(c: u32, bytes: usize) -> Entry {
    Entry {
        zxid: z(1, c),
        data: Bytes::from(vec![c as u8; bytes]),
    }
}

/// Issue 9, problem 11: DIFF messages were bounded by entry count only, so
/// a DIFF of large entries made one message larger than a peer frame; the
/// link reset and the same DIFF was sent again forever.
#[test]
fn diff_messages_are_bounded_in_bytes_and_carry_every_entry_once() {
    let mut log = MemLog::new();
    let entries: Vec<Entry> = (1..=10).map(|c| big_entry(c, 1000)).collect();
    log.append(&entries).unwrap();
    let cfg = Config {
        max_batch_bytes: 2500,
        max_sync_batch_bytes: 2500,
        ..Config::default()
    };
    let (mut c, _) = leader_with_info_cfg(&log, cfg, 1, 1, 1, Zxid::ZERO);
    let a = c
        .step(
            &log,
            2,
            Message::AckEpoch {
                epoch: 2,
                current_epoch: 0,
                last_zxid: Zxid::ZERO,
                fresh: true,
            },
        )
        .unwrap();
    let mut sent = Vec::new();
    let mut prev = Zxid::ZERO;
    let mut diffs = 0;
    for (to, msg) in sends(&a) {
        assert_eq!(to, 2);
        if let Message::Diff {
            prev: p, entries, ..
        } = msg
        {
            diffs += 1;
            let bytes: usize = entries.iter().map(Entry::wire_bytes).sum();
            assert!(bytes <= 2500, "a DIFF message of {bytes} bytes");
            assert_eq!(p, prev, "DIFF messages chain");
            prev = entries.last().unwrap().zxid;
            sent.extend(entries);
        }
    }
    assert_eq!(sent, entries, "every entry once, in order");
    assert_eq!(diffs, 5, "two 1016-byte entries per 2500-byte message");
}

/// An entry larger than `max_sync_batch_bytes` still travels (alone).
#[test]
fn a_diff_entry_larger_than_the_byte_bound_goes_alone() {
    let mut log = MemLog::new();
    let entries = vec![big_entry(1, 10), big_entry(2, 5000), big_entry(3, 10)];
    log.append(&entries).unwrap();
    let cfg = Config {
        max_batch_bytes: 1000,
        max_sync_batch_bytes: 1000,
        ..Config::default()
    };
    let (mut c, _) = leader_with_info_cfg(&log, cfg, 1, 1, 1, Zxid::ZERO);
    let a = c
        .step(
            &log,
            2,
            Message::AckEpoch {
                epoch: 2,
                current_epoch: 0,
                last_zxid: Zxid::ZERO,
                fresh: true,
            },
        )
        .unwrap();
    let diffs: Vec<Vec<Zxid>> = sends(&a)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Diff { entries, .. } => Some(entries.iter().map(|e| e.zxid).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(diffs, vec![vec![z(1, 1)], vec![z(1, 2)], vec![z(1, 3)]]);
}

/// A DIFF larger than `max_diff_bytes` becomes a SNAP (when a snapshot
/// would not move the follower back); otherwise it is sent whole.
#[test]
fn a_diff_over_max_diff_bytes_becomes_a_snap_or_goes_whole() {
    let mut log = MemLog::new();
    let entries: Vec<Entry> = (1..=10).map(|c| big_entry(c, 1000)).collect();
    log.append(&entries).unwrap();
    let mut c = core_with(
        1,
        3,
        1,
        1,
        &log,
        Config {
            max_batch_bytes: 2000,
            max_sync_batch_bytes: 2000,
            max_diff_bytes: 5000,
            ..Config::default()
        },
    );
    c.commit_emitted = z(1, 10);
    // 6 entries missing: 6,096 bytes > 5,000.
    assert_eq!(c.plan_sync(&log, z(1, 4)).unwrap(), SyncPlan::Snap);
    // 4 entries missing: 4,064 bytes, a DIFF.
    assert_eq!(
        c.plan_sync(&log, z(1, 6)).unwrap(),
        SyncPlan::Diff {
            trunc: None,
            start: z(1, 6),
            entries: entries[6..].to_vec()
        }
    );
    // A snapshot (at 1:2) would move a follower at 1:4 back: a whole DIFF.
    c.commit_emitted = z(1, 2);
    assert_eq!(
        c.plan_sync(&log, z(1, 4)).unwrap(),
        SyncPlan::Diff {
            trunc: None,
            start: z(1, 4),
            entries: entries[4..].to_vec()
        }
    );
}

/// Issue 9, problems 10 and 11: a batch over `max_batch_entries` or
/// `max_batch_bytes` is refused (the driver splits its queue to fit).
#[test]
fn propose_refuses_batches_over_the_entry_or_byte_bound() {
    let log = MemLog::new();
    let mut c = core_with(
        1,
        1,
        0,
        0,
        &log,
        Config {
            max_batch_entries: 3,
            max_batch_bytes: 100,
            max_sync_batch_bytes: 100,
            ..Config::default()
        },
    );
    c.tick(&log).unwrap();
    assert!(c.serving());
    assert_eq!(
        c.propose(&log, vec![Bytes::new(); 4]).unwrap_err(),
        ZabError::BadBatch { len: 4, max: 3 }
    );
    assert_eq!(
        c.propose(&log, vec![Bytes::from(vec![0u8; 50]); 2])
            .unwrap_err(),
        ZabError::BatchTooLarge {
            bytes: 132,
            max: 100
        }
    );
    assert!(c.propose(&log, vec![Bytes::from(vec![0u8; 84])]).is_ok());
}
