//! Watches on one in-process member: ZooKeeper's one-shot guarantees one by
//! one, event streams (scope, replay, live, no gap and no duplicate at the
//! seam), completeness under concurrent writers, compaction (410), slow
//! consumers (cut off, writes unaffected) and the metrics.
//!
//! Streams are read over a real socket (the router is served on a free
//! port) with a minimal SSE reader.

mod common;

use axum::http::Method;
use common::{bounded, TestNode};
use keeper_zab::Zxid;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const T: u64 = 60;

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

/// One SSE message: event type, parsed data, whether it had an id.
#[derive(Debug, Clone)]
struct Msg {
    kind: String,
    data: Value,
    id: Option<u64>,
}

/// A minimal SSE reader over a streaming response.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(url: &str) -> Sse {
        let resp = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .expect("stream request");
        assert_eq!(resp.status(), 200, "{url}");
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next message, or `None` when the stream ends or `wait` passes.
    async fn next(&mut self, wait: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut msg = Msg {
                    kind: String::new(),
                    data: Value::Null,
                    id: None,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        msg.kind = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        msg.data = serde_json::from_str(v).expect("event data is JSON");
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        msg.id = Some(v.parse().expect("numeric id"));
                    }
                }
                if msg.kind.is_empty() {
                    continue; // keep-alive comment
                }
                return Some(msg);
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Change events (not progress) until one at or above `zxid` completes
    /// (or `wait` passes): `(zxid, type, path)`.
    async fn changes_through(&mut self, zxid: u64, wait: Duration) -> Vec<(u64, String, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = self.next(left).await else {
                panic!("stream ended or stalled before zxid {zxid}; got {out:?}");
            };
            let z = m.data["zxid"].as_u64().expect("zxid");
            match m.kind.as_str() {
                "progress" => {}
                "cut_off" => panic!("cut off: {:?}", m.data),
                _ => out.push((
                    z,
                    m.kind.clone(),
                    m.data["path"].as_str().expect("path").to_string(),
                )),
            }
            if z >= zxid && m.id.is_some() {
                return out;
            }
        }
    }
}

async fn create(n: &TestNode, path: &str) -> u64 {
    let r = n
        .call(Method::POST, &format!("/v1/nodes{path}"), Some(json!({})))
        .await;
    assert_eq!(r.status, 201, "create {path}: {}", r.text);
    r.json["stat"]["czxid"].as_u64().unwrap()
}

async fn set(n: &TestNode, path: &str, data: &str) -> u64 {
    let r = n
        .call(
            Method::PUT,
            &format!("/v1/nodes{path}"),
            Some(json!({ "data": data })),
        )
        .await;
    assert_eq!(r.status, 200, "set {path}: {}", r.text);
    r.json["stat"]["mzxid"].as_u64().unwrap()
}

async fn delete(n: &TestNode, path: &str) -> u64 {
    let r = n
        .call(Method::DELETE, &format!("/v1/nodes{path}"), None)
        .await;
    assert_eq!(r.status, 204, "delete {path}: {}", r.text);
    r.zxid()
}

/// A one-shot watch through the router: `(status, event or Null)`.
async fn watch_once(n: &TestNode, path: &str, query: &str) -> (u16, Value) {
    let r = n
        .call(Method::GET, &format!("/v1/watch{path}?{query}"), None)
        .await;
    (r.status.as_u16(), r.json)
}

