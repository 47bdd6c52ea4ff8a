//! `keeperctl`: Keeper's command-line client.
//!
//! Exit status: 0 ok, 1 Keeper or connection error (`error: Code: message
//! (path)` on stderr; with `--json` also `{"error":{...}}` on stdout),
//! 2 usage error; `keeperctl lock` exits with its command's status, or 3
//! if the lock was lost (also `keeperctl elect` when leadership is lost).

mod args;
mod commands;
mod output;
mod recipes;
mod snapshot;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;
use crate::commands::Failure;

/// Exit status for a Keeper or connection error.
const EXIT_KEEPER_ERROR: u8 = 1;
/// Exit status for a usage error (clap uses the same).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting runtime: {e}");
            return ExitCode::from(EXIT_KEEPER_ERROR);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = runtime.block_on(commands::run(&cli, &mut out));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Keeper(err)) => {
            if cli.json {
                let _ = out.write_all(&output::json_line(&output::error_json(&err)));
                let _ = out.flush();
            }
            eprint!("{}", output::error_line(&err));
            ExitCode::from(EXIT_KEEPER_ERROR)
        }
        Err(Failure::Io(err)) => {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: writing output: {err}");
            ExitCode::from(EXIT_KEEPER_ERROR)
        }
        Err(Failure::Other(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_KEEPER_ERROR)
        }
        Err(Failure::Exit(status, message)) => {
            if let Some(message) = message {
                eprintln!("error: {message}");
            }
            ExitCode::from(status)
        }
    }
}
