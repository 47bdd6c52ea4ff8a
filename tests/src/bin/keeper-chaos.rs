//! `keeper-chaos`: runs chaos runs against real `keeper` processes and checks
//! their histories (see `docs/testing.md`, "Chaos suite").
//!
//! `keeper-chaos --runs 20 --duration-secs 60` is a campaign cycling through
//! every nemesis schedule; `--seed S --schedule NAME --runs 1` reruns one.
//! `--check history.jsonl` re-checks a recorded history without a cluster.
//! Exits 1 when any run found a violation, 2 on bad arguments.

use clap::Parser;
use keeper_tests::chaos::{campaign, CampaignConfig, RunConfig};
use keeper_tests::check::CheckOptions;
use keeper_tests::nemesis::Schedule;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "keeper-chaos",
    about = "Jepsen-style chaos runs against a real Keeper cluster"
)]
struct Args {
    /// Seed of the first run (run i uses seed + i). Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of runs.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Workload time of each run under faults, in seconds.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Cluster sizes, comma-separated (e.g. "3,5"): each pass over the
    /// schedules uses the next size.
    #[arg(long, default_value = "3")]
    members: String,
    /// Comma-separated schedules, cycled through by the runs ("all": every one).
    #[arg(long, default_value = "all")]
    schedule: String,
    /// Session timeout asked by the workload's sessions, in ms.
    #[arg(long, default_value_t = 2000)]
    session_timeout_ms: u64,
    /// Register clients.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Lock holders (fenced increments of a counter under one lock).
    #[arg(long, default_value_t = 3)]
    lock_clients: usize,
    /// Watchers (recursive event streams resumed across members).
    #[arg(long, default_value_t = 2)]
    watchers: usize,
    /// The members' `--log-retain-entries` (default: theirs). Small values
    /// compact often: watchers then meet `410 Compacted`, followers SNAP.
    #[arg(long)]
    log_retain_entries: Option<u64>,
    /// Most linearizability search steps per key group (then "unknown").
    #[arg(long, default_value_t = 200_000_000)]
    search_budget: u64,
    /// Output directory (one sub-directory per run).
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// The `keeper` binary (default: next to this one).
    #[arg(long)]
    keeper_bin: Option<PathBuf>,
    /// Count known failures (see docs/testing.md) as violations too.
    #[arg(long)]
    strict: bool,
    /// Only list the schedules.
    #[arg(long)]
    list: bool,
    /// Only re-check a recorded history.jsonl (no cluster is started).
    #[arg(long, value_name = "HISTORY")]
    check: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for s in Schedule::ALL {
            println!("{}", s.name());
        }
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &args.check {
        let history = match keeper_tests::history::History::read_jsonl(path) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("keeper-chaos: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let options = CheckOptions {
            search_budget: args.search_budget,
        };
        let verdicts = keeper_tests::check::check_all(&history, &options);
        let mut bad = false;
        for v in &verdicts {
            println!("{}: {:?} ({})", v.checker, v.result, v.checked);
            for m in &v.violations {
                println!("  - {m}");
            }
            bad |= v.is_violation();
        }
        return if bad {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let schedules: Vec<Schedule> = if args.schedule == "all" {
        Schedule::ALL.to_vec()
    } else {
        let mut v = Vec::new();
        for name in args.schedule.split(',') {
            match Schedule::parse(name.trim()) {
                Some(s) => v.push(s),
                None => {
                    eprintln!("keeper-chaos: unknown schedule {name:?} (--list shows them)");
                    return ExitCode::from(2);
                }
            }
        }
        v
    };
    let sizes: Vec<usize> = args
        .members
        .split(',')
        .map(|m| m.trim().parse::<usize>().unwrap_or(0))
        .collect();
    if sizes.iter().any(|m| !(1..=9).contains(m)) || args.runs == 0 || schedules.is_empty() {
        eprintln!("keeper-chaos: --members must be sizes 1..=9 (e.g. 3,5) and --runs at least 1");
        return ExitCode::from(2);
    }
    if let Some(bin) = &args.keeper_bin {
        std::env::set_var("KEEPER_BIN", bin);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 1_000_000)
            .unwrap_or(1)
    });
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out_dir = args.out.join(format!("campaign-{stamp}-seed{seed}"));
    let mut run = RunConfig::new(seed, schedules[0], out_dir.clone());
    run.duration = Duration::from_secs(args.duration_secs);
    run.members = sizes[0];
    run.lock_clients = args.lock_clients;
    run.watchers = args.watchers;
    run.log_retain_entries = args.log_retain_entries;
    run.session_timeout_ms = args.session_timeout_ms;
    run.register_clients = args.clients;
    run.strict = args.strict;
    run.check = CheckOptions {
        search_budget: args.search_budget,
    };
    let cfg = CampaignConfig {
        seed,
        runs: args.runs,
        schedules,
        members: sizes,
        run,
        out_dir: out_dir.clone(),
    };
    println!(
        "keeper-chaos: {} runs of {} s, seeds {}.., output in {}",
        cfg.runs,
        args.duration_secs,
        seed,
        out_dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // On ctrl-c or SIGTERM the campaign future is dropped, and with it the
    // running cluster, whose drop kills every member it started.
    let reports = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            r = campaign(&cfg) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
        }
    });
    let Some(reports) = reports else {
        eprintln!("keeper-chaos: interrupted; members stopped");
        return ExitCode::from(130);
    };
    let failed: Vec<_> = reports.iter().filter(|r| !r.valid).collect();
    if failed.is_empty() {
        println!("keeper-chaos: every run valid");
        ExitCode::SUCCESS
    } else {
        for r in &failed {
            eprintln!(
                "keeper-chaos: VIOLATION in run seed={} schedule={}; reproduce: {}",
                r.seed, r.schedule, r.reproduce
            );
        }
        ExitCode::FAILURE
    }
}
