//! Command-line flags of `keeper-bench` and their validation.
//!
//! Data flow: `Args` (clap) → [`BenchConfig`] (validated, bounded) → `runner::run` →
//! `report::Report`. Only this module knows about clap; the rest sees `BenchConfig`.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::error::BenchError;
use crate::workload::{Mix, OpKind, WorkloadPlan};

/// Largest value size accepted by `--value-size` (1 MiB; the server has its own, lower limit).
pub const MAX_VALUE_SIZE_BYTES: usize = 1 << 20;
/// Largest `--clients`: every client holds one TCP connection and one task.
pub const MAX_CLIENTS: usize = 10_000;
/// Largest `--keys`: the key space's request URIs are built in memory before the run.
pub const MAX_KEYS: usize = 10_000_000;
/// Largest `--threads` for the generator's runtime.
pub const MAX_THREADS: usize = 64;
/// Largest `--duration` and `--warmup` (one day): a bound, not a plausible run.
pub const MAX_PHASE: Duration = Duration::from_secs(86_400);
/// Mix used by `--op mix` when `--mix` is not given.
pub const DEFAULT_MIX: &str = "set=20,get=80";

/// What each request does, as given by `--op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OpArg {
    /// POST a new znode (unique path per request) under the prefix.
    Create,
    /// PUT a random key of the key space.
    Set,
    /// GET a random key, served locally by the member (sequentially consistent).
    Get,
    /// GET a random key with `?consistency=linearizable` (quorum-confirmed).
    Lget,
    /// A weighted mix of the above, given by `--mix`.
    Mix,
    /// Uncontended lock acquire+release, each client on its own lock (a session per
    /// client); one sample per acquire+release.
    Lock,
    /// Every client contends for one lock; one sample per grant: the time from the
    /// previous holder's release to the grant (hand-off latency).
    Handoff,
}

/// Closed-loop load generator for Keeper's HTTP API.
///
/// Each client is one task with one persistent HTTP/1.1 connection that sends its next
/// request only when the previous one has answered. Latency and throughput are measured
/// after the warm-up only.
#[derive(Debug, Parser)]
#[command(name = "keeper-bench", version)]
pub struct Args {
    /// Comma-separated `host:port` (or `http://host:port`) members; clients are spread
    /// over them round-robin.
    #[arg(long, default_value = "127.0.0.1:7181", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Number of concurrent closed-loop clients (one connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Measured duration, e.g. `10s`, `500ms`, `1.5s`, `2m` (a bare number is seconds).
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Warm-up before measuring (same syntax as --duration); its requests are not counted.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// Size of the data written by create/set, in bytes (ASCII, sent as `"data"`).
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Operation each request performs.
    #[arg(long, value_enum, default_value = "set")]
    pub op: OpArg,
    /// Weights for `--op mix`, e.g. `set=20,get=80` (ops: create, set, get, lget).
    #[arg(long, default_value = DEFAULT_MIX)]
    pub mix: String,
    /// Size of the key space for set/get/lget; setup creates missing keys before the run.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Parent znode of all keys; created (with its ancestors) when missing.
    #[arg(long, default_value = "/bench")]
    pub prefix: String,
    /// Per-request timeout (same syntax as --duration); a timed-out request counts as an
    /// error and its connection is replaced.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    /// Worker threads of the generator's runtime (1 = single-threaded, the leanest).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Connections used to create the key space before the run.
    #[arg(long, default_value_t = 16)]
    pub setup_concurrency: usize,
    /// Seed of the clients' key choice (client i uses seed + i).
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Print the report as one line of JSON.
    #[arg(long, conflicts_with = "row")]
    pub json: bool,
    /// Print the report as one fixed-width table row (op, clients, ops/s, p50, p99, p999,
    /// max, errors), for scripts that assemble a table.
    #[arg(long)]
    pub row: bool,
    /// Print the header line of `--row` output and exit (nothing is run).
    #[arg(long)]
    pub row_header: bool,
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A few human-readable lines.
    Text,
    /// One line of JSON.
    Json,
    /// One fixed-width table row.
    Row,
}

