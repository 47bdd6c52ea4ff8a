//! The `keeper` binary: parses flags, environment (`KEEPER_*`) and an optional
//! TOML file into a [`Config`] (precedence: flags > env > file > defaults),
//! sets up tracing (`RUST_LOG`, default `info`), and runs the server until
//! SIGTERM or ctrl-c, then shuts down gracefully and exits 0.
//!
//! `keeper` with no subcommand runs the server; subcommands (`print-config`,
//! later `bench`, ...) sit beside it.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use keeper_server::{Config, PeerSpec};
use std::path::PathBuf;
use std::process::ExitCode;

/// Keeper: a ZooKeeper-style coordination service (HTTP/JSON API).
#[derive(Debug, Parser)]
#[command(name = "keeper", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the effective configuration (after file, env and flags) as TOML, and exit.
    PrintConfig(ServerArgs),
}

/// Server options. Each one overrides the config file; its `KEEPER_*`
/// variable applies when the flag is absent.
#[derive(Debug, Default, Args)]
struct ServerArgs {
    /// TOML config file (keys are the long option names with `_`).
    #[arg(long, env = "KEEPER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of this member's data (created if missing).
    #[arg(long, env = "KEEPER_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, env = "KEEPER_CLIENT_ADDR", value_name = "HOST:PORT")]
    client_addr: Option<String>,
    /// This member's id in the ensemble (>= 1; used with --peers).
    #[arg(long, env = "KEEPER_ID", value_name = "N")]
    id: Option<u64>,
    /// Address of the peer (replication) transport (used with --peers).
    #[arg(long, env = "KEEPER_PEER_ADDR", value_name = "HOST:PORT")]
    peer_addr: Option<String>,
    /// All members, this one included: 1=HOST:PORT,2=HOST:PORT,... (absent: standalone).
    #[arg(long, env = "KEEPER_PEERS", value_name = "LIST")]
    peers: Option<String>,
    /// Largest HTTP request body, in bytes (413 above).
    #[arg(long, env = "KEEPER_MAX_REQUEST_BYTES", value_name = "BYTES")]
    max_request_bytes: Option<usize>,
    /// Largest znode data, in bytes.
    #[arg(long, env = "KEEPER_MAX_DATA_BYTES", value_name = "BYTES")]
    max_data_bytes: Option<usize>,
    /// Longest znode path, in bytes.
    #[arg(long, env = "KEEPER_MAX_PATH_BYTES", value_name = "BYTES")]
    max_path_bytes: Option<usize>,
    /// Largest page of children per listing (also the default limit).
    #[arg(long, env = "KEEPER_MAX_CHILDREN_PAGE", value_name = "N")]
    max_children_page: Option<usize>,
    /// Most operations in one /v1/txn.
    #[arg(long, env = "KEEPER_MAX_OPS_PER_TXN", value_name = "N")]
    max_ops_per_txn: Option<usize>,
    /// Proposals queued for the log writer before writers wait.
    #[arg(long, env = "KEEPER_MAX_INFLIGHT_PROPOSALS", value_name = "N")]
    max_inflight_proposals: Option<usize>,
    /// Most entries per group commit (one fsync).
    #[arg(long, env = "KEEPER_MAX_BATCH_ENTRIES", value_name = "N")]
    max_batch_entries: Option<usize>,
    /// Most bytes in one proposal batch, forwarded-writes message or DIFF message.
    #[arg(long, env = "KEEPER_MAX_BATCH_BYTES", value_name = "BYTES")]
    max_batch_bytes: Option<usize>,
    /// Largest message on a peer link, in bytes.
    #[arg(long, env = "KEEPER_MAX_FRAME_BYTES", value_name = "BYTES")]
    max_frame_bytes: Option<usize>,
    /// A follower missing more log bytes than this catches up by snapshot.
    #[arg(long, env = "KEEPER_MAX_DIFF_BYTES", value_name = "BYTES")]
    max_diff_bytes: Option<usize>,
    /// HTTP requests served concurrently; more wait.
    #[arg(long, env = "KEEPER_MAX_CONCURRENT_REQUESTS", value_name = "N")]
    max_concurrent_requests: Option<usize>,
    /// Longest time for one HTTP request, in ms (504 after).
    #[arg(long, env = "KEEPER_REQUEST_TIMEOUT_MS", value_name = "MS")]
    request_timeout_ms: Option<u64>,
    /// Longest wait for X-Keeper-Min-Zxid, in ms (504 after).
    #[arg(long, env = "KEEPER_MIN_ZXID_WAIT_MS", value_name = "MS")]
    min_zxid_wait_ms: Option<u64>,
    /// Smallest session timeout granted, in ms.
    #[arg(long, env = "KEEPER_MIN_SESSION_TIMEOUT_MS", value_name = "MS")]
    min_session_timeout_ms: Option<u64>,
    /// Largest session timeout granted, in ms.
    #[arg(long, env = "KEEPER_MAX_SESSION_TIMEOUT_MS", value_name = "MS")]
    max_session_timeout_ms: Option<u64>,
    /// Period of the session expiry check, in ms.
    #[arg(long, env = "KEEPER_SESSION_TICK_MS", value_name = "MS")]
    session_tick_ms: Option<u64>,
    /// Period of the container/ttl reaper, in ms.
    #[arg(long, env = "KEEPER_REAP_INTERVAL_MS", value_name = "MS")]
    reap_interval_ms: Option<u64>,
    /// Most nodes deleted by one reap.
    #[arg(long, env = "KEEPER_MAX_REAP_BATCH", value_name = "N")]
    max_reap_batch: Option<usize>,
    /// Apply runs buffered between the applier and the watch dispatcher.
    #[arg(long, env = "KEEPER_EVENT_CHANNEL_CAPACITY", value_name = "N")]
    event_channel_capacity: Option<usize>,
    /// Event streams and waiting one-shot watches open at once.
    #[arg(long, env = "KEEPER_MAX_WATCH_STREAMS", value_name = "N")]
    max_watch_streams: Option<usize>,
    /// Paths one event stream may watch.
    #[arg(long, env = "KEEPER_MAX_WATCHES_PER_STREAM", value_name = "N")]
    max_watches_per_stream: Option<usize>,
    /// Entries with changes buffered per event stream before a slow consumer is cut off.
    #[arg(long, env = "KEEPER_WATCH_STREAM_BUFFER", value_name = "N")]
    watch_stream_buffer: Option<usize>,
    /// Period of an event stream's progress events, in ms.
    #[arg(long, env = "KEEPER_WATCH_PROGRESS_INTERVAL_MS", value_name = "MS")]
    watch_progress_interval_ms: Option<u64>,
    /// Longest wait of a one-shot watch, in ms.
    #[arg(long, env = "KEEPER_MAX_WATCH_WAIT_MS", value_name = "MS")]
    max_watch_wait_ms: Option<u64>,
    /// Changes read from the history per step of a stream's replay.
    #[arg(long, env = "KEEPER_WATCH_REPLAY_CHUNK", value_name = "N")]
    watch_replay_chunk: Option<usize>,
    /// Time in-flight requests get after SIGTERM, in ms.
    #[arg(long, env = "KEEPER_SHUTDOWN_GRACE_MS", value_name = "MS")]
    shutdown_grace_ms: Option<u64>,
    /// Cluster name every member must share (peer handshake).
    #[arg(long, env = "KEEPER_CLUSTER_NAME", value_name = "NAME")]
    cluster_name: Option<String>,
    /// Wall time of one consensus tick, in ms.
    #[arg(long, env = "KEEPER_TICK_MS", value_name = "MS")]
    tick_ms: Option<u64>,
    /// Ticks without a leader before a follower starts an election.
    #[arg(long, env = "KEEPER_ELECTION_TIMEOUT_TICKS", value_name = "TICKS")]
    election_timeout_ticks: Option<u64>,
    /// Ticks a leader keeps leading without hearing from a quorum.
    #[arg(long, env = "KEEPER_STEP_DOWN_TICKS", value_name = "TICKS")]
    step_down_ticks: Option<u64>,
    /// Writes a follower forwards to the leader and waits on at once.
    #[arg(long, env = "KEEPER_MAX_PENDING_FORWARDS", value_name = "N")]
    max_pending_forwards: Option<usize>,
    /// Log entries kept behind the applied state for DIFF catch-up.
    #[arg(long, env = "KEEPER_LOG_RETAIN_ENTRIES", value_name = "N")]
    log_retain_entries: Option<u64>,
    /// A log segment file takes no more entries past this size, in bytes;
    /// compaction deletes whole segments.
    #[arg(long, env = "KEEPER_LOG_SEGMENT_BYTES", value_name = "BYTES")]
    log_segment_bytes: Option<u64>,
    /// Size of one snapshot chunk on the peer link, in bytes.
    #[arg(long, env = "KEEPER_SNAPSHOT_CHUNK_BYTES", value_name = "BYTES")]
    snapshot_chunk_bytes: Option<usize>,
}

