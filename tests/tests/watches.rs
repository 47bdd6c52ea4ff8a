//! Watch streams on a real 3-member cluster: a recursive watcher, reached
//! through TCP proxies that the test cuts at random points, resumes with
//! `from_zxid` on other members (followers included), also after the
//! leader is killed with SIGKILL, while writers make creates, sets, deletes
//! and multis. Its events must equal the change history of a surviving
//! member: in zxid order, none lost, none twice.
//!
//! Seeded: `KEEPER_TEST_SEED=N cargo test -p keeper-tests --test watches`
//! reproduces a run's choices (timing still varies).

use futures::StreamExt;
use keeper_client::{
    Client, ClientConfig, CreateOptions, Error, EventType, Op, WatchEvent, WatchOptions,
    ANY_VERSION,
};
use keeper_tests::{free_port, Cluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Upper bound of the test (it takes ~25 s).
const TEST_LIMIT: Duration = Duration::from_secs(90);
const ELECTION_LIMIT: Duration = Duration::from_secs(20);

/// A TCP proxy to one member whose connections the test can cut at once.
struct Proxy {
    url: String,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind proxy");
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                list.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            url: format!("http://127.0.0.1:{port}"),
            conns,
            accept,
        }
    }

    /// Cuts every open connection (both sides see a reset/EOF).
    fn cut(&self) -> usize {
        let mut conns = self.conns.lock().unwrap();
        let n = conns.len();
        for c in conns.drain(..) {
            c.abort();
        }
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `(zxid, type, path)` of a change event.
type Change = (u64, EventType, String);

fn change(e: &WatchEvent) -> Change {
    (e.zxid, e.kind, e.path.clone())
}

/// Collects changes from `stream` until one at or above `fence` arrives
/// (and the rest of its zxid); panics on an error.
async fn collect_until(
    stream: impl futures::Stream<Item = keeper_client::Result<WatchEvent>>,
    fence: Arc<Mutex<Option<u64>>>,
) -> Vec<Change> {
    futures::pin_mut!(stream);
    let mut out: Vec<Change> = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        match next {
            Ok(Some(Ok(e))) if e.kind != EventType::Progress => out.push(change(&e)),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("watch failed: {e}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => {}
        }
        let fence = *fence.lock().unwrap();
        if let (Some(f), Some(last)) = (fence, out.last()) {
            // The fence is a single set: one change, so it completes its zxid.
            if last.0 >= f {
                return out;
            }
        }
    }
}

/// One writer: random creates, sets, deletes and multis under `/w/{id}-*`.
/// Returns the zxids of acknowledged writes it knows.
async fn writer(client: Client, id: usize, seed: u64, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64 * 0x9e37_79b9));
    let mut live: Vec<String> = Vec::new();
    let mut acked = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let roll = rng.gen_range(0..10);
        let result: Result<Option<u64>, Error> = if live.is_empty() || roll < 3 {
            let path = format!("/w/{id}-{n}");
            let r = client
                .create(&path, format!("c{n}"), CreateOptions::persistent())
                .await;
            if r.is_ok() {
                live.push(path);
            }
            r.map(|c| Some(c.stat.czxid))
        } else if roll < 6 {
            let path = &live[rng.gen_range(0..live.len())];
            client
                .set(path, format!("s{n}"), ANY_VERSION)
                .await
                .map(|s| Some(s.mzxid))
        } else if roll < 8 {
            let path = live.swap_remove(rng.gen_range(0..live.len()));
            client.delete(&path, ANY_VERSION).await.map(|_| None)
        } else {
            let path = format!("/w/{id}-{n}");
            let r = client
                .multi(vec![
                    Op::create(&path, "m", CreateOptions::persistent()),
                    Op::set(&path, "mm", ANY_VERSION),
                    Op::create(format!("{path}-b"), "b", CreateOptions::persistent()),
                ])
                .await;
            if r.is_ok() {
                live.push(path.clone());
                live.push(format!("{path}-b"));
            }
            r.map(|_| None)
        };
        match result {
            Ok(Some(z)) => acked.push(z),
            Ok(None) => {}
            // Failover: unknown outcome or no leader yet; the history decides.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_across_cut_connections_and_a_leader_kill9_without_gap_or_duplicate() {
    let seed: u64 = std::env::var("KEEPER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!(
        "seed {seed}; reproduce: KEEPER_TEST_SEED={seed} cargo test -p keeper-tests --test watches"
    );
    tokio::time::timeout(TEST_LIMIT, run(seed))
        .await
        .expect("watch test exceeded its time limit");
}

async fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start_with(3, &["--watch-progress-interval-ms", "200"]);
    let leader = cluster.expect_leader(ELECTION_LIMIT).await;
    let writers_client = Client::new(ClientConfig::new(cluster.urls())).expect("client");
    let start = writers_client
        .create("/w", "", CreateOptions::persistent())
        .await
        .expect("create /w")
        .stat
        .czxid;

    // The watcher goes through proxies, starting at the leader.
    let mut order: Vec<u64> = vec![leader];
    order.extend((1..=3).filter(|id| *id != leader));
    let mut proxies = Vec::new();
    for id in &order {
        proxies.push(Proxy::start(cluster.member(*id).client_addr.clone()).await);
    }
    let watcher = Client::new(ClientConfig::new(proxies.iter().map(|p| p.url.clone())))
        .expect("watcher client");
    let fence: Arc<Mutex<Option<u64>>> = Arc::default();
    let watched = tokio::spawn(collect_until(
        watcher.watch(
            "/w",
            WatchOptions {
                idle_timeout: Duration::from_secs(2),
                ..WatchOptions::recursive().from_zxid(start)
            },
        ),
        fence.clone(),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|i| tokio::spawn(writer(writers_client.clone(), i, seed, stop.clone())))
        .collect();

    // Chaos: cut the watcher's connections at random points; kill -9 the
    // leader midway.
    let began = Instant::now();
    let mut cuts = 0;
    let mut killed = false;
    while began.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1200))).await;
        cuts += proxies.iter().map(Proxy::cut).sum::<usize>();
        if !killed && began.elapsed() > Duration::from_secs(5) {
            eprintln!("kill -9 leader {leader}");
            cluster.kill(leader);
            killed = true;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<u64> = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    cluster.expect_leader(ELECTION_LIMIT).await;
    let fence_zxid = loop {
        match writers_client.set("/w", "fence", ANY_VERSION).await {
            Ok(stat) => break stat.mzxid,
            Err(e) => {
                eprintln!("fence write failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    *fence.lock().unwrap() = Some(fence_zxid);
    let got = tokio::time::timeout(Duration::from_secs(30), watched)
        .await
        .expect("the watcher reached the fence")
        .expect("watcher task");

    // The reference: a fresh replay from a surviving member's history.
    let survivor = order.iter().find(|id| **id != leader).copied().unwrap_or(1);
    let reference_client =
        Client::new(ClientConfig::new([cluster.member(survivor).url()])).expect("client");
    let fence2: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(Some(fence_zxid)));
    let want = tokio::time::timeout(
        Duration::from_secs(30),
        collect_until(
            reference_client.watch("/w", WatchOptions::recursive().from_zxid(start)),
            fence2,
        ),
    )
    .await
    .expect("the reference replay reached the fence");

    eprintln!(
        "watcher: {} changes, {} acknowledged writes with zxids, {cuts} connections cut",
        got.len(),
        acked.len()
    );
    assert!(cuts > 0, "the test cut no connection");
    assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "zxid order");
    // A zxid's changes come together, once: runs of equal zxids never recur.
    let mut runs: Vec<u64> = got.iter().map(|c| c.0).collect();
    runs.dedup();
    let distinct: BTreeSet<u64> = runs.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        runs.len(),
        "a zxid's changes were delivered twice"
    );
    let zxids: BTreeSet<u64> = got.iter().map(|c| c.0).collect();
    for z in &acked {
        assert!(zxids.contains(z), "acknowledged write at {z} missing");
    }
    assert_eq!(got.len(), want.len(), "watcher vs history: counts differ");
    assert_eq!(got, want, "watcher vs history");
}
