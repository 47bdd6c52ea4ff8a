//! The real `keeper` binary: durability across `kill -9`, graceful shutdown
//! on SIGTERM (exit 0, data intact), and ephemeral nodes vanishing after
//! keepalives stop. Each test binds free ports on 127.0.0.1 and kills its
//! child by PID (also on panic, through `ChildGuard`).

mod common;

use common::{bounded, spawn_keeper};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

async fn get_node(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = client
        .get(format!("{base}/v1/nodes{path}"))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    assert!(r.headers().contains_key("x-keeper-zxid"));
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, base) = spawn_keeper(dir.path(), &[]).await;
        let client = reqwest::Client::new();
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let mut writers = Vec::new();
        for w in 0..4 {
            let client = client.clone();
            let base = base.clone();
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let path = format!("/w{w}-{i}");
                    let data = format!("value {w} {i}");
                    let sent = client
                        .post(format!("{base}/v1/nodes{path}"))
                        .json(&json!({"data": data}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().as_u16() == 201 => {
                            acked.lock().await.push((path, data));
                        }
                        // The server died mid-request: unacknowledged, stop.
                        _ => return,
                    }
                }
            }));
        }
        // Let writes flow, then kill -9 while they are in flight.
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked.lock().await.len() < 200 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = child.pid();
        child.kill9();
        for w in writers {
            w.await.unwrap();
        }
        let acked = acked.lock().await.clone();
        assert!(
            acked.len() >= 50,
            "too few writes before the kill: {}",
            acked.len()
        );
        eprintln!("killed pid {pid} after {} acknowledged writes", acked.len());

        let (_child, base) = spawn_keeper(dir.path(), &[]).await;
        for (path, data) in &acked {
            let (status, body) = get_node(&client, &base, path).await;
            assert_eq!(status, 200, "acknowledged {path} lost after kill -9");
            assert_eq!(body["data"], json!(data), "{path}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_keeps_data() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, base) = spawn_keeper(dir.path(), &[]).await;
        let client = reqwest::Client::new();
        for i in 0..20 {
            let r = client
                .post(format!("{base}/v1/nodes/t{i}"))
                .json(&json!({"data": format!("d{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
        }
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait_exit(30);
        assert_eq!(exit.code(), Some(0), "graceful shutdown exits 0: {exit:?}");

        let (_child, base) = spawn_keeper(dir.path(), &[]).await;
        for i in 0..20 {
            let (status, body) = get_node(&client, &base, &format!("/t{i}")).await;
            assert_eq!(status, 200);
            assert_eq!(body["data"], json!(format!("d{i}")));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_lives_with_keepalives_and_dies_within_timeout_plus_tick() {
    const TIMEOUT_MS: u64 = 600;
    const TICK_MS: u64 = 100;
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let (_child, base) = spawn_keeper(
            dir.path(),
            &[
                "--min-session-timeout-ms",
                "100",
                "--session-tick-ms",
                &TICK_MS.to_string(),
            ],
        )
        .await;
        let client = reqwest::Client::new();
        let s: Value = client
            .post(format!("{base}/v1/sessions"))
            .json(&json!({"timeout_ms": TIMEOUT_MS}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(s["timeout_ms"], TIMEOUT_MS);
        let id = s["id"].as_u64().unwrap();
        let r = client
            .post(format!("{base}/v1/nodes/eph"))
            .json(&json!({"mode": "ephemeral", "session": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);

        // Keepalives every third of the timeout, for five timeouts: it survives.
        let until = Instant::now() + Duration::from_millis(5 * TIMEOUT_MS);
        let mut last_keepalive = Instant::now();
        while Instant::now() < until {
            assert_eq!(get_node(&client, &base, "/eph").await.0, 200);
            let r = client
                .post(format!("{base}/v1/sessions/{id}/keepalive"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status().as_u16(),
                200,
                "session expired despite keepalives"
            );
            last_keepalive = Instant::now();
            tokio::time::sleep(Duration::from_millis(TIMEOUT_MS / 3)).await;
        }

        // Keepalives stop: gone within timeout + one tick (+ slack for the HTTP round trips).
        let stopped = last_keepalive;
        let limit = Duration::from_millis(TIMEOUT_MS + TICK_MS + 300);
        loop {
            let (status, _) = get_node(&client, &base, "/eph").await;
            if status == 404 {
                break;
            }
            assert!(
                stopped.elapsed() < limit,
                "ephemeral still there {:?} after the last keepalive",
                stopped.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let gone_after = stopped.elapsed();
        assert!(
            gone_after >= Duration::from_millis(TIMEOUT_MS - 100),
            "expired too early: {gone_after:?}"
        );
        let r = client
            .post(format!("{base}/v1/sessions/{id}/keepalive"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 410);
    })
    .await;
}