/// The default of every option, shown in `--help` (from `Config::default()`).
fn defaults() -> Vec<(&'static str, String)> {
    let d = Config::default();
    vec![
        ("config", "none".into()),
        ("data_dir", d.data_dir.display().to_string()),
        ("client_addr", d.client_addr),
        ("id", d.id.to_string()),
        ("peer_addr", d.peer_addr),
        ("peers", "none (standalone)".into()),
        ("max_request_bytes", d.max_request_bytes.to_string()),
        ("max_data_bytes", d.max_data_bytes.to_string()),
        ("max_path_bytes", d.max_path_bytes.to_string()),
        ("max_children_page", d.max_children_page.to_string()),
        ("max_ops_per_txn", d.max_ops_per_txn.to_string()),
        (
            "max_inflight_proposals",
            d.max_inflight_proposals.to_string(),
        ),
        ("max_batch_entries", d.max_batch_entries.to_string()),
        ("max_batch_bytes", d.max_batch_bytes.to_string()),
        ("max_frame_bytes", d.max_frame_bytes.to_string()),
        ("max_diff_bytes", d.max_diff_bytes.to_string()),
        (
            "max_concurrent_requests",
            d.max_concurrent_requests.to_string(),
        ),
        ("request_timeout_ms", d.request_timeout_ms.to_string()),
        ("min_zxid_wait_ms", d.min_zxid_wait_ms.to_string()),
        (
            "min_session_timeout_ms",
            d.min_session_timeout_ms.to_string(),
        ),
        (
            "max_session_timeout_ms",
            d.max_session_timeout_ms.to_string(),
        ),
        ("session_tick_ms", d.session_tick_ms.to_string()),
        ("reap_interval_ms", d.reap_interval_ms.to_string()),
        ("max_reap_batch", d.max_reap_batch.to_string()),
        (
            "event_channel_capacity",
            d.event_channel_capacity.to_string(),
        ),
        ("max_watch_streams", d.max_watch_streams.to_string()),
        (
            "max_watches_per_stream",
            d.max_watches_per_stream.to_string(),
        ),
        ("watch_stream_buffer", d.watch_stream_buffer.to_string()),
        (
            "watch_progress_interval_ms",
            d.watch_progress_interval_ms.to_string(),
        ),
        ("max_watch_wait_ms", d.max_watch_wait_ms.to_string()),
        ("watch_replay_chunk", d.watch_replay_chunk.to_string()),
        ("shutdown_grace_ms", d.shutdown_grace_ms.to_string()),
        ("cluster_name", d.cluster_name.clone()),
        ("tick_ms", d.tick_ms.to_string()),
        (
            "election_timeout_ticks",
            d.election_timeout_ticks.to_string(),
        ),
        ("step_down_ticks", d.step_down_ticks.to_string()),
        ("max_pending_forwards", d.max_pending_forwards.to_string()),
        ("log_retain_entries", d.log_retain_entries.to_string()),
        ("log_segment_bytes", d.log_segment_bytes.to_string()),
        ("snapshot_chunk_bytes", d.snapshot_chunk_bytes.to_string()),
    ]
}

