//! The simulator over many seeds, as part of `make test`: both cluster sizes,
//! every fault mix, all invariants, liveness after healing. A failure prints
//! the seed and the one command that reproduces it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keeper_zab::sim::{run_seed, SimOptions};

const SEEDS: u64 = 4_000;
const SEED_START: u64 = 1_000_000_000;
const TIME_BOUND: Duration = Duration::from_secs(240);

#[test]
fn simulator_keeps_every_invariant_and_recovers_over_4000_seeds() {
    let opts = SimOptions::default();
    let next = AtomicU64::new(SEED_START);
    let failures = Mutex::new(Vec::new());
    let sizes = Mutex::new((0u64, 0u64));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= SEED_START + SEEDS || started.elapsed() > TIME_BOUND {
                    break;
                }
                let r = run_seed(seed, &opts);
                if let Ok(mut z) = sizes.lock() {
                    if r.plan.nodes == 3 {
                        z.0 += 1;
                    } else {
                        z.1 += 1;
                    }
                }
                if let Some(f) = &r.failure {
                    let line = format!(
                        "seed {seed}: {:?} {} at tick {}: {}\n  reproduce: {}",
                        f.kind,
                        f.invariant,
                        f.tick,
                        f.detail,
                        r.reproduce_command()
                    );
                    eprintln!("{line}");
                    if let Ok(mut v) = failures.lock() {
                        v.push(line);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let (three, five) = sizes.into_inner().unwrap_or_default();
    assert_eq!(
        three + five,
        SEEDS,
        "time bound hit after {} seeds",
        three + five
    );
    assert!(three > 0 && five > 0);
    println!(
        "{SEEDS} seeds ({three} x 3 members, {five} x 5) in {:?}",
        started.elapsed()
    );
}
