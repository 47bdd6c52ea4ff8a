//! SIGTERM drains: a leader that is stopped tells its followers, which elect a new
//! leader at once instead of waiting for their election timeout. Proven with an
//! election timeout of 5 s: without the drain, no new leader could exist before it.
//! And a rolling restart of 3 members (SIGTERM, restart, wait for /readyz, next, as
//! the StatefulSet controller does) under a steady write load, which reports the
//! longest write outage it saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keeper_tests::{call, create, get_json, http_client, Cluster};

/// tick 50 ms x 100 ticks: a follower waits 5 to 10 s before it starts an election alone.
const SLOW_ELECTION: &[&str] = &[
    "--election-timeout-ticks",
    "100",
    "--step-down-ticks",
    "100",
];

async fn ready(url: &str) -> bool {
    call(
        &http_client(),
        reqwest::Method::GET,
        &format!("{url}/readyz"),
        None,
    )
    .await
    .is_ok_and(|r| r.status == 200)
}

/// Waits until the running members other than `gone` agree on a leader that is not `gone`.
async fn new_leader(cluster: &Cluster, gone: u64, timeout: Duration) -> Option<u64> {
    let http = http_client();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let mut leaders = Vec::new();
        for m in cluster.members.iter().filter(|m| m.id != gone) {
            let v = get_json(&http, &format!("{}/v1/cluster", m.url()))
                .await
                .ok();
            leaders.push(v.and_then(|v| v["leader"].as_u64()));
        }
        if let Some(Some(l)) = leaders.first() {
            if *l != gone && leaders.iter().all(|x| *x == Some(*l)) {
                return Some(*l);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_hands_over_before_the_election_timeout() {
    let mut cluster = Cluster::start_with(3, SLOW_ELECTION);
    let leader = cluster.expect_leader(Duration::from_secs(60)).await;
    let started = Instant::now();
    let code = cluster.stop(leader, Duration::from_secs(20));
    assert_eq!(code, Some(0), "the leader did not exit cleanly on SIGTERM");
    let successor = new_leader(&cluster, leader, Duration::from_secs(4)).await;
    let took = started.elapsed();
    assert!(
        successor.is_some(),
        "no new leader {took:?} after stopping leader {leader} (the election timeout is 5 s):\n{}\n{}",
        cluster.describe().await,
        cluster.log_tail(leader, 20)
    );
    eprintln!("leader {leader} stopped; member {successor:?} leads {took:?} after SIGTERM");
    let r = create(
        &http_client(),
        &cluster.member(successor.unwrap()).url(),
        "/after",
        "x",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_three_members_under_write_load() {
    let mut cluster = Cluster::start(3);
    cluster.expect_leader(Duration::from_secs(30)).await;
    let urls = cluster.urls();
    let stop = Arc::new(AtomicBool::new(false));
    // Acknowledged write times, measured from `t0`.
    let t0 = Instant::now();
    let acked: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..2usize {
        let (stop, acked, urls) = (stop.clone(), acked.clone(), urls.clone());
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(1500))
                .build()
                .unwrap();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Any member: followers forward writes to the leader.
                let url = &urls[(i + w) % urls.len()];
                if let Ok(r) = create(&http, url, &format!("/roll-{w}-{i}"), "v").await {
                    if r.status == 201 {
                        acked.lock().unwrap().push(t0.elapsed());
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = http_client();
    // The StatefulSet controller's order: the highest ordinal first.
    for id in [3u64, 2, 1] {
        let code = cluster.stop(id, Duration::from_secs(20));
        assert_eq!(code, Some(0), "member {id} did not exit cleanly on SIGTERM");
        cluster.spawn(id);
        let url = cluster.member(id).url();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(&url).await {
            assert!(
                Instant::now() < deadline,
                "member {id} not ready after restart:\n{}",
                cluster.describe().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = &http;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let mut times = acked.lock().unwrap().clone();
    times.sort();
    let outage = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "rolling restart of 3 members: {} writes acknowledged, longest write outage {outage:?}",
        times.len()
    );
    assert!(
        times.len() > 100,
        "too few writes went through: {}",
        times.len()
    );
    // With the drain the outage is one election on live links, well below the
    // 0.5-1 s election timeout plus a re-sync.
    assert!(
        outage < Duration::from_secs(3),
        "writes stopped for {outage:?} during the rolling restart"
    );
}
