//! The `keeper` binary: parses flags, environment (`KEEPER_*`) and an optional
//! TOML file into a [`Config`] (precedence: flags > env > file > defaults),
//! sets up tracing (`RUST_LOG`, default `info`), and runs the server until
//! SIGTERM or ctrl-c, then shuts down gracefully and exits 0.
//!
//! `keeper` with no subcommand runs the server; the subcommands `print-config`
//! and `restore` (a new member's data directory from a backup) sit beside it.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use keeper_server::{Config, PeerSpec};
use serde::Serialize;
use serde_json::Value;
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
    PrintConfig(Box<ServerArgs>),
    /// Make the data directory of a new cluster's member from a backup file
    /// (`keeperctl snapshot save`); run it for every member's directory, then start
    /// the members. The file is checked completely first: a corrupt or truncated one
    /// is refused and nothing is written.
    Restore(RestoreArgs),
}

/// `keeper restore` options.
#[derive(Debug, Args)]
struct RestoreArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The member's data directory to create (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

/// `keeper restore`: exit 0 with a summary, 1 with the reason on stderr.
fn restore(args: RestoreArgs) -> ExitCode {
    let store = Config::default().store_config();
    match keeper_server::backup::restore(&args.from, &args.data_dir, store) {
        Ok(report) => {
            println!(
                "restored {} into {}: zxid {:#x}, digest {}, {} files, {} bytes",
                args.from.display(),
                args.data_dir.display(),
                report.info.zxid,
                report.restored_digest,
                report.info.files,
                report.info.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keeper restore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Server options: one field per [`Config`] field (same name), each settable by its
/// flag, its `KEEPER_*` variable or the TOML file. The fields given are laid over the
/// file's config as one serde overlay (see [`build_config`]); a test checks that every
/// `Config` key has its option here.
#[derive(Debug, Default, Args, Serialize)]
struct ServerArgs {
    /// TOML config file (keys are the long option names with `_`).
    #[arg(long, env = "KEEPER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// All members, this one included: 1=HOST:PORT,2=HOST:PORT,... (absent: standalone).
    #[arg(long, env = "KEEPER_PEERS", value_name = "LIST")]
    #[serde(skip)]
    peers: Option<String>,
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
    /// Longest wait a lock acquire may ask for, in ms (below the request timeout).
    #[arg(long, env = "KEEPER_MAX_LOCK_WAIT_MS", value_name = "MS")]
    max_lock_wait_ms: Option<u64>,
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
    /// /readyz is 503 while the applied zxid is more than this many entries behind the committed one.
    #[arg(long, env = "KEEPER_READY_MAX_LAG_ENTRIES", value_name = "N")]
    ready_max_lag_entries: Option<u64>,
    /// Backups (GET /v1/admin/snapshot) that may run at once; more get 503.
    #[arg(long, env = "KEEPER_MAX_CONCURRENT_BACKUPS", value_name = "N")]
    max_concurrent_backups: Option<usize>,
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
    /// A log segment file takes no more entries past this size, in bytes; compaction deletes whole segments.
    #[arg(long, env = "KEEPER_LOG_SEGMENT_BYTES", value_name = "BYTES")]
    log_segment_bytes: Option<u64>,
    /// Size of one snapshot chunk on the peer link, in bytes.
    #[arg(long, env = "KEEPER_SNAPSHOT_CHUNK_BYTES", value_name = "BYTES")]
    snapshot_chunk_bytes: Option<usize>,
    /// Most session keepalives a follower relays to the leader in one message.
    #[arg(long, env = "KEEPER_MAX_KEEPALIVE_BATCH", value_name = "N")]
    max_keepalive_batch: Option<usize>,
    /// Outbound messages queued per peer (a full queue resets the link).
    #[arg(long, env = "KEEPER_PEER_SEND_QUEUE_FRAMES", value_name = "N")]
    peer_send_queue_frames: Option<usize>,
    /// Inbound peer events queued for the driver.
    #[arg(long, env = "KEEPER_PEER_EVENT_QUEUE", value_name = "N")]
    peer_event_queue: Option<usize>,
    /// Bytes a peer writer batches into one write.
    #[arg(long, env = "KEEPER_PEER_WRITE_BATCH_MAX_BYTES", value_name = "BYTES")]
    peer_write_batch_max_bytes: Option<usize>,
    /// First delay before redialing a peer (or retrying an unresolved name), in ms.
    #[arg(long, env = "KEEPER_PEER_RECONNECT_BACKOFF_MIN_MS", value_name = "MS")]
    peer_reconnect_backoff_min_ms: Option<u64>,
    /// Longest delay between two dials of a peer, in ms.
    #[arg(long, env = "KEEPER_PEER_RECONNECT_BACKOFF_MAX_MS", value_name = "MS")]
    peer_reconnect_backoff_max_ms: Option<u64>,
    /// Time allowed for one peer TCP connect, in ms.
    #[arg(long, env = "KEEPER_PEER_CONNECT_TIMEOUT_MS", value_name = "MS")]
    peer_connect_timeout_ms: Option<u64>,
    /// Time allowed for a peer handshake, in ms.
    #[arg(long, env = "KEEPER_PEER_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    peer_handshake_timeout_ms: Option<u64>,
    /// Inbound peer connections in the handshake at once.
    #[arg(long, env = "KEEPER_PEER_MAX_PENDING_HANDSHAKES", value_name = "N")]
    peer_max_pending_handshakes: Option<usize>,
    /// Set TCP_NODELAY on peer sockets.
    #[arg(long, env = "KEEPER_PEER_TCP_NODELAY", value_name = "BOOL")]
    peer_tcp_nodelay: Option<bool>,
    /// File of `HOST:PORT ADDR:PORT` lines consulted before DNS at every peer dial (tests, hosts without cluster DNS).
    #[arg(long, env = "KEEPER_PEER_HOSTS_FILE", value_name = "FILE")]
    peer_hosts_file: Option<PathBuf>,
    /// Take --id from the StatefulSet ordinal of the hostname (keeper-2 is id 3).
    #[arg(long, env = "KEEPER_ID_FROM_HOSTNAME", value_name = "BOOL")]
    id_from_hostname: Option<bool>,
    /// This pod's hostname for --id-from-hostname and --replicas (empty: the OS hostname).
    #[arg(long, env = "KEEPER_HOSTNAME", value_name = "NAME")]
    hostname: Option<String>,
    /// Members of the StatefulSet: peers are {set}-{i}.{peer_service}.{namespace}.svc.{cluster_domain}:{peer_port} (0: use --peers).
    #[arg(long, env = "KEEPER_REPLICAS", value_name = "N")]
    replicas: Option<u64>,
    /// The headless Service of the peers (with --replicas).
    #[arg(long, env = "KEEPER_PEER_SERVICE", value_name = "NAME")]
    peer_service: Option<String>,
    /// The pods' namespace (with --replicas).
    #[arg(long, env = "KEEPER_NAMESPACE", value_name = "NAME")]
    namespace: Option<String>,
    /// The cluster's DNS domain (with --replicas).
    #[arg(long, env = "KEEPER_CLUSTER_DOMAIN", value_name = "DOMAIN")]
    cluster_domain: Option<String>,
    /// The peer port of every pod (with --replicas).
    #[arg(long, env = "KEEPER_PEER_PORT", value_name = "PORT")]
    peer_port: Option<u16>,
    /// A keepalive not confirmed by the leader within this long is answered 503, in ms.
    #[arg(long, env = "KEEPER_KEEPALIVE_CONFIRM_WAIT_MS", value_name = "MS")]
    keepalive_confirm_wait_ms: Option<u64>,
    /// A follower whose leader is silent for this long answers keepalives 503 at once, in ms.
    #[arg(long, env = "KEEPER_KEEPALIVE_LEADER_SILENCE_MS", value_name = "MS")]
    keepalive_leader_silence_ms: Option<u64>,
    /// Most keepalives waiting for confirmation on one member.
    #[arg(long, env = "KEEPER_MAX_PENDING_KEEPALIVES", value_name = "N")]
    max_pending_keepalives: Option<usize>,
    /// Snapshot bytes in flight to a follower and not yet acknowledged (flow control).
    #[arg(long, env = "KEEPER_SNAPSHOT_WINDOW_BYTES", value_name = "BYTES")]
    snapshot_window_bytes: Option<u64>,
    /// A snapshot stream whose receiver acknowledges nothing for this long fails, in ms.
    #[arg(long, env = "KEEPER_SNAPSHOT_STALL_TIMEOUT_MS", value_name = "MS")]
    snapshot_stall_timeout_ms: Option<u64>,
    /// Bytes of peer messages a follower holds while it installs a snapshot.
    #[arg(
        long,
        env = "KEEPER_SNAPSHOT_INSTALL_STASH_BYTES",
        value_name = "BYTES"
    )]
    snapshot_install_stash_bytes: Option<u64>,
}

/// The default of an option as `--help` shows it (from `Config::default()`).
fn default_of(defaults: &serde_json::Map<String, Value>, id: &str) -> Option<String> {
    match id {
        "config" => Some("none".into()),
        "peers" => Some("none (standalone)".into()),
        _ => match defaults.get(id)? {
            Value::String(s) if s.is_empty() => Some("empty".into()),
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        },
    }
}

/// `Config::default()` as a JSON object (field name -> value).
fn default_map() -> serde_json::Map<String, Value> {
    match serde_json::to_value(Config::default()) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// The clap command with every option's default appended to its help.
fn command() -> clap::Command {
    let defaults = default_map();
    let add_defaults = |cmd: clap::Command| {
        let ids: Vec<String> = cmd
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        let mut cmd = cmd;
        for id in ids {
            if let Some(value) = default_of(&defaults, &id) {
                cmd = cmd.mut_arg(id, |arg| {
                    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                    arg.help(format!("{help} [default: {value}]"))
                });
            }
        }
        cmd
    };
    let cmd = add_defaults(Cli::command());
    cmd.mut_subcommand("print-config", add_defaults)
}

/// Builds the config: defaults, then the file, then env/flags (clap already
/// prefers a flag over its variable) laid over it as one serde overlay, then the
/// StatefulSet identity (hostname ordinal, DNS peers), then validation.
fn build_config(args: ServerArgs) -> Result<Config, String> {
    let base = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    let mut merged = serde_json::to_value(&base).map_err(|e| e.to_string())?;
    let overlay = serde_json::to_value(&args).map_err(|e| e.to_string())?;
    if let (Value::Object(merged), Value::Object(overlay)) = (&mut merged, overlay) {
        for (key, value) in overlay {
            if !value.is_null() {
                merged.insert(key, value);
            }
        }
    }
    let mut config: Config = serde_json::from_value(merged).map_err(|e| e.to_string())?;
    if let Some(list) = &args.peers {
        config.peers = PeerSpec::parse_list(list).map_err(|e| e.to_string())?;
    }
    let config = config
        .resolve_statefulset(&os_hostname())
        .map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The operating system's hostname (a pod's name in a StatefulSet).
fn os_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let (args, print_only) = match cli.command {
        Some(Command::PrintConfig(args)) => (*args, true),
        Some(Command::Restore(args)) => return restore(args),
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
        let defaults = default_map();
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let value = default_of(&defaults, id)
                .unwrap_or_else(|| panic!("option {id} is not a Config field"));
            assert!(
                help.contains(&format!("[default: {value}]")),
                "help lacks the default of {id}: {help}"
            );
        }
        assert!(help.contains("KEEPER_DATA_DIR"));
        assert!(help.contains("KEEPER_PEER_SEND_QUEUE_FRAMES"));
        assert!(help.contains("--client-addr"));
    }

    #[test]
    fn every_config_field_has_a_flag_and_a_keeper_variable() {
        let cmd = Cli::command();
        for key in default_map().keys() {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id().as_str() == key)
                .unwrap_or_else(|| panic!("Config field {key} has no option"));
            let env = arg.get_env().map(|e| e.to_string_lossy().to_string());
            assert_eq!(env, Some(format!("KEEPER_{}", key.to_uppercase())));
        }
    }

    #[test]
    fn every_option_reaches_the_config() {
        // Set each option to a non-default value that still validates, and check it lands.
        let m = command()
            .try_get_matches_from([
                "keeper",
                "--peer-send-queue-frames",
                "99",
                "--peer-tcp-nodelay",
                "false",
                "--max-keepalive-batch",
                "7",
                "--peer-hosts-file",
                "/tmp/hosts",
            ])
            .unwrap();
        let c = build_config(Cli::from_arg_matches(&m).unwrap().server).unwrap();
        assert_eq!(c.peer_send_queue_frames, 99);
        assert!(!c.peer_tcp_nodelay);
        assert_eq!(c.max_keepalive_batch, 7);
        assert_eq!(
            c.peer_config().hosts_file,
            Some(PathBuf::from("/tmp/hosts"))
        );
    }

    #[test]
    fn statefulset_options_give_id_and_dns_peers() {
        let m = command()
            .try_get_matches_from([
                "keeper",
                "--id-from-hostname",
                "true",
                "--hostname",
                "keeper-1",
                "--replicas",
                "5",
                "--namespace",
                "infra",
                "--peer-addr",
                "0.0.0.0:7888",
            ])
            .unwrap();
        let c = build_config(Cli::from_arg_matches(&m).unwrap().server).unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.peers.len(), 5);
        assert_eq!(
            c.peers[4].addr,
            "keeper-4.keeper-peers.infra.svc.cluster.local:7888"
        );
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
            _ => panic!("expected the subcommand"),
        }
    }
}