/// The clap command with every option's default appended to its help.
fn command() -> clap::Command {
    let add_defaults = |mut cmd: clap::Command| {
        for (id, value) in defaults() {
            cmd = cmd.mut_arg(id, |arg| {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                arg.help(format!("{help} [default: {value}]"))
            });
        }
        cmd
    };
    let cmd = add_defaults(Cli::command());
    cmd.mut_subcommand("print-config", add_defaults)
}

/// Builds the config: defaults, then the file, then env/flags (clap already
/// prefers a flag over its variable).
fn build_config(args: ServerArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    macro_rules! overlay {
        ($($field:ident),* $(,)?) => {
            $( if let Some(v) = args.$field { config.$field = v; } )*
        };
    }
    overlay!(
        data_dir,
        client_addr,
        id,
        peer_addr,
        max_request_bytes,
        max_data_bytes,
        max_path_bytes,
        max_children_page,
        max_ops_per_txn,
        max_inflight_proposals,
        max_batch_entries,
        max_batch_bytes,
        max_frame_bytes,
        max_diff_bytes,
        max_concurrent_requests,
        request_timeout_ms,
        min_zxid_wait_ms,
        min_session_timeout_ms,
        max_session_timeout_ms,
        session_tick_ms,
        reap_interval_ms,
        max_reap_batch,
        event_channel_capacity,
        max_watch_streams,
        max_watches_per_stream,
        watch_stream_buffer,
        watch_progress_interval_ms,
        max_watch_wait_ms,
        watch_replay_chunk,
        shutdown_grace_ms,
        cluster_name,
        tick_ms,
        election_timeout_ticks,
        step_down_ticks,
        max_pending_forwards,
        log_retain_entries,
        log_segment_bytes,
        snapshot_chunk_bytes,
    );
    if let Some(list) = &args.peers {
        config.peers = PeerSpec::parse_list(list).map_err(|e| e.to_string())?;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let (args, print_only) = match cli.command {
        Some(Command::PrintConfig(args)) => (args, true),
        None => (cli.server, false),
    };
    let config = match build_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keeper: {e}");
            return ExitCode::from(2);
        }
    };
    if print_only {
        return match config.to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keeper: {e}");
                ExitCode::from(2)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keeper: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "keeper failed");
            eprintln!("keeper: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), keeper_server::ServerError> {
    let listener = tokio::net::TcpListener::bind(&config.client_addr).await?;
    keeper_server::run(config, listener, shutdown_signal()).await
}

