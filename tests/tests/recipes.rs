//! Locks, semaphores and leader election end to end, as users run them: the
//! Rust client's guards and `keeperctl lock` / `keeperctl elect` processes
//! against real 3-member clusters.
//!
//! - semaphore: holders counted concurrently never exceed the permits; a
//!   `permits_max` disagreement is refused;
//! - mutual exclusion: client guards increment a counter with fenced writes
//!   (counter = grants, tokens rise in grant order), also while the Keeper
//!   leader is `kill -9`ed mid-run;
//! - election: one leader at a time as seen by `GET` on every member and by
//!   the event stream, terms rise, `kill -9` of the leader's `keeperctl
//!   elect` elects another within the session timeout + 1 s (the figure is
//!   printed), a write fenced by the old term is refused; again with the
//!   Keeper leader killed mid-run;
//! - a paused holder (`keeperctl lock` + its command, SIGSTOPped past the
//!   session timeout): another client gets the lock, and the old holder's
//!   fenced write after SIGCONT is refused;
//! - a partitioned holder (its member cut off with iptables, scoped to that
//!   member's peer port and removed afterwards): its guard reports the loss
//!   before anyone else is granted the lock.
//!
//! Every test is bounded in time; clusters and processes are killed by PID.

use keeper_client::{Client, ClientConfig, CreateOptions, Error, Fence, LeaderInfo, RecipeOptions};
use keeper_tests::iptables::PortCut;
use keeper_tests::{call, http_client, Cluster};
use reqwest::Method;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const ELECTION_LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("recipes test exceeded its time limit");
}

/// A client of `urls`, starting at `first` (so clients spread over members).
fn client(urls: &[String], first: usize) -> Client {
    let n = urls.len();
    let endpoints: Vec<String> = (0..n).map(|i| urls[(first + i) % n].clone()).collect();
    let mut config = ClientConfig::new(endpoints);
    config.request_timeout = Duration::from_secs(5);
    Client::new(config).expect("client")
}

/// `keeperctl`, next to the running test binary (built if missing).
fn keeperctl_bin() -> PathBuf {
    let keeper = keeper_tests::keeper_bin();
    let bin = keeper.with_file_name("keeperctl");
    if !bin.exists() {
        let release = keeper
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "keeper-cli", "--bin", "keeperctl"]);
        if release {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("run cargo build").success(),
            "building keeperctl failed"
        );
    }
    bin
}

