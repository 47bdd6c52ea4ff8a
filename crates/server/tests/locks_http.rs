//! The lock recipe and fenced writes through `app()` + `oneshot`, one temp
//! store per test: grant, queue, release, timeout, abandoned waiters,
//! session expiry, fenced create/set/delete/txn, and the no-herd hand-off.

mod common;

use axum::http::Method;
use common::{bounded, TestNode};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Duration;

const T: u64 = 60;

async fn session(n: &TestNode, timeout_ms: u64) -> u64 {
    let r = n
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({"timeout_ms": timeout_ms})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_u64().unwrap()
}

/// Acquires `lock` for `session`; the grant's `(key, token)`, or the error body.
async fn acquire(
    n: &TestNode,
    lock: &str,
    session: u64,
    wait_ms: u64,
) -> Result<(String, u64), Value> {
    let r = n
        .call(
            Method::POST,
            &format!("/v1/locks/{lock}/acquire"),
            Some(json!({"session": session, "wait_ms": wait_ms})),
        )
        .await;
    if r.status == 200 {
        let key = r.json["key"].as_str().unwrap().to_string();
        Ok((key, r.json["fencing_token"].as_u64().unwrap()))
    } else {
        Err(json!({"status": r.status.as_u16(), "body": r.json}))
    }
}

async fn release(n: &TestNode, lock: &str, key: &str) -> u16 {
    n.call(Method::DELETE, &format!("/v1/locks/{lock}/{key}"), None)
        .await
        .status
        .as_u16()
}

