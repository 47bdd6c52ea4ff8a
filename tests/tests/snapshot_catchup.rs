//! SNAP catch-up of a wiped follower while the other two members keep
//! serving writes (issue 9, problem 3 and its "done means"): real `keeper`
//! processes, a store large enough that the transfer takes many ticks, and
//! a writer running through the whole catch-up. The leader must not change
//! (same leader, same epoch), no write may fail, and the follower must end
//! with the same tree as the others.
//!
//! The default size keeps the test quick; `KEEPER_SNAP_ZNODES=1000000`
//! (with `--ignored`, see `wiped_follower_catches_up_by_snapshot_with_1m_znodes`)
//! runs the measured case. Each run prints load time, catch-up time, epochs
//! and the write throughput during the catch-up.

use keeper_tests::{
    call, converged_digest, get_json, http_client, metric_value, metrics_text, Cluster,
};
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ELECTION_LIMIT: Duration = Duration::from_secs(20);
/// Concurrent loaders (multis in flight) while filling the store.
const LOADERS: usize = 4;
/// Entries the load writes: more than two of the driver's compaction
/// samples (one every 1,024 entries; it cuts at a sample older than the
/// retained tail), so the wiped follower is below the leader's log and
/// needs SNAP.
const LOAD_ENTRIES: usize = 2_500;

/// One member's `/v1/cluster`, as (role, leader, epoch, applied zxid).
async fn view(http: &reqwest::Client, url: &str) -> Option<(String, Option<u64>, u64, u64)> {
    let v = get_json(http, &format!("{url}/v1/cluster")).await.ok()?;
    Some((
        v["role"].as_str()?.to_string(),
        v["leader"].as_u64(),
        v["epoch"].as_u64()?,
        v["applied_zxid"].as_u64()?,
    ))
}

