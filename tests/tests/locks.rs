//! The lock recipe on a real 3-member cluster: concurrent clients on all
//! members take one lock in turns and increment a counter with fenced
//! writes. Bounded in time; the `Cluster` guard kills every process by PID.
//!
//! `KEEPER_LOCKS_ROUNDS` (default 50, the check; about 6 s in a
//! debug build) sets how many times each of the eight clients takes the lock.

use keeper_tests::{call, create, http_client, read, Cluster};
use reqwest::Method;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TEST_LIMIT: Duration = Duration::from_secs(300);
const ELECTION_LIMIT: Duration = Duration::from_secs(20);
const CLIENTS: usize = 8;

fn rounds() -> usize {
    std::env::var("KEEPER_LOCKS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

async fn session(http: &reqwest::Client, url: &str) -> u64 {
    let r = call(
        http,
        Method::POST,
        &format!("{url}/v1/sessions"),
        Some(json!({"timeout_ms": 10_000})),
    )
    .await
    .expect("session create");
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_u64().unwrap()
}

/// Keeps `id` alive through `url` until `stop`.
async fn keepalive(url: String, id: u64, stop: Arc<std::sync::atomic::AtomicBool>) {
    let http = http_client();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = call(
            &http,
            Method::POST,
            &format!("{url}/v1/sessions/{id}/keepalive"),
            None,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn acquire(http: &reqwest::Client, url: &str, session: u64) -> (String, u64) {
    let r = call(
        http,
        Method::POST,
        &format!("{url}/v1/locks/counter/acquire"),
        Some(json!({"session": session, "wait_ms": 15_000})),
    )
    .await
    .expect("acquire");
    assert_eq!(r.status, 200, "acquire: {:?}", r.body);
    (
        r.body["key"].as_str().unwrap().to_string(),
        r.body["fencing_token"].as_u64().unwrap(),
    )
}

async fn fenced_set(
    http: &reqwest::Client,
    url: &str,
    value: u64,
    token: u64,
) -> keeper_tests::Reply {
    call(
        http,
        Method::PUT,
        &format!("{url}/v1/nodes/counter"),
        Some(json!({"data": value.to_string(), "fence": {"lock": "counter", "token": token}})),
    )
    .await
    .expect("fenced set")
}

async fn counter(http: &reqwest::Client, url: &str) -> u64 {
    let r = read(http, url, "/counter", false).await.expect("read");
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["data"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_on_three_members_increment_a_counter_under_a_fenced_lock() {
    tokio::time::timeout(TEST_LIMIT, async {
        let rounds = rounds();
        let cluster = Cluster::start(3);
        cluster.expect_leader(ELECTION_LIMIT).await;
        let urls = cluster.urls();
        let http = http_client();
        let mut made = false;
        for _ in 0..50 {
            if let Ok(r) = create(&http, &urls[0], "/counter", "0").await {
                if r.status == 201 {
                    made = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(made, "could not create /counter");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // (value written, token, client) per grant.
        let grants = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let url = urls[c % urls.len()].clone();
            let (grants, stop) = (grants.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let http = http_client();
                let id = session(&http, &url).await;
                let alive = tokio::spawn(keepalive(url.clone(), id, stop));
                for _ in 0..rounds {
                    let (key, token) = acquire(&http, &url, id).await;
                    // This member saw the previous holder's release, so it has
                    // applied its write (lower zxid) too: a local read is fresh.
                    let value = counter(&http, &url).await + 1;
                    let r = fenced_set(&http, &url, value, token).await;
                    assert_eq!(r.status, 200, "fenced set by the holder: {:?}", r.body);
                    grants.lock().unwrap().push((value, token, c));
                    let r = call(
                        &http,
                        Method::DELETE,
                        &format!("{url}/v1/locks/counter/{key}"),
                        None,
                    )
                    .await
                    .expect("release");
                    assert_eq!(r.status, 204, "release: {:?}", r.body);
                }
                alive.abort();
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let elapsed = started.elapsed();
        let mut grants = grants.lock().unwrap().clone();
        let total = (CLIENTS * rounds) as u64;
        assert_eq!(grants.len() as u64, total);
        eprintln!(
            "{total} grants in {elapsed:?} ({:.1} grants/s, 3 members, {CLIENTS} clients)",
            total as f64 / elapsed.as_secs_f64()
        );
        // Mutual exclusion: every increment saw the previous one.
        assert_eq!(counter(&http, &urls[0]).await, total);
        grants.sort();
        for (i, (value, _, _)) in grants.iter().enumerate() {
            assert_eq!(*value, i as u64 + 1, "grant values are 1..={total}");
        }
        for w in grants.windows(2) {
            assert!(
                w[1].1 > w[0].1,
                "tokens rise in grant order: {:?} then {:?}",
                w[0],
                w[1]
            );
        }
        // A stale token is fenced off, on every member, also while someone holds.
        let (_, last, _) = *grants.last().unwrap();
        let id = session(&http, &urls[1]).await;
        let (key, token) = acquire(&http, &urls[1], id).await;
        assert!(token > last);
        for url in &urls {
            let r = fenced_set(&http, url, 0, last).await;
            assert_eq!((r.status, r.code()), (409, Some("Fenced")), "{:?}", r.body);
        }
        assert_eq!(counter(&http, &urls[1]).await, total);
        assert_eq!(
            fenced_set(&http, &urls[2], total + 1, token).await.status,
            200
        );
        let r = call(
            &http,
            Method::DELETE,
            &format!("{}/v1/locks/counter/{key}", urls[1]),
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 204);
        let r = fenced_set(&http, &urls[0], 0, token).await;
        assert_eq!(r.code(), Some("Fenced"), "released token: {:?}", r.body);
    })
    .await
    .expect("locks test exceeded its time limit");
}
