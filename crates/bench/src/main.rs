//! `keeper-bench`: a closed-loop load generator for Keeper's HTTP API.
//!
//! It speaks HTTP only (no server internals), so it measures what a client sees.
//! Data flow: `args` (flags → `BenchConfig`) → `runner` (setup, then one task per client
//! over `conn`, requests from `workload`) → `report` (merged HdrHistogram → text/JSON/row).
//!
//! ```text
//! keeper-bench --endpoints 127.0.0.1:7181,127.0.0.1:7182 --clients 16 --op set \
//!              --duration 10s --warmup 2s --value-size 256 --keys 1000 --json
//! ```
//! `--op lock` (uncontended acquire+release, a lock per client) and `--op handoff` (one
//! lock, every client contending; release-to-grant latency) measure the lock recipe.
//!
//! Exit status: 0 when the run completed (even with request errors, which are reported),
//! 1 when it could not run (bad flags, setup failed), 2 for unparsable flags.

mod args;
mod conn;
mod error;
mod locks;
mod report;
mod runner;
mod workload;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Args, BenchConfig, OutputFormat};
use crate::error::BenchError;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.row_header {
        println!("{}", report::Report::row_header());
        return ExitCode::SUCCESS;
    }
    match BenchConfig::from_args(args).and_then(|config| run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keeper-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &BenchConfig) -> Result<(), BenchError> {
    let runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    }
    .map_err(BenchError::Runtime)?;
    let report = runtime.block_on(runner::run(config))?;
    match config.output {
        OutputFormat::Text => print!("{}", report.to_text()),
        OutputFormat::Json => println!("{}", report.to_json()),
        OutputFormat::Row => println!("{}", report.to_row()),
    }
    Ok(())
}
