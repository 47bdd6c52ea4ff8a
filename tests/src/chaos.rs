//! One chaos run, and campaigns of runs: start a proxied cluster, run the
//! [`workload`](crate::workload) under a [`nemesis`](crate::nemesis) schedule,
//! heal, read everything back, check the history, report.
//!
//! ```text
//! start cluster ─▶ setup ─▶ clients + nemesis (duration) ─▶ stop clients
//!   ─▶ heal all (net, SIGCONT, restart) ─▶ leader? ─▶ final reads ─▶ digests agree?
//!   ─▶ abandoned sessions expire? ─▶ checkers ─▶ history.jsonl + summary.json
//! ```
//!
//! Every phase is bounded in time. A run's verdict is a violation when any
//! checker says `invalid`; the report then prints the seed and the command that
//! reruns the same schedule.

use crate::check::{self, CheckOptions, Verdict, VerdictKind};
use crate::history::{Call, History, Outcome, Recorder};
use crate::nemesis::{Nemesis, Schedule};
use crate::workload::{self, Client, WatchControl, WorkloadConfig};
use crate::{converged_digest, Cluster, ClusterOptions};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A violation already known and being fixed elsewhere: reported loudly as
/// KNOWN, but it does not fail a run unless the run is strict. The checker is
/// never changed for it; remove the entry when the fix lands.
#[derive(Debug, Clone, Copy)]
pub struct KnownFailure {
    /// The checker that reports it.
    pub checker: &'static str,
    /// Text every message of the violation contains.
    pub signature: &'static str,
    /// What it is and where it is being fixed.
    pub note: &'static str,
}

/// The known failures (see docs/testing.md, "Known failures").
/// Empty since the keepalive fix of the member-runtime issue: an isolated member
/// or a deposed leader no longer acknowledges keepalives (the checker caught it
/// in 21 of 39 campaign runs before; see docs/testing.md).
pub const KNOWN_FAILURES: &[KnownFailure] = &[];

/// One run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub schedule: Schedule,
    /// How long the workload runs under faults.
    pub duration: Duration,
    /// Cluster size (3 or 5).
    pub members: usize,
    /// Where `history.jsonl`, `summary.json` (and logs of failed runs) go.
    pub out_dir: PathBuf,
    pub session_timeout_ms: u64,
    pub register_clients: usize,
    /// Lock holders (fenced increments of the lock counter).
    pub lock_clients: usize,
    /// Watchers holding recursive event streams.
    pub watchers: usize,
    pub keys: usize,
    /// `--log-retain-entries` of the members (`None`: their default). Small
    /// values make compaction (and so `410 Compacted` for watchers resuming
    /// far behind, and SNAP catch-up) frequent.
    pub log_retain_entries: Option<u64>,
    pub check: CheckOptions,
    /// Known failures fail the run too.
    pub strict: bool,
}

impl RunConfig {
    /// Defaults for `seed` and `schedule`: 3 members, 30 s.
    pub fn new(seed: u64, schedule: Schedule, out_dir: PathBuf) -> RunConfig {
        RunConfig {
            seed,
            schedule,
            duration: Duration::from_secs(30),
            members: 3,
            out_dir,
            session_timeout_ms: 2_000,
            register_clients: 6,
            lock_clients: 3,
            watchers: 2,
            keys: 4,
            log_retain_entries: None,
            check: CheckOptions::default(),
            strict: false,
        }
    }

    /// The command that reruns this schedule with this seed (strict, so a
    /// known failure fails it too).
    pub fn reproduce(&self) -> String {
        format!(
            "cargo run -p keeper-tests --bin keeper-chaos -- --seed {} --schedule {} --duration-secs {} --members {}{} --strict",
            self.seed,
            self.schedule.name(),
            self.duration.as_secs(),
            self.members,
            self.log_retain_entries
                .map(|n| format!(" --log-retain-entries {n}"))
                .unwrap_or_default()
        )
    }
}