/// A validated benchmark configuration; every bound has a default here.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// Endpoints as `host:port` (scheme and trailing slash stripped).
    pub endpoints: Vec<String>,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// Measured phase length.
    pub duration: Duration,
    /// Warm-up phase length (not measured).
    pub warmup: Duration,
    /// Bytes of data per create/set.
    pub value_size: usize,
    /// The operation(s) to run.
    pub plan: WorkloadPlan,
    /// Key space size.
    pub keys: usize,
    /// Parent znode path, no trailing slash.
    pub prefix: String,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Timeout for opening one TCP connection.
    pub connect_timeout: Duration,
    /// Pause after a failed connect before the client tries again.
    pub reconnect_backoff: Duration,
    /// Runtime worker threads.
    pub threads: usize,
    /// Connections used by the setup phase.
    pub setup_concurrency: usize,
    /// Attempts per setup request before the run is abandoned.
    pub setup_attempts: u32,
    /// Pause between setup attempts (covers a cluster still electing a leader).
    pub setup_retry_backoff: Duration,
    /// Seed of the key choice.
    pub seed: u64,
    /// Report format.
    pub output: OutputFormat,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:7181".to_string()],
            clients: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            value_size: 256,
            plan: WorkloadPlan::Single(OpKind::Set),
            keys: 1000,
            prefix: "/bench".to_string(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff: Duration::from_millis(20),
            threads: 1,
            setup_concurrency: 16,
            setup_attempts: 100,
            setup_retry_backoff: Duration::from_millis(100),
            seed: 0x5eed,
            output: OutputFormat::Text,
        }
    }
}

impl BenchConfig {
    /// Builds a configuration from parsed flags and validates it.
    pub fn from_args(args: Args) -> Result<Self, BenchError> {
        let plan = match args.op {
            OpArg::Create => WorkloadPlan::Single(OpKind::Create),
            OpArg::Set => WorkloadPlan::Single(OpKind::Set),
            OpArg::Get => WorkloadPlan::Single(OpKind::Get),
            OpArg::Lget => WorkloadPlan::Single(OpKind::Lget),
            OpArg::Mix => WorkloadPlan::Mix(parse_mix(&args.mix)?),
            OpArg::Lock => WorkloadPlan::Single(OpKind::Lock),
            OpArg::Handoff => WorkloadPlan::Single(OpKind::Handoff),
        };
        let output = match (args.json, args.row) {
            (true, _) => OutputFormat::Json,
            (false, true) => OutputFormat::Row,
            (false, false) => OutputFormat::Text,
        };
        let config = Self {
            endpoints: args
                .endpoints
                .iter()
                .map(|e| normalize_endpoint(e.as_str()))
                .collect::<Result<_, _>>()?,
            clients: args.clients,
            duration: parse_duration(&args.duration).map_err(|reason| BenchError::InvalidFlag {
                flag: "duration",
                reason,
            })?,
            warmup: parse_duration(&args.warmup).map_err(|reason| BenchError::InvalidFlag {
                flag: "warmup",
                reason,
            })?,
            value_size: args.value_size,
            plan,
            keys: args.keys,
            prefix: args.prefix,
            request_timeout: parse_duration(&args.timeout).map_err(|reason| {
                BenchError::InvalidFlag {
                    flag: "timeout",
                    reason,
                }
            })?,
            threads: args.threads,
            setup_concurrency: args.setup_concurrency,
            seed: args.seed,
            output,
            ..Self::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every field against its bound.
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid =
            |flag: &'static str, reason: String| Err(BenchError::InvalidFlag { flag, reason });
        if self.endpoints.is_empty() {
            return invalid("endpoints", "at least one endpoint is required".into());
        }
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return invalid("clients", format!("must be in 1..={MAX_CLIENTS}"));
        }
        if self.duration.is_zero() || self.duration > MAX_PHASE {
            return invalid(
                "duration",
                format!("must be > 0 and <= {}s", MAX_PHASE.as_secs()),
            );
        }
        if self.warmup > MAX_PHASE {
            return invalid("warmup", format!("must be <= {}s", MAX_PHASE.as_secs()));
        }
        if self.request_timeout.is_zero() || self.request_timeout > MAX_PHASE {
            return invalid("timeout", "must be > 0 and at most a day".into());
        }
        if self.value_size > MAX_VALUE_SIZE_BYTES {
            return invalid("value-size", format!("must be <= {MAX_VALUE_SIZE_BYTES}"));
        }
        if self.plan.uses_keys() && (self.keys == 0 || self.keys > MAX_KEYS) {
            return invalid(
                "keys",
                format!("must be in 1..={MAX_KEYS} for set/get/lget"),
            );
        }
        if self.keys > MAX_KEYS {
            return invalid("keys", format!("must be <= {MAX_KEYS}"));
        }
        if let Err(reason) = validate_prefix(&self.prefix) {
            return invalid("prefix", reason);
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return invalid("threads", format!("must be in 1..={MAX_THREADS}"));
        }
        if self.setup_concurrency == 0 || self.setup_concurrency > MAX_CLIENTS {
            return invalid("setup-concurrency", format!("must be in 1..={MAX_CLIENTS}"));
        }
        Ok(())
    }
}

