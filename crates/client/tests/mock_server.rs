//! The client against an in-process mock of the HTTP API: the typed calls,
//! failover (dead member, 503, 504, stalled member), the retry-safety rule for
//! writes, zxid floor propagation, and session keepalives.

mod common;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{dead_endpoint, start_member, Cluster, Member};
use keeper_client::{
    Client, ClientConfig, Consistency, CreateMode, CreateOptions, Error, ErrorCode, LossReason, Op,
    OpResult, Role, SessionState, ANY_VERSION,
};

/// Every test is bounded: a hang fails instead of blocking the suite.
async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test exceeded 30s");
}

fn fast_config(endpoints: Vec<String>) -> ClientConfig {
    ClientConfig::new(endpoints)
        .request_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
}

fn client(members: &[&Member]) -> Client {
    Client::new(fast_config(members.iter().map(|m| m.url.clone()).collect())).expect("client")
}

#[tokio::test]
async fn crud_round_trip_with_typed_results() {
    bounded(async {
        let cluster = Cluster::new();
        let m = start_member(&cluster).await;
        let c = client(&[&m]);

        let created = c
            .create("/app", "v1", CreateOptions::persistent())
            .await
            .expect("create");
        assert_eq!(created.path, "/app");
        assert_eq!(created.stat.data_length, 2);

        let node = c.get("/app").await.expect("get");
        assert_eq!(&node.data[..], b"v1");
        assert_eq!(node.stat.version, 0);

        let stat = c.set("/app", "v2", 0).await.expect("set");
        assert_eq!(stat.version, 1);
        let err = c.set("/app", "v3", 0).await.expect_err("stale version");
        assert_eq!(err.code(), Some(ErrorCode::BadVersion));
        assert_eq!(err.path(), Some("/app"));

        // Binary data goes out as data_b64 and comes back intact.
        let bin: &[u8] = &[0, 159, 146, 150, 255];
        c.create("/app/bin", bin.to_vec(), CreateOptions::persistent())
            .await
            .expect("create bin");
        let seen = m.knobs.seen();
        let post = seen.last().expect("a request");
        assert!(post.body.contains("data_b64"), "{}", post.body);
        assert_eq!(&c.get("/app/bin").await.expect("get bin").data[..], bin);
        assert_eq!(cluster.node_data("/app/bin").as_deref(), Some(bin));

        let seq = c
            .create(
                "/app/s-",
                "",
                CreateOptions::mode(CreateMode::PersistentSequential),
            )
            .await
            .expect("seq");
        assert!(seq.path.starts_with("/app/s-") && seq.path.len() == "/app/s-".len() + 10);

        assert_eq!(c.exists("/nope").await.expect("exists"), None);
        assert_eq!(
            c.exists("/app")
                .await
                .expect("exists")
                .map(|s| s.num_children),
            Some(2)
        );
        let err = c.delete("/app", ANY_VERSION).await.expect_err("not empty");
        assert_eq!(err.code(), Some(ErrorCode::NotEmpty));
        c.delete("/app/bin", 0).await.expect("delete");
        let err = c.get("/app/bin").await.expect_err("gone");
        assert!(matches!(&err, Error::NoNode(d) if d.path.as_deref() == Some("/app/bin")));
        assert_eq!(err.to_string(), "NoNode: no node (/app/bin)");

        let lin = c
            .get_with("/app", Consistency::Linearizable)
            .await
            .expect("linearizable get");
        assert_eq!(&lin.data[..], b"v2");
        let seen = m.knobs.seen();
        assert_eq!(
            seen.last().map(|s| s.query.as_str()),
            Some("consistency=linearizable")
        );

        // Paths are percent-encoded and decoded back by the server.
        c.create("/a b", "x", CreateOptions::persistent())
            .await
            .expect("space path");
        assert_eq!(c.get("/a b").await.expect("get").path, "/a b");
        let err = c.get("relative").await.expect_err("invalid path");
        assert_eq!(err.code(), Some(ErrorCode::InvalidPath));
    })
    .await;
}

