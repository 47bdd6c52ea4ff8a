//! The write path across restarts, driven below HTTP where needed: log
//! entries that were durable but not applied are replayed before serving,
//! every start takes a new epoch above anything logged, and sessions are
//! tracked again after a restart with a fresh full timeout.

mod common;

use axum::http::Method;
use common::{bounded, test_config, TestNode};
use keeper_server::Node;
use keeper_store::{Entry, NodeMode, Op, Store, Txn};
use keeper_zab::Zxid;
use serde_json::json;
use std::time::{Duration, Instant};

async fn restart(n: TestNode, tweak: impl FnOnce(&mut keeper_server::Config)) -> TestNode {
    let TestNode { dir, node, app } = n;
    drop(app);
    node.expect("running")
        .shutdown()
        .await
        .expect("clean shutdown");
    let mut config = test_config(dir.path());
    tweak(&mut config);
    let node = Node::start(config).await.expect("restart");
    TestNode {
        app: node.app(),
        node: Some(node),
        dir,
    }
}

#[tokio::test]
async fn logged_but_unapplied_entries_are_replayed_before_serving() {
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        {
            let config = test_config(dir.path());
            let store = Store::open(dir.path(), config.store_config()).unwrap();
            let create = |path: &str, data: &'static str| Entry {
                time_ms: 1_000,
                txn: Txn::Op(Op::Create {
                    path: path.into(),
                    data: bytes::Bytes::from_static(data.as_bytes()),
                    mode: NodeMode::Persistent,
                    session: 0,
                    ttl_ms: None,
                }),
            };
            // Logged at epoch 7 and never applied (as after a crash between fsync and apply).
            store
                .append_log(&[
                    (Zxid::new(7, 1), create("/r1", "one").encode()),
                    (Zxid::new(7, 2), create("/r2", "two").encode()),
                ])
                .unwrap();
            assert_eq!(store.last_applied(), Zxid::ZERO);
        }
        let node = Node::start(test_config(dir.path())).await.unwrap();
        let n = TestNode {
            app: node.app(),
            node: Some(node),
            dir,
        };
        let r = n.call(Method::GET, "/v1/nodes/r2", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["data"], "two");
        assert_eq!(r.json["stat"]["czxid"], Zxid::new(7, 2).0);
        assert_eq!(r.zxid(), Zxid::new(7, 2).0);
        // The new epoch is above the logged one, and new zxids follow it.
        let c = n.call(Method::GET, "/v1/cluster", None).await.json;
        assert_eq!(c["epoch"], 8);
        let w = n.call(Method::POST, "/v1/nodes/r3", Some(json!({}))).await;
        assert_eq!(w.json["stat"]["czxid"], Zxid::new(8, 1).0);
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sessions_get_a_fresh_timeout_after_restart_then_expire_when_keepalives_stop() {
    const TIMEOUT_MS: u64 = 300;
    bounded(30, async {
        let n = TestNode::start().await;
        let s = n
            .call(
                Method::POST,
                "/v1/sessions",
                Some(json!({"timeout_ms": TIMEOUT_MS})),
            )
            .await;
        assert_eq!(s.status, 201, "{}", s.text);
        let id = s.json["id"].as_u64().unwrap();
        let r = n
            .call(
                Method::POST,
                "/v1/nodes/eph",
                Some(json!({"mode": "ephemeral", "session": id})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);

        // Down for longer than the timeout: after the restart the session is
        // tracked again with a full timeout, so keepalives keep it alive.
        let TestNode { dir, node, app } = n;
        drop(app);
        node.unwrap().shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(TIMEOUT_MS + 100)).await;
        let node = Node::start(test_config(dir.path())).await.unwrap();
        let n = TestNode {
            app: node.app(),
            node: Some(node),
            dir,
        };
        let mut last_keepalive = Instant::now();
        for _ in 0..10 {
            let ka = n
                .call(Method::POST, &format!("/v1/sessions/{id}/keepalive"), None)
                .await;
            assert_eq!(ka.status, 200, "{}", ka.text);
            last_keepalive = Instant::now();
            assert_eq!(n.call(Method::GET, "/v1/nodes/eph", None).await.status, 200);
            tokio::time::sleep(Duration::from_millis(TIMEOUT_MS / 3)).await;
        }

        // Keepalives stop: gone within timeout + one tick (50 ms) + slack.
        loop {
            if n.call(Method::GET, "/v1/nodes/eph", None).await.status == 404 {
                break;
            }
            assert!(
                last_keepalive.elapsed() < Duration::from_millis(TIMEOUT_MS + 50 + 200),
                "ephemeral outlived its session"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(last_keepalive.elapsed() >= Duration::from_millis(TIMEOUT_MS - 20));
        n.call(Method::POST, &format!("/v1/sessions/{id}/keepalive"), None)
            .await
            .assert_error(410, "SessionExpired");

        // The expiry went through the log: still gone after another restart.
        let n = restart(n, |_| {}).await;
        n.call(Method::GET, "/v1/nodes/eph", None)
            .await
            .assert_error(404, "NoNode");
        n.call(Method::POST, &format!("/v1/sessions/{id}/keepalive"), None)
            .await
            .assert_error(410, "SessionExpired");
        n.shutdown().await;
    })
    .await;
}