/// Parses a duration such as `10s`, `250ms`, `1.5s`, `2m`, `100us`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use us, ms, s, m, h)"
            ))
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|e| format!("{text:?} is out of range: {e}"))
}

/// Parses `--mix`, e.g. `set=20,get=80`: comma-separated `op=weight` with ops from
/// create, set, get, lget. Weights are relative (they need not sum to 100).
pub fn parse_mix(text: &str) -> Result<Mix, BenchError> {
    let invalid = |reason: String| BenchError::InvalidFlag {
        flag: "mix",
        reason,
    };
    let mut weights = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("{part:?} is not op=weight")))?;
        let op = OpKind::from_name(name.trim())
            .ok_or_else(|| invalid(format!("unknown op {name:?} (create, set, get, lget)")))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| invalid(format!("weight {weight:?} is not a whole number")))?;
        if op.is_recipe() {
            return Err(invalid(format!(
                "{name:?} runs on its own (--op {name}), not in a mix"
            )));
        }
        if weights.iter().any(|(seen, _)| *seen == op) {
            return Err(invalid(format!("op {name:?} appears twice")));
        }
        weights.push((op, weight));
    }
    Mix::new(weights).map_err(invalid)
}

/// Strips an `http://` scheme and trailing slashes; rejects other schemes and paths.
fn normalize_endpoint(text: &str) -> Result<String, BenchError> {
    let invalid = |reason: String| BenchError::InvalidFlag {
        flag: "endpoints",
        reason,
    };
    let trimmed = text.trim();
    let rest = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    if rest.contains("://") {
        return Err(invalid(format!("{text:?}: only plain http is supported")));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(invalid(format!("{text:?} is not host:port")));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(rest.to_string())
        }
        _ => Err(invalid(format!("{text:?} is not host:port"))),
    }
}