/// Availability while one fault was in force.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub kind: String,
    pub detail: String,
    pub start_s: f64,
    pub end_s: Option<f64>,
    /// Ops invoked during the fault.
    pub ops: usize,
    /// ...of which got a definite answer (2xx or a refusal like `BadVersion`;
    /// not a timeout, 503 or unreachable member).
    pub ok: usize,
}

/// What one run did and found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub schedule: String,
    pub members: usize,
    pub duration_s: u64,
    pub wall_s: f64,
    /// Seconds spent in each phase of the run.
    pub phases: Vec<(String, f64)>,
    pub ops: OpCounts,
    /// What the watchers did.
    pub watch: WatchStats,
    pub faults: Vec<FaultReport>,
    /// Share of ops with a definite answer while no fault was in force.
    pub availability_quiet: f64,
    pub verdicts: Vec<Verdict>,
    /// Violations that are [`KNOWN_FAILURES`] (each with its note).
    pub known_failures: Vec<String>,
    /// True when no checker found a violation (other than a known failure,
    /// unless the run is strict).
    pub valid: bool,
    pub reproduce: String,
    pub out_dir: String,
}

impl RunReport {
    /// Verdicts that are violations.
    pub fn violations(&self) -> Vec<&Verdict> {
        self.verdicts.iter().filter(|v| v.is_violation()).collect()
    }

    /// A few lines for humans.
    pub fn render(&self) -> String {
        let mut s = format!(
            "run seed={} schedule={} members={} duration={}s wall={:.0}s: {}\n",
            self.seed,
            self.schedule,
            self.members,
            self.duration_s,
            self.wall_s,
            if self.valid { "VALID" } else { "VIOLATION" }
        );
        let ops: Vec<String> = self
            .ops
            .iter()
            .map(|(k, (o, f, i))| format!("{k} {o}/{f}/{i}"))
            .collect();
        s.push_str(&format!("  ops (ok/fail/unknown): {}\n", ops.join(", ")));
        let w = &self.watch;
        s.push_str(&format!(
            "  watch: {} watchers, {} stream segments ({} resumed with from_zxid, {} refused, {} 410 Compacted restarts), {} changes delivered; reference replay: {}\n",
            w.watchers,
            w.segments,
            w.resumed,
            w.refused,
            w.compacted,
            w.events,
            match w.reference_events {
                Some(n) => format!("{n} changes"),
                None => "none".into(),
            }
        ));
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(p, t)| format!("{p} {t:.1}s"))
            .collect();
        s.push_str(&format!("  phases: {}\n", phases.join(", ")));
        s.push_str(&format!(
            "  availability without faults: {:.0}%\n",
            self.availability_quiet * 100.0
        ));
        for f in &self.faults {
            s.push_str(&format!(
                "  fault {:>5.1}s..{}: {} ({}): {} ops, {:.0}% available\n",
                f.start_s,
                f.end_s.map(|e| format!("{e:.1}s")).unwrap_or("end".into()),
                f.kind,
                f.detail,
                f.ops,
                if f.ops == 0 {
                    0.0
                } else {
                    f.ok as f64 * 100.0 / f.ops as f64
                }
            ));
        }
        for v in &self.verdicts {
            s.push_str(&format!(
                "  {}: {:?} ({})\n",
                v.checker, v.result, v.checked
            ));
            for m in &v.violations {
                s.push_str(&format!("    - {m}\n"));
            }
        }
        for k in &self.known_failures {
            s.push_str(&format!("  KNOWN FAILURE (not counted): {k}\n"));
        }
        if !self.valid || !self.known_failures.is_empty() {
            s.push_str(&format!(
                "  history: {}/history.jsonl\n  reproduce: {}\n",
                self.out_dir, self.reproduce
            ));
        }
        s
    }
}

