//! Watch performance on a real 3-member cluster (fsync on), reported, not
//! asserted (timing on a shared machine is not a test):
//! - set throughput at 64 clients (`keeper-bench`) without streams, with
//!   1,000 idle recursive streams open on one member (each on its own
//!   subtree), with 1,000 recursive streams on the written prefix, and with
//!   100 streams on the written prefix that never read (cut off, writers unaffected);
//! - p99 from a write's acknowledgement to its event at every one of 1,000
//!   streams;
//! - the member's memory per idle stream (RSS before and after).
//!
//! Ignored by default; run in release:
//! `cargo test --release -p keeper-tests --test watch_bench -- --ignored --nocapture`.

use keeper_tests::{keeper_bin, metric_value, metrics_text, Cluster};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAMS: usize = 1000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs keeper-bench (next to the keeper binary) for sets; returns ops/s.
fn bench_sets(endpoints: &str, clients: usize, prefix: &str) -> f64 {
    let bin = keeper_bin().with_file_name("keeper-bench");
    assert!(
        bin.exists(),
        "build it first: cargo build --release -p keeper-server --bin keeper-bench"
    );
    let out = Command::new(bin)
        .args([
            "--endpoints",
            endpoints,
            "--clients",
            &clients.to_string(),
            "--op",
            "set",
            "--duration",
            "10s",
            "--warmup",
            "2s",
            "--prefix",
            prefix,
            "--json",
        ])
        .output()
        .expect("run keeper-bench");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "keeper-bench output {text:?} ({e}); stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("keeper-bench: {}", text.trim());
    v["ops_per_sec"].as_f64().unwrap_or(0.0)
}

/// Arrival times of change events per stream: (zxid, when).
type Arrivals = Arc<Mutex<Vec<Vec<(u64, Instant)>>>>;