#[tokio::test]
async fn children_pages_and_all_children() {
    bounded(async {
        let cluster = Cluster::new();
        let m = start_member(&cluster).await;
        let c = client(&[&m]);
        c.create("/p", "", CreateOptions::persistent())
            .await
            .expect("create");
        let names = ["e", "a", "d", "b", "c", "&x"];
        for n in names {
            c.create(&format!("/p/{n}"), "", CreateOptions::persistent())
                .await
                .expect("child");
        }
        let page = c.children("/p", Some(2), None).await.expect("page");
        assert_eq!(page.children, vec!["&x", "a"]);
        assert!(page.more);
        assert_eq!(page.stat.num_children, 6);
        let page = c.children("/p", Some(2), Some("&x")).await.expect("page 2");
        assert_eq!(page.children, vec!["a", "b"]);

        m.knobs.page_limit.store(2, Ordering::SeqCst);
        let before = m.knobs.count();
        let all = c.all_children("/p").await.expect("all");
        assert_eq!(all, vec!["&x", "a", "b", "c", "d", "e"]);
        assert_eq!(m.knobs.count() - before, 3, "three pages of two");
        let root = c.all_children("/").await.expect("root");
        assert_eq!(root, vec!["p"]);
    })
    .await;
}

#[tokio::test]
async fn multi_applies_all_or_reports_the_failing_index() {
    bounded(async {
        let cluster = Cluster::new();
        let m = start_member(&cluster).await;
        let c = client(&[&m]);
        let results = c
            .multi(vec![
                Op::create("/t", "1", CreateOptions::persistent()),
                Op::set("/t", "2", 0),
                Op::check("/t", 1),
                Op::create("/t/x", "", CreateOptions::persistent()),
                Op::delete("/t/x", ANY_VERSION),
            ])
            .await
            .expect("multi");
        assert_eq!(results.len(), 5);
        assert!(matches!(&results[0], OpResult::Create { path, .. } if path == "/t"));
        assert!(matches!(&results[1], OpResult::Set { stat, .. } if stat.version == 1));
        assert!(matches!(&results[2], OpResult::Check { path } if path == "/t"));
        assert!(matches!(&results[4], OpResult::Delete { path } if path == "/t/x"));

        let err = c
            .txn(vec![
                Op::create("/u", "", CreateOptions::persistent()),
                Op::check("/t", 7),
            ])
            .await
            .expect_err("bad version");
        assert_eq!(err.code(), Some(ErrorCode::BadVersion));
        assert_eq!(err.api().and_then(|d| d.index), Some(1));
        assert_eq!(
            c.exists("/u").await.expect("exists"),
            None,
            "nothing applied"
        );
    })
    .await;
}