fn call_kind(call: &Call) -> &'static str {
    match call {
        Call::Get {
            linearizable: true, ..
        } => "lget",
        Call::Get { .. } => "get",
        Call::Set { fence: Some(_), .. } => "fenced_set",
        Call::Set { version: -1, .. } => "set",
        Call::Set { .. } => "cas",
        Call::Create { .. } => "create",
        Call::Delete { .. } => "delete",
        Call::Txn { .. } => "txn",
        Call::List { .. } => "list",
        Call::CreateSeq { .. } => "create_seq",
        Call::OpenSession { .. } => "open_session",
        Call::Keepalive { .. } => "keepalive",
        Call::CloseSession { .. } => "close_session",
        Call::CreateEphemeral { .. } => "create_ephemeral",
        Call::LockAcquire { .. } => "lock_acquire",
        Call::LockRelease { .. } => "lock_release",
    }
}

/// Counts of the watchers' stream segments.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchStats {
    pub watchers: usize,
    pub segments: usize,
    /// Segments that resumed with `from_zxid`.
    pub resumed: usize,
    /// Segments refused or never answered (the watcher moved on).
    pub refused: usize,
    /// `410 Compacted` refusals (the watcher restarted fresh: a counted gap).
    pub compacted: usize,
    /// Changes delivered to the watchers (complete zxids).
    pub events: usize,
    /// Changes of the reference replay, if it ran.
    pub reference_events: Option<usize>,
}

fn watch_stats(h: &History) -> WatchStats {
    let watchers: std::collections::BTreeSet<u64> = h
        .watches
        .iter()
        .filter(|w| !w.reference)
        .map(|w| w.watcher)
        .collect();
    let segs: Vec<_> = h.watches.iter().filter(|w| !w.reference).collect();
    WatchStats {
        watchers: watchers.len(),
        segments: segs.len(),
        resumed: segs
            .iter()
            .filter(|w| w.from_zxid.is_some() && w.start_zxid.is_some())
            .count(),
        refused: segs.iter().filter(|w| w.start_zxid.is_none()).count(),
        compacted: segs.iter().filter(|w| w.compacted).count(),
        events: segs.iter().map(|w| w.events.len()).sum(),
        reference_events: h
            .watches
            .iter()
            .find(|w| w.reference && w.start_zxid.is_some())
            .map(|w| w.events.len()),
    }
}

/// Call kind -> (ok, definite failure, indeterminate).
pub type OpCounts = BTreeMap<String, (usize, usize, usize)>;

/// Counts, fault windows and availability of a history.
fn summarize(h: &History) -> (OpCounts, Vec<FaultReport>, f64) {
    let mut ops = OpCounts::new();
    for op in &h.ops {
        let e = ops.entry(call_kind(&op.call).to_string()).or_default();
        match op.outcome {
            Outcome::Ok { .. } => e.0 += 1,
            Outcome::Fail { .. } => e.1 += 1,
            Outcome::Info { .. } => e.2 += 1,
        }
    }
    // Available: a definite answer (2xx, or a refusal such as BadVersion), not
    // a timeout, a 503 or an unreachable member.
    let available = |o: &&&crate::history::Op| {
        o.is_ok() || (o.is_fail() && o.fail_code() != Some("Unreachable"))
    };
    let window = |start: u64, end: Option<u64>| {
        let inside: Vec<_> = h
            .ops
            .iter()
            .filter(|o| {
                !o.final_read && o.invoke_us >= start && end.is_none_or(|e| o.invoke_us < e)
            })
            .collect();
        (inside.len(), inside.iter().filter(available).count())
    };
    let faults: Vec<FaultReport> = h
        .faults
        .iter()
        .map(|f| {
            let (n, ok) = window(f.start_us, f.end_us);
            FaultReport {
                kind: f.kind.clone(),
                detail: f.detail.clone(),
                start_s: f.start_us as f64 / 1e6,
                end_s: f.end_us.map(|e| e as f64 / 1e6),
                ops: n,
                ok,
            }
        })
        .collect();
    let quiet: Vec<_> =
        h.ops
            .iter()
            .filter(|o| {
                !o.final_read
                    && !h.faults.iter().any(|f| {
                        o.invoke_us >= f.start_us && f.end_us.is_none_or(|e| o.invoke_us < e)
                    })
            })
            .collect();
    let availability = if quiet.is_empty() {
        1.0
    } else {
        quiet.iter().filter(available).count() as f64 / quiet.len() as f64
    };
    (ops, faults, availability)
}