/// A child process killed (SIGKILL, with its process group) on drop.
struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Starts `keeperctl args...` in a process group of its own, stdout and
    /// stderr to files in `dir` named after `tag`.
    fn keeperctl(dir: &Path, tag: &str, args: &[&str]) -> Proc {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(dir.join(format!("{tag}.out"))).expect("out file");
        let err = std::fs::File::create(dir.join(format!("{tag}.err"))).expect("err file");
        let child = Command::new(keeperctl_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("RUST_LOG", "warn")
            .process_group(0)
            .spawn()
            .expect("spawn keeperctl");
        Proc { child: Some(child) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(-(c.id() as i64), "KILL");
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the exit status, at most `limit`.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `kill -SIG pid` (a negative pid names a process group).
fn signal(pid: i64, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(pid.to_string())
        .status();
}

async fn create_node(client: &Client, path: &str, data: &str) {
    for _ in 0..50 {
        match client
            .create(path, data.to_string(), CreateOptions::persistent())
            .await
        {
            Ok(_) | Err(Error::NodeExists(_)) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("could not create {path}");
}

// ---- semaphore ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_holders_never_exceed_the_permits_on_three_members() {
    const PERMITS: u64 = 3;
    const CLIENTS: usize = 9;
    const ROUNDS: usize = 3;
    bounded(async {
        let cluster = Cluster::start(3);
        cluster.expect_leader(ELECTION_LIMIT).await;
        let urls = cluster.urls();
        let holding = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let client = client(&urls, c);
            let (holding, most) = (holding.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    let permit = client
                        .semaphore_with(
                            "slots",
                            PERMITS,
                            RecipeOptions::default().wait(Duration::from_secs(60)),
                        )
                        .await
                        .expect("a permit");
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    assert!(
                        now <= PERMITS as usize,
                        "{now} holders of {PERMITS} permits"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    permit.release().await.expect("release");
                }
            }));
        }
        // Meanwhile, a contender that disagrees about permits_max is refused.
        let odd = client(&urls, 1);
        let mut refused = false;
        for _ in 0..50 {
            match odd
                .semaphore_with(
                    "slots",
                    PERMITS + 1,
                    RecipeOptions::default().wait(Duration::ZERO),
                )
                .await
            {
                Err(Error::BadArguments(d)) => {
                    assert!(d.message.contains("permits_max 3"), "{d}");
                    refused = true;
                    break;
                }
                // Nobody contended at that moment: the value was free to set.
                Ok(guard) => guard.release().await.expect("release"),
                Err(Error::Timeout(_)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "a permits_max disagreement was never refused");
        for t in tasks {
            t.await.expect("client task");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            PERMITS as usize,
            "all permits were used at once"
        );
    })
    .await;
}

// ---- mutual exclusion -----------------------------------------------------------

fn rounds() -> usize {
    std::env::var("KEEPER_RECIPES_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// One client's increments under the lock: `(value written, token)`.
async fn increment_under_lock(client: Client, rounds: usize) -> Vec<(u64, u64)> {
    let mut done = Vec::new();
    let options = RecipeOptions::default().wait(Duration::from_secs(120));
    while done.len() < rounds {
        let guard = match client.lock_with("counter", options.clone()).await {
            Ok(g) => g,
            Err(e) => panic!("lock not granted: {e:?}"),
        };
        let fence = guard.fence();
        // The grant's answer raised this client's zxid floor above the
        // previous holder's release, so this read sees its increment.
        let value = loop {
            match client.get("/counter").await {
                Ok(node) => {
                    break String::from_utf8_lossy(&node.data)
                        .parse::<u64>()
                        .expect("a number")
                }
                Err(e) => {
                    tracing_note(&format!("read failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let next = value + 1;
        let mut wrote = false;
        for _ in 0..100 {
            match client
                .set_fenced("/counter", next.to_string(), -1, &fence)
                .await
            {
                Ok(_) => {
                    wrote = true;
                    break;
                }
                Err(Error::Fenced(_)) => break,
                Err(e) => {
                    // Unknown outcome (the member went away): look, then try again.
                    tracing_note(&format!("fenced set: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if client.sync().await.is_ok() {
                        if let Ok(node) = client.get("/counter").await {
                            if node.data == next.to_string().as_bytes() {
                                wrote = true;
                                break;
                            }
                        }
                    }
                }
            }
        }
        if wrote {
            done.push((next, guard.fencing_token()));
        }
        let _ = guard.release().await;
    }
    done
}

fn tracing_note(what: &str) {
    if std::env::var_os("KEEPER_TEST_VERBOSE").is_some() {
        eprintln!("note: {what}");
    }
}

async fn fenced_counter(kill_keeper_leader: bool) {
    const CLIENTS: usize = 8;
    let rounds = rounds();
    let mut cluster = Cluster::start(3);
    cluster.expect_leader(ELECTION_LIMIT).await;
    let urls = cluster.urls();
    create_node(&client(&urls, 0), "/counter", "0").await;
    let grants = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = client(&urls, c);
        let grants = grants.clone();
        tasks.push(tokio::spawn(async move {
            let mine = increment_under_lock(client, rounds).await;
            grants.lock().unwrap().extend(mine);
        }));
    }
    let total = CLIENTS * rounds;
    if kill_keeper_leader {
        // Mid-run: once a third of the increments are in.
        let watcher = client(&urls, 0);
        loop {
            if let Ok(node) = watcher.get("/counter").await {
                let v: usize = String::from_utf8_lossy(&node.data).parse().unwrap_or(0);
                if v >= total / 3 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let leader = cluster.expect_leader(ELECTION_LIMIT).await;
        eprintln!("killing the Keeper leader {leader} mid-run");
        cluster.kill(leader);
        let new_leader = cluster.expect_leader(ELECTION_LIMIT).await;
        assert_ne!(new_leader, leader);
        cluster.spawn(leader);
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let elapsed = started.elapsed();
    let mut grants = grants.lock().unwrap().clone();
    assert_eq!(grants.len(), total);
    eprintln!(
        "{total} fenced increments under client lock guards in {elapsed:?} (Keeper leader killed: {kill_keeper_leader})"
    );
    let check = client(&urls, 1);
    check.sync().await.expect("sync");
    let node = check.get("/counter").await.expect("counter");
    assert_eq!(node.data, total.to_string().as_bytes(), "counter = grants");
    grants.sort();
    for (i, (value, _)) in grants.iter().enumerate() {
        assert_eq!(*value, i as u64 + 1, "each value written once");
    }
    for w in grants.windows(2) {
        assert!(
            w[1].1 > w[0].1,
            "tokens rise in grant order: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    // Every stale token is fenced off.
    let (_, last) = *grants.last().unwrap();
    let r = check
        .set_fenced("/counter", "0", -1, &Fence::lock("counter", last))
        .await;
    assert!(matches!(r, Err(Error::Fenced(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lock_guards_exclude_each_other_and_fence_with_rising_tokens() {
    bounded(fenced_counter(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lock_guards_stay_exclusive_while_the_keeper_leader_is_killed() {
    bounded(fenced_counter(true)).await;
}

// ---- election -------------------------------------------------------------------

/// The leader per member, polled until `stop`: (member index, when, key, term).
async fn poll_leaders(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Vec<(usize, Instant, Option<(String, u64)>)> {
    let http = http_client();
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for (i, url) in urls.iter().enumerate() {
            if let Ok(r) = call(&http, Method::GET, &format!("{url}/v1/elections/e"), None).await {
                if r.status == 200 {
                    let l = &r.body["leader"];
                    let leader = l["key"]
                        .as_str()
                        .map(|k| (k.to_string(), l["term"].as_u64().unwrap_or(0)));
                    seen.push((i, Instant::now(), leader));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    seen
}

/// Waits until `GET` on `url` shows a leader other than `not` (by key).
async fn wait_leader(client: &Client, not: Option<&str>, limit: Duration) -> LeaderInfo {
    let deadline = Instant::now() + limit;
    let election = client.election("e");
    while Instant::now() < deadline {
        if let Ok(Some(l)) = election.leader().await {
            if Some(l.key.as_str()) != not {
                return l;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no new leader within {limit:?}");
}

async fn election_scenario(kill_keeper_leader: bool) {
    let session_timeout_ms: u64 = if kill_keeper_leader { 6_000 } else { 3_000 };
    let mut cluster = Cluster::start(3);
    cluster.expect_leader(ELECTION_LIMIT).await;
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("tempdir");
    let observer_client = client(&urls, 2);
    // Everything the event stream says, with when it arrived.
    let events = Arc::new(Mutex::new(Vec::<(Instant, Option<LeaderInfo>)>::new()));
    let observer = {
        let events = events.clone();
        let election = observer_client.election("e");
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream = election.observe();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(leader) => events.lock().unwrap().push((Instant::now(), leader)),
                    Err(e) => panic!("observe failed: {e:?}"),
                }
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_leaders(urls.clone(), stop.clone()));
    let timeout = session_timeout_ms.to_string();
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| {
            let endpoints: Vec<String> = (0..3).map(|j| urls[(i + j) % 3].clone()).collect();
            let endpoints = endpoints.join(",");
            let value = format!("c{i}");
            let p = Proc::keeperctl(
                dir.path(),
                &value,
                &[
                    "--endpoints",
                    &endpoints,
                    "elect",
                    "e",
                    &value,
                    "--session-timeout-ms",
                    &timeout,
                ],
            );
            std::thread::sleep(Duration::from_millis(200));
            p
        })
        .collect();
    let first = wait_leader(&observer_client, None, Duration::from_secs(20)).await;
    if kill_keeper_leader {
        let leader = cluster.expect_leader(ELECTION_LIMIT).await;
        eprintln!("killing the Keeper leader {leader} while c0..c2 campaign");
        cluster.kill(leader);
        cluster.expect_leader(ELECTION_LIMIT).await;
        cluster.spawn(leader);
        cluster.expect_leader(ELECTION_LIMIT).await;
        // The candidates' sessions survived: the same leader leads.
        let still = wait_leader(&observer_client, None, Duration::from_secs(20)).await;
        assert_eq!(
            still.key, first.key,
            "the Keeper failover changed the leader"
        );
    }
    // kill -9 the leader's process: the next candidate is elected once its
    // session expires.
    let idx: usize = first
        .value
        .trim_start_matches('c')
        .parse()
        .expect("value c<i>");
    let killed_at = Instant::now();
    procs[idx].kill9();
    let second = wait_leader(&observer_client, Some(&first.key), Duration::from_secs(30)).await;
    let failover = killed_at.elapsed();
    eprintln!(
        "election failover after kill -9 of the leader's keeperctl elect: {} ms (session timeout {session_timeout_ms} ms, bound {} ms; Keeper leader killed before: {kill_keeper_leader})",
        failover.as_millis(),
        session_timeout_ms + 1_000
    );
    assert!(
        failover <= Duration::from_millis(session_timeout_ms + 1_000),
        "new leader after {failover:?}"
    );
    assert!(
        second.term > first.term,
        "terms rise: {} then {}",
        first.term,
        second.term
    );
    // The old term fences nothing any more; the new one does.
    let writer = client(&urls, 0);
    create_node(&writer, "/work", "0").await;
    let r = writer
        .set_fenced("/work", "old", -1, &Fence::election("e", first.term))
        .await;
    assert!(matches!(r, Err(Error::Fenced(_))), "old term: {r:?}");
    writer
        .set_fenced("/work", "new", -1, &Fence::election("e", second.term))
        .await
        .expect("the new leader's fenced write");
    // The new leader resigns on SIGTERM; the third candidate takes over.
    let idx2: usize = second.value.trim_start_matches('c').parse().expect("c<i>");
    signal(i64::from(procs[idx2].pid()), "TERM");
    let status = procs[idx2]
        .wait(Duration::from_secs(10))
        .expect("elect exits on SIGTERM");
    assert!(status.success(), "elect after SIGTERM: {status:?}");
    let third = wait_leader(&observer_client, Some(&second.key), Duration::from_secs(10)).await;
    assert!(third.term > second.term);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let polled = poller.await.expect("poller");
    observer.abort();
    let events = events.lock().unwrap().clone();

    // The event stream: terms rise strictly; it saw all three leaders.
    let terms: Vec<u64> = events
        .iter()
        .filter_map(|(_, l)| l.as_ref().map(|l| l.term))
        .collect();
    for w in terms.windows(2) {
        assert!(w[1] > w[0], "event terms rise: {terms:?}");
    }
    for t in [first.term, second.term, third.term] {
        assert!(terms.contains(&t), "the stream missed term {t}: {terms:?}");
    }
    // GET on every member: one leader per term, and terms never go back.
    let mut key_of = std::collections::HashMap::new();
    let mut last_term = [0u64; 3];
    for (member, _, leader) in &polled {
        if let Some((key, term)) = leader {
            let known = key_of.entry(*term).or_insert_with(|| key.clone());
            assert_eq!(known, key, "two leaders with term {term}");
            assert!(
                *term >= last_term[*member],
                "member {member}'s leader went back"
            );
            last_term[*member] = *term;
        }
    }
    // Each keeperctl elect said "elected" only for its own, distinct term.
    let mut elected = Vec::new();
    for i in 0..3 {
        let out = std::fs::read_to_string(dir.path().join(format!("c{i}.out"))).unwrap_or_default();
        for line in out.lines().filter(|l| l.starts_with("elected ")) {
            let term: u64 = line
                .split("term=")
                .nth(1)
                .and_then(|t| t.trim().parse().ok())
                .expect("elected line has a term");
            elected.push(term);
        }
    }
    elected.sort();
    let mut want = vec![first.term, second.term, third.term];
    want.sort();
    assert_eq!(elected, want, "elected lines of the processes");
    eprintln!(
        "election: {} events, {} GETs; terms {:?}",
        events.len(),
        polled.len(),
        want
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_killed_leader_process_is_replaced_within_the_session_timeout() {
    bounded(election_scenario(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_keep_one_leader_while_the_keeper_leader_is_killed() {
    bounded(election_scenario(true)).await;
}

// ---- a paused holder ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_lock_holder_is_fenced_off_after_another_client_took_the_lock() {
    bounded(async {
        let cluster = Cluster::start(3);
        cluster.expect_leader(ELECTION_LIMIT).await;
        let urls = cluster.urls();
        let endpoints = urls.join(",");
        let other = client(&urls, 1);
        create_node(&other, "/guarded", "0").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let ctl = keeperctl_bin().display().to_string();
        // The command: note its pid and token, survive SIGTERM, make one
        // fenced write (token from $KEEPER_FENCING_TOKEN) once told to, and
        // go on running (keeperctl must stop it).
        let script = format!(
            "echo $$ > {d}/pid; echo $KEEPER_FENCING_TOKEN > {d}/token; trap '' TERM; \
             while [ ! -f {d}/go ]; do sleep 0.05; done; \
             {ctl} --endpoints {endpoints} set /guarded stale --fence-lock paused 2> {d}/set.err; \
             echo $? > {d}/rc; while true; do sleep 1; done"
        );
        let mut holder = Proc::keeperctl(
            dir.path(),
            "holder",
            &[
                "--endpoints",
                &endpoints,
                "lock",
                "paused",
                "--session-timeout-ms",
                "2000",
                "--kill-after-ms",
                "3000",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).ok();
        let deadline = Instant::now() + Duration::from_secs(30);
        while read("token").is_none_or(|t| t.trim().is_empty()) || read("pid").is_none() {
            assert!(
                Instant::now() < deadline,
                "the holder never ran its command"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let old_token: u64 = read("token").unwrap().trim().parse().expect("token");
        let cmd_pid: i64 = read("pid").unwrap().trim().parse().expect("pid");
        // Pause the holder: keeperctl (its keepalives) and its command.
        signal(i64::from(holder.pid()), "STOP");
        signal(-cmd_pid, "STOP");
        let paused_at = Instant::now();
        let guard = other
            .lock_with(
                "paused",
                RecipeOptions::default().wait(Duration::from_secs(30)),
            )
            .await
            .expect("another client gets the lock");
        eprintln!(
            "paused holder: the lock changed hands {} ms after the pause (session timeout 2000 ms)",
            paused_at.elapsed().as_millis()
        );
        assert!(guard.fencing_token() > old_token);
        other
            .set_fenced("/guarded", "new", -1, &guard.fence())
            .await
            .expect("the new holder writes");
        // Wake the old holder's command first: it makes its fenced write
        // before keeperctl (still stopped) could notice anything.
        std::fs::write(dir.path().join("go"), b"").expect("go");
        signal(-cmd_pid, "CONT");
        let deadline = Instant::now() + Duration::from_secs(20);
        while read("rc").is_none_or(|t| t.trim().is_empty()) {
            assert!(Instant::now() < deadline, "the old holder never wrote");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal(i64::from(holder.pid()), "CONT");
        assert_eq!(read("rc").unwrap().trim(), "1", "the stale write failed");
        let err = read("set.err").unwrap_or_default();
        assert!(err.contains("Fenced"), "refused as Fenced: {err}");
        let node = other.get("/guarded").await.expect("read");
        assert_eq!(node.data, &b"new"[..], "the stale write changed nothing");
        // keeperctl saw the loss, stopped its command, and says so.
        let status = holder
            .wait(Duration::from_secs(20))
            .expect("keeperctl lock exits");
        assert_eq!(status.code(), Some(3), "exit status after losing the lock");
        let err = read("holder.err").unwrap_or_default();
        assert!(err.contains("lost lock"), "{err}");
        guard.release().await.expect("release");
    })
    .await;
}

// ---- a partitioned holder -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_lock_holder_learns_of_the_loss_before_anyone_else_is_granted() {
    if let Err(why) = PortCut::available() {
        eprintln!("\n*** SKIPPED: the partition test needs iptables as root ({why}) ***\n");
        return;
    }
    bounded(async {
        let mut cluster = Cluster::start(3);
        let mut leader = cluster.expect_leader(ELECTION_LIMIT).await;
        // The member with the highest id is dialed by all and dials nobody:
        // its peer port is at one end of every one of its links.
        let cut_id = 3;
        if leader == cut_id {
            cluster.kill(cut_id);
            cluster.expect_leader(ELECTION_LIMIT).await;
            cluster.spawn(cut_id);
            leader = cluster.expect_leader(ELECTION_LIMIT).await;
            assert_ne!(leader, cut_id, "{}", cluster.describe().await);
        }
        let cut_url = cluster.member(cut_id).url();
        let others: Vec<String> = cluster
            .ids()
            .into_iter()
            .filter(|id| *id != cut_id)
            .map(|id| cluster.member(id).url())
            .collect();
        // The holder keeps its session alive through the member to be cut only.
        let holder = client(&[cut_url], 0);
        let waiter = client(&others, 0);
        let guard = holder
            .lock_with(
                "p",
                RecipeOptions::default()
                    .session_timeout(Duration::from_secs(3))
                    .wait(Duration::from_secs(20)),
            )
            .await
            .expect("the holder gets the lock");
        let token = guard.fencing_token();
        let granted = tokio::spawn(async move {
            let g = waiter
                .lock_with("p", RecipeOptions::default().wait(Duration::from_secs(60)))
                .await
                .expect("the waiter gets the lock");
            (Instant::now(), g)
        });
        // The waiter is queued before the cut.
        let http = http_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = call(&http, Method::GET, &format!("{}/v1/locks/p", others[0]), None)
                .await
                .expect("lock state");
            if r.body["queue"].as_array().is_some_and(|q| q.len() == 1) {
                break;
            }
            assert!(Instant::now() < deadline, "the waiter never queued: {:?}", r.body);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let port: u16 = cluster
            .member(cut_id)
            .peer_addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("peer port");
        let cut = PortCut::cut(port).expect("iptables rules");
        let cut_at = Instant::now();
        let loss = tokio::time::timeout(Duration::from_secs(20), guard.lost())
            .await
            .expect("the guard reports the loss");
        let lost_seen = Instant::now();
        let (granted_at, new_guard) = tokio::time::timeout(Duration::from_secs(30), granted)
            .await
            .expect("the waiter is granted")
            .expect("waiter task");
        eprintln!(
            "partitioned holder: loss reported {} ms after the cut ({:?}), the waiter granted {} ms after the cut ({} ms after the loss)",
            (lost_seen - cut_at).as_millis(),
            loss.reason,
            (granted_at - cut_at).as_millis(),
            granted_at.saturating_duration_since(lost_seen).as_millis(),
        );
        assert!(guard.is_lost());
        assert!(
            loss.at.into_std() < granted_at,
            "the loss moment is before the grant"
        );
        assert!(lost_seen < granted_at, "the loss was reported before the grant");
        assert!(new_guard.fencing_token() > token);
        drop(cut);
        // The old holder's token is fenced off everywhere, the new one is not.
        let check = client(&others, 1);
        create_node(&check, "/p-data", "0").await;
        let r = check
            .set_fenced("/p-data", "stale", -1, &Fence::lock("p", token))
            .await;
        assert!(matches!(r, Err(Error::Fenced(_))), "{r:?}");
        check
            .set_fenced("/p-data", "fresh", -1, &new_guard.fence())
            .await
            .expect("the new holder writes");
        drop(guard);
        new_guard.release().await.expect("release");
    })
    .await;
}

// ---- guards release on drop ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_guards_release_at_once_not_at_session_expiry() {
    bounded(async {
        let cluster = Cluster::start(3);
        cluster.expect_leader(ELECTION_LIMIT).await;
        let urls = cluster.urls();
        let (a, b) = (client(&urls, 0), client(&urls, 1));
        // Sessions of 30 s: only the release on drop can hand over within 5 s.
        let long = RecipeOptions::default().session_timeout(Duration::from_secs(30));
        let soon = RecipeOptions::default().wait(Duration::from_secs(5));
        let guard = a.lock_with("d", long.clone()).await.expect("lock");
        drop(guard);
        let started = Instant::now();
        let next = b
            .lock_with("d", soon.clone())
            .await
            .expect("released on drop");
        eprintln!(
            "lock handed over {} ms after the drop",
            started.elapsed().as_millis()
        );
        next.release().await.expect("release");
        let permit = a
            .semaphore_with("ds", 1, long.clone())
            .await
            .expect("permit");
        drop(permit);
        let next = b
            .semaphore_with("ds", 1, soon)
            .await
            .expect("permit released on drop");
        next.release().await.expect("release");
        let leadership = a
            .election("de")
            .with_options(long)
            .campaign("a")
            .await
            .expect("elected");
        let term = leadership.term();
        drop(leadership);
        let next = b
            .election("de")
            .with_options(RecipeOptions::default().wait(Duration::from_secs(5)))
            .campaign("b")
            .await
            .expect("the dropped leadership resigned");
        assert!(next.term() > term);
        next.resign().await.expect("resign");
    })
    .await;
}

/// Regression: a command that ended while keeperctl was paused past its
/// session timeout made keeperctl exit with the command's status, as if the
/// lock had been held throughout (the exit won the race with the loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeperctl_lock_exits_3_when_its_command_ended_after_the_lock_was_lost() {
    bounded(async {
        let cluster = Cluster::start(3);
        cluster.expect_leader(ELECTION_LIMIT).await;
        let endpoints = cluster.urls().join(",");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let script = format!("echo $$ > {d}/pid; while [ ! -f {d}/go ]; do sleep 0.05; done");
        let mut holder = Proc::keeperctl(
            dir.path(),
            "holder",
            &[
                "--endpoints",
                &endpoints,
                "lock",
                "ended",
                "--session-timeout-ms",
                "1500",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        let pid_file = dir.path().join("pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pid_file.exists() {
            assert!(Instant::now() < deadline, "the command never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Pause keeperctl only, past its session timeout; the command ends meanwhile.
        signal(i64::from(holder.pid()), "STOP");
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        std::fs::write(dir.path().join("go"), b"").expect("go");
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal(i64::from(holder.pid()), "CONT");
        let status = holder
            .wait(Duration::from_secs(20))
            .expect("keeperctl lock exits");
        let err = std::fs::read_to_string(dir.path().join("holder.err")).unwrap_or_default();
        assert_eq!(status.code(), Some(3), "exit status: {err}");
        assert!(err.contains("was lost"), "{err}");
    })
    .await;
}
