//! `member-sim`: runs the whole-member simulator (`keeper_server::sim`) over
//! a range of seeds.
//!
//! `member-sim --seeds N --seed-start S [--threads T] [--trace]` runs seeds
//! S..S+N on T threads (default 2; each seed is single-threaded and
//! deterministic) and reports seeds/second and what was injected. A failing
//! seed prints its failure and the one command that reproduces it, and the
//! exit status is 1.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keeper_server::sim::{run_seed, SeedReport, SimOptions};

struct Args {
    seeds: u64,
    seed_start: u64,
    threads: usize,
    trace: bool,
    stress_installs: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 1_000,
        seed_start: 0,
        threads: 2,
        trace: false,
        stress_installs: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--seeds" => a.seeds = num("--seeds")?,
            "--seed-start" => a.seed_start = num("--seed-start")?,
            "--threads" => a.threads = num("--threads")?.max(1) as usize,
            "--trace" => a.trace = true,
            "--stress-installs" => a.stress_installs = true,
            "-h" | "--help" => {
                return Err(
                    "usage: member-sim --seeds N --seed-start S [--threads T] [--trace] [--stress-installs]".into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    ticks: u64,
    committed: u64,
    crashes: u64,
    partitions: u64,
    snapshots: u64,
    installs: u64,
    stalls: u64,
    acked: u64,
    sessions: u64,
    alive: u64,
    unavailable: u64,
    ended: u64,
    expired: u64,
    reads: u64,
    drains: u64,
    failures: Vec<SeedReport>,
}

impl Totals {
    fn add(&mut self, r: &SeedReport) {
        self.seeds += 1;
        self.ticks += r.ticks;
        self.committed += r.committed as u64;
        self.crashes += r.faults.crashes;
        self.partitions += r.faults.partitions;
        self.snapshots += r.faults.snapshots;
        self.installs += r.counts.installs;
        self.stalls += r.counts.disk_stalls;
        self.acked += r.counts.writes_acked;
        self.sessions += r.counts.sessions_created;
        self.alive += r.counts.keepalives_alive;
        self.unavailable += r.counts.keepalives_unavailable;
        self.ended += r.counts.keepalives_ended;
        self.expired += r.counts.expired;
        self.reads += r.counts.reads_served;
        self.drains += r.counts.drains;
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let opts = SimOptions {
        trace: args.trace,
        stress_installs: args.stress_installs,
        ..SimOptions::default()
    };
    let end = args.seed_start.saturating_add(args.seeds);
    let next = AtomicU64::new(args.seed_start);
    let stop = AtomicBool::new(false);
    let totals = Mutex::new(Totals::default());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.threads {
            s.spawn(|| {
                let mut last = Instant::now();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = run_seed(seed, &opts);
                    if opts.trace {
                        for line in &r.trace {
                            println!("{line}");
                        }
                    }
                    let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                    t.add(&r);
                    if r.failure.is_some() {
                        stop.store(true, Ordering::Relaxed);
                        t.failures.push(r);
                    }
                    if last.elapsed() > Duration::from_secs(30) {
                        last = Instant::now();
                        let secs = started.elapsed().as_secs_f64();
                        eprintln!(
                            "progress: {} seeds in {secs:.0}s ({:.0} seeds/s)",
                            t.seeds,
                            t.seeds as f64 / secs
                        );
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let t = totals.into_inner().unwrap_or_else(|p| p.into_inner());
    println!(
        "member-sim: seeds {}..{} ran {} in {:.1}s = {:.0} seeds/s; {} ticks, {} transactions committed, {} writes acknowledged",
        args.seed_start,
        end,
        t.seeds,
        secs,
        t.seeds as f64 / secs.max(1e-9),
        t.ticks,
        t.committed,
        t.acked
    );
    println!(
        "injected: crashes={} drains={} partitions={} disk_stalls={} snapshots_sent={} installed={}; sessions={} keepalives alive={} unavailable={} ended={} expired={}; linearizable reads served={}",
        t.crashes, t.drains, t.partitions, t.stalls, t.snapshots, t.installs, t.sessions, t.alive, t.unavailable, t.ended, t.expired, t.reads
    );
    if t.failures.is_empty() {
        println!("no failures");
        return ExitCode::SUCCESS;
    }
    for r in &t.failures {
        if let Some(f) = &r.failure {
            println!(
                "FAILED seed {} at tick {}: {}: {}\n  plan: {:?}\n  member plan: {:?}\n  reproduce: {}",
                r.seed,
                f.tick,
                f.invariant,
                f.detail,
                r.plan,
                r.member_plan,
                r.reproduce_command()
            );
        }
    }
    ExitCode::FAILURE
}