/// Reads `call` from member index `m` until it gets a definite answer (at most
/// `tries`), and marks that answer as part of the final read-back.
async fn final_read(
    client: &mut Client,
    rec: &Recorder,
    m: usize,
    call: Call,
    tries: usize,
) -> bool {
    for _ in 0..tries {
        let op = client
            .exec_with(m, call.clone(), Duration::from_secs(5), false)
            .await;
        if !op.is_info() {
            rec.mark_final(op.id);
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

/// Most time the watchers get to reach the fence after healing, and the
/// reference replay to reach it.
const WATCH_CATCH_UP: Duration = Duration::from_secs(30);

/// After healing: writes the fence (a set of [`workload::WATCHED`] itself),
/// lets every watcher's stream reach it (or gives up after
/// [`WATCH_CATCH_UP`]), then records the reference: a replay on member index
/// `li` from the earliest zxid any watcher covered up to the fence.
async fn finish_watches(
    reader: &mut Client,
    rec: &Recorder,
    members: &[(u64, String)],
    li: usize,
    ctl: &Arc<WatchControl>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    let mut fence = None;
    for _ in 0..10 {
        let op = reader
            .exec_with(
                li,
                Call::Set {
                    key: workload::WATCHED.into(),
                    value: crate::check::watches::FENCE_VALUE.into(),
                    version: -1,
                    fence: None,
                },
                Duration::from_secs(5),
                false,
            )
            .await;
        if let Some(n) = op.node() {
            fence = Some(n.mzxid);
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let Some(fence) = fence else {
        // No fence: the watchers stop where they are (the checker then has
        // no reference and no liveness bound to judge).
        ctl.give_up.store(true, Ordering::Relaxed);
        return;
    };
    ctl.fence.store(fence, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + WATCH_CATCH_UP;
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            ctl.give_up.store(true, Ordering::Relaxed);
            if tokio::time::timeout(Duration::from_secs(5), abort_wait(&abort))
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
    ctl.give_up.store(true, Ordering::Relaxed);
    let from = rec
        .snapshot()
        .watches
        .iter()
        .filter_map(|w| w.start_zxid)
        .min();
    let Some(from) = from else { return };
    let reference_ctl = Arc::new(WatchControl::default());
    reference_ctl.fence.store(fence, Ordering::Relaxed);
    let give_up = reference_ctl.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(WATCH_CATCH_UP).await;
        give_up.give_up.store(true, Ordering::Relaxed);
    });
    let http = reqwest::Client::new();
    let (member, base) = &members[li];
    let mut from = from;
    for _ in 0..3 {
        let mut seg = workload::watch_segment(
            &http,
            rec,
            0,
            (*member, base),
            Some(from),
            fence,
            None,
            &reference_ctl,
        )
        .await;
        seg.reference = true;
        let retry = seg.compacted.then_some(seg.oldest_zxid).flatten();
        rec.watch(seg);
        // Compacted: the reference covers what the member still has.
        match retry {
            Some(oldest) if oldest > from && oldest < fence => from = oldest,
            _ => break,
        }
    }
    timer.abort();
}

/// Waits a little for an aborted-or-finishing task (it saw `give_up`).
async fn abort_wait(handle: &tokio::task::AbortHandle) {
    while !handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one chaos run to the end; never panics on what the cluster does.
pub async fn run(cfg: &RunConfig) -> RunReport {
    let wall = Instant::now();
    std::fs::create_dir_all(&cfg.out_dir).expect("create the run's output directory");
    let mut cluster = Cluster::start_opts(ClusterOptions {
        members: cfg.members,
        extra_args: [
            "--min-zxid-wait-ms",
            "1500",
            "--session-tick-ms",
            "100",
            "--watch-progress-interval-ms",
            "300",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(
            cfg.log_retain_entries
                .into_iter()
                .flat_map(|n| ["--log-retain-entries".to_string(), n.to_string()]),
        )
        .collect(),
        proxied: true,
    });
    let rec = Recorder::new();
    let mut extra_verdicts = Vec::new();
    let mut phases: Vec<(String, f64)> = Vec::new();
    let mut phase_start = Instant::now();
    let mut phase = |name: &str| {
        phases.push((name.to_string(), phase_start.elapsed().as_secs_f64()));
        phase_start = Instant::now();
    };
    let members: Vec<(u64, String)> = cluster.members.iter().map(|m| (m.id, m.url())).collect();
    let wl = WorkloadConfig {
        members: members.clone(),
        register_clients: cfg.register_clients,
        sequential_clients: 1,
        session_clients: cfg.members,
        lock_clients: cfg.lock_clients,
        watchers: cfg.watchers,
        keys: cfg.keys,
        session_timeout_ms: cfg.session_timeout_ms,
        op_timeout: Duration::from_secs(3),
        think: Duration::from_millis(15),
    };
    let op_timeout = wl.op_timeout;
    let watch_ctl = Arc::new(WatchControl::default());
    let mut watch_tasks = Vec::new();

    let started = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .is_some();
    let mut setup_client = Client::new(0, members.clone(), rec.clone(), op_timeout, cfg.seed);
    let setup_ok = started
        && workload::setup(&mut setup_client, Duration::from_secs(20))
            .await
            .is_ok();
    phase("start+setup");
    if !setup_ok {
        extra_verdicts.push(Verdict::from_violations(
            "liveness",
            "cluster start".into(),
            vec![format!(
                "the fresh cluster elected no leader or refused the setup writes:\n{}",
                cluster.describe().await
            )],
        ));
    } else {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut next_id = 1u64;
        let mut client = |rec: &Recorder| {
            let c = Client::new(next_id, members.clone(), rec.clone(), op_timeout, cfg.seed);
            next_id += 1;
            c
        };
        for _ in 0..wl.register_clients {
            tasks.push(tokio::spawn(workload::register_client(
                client(&rec),
                wl.clone(),
                stop.clone(),
            )));
        }
        for _ in 0..wl.sequential_clients {
            tasks.push(tokio::spawn(workload::sequential_client(
                client(&rec),
                wl.clone(),
                stop.clone(),
            )));
        }
        for i in 0..wl.session_clients {
            tasks.push(tokio::spawn(workload::session_client(
                client(&rec),
                i % members.len(),
                wl.clone(),
                stop.clone(),
            )));
        }
        for _ in 0..wl.lock_clients {
            let holder = client(&rec);
            let keepalives = client(&rec);
            tasks.push(tokio::spawn(workload::lock_client(
                holder,
                keepalives,
                wl.clone(),
                stop.clone(),
            )));
        }
        for i in 0..wl.watchers {
            watch_tasks.push(tokio::spawn(workload::watcher(
                20_000 + i as u64,
                members.clone(),
                rec.clone(),
                i,
                watch_ctl.clone(),
                cfg.seed,
            )));
        }
        let until = tokio::time::Instant::now() + cfg.duration;
        {
            let mut nemesis = Nemesis::new(
                &mut cluster,
                rec.clone(),
                cfg.seed,
                until,
                cfg.session_timeout_ms,
            );
            nemesis.run(cfg.schedule).await;
            tokio::time::sleep_until(until).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let abort = t.abort_handle();
                if tokio::time::timeout(op_timeout * 3, t).await.is_err() {
                    abort.abort();
                }
            }
            nemesis.heal_all();
        }
        phase("workload");

        // Read everything back from a healed cluster.
        match cluster.wait_for_leader(Duration::from_secs(30)).await {
            None => extra_verdicts.push(Verdict::from_violations(
                "liveness",
                "leader after healing".into(),
                vec![format!(
                    "no leader within 30 s of healing every fault:\n{}",
                    cluster.describe().await
                )],
            )),
            Some(leader) => {
                phase("leader after healing");
                let li = members
                    .iter()
                    .position(|(id, _)| *id == leader)
                    .unwrap_or(0);
                let mut reader =
                    Client::new(10_000, members.clone(), rec.clone(), op_timeout, cfg.seed);
                let mut keys = wl.register_keys();
                keys.extend(workload::PAIR.iter().map(|s| s.to_string()));
                keys.push(workload::COUNTER.to_string());
                let mut unread = Vec::new();
                for key in keys {
                    let call = Call::Get {
                        key: key.clone(),
                        linearizable: true,
                    };
                    if !final_read(&mut reader, &rec, li, call, 10).await {
                        unread.push(key);
                    }
                }
                let list = Call::List {
                    path: workload::SEQ_PARENT.into(),
                };
                if !final_read(&mut reader, &rec, li, list, 10).await {
                    unread.push(workload::SEQ_PARENT.into());
                }
                extra_verdicts.push(Verdict::from_violations(
                    "liveness",
                    "final reads after healing".into(),
                    unread
                        .into_iter()
                        .map(|k| format!("no definite answer reading {k} after healing"))
                        .collect(),
                ));
                phase("final reads");
                let digest = converged_digest(&cluster, Duration::from_secs(30)).await;
                phase("convergence");
                extra_verdicts.push(Verdict::from_violations(
                    "convergence",
                    "every member's applied zxid and tree digest after healing".into(),
                    digest.err().into_iter().collect(),
                ));
                if !watch_tasks.is_empty() {
                    finish_watches(
                        &mut reader,
                        &rec,
                        &members,
                        li,
                        &watch_ctl,
                        std::mem::take(&mut watch_tasks),
                    )
                    .await;
                    phase("watchers reach the fence");
                }
                // Every session was abandoned or closed: their ephemerals must go.
                let deadline = Instant::now()
                    + Duration::from_millis(cfg.session_timeout_ms)
                    + Duration::from_secs(20);
                loop {
                    let op = reader
                        .exec_with(
                            li,
                            Call::List {
                                path: workload::EPHEMERALS.into(),
                            },
                            Duration::from_secs(5),
                            false,
                        )
                        .await;
                    let empty =
                        matches!(&op.outcome, Outcome::Ok { created: Some(c), .. } if c.is_empty());
                    if empty || Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let created: Vec<String> = rec
                    .snapshot()
                    .ops
                    .iter()
                    .filter(|o| o.is_ok())
                    .filter_map(|o| match &o.call {
                        Call::CreateEphemeral { path, .. } => Some(path.clone()),
                        _ => None,
                    })
                    .collect();
                for path in created {
                    let call = Call::Get {
                        key: path,
                        linearizable: true,
                    };
                    final_read(&mut reader, &rec, li, call, 5).await;
                }
            }
        }
    }
    phase("sessions expire");
    watch_ctl.give_up.store(true, Ordering::Relaxed);
    for t in watch_tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    rec.end_all_faults();
    let history = rec.snapshot();
    let _ = history.write_jsonl(&cfg.out_dir.join("history.jsonl"));
    let options = cfg.check;
    let h2 = history.clone();
    let mut verdicts = tokio::task::spawn_blocking(move || check::check_all(&h2, &options))
        .await
        .unwrap_or_else(|e| {
            vec![Verdict::from_violations(
                "checkers",
                String::new(),
                vec![format!("a checker panicked: {e}")],
            )]
        });
    phase("check");
    verdicts.extend(extra_verdicts);
    let (ops, faults, availability_quiet) = summarize(&history);
    let watch = watch_stats(&history);
    let mut known_failures = Vec::new();
    let mut valid = true;
    for v in verdicts.iter().filter(|v| v.result == VerdictKind::Invalid) {
        let known = KNOWN_FAILURES.iter().find(|k| {
            k.checker == v.checker && v.violations.iter().all(|m| m.contains(k.signature))
        });
        match known {
            Some(k) if !cfg.strict => known_failures.push(format!("{}: {}", k.checker, k.note)),
            _ => valid = false,
        }
    }
    if !valid || !known_failures.is_empty() {
        for m in &cluster.members {
            let _ = std::fs::copy(
                cluster.log_path(m.id),
                cfg.out_dir.join(format!("member-{}.log", m.id)),
            );
        }
    }
    let report = RunReport {
        seed: cfg.seed,
        schedule: cfg.schedule.name().to_string(),
        members: cfg.members,
        duration_s: cfg.duration.as_secs(),
        wall_s: wall.elapsed().as_secs_f64(),
        phases,
        ops,
        watch,
        faults,
        availability_quiet,
        verdicts,
        known_failures,
        valid,
        reproduce: cfg.reproduce(),
        out_dir: cfg.out_dir.display().to_string(),
    };
    if let Ok(json) = serde_json::to_string_pretty(&report) {
        let _ = std::fs::write(cfg.out_dir.join("summary.json"), json);
    }
    drop(cluster);
    report
}

/// A campaign: `runs` runs with seeds `seed..`, cycling through `schedules`,
/// and through the cluster sizes `members` once per pass over the schedules.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    pub seed: u64,
    pub runs: usize,
    pub schedules: Vec<Schedule>,
    /// Cluster sizes (empty: the template's).
    pub members: Vec<usize>,
    /// Template for every run (seed, schedule and out_dir are set per run).
    pub run: RunConfig,
    pub out_dir: PathBuf,
}

/// Runs a campaign, printing each run's report as it finishes.
pub async fn campaign(cfg: &CampaignConfig) -> Vec<RunReport> {
    let mut reports = Vec::new();
    for i in 0..cfg.runs {
        let schedule = cfg.schedules[i % cfg.schedules.len()];
        let seed = cfg.seed.wrapping_add(i as u64);
        let mut run_cfg = cfg.run.clone();
        run_cfg.seed = seed;
        run_cfg.schedule = schedule;
        if !cfg.members.is_empty() {
            run_cfg.members = cfg.members[(i / cfg.schedules.len()) % cfg.members.len()];
        }
        run_cfg.out_dir = cfg.out_dir.join(format!(
            "run-{seed}-{}-{}m",
            schedule.name(),
            run_cfg.members
        ));
        let report = run(&run_cfg).await;
        println!("{}", report.render());
        reports.push(report);
    }
    let mut table = String::from(
        "campaign summary:\n  seed        schedule                     members  wall   ops    verdict\n",
    );
    for r in &reports {
        let ops: usize = r.ops.values().map(|(o, f, i)| o + f + i).sum();
        let unknown: Vec<&str> = r
            .verdicts
            .iter()
            .filter(|v| v.result == VerdictKind::Unknown)
            .map(|v| v.checker.as_str())
            .collect();
        let unknown = if unknown.is_empty() {
            String::new()
        } else {
            format!(" (unknown: {})", unknown.join(", "))
        };
        let verdict = if r.valid && !r.known_failures.is_empty() {
            format!("valid but for a KNOWN FAILURE{unknown}")
        } else if r.valid {
            format!("valid{unknown}")
        } else {
            let checkers: Vec<&str> = r.violations().iter().map(|v| v.checker.as_str()).collect();
            format!("VIOLATION ({})", checkers.join(", "))
        };
        table.push_str(&format!(
            "  {:<11} {:<28} {:>7} {:>4.0}s {:>6} {verdict}\n",
            r.seed, r.schedule, r.members, r.wall_s, ops,
        ));
    }
    println!("{table}");
    let _ = std::fs::write(cfg.out_dir.join("campaign.txt"), &table);
    reports
}