#[tokio::test]
async fn fails_over_from_a_dead_endpoint_for_reads_and_writes() {
    bounded(async {
        let cluster = Cluster::new();
        let live = start_member(&cluster).await;
        let c = Client::new(fast_config(vec![dead_endpoint(), live.url.clone()])).expect("client");
        // A connect error proves the write reached nobody: safe to retry it.
        c.create("/w", "x", CreateOptions::persistent())
            .await
            .expect("write fails over");
        assert_eq!(c.get("/w").await.expect("read").data, "x");
        assert_eq!(live.knobs.count(), 2);

        let all_dead =
            Client::new(fast_config(vec![dead_endpoint(), dead_endpoint()]).max_attempts(3))
                .expect("client");
        let err = all_dead.get("/w").await.expect_err("nobody home");
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert!(!err.is_outcome_unknown());
        let err = all_dead
            .create("/w2", "", CreateOptions::persistent())
            .await
            .expect_err("nobody home");
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn unavailable_members_are_skipped_for_reads_not_for_sent_writes() {
    bounded(async {
        let cluster = Cluster::new();
        let a = start_member(&cluster).await;
        let b = start_member(&cluster).await;
        let c = client(&[&a, &b]);
        c.create("/n", "v", CreateOptions::persistent())
            .await
            .expect("create");
        assert_eq!((a.knobs.count(), b.knobs.count()), (1, 0));

        a.knobs.unavailable.store(true, Ordering::SeqCst);
        assert_eq!(c.get("/n").await.expect("read fails over").data, "v");
        assert_eq!((a.knobs.count(), b.knobs.count()), (2, 1));
        // The client now prefers b.
        c.get("/n").await.expect("read");
        assert_eq!((a.knobs.count(), b.knobs.count()), (2, 2));

        // A write refused by a member is not repeated elsewhere by default.
        b.knobs.unavailable.store(true, Ordering::SeqCst);
        a.knobs.unavailable.store(false, Ordering::SeqCst);
        let err = c.set("/n", "w", ANY_VERSION).await.expect_err("503");
        assert_eq!(err.code(), Some(ErrorCode::Unavailable));
        assert_eq!((a.knobs.count(), b.knobs.count()), (2, 3));
        // ... but the next call goes to the other member.
        c.set("/n", "w", ANY_VERSION).await.expect("set via a");
        assert_eq!((a.knobs.count(), b.knobs.count()), (3, 3));

        // Opt-in: retry writes on 503.
        let retrying = Client::new(ClientConfig {
            retry_writes_on_unavailable: true,
            ..fast_config(vec![b.url.clone(), a.url.clone()])
        })
        .expect("client");
        retrying
            .set("/n", "z", ANY_VERSION)
            .await
            .expect("write retried on a");
        assert_eq!(cluster.node_data("/n").as_deref(), Some(&b"z"[..]));
    })
    .await;
}

#[tokio::test]
async fn a_broken_member_500_is_skipped_for_reads_only() {
    bounded(async {
        let cluster = Cluster::new();
        let a = start_member(&cluster).await;
        let b = start_member(&cluster).await;
        let c = client(&[&a, &b]);
        a.knobs.internal_errors.store(true, Ordering::SeqCst);
        let err = c
            .create("/i", "", CreateOptions::persistent())
            .await
            .expect_err("500 on a write is final");
        assert!(
            matches!(err, Error::HttpStatus { status: 500, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("storage failure"), "{err}");
        assert_eq!(b.knobs.count(), 0);
        let c = client(&[&a, &b]);
        let err = c.get("/i").await.expect_err("no node on b");
        assert_eq!(err.code(), Some(ErrorCode::NoNode));
        assert_eq!((a.knobs.count(), b.knobs.count()), (2, 1));
    })
    .await;
}

#[tokio::test]
async fn when_every_member_is_unavailable_attempts_are_bounded() {
    bounded(async {
        let cluster = Cluster::new();
        let a = start_member(&cluster).await;
        let b = start_member(&cluster).await;
        a.knobs.unavailable.store(true, Ordering::SeqCst);
        b.knobs.unavailable.store(true, Ordering::SeqCst);
        b.knobs.html_errors.store(true, Ordering::SeqCst);
        let c = Client::new(fast_config(vec![a.url.clone(), b.url.clone()]).max_attempts(5))
            .expect("client");
        let err = c.get("/x").await.expect_err("all down");
        assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err:?}");
        assert_eq!(a.knobs.count() + b.knobs.count(), 5);
        assert_eq!((a.knobs.count(), b.knobs.count()), (3, 2));
        let err = c.readyz().await.expect_err("not ready");
        assert_eq!(err.code(), Some(ErrorCode::Unavailable));
    })
    .await;
}

#[tokio::test]
async fn the_zxid_floor_is_sent_on_every_request_and_never_drops() {
    bounded(async {
        let cluster = Cluster::new();
        let a = start_member(&cluster).await;
        let b = start_member(&cluster).await;
        let c = client(&[&a, &b]);
        c.create("/z", "", CreateOptions::persistent())
            .await
            .expect("create");
        assert_eq!(a.knobs.seen()[0].min_zxid, Some(0));
        let after_write = cluster.zxid();
        assert_eq!(c.last_zxid(), after_write);

        // A member that has applied more raises the floor ...
        a.knobs.report_zxid.store(1000, Ordering::SeqCst);
        a.knobs.applied_override.store(1000, Ordering::SeqCst);
        c.get("/z").await.expect("read");
        assert_eq!(c.last_zxid(), 1000);
        assert_eq!(a.knobs.seen()[1].min_zxid, Some(after_write));
        // ... and a member reporting less does not lower it.
        a.knobs.report_zxid.store(3, Ordering::SeqCst);
        c.get("/z").await.expect("read");
        assert_eq!(c.last_zxid(), 1000);

        // After failing over, the other member is asked for at least that much.
        a.knobs.unavailable.store(true, Ordering::SeqCst);
        b.knobs.applied_override.store(1000, Ordering::SeqCst);
        c.get("/z").await.expect("read on b");
        assert_eq!(b.knobs.seen().last().and_then(|s| s.min_zxid), Some(1000));
    })
    .await;
}

#[tokio::test]
async fn reads_skip_a_lagging_member_that_answers_504() {
    bounded(async {
        let cluster = Cluster::new();
        let a = start_member(&cluster).await;
        let b = start_member(&cluster).await;
        let c = client(&[&a, &b]);
        c.create("/l", "fresh", CreateOptions::persistent())
            .await
            .expect("create");
        c.set("/l", "fresh", ANY_VERSION).await.expect("set");
        assert_eq!(c.last_zxid(), 2);
        // a falls behind what the client has seen.
        a.knobs.applied_override.store(1, Ordering::SeqCst);
        let node = c.get("/l").await.expect("served by b");
        assert_eq!(node.data, "fresh");
        assert_eq!(b.knobs.count(), 1);
        // A write that times out on the server is not repeated.
        b.knobs.applied_override.store(1, Ordering::SeqCst);
        let before = (a.knobs.count(), b.knobs.count());
        let err = c
            .set("/l", "x", ANY_VERSION)
            .await
            .expect_err("lagging member");
        assert_eq!(err.code(), Some(ErrorCode::Timeout));
        assert!(err.is_outcome_unknown());
        assert_eq!(
            a.knobs.count() + b.knobs.count(),
            before.0 + before.1 + 1,
            "one attempt only"
        );
    })
    .await;
}

#[tokio::test]
async fn a_write_whose_answer_is_lost_is_connection_loss_but_a_read_fails_over() {
    bounded(async {
        let cluster = Cluster::new();
        let a = start_member(&cluster).await;
        let b = start_member(&cluster).await;
        a.knobs.delay_ms.store(3_000, Ordering::SeqCst);
        let c = Client::new(
            fast_config(vec![a.url.clone(), b.url.clone()])
                .request_timeout(Duration::from_millis(300)),
        )
        .expect("client");
        let err = c
            .create("/slow", "", CreateOptions::persistent())
            .await
            .expect_err("stalled");
        assert!(matches!(err, Error::ConnectionLoss { .. }), "{err:?}");
        assert!(err.is_outcome_unknown());
        assert_eq!(b.knobs.count(), 0, "a sent write is never repeated");

        // The stalled member got demoted; make it first again for the read test.
        let c = Client::new(
            fast_config(vec![a.url.clone(), b.url.clone()])
                .request_timeout(Duration::from_millis(300)),
        )
        .expect("client");
        let err = c.get("/slow").await.expect_err("no node");
        assert_eq!(err.code(), Some(ErrorCode::NoNode), "{err:?}");
        assert_eq!(b.knobs.count(), 1, "the read was retried on b");
    })
    .await;
}

#[tokio::test]
async fn sessions_send_keepalives_until_closed() {
    bounded(async {
        let cluster = Cluster::new();
        let m = start_member(&cluster).await;
        let c = client(&[&m]);
        let session = c
            .session(Duration::from_millis(300))
            .await
            .expect("session");
        assert_eq!(session.timeout(), Duration::from_millis(300));
        let id = session.id();
        c.create("/eph", "", CreateOptions::ephemeral(id))
            .await
            .expect("ephemeral");
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let sent = cluster.keepalives(id);
        // One per 100 ms: about 10 in a second; allow for a slow machine.
        assert!((4..=12).contains(&sent), "keepalives sent: {sent}");
        assert_eq!(session.state(), SessionState::Alive);
        assert!(cluster.session_alive(id));
        // A keepalive must not wait for a lagging member to catch up.
        let keepalive_floors: Vec<Option<u64>> = m
            .knobs
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/keepalive"))
            .map(|s| s.min_zxid)
            .collect();
        assert!(!keepalive_floors.is_empty());
        assert!(
            keepalive_floors.iter().all(Option::is_none),
            "{keepalive_floors:?}"
        );

        session.close().await.expect("close");
        assert_eq!(cluster.closed_sessions(), vec![id]);
        assert_eq!(c.exists("/eph").await.expect("exists"), None);
        let at_close = cluster.keepalives(id);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(cluster.keepalives(id), at_close, "keepalives stopped");
    })
    .await;
}

#[tokio::test]
async fn dropping_a_session_stops_its_keepalives() {
    bounded(async {
        let cluster = Cluster::new();
        let m = start_member(&cluster).await;
        let c = client(&[&m]);
        let session = c
            .session(Duration::from_millis(150))
            .await
            .expect("session");
        let id = session.id();
        let mut state = session.subscribe();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(cluster.keepalives(id) >= 2);
        drop(session);
        // The task observes the drop and publishes Closed.
        let _ = tokio::time::timeout(Duration::from_secs(2), state.changed()).await;
        assert_eq!(*state.borrow(), SessionState::Closed);
        let after = cluster.keepalives(id);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cluster.keepalives(id), after);
        assert!(cluster.closed_sessions().is_empty(), "drop does not close");
    })
    .await;
}

#[tokio::test]
async fn session_expiry_is_reported_when_the_server_says_so() {
    bounded(async {
        let cluster = Cluster::new();
        let m = start_member(&cluster).await;
        let c = client(&[&m]);
        let session = c
            .session(Duration::from_millis(300))
            .await
            .expect("session");
        cluster.expire(session.id());
        let state = tokio::time::timeout(Duration::from_secs(2), session.expired())
            .await
            .expect("expiry reported within the timeout");
        assert_eq!(state, SessionState::Expired);
        assert!(session.is_expired());
        let loss = session.loss().expect("the loss is kept");
        assert_eq!(loss.reason, LossReason::Expired);
        assert_eq!(
            session.lost().await,
            loss,
            "lost() after the fact resolves at once"
        );
        let err = session.close().await.expect_err("already gone");
        assert_eq!(err.code(), Some(ErrorCode::SessionExpired));
    })
    .await;
}

#[tokio::test]
async fn session_expiry_is_reported_when_no_member_answers_for_a_timeout() {
    bounded(async {
        let cluster = Cluster::new();
        let m = start_member(&cluster).await;
        let c = client(&[&m]);
        let session = c
            .session(Duration::from_millis(300))
            .await
            .expect("session");
        let started = tokio::time::Instant::now();
        drop(m);
        let state = tokio::time::timeout(Duration::from_secs(3), session.expired())
            .await
            .expect("expiry reported");
        assert_eq!(state, SessionState::Expired);
        assert!(
            started.elapsed() <= Duration::from_millis(1_500),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

/// The server answers 503 when it cannot confirm a keepalive (no leader,
/// cut off from the quorum): the session lives on through another member.
#[tokio::test]
async fn keepalives_move_to_another_member_when_one_answers_503() {
    bounded(async {
        let cluster = Cluster::new();
        let a = start_member(&cluster).await;
        let b = start_member(&cluster).await;
        let c = client(&[&a, &b]);
        let session = c
            .session(Duration::from_millis(300))
            .await
            .expect("session");
        a.knobs.unavailable.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(session.state(), SessionState::Alive);
        assert_eq!(session.loss(), None);
        let on_b = b
            .knobs
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/keepalive"))
            .count();
        assert!(on_b >= 4, "keepalives acknowledged by b: {on_b}");
        session.close().await.expect("close");
    })
    .await;
}

/// The loss is reported at the send time of the last acknowledged
/// keepalive plus the timeout (the earliest moment the servers may expire
/// the session), not later, and the event stays readable.
#[tokio::test]
async fn the_loss_is_reported_at_the_last_acknowledged_send_plus_the_timeout() {
    bounded(async {
        let cluster = Cluster::new();
        let m = start_member(&cluster).await;
        let c = client(&[&m]);
        let timeout = Duration::from_millis(600);
        let interval = timeout / 3;
        let session = c.session(timeout).await.expect("session");
        let mut state = session.subscribe();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(cluster.keepalives(session.id()) >= 2);
        // The member starts answering 503 to everything.
        let cut = tokio::time::Instant::now();
        m.knobs.unavailable.store(true, Ordering::SeqCst);
        let loss = tokio::time::timeout(Duration::from_secs(3), session.lost())
            .await
            .expect("loss reported");
        let seen = tokio::time::Instant::now();
        assert_eq!(loss.reason, LossReason::NotAcknowledged);
        // The last acknowledged keepalive was sent before the cut, at most
        // one interval (plus slack for a slow machine) before it.
        assert!(
            loss.at <= cut + timeout,
            "{:?} after the cut",
            loss.at - cut
        );
        assert!(
            loss.at + interval + Duration::from_millis(150) >= cut + timeout,
            "loss counted from a keepalive sent {:?} before the cut",
            (cut + timeout).saturating_duration_since(loss.at)
        );
        assert!(
            seen.saturating_duration_since(loss.at) < Duration::from_millis(100),
            "reported {:?} late",
            seen.saturating_duration_since(loss.at)
        );
        assert_eq!(*state.borrow_and_update(), SessionState::Expired);
        assert_eq!(session.loss(), Some(loss));
        assert_eq!(session.lost().await, loss);
    })
    .await;
}

#[tokio::test]
async fn sync_cluster_and_probes() {
    bounded(async {
        let cluster = Cluster::new();
        let m = start_member(&cluster).await;
        let c = client(&[&m]);
        c.create("/s", "", CreateOptions::persistent())
            .await
            .expect("create");
        assert_eq!(c.sync().await.expect("sync"), cluster.zxid());
        let info = c.cluster().await.expect("cluster");
        assert_eq!(info.role, Role::Leader);
        assert_eq!(info.applied_zxid, cluster.zxid());
        assert_eq!(info.members.len(), 1);
        assert_eq!(c.healthz().await.expect("healthz").status, "ok");
        assert_eq!(c.readyz().await.expect("readyz").status, "ready");
        let probe = m.knobs.seen();
        assert_eq!(
            probe.last().map(|s| s.min_zxid),
            Some(None),
            "probes carry no floor"
        );
    })
    .await;
}
