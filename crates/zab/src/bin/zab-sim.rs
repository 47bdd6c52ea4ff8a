//! `zab-sim`: runs the seeded ZAB simulator over a range of seeds.
//!
//! `zab-sim --seeds N --seed-start S [--threads T] [--trace]` runs seeds
//! S..S+N on T threads (default 2; each seed is single-threaded and
//! deterministic), then reports seeds/second and the faults injected by kind.
//! A failing seed prints its failure and the one command that reproduces it,
//! and the exit status is 1.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keeper_zab::sim::{run_seed, FaultCounts, SeedReport, SimOptions};

struct Args {
    seeds: u64,
    seed_start: u64,
    threads: usize,
    trace: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 10_000,
        seed_start: 0,
        threads: 2,
        trace: false,
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
            "-h" | "--help" => {
                return Err(
                    "usage: zab-sim --seeds N --seed-start S [--threads T] [--trace]".into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    three: u64,
    five: u64,
    ticks: u64,
    committed: u64,
    max_recovery_ticks: u64,
    slowest_seed: u64,
    faults: FaultCounts,
    failures: Vec<SeedReport>,
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
                let mut local = Totals::default();
                let mut last_flush = Instant::now();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = run_seed(seed, &opts);
                    local.seeds += 1;
                    if r.plan.nodes == 3 {
                        local.three += 1;
                    } else {
                        local.five += 1;
                    }
                    local.ticks += r.ticks;
                    local.committed += r.committed as u64;
                    if r.recovery_ticks > local.max_recovery_ticks {
                        local.max_recovery_ticks = r.recovery_ticks;
                        local.slowest_seed = r.seed;
                    }
                    local.faults.add(&r.faults);
                    if opts.trace && r.failure.is_none() {
                        for line in &r.trace {
                            println!("{line}");
                        }
                    }
                    if r.failure.is_some() {
                        stop.store(true, Ordering::Relaxed);
                        local.failures.push(r);
                    }
                    if last_flush.elapsed() > Duration::from_secs(30) {
                        last_flush = Instant::now();
                        flush(&totals, &mut local);
                        let done = totals.lock().map(|t| t.seeds).unwrap_or(0);
                        let secs = started.elapsed().as_secs_f64();
                        eprintln!(
                            "progress: {done} seeds in {secs:.0}s ({:.0} seeds/s)",
                            done as f64 / secs
                        );
                    }
                }
                flush(&totals, &mut local);
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let t = match totals.into_inner() {
        Ok(t) => t,
        Err(p) => p.into_inner(),
    };
    println!(
        "zab-sim: seeds {}..{} ran {} ({} with 3 members, {} with 5) in {:.1}s = {:.0} seeds/s; {} ticks, {} transactions committed",
        args.seed_start,
        end,
        t.seeds,
        t.three,
        t.five,
        secs,
        t.seeds as f64 / secs.max(1e-9),
        t.ticks,
        t.committed
    );
    println!("faults injected: {}", t.faults);
    println!(
        "slowest recovery: {} ticks (seed {}) from healing to a committed marker on every member and full convergence (bound {})",
        t.max_recovery_ticks, t.slowest_seed, opts.liveness_bound_ticks
    );
    if t.failures.is_empty() {
        println!("result: OK (no invariant violation, no liveness failure)");
        return ExitCode::SUCCESS;
    }
    for r in &t.failures {
        if args.trace {
            for line in &r.trace {
                println!("{line}");
            }
        }
        if let Some(f) = &r.failure {
            println!(
                "FAILED seed {} ({} members): {:?} {} at tick {}: {}",
                r.seed, r.plan.nodes, f.kind, f.invariant, f.tick, f.detail
            );
            println!("plan: {:?}", r.plan);
        }
        println!("reproduce: {}", r.reproduce_command());
    }
    ExitCode::FAILURE
}

fn flush(totals: &Mutex<Totals>, local: &mut Totals) {
    let Ok(mut t) = totals.lock() else { return };
    t.seeds += local.seeds;
    t.three += local.three;
    t.five += local.five;
    t.ticks += local.ticks;
    t.committed += local.committed;
    if local.max_recovery_ticks > t.max_recovery_ticks {
        t.max_recovery_ticks = local.max_recovery_ticks;
        t.slowest_seed = local.slowest_seed;
    }
    t.faults.add(&local.faults);
    t.failures.append(&mut local.failures);
    *local = Totals::default();
}