/// A prefix is an absolute znode path of URL-safe segments, without a trailing slash.
fn validate_prefix(prefix: &str) -> Result<(), String> {
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err(format!("{prefix:?} must start with '/'"));
    };
    if rest.is_empty() {
        return Err("the root cannot be the prefix; use e.g. /bench".into());
    }
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("{prefix:?} has an empty or relative segment"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(format!("{prefix:?}: segments may only use [A-Za-z0-9._-]"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<BenchConfig, BenchError> {
        let mut full = vec!["keeper-bench"];
        full.extend_from_slice(argv);
        let args = Args::try_parse_from(full).map_err(|e| BenchError::InvalidFlag {
            flag: "clap",
            reason: e.to_string(),
        })?;
        BenchConfig::from_args(args)
    }

    #[test]
    fn durations_parse_with_units_and_bare_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration(" 7 s "), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_reject_garbage() {
        for bad in ["", "s", "ten", "10x", "1.2.3s", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.endpoints, vec!["127.0.0.1:7181"]);
        assert_eq!(config.clients, 16);
        assert_eq!(config.duration, Duration::from_secs(10));
        assert_eq!(config.warmup, Duration::from_secs(2));
        assert_eq!(config.value_size, 256);
        assert_eq!(config.plan, WorkloadPlan::Single(OpKind::Set));
        assert_eq!(config.keys, 1000);
        assert_eq!(config.prefix, "/bench");
        assert_eq!(config.output, OutputFormat::Text);
        assert_eq!(config, BenchConfig::default());
    }

    #[test]
    fn all_flags_reach_the_config() {
        let config = parse(&[
            "--endpoints",
            "http://127.0.0.1:1/,localhost:2",
            "--clients",
            "64",
            "--duration",
            "1.5s",
            "--warmup",
            "0",
            "--value-size",
            "10",
            "--op",
            "lget",
            "--keys",
            "5",
            "--prefix",
            "/a/b-c",
            "--timeout",
            "300ms",
            "--threads",
            "2",
            "--seed",
            "9",
            "--json",
        ])
        .unwrap();
        assert_eq!(config.endpoints, vec!["127.0.0.1:1", "localhost:2"]);
        assert_eq!(config.clients, 64);
        assert_eq!(config.duration, Duration::from_millis(1500));
        assert_eq!(config.warmup, Duration::ZERO);
        assert_eq!(config.value_size, 10);
        assert_eq!(config.plan, WorkloadPlan::Single(OpKind::Lget));
        assert_eq!(config.keys, 5);
        assert_eq!(config.prefix, "/a/b-c");
        assert_eq!(config.request_timeout, Duration::from_millis(300));
        assert_eq!(config.threads, 2);
        assert_eq!(config.seed, 9);
        assert_eq!(config.output, OutputFormat::Json);
    }

    #[test]
    fn lock_ops_run_alone_and_need_no_key_space() {
        let config = parse(&["--op", "lock", "--clients", "64"]).unwrap();
        assert_eq!(config.plan, WorkloadPlan::Single(OpKind::Lock));
        assert!(!config.plan.uses_keys());
        let config = parse(&["--op", "handoff"]).unwrap();
        assert_eq!(config.plan, WorkloadPlan::Single(OpKind::Handoff));
    }

    #[test]
    fn mix_parses_weights_and_rejects_bad_ones() {
        let config = parse(&["--op", "mix", "--mix", "set=20, get=80"]).unwrap();
        let expected = Mix::new(vec![(OpKind::Set, 20), (OpKind::Get, 80)]).unwrap();
        assert_eq!(config.plan, WorkloadPlan::Mix(expected));
        // Without --mix, --op mix uses the documented default.
        let config = parse(&["--op", "mix"]).unwrap();
        assert_eq!(
            config.plan,
            WorkloadPlan::Mix(parse_mix(DEFAULT_MIX).unwrap())
        );
        for bad in [
            "set",
            "set=x",
            "put=1",
            "set=1,set=2",
            "set=0,get=0",
            "",
            "lock=1",
            "set=1,handoff=1",
        ] {
            assert!(
                parse(&["--op", "mix", "--mix", bad]).is_err(),
                "{bad:?} should fail"
            );
        }
    }

    #[test]
    fn bounds_are_enforced() {
        for argv in [
            &["--clients", "0"][..],
            &["--clients", "10001"],
            &["--duration", "0s"],
            &["--keys", "0"],
            &["--value-size", "1048577"],
            &["--prefix", "bench"],
            &["--prefix", "/"],
            &["--prefix", "/a//b"],
            &["--prefix", "/a b"],
            &["--prefix", "/a/"],
            &["--threads", "0"],
            &["--endpoints", "https://x:1"],
            &["--endpoints", "x"],
            &["--endpoints", "x:port"],
            &["--endpoints", "x:1/path"],
            &["--json", "--row"],
            &["--op", "delete"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?} should be rejected");
        }
        // create does not use the key space, so --keys 0 is fine there.
        assert!(parse(&["--op", "create", "--keys", "0"]).is_ok());
    }
}