async fn show(n: &TestNode, lock: &str) -> Value {
    let r = n
        .call(Method::GET, &format!("/v1/locks/{lock}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

async fn fenced_set(n: &TestNode, path: &str, data: &str, lock: &str, token: u64) -> common::Resp {
    n.call(
        Method::PUT,
        &format!("/v1/nodes{path}"),
        Some(json!({"data": data, "fence": {"lock": lock, "token": token}})),
    )
    .await
}

async fn data(n: &TestNode, path: &str) -> String {
    let r = n.call(Method::GET, &format!("/v1/nodes{path}"), None).await;
    r.json["data"].as_str().unwrap_or_default().to_string()
}

async fn metric(n: &TestNode, name: &str) -> u64 {
    let r = n.call(Method::GET, "/metrics", None).await;
    r.text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_lock_is_granted_queued_handed_over_and_fences_writes() {
    bounded(T, async {
        let n = TestNode::start().await;
        let (s1, s2) = (session(&n, 10_000).await, session(&n, 10_000).await);
        assert_eq!(
            n.call(
                Method::POST,
                "/v1/nodes/counter",
                Some(json!({"data": "0"}))
            )
            .await
            .status,
            201
        );
        assert_eq!(
            show(&n, "m").await,
            json!({"name": "m", "holder": null, "queue": []})
        );

        let (k1, t1) = acquire(&n, "m", s1, 0).await.expect("free lock is granted");
        let state = show(&n, "m").await;
        assert_eq!(state["holder"]["key"], k1.as_str());
        assert_eq!(state["holder"]["fencing_token"], t1);
        assert_eq!(state["holder"]["session"], s1);
        // Busy, and no time to wait: Timeout, and the contender is gone.
        let e = acquire(&n, "m", s2, 0).await.unwrap_err();
        assert_eq!(e["status"], 504, "{e}");
        assert_eq!(e["body"]["error"]["code"], "Timeout");
        assert_eq!(show(&n, "m").await["queue"], json!([]));

        assert_eq!(fenced_set(&n, "/counter", "1", "m", t1).await.status, 200);
        let waiter = async {
            acquire(&n, "m", s2, 10_000)
                .await
                .expect("granted after release")
        };
        let holder = async {
            // Wait until the waiter is queued, then release.
            for _ in 0..200 {
                if show(&n, "m").await["queue"].as_array().unwrap().len() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(show(&n, "m").await["queue"][0]["session"], s2);
            assert_eq!(release(&n, "m", &k1).await, 204);
        };
        let ((k2, t2), ()) = tokio::join!(waiter, holder);
        assert!(t2 > t1, "tokens rise: {t1} then {t2}");
        assert_ne!(k1, k2);
        // The old holder's token is stale: set, create, delete and txn are all Fenced.
        fenced_set(&n, "/counter", "2", "m", t1)
            .await
            .assert_error(409, "Fenced");
        n.call(
            Method::POST,
            "/v1/nodes/x",
            Some(json!({"fence": {"lock": "m", "token": t1}})),
        )
        .await
        .assert_error(409, "Fenced");
        n.call(
            Method::DELETE,
            &format!("/v1/nodes/counter?fence_lock=m&fence_token={t1}"),
            None,
        )
        .await
        .assert_error(409, "Fenced");
        let txn = |token: u64| {
            json!({"ops": [{"op": "set", "path": "/counter", "data": "3"}],
                   "fence": {"lock": "m", "token": token}})
        };
        n.call(Method::POST, "/v1/txn", Some(txn(t1)))
            .await
            .assert_error(409, "Fenced");
        assert_eq!(data(&n, "/counter").await, "1");
        // The new holder's token works.
        assert_eq!(
            n.call(Method::POST, "/v1/txn", Some(txn(t2))).await.status,
            200
        );
        assert_eq!(data(&n, "/counter").await, "3");
        // Releasing twice is NoNode; then every token is stale.
        assert_eq!(release(&n, "m", &k2).await, 204);
        assert_eq!(release(&n, "m", &k2).await, 404);
        fenced_set(&n, "/counter", "4", "m", t2)
            .await
            .assert_error(409, "Fenced");
        // Bad names and keys are 400.
        n.call(Method::DELETE, "/v1/locks/m/abc", None)
            .await
            .assert_error(400, "BadArguments");
        fenced_set(&n, "/counter", "5", "", 1)
            .await
            .assert_error(400, "BadArguments");
        n.call(Method::DELETE, "/v1/nodes/counter?fence_lock=m", None)
            .await
            .assert_error(400, "BadArguments");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_expired_session_releases_its_lock_and_a_waiter_that_goes_away_leaves_nothing() {
    bounded(T, async {
        let n = TestNode::start().await;
        let short = session(&n, 300).await;
        let s2 = session(&n, 10_000).await;
        let (_, t1) = acquire(&n, "e", short, 0).await.unwrap();
        // A waiter whose request is dropped: its contender is deleted.
        let s3 = session(&n, 10_000).await;
        let gone =
            tokio::time::timeout(Duration::from_millis(100), acquire(&n, "e", s3, 10_000)).await;
        assert!(gone.is_err(), "the lock was busy");
        let mut queue = Value::Null;
        for _ in 0..200 {
            queue = show(&n, "e").await["queue"].clone();
            if queue == json!([]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(queue, json!([]), "the abandoned contender was not removed");
        // No keepalives for `short`: it expires and s2 gets the lock.
        let (_, t2) = acquire(&n, "e", s2, 10_000)
            .await
            .expect("granted after expiry");
        assert!(t2 > t1);
        assert_eq!(show(&n, "e").await["holder"]["session"], s2);
        // An acquire with an unknown session is SessionExpired.
        let e = acquire(&n, "e", short, 0).await.unwrap_err();
        assert_eq!(e["body"]["error"]["code"], "SessionExpired", "{e}");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn one_release_wakes_one_waiter_and_grants_are_fifo() {
    const WAITERS: usize = 50;
    bounded(T, async {
        let n = TestNode::start().await;
        let holder = session(&n, 10_000).await;
        let (k0, t0) = acquire(&n, "h", holder, 0).await.unwrap();
        let mut sessions = Vec::new();
        for _ in 0..WAITERS {
            sessions.push(session(&n, 10_000).await);
        }
        let grants = Mutex::new(Vec::new());
        let wakeups = Mutex::new(Vec::new());
        let waiter = |s: u64| {
            let (n, grants, wakeups) = (&n, &grants, &wakeups);
            async move {
                let (key, token) = acquire(n, "h", s, 20_000).await.expect("granted");
                // While this one holds, every other waiter still sleeps:
                // the wake-ups so far are exactly the grants so far.
                let woken = metric(n, "keeper_lock_wakeups_total").await;
                let granted = {
                    let mut g = grants.lock().unwrap();
                    g.push((s, key.clone(), token));
                    g.len() as u64
                };
                wakeups.lock().unwrap().push((granted, woken));
                assert_eq!(release(n, "h", &key).await, 204);
            }
        };
        let controller = async {
            let mut queued = Vec::new();
            for _ in 0..500 {
                queued = show(&n, "h").await["queue"].as_array().unwrap().clone();
                if queued.len() == WAITERS {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(queued.len(), WAITERS, "every waiter queued");
            assert_eq!(metric(&n, "keeper_lock_wakeups_total").await, 0);
            assert_eq!(release(&n, "h", &k0).await, 204);
            queued
        };
        let (queued, _) = tokio::join!(
            controller,
            futures::future::join_all(sessions.iter().map(|s| waiter(*s)))
        );
        let grants = grants.into_inner().unwrap();
        assert_eq!(grants.len(), WAITERS);
        let queue_order: Vec<u64> = queued
            .iter()
            .map(|c| c["session"].as_u64().unwrap())
            .collect();
        let grant_order: Vec<u64> = grants.iter().map(|g| g.0).collect();
        assert_eq!(grant_order, queue_order, "grants are FIFO");
        let mut last = t0;
        for (_, _, token) in &grants {
            assert!(*token > last, "tokens rise strictly: {last} then {token}");
            last = *token;
        }
        for (granted, woken) in wakeups.into_inner().unwrap() {
            assert_eq!(
                woken, granted,
                "wake-ups when grant {granted} held the lock"
            );
        }
        assert_eq!(
            metric(&n, "keeper_lock_wakeups_total").await,
            WAITERS as u64
        );
        assert_eq!(
            metric(&n, "keeper_lock_grants_total").await,
            WAITERS as u64 + 1
        );
        n.shutdown().await;
    })
    .await;
}