#[tokio::test]
async fn each_watch_kind_fires_on_zookeepers_event_types() {
    bounded(T, async {
        let n = TestNode::start().await;
        create(&n, "/d").await;
        create(&n, "/c").await;
        let z0 = n.call(Method::GET, "/v1/nodes/d", None).await.zxid();

        // data: set fires data_changed.
        let s1 = set(&n, "/d", "x").await;
        let (st, body) = watch_once(&n, "/d", &format!("kind=data&after_zxid={z0}")).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["event"]["type"], "data_changed");
        assert_eq!(body["event"]["zxid"], s1);
        assert_eq!(body["event"]["path"], "/d");

        // children: a create below fires children_changed; a set of the node does not.
        let before = set(&n, "/c", "ignored").await;
        let cz = create(&n, "/c/k").await;
        let (_, body) = watch_once(&n, "/c", &format!("kind=children&after_zxid={before}")).await;
        assert_eq!(body["event"]["type"], "children_changed");
        assert_eq!(body["event"]["zxid"], cz);

        // exists on a missing node fires on create.
        let (st, _) = watch_once(&n, "/e", "kind=data&wait_ms=10").await;
        assert_eq!(st, 404, "a data watch needs the node");
        let at = n.call(Method::GET, "/v1/nodes/", None).await.zxid();
        let ez = create(&n, "/e").await;
        let (_, body) = watch_once(&n, "/e", &format!("kind=exists&after_zxid={at}")).await;
        assert_eq!(body["event"]["type"], "created");
        assert_eq!(body["event"]["zxid"], ez);

        // A delete fires both the data and the children watch.
        let at = n.call(Method::GET, "/v1/nodes/", None).await.zxid();
        let dz = delete(&n, "/d").await;
        for kind in ["data", "children", "exists"] {
            let (_, body) = watch_once(&n, "/d", &format!("kind={kind}&after_zxid={at}")).await;
            assert_eq!(body["event"]["type"], "deleted", "{kind}: {body}");
            assert_eq!(body["event"]["zxid"], dz, "{kind}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_one_shot_watch_fires_once_with_the_first_change_and_times_out_to_null() {
    bounded(T, async {
        let n = TestNode::start().await;
        create(&n, "/a").await;
        // Armed now, two changes follow: the answer is the first one only.
        let app = n.app.clone();
        let waiter = tokio::spawn(async move {
            let req = axum::http::Request::builder()
                .uri("/v1/watch/a?kind=data&wait_ms=20000")
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        });
        // Let the watch register before writing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let first = set(&n, "/a", "1").await;
        set(&n, "/a", "2").await;
        let body = waiter.await.unwrap();
        assert_eq!(body["event"]["zxid"], first, "{body}");
        assert_eq!(body["event"]["stat"]["version"], 1);

        let started = Instant::now();
        let (st, body) = watch_once(&n, "/a", "kind=data&wait_ms=100").await;
        assert_eq!(st, 200);
        assert_eq!(body, json!({"event": null}));
        assert!(started.elapsed() >= Duration::from_millis(100));
    })
    .await;
}

#[tokio::test]
async fn a_stream_covers_the_node_and_its_children_and_recursive_covers_the_subtree() {
    bounded(T, async {
        let n = TestNode::start().await;
        let base = serve(&n).await;
        create(&n, "/s").await;
        let mut flat = Sse::open(&format!("{base}/v1/events/s")).await;
        let mut deep =
            Sse::open(&format!("{base}/v1/events/s?recursive=true&with_data=true")).await;
        let first = flat.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.kind, "progress", "a stream starts with its position");
        deep.next(Duration::from_secs(5)).await.unwrap();
        create(&n, "/s/a").await;
        create(&n, "/s/a/b").await;
        let last = set(&n, "/s/a/b", "deep").await;
        let fence = set(&n, "/s", "fence").await;
        assert!(fence > last);

        let got = flat.changes_through(fence, Duration::from_secs(10)).await;
        let kinds: Vec<(&str, &str)> = got
            .iter()
            .map(|(_, k, p)| (k.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("created", "/s/a"),
                ("children_changed", "/s"),
                // /s/a's own children changed: an event at a direct child.
                ("children_changed", "/s/a"),
                ("data_changed", "/s"),
            ]
        );
        let got = deep.changes_through(fence, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 6, "{got:?}");
        assert!(got.contains(&(last, "data_changed".into(), "/s/a/b".into())));
    })
    .await;
}

#[tokio::test]
async fn with_data_carries_stat_and_data_and_ids_mark_whole_zxids() {
    bounded(T, async {
        let n = TestNode::start().await;
        let base = serve(&n).await;
        let mut s = Sse::open(&format!("{base}/v1/events/?recursive=true&with_data=true")).await;
        s.next(Duration::from_secs(5)).await.unwrap();
        let cz = create(&n, "/w").await;
        let m1 = s.next(Duration::from_secs(5)).await.unwrap();
        let m2 = s.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            (m1.kind.as_str(), m1.id),
            ("created", None),
            "not the last of its zxid"
        );
        assert_eq!((m2.kind.as_str(), m2.id), ("children_changed", Some(cz)));
        assert_eq!(m1.data["stat"]["czxid"], cz);
        assert_eq!(m1.data["data"], "");
        let sz = set(&n, "/w", "hello").await;
        let m = s.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(m.data["data"], "hello");
        assert_eq!(m.data["stat"]["mzxid"], sz);
        assert_eq!(m.id, Some(sz));
    })
    .await;
}

/// Writers make creates, sets, deletes and multis under /load while a
/// recursive stream that started by replaying from zxid 0 consumes: the
/// stream's changes equal the history, every acknowledged write is there,
/// in zxid order, none twice.
#[tokio::test]
async fn a_replaying_stream_under_concurrent_writers_misses_and_repeats_nothing() {
    bounded(T, async {
        let n = TestNode::start().await;
        let base = serve(&n).await;
        create(&n, "/load").await;
        create(&n, "/other").await;
        for i in 0..50 {
            create(&n, &format!("/load/pre{i}")).await;
        }
        let writers = 6;
        let per_writer = 60;
        let stop_at = Instant::now() + Duration::from_secs(20);
        let mut handles = Vec::new();
        for w in 0..writers {
            let app = n.app.clone();
            handles.push(tokio::spawn(async move {
                let node = WriteClient { app };
                let mut acked: Vec<Option<u64>> = Vec::new();
                for i in 0..per_writer {
                    if Instant::now() > stop_at {
                        break;
                    }
                    let p = format!("/load/w{w}-{i}");
                    acked.push(node.write(Method::POST, &p, json!({"data": "c"})).await);
                    acked.push(node.write(Method::PUT, &p, json!({"data": "s"})).await);
                    acked.push(
                        node.write(
                            Method::POST,
                            "/txn",
                            json!({"ops": [
                                {"op": "create", "path": format!("{p}/m"), "data": "m"},
                                {"op": "set", "path": p.clone(), "data": "t"},
                            ]}),
                        )
                        .await,
                    );
                    if i % 3 == 0 {
                        acked.push(
                            node.write(Method::DELETE, &format!("{p}/m"), json!(null))
                                .await,
                        );
                    }
                    // Outside the watched subtree: must not show up.
                    node.write(Method::PUT, "/other", json!({"data": "o"}))
                        .await;
                }
                acked
            }));
        }
        // Start mid-way, replaying from the beginning.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut stream =
            Sse::open(&format!("{base}/v1/events/load?recursive=true&from_zxid=0")).await;
        let mut acked: Vec<u64> = Vec::new();
        for h in handles {
            acked.extend(h.await.unwrap().into_iter().flatten());
        }
        let fence = set(&n, "/load", "fence").await;
        let got = stream.changes_through(fence, Duration::from_secs(30)).await;

        // The history, read directly, filtered to the subtree.
        let store = n.node.as_ref().unwrap().state().store.clone();
        let keeper_store::ChangesRead::Changes(history) =
            store.read_changes(Zxid::ZERO, usize::MAX).unwrap()
        else {
            panic!("compacted")
        };
        let want: Vec<(u64, String, String)> = history
            .iter()
            .filter(|c| c.path == "/load" || c.path.starts_with("/load/"))
            .filter(|c| c.zxid.0 <= fence)
            .map(|c| {
                (
                    c.zxid.0,
                    keeper_server::watches::kind_name(c.kind).to_string(),
                    c.path.clone(),
                )
            })
            .collect();
        assert_eq!(got.len(), want.len(), "event counts differ");
        assert_eq!(got, want);
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "zxid order");
        let seen: BTreeSet<u64> = got.iter().map(|e| e.0).collect();
        for z in &acked {
            assert!(
                seen.contains(z),
                "acknowledged write at zxid {z} has no event"
            );
        }
        let distinct: BTreeSet<&(u64, String, String)> = got.iter().collect();
        assert_eq!(distinct.len(), got.len(), "a change was delivered twice");
        eprintln!(
            "stream delivered {} changes of {} acknowledged writes",
            got.len(),
            acked.len()
        );
    })
    .await;
}

