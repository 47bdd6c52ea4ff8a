//! Behaviour of the RocksDB store, op by op: stats, sequential names, multi,
//! sessions and ephemerals, reaping, the log, restarts, checkpoints and
//! corrupt records.

use bytes::Bytes;
use keeper_store::*;
use keeper_zab::Zxid;
use std::path::Path;

/// A store in a temp dir that stamps zxids 1, 2, 3, ... and times given by the test.
struct Harness {
    dir: tempfile::TempDir,
    store: Option<Store>,
    next: u64,
}

fn config() -> StoreConfig {
    StoreConfig {
        max_data_bytes: 64,
        max_path_bytes: 128,
        max_children_page: 5,
        sync_log: false,
        // About one log entry per segment: compaction (whole segments) is
        // then exact, which the log tests below rely on.
        log_segment_bytes: 64,
        ..StoreConfig::default()
    }
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), config()).unwrap();
        Harness {
            dir,
            store: Some(store),
            next: 1,
        }
    }
    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }
    fn reopen(&mut self) {
        self.store = None;
        self.store = Some(Store::open(self.dir.path(), config()).unwrap());
    }
    fn txn_at(&mut self, time_ms: u64, txn: Txn) -> Applied {
        let zxid = Zxid(self.next);
        self.next += 1;
        let applied = self.store().apply(zxid, &Entry { time_ms, txn }).unwrap();
        assert_eq!(self.store().last_applied(), zxid);
        applied
    }
    fn op_at(&mut self, time_ms: u64, op: Op) -> Result<OpResult, TxnError> {
        match self.txn_at(time_ms, Txn::Op(op)).outcome {
            TxnOutcome::Op(r) => r,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    fn op(&mut self, op: Op) -> Result<OpResult, TxnError> {
        self.op_at(1000, op)
    }
    fn create(&mut self, path: &str, mode: NodeMode) -> Result<OpResult, TxnError> {
        self.op(create(path, mode, 0, None))
    }
    fn stat(&self, path: &str) -> Stat {
        self.store().get(path).unwrap().unwrap().1
    }
    fn session(&mut self) -> SessionId {
        match self
            .txn_at(1000, Txn::CreateSession { timeout_ms: 5000 })
            .outcome
        {
            TxnOutcome::SessionCreated { id, .. } => id,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    fn names(&self, path: &str) -> Vec<String> {
        self.store()
            .children(path, None, 100)
            .unwrap()
            .unwrap()
            .children
    }
}

fn create(path: &str, mode: NodeMode, session: SessionId, ttl_ms: Option<u64>) -> Op {
    Op::Create {
        path: path.into(),
        data: Bytes::from_static(b"d"),
        mode,
        session,
        ttl_ms,
    }
}

fn set(path: &str, data: &'static [u8], version: i32) -> Op {
    Op::Set {
        path: path.into(),
        data: Bytes::from_static(data),
        version,
    }
}

fn created_path(r: Result<OpResult, TxnError>) -> String {
    match r {
        Ok(OpResult::Created { path, .. }) => path,
        other => panic!("expected Created, got {other:?}"),
    }
}

#[test]
fn fresh_store_has_only_the_root() {
    let h = Harness::new();
    let (data, stat) = h.store().get("/").unwrap().unwrap();
    assert!(data.is_empty());
    assert_eq!(stat, Stat::default());
    assert_eq!(h.store().last_applied(), Zxid(0));
    assert_eq!(h.store().last_logged(), Zxid(0));
    assert_eq!(h.store().first_logged(), None);
    assert!(h.names("/").is_empty());
    assert_eq!(h.store().get("/nope").unwrap(), None);
    assert_eq!(h.store().get("bad//").unwrap(), None);
}

#[test]
fn create_sets_every_stat_field_and_moves_the_parent() {
    let mut h = Harness::new();
    let r = h.op_at(
        777,
        Op::Create {
            path: "/a".into(),
            data: Bytes::from_static(b"\0\xffbin"),
            mode: NodeMode::Persistent,
            session: 0,
            ttl_ms: None,
        },
    );
    let expected = Stat {
        czxid: 1,
        mzxid: 1,
        pzxid: 1,
        ctime: 777,
        mtime: 777,
        version: 0,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 5,
        num_children: 0,
    };
    assert_eq!(
        r,
        Ok(OpResult::Created {
            path: "/a".into(),
            stat: expected
        })
    );
    let (data, stat) = h.store().get("/a").unwrap().unwrap();
    assert_eq!(&data[..], b"\0\xffbin");
    assert_eq!(stat, expected);
    let root = h.stat("/");
    assert_eq!(
        (
            root.cversion,
            root.pzxid,
            root.num_children,
            root.mzxid,
            root.version
        ),
        (1, 1, 1, 0, 0)
    );
}

#[test]
fn set_moves_mzxid_mtime_version_and_length_only() {
    let mut h = Harness::new();
    h.create("/a", NodeMode::Persistent).unwrap();
    let before = h.stat("/a");
    let r = h.op_at(2000, set("/a", b"hello", 0)).unwrap();
    let after = h.stat("/a");
    assert_eq!(
        r,
        OpResult::Set {
            path: "/a".into(),
            stat: after
        }
    );
    assert_eq!(
        after,
        Stat {
            mzxid: 2,
            mtime: 2000,
            version: 1,
            data_length: 5,
            ..before
        }
    );
    assert_eq!(&h.store().get("/a").unwrap().unwrap().0[..], b"hello");
    // Conditional set: wrong version fails and changes nothing; -1 is any.
    assert_eq!(
        h.op(set("/a", b"x", 0)),
        Err(TxnError::BadVersion {
            path: "/a".into(),
            expected: 0,
            actual: 1
        })
    );
    assert_eq!(h.stat("/a"), after);
    h.op(set("/a", b"", -1)).unwrap();
    assert_eq!(h.stat("/a").version, 2);
    assert_eq!(h.stat("/a").data_length, 0);
    assert_eq!(
        h.op(set("/zz", b"", -1)),
        Err(TxnError::NoNode { path: "/zz".into() })
    );
    assert!(matches!(
        h.op(set("/a", &[7u8; 65], -1)),
        Err(TxnError::TooLarge {
            size: 65,
            limit: 64
        })
    ));
    h.op(set("/a", &[7u8; 64], -1)).unwrap();
    h.op(set("/", b"root data", -1)).unwrap();
    assert_eq!(h.stat("/").version, 1);
}

#[test]
fn delete_moves_parent_cversion_and_pzxid_and_checks_version_and_children() {
    let mut h = Harness::new();
    h.create("/a", NodeMode::Persistent).unwrap();
    h.create("/a/b", NodeMode::Persistent).unwrap();
    assert_eq!(
        h.op(Op::Delete {
            path: "/a".into(),
            version: -1
        }),
        Err(TxnError::NotEmpty { path: "/a".into() })
    );
    assert_eq!(
        h.op(Op::Delete {
            path: "/a/b".into(),
            version: 3
        }),
        Err(TxnError::BadVersion {
            path: "/a/b".into(),
            expected: 3,
            actual: 0
        })
    );
    let a = h.stat("/a");
    let r = h.txn_at(
        5,
        Txn::Op(Op::Delete {
            path: "/a/b".into(),
            version: 0,
        }),
    );
    assert_eq!(
        r.outcome,
        TxnOutcome::Op(Ok(OpResult::Deleted {
            path: "/a/b".into()
        }))
    );
    assert_eq!(
        r.events
            .iter()
            .map(|e| (e.path.as_str(), e.kind))
            .collect::<Vec<_>>(),
        vec![
            ("/a/b", ChangeKind::Deleted),
            ("/a", ChangeKind::ChildrenChanged)
        ]
    );
    assert!(r.events.iter().all(|e| e.zxid == r.zxid));
    let a2 = h.stat("/a");
    assert_eq!(
        a2,
        Stat {
            cversion: 2,
            pzxid: r.zxid.0,
            num_children: 0,
            ..a
        }
    );
    assert_eq!(
        h.op(Op::Delete {
            path: "/a/b".into(),
            version: -1
        }),
        Err(TxnError::NoNode {
            path: "/a/b".into()
        })
    );
    assert!(matches!(
        h.op(Op::Delete {
            path: "/".into(),
            version: -1
        }),
        Err(TxnError::BadArguments { .. })
    ));
    h.op(Op::Delete {
        path: "/a".into(),
        version: -1,
    })
    .unwrap();
    assert!(h.names("/").is_empty());
}

#[test]
fn create_errors_follow_zookeeper() {
    let mut h = Harness::new();
    assert_eq!(
        h.create("/", NodeMode::Persistent),
        Err(TxnError::NodeExists { path: "/".into() })
    );
    assert_eq!(
        h.create("/a/b", NodeMode::Persistent),
        Err(TxnError::NoNode { path: "/a".into() })
    );
    assert!(matches!(
        h.create("/a/", NodeMode::Persistent),
        Err(TxnError::InvalidPath { .. })
    ));
    assert!(matches!(
        h.create("/a/../b", NodeMode::Persistent),
        Err(TxnError::InvalidPath { .. })
    ));
    h.create("/a", NodeMode::Persistent).unwrap();
    assert_eq!(
        h.create("/a", NodeMode::Persistent),
        Err(TxnError::NodeExists { path: "/a".into() })
    );
    // ttl arguments
    assert!(matches!(
        h.op(create("/t", NodeMode::Ttl, 0, None)),
        Err(TxnError::BadArguments { .. })
    ));
    assert!(matches!(
        h.op(create("/t", NodeMode::Ttl, 0, Some(0))),
        Err(TxnError::BadArguments { .. })
    ));
    assert!(matches!(
        h.op(create("/t", NodeMode::Persistent, 0, Some(5))),
        Err(TxnError::BadArguments { .. })
    ));
    assert!(matches!(
        h.op(create("/t", NodeMode::Ephemeral, 0, None)),
        Err(TxnError::BadArguments { .. })
    ));
    assert_eq!(
        h.op(create("/t", NodeMode::Ephemeral, 99, None)),
        Err(TxnError::SessionExpired { id: 99 })
    );
    let big = Op::Create {
        path: "/big".into(),
        data: Bytes::from(vec![0u8; 65]),
        mode: NodeMode::Persistent,
        session: 0,
        ttl_ms: None,
    };
    assert!(matches!(h.op(big), Err(TxnError::TooLarge { .. })));
    // children of ephemerals
    let s = h.session();
    h.op(create("/e", NodeMode::Ephemeral, s, None)).unwrap();
    assert_eq!(
        h.create("/e/x", NodeMode::Persistent),
        Err(TxnError::NoChildrenForEphemerals {
            path: "/e/x".into()
        })
    );
    assert_eq!(h.stat("/e").ephemeral_owner, s);
    // nothing of the failed creates exists
    assert_eq!(h.names("/"), vec!["a", "e"]);
}

#[test]
fn sequential_names_use_the_parents_cversion() {
    let mut h = Harness::new();
    h.create("/q", NodeMode::Persistent).unwrap();
    assert_eq!(
        created_path(h.create("/q/n-", NodeMode::PersistentSequential)),
        "/q/n-0000000000"
    );
    assert_eq!(
        created_path(h.create("/q/n-", NodeMode::PersistentSequential)),
        "/q/n-0000000001"
    );
    h.create("/q/plain", NodeMode::Persistent).unwrap(); // cversion 3
    h.op(Op::Delete {
        path: "/q/plain".into(),
        version: -1,
    })
    .unwrap(); // cversion 4
    assert_eq!(
        created_path(h.create("/q/", NodeMode::PersistentSequential)),
        "/q/0000000004"
    );
    let s = h.session();
    assert_eq!(
        created_path(h.op(create("/q/e", NodeMode::EphemeralSequential, s, None))),
        "/q/e0000000005"
    );
    assert_eq!(
        created_path(h.op(create("/q/t", NodeMode::TtlSequential, 0, Some(10)))),
        "/q/t0000000006"
    );
    assert_eq!(
        created_path(h.create("/r", NodeMode::PersistentSequential)),
        "/r0000000001"
    );
    // An existing node at the sequential name is NodeExists.
    h.create("/q/x0000000008", NodeMode::Persistent).unwrap(); // cversion 7 -> 8
    assert_eq!(
        h.create("/q/x", NodeMode::PersistentSequential),
        Err(TxnError::NodeExists {
            path: "/q/x0000000008".into()
        })
    );
}

#[test]
fn children_are_paginated_bytewise_and_never_include_grandchildren() {
    let mut h = Harness::new();
    h.create("/p", NodeMode::Persistent).unwrap();
    h.create("/pa", NodeMode::Persistent).unwrap();
    let names = ["b", "a", "B", "ab", "a b", "é", "z", "aa"];
    for n in names {
        h.create(&format!("/p/{n}"), NodeMode::Persistent).unwrap();
    }
    h.create("/p/a/deep", NodeMode::Persistent).unwrap();
    let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    let store = h.store();
    let page = store.children("/p", None, 3).unwrap().unwrap();
    assert_eq!(page.children, sorted[..3]);
    assert!(page.more);
    assert_eq!(page.stat, h.stat("/p"));
    let page = store
        .children("/p", Some(&sorted[2]), 100)
        .unwrap()
        .unwrap();
    assert_eq!(page.children, sorted[3..8]); // capped by max_children_page = 5
    assert!(!page.more);
    let page = store.children("/p", Some("ÿ"), 3).unwrap().unwrap();
    assert!(page.children.is_empty() && !page.more);
    let page = store.children("/p", Some("a"), 1).unwrap().unwrap();
    assert_eq!(page.children, vec!["a b"]);
    assert_eq!(
        store.children("/", None, 10).unwrap().unwrap().children,
        vec!["p", "pa"]
    );
    assert_eq!(
        store.children("/p/a", None, 10).unwrap().unwrap().children,
        vec!["deep"]
    );
    assert_eq!(store.children("/nope", None, 10).unwrap(), None);
    let page = store.children("/p", None, 0).unwrap().unwrap();
    assert!(page.children.is_empty() && page.more);
}

#[test]
fn multi_sees_earlier_ops_and_a_failure_applies_nothing() {
    let mut h = Harness::new();
    h.create("/m", NodeMode::Persistent).unwrap();
    let digest = h.store().tree_digest().unwrap();
    let stat_m = h.stat("/m");
    let failing = vec![
        create("/m/a", NodeMode::Persistent, 0, None),
        set("/m/a", b"x", 0),
        Op::Delete {
            path: "/m".into(),
            version: -1,
        }, // NotEmpty: /m/a exists within the multi
    ];
    let r = h.txn_at(10, Txn::Multi(failing));
    assert_eq!(
        r.outcome,
        TxnOutcome::Multi(Err(MultiError {
            index: 2,
            error: TxnError::NotEmpty { path: "/m".into() }
        }))
    );
    assert!(r.events.is_empty());
    assert_eq!(h.store().tree_digest().unwrap(), digest);
    assert_eq!(h.stat("/m"), stat_m);
    assert_eq!(h.store().get("/m/a").unwrap(), None);
    assert_eq!(
        h.store().last_applied(),
        r.zxid,
        "a failed multi still consumes its zxid"
    );

    let ok = vec![
        create("/m/a", NodeMode::Persistent, 0, None),
        set("/m/a", b"x", 0),
        Op::Check {
            path: "/m/a".into(),
            version: 1,
        },
        create("/m/s-", NodeMode::PersistentSequential, 0, None),
        Op::Delete {
            path: "/m/a".into(),
            version: 1,
        },
        create("/m/a", NodeMode::Persistent, 0, None),
    ];
    let r = h.txn_at(20, Txn::Multi(ok));
    let z = r.zxid.0;
    let TxnOutcome::Multi(Ok(results)) = r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(results.len(), 6);
    assert_eq!(
        results[2],
        OpResult::Checked {
            path: "/m/a".into()
        }
    );
    assert!(matches!(&results[3], OpResult::Created { path, .. } if path == "/m/s-0000000001"));
    assert_eq!(
        results[4],
        OpResult::Deleted {
            path: "/m/a".into()
        }
    );
    let m = h.stat("/m");
    assert_eq!((m.cversion, m.pzxid, m.num_children), (4, z, 2));
    let a = h.stat("/m/a");
    assert_eq!((a.czxid, a.version, a.data_length), (z, 0, 1));
    let kinds: Vec<_> = r.events.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("/m/a", ChangeKind::Created),
            ("/m", ChangeKind::ChildrenChanged),
            ("/m/a", ChangeKind::DataChanged),
            ("/m/s-0000000001", ChangeKind::Created),
            ("/m", ChangeKind::ChildrenChanged),
            ("/m/a", ChangeKind::Deleted),
            ("/m", ChangeKind::ChildrenChanged),
            ("/m/a", ChangeKind::Created),
            ("/m", ChangeKind::ChildrenChanged),
        ]
    );
    let r = h.txn_at(
        30,
        Txn::Multi(vec![Op::Check {
            path: "/m/a".into(),
            version: 5,
        }]),
    );
    assert!(matches!(
        r.outcome,
        TxnOutcome::Multi(Err(MultiError {
            index: 0,
            error: TxnError::BadVersion { .. }
        }))
    ));
    assert_eq!(
        h.txn_at(30, Txn::Multi(vec![])).outcome,
        TxnOutcome::Multi(Ok(vec![]))
    );
}

#[test]
fn closing_a_session_deletes_its_ephemerals_in_the_same_entry() {
    let mut h = Harness::new();
    let s1 = h.session();
    let s2 = h.session();
    assert_eq!(s1, 1);
    assert_eq!(s2, 2);
    h.create("/d", NodeMode::Persistent).unwrap();
    h.op(create("/d/e1", NodeMode::Ephemeral, s1, None))
        .unwrap();
    h.op(create("/d/e2", NodeMode::EphemeralSequential, s1, None))
        .unwrap();
    h.op(create("/x", NodeMode::Ephemeral, s2, None)).unwrap();
    h.op(Op::Delete {
        path: "/d/e1".into(),
        version: -1,
    })
    .unwrap();
    h.op(create("/d/e1", NodeMode::Ephemeral, s2, None))
        .unwrap(); // re-created by s2
    assert_eq!(
        h.store().sessions().unwrap(),
        vec![
            SessionInfo {
                id: s1,
                timeout_ms: 5000
            },
            SessionInfo {
                id: s2,
                timeout_ms: 5000
            },
        ]
    );
    h.reopen();
    let r = h.txn_at(50, Txn::CloseSession { id: s1 });
    assert_eq!(
        r.outcome,
        TxnOutcome::SessionClosed(Ok(vec!["/d/e20000000001".into()]))
    );
    assert_eq!(r.events.len(), 2);
    assert_eq!(h.names("/d"), vec!["e1"]);
    assert_eq!(
        h.store().sessions().unwrap(),
        vec![SessionInfo {
            id: s2,
            timeout_ms: 5000
        }]
    );
    assert_eq!(
        h.txn_at(50, Txn::CloseSession { id: s1 }).outcome,
        TxnOutcome::SessionClosed(Err(TxnError::SessionExpired { id: s1 }))
    );
    assert_eq!(
        h.op(create("/y", NodeMode::Ephemeral, s1, None)),
        Err(TxnError::SessionExpired { id: s1 })
    );
    let r = h.txn_at(60, Txn::CloseSession { id: s2 });
    assert_eq!(
        r.outcome,
        TxnOutcome::SessionClosed(Ok(vec!["/d/e1".into(), "/x".into()]))
    );
    assert!(h.names("/d").is_empty());
    assert_eq!(h.names("/"), vec!["d"]);
    assert!(h.store().sessions().unwrap().is_empty());
}

#[test]
fn containers_are_reaped_once_their_last_child_goes() {
    let mut h = Harness::new();
    h.create("/c", NodeMode::Container).unwrap();
    assert!(
        h.store().reap_candidates(u64::MAX, 10).unwrap().is_empty(),
        "never had a child"
    );
    h.create("/c/x", NodeMode::Persistent).unwrap();
    assert!(
        h.store().reap_candidates(u64::MAX, 10).unwrap().is_empty(),
        "has a child"
    );
    h.op(Op::Delete {
        path: "/c/x".into(),
        version: -1,
    })
    .unwrap();
    let cands = h.store().reap_candidates(0, 10).unwrap();
    assert_eq!(
        cands,
        vec![ReapCandidate {
            path: "/c".into(),
            czxid: 1
        }]
    );
    // A child comes back before the reap is applied: the reap is a no-op.
    h.create("/c/y", NodeMode::Persistent).unwrap();
    let r = h.txn_at(
        100,
        Txn::Reap {
            candidates: cands.clone(),
        },
    );
    assert_eq!(r.outcome, TxnOutcome::Reaped { paths: vec![] });
    h.op(Op::Delete {
        path: "/c/y".into(),
        version: -1,
    })
    .unwrap();
    h.reopen();
    let root = h.stat("/");
    let r = h.txn_at(100, Txn::Reap { candidates: cands });
    assert_eq!(
        r.outcome,
        TxnOutcome::Reaped {
            paths: vec!["/c".into()]
        }
    );
    assert_eq!(r.events.len(), 2);
    assert_eq!(h.store().get("/c").unwrap(), None);
    let root2 = h.stat("/");
    assert_eq!((root2.cversion, root2.pzxid), (root.cversion + 1, r.zxid.0));
    assert!(h.store().reap_candidates(u64::MAX, 10).unwrap().is_empty());
}

#[test]
fn ttl_nodes_are_reaped_after_ttl_without_change_or_children() {
    let mut h = Harness::new();
    let r = h
        .op_at(1000, create("/t", NodeMode::Ttl, 0, Some(100)))
        .unwrap();
    let OpResult::Created { stat, .. } = r else {
        panic!()
    };
    assert!(h.store().reap_candidates(1099, 10).unwrap().is_empty());
    assert_eq!(
        h.store().reap_candidates(1100, 10).unwrap(),
        vec![ReapCandidate {
            path: "/t".into(),
            czxid: stat.czxid
        }]
    );
    // A set moves mtime, so the due time moves.
    h.op_at(1050, set("/t", b"v", -1)).unwrap();
    assert!(h.store().reap_candidates(1100, 10).unwrap().is_empty());
    let cands = h.store().reap_candidates(1150, 10).unwrap();
    assert_eq!(cands.len(), 1);
    // A reap applied too early (entry time) re-checks and does nothing.
    assert_eq!(
        h.txn_at(
            1149,
            Txn::Reap {
                candidates: cands.clone()
            }
        )
        .outcome,
        TxnOutcome::Reaped { paths: vec![] }
    );
    // A child keeps it alive.
    h.op_at(1150, create("/t/c", NodeMode::Persistent, 0, None))
        .unwrap();
    assert!(h.store().reap_candidates(u64::MAX, 10).unwrap().is_empty());
    assert_eq!(
        h.txn_at(
            5000,
            Txn::Reap {
                candidates: cands.clone()
            }
        )
        .outcome,
        TxnOutcome::Reaped { paths: vec![] }
    );
    h.op_at(
        1200,
        Op::Delete {
            path: "/t/c".into(),
            version: -1,
        },
    )
    .unwrap();
    // A re-created node (different czxid) is not reaped by an old candidate.
    h.op(Op::Delete {
        path: "/t".into(),
        version: -1,
    })
    .unwrap();
    h.op_at(1000, create("/t", NodeMode::Ttl, 0, Some(100)))
        .unwrap();
    assert_eq!(
        h.txn_at(5000, Txn::Reap { candidates: cands }).outcome,
        TxnOutcome::Reaped { paths: vec![] }
    );
    let cands = h.store().reap_candidates(5000, 10).unwrap();
    assert_eq!(
        h.txn_at(5000, Txn::Reap { candidates: cands }).outcome,
        TxnOutcome::Reaped {
            paths: vec!["/t".into()]
        }
    );
    // limit is honoured, earliest due first
    for (i, ttl) in [(1, 300u64), (2, 100), (3, 200)] {
        h.op_at(0, create(&format!("/u{i}"), NodeMode::Ttl, 0, Some(ttl)))
            .unwrap();
    }
    let c = h.store().reap_candidates(1000, 2).unwrap();
    assert_eq!(
        c.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
        vec!["/u2", "/u3"]
    );
}

#[test]
fn state_survives_reopen() {
    let mut h = Harness::new();
    let s = h.session();
    h.create("/a", NodeMode::Persistent).unwrap();
    h.op(create("/a/e", NodeMode::Ephemeral, s, None)).unwrap();
    h.op(set("/a", b"zz", -1)).unwrap();
    h.store()
        .set_zab_meta(ZabMeta {
            accepted_epoch: 3,
            current_epoch: 2,
        })
        .unwrap();
    let digest = h.store().tree_digest().unwrap();
    let last = h.store().last_applied();
    h.reopen();
    assert_eq!(h.store().tree_digest().unwrap(), digest);
    assert_eq!(h.store().last_applied(), last);
    assert_eq!(
        h.store().zab_meta(),
        ZabMeta {
            accepted_epoch: 3,
            current_epoch: 2
        }
    );
    assert_eq!(h.names("/a"), vec!["e"]);
    // The ephemeral index survived too.
    assert_eq!(
        h.txn_at(1, Txn::CloseSession { id: s }).outcome,
        TxnOutcome::SessionClosed(Ok(vec!["/a/e".into()]))
    );
}

fn log_entries(range: std::ops::RangeInclusive<u64>) -> Vec<(Zxid, Vec<u8>)> {
    range
        .map(|z| {
            (
                Zxid(z),
                Entry {
                    time_ms: z,
                    txn: Txn::Noop,
                }
                .encode(),
            )
        })
        .collect()
}

#[test]
fn log_append_read_truncate_compact_across_reopen() {
    let mut h = Harness::new();
    h.store().append_log(&log_entries(1..=5)).unwrap();
    h.store().append_log(&log_entries(6..=10)).unwrap();
    h.store().append_log::<Vec<u8>>(&[]).unwrap();
    assert_eq!(h.store().last_logged(), Zxid(10));
    assert_eq!(h.store().first_logged(), Some(Zxid(1)));
    let read = h.store().read_log(Zxid(3), 4).unwrap();
    assert_eq!(read, log_entries(4..=7));
    for (z, bytes) in &read {
        assert_eq!(Entry::decode(bytes).unwrap().time_ms, z.0);
    }
    assert_eq!(h.store().read_log(Zxid(10), 4).unwrap(), vec![]);
    h.store().truncate_log_after(Zxid(7)).unwrap();
    assert_eq!(h.store().last_logged(), Zxid(7));
    h.reopen();
    assert_eq!(h.store().last_logged(), Zxid(7));
    assert_eq!(
        h.store().read_log(Zxid(0), 100).unwrap(),
        log_entries(1..=7)
    );
    h.store().append_log(&log_entries(8..=9)).unwrap();
    // Compaction never cuts above what is durably applied.
    assert_eq!(h.store().compact_log_before(Zxid(4)).unwrap(), Zxid(1));
    assert_eq!(h.store().first_logged(), Some(Zxid(1)));
    let noop = Entry {
        time_ms: 0,
        txn: Txn::Noop,
    };
    for z in 1..=9 {
        h.store().apply(Zxid(z), &noop).unwrap();
    }
    assert_eq!(h.store().compact_log_before(Zxid(4)).unwrap(), Zxid(1));
    assert_eq!(h.store().flush_tree().unwrap(), Zxid(9));
    assert_eq!(h.store().durable_applied(), Zxid(9));
    assert_eq!(h.store().compact_log_before(Zxid(4)).unwrap(), Zxid(4));
    assert_eq!(h.store().first_logged(), Some(Zxid(4)));
    assert_eq!(
        h.store().read_log(Zxid(0), 100).unwrap(),
        log_entries(4..=9)
    );
    h.store().compact_log_before(Zxid(100)).unwrap();
    assert_eq!(h.store().first_logged(), None);
    assert_eq!(
        h.store().last_logged(),
        Zxid(9),
        "last_logged survives compacting everything"
    );
    h.reopen();
    assert_eq!(h.store().last_logged(), Zxid(9));
    assert_eq!(h.store().first_logged(), None);
    h.store().append_log(&log_entries(10..=10)).unwrap();
    assert_eq!(
        h.store().read_log(Zxid(0), 100).unwrap(),
        log_entries(10..=10)
    );
    // Epoch boundaries: truncating inside a gap lands on the last kept entry.
    h.store()
        .append_log(&[(Zxid::new(1, 1), vec![1]), (Zxid::new(2, 1), vec![2])])
        .unwrap();
    h.store().truncate_log_after(Zxid::new(1, 5)).unwrap();
    assert_eq!(h.store().last_logged(), Zxid::new(1, 1));
}

#[test]
fn entries_round_trip_and_garbage_is_corrupt() {
    let e = Entry {
        time_ms: 42,
        txn: Txn::Multi(vec![
            create("/a", NodeMode::TtlSequential, 7, Some(9)),
            set("/a", b"\xff", 3),
        ]),
    };
    assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    assert!(matches!(
        Entry::decode(&[0xff; 9]),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        Entry::decode(&[]),
        Err(StoreError::Corrupt { .. })
    ));
}

/// Writes raw bytes into a column family of a closed store.
fn poke(dir: &Path, cf: &str, key: &[u8], value: &[u8]) {
    let names = [
        "log",
        "nodes",
        "sessions",
        "ephemerals",
        "reap",
        "meta",
        "changes",
    ];
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, names).unwrap();
    db.put_cf(db.cf_handle(cf).unwrap(), key, value).unwrap();
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let mut h = Harness::new();
    h.create("/a", NodeMode::Persistent).unwrap();
    h.store = None;
    poke(h.dir.path(), "sessions", b"short", b"x");
    poke(h.dir.path(), "reap", b"abc", b"x");
    let mut change_key = u64::MAX.to_be_bytes().to_vec();
    change_key.extend_from_slice(&[0, 0, 0, 0]);
    poke(h.dir.path(), "changes", &change_key, b"\xff\xff");
    h.reopen();
    let s = h.store();
    assert!(matches!(
        s.read_changes(keeper_zab::Zxid(u64::MAX - 1), 10),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(s.sessions(), Err(StoreError::Corrupt { .. })));
    assert!(matches!(
        s.reap_candidates(u64::MAX, 10),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(s.tree_digest(), Err(StoreError::Corrupt { .. })));
    h.store = None;
    poke(h.dir.path(), "log", b"bad", b"x");
    poke(h.dir.path(), "meta", b"last_applied", b"x");
    assert!(matches!(
        Store::open(h.dir.path(), config()),
        Err(StoreError::Corrupt { .. })
    ));
}

/// The tree is loaded into memory at open, so a corrupt znode record is
/// found there: the store refuses to open rather than serve a broken tree.
#[test]
fn a_corrupt_node_record_is_an_error_at_open() {
    let mut h = Harness::new();
    h.create("/a", NodeMode::Persistent).unwrap();
    h.store = None;
    poke(h.dir.path(), "nodes", b"\0a", b"\xff\xff\xff\xff");
    assert!(matches!(
        Store::open(h.dir.path(), config()),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn a_checkpoint_opens_and_installs_with_the_same_state() {
    let mut h = Harness::new();
    let s = h.session();
    h.create("/a", NodeMode::Persistent).unwrap();
    h.op(create("/a/e", NodeMode::Ephemeral, s, None)).unwrap();
    h.store().append_log(&log_entries(1..=3)).unwrap();
    let cp = tempfile::tempdir().unwrap();
    let cp_dir = cp.path().join("cp");
    let zxid = h.store().checkpoint(&cp_dir).unwrap();
    assert_eq!(zxid, h.store().last_applied());
    let digest = h.store().tree_digest().unwrap();
    h.create("/later", NodeMode::Persistent).unwrap();

    let target = tempfile::tempdir().unwrap();
    let data_dir = target.path().join("data");
    std::fs::create_dir_all(data_dir.join("junk")).unwrap();
    let installed = Store::install_checkpoint(&cp_dir, &data_dir, config()).unwrap();
    assert_eq!(installed.last_applied(), zxid);
    assert_eq!(installed.tree_digest().unwrap(), digest);
    assert_eq!(installed.last_logged(), Zxid(3));
    assert_eq!(installed.get("/later").unwrap(), None);
    let r = installed
        .apply(
            Zxid(zxid.0 + 1),
            &Entry {
                time_ms: 0,
                txn: Txn::CloseSession { id: s },
            },
        )
        .unwrap();
    assert_eq!(
        r.outcome,
        TxnOutcome::SessionClosed(Ok(vec!["/a/e".into()]))
    );
}

#[test]
fn store_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn readers_see_consistent_pages_while_the_applier_writes() {
    let dir = tempfile::tempdir().unwrap();
    let big_pages = StoreConfig {
        max_children_page: 10_000,
        ..config()
    };
    let store = std::sync::Arc::new(Store::open(dir.path(), big_pages).unwrap());
    let entry = |txn| Entry { time_ms: 0, txn };
    store
        .apply(
            Zxid(1),
            &entry(Txn::Op(create("/p", NodeMode::Persistent, 0, None))),
        )
        .unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for z in 2..300u64 {
                // Each entry adds two children (or removes one), atomically.
                let txn = if z % 3 == 0 {
                    Txn::Op(Op::Delete {
                        path: format!("/p/c{:04}", z - 1),
                        version: -1,
                    })
                } else {
                    Txn::Multi(vec![
                        create(&format!("/p/c{z:04}"), NodeMode::Persistent, 0, None),
                        create(&format!("/p/d{z:04}"), NodeMode::Persistent, 0, None),
                    ])
                };
                store.apply(Zxid(z), &entry(txn)).unwrap();
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut reads = 0;
    while !writer.is_finished() && std::time::Instant::now() < deadline {
        // The parent's stat and the listing come from one snapshot.
        let page = store.children("/p", None, 10_000).unwrap().unwrap();
        assert_eq!(page.children.len(), page.stat.num_children as usize);
        assert!(!page.more);
        reads += 1;
    }
    writer.join().unwrap();
    assert!(reads > 0);
    let last = store.children("/p", None, 10_000).unwrap().unwrap();
    assert_eq!(store.last_applied(), Zxid(299));
    assert_eq!(last.children.len(), 2 * 199 - 99);
}

/// Issue 9, problem 13: `/v1/cluster/digest` rescanned until no apply ran
/// during the scan, forever under a steady write load. `digest_at` reads the
/// digest and its zxid from one snapshot: every answer taken while another
/// thread applies is exactly the digest of the state at that zxid.
#[test]
fn digest_at_is_consistent_with_its_zxid_under_concurrent_applies() {
    let entries: Vec<Entry> = (0..400u64)
        .map(|i| {
            let path = format!("/k{}", i % 37);
            let txn = match i % 3 {
                0 => Txn::Op(create(&path, NodeMode::Persistent, 0, None)),
                1 => Txn::Op(Op::Set {
                    path,
                    data: Bytes::from(format!("v{i}")),
                    version: -1,
                }),
                _ => Txn::Op(Op::Delete { path, version: -1 }),
            };
            Entry { time_ms: i, txn }
        })
        .collect();
    // The digest after every zxid, from a store that applies alone.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = Store::open(reference_dir.path(), config()).unwrap();
    let mut expected = vec![reference.tree_digest().unwrap()];
    for (i, e) in entries.iter().enumerate() {
        reference.apply(Zxid(i as u64 + 1), e).unwrap();
        expected.push(reference.tree_digest().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path(), config()).unwrap());
    let writer = {
        let store = store.clone();
        let entries = entries.clone();
        std::thread::spawn(move || {
            for (i, e) in entries.iter().enumerate() {
                store.apply(Zxid(i as u64 + 1), e).unwrap();
            }
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let done = writer.is_finished();
        let (zxid, digest) = store.digest_at().unwrap();
        assert_eq!(
            digest, expected[zxid.0 as usize],
            "digest taken at {zxid} is not that state's"
        );
        seen.insert(zxid.0);
        if done {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(store.digest_at().unwrap(), (Zxid(400), expected[400]));
    println!("digests taken at {} distinct zxids", seen.len());
}

// ---- fenced writes ------------------------------------------------------

/// Creates the directory of lock `m` (persistent, like the lock recipe's parents).
fn lock_dir_m(h: &mut Harness) {
    for p in ["/.keeper", "/.keeper/locks", "/.keeper/locks/m"] {
        h.create(p, NodeMode::Persistent).unwrap();
    }
}

/// A contender of lock `m` for `session`; returns its path and token (czxid).
fn contend(h: &mut Harness, session: SessionId) -> (String, u64) {
    match h.op(create(
        "/.keeper/locks/m/",
        NodeMode::EphemeralSequential,
        session,
        None,
    )) {
        Ok(OpResult::Created { path, stat }) => (path, stat.czxid),
        other => panic!("expected Created, got {other:?}"),
    }
}

fn fenced(token: u64, txn: Txn) -> Txn {
    Txn::Fenced {
        fence: Fence {
            lock: "m".into(),
            token,
        },
        txn: Box::new(txn),
    }
}

fn fenced_op(h: &mut Harness, token: u64, op: Op) -> Result<OpResult, TxnError> {
    match h.txn_at(1000, fenced(token, Txn::Op(op))).outcome {
        TxnOutcome::Op(r) => r,
        other => panic!("unexpected outcome {other:?}"),
    }
}

fn fenced_err(lock: &str, token: u64, holder: Option<u64>) -> TxnError {
    TxnError::Fenced {
        lock: lock.into(),
        token,
        holder,
    }
}

#[test]
fn a_fenced_write_applies_only_while_its_token_holds_the_lock() {
    let mut h = Harness::new();
    lock_dir_m(&mut h);
    h.create("/counter", NodeMode::Persistent).unwrap();
    // A child that is not a contender (and sorts before the digits) never holds.
    h.create("/.keeper/locks/m/-x", NodeMode::Persistent)
        .unwrap();
    let (s1, s2) = (h.session(), h.session());
    // Nobody holds the lock yet.
    assert_eq!(
        fenced_op(&mut h, 1, set("/counter", b"0", -1)),
        Err(fenced_err("m", 1, None))
    );
    let (c1, t1) = contend(&mut h, s1);
    let (_c2, t2) = contend(&mut h, s2);
    assert!(t2 > t1);
    assert_eq!(
        h.store()
            .lock_holder("m")
            .unwrap()
            .map(|(p, s)| (p, s.czxid)),
        Some((c1.clone(), t1))
    );
    assert!(matches!(
        fenced_op(&mut h, t1, set("/counter", b"1", -1)),
        Ok(OpResult::Set { .. })
    ));
    // The waiter's token does not hold the lock: nothing changes.
    let before = h.stat("/counter");
    assert_eq!(
        fenced_op(&mut h, t2, set("/counter", b"2", -1)),
        Err(fenced_err("m", t2, Some(t1)))
    );
    assert_eq!(h.stat("/counter"), before);
    assert_eq!(h.store().get("/counter").unwrap().unwrap().0, &b"1"[..]);
    // Create and delete are fenced the same way.
    assert_eq!(
        fenced_op(&mut h, t2, create("/y", NodeMode::Persistent, 0, None)),
        Err(fenced_err("m", t2, Some(t1)))
    );
    assert!(h.store().get("/y").unwrap().is_none());
    assert!(fenced_op(&mut h, t1, create("/y", NodeMode::Persistent, 0, None)).is_ok());
    // The holder releases in a fenced delete of its own contender node.
    assert!(fenced_op(
        &mut h,
        t1,
        Op::Delete {
            path: c1,
            version: -1
        }
    )
    .is_ok());
    // The old holder's token is stale now; the next contender holds.
    assert_eq!(
        fenced_op(&mut h, t1, set("/counter", b"3", -1)),
        Err(fenced_err("m", t1, Some(t2)))
    );
    assert!(fenced_op(
        &mut h,
        t2,
        Op::Delete {
            path: "/y".into(),
            version: -1
        }
    )
    .is_ok());
    // An expired session releases: the lock is free, every token is stale.
    h.txn_at(1000, Txn::CloseSession { id: s2 });
    assert_eq!(
        fenced_op(&mut h, t2, set("/counter", b"4", -1)),
        Err(fenced_err("m", t2, None))
    );
    assert_eq!(h.store().get("/counter").unwrap().unwrap().0, &b"1"[..]);
}

#[test]
fn an_election_fence_checks_the_election_leader_not_a_lock_of_the_same_name() {
    let mut h = Harness::new();
    lock_dir_m(&mut h);
    for p in ["/.keeper/elections", "/.keeper/elections/m"] {
        h.create(p, NodeMode::Persistent).unwrap();
    }
    h.create("/counter", NodeMode::Persistent).unwrap();
    let (s1, s2) = (h.session(), h.session());
    let (_, lock_token) = contend(&mut h, s1);
    let candidate = |h: &mut Harness, session| match h.op(create(
        "/.keeper/elections/m/",
        NodeMode::EphemeralSequential,
        session,
        None,
    )) {
        Ok(OpResult::Created { path, stat }) => (path, stat.czxid),
        other => panic!("expected Created, got {other:?}"),
    };
    let (leader, term1) = candidate(&mut h, s1);
    let (_, term2) = candidate(&mut h, s2);
    assert_eq!(
        h.store()
            .holder(FenceScope::Election, "m")
            .unwrap()
            .map(|(p, s)| (p, s.czxid)),
        Some((leader.clone(), term1))
    );
    let by_election = |token: u64| Txn::FencedBy {
        scope: FenceScope::Election,
        fence: Fence {
            lock: "m".into(),
            token,
        },
        txn: Box::new(Txn::Op(set("/counter", b"x", -1))),
    };
    // The lock's token does not pass an election fence of the same name.
    assert_eq!(
        h.txn_at(1000, by_election(lock_token)).outcome,
        TxnOutcome::Op(Err(fenced_err("m", lock_token, Some(term1))))
    );
    assert!(matches!(
        h.txn_at(1000, by_election(term1)).outcome,
        TxnOutcome::Op(Ok(OpResult::Set { .. }))
    ));
    // The leader resigns: its term is stale, the next candidate's holds.
    h.op(Op::Delete {
        path: leader,
        version: -1,
    })
    .unwrap();
    assert_eq!(
        h.txn_at(1000, by_election(term1)).outcome,
        TxnOutcome::Op(Err(fenced_err("m", term1, Some(term2))))
    );
    assert!(matches!(
        h.txn_at(1000, by_election(term2)).outcome,
        TxnOutcome::Op(Ok(OpResult::Set { .. }))
    ));
}

#[test]
fn a_fenced_multi_applies_all_or_nothing_and_fails_at_index_0() {
    let mut h = Harness::new();
    lock_dir_m(&mut h);
    let s = h.session();
    let (_, t) = contend(&mut h, s);
    let ops = || {
        Txn::Multi(vec![
            create("/a", NodeMode::Persistent, 0, None),
            create("/a/b", NodeMode::Persistent, 0, None),
        ])
    };
    assert_eq!(
        h.txn_at(1000, fenced(t + 1, ops())).outcome,
        TxnOutcome::Multi(Err(MultiError {
            index: 0,
            error: fenced_err("m", t + 1, Some(t)),
        }))
    );
    assert!(h.store().get("/a").unwrap().is_none());
    let r = h.txn_at(1000, fenced(t, ops()));
    assert!(matches!(r.outcome, TxnOutcome::Multi(Ok(ref rs)) if rs.len() == 2));
    assert_eq!(
        r.events.len(),
        4,
        "events of the guarded multi: {:?}",
        r.events
    );
    // A failing guarded multi still fails as a multi.
    assert!(matches!(
        h.txn_at(1000, fenced(t, ops())).outcome,
        TxnOutcome::Multi(Err(MultiError {
            index: 0,
            error: TxnError::NodeExists { .. }
        }))
    ));
}

#[test]
fn a_fence_with_a_bad_lock_name_or_a_non_write_txn_is_bad_arguments() {
    let mut h = Harness::new();
    for lock in ["", "a/b"] {
        let txn = Txn::Fenced {
            fence: Fence {
                lock: lock.into(),
                token: 1,
            },
            txn: Box::new(Txn::Op(create("/x", NodeMode::Persistent, 0, None))),
        };
        assert!(
            matches!(
                h.txn_at(1000, txn).outcome,
                TxnOutcome::Op(Err(TxnError::BadArguments { .. }))
            ),
            "lock {lock:?}"
        );
    }
    for inner in [Txn::Noop, fenced(1, Txn::Noop), Txn::CloseSession { id: 1 }] {
        assert!(matches!(
            h.txn_at(1000, fenced(1, inner)).outcome,
            TxnOutcome::Op(Err(TxnError::BadArguments { .. }))
        ));
    }
    assert!(h.store().get("/x").unwrap().is_none());
}

#[test]
fn a_fenced_entry_in_a_batch_sees_the_entries_before_it() {
    let mut h = Harness::new();
    lock_dir_m(&mut h);
    h.create("/counter", NodeMode::Persistent).unwrap();
    let s = h.session();
    let z = h.next;
    // zxid z creates the contender (token z), z+1 is fenced by it, z+2
    // releases, z+3 is fenced by the released token.
    let entries = [
        Txn::Op(create(
            "/.keeper/locks/m/",
            NodeMode::EphemeralSequential,
            s,
            None,
        )),
        fenced(z, Txn::Op(set("/counter", b"1", -1))),
        Txn::Op(Op::Delete {
            path: "/.keeper/locks/m/0000000000".into(),
            version: -1,
        }),
        fenced(z, Txn::Op(set("/counter", b"2", -1))),
    ]
    .map(|txn| Entry { time_ms: 1000, txn });
    let applied = h
        .store()
        .apply_batch(
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (Zxid(z + i as u64), e)),
        )
        .unwrap();
    h.next += entries.len() as u64;
    assert!(matches!(
        applied[0].outcome,
        TxnOutcome::Op(Ok(OpResult::Created { .. }))
    ));
    assert!(matches!(
        applied[1].outcome,
        TxnOutcome::Op(Ok(OpResult::Set { .. }))
    ));
    assert!(matches!(
        applied[2].outcome,
        TxnOutcome::Op(Ok(OpResult::Deleted { .. }))
    ));
    assert_eq!(
        applied[3].outcome,
        TxnOutcome::Op(Err(fenced_err("m", z, None)))
    );
    assert_eq!(h.store().get("/counter").unwrap().unwrap().0, &b"1"[..]);
    h.reopen();
    assert_eq!(h.store().get("/counter").unwrap().unwrap().0, &b"1"[..]);
}

#[test]
fn entries_logged_before_fences_existed_decode_unchanged() {
    // Variant numbers of the older txns are fixed: a Noop at time 1, a
    // CloseSession of session 7, as older versions encoded them.
    assert_eq!(
        Entry::decode(&[1, 5]).unwrap(),
        Entry {
            time_ms: 1,
            txn: Txn::Noop
        }
    );
    assert_eq!(
        Entry::decode(&[1, 3, 7]).unwrap(),
        Entry {
            time_ms: 1,
            txn: Txn::CloseSession { id: 7 }
        }
    );
    let e = Entry {
        time_ms: 9,
        txn: fenced(42, Txn::Op(set("/c", b"x", 3))),
    };
    assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
}