/// Fills the store with `znodes` znodes of 100-byte values through
/// multis of `znodes / LOAD_ENTRIES` creates, `LOADERS` at a time.
async fn load(url: &str, znodes: usize) -> Duration {
    let started = Instant::now();
    let per_multi = (znodes / LOAD_ENTRIES).max(1);
    let multis = znodes.div_ceil(per_multi);
    let next = Arc::new(AtomicU64::new(0));
    let value = "v".repeat(100);
    let mut tasks = Vec::new();
    for _ in 0..LOADERS {
        let (next, url, value) = (next.clone(), url.to_string(), value.clone());
        tasks.push(tokio::spawn(async move {
            let http = http_client();
            loop {
                let m = next.fetch_add(1, Ordering::Relaxed) as usize;
                if m >= multis {
                    return;
                }
                let ops: Vec<_> = (m * per_multi..((m + 1) * per_multi).min(znodes))
                    .map(|i| json!({"op": "create", "path": format!("/load{i:08}"), "data": value}))
                    .collect();
                let r = call(
                    &http,
                    Method::POST,
                    &format!("{url}/v1/txn"),
                    Some(json!({ "ops": ops })),
                )
                .await
                .expect("load multi");
                assert_eq!(r.status, 200, "load multi {m}: {:?}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await.expect("loader");
    }
    started.elapsed()
}

struct WriteLog {
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
    /// Longest time between two acknowledged writes.
    max_gap_ms: AtomicU64,
}

/// Writes small znodes through `urls` in turn until `stop`.
async fn writer(urls: Vec<String>, id: usize, stop: Arc<AtomicBool>, log: Arc<WriteLog>) {
    let http = http_client();
    let mut last_ok = Instant::now();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let url = &urls[i as usize % urls.len()];
        let r = call(
            &http,
            Method::POST,
            &format!("{url}/v1/nodes/w{id}-{i}"),
            Some(json!({"data": "x"})),
        )
        .await;
        match r {
            Ok(r) if r.status == 201 => {
                log.ok.fetch_add(1, Ordering::Relaxed);
                log.max_gap_ms
                    .fetch_max(last_ok.elapsed().as_millis() as u64, Ordering::Relaxed);
                last_ok = Instant::now();
            }
            Ok(r) => log
                .failed
                .lock()
                .unwrap()
                .push(format!("{url}: {} {:?}", r.status, r.body)),
            Err(e) => log.failed.lock().unwrap().push(format!("{url}: {e}")),
        }
        i += 1;
    }
}

async fn wiped_follower_catches_up_by_snapshot(znodes: usize, limit: Duration) {
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--log-retain-entries",
            "200",
            "--log-segment-bytes",
            "1048576",
        ],
    );
    let leader = cluster.expect_leader(ELECTION_LIMIT).await;
    let follower = cluster
        .members
        .iter()
        .map(|m| m.id)
        .find(|id| *id != leader)
        .expect("a follower");
    let other = cluster
        .members
        .iter()
        .map(|m| m.id)
        .find(|id| *id != leader && *id != follower)
        .expect("another follower");
    let http = http_client();
    let lurl = cluster.member(leader).url();
    let load_time = load(&lurl, znodes).await;
    let (_, _, epoch_before, applied_at_load) = view(&http, &lurl).await.expect("leader view");
    // The leader compacts its log behind the load (on a later tick, after a
    // background flush); once entry 1 is gone a wiped member needs SNAP.
    let compacted = Instant::now();
    loop {
        let text = metrics_text(&http, &lurl).await;
        let first = metric_value(&text, "keeper_log_first_zxid").unwrap_or(0.0) as u64;
        if first > (u64::from(epoch_before as u32) << 32) + 1 {
            break;
        }
        assert!(
            compacted.elapsed() < Duration::from_secs(30),
            "the leader never compacted its log (first zxid {first:#x})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "loaded {znodes} znodes in {:.1} s (leader {leader}, epoch {epoch_before})",
        load_time.as_secs_f64()
    );

    cluster.wipe(follower);
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(WriteLog {
        ok: AtomicU64::new(0),
        failed: Mutex::new(Vec::new()),
        max_gap_ms: AtomicU64::new(0),
    });
    let urls = vec![lurl.clone(), cluster.member(other).url()];
    let writers: Vec<_> = (0..4)
        .map(|id| tokio::spawn(writer(urls.clone(), id, stop.clone(), log.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let ok_at_start = log.ok.load(Ordering::Relaxed);
    cluster.spawn(follower);
    let furl = cluster.member(follower).url();
    // Caught up: the follower serves under the same leader and has applied
    // at least what the leader had applied when it was restarted.
    let target = view(&http, &lurl)
        .await
        .expect("leader view")
        .3
        .max(applied_at_load);
    let mut caught_up = None;
    while started.elapsed() < limit {
        if let Some((role, l, _, applied)) = view(&http, &furl).await {
            if role == "follower" && l == Some(leader) && applied >= target {
                caught_up = Some(started.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok_during = log.ok.load(Ordering::Relaxed) - ok_at_start;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let Some(catch_up) = caught_up else {
        for m in &cluster.members {
            eprintln!("==== member {} ====\n{}", m.id, cluster.log_tail(m.id, 400));
        }
        panic!(
            "the wiped follower did not catch up within {limit:?}:\n{}",
            cluster.describe().await
        );
    };
    let (lrole, _, epoch_after, _) = view(&http, &lurl).await.expect("leader view");
    println!(
        "catch-up of {znodes} znodes: {:.1} s; {ok_during} writes acknowledged meanwhile ({:.0}/s); \
         epoch before {epoch_before}, after {epoch_after}; longest gap between writes {} ms",
        catch_up.as_secs_f64(),
        ok_during as f64 / catch_up.as_secs_f64(),
        log.max_gap_ms.load(Ordering::Relaxed)
    );
    if lrole != "leader" || epoch_after != epoch_before {
        for m in &cluster.members {
            eprintln!("==== member {} ====\n{}", m.id, cluster.log_tail(m.id, 400));
        }
    }
    assert_eq!(lrole, "leader", "member {leader} lost its leadership");
    assert_eq!(
        epoch_after, epoch_before,
        "the epoch changed during the catch-up (an election happened)"
    );
    let failed = log.failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} writes failed during the catch-up, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        ok_during > 0,
        "no write was acknowledged during the catch-up"
    );
    assert!(
        log.max_gap_ms.load(Ordering::Relaxed) < 5_000,
        "writes stalled for {} ms",
        log.max_gap_ms.load(Ordering::Relaxed)
    );
    let metrics = metrics_text(&http, &furl).await;
    assert!(
        metrics.contains("keeper_zab_snapshots_installed_total 1"),
        "the wiped follower did not catch up by snapshot:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("keeper_zab"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    converged_digest(&cluster, Duration::from_secs(60))
        .await
        .expect("all three members hold the same tree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_catches_up_by_snapshot_while_writes_continue_without_a_leader_change() {
    let znodes = std::env::var("KEEPER_SNAP_ZNODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    tokio::time::timeout(
        Duration::from_secs(240),
        wiped_follower_catches_up_by_snapshot(znodes, Duration::from_secs(120)),
    )
    .await
    .expect("the test exceeded its time limit");
}

/// The measured case of issue 9: 1M znodes of 100-byte values. Run with
/// `cargo test --release -p keeper-tests --test snapshot_catchup -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 2 minutes and 1 GB of disk; run by hand (docs/testing.md)"]
async fn wiped_follower_catches_up_by_snapshot_with_1m_znodes() {
    tokio::time::timeout(
        Duration::from_secs(600),
        wiped_follower_catches_up_by_snapshot(1_000_000, Duration::from_secs(300)),
    )
    .await
    .expect("the test exceeded its time limit");
}
