//! The HTTP API through `app()` + `oneshot` (no socket), one temp store per
//! test: every endpoint, every error code one node can produce, and malformed
//! inputs. Every response must carry `X-Keeper-Zxid`.

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use common::{bounded, TestNode};
use serde_json::json;

const T: u64 = 30;

#[tokio::test]
async fn create_read_set_delete_round_trip() {
    bounded(T, async {
        let n = TestNode::start().await;
        let r = n
            .call(Method::POST, "/v1/nodes/app", Some(json!({"data": "v1"})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["path"], "/app");
        let czxid = r.json["stat"]["czxid"].as_u64().unwrap();
        assert!(czxid > 0);
        assert!(r.zxid() >= czxid, "the header covers the write");
        assert_eq!(r.json["stat"]["version"], 0);
        assert_eq!(r.json["stat"]["data_length"], 2);

        let r = n.call(Method::GET, "/v1/nodes/app", None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["path"], "/app");
        assert_eq!(r.json["data"], "v1");
        assert!(r.json.get("data_b64").is_none());
        assert_eq!(r.json["stat"]["czxid"], czxid);
        assert!(r.zxid() >= czxid);

        let r = n
            .call(
                Method::PUT,
                "/v1/nodes/app",
                Some(json!({"data": "v2", "version": 0})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["path"], "/app");
        assert_eq!(r.json["stat"]["version"], 1);
        let mzxid = r.json["stat"]["mzxid"].as_u64().unwrap();
        assert!(mzxid > czxid);
        assert!(r.zxid() >= mzxid);

        let r = n
            .call(Method::GET, "/v1/nodes/app?consistency=linearizable", None)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["data"], "v2");

        let r = n
            .call(Method::DELETE, "/v1/nodes/app?version=1", None)
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        assert!(r.text.is_empty());
        assert!(r.zxid() > mzxid);

        n.call(Method::GET, "/v1/nodes/app", None)
            .await
            .assert_error(404, "NoNode");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn root_is_addressable_and_percent_encoding_is_decoded() {
    bounded(T, async {
        let n = TestNode::start().await;
        for uri in ["/v1/nodes", "/v1/nodes/"] {
            let r = n.call(Method::GET, uri, None).await;
            assert_eq!(r.status, 200, "{uri}: {}", r.text);
            assert_eq!(r.json["path"], "/");
        }
        let r = n
            .call(Method::POST, "/v1/nodes/a%20b", Some(json!({"data": "x"})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["path"], "/a b");
        let r = n.call(Method::GET, "/v1/children/", None).await;
        assert_eq!(r.status, 200);
        assert!(r.json["children"]
            .as_array()
            .unwrap()
            .contains(&json!("a b")));
        n.call(Method::POST, "/v1/nodes", None)
            .await
            .assert_error(409, "NodeExists");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn binary_data_round_trips_through_data_b64() {
    bounded(T, async {
        let n = TestNode::start().await;
        let r = n
            .call(
                Method::POST,
                "/v1/nodes/bin",
                Some(json!({"data_b64": "/wCA"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = n.call(Method::GET, "/v1/nodes/bin", None).await;
        assert_eq!(r.json["data_b64"], "/wCA", "non-UTF-8 comes back as base64");
        assert!(r.json.get("data").is_none());
        assert_eq!(r.json["stat"]["data_length"], 3);
        n.call(Method::POST, "/v1/nodes/txt", Some(json!({"data": "hé"})))
            .await;
        let r = n
            .call(Method::GET, "/v1/nodes/txt?encoding=base64", None)
            .await;
        assert_eq!(r.json["data_b64"], "aMOp");
        let r = n.call(Method::GET, "/v1/nodes/txt", None).await;
        assert_eq!(r.json["data"], "hé");
        // Empty data when neither field is given, and an empty body works too.
        let r = n.call(Method::POST, "/v1/nodes/empty", None).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = n.call(Method::GET, "/v1/nodes/empty", None).await;
        assert_eq!(r.json["data"], "");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn conditional_writes_and_tree_errors() {
    bounded(T, async {
        let n = TestNode::start().await;
        n.call(Method::POST, "/v1/nodes/p", Some(json!({}))).await;
        n.call(Method::POST, "/v1/nodes/p/c", Some(json!({}))).await;
        let e = n.call(Method::POST, "/v1/nodes/p", Some(json!({}))).await;
        e.assert_error(409, "NodeExists");
        assert_eq!(e.json["error"]["path"], "/p");
        n.call(Method::POST, "/v1/nodes/missing/child", Some(json!({})))
            .await
            .assert_error(404, "NoNode");
        n.call(
            Method::PUT,
            "/v1/nodes/p",
            Some(json!({"data": "x", "version": 7})),
        )
        .await
        .assert_error(409, "BadVersion");
        n.call(Method::DELETE, "/v1/nodes/p?version=5", None)
            .await
            .assert_error(409, "BadVersion");
        n.call(Method::DELETE, "/v1/nodes/p", None)
            .await
            .assert_error(409, "NotEmpty");
        n.call(Method::PUT, "/v1/nodes/nope", Some(json!({"data": "x"})))
            .await
            .assert_error(404, "NoNode");
        n.call(Method::DELETE, "/v1/nodes/nope", None)
            .await
            .assert_error(404, "NoNode");
        n.call(Method::GET, "/v1/children/nope", None)
            .await
            .assert_error(404, "NoNode");
        // Nothing above changed the tree: p still has version 0.
        let r = n.call(Method::GET, "/v1/nodes/p", None).await;
        assert_eq!(r.json["stat"]["version"], 0);
        assert_eq!(r.json["stat"]["num_children"], 1);
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sequential_nodes_get_increasing_ten_digit_suffixes() {
    bounded(T, async {
        let n = TestNode::start().await;
        n.call(Method::POST, "/v1/nodes/q", Some(json!({}))).await;
        let mut names = Vec::new();
        for _ in 0..3 {
            let r = n
                .call(
                    Method::POST,
                    "/v1/nodes/q/job-",
                    Some(json!({"mode": "persistent_sequential"})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            let path = r.json["path"].as_str().unwrap().to_string();
            let suffix = path.strip_prefix("/q/job-").expect("requested prefix kept");
            assert_eq!(suffix.len(), 10, "{path}");
            assert!(suffix.bytes().all(|b| b.is_ascii_digit()), "{path}");
            names.push(path);
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, names, "distinct and increasing");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn children_are_paged_with_limit_and_after() {
    bounded(T, async {
        let n = TestNode::start().await;
        n.call(Method::POST, "/v1/nodes/dir", Some(json!({}))).await;
        for name in ["e", "a", "d", "b", "c"] {
            let r = n
                .call(
                    Method::POST,
                    &format!("/v1/nodes/dir/{name}"),
                    Some(json!({})),
                )
                .await;
            assert_eq!(r.status, 201);
        }
        let r = n.call(Method::GET, "/v1/children/dir?limit=2", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["children"], json!(["a", "b"]));
        assert_eq!(r.json["more"], true);
        assert_eq!(r.json["stat"]["num_children"], 5);
        r.zxid();
        let r = n
            .call(Method::GET, "/v1/children/dir?limit=2&after=b", None)
            .await;
        assert_eq!(r.json["children"], json!(["c", "d"]));
        assert_eq!(r.json["more"], true);
        let r = n
            .call(Method::GET, "/v1/children/dir?limit=2&after=d", None)
            .await;
        assert_eq!(r.json["children"], json!(["e"]));
        assert_eq!(r.json["more"], false);
        let r = n.call(Method::GET, "/v1/children/dir", None).await;
        assert_eq!(r.json["children"], json!(["a", "b", "c", "d", "e"]));
        assert_eq!(r.json["more"], false);
        n.call(Method::GET, "/v1/children/dir?limit=0", None)
            .await
            .assert_error(400, "BadArguments");
        n.call(Method::GET, "/v1/children/dir?limit=x", None)
            .await
            .assert_error(400, "BadArguments");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn multi_applies_all_or_nothing() {
    bounded(T, async {
        let n = TestNode::start().await;
        n.call(Method::POST, "/v1/nodes/m", Some(json!({"data": "0"}))).await;
        let ok = n
            .call(
                Method::POST,
                "/v1/txn",
                Some(json!({"ops": [
                    {"op": "check", "path": "/m", "version": 0},
                    {"op": "create", "path": "/m/a", "data": "A"},
                    {"op": "create", "path": "/m/b", "data_b64": "Qg=="},
                    {"op": "set", "path": "/m", "data": "1", "version": 0},
                    {"op": "delete", "path": "/m/b"},
                ]})),
            )
            .await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        let results = ok.json["results"].as_array().unwrap();
        assert_eq!(results.len(), 5);
        assert_eq!(results[0], json!({"op": "check", "path": "/m"}));
        assert_eq!(results[1]["op"], "create");
        assert_eq!(results[1]["path"], "/m/a");
        assert!(results[1]["stat"]["czxid"].as_u64().unwrap() > 0);
        assert_eq!(results[3]["op"], "set");
        assert_eq!(results[3]["stat"]["version"], 1);
        assert_eq!(results[4], json!({"op": "delete", "path": "/m/b"}));
        // All ops of one multi share one zxid.
        assert_eq!(results[1]["stat"]["czxid"], results[3]["stat"]["mzxid"]);

        let before = n.call(Method::GET, "/v1/nodes/m", None).await;
        let fail = n
            .call(
                Method::POST,
                "/v1/txn",
                Some(json!({"ops": [
                    {"op": "create", "path": "/m/c"},
                    {"op": "set", "path": "/m", "data": "2"},
                    {"op": "check", "path": "/m/a", "version": 9},
                ]})),
            )
            .await;
        fail.assert_error(409, "BadVersion");
        assert_eq!(fail.json["error"]["index"], 2);
        assert_eq!(fail.json["error"]["path"], "/m/a");
        // Rolled back: no /m/c, /m unchanged.
        n.call(Method::GET, "/v1/nodes/m/c", None)
            .await
            .assert_error(404, "NoNode");
        let after = n.call(Method::GET, "/v1/nodes/m", None).await;
        assert_eq!(after.json["data"], "1");
        assert_eq!(after.json["stat"], before.json["stat"]);

        let nonode = n
            .call(
                Method::POST,
                "/v1/txn",
                Some(json!({"ops": [{"op": "delete", "path": "/zz"}]})),
            )
            .await;
        nonode.assert_error(404, "NoNode");
        assert_eq!(nonode.json["error"]["index"], 0);
        // Validation failures name their op too.
        let bad = n
            .call(
                Method::POST,
                "/v1/txn",
                Some(json!({"ops": [{"op": "check", "path": "/m"}, {"op": "delete", "path": "bad"}]})),
            )
            .await;
        bad.assert_error(400, "InvalidPath");
        assert_eq!(bad.json["error"]["index"], 1);
        n.call(Method::POST, "/v1/txn", Some(json!({"ops": []})))
            .await
            .assert_error(400, "BadArguments");
        n.call(
            Method::POST,
            "/v1/txn",
            Some(json!({"ops": [{"op": "rename", "path": "/m"}]})),
        )
        .await
        .assert_error(400, "BadArguments");
        n.call(
            Method::POST,
            "/v1/txn",
            Some(json!({"ops": [{"op": "delete", "path": "/m", "data": "x"}]})),
        )
        .await
        .assert_error(400, "BadArguments");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sessions_and_ephemerals() {
    bounded(T, async {
        let n = TestNode::start_with(|c| {
            c.min_session_timeout_ms = 1_000;
            c.max_session_timeout_ms = 20_000;
        })
        .await;
        let r = n
            .call(
                Method::POST,
                "/v1/sessions",
                Some(json!({"timeout_ms": 10})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["timeout_ms"], 1_000, "clamped up to the minimum");
        let r = n
            .call(
                Method::POST,
                "/v1/sessions",
                Some(json!({"timeout_ms": 999_999})),
            )
            .await;
        assert_eq!(r.json["timeout_ms"], 20_000, "clamped down to the maximum");
        let id = r.json["id"].as_u64().unwrap();
        assert!(id > 0);

        let r = n
            .call(Method::POST, &format!("/v1/sessions/{id}/keepalive"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json, json!({"id": id, "timeout_ms": 20_000}));

        n.call(
            Method::POST,
            "/v1/nodes/e",
            Some(json!({"mode": "ephemeral"})),
        )
        .await
        .assert_error(400, "BadArguments");
        let r = n
            .call(
                Method::POST,
                "/v1/nodes/e",
                Some(json!({"mode": "ephemeral", "session": id, "data": "mine"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["stat"]["ephemeral_owner"], id);
        n.call(Method::POST, "/v1/nodes/e/child", Some(json!({})))
            .await
            .assert_error(400, "NoChildrenForEphemerals");
        let r = n
            .call(
                Method::POST,
                "/v1/nodes/es-",
                Some(json!({"mode": "ephemeral_sequential", "session": id})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let seq_path = r.json["path"].as_str().unwrap().to_string();

        let r = n
            .call(Method::DELETE, &format!("/v1/sessions/{id}"), None)
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        // Its ephemerals went with it.
        n.call(Method::GET, "/v1/nodes/e", None)
            .await
            .assert_error(404, "NoNode");
        n.call(Method::GET, &format!("/v1/nodes{seq_path}"), None)
            .await
            .assert_error(404, "NoNode");
        // Closed: keepalive and close answer 410, and so does an unknown id.
        n.call(Method::POST, &format!("/v1/sessions/{id}/keepalive"), None)
            .await
            .assert_error(410, "SessionExpired");
        n.call(Method::DELETE, &format!("/v1/sessions/{id}"), None)
            .await
            .assert_error(410, "SessionExpired");
        n.call(Method::POST, "/v1/sessions/424242/keepalive", None)
            .await
            .assert_error(410, "SessionExpired");
        // An ephemeral for a session that does not exist is refused by apply.
        let r = n
            .call(
                Method::POST,
                "/v1/nodes/e2",
                Some(json!({"mode": "ephemeral", "session": id})),
            )
            .await;
        r.assert_error(410, "SessionExpired");
        n.call(Method::POST, "/v1/sessions/abc/keepalive", None)
            .await
            .assert_error(400, "BadArguments");
        n.call(Method::POST, "/v1/sessions", Some(json!({})))
            .await
            .assert_error(400, "BadArguments");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_inputs_are_4xx_in_the_error_format() {
    bounded(T, async {
        let n = TestNode::start_with(|c| {
            c.max_request_bytes = 4096;
            c.max_data_bytes = 1024;
        })
        .await;
        let post = |body: &'static str| {
            let n = &n;
            async move {
                n.raw(
                    Request::builder().method(Method::POST).uri("/v1/nodes/x"),
                    Body::from(body),
                )
                .await
            }
        };
        post("{not json").await.assert_error(400, "BadArguments");
        post(r#"{"data":"a","colour":"red"}"#)
            .await
            .assert_error(400, "BadArguments");
        post(r#"{"data_b64":"***"}"#)
            .await
            .assert_error(400, "BadArguments");
        post(r#"{"data":"a","data_b64":"YQ=="}"#)
            .await
            .assert_error(400, "BadArguments");
        post(r#"{"mode":"forever"}"#)
            .await
            .assert_error(400, "BadArguments");
        post(r#"{"mode":"ttl"}"#)
            .await
            .assert_error(400, "BadArguments");
        post(r#"{"ttl_ms":5}"#)
            .await
            .assert_error(400, "BadArguments");
        post(r#"[1,2]"#).await.assert_error(400, "BadArguments");

        // Oversized body: 413 in the JSON format, from the body limit.
        let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(10_000));
        n.raw(
            Request::builder().method(Method::POST).uri("/v1/nodes/big"),
            Body::from(big),
        )
        .await
        .assert_error(413, "TooLarge");
        // Data above max_data_bytes inside a body that fits: 413 as well.
        let data = format!(r#"{{"data":"{}"}}"#, "y".repeat(2_000));
        n.raw(
            Request::builder().method(Method::PUT).uri("/v1/nodes/big"),
            Body::from(data),
        )
        .await
        .assert_error(413, "TooLarge");

        for uri in [
            "/v1/nodes/a/",
            "/v1/nodes//a",
            "/v1/nodes/a/./b",
            "/v1/nodes/a/../b",
            "/v1/nodes/a%00b",
        ] {
            let r = n.call(Method::POST, uri, Some(json!({}))).await;
            r.assert_error(400, "InvalidPath");
            let r = n.call(Method::GET, uri, None).await;
            r.assert_error(400, "InvalidPath");
        }
        let long = format!("/v1/nodes/{}", "p".repeat(5_000));
        n.call(Method::GET, &long, None)
            .await
            .assert_error(400, "InvalidPath");

        n.call(Method::DELETE, "/v1/nodes/x?version=abc", None)
            .await
            .assert_error(400, "BadArguments");
        n.call(Method::DELETE, "/v1/nodes/x?version=-2", None)
            .await
            .assert_error(400, "BadArguments");
        n.call(Method::DELETE, "/v1/nodes/x?verison=1", None)
            .await
            .assert_error(400, "BadArguments");
        n.call(Method::GET, "/v1/nodes/x?consistency=eventual", None)
            .await
            .assert_error(400, "BadArguments");
        n.call(Method::PUT, "/v1/nodes/x", Some(json!({"version": "one"})))
            .await
            .assert_error(400, "BadArguments");

        // Routing errors are in the format too.
        let r = n.call(Method::GET, "/v2/nothing", None).await;
        r.assert_error(404, "NoNode");
        assert_eq!(r.json["error"]["message"], "no such endpoint");
        n.call(Method::PATCH, "/v1/nodes/x", None)
            .await
            .assert_error(405, "MethodNotAllowed");
        n.call(Method::GET, "/v1/txn", None)
            .await
            .assert_error(405, "MethodNotAllowed");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn min_zxid_header_waits_times_out_or_is_refused() {
    bounded(T, async {
        // A one-member ensemble: the cluster write path, where a zxid this
        // member has not applied may exist elsewhere, so it waits.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let n = TestNode::start_with(|c| {
            c.id = 1;
            c.peer_addr = format!("127.0.0.1:{port}");
            c.keepalive_confirm_wait_ms = c.min_session_timeout_ms;
            c.peers = keeper_server::config::PeerSpec::parse_list(&format!("1=127.0.0.1:{port}"))
                .expect("peers");
        })
        .await;
        let w = loop {
            let w = n.call(Method::POST, "/v1/nodes/z", Some(json!({}))).await;
            if w.status != 503 {
                break w;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(w.status, 201, "{}", w.text);
        let zxid = w.zxid();
        let with_header = |value: String| {
            let n = &n;
            async move {
                n.raw(
                    Request::builder()
                        .method(Method::GET)
                        .uri("/v1/nodes/z")
                        .header("x-keeper-min-zxid", value),
                    Body::empty(),
                )
                .await
            }
        };
        let r = with_header(zxid.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.zxid() >= zxid);
        let started = std::time::Instant::now();
        let r = with_header((zxid + 1000).to_string()).await;
        r.assert_error(504, "Timeout");
        assert!(started.elapsed() >= std::time::Duration::from_millis(150));
        with_header("soon".into())
            .await
            .assert_error(400, "BadArguments");
        with_header("-1".into())
            .await
            .assert_error(400, "BadArguments");

        // A waiting reader is released by a later write.
        let target = zxid + 1;
        let waiter = n.raw(
            Request::builder()
                .method(Method::GET)
                .uri("/v1/nodes/z")
                .header("x-keeper-min-zxid", target.to_string()),
            Body::empty(),
        );
        let writer = async {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            n.call(Method::PUT, "/v1/nodes/z", Some(json!({"data": "later"})))
                .await
        };
        let (r, _) = tokio::join!(waiter, writer);
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.zxid() >= target);
        n.shutdown().await;
    })
    .await;
}

/// A standalone member mints every zxid and commits it before a client can
/// see it: a min zxid above its committed zxid cannot be waited for, and is
/// refused at once (an API fuzzer found every endpoint answering 504 after
/// the full wait for made-up values).
#[tokio::test]
async fn a_standalone_member_refuses_a_min_zxid_it_never_committed_at_once() {
    bounded(T, async {
        let n = TestNode::start().await;
        let zxid = n
            .call(Method::POST, "/v1/nodes/z", Some(json!({})))
            .await
            .zxid();
        for (path, method) in [("/v1/nodes/z", Method::GET), ("/v1/sessions", Method::POST)] {
            for wanted in [zxid + 1, 1 << 63] {
                let started = std::time::Instant::now();
                let r = n
                    .raw(
                        Request::builder()
                            .method(method.clone())
                            .uri(path)
                            .header("x-keeper-min-zxid", wanted.to_string()),
                        Body::from(r#"{"timeout_ms": 5000}"#),
                    )
                    .await;
                r.assert_error(400, "BadArguments");
                assert!(r.text.contains("ahead of everything"), "{}", r.text);
                assert!(started.elapsed() < std::time::Duration::from_millis(150));
            }
        }
        let r = n
            .raw(
                Request::builder()
                    .method(Method::GET)
                    .uri("/v1/nodes/z")
                    .header("x-keeper-min-zxid", zxid.to_string()),
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        n.shutdown().await;
    })
    .await;
}

/// Issue 9, problem 13: a client sending made-up methods grew the request
/// metrics by one series per method; they all count as `OTHER`.
#[tokio::test]
async fn made_up_http_methods_count_as_other_in_metrics() {
    bounded(T, async {
        let n = TestNode::start().await;
        for i in 0..50 {
            let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
            let r = n.call(method, "/v1/nodes/x", None).await;
            assert_eq!(r.status, 405, "{}", r.text);
        }
        let text = n.call(Method::GET, "/metrics", None).await.text;
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("keeper_http_requests_total{") && !l.contains("method=\"GET\""))
            .collect();
        assert_eq!(
            series,
            vec!["keeper_http_requests_total{route=\"/v1/nodes/{*path}\",method=\"OTHER\",status=\"405\"} 50"],
            "{text}"
        );
        n.shutdown().await;
    })
    .await;
}

/// Issue 9, problem 13: `/v1/cluster/digest` answers under a steady write
/// load (it used to rescan until no write landed during a scan).
#[tokio::test]
async fn digest_answers_under_a_steady_write_load() {
    bounded(T, async {
        let n = std::sync::Arc::new(TestNode::start().await);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (n, stop) = (n.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = n
                        .call(
                            Method::POST,
                            &format!("/v1/nodes/w{w}-{i}"),
                            Some(json!({})),
                        )
                        .await;
                    assert_eq!(r.status, 201, "{}", r.text);
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        for _ in 0..20 {
            let r = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                n.call(Method::GET, "/v1/cluster/digest", None),
            )
            .await
            .expect("digest answers under load");
            assert_eq!(r.status, 200, "{}", r.text);
            assert!(r.json["digest"].as_u64().is_some());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        match std::sync::Arc::try_unwrap(n) {
            Ok(n) => n.shutdown().await,
            Err(_) => panic!("writers still hold the node"),
        }
    })
    .await;
}

#[tokio::test]
async fn sync_cluster_health_ready_and_metrics() {
    bounded(T, async {
        let n = TestNode::start_with(|c| c.id = 3).await;
        let w = n.call(Method::POST, "/v1/nodes/s", Some(json!({}))).await;
        let r = n.call(Method::POST, "/v1/sync", None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.json["zxid"].as_u64().unwrap() >= w.zxid());

        let r = n.call(Method::GET, "/v1/cluster", None).await;
        assert_eq!(r.status, 200);
        let c = &r.json;
        assert_eq!(c["id"], 3);
        assert_eq!(c["role"], "standalone");
        assert_eq!(c["leader"], 3);
        let epoch = c["epoch"].as_u64().unwrap();
        assert!(epoch >= 1);
        let applied = c["applied_zxid"].as_u64().unwrap();
        assert_eq!(applied >> 32, epoch, "zxids carry the epoch");
        assert!(applied >= w.zxid());
        assert_eq!(c["committed_zxid"], c["last_logged_zxid"]);
        assert_eq!(c["members"][0]["id"], 3);
        assert_eq!(c["members"][0]["client_addr"], "127.0.0.1:7181");
        assert_eq!(c["members"][0]["peer_addr"], "127.0.0.1:7888");

        let r = n.call(Method::GET, "/healthz", None).await;
        assert_eq!((r.status.as_u16(), r.json.clone()), (200, json!({"status": "ok"})));
        r.zxid();
        let r = n.call(Method::GET, "/readyz", None).await;
        assert_eq!((r.status.as_u16(), r.json.clone()), (200, json!({"status": "ready"})));

        let r = n.call(Method::GET, "/metrics", None).await;
        assert_eq!(r.status, 200);
        r.zxid();
        let ct = r.headers["content-type"].to_str().unwrap();
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        assert!(r.text.contains(
            "keeper_http_requests_total{route=\"/v1/nodes/{*path}\",method=\"POST\",status=\"201\"} 1"
        ), "{}", r.text);
        assert!(r.text.contains("keeper_log_batch_entries_count"));
        assert!(r.text.contains("keeper_log_append_seconds_bucket"));
        assert!(r.text.contains(&format!("keeper_applied_zxid {}", r.zxid())));
        let proposals: u64 = r
            .text
            .lines()
            .find_map(|l| l.strip_prefix("keeper_proposals_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(proposals >= 1);
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn containers_and_ttl_nodes_are_reaped() {
    bounded(T, async {
        let n = TestNode::start().await;
        let r = n
            .call(
                Method::POST,
                "/v1/nodes/box",
                Some(json!({"mode": "container"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        n.call(Method::POST, "/v1/nodes/box/item", Some(json!({})))
            .await;
        let r = n
            .call(
                Method::POST,
                "/v1/nodes/t",
                Some(json!({"mode": "ttl", "ttl_ms": 200})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        // The container stays while it has a child.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(n.call(Method::GET, "/v1/nodes/box", None).await.status, 200);
        n.call(Method::DELETE, "/v1/nodes/box/item", None).await;
        let gone = |path: &'static str| {
            let n = &n;
            async move {
                for _ in 0..100 {
                    if n.call(Method::GET, path, None).await.status == 404 {
                        return true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                false
            }
        };
        assert!(gone("/v1/nodes/box").await, "empty container reaped");
        assert!(gone("/v1/nodes/t").await, "expired ttl node reaped");
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn writes_survive_a_clean_restart_with_a_new_epoch() {
    bounded(T, async {
        let n = TestNode::start().await;
        n.call(Method::POST, "/v1/nodes/keep", Some(json!({"data": "me"})))
            .await;
        let epoch1 = n.call(Method::GET, "/v1/cluster", None).await.json["epoch"]
            .as_u64()
            .unwrap();
        let dir = n.dir.path().to_path_buf();
        let TestNode {
            dir: tmp,
            node,
            app,
        } = n;
        drop(app);
        node.unwrap().shutdown().await.unwrap();
        let node = keeper_server::Node::start(common::test_config(&dir))
            .await
            .unwrap();
        let n = TestNode {
            dir: tmp,
            app: node.app(),
            node: Some(node),
        };
        let r = n.call(Method::GET, "/v1/nodes/keep", None).await;
        assert_eq!(r.json["data"], "me");
        let c = n.call(Method::GET, "/v1/cluster", None).await.json;
        assert!(c["epoch"].as_u64().unwrap() > epoch1);
        let w = n
            .call(Method::POST, "/v1/nodes/next", Some(json!({})))
            .await;
        assert_eq!(
            w.json["stat"]["czxid"].as_u64().unwrap() >> 32,
            c["epoch"].as_u64().unwrap()
        );
        n.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_writes_are_group_committed_and_all_acknowledged() {
    bounded(T, async {
        let n = TestNode::start().await;
        let n = std::sync::Arc::new(n);
        let mut tasks = Vec::new();
        for i in 0..64 {
            let n = n.clone();
            tasks.push(tokio::spawn(async move {
                n.call(
                    Method::POST,
                    &format!("/v1/nodes/w{i}"),
                    Some(json!({"data": i.to_string()})),
                )
                .await
                .json["stat"]["czxid"]
                    .as_u64()
                    .unwrap()
            }));
        }
        let mut zxids = Vec::new();
        for t in tasks {
            zxids.push(t.await.unwrap());
        }
        zxids.sort();
        zxids.dedup();
        assert_eq!(zxids.len(), 64, "every write got its own zxid");
        let page = n.call(Method::GET, "/v1/children/", None).await;
        assert_eq!(page.json["children"].as_array().unwrap().len(), 64);
        let metrics = n.call(Method::GET, "/metrics", None).await.text;
        let batches: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("keeper_log_batch_entries_count "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(batches <= 64, "{batches}");
        let n = std::sync::Arc::into_inner(n).unwrap();
        n.shutdown().await;
    })
    .await;
}

/// A read's `X-Keeper-Zxid` is at or above the zxid of every change it shows,
/// even while writes are being applied (the store runs a step ahead of the
/// applied watch): a client that carries the header to another member never
/// reads older state there.
#[tokio::test]
async fn read_zxid_header_covers_what_the_read_shows_under_writes() {
    bounded(T, async {
        let n = std::sync::Arc::new(TestNode::start().await);
        let r = n
            .call(Method::POST, "/v1/nodes/hot", Some(json!({"data": "0"})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let writer = {
            let n = n.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    let r = n
                        .call(
                            Method::PUT,
                            "/v1/nodes/hot",
                            Some(json!({"data": i.to_string()})),
                        )
                        .await;
                    assert_eq!(r.status, 200, "{}", r.text);
                    let r = n
                        .call(
                            Method::POST,
                            &format!("/v1/nodes/hot/c{i}"),
                            Some(json!({})),
                        )
                        .await;
                    assert_eq!(r.status, 201, "{}", r.text);
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() {
            let r = n.call(Method::GET, "/v1/nodes/hot", None).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let mzxid = r.json["stat"]["mzxid"].as_u64().unwrap();
            let pzxid = r.json["stat"]["pzxid"].as_u64().unwrap();
            assert!(
                r.zxid() >= mzxid.max(pzxid),
                "get: header {} below {}",
                r.zxid(),
                mzxid.max(pzxid)
            );
            let r = n.call(Method::GET, "/v1/children/hot", None).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let pzxid = r.json["stat"]["pzxid"].as_u64().unwrap();
            assert!(
                r.zxid() >= pzxid,
                "children: header {} below {pzxid}",
                r.zxid()
            );
            reads += 1;
        }
        writer.await.expect("writer");
        assert!(reads > 0);
        // Stop the node before the process exits (RocksDB must not outlive it).
        match std::sync::Arc::try_unwrap(n) {
            Ok(node) => node.shutdown().await,
            Err(_) => panic!("the writer still holds the node"),
        }
    })
    .await;
}
