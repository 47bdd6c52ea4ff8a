//! The one error type of `keeper-bench`: everything that stops a run before it can report.
//!
//! Errors of single requests during the run are not here: they are counted by kind in the
//! report (see `conn::RequestError`), because a load generator must keep going through them.

/// A reason the benchmark could not run or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag value is malformed or out of its bounds.
    #[error("invalid --{flag}: {reason}")]
    InvalidFlag {
        /// The flag's long name, without dashes.
        flag: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// An endpoint's host name did not resolve to any address.
    #[error("cannot resolve endpoint {endpoint}: {reason}")]
    Resolve {
        /// The endpoint as given on the command line.
        endpoint: String,
        /// Resolver error, or "no addresses".
        reason: String,
    },
    /// Creating the prefix or the key space failed after all retries.
    #[error("setup failed at {path}: {detail}")]
    Setup {
        /// The znode path the setup was working on.
        path: String,
        /// The last error or unexpected status.
        detail: String,
    },
    /// The tokio runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A client task panicked or was cancelled (a bug in the generator).
    #[error("client task failed: {0}")]
    ClientTask(String),
}