/// Completes on SIGTERM or ctrl-c (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_shows_its_default_in_help() {
        let mut cmd = command();
        let help = cmd.render_long_help().to_string();
        let known: Vec<&str> = defaults().iter().map(|(id, _)| *id).collect();
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(known.contains(&id), "option {id} has no default listed");
        }
        for (id, value) in defaults() {
            assert!(
                help.contains(&format!("[default: {value}]")),
                "help lacks the default of {id}: {help}"
            );
        }
        assert!(help.contains("KEEPER_DATA_DIR"));
        assert!(help.contains("--client-addr"));
    }

    #[test]
    fn flags_override_env_which_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keeper.toml");
        std::fs::write(
            &file,
            "session_tick_ms = 77\nmax_data_bytes = 1000\nid = 3\n",
        )
        .unwrap();
        let cmd = command();
        let matches = cmd
            .try_get_matches_from([
                "keeper",
                "--config",
                file.to_str().unwrap(),
                "--max-data-bytes",
                "2000",
                "--peers",
                "1=a:1,2=b:2,3=c:3",
            ])
            .unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let config = build_config(cli.server).unwrap();
        assert_eq!(config.session_tick_ms, 77, "file over default");
        assert_eq!(config.max_data_bytes, 2000, "flag over file");
        assert_eq!(config.id, 3);
        assert_eq!(config.peers.len(), 3);
        assert_eq!(config.client_addr, Config::default().client_addr);
    }

    #[test]
    fn invalid_values_are_refused() {
        let cli = |args: &[&str]| {
            let m = command().try_get_matches_from(args).unwrap();
            build_config(Cli::from_arg_matches(&m).unwrap().server)
        };
        assert!(cli(&["keeper", "--client-addr", "nope"]).is_err());
        assert!(cli(&["keeper", "--peers", "1=a:1,2=b:2", "--id", "5"]).is_err());
        assert!(command()
            .try_get_matches_from(["keeper", "--session-tick-ms", "x"])
            .is_err());
    }

    #[test]
    fn print_config_is_a_subcommand() {
        let m = command()
            .try_get_matches_from(["keeper", "print-config", "--id", "4"])
            .unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        match cli.command {
            Some(Command::PrintConfig(args)) => assert_eq!(args.id, Some(4)),
            None => panic!("expected the subcommand"),
        }
    }
}