/// Opens `n` streams on `url_of(i)`; each task records change-event
/// arrivals, or with `arrivals` = `None` only counts the bytes it reads (a
/// consumer as cheap as can be: the generator shares the 2 cores).
async fn open_streams(
    n: usize,
    url_of: impl Fn(usize) -> String,
    arrivals: Option<Arrivals>,
    bytes_read: Arc<std::sync::atomic::AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..n {
        let resp = http.get(url_of(i)).send().await.expect("open stream");
        assert_eq!(resp.status(), 200);
        let arrivals = arrivals.clone();
        let bytes_read = bytes_read.clone();
        tasks.push(tokio::spawn(async move {
            let mut resp = resp;
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                let now = Instant::now();
                bytes_read.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let Some(arrivals) = &arrivals else {
                    continue;
                };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    if !block.contains("event: data_changed") {
                        continue;
                    }
                    let zxid = block
                        .split("\"zxid\":")
                        .nth(1)
                        .and_then(|r| r.split([',', '}']).next())
                        .and_then(|z| z.parse::<u64>().ok());
                    if let Some(z) = zxid {
                        arrivals.lock().unwrap()[i].push((z, now));
                    }
                }
            }
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run in release with --ignored --nocapture"]
async fn watch_bench() {
    let cluster = Cluster::start(3);
    let leader = cluster.expect_leader(Duration::from_secs(30)).await;
    let watched = if leader == 1 { 2 } else { 1 };
    let member = cluster.member(watched);
    let pid = member.pid().expect("running");
    let base = member.url();
    let endpoints = cluster.urls().join(",");
    let http = reqwest::Client::new();
    for p in ["/ws", "/lat", "/bench"] {
        let _ = http
            .post(format!("{base}/v1/nodes{p}"))
            .json(&serde_json::json!({}))
            .send()
            .await;
    }

    let without = bench_sets(&endpoints, 64, "/bench");

    let arrivals: Arrivals = Arc::new(Mutex::new(vec![Vec::new(); STREAMS]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(pid);
    let bytes_read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let idle = open_streams(
        STREAMS,
        |i| format!("{base}/v1/events/ws/s{i}?recursive=true"),
        Some(arrivals.clone()),
        bytes_read.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid);
    let per_stream = rss_after.saturating_sub(rss_before) as f64 * 1024.0 / STREAMS as f64;
    let with_idle = bench_sets(&endpoints, 64, "/bench");
    for t in idle {
        t.abort();
    }

    // Latency: 1,000 streams on /lat, one closed-loop writer on the watched member.
    let arrivals: Arrivals = Arc::new(Mutex::new(vec![Vec::new(); STREAMS]));
    let lat = open_streams(
        STREAMS,
        |_| format!("{base}/v1/events/lat?recursive=true"),
        Some(arrivals.clone()),
        bytes_read.clone(),
    )
    .await;
    let _ = http
        .post(format!("{base}/v1/nodes/lat/k"))
        .json(&serde_json::json!({}))
        .send()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut acks: Vec<(u64, Instant)> = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let r = http
            .put(format!("{base}/v1/nodes/lat/k"))
            .json(&serde_json::json!({"data": "x"}))
            .send()
            .await
            .expect("set");
        let at = Instant::now();
        let v: serde_json::Value = r.json().await.expect("json");
        if let Some(z) = v["stat"]["mzxid"].as_u64() {
            acks.push((z, at));
        }
        // ~100 writes/s: 100,000 events/s over the streams.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut delays: Vec<Duration> = Vec::new();
    let mut missing = 0usize;
    {
        let arrivals = arrivals.lock().unwrap();
        for stream in arrivals.iter() {
            let got: std::collections::HashMap<u64, Instant> = stream.iter().copied().collect();
            for (z, acked) in &acks {
                match got.get(z) {
                    Some(t) => delays.push(t.saturating_duration_since(*acked)),
                    None => missing += 1,
                }
            }
        }
    }
    delays.sort();
    let pct = |p: f64| -> Duration {
        delays
            .get(((delays.len() as f64 * p) as usize).min(delays.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    for t in lat {
        t.abort();
    }

    // Throughput with 1,000 streams on the written prefix itself: every
    // stream gets every write (consumers that only count bytes).
    let busy_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let busy = open_streams(
        STREAMS,
        |_| format!("{base}/v1/events/bench?recursive=true"),
        None,
        busy_bytes.clone(),
    )
    .await;
    let busy_started = Instant::now();
    let with_busy = bench_sets(&endpoints, 64, "/bench");
    let busy_rate = busy_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64
        / busy_started.elapsed().as_secs_f64()
        / 1e6;
    let metrics = metrics_text(&http, &base).await;
    for t in busy {
        t.abort();
    }
    let cut = metrics
        .lines()
        .find(|l| l.starts_with("keeper_watch_slow_consumers_total"))
        .unwrap_or("")
        .to_string();

    // Consumers that stop reading: 100 streams on the written prefix whose
    // responses are never read. Each is cut off once it is
    // `watch_stream_buffer` entries behind; writers must not notice.
    let cuts_before = metric_value(
        &metrics_text(&http, &base).await,
        "keeper_watch_slow_consumers_total",
    )
    .unwrap_or(0.0) as u64;
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let resp = reqwest::Client::new()
            .get(format!("{base}/v1/events/bench?recursive=true"))
            .send()
            .await
            .expect("open stream");
        assert_eq!(resp.status(), 200);
        stalled.push(resp);
    }
    let with_stalled = bench_sets(&endpoints, 64, "/bench");
    let stalled_cut = metric_value(
        &metrics_text(&http, &base).await,
        "keeper_watch_slow_consumers_total",
    )
    .unwrap_or(0.0) as u64
        - cuts_before;
    drop(stalled);

    eprintln!("--- watch bench (member {watched}, a follower; {STREAMS} streams) ---");
    eprintln!("set @64 clients, no streams:            {without:.0} ops/s");
    eprintln!(
        "set @64 clients, {STREAMS} idle streams:      {with_idle:.0} ops/s ({:.1}%)",
        100.0 * with_idle / without.max(1.0)
    );
    eprintln!(
        "set @64 clients, {STREAMS} streams on /bench: {with_busy:.0} ops/s ({:.1}%); {cut}; streams read {busy_rate:.1} MB/s",
        100.0 * with_busy / without.max(1.0)
    );
    eprintln!(
        "set @64 clients, 100 streams that never read: {with_stalled:.0} ops/s ({:.1}%); {stalled_cut} of them cut off as slow consumers",
        100.0 * with_stalled / without.max(1.0)
    );
    eprintln!(
        "ack->event over {} writes x {STREAMS} streams: p50 {:?} p99 {:?} max {:?}; missing {missing}",
        acks.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    eprintln!(
        "member RSS {rss_before} KiB -> {rss_after} KiB: {per_stream:.0} bytes per idle stream"
    );
}