/// Sends writes through the router; returns the zxid of each.
struct WriteClient {
    app: axum::Router,
}

impl WriteClient {
    /// Sends a write; returns the zxid it got when the answer names it
    /// (the new stat of a create, a set, or a txn's set; not a delete).
    async fn write(&self, method: Method, path: &str, body: Value) -> Option<u64> {
        let uri = if path == "/txn" {
            "/v1/txn".to_string()
        } else {
            format!("/v1/nodes{path}")
        };
        let body = if body.is_null() {
            axum::body::Body::empty()
        } else {
            axum::body::Body::from(body.to_string())
        };
        let req = axum::http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let resp = tower::ServiceExt::oneshot(self.app.clone(), req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(status.is_success(), "{uri}: {status}");
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let stat = if v["results"].is_array() {
            &v["results"][1]["stat"]
        } else {
            &v["stat"]
        };
        stat["mzxid"].as_u64()
    }
}

#[tokio::test]
async fn a_resume_point_below_the_history_is_410_compacted_with_the_oldest_zxid() {
    bounded(T, async {
        let n = TestNode::start_with(|c| c.log_segment_bytes = 1).await;
        let base = serve(&n).await;
        for i in 0..10 {
            create(&n, &format!("/c{i}")).await;
        }
        let store = n.node.as_ref().unwrap().state().store.clone();
        store.flush_tree().unwrap();
        let applied = store.last_applied();
        store.compact_log_before(applied).unwrap();
        let floor = store.changes_floor().0;
        assert!(floor > 0, "something was compacted");

        let r = reqwest::get(format!("{base}/v1/events/?recursive=true&from_zxid=0"))
            .await
            .unwrap();
        assert_eq!(r.status(), 410);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "Compacted");
        assert_eq!(body["error"]["oldest_zxid"], floor);

        let (st, body) = watch_once(&n, "/c1", "kind=data&after_zxid=0&wait_ms=10").await;
        assert_eq!(st, 410, "{body}");
        assert_eq!(body["error"]["oldest_zxid"], floor);

        // From the floor itself, the stream works.
        let mut s = Sse::open(&format!(
            "{base}/v1/events/?recursive=true&from_zxid={floor}"
        ))
        .await;
        let first = s.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.data["zxid"], floor);
    })
    .await;
}

