//! The semaphore and election recipes through `app()` (one in-process
//! member per test): permits never exceeded, FIFO permits, no herd,
//! `permits_max` disagreements refused; campaign, queueing, proclaim only by
//! the leader, resign hands over with a higher term, fences by election
//! term, and the SSE stream of leadership changes.

mod common;

use axum::http::Method;
use common::{bounded, TestNode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const T: u64 = 60;

/// POSTs `body` to `uri` on a router (from a spawned task); status and JSON.
async fn post_app(app: axum::Router, uri: &str, body: Value) -> (u16, Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("request");
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

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

/// Acquires a permit; its key, or `{status, body}`.
async fn sem_acquire(
    n: &TestNode,
    name: &str,
    session: u64,
    permits_max: u64,
    wait_ms: u64,
) -> Result<String, Value> {
    let r = n
        .call(
            Method::POST,
            &format!("/v1/semaphores/{name}/acquire"),
            Some(json!({"session": session, "permits_max": permits_max, "wait_ms": wait_ms})),
        )
        .await;
    if r.status == 200 {
        assert_eq!(r.json["permits_max"], permits_max);
        Ok(r.json["key"].as_str().unwrap().to_string())
    } else {
        Err(json!({"status": r.status.as_u16(), "body": r.json}))
    }
}

async fn sem_release(n: &TestNode, name: &str, key: &str) -> u16 {
    n.call(
        Method::DELETE,
        &format!("/v1/semaphores/{name}/{key}"),
        None,
    )
    .await
    .status
    .as_u16()
}

async fn sem_show(n: &TestNode, name: &str) -> Value {
    let r = n
        .call(Method::GET, &format!("/v1/semaphores/{name}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// Polls `GET` until the queue of semaphore `name` has `len` contenders.
async fn sem_queue_len(n: &TestNode, name: &str, len: usize) -> Vec<Value> {
    let mut queue = Vec::new();
    for _ in 0..500 {
        queue = sem_show(n, name).await["queue"].as_array().unwrap().clone();
        if queue.len() == len {
            return queue;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("queue of {name} never reached {len}: {queue:?}");
}

#[tokio::test]
async fn a_semaphore_never_has_more_holders_than_permits_and_wakes_no_herd() {
    const PERMITS: u64 = 3;
    const WAITERS: usize = 24;
    bounded(T, async {
        let n = TestNode::start().await;
        let mut first = Vec::new();
        for _ in 0..PERMITS {
            let s = session(&n, 10_000).await;
            first.push(
                sem_acquire(&n, "s", s, PERMITS, 0)
                    .await
                    .expect("a free permit"),
            );
        }
        // Full: no time to wait is a Timeout, and leaves nothing behind.
        let s = session(&n, 10_000).await;
        let e = sem_acquire(&n, "s", s, PERMITS, 0).await.unwrap_err();
        assert_eq!(e["status"], 504, "{e}");
        assert_eq!(sem_show(&n, "s").await["queue"], json!([]));
        let state = sem_show(&n, "s").await;
        assert_eq!(state["permits_max"], PERMITS);
        assert_eq!(state["holders"].as_array().unwrap().len(), PERMITS as usize);

        let mut sessions = Vec::new();
        for _ in 0..WAITERS {
            sessions.push(session(&n, 10_000).await);
        }
        let holding = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let waiter = |s: u64| {
            let (n, holding, most) = (&n, &holding, &most);
            async move {
                let key = sem_acquire(n, "s", s, PERMITS, 20_000)
                    .await
                    .expect("granted");
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                assert!(
                    now <= PERMITS as usize,
                    "{now} holders of {PERMITS} permits"
                );
                tokio::time::sleep(Duration::from_millis(15)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(sem_release(n, "s", &key).await, 204);
            }
        };
        let controller = async {
            sem_queue_len(&n, "s", WAITERS).await;
            assert_eq!(metric(&n, "keeper_semaphore_wakeups_total").await, 0);
            for key in &first {
                assert_eq!(sem_release(&n, "s", key).await, 204);
            }
        };
        tokio::join!(
            controller,
            futures::future::join_all(sessions.iter().map(|s| waiter(*s)))
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            PERMITS as usize,
            "the permits were used in parallel"
        );
        // Each waiter was woken exactly once: when it was granted.
        assert_eq!(
            metric(&n, "keeper_semaphore_wakeups_total").await,
            WAITERS as u64
        );
        assert_eq!(
            metric(&n, "keeper_semaphore_grants_total").await,
            WAITERS as u64 + PERMITS
        );
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn semaphore_permits_are_granted_in_fifo_order() {
    bounded(T, async {
        let n = TestNode::start().await;
        let (a, b) = (session(&n, 10_000).await, session(&n, 10_000).await);
        let ka = sem_acquire(&n, "f", a, 2, 0).await.unwrap();
        let kb = sem_acquire(&n, "f", b, 2, 0).await.unwrap();
        let mut waiters = Vec::new();
        for i in 0..3 {
            let s = session(&n, 10_000).await;
            let app = n.app.clone();
            waiters.push(tokio::spawn(async move {
                let body = json!({"session": s, "permits_max": 2, "wait_ms": 20_000});
                (s, post_app(app, "/v1/semaphores/f/acquire", body).await)
            }));
            sem_queue_len(&n, "f", i + 1).await;
        }
        let queue: Vec<u64> = sem_queue_len(&n, "f", 3)
            .await
            .iter()
            .map(|c| c["session"].as_u64().unwrap())
            .collect();
        // Releasing the second holder frees one permit: the first waiter gets it.
        assert_eq!(sem_release(&n, "f", &kb).await, 204);
        let rest = sem_queue_len(&n, "f", 2).await;
        let holders: Vec<u64> = sem_show(&n, "f").await["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["session"].as_u64().unwrap())
            .collect();
        assert_eq!(holders, vec![a, queue[0]]);
        assert_eq!(rest[0]["session"], queue[1]);
        assert_eq!(sem_release(&n, "f", &ka).await, 204);
        let rest = sem_queue_len(&n, "f", 1).await;
        assert_eq!(rest[0]["session"], queue[2]);
        let first = waiters.remove(0).await.unwrap();
        assert_eq!(first.0, queue[0]);
        assert_eq!(first.1 .0, 200, "{:?}", first.1);
        let _ = waiters;
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_permits_max_disagreement_is_refused_not_overridden() {
    bounded(T, async {
        let n = TestNode::start().await;
        let (a, b) = (session(&n, 10_000).await, session(&n, 10_000).await);
        sem_acquire(&n, "p", a, 3, 0).await.unwrap();
        let e = sem_acquire(&n, "p", b, 4, 0).await.unwrap_err();
        assert_eq!(e["status"], 400, "{e}");
        assert_eq!(e["body"]["error"]["code"], "BadArguments");
        let message = e["body"]["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("permits_max 3") && message.contains('4'),
            "{message}"
        );
        let state = sem_show(&n, "p").await;
        assert_eq!(state["permits_max"], 3);
        assert_eq!(state["holders"].as_array().unwrap().len(), 1);
        assert_eq!(state["queue"], json!([]));
        let e = sem_acquire(&n, "p", b, 0, 0).await.unwrap_err();
        assert_eq!(e["status"], 400, "{e}");
        // A name that is not one path segment.
        let r = n
            .call(
                Method::POST,
                "/v1/semaphores/a%2Fb/acquire",
                Some(json!({"session": a, "permits_max": 1})),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text);
        n.shutdown().await;
    })
    .await;
}

/// Campaigns; `(key, term)` or `{status, body}`.
async fn campaign(
    n: &TestNode,
    name: &str,
    session: u64,
    value: &str,
    wait_ms: u64,
) -> Result<(String, u64), Value> {
    let r = n
        .call(
            Method::POST,
            &format!("/v1/elections/{name}/campaign"),
            Some(json!({"session": session, "value": value, "wait_ms": wait_ms})),
        )
        .await;
    if r.status == 200 {
        Ok((
            r.json["key"].as_str().unwrap().to_string(),
            r.json["term"].as_u64().unwrap(),
        ))
    } else {
        Err(json!({"status": r.status.as_u16(), "body": r.json}))
    }
}

async fn election(n: &TestNode, name: &str) -> Value {
    let r = n
        .call(Method::GET, &format!("/v1/elections/{name}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

async fn post(n: &TestNode, uri: &str, body: Value) -> common::Resp {
    n.call(Method::POST, uri, Some(body)).await
}

#[tokio::test]
async fn an_election_has_one_leader_whose_term_fences_and_rises() {
    bounded(T, async {
        let n = TestNode::start().await;
        assert_eq!(
            election(&n, "e").await,
            json!({"name": "e", "leader": null, "waiting": 0})
        );
        let (a, b) = (session(&n, 10_000).await, session(&n, 10_000).await);
        let (ka, ta) = campaign(&n, "e", a, "alpha", 0).await.expect("elected");
        let state = election(&n, "e").await;
        assert_eq!(state["leader"]["key"], ka.as_str());
        assert_eq!(state["leader"]["value"], "alpha");
        assert_eq!(state["leader"]["term"], ta);
        assert_eq!(state["leader"]["session"], a);
        // b waits behind a.
        let app = n.app.clone();
        let waiting = tokio::spawn(async move {
            post_app(
                app,
                "/v1/elections/e/campaign",
                json!({"session": b, "value": "beta", "wait_ms": 20_000}),
            )
            .await
        });
        for _ in 0..500 {
            if election(&n, "e").await["waiting"] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(election(&n, "e").await["waiting"], 1);
        let kb = {
            let r = n
                .call(Method::GET, "/v1/children/.keeper/elections/e", None)
                .await;
            let names: Vec<String> = r.json["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            names.into_iter().find(|k| *k != ka).expect("b's candidate")
        };
        // Only the leader proclaims.
        let r = post(&n, "/v1/elections/e/proclaim", json!({"key": kb, "value": "x"})).await;
        r.assert_error(409, "Fenced");
        assert!(r.text.contains("not the leader"), "{}", r.text);
        let r = post(&n, "/v1/elections/e/proclaim", json!({"key": ka, "value": "alpha2"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(election(&n, "e").await["leader"]["value"], "alpha2");
        // The term fences writes.
        assert_eq!(
            post(&n, "/v1/nodes/work", json!({"data": "0"})).await.status,
            201
        );
        let fenced = |token: u64| {
            json!({"data": token.to_string(), "fence": {"election": "e", "token": token}})
        };
        let r = n
            .call(Method::PUT, "/v1/nodes/work", Some(fenced(ta)))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        // A lock token of the same number is not an election term.
        let r = n
            .call(
                Method::PUT,
                "/v1/nodes/work",
                Some(json!({"data": "l", "fence": {"lock": "e", "token": ta}})),
            )
            .await;
        r.assert_error(409, "Fenced");
        let r = n
            .call(
                Method::PUT,
                "/v1/nodes/work",
                Some(json!({"data": "l", "fence": {"lock": "e", "election": "e", "token": ta}})),
            )
            .await;
        r.assert_error(400, "BadArguments");
        // Resign: b is elected with a higher term; a's term is stale.
        let r = post(&n, "/v1/elections/e/resign", json!({"key": ka})).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let (status, body) = waiting.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let tb = body["term"].as_u64().unwrap();
        assert_eq!(body["key"], kb.as_str());
        assert!(tb > ta, "terms rise: {ta} then {tb}");
        let r = n
            .call(Method::PUT, "/v1/nodes/work", Some(fenced(ta)))
            .await;
        r.assert_error(409, "Fenced");
        let r = n
            .call(
                Method::DELETE,
                &format!("/v1/nodes/work?fence_election=e&fence_token={ta}"),
                None,
            )
            .await;
        r.assert_error(409, "Fenced");
        let r = n
            .call(Method::PUT, "/v1/nodes/work", Some(fenced(tb)))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = post(&n, "/v1/elections/e/proclaim", json!({"key": ka, "value": "old"})).await;
        r.assert_error(404, "NoNode");
        let r = post(&n, "/v1/elections/e/resign", json!({"key": ka})).await;
        r.assert_error(404, "NoNode");
        // Nobody else campaigns: no time to wait is a Timeout, withdrawn.
        let e = campaign(&n, "e", a, "again", 0).await.unwrap_err();
        assert_eq!(e["status"], 504, "{e}");
        assert_eq!(election(&n, "e").await["waiting"], 0);
        // b's session ends: nobody leads.
        let r = n
            .call(Method::DELETE, &format!("/v1/sessions/{b}"), None)
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        assert_eq!(election(&n, "e").await["leader"], Value::Null);
        n.shutdown().await;
    })
    .await;
}

/// Serves `node`'s router on a free port; returns its base URL.
async fn serve(node: &TestNode) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = node.app.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A minimal SSE reader: `(event, data)` messages.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(url: &str) -> Sse {
        let resp = reqwest::get(url).await.expect("stream request");
        assert_eq!(resp.status(), 200, "{url}");
        Sse {
            resp,
            buf: String::new(),
        }
    }

    async fn next(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut kind, mut data) = (String::new(), Value::Null);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        kind = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).expect("JSON data");
                    }
                }
                if kind.is_empty() {
                    continue;
                }
                return Some((kind, data));
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// The leader (`key`, or `None`) of the next `leader` event.
    async fn leader(&mut self) -> Option<(String, String, u64)> {
        let (kind, data) = self
            .next(Duration::from_secs(10))
            .await
            .expect("a leader event");
        assert_eq!(kind, "leader", "{data}");
        let leader = &data["leader"];
        if leader.is_null() {
            return None;
        }
        Some((
            leader["key"].as_str().unwrap().to_string(),
            leader["value"].as_str().unwrap().to_string(),
            leader["term"].as_u64().unwrap(),
        ))
    }
}

#[tokio::test]
async fn the_election_event_stream_reports_every_change_of_leader() {
    bounded(T, async {
        let n = TestNode::start().await;
        let base = serve(&n).await;
        let mut events = Sse::open(&format!("{base}/v1/elections/x/events")).await;
        assert_eq!(events.leader().await, None, "nobody leads at first");
        let (a, b) = (session(&n, 10_000).await, session(&n, 10_000).await);
        let (ka, ta) = campaign(&n, "x", a, "A", 0).await.unwrap();
        assert_eq!(events.leader().await, Some((ka.clone(), "A".into(), ta)));
        // A second candidate changes nothing the stream reports.
        let app = n.app.clone();
        let waiting = tokio::spawn(async move {
            post_app(
                app,
                "/v1/elections/x/campaign",
                json!({"session": b, "value": "B", "wait_ms": 20_000}),
            )
            .await
        });
        for _ in 0..500 {
            if election(&n, "x").await["waiting"] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = post(
            &n,
            "/v1/elections/x/proclaim",
            json!({"key": ka, "value": "A2"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(events.leader().await, Some((ka.clone(), "A2".into(), ta)));
        // a's session ends: b leads, with a higher term.
        let r = n
            .call(Method::DELETE, &format!("/v1/sessions/{a}"), None)
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        let (status, body) = waiting.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let (kb, value, tb) = events.leader().await.expect("b leads");
        assert_eq!(
            (kb.as_str(), value.as_str()),
            (body["key"].as_str().unwrap(), "B")
        );
        assert_eq!(tb, body["term"].as_u64().unwrap());
        assert!(tb > ta);
        let r = post(&n, "/v1/elections/x/resign", json!({"key": kb})).await;
        assert_eq!(r.status, 204, "{}", r.text);
        assert_eq!(events.leader().await, None);
        // Nothing else is reported.
        assert!(events.next(Duration::from_millis(300)).await.is_none());
        n.shutdown().await;
    })
    .await;
}
