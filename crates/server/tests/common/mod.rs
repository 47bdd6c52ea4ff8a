//! Shared helpers of the server's integration tests: an in-process node on a
//! temp dir, a `oneshot` request helper, time bounds, and a child-process
//! guard for tests that run the real `keeper` binary.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use keeper_server::{Config, Node};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;
use tower::ServiceExt;

/// Fails the test if `fut` takes longer than `secs`.
pub async fn bounded<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("test exceeded its time bound of {secs}s"),
    }
}

/// A config for tests: temp data dir, short ticks.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        min_session_timeout_ms: 100,
        session_tick_ms: 50,
        reap_interval_ms: 100,
        min_zxid_wait_ms: 200,
        ..Config::default()
    }
}

/// An in-process node and its router.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub node: Option<Node>,
    pub app: Router,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let node = Node::start(config).await.expect("node starts");
        let app = node.app();
        TestNode {
            dir,
            node: Some(node),
            app,
        }
    }

    /// Sends one request; returns status, headers and the JSON body (Null if empty).
    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Resp {
        let body = match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        self.raw(Request::builder().method(method).uri(uri), body)
            .await
    }

    /// Sends a request with a raw body and extra headers.
    pub async fn raw(&self, builder: axum::http::request::Builder, body: Body) -> Resp {
        let req = builder
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(text.clone()))
        };
        Resp {
            status,
            headers,
            json,
            text,
        }
    }

    pub async fn shutdown(mut self) {
        let node = self.node.take().expect("running");
        drop(self.app);
        node.shutdown().await.expect("clean shutdown");
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Resp {
    /// The `X-Keeper-Zxid` header; panics if absent or not a number.
    pub fn zxid(&self) -> u64 {
        self.headers
            .get("x-keeper-zxid")
            .unwrap_or_else(|| panic!("no X-Keeper-Zxid on {} {}", self.status, self.text))
            .to_str()
            .expect("ascii")
            .parse()
            .expect("decimal zxid")
    }

    /// Asserts an error response: status, code, and the header.
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(self.json["error"]["code"], code, "body: {}", self.text);
        assert!(
            self.json["error"]["message"].is_string(),
            "body: {}",
            self.text
        );
        self.zxid();
        self
    }
}

/// Kills a child process (SIGKILL) when dropped, so a failing test leaves nothing behind.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Waits up to `secs` for the child to exit; returns its status.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let child = self.0.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.0 = None;
                return status;
            }
            if std::time::Instant::now() > deadline {
                self.kill9();
                panic!("child did not exit within {secs}s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts the real `keeper` binary on a free port with `dir`; waits until /readyz answers.
pub async fn spawn_keeper(dir: &std::path::Path, extra: &[&str]) -> (ChildGuard, String) {
    for _attempt in 0..5 {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_keeper"))
            .arg("--data-dir")
            .arg(dir)
            .arg("--client-addr")
            .arg(&addr)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn keeper");
        let mut guard = ChildGuard(Some(child));
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(status) = guard.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // Exited (port taken?): try another port.
                eprintln!("keeper exited early with {status}; retrying");
                guard.0 = None;
                break;
            }
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    return (guard, base);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if guard.0.is_some() {
            panic!("keeper did not become ready within 30s");
        }
    }
    panic!("could not start keeper");
}