#[tokio::test]
async fn a_stream_that_stops_reading_is_cut_off_with_its_resume_zxid_and_writes_go_on() {
    bounded(T, async {
        let n = TestNode::start_with(|c| c.watch_stream_buffer = 4).await;
        let base = serve(&n).await;
        create(&n, "/big").await;
        let mut stuck = Sse::open(&format!("{base}/v1/events/big?with_data=true")).await;
        let start = stuck.next(Duration::from_secs(5)).await.unwrap();
        let start = start.data["zxid"].as_u64().unwrap();
        // Large values fill the socket buffers fast; then the stream's own
        // buffer fills and the hub cuts it off. The writes never wait on it.
        let value = "v".repeat(256 * 1024);
        let writes = 120;
        let began = Instant::now();
        let mut last = 0;
        for _ in 0..writes {
            last = set(&n, "/big", &value).await;
        }
        let elapsed = began.elapsed();
        eprintln!(
            "{writes} sets of 256 KiB with a stuck stream: {:.0} sets/s",
            writes as f64 / elapsed.as_secs_f64()
        );
        let metrics = n.call(Method::GET, "/metrics", None).await.text;
        assert!(
            metrics.contains("keeper_watch_slow_consumers_total 1"),
            "{}",
            metrics
                .lines()
                .filter(|l| l.contains("watch"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // Reading now: the buffered changes, in order, then the cut-off.
        let mut seen = Vec::new();
        let cut = loop {
            let m = stuck
                .next(Duration::from_secs(10))
                .await
                .expect("a cut_off event");
            match m.kind.as_str() {
                "cut_off" => break m,
                "data_changed" => seen.push(m.data["zxid"].as_u64().unwrap()),
                _ => {}
            }
        };
        assert_eq!(cut.data["reason"], "slow_consumer");
        let resume = cut.data["zxid"].as_u64().unwrap();
        if let Some(l) = seen.last() {
            assert_eq!(*l, resume, "the resume point is the last change delivered");
        } else {
            assert_eq!(resume, start);
        }
        assert!(resume < last);
        assert!(
            stuck.next(Duration::from_secs(1)).await.is_none(),
            "the stream ended"
        );
        // Resuming from there delivers the rest, none twice.
        let mut again = Sse::open(&format!("{base}/v1/events/big?from_zxid={resume}")).await;
        let rest = again.changes_through(last, Duration::from_secs(30)).await;
        let zxids: Vec<u64> = rest.iter().map(|e| e.0).collect();
        assert!(zxids.first().is_some_and(|z| *z > resume));
        assert_eq!(*zxids.last().unwrap(), last);
        assert_eq!(seen.len() + zxids.len(), writes, "every set exactly once");
    })
    .await;
}

#[tokio::test]
async fn watch_bounds_are_enforced_and_counted() {
    bounded(T, async {
        let n = TestNode::start_with(|c| {
            c.max_watch_streams = 1;
            c.max_watches_per_stream = 2;
        })
        .await;
        let base = serve(&n).await;
        let r = reqwest::get(format!("{base}/v1/events/?also=/a&also=/b"))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "three paths on a stream of at most two");
        let mut open = Sse::open(&format!("{base}/v1/events/?also=/a")).await;
        open.next(Duration::from_secs(5)).await.unwrap();
        let r = reqwest::get(format!("{base}/v1/events/")).await.unwrap();
        assert_eq!(r.status(), 503, "one stream per member");
        let (st, _) = watch_once(&n, "/", "kind=exists&wait_ms=10").await;
        assert_eq!(st, 503, "one-shot watches count too");
        let metrics = n.call(Method::GET, "/metrics", None).await.text;
        assert!(metrics.contains("keeper_watch_streams_open 1"), "{metrics}");
        assert!(metrics.contains("keeper_watch_streams_refused_total 2"));
        drop(open);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (st, _) = watch_once(&n, "/", "kind=exists&wait_ms=10").await;
            if st == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "a closed stream frees its slot");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
