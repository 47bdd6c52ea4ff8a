//! keeperctl's command line: the clap definitions and the checks clap cannot
//! express (which create mode the flags name, where the data comes from).
//!
//! Data flow: `main` parses [`Cli`], `commands` runs it against a
//! `keeper_client::Client`, `output` renders the result.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use keeper_client::{CreateMode, CreateOptions, Fence, DEFAULT_ENDPOINT};

/// keeperctl: command-line client for Keeper.
///
/// Exit status: 0 ok, 1 Keeper or connection error, 2 usage error.
#[derive(Debug, Parser)]
#[command(name = "keeperctl", version, about, long_about = None)]
pub struct Cli {
    /// Comma-separated member URLs (`http://host:port` or `host:port`).
    #[arg(long, global = true, env = "KEEPER_ENDPOINTS", default_value = DEFAULT_ENDPOINT)]
    pub endpoints: String,

    /// Machine-readable JSON output on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Bound on each HTTP attempt, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,

    #[command(subcommand)]
    pub command: Command,
}

/// Where a command's data comes from: an argument, `--file`, or `--stdin`.
#[derive(Debug, Args)]
pub struct DataSource {
    /// The data (as a UTF-8 string).
    pub data: Option<String>,
    /// Read the data from this file (`-` for stdin).
    #[arg(long, short = 'f', conflicts_with_all = ["data", "stdin"])]
    pub file: Option<PathBuf>,
    /// Read the data from stdin.
    #[arg(long, conflicts_with = "data")]
    pub stdin: bool,
}

impl DataSource {
    /// The bytes to send; empty when no source was given.
    pub fn read(&self) -> Result<Vec<u8>, String> {
        if let Some(data) = &self.data {
            return Ok(data.clone().into_bytes());
        }
        let from_stdin = self.stdin || self.file.as_deref().is_some_and(|p| p.as_os_str() == "-");
        if from_stdin {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("reading stdin: {e}"))?;
            return Ok(buf);
        }
        match &self.file {
            Some(path) => {
                std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
            }
            None => Ok(Vec::new()),
        }
    }
}

/// `--fence-lock NAME | --fence-election NAME` with `--fence-token T`: the
/// write applies only while T holds the lock (leads the election); else it
/// fails with `Fenced` (exit 1). Under `keeperctl lock`, the token defaults
/// to `$KEEPER_FENCING_TOKEN`.
#[derive(Debug, Args)]
pub struct FenceArgs {
    /// Fence the write by this lock's fencing token.
    #[arg(long, conflicts_with = "fence_election")]
    pub fence_lock: Option<String>,
    /// Fence the write by this election's term.
    #[arg(long)]
    pub fence_election: Option<String>,
    /// The token (or term); only used with --fence-lock or --fence-election.
    #[arg(long, env = "KEEPER_FENCING_TOKEN")]
    pub fence_token: Option<u64>,
}

impl FenceArgs {
    /// The fence these flags name, if any, or why they name none.
    pub fn fence(&self) -> Result<Option<Fence>, String> {
        let token = || {
            self.fence_token.ok_or(
                "--fence-lock and --fence-election need --fence-token (or $KEEPER_FENCING_TOKEN)",
            )
        };
        Ok(match (&self.fence_lock, &self.fence_election) {
            (Some(lock), _) => Some(Fence::lock(lock.clone(), token()?)),
            (None, Some(election)) => Some(Fence::election(election.clone(), token()?)),
            (None, None) => None,
        })
    }
}

/// The create-mode options: `--mode NAME`, or the flags `-e -s --container --ttl-ms`.
#[derive(Debug, Args)]
pub struct ModeArgs {
    /// Node mode: persistent, ephemeral, persistent_sequential,
    /// ephemeral_sequential, container, ttl, ttl_sequential.
    #[arg(long, short = 'm', conflicts_with_all = ["ephemeral", "sequential", "container"])]
    pub mode: Option<CreateMode>,
    /// Ephemeral node (needs --session).
    #[arg(long, short = 'e')]
    pub ephemeral: bool,
    /// Sequential node (the server appends a 10-digit suffix).
    #[arg(long, short = 's')]
    pub sequential: bool,
    /// Container node.
    #[arg(long, short = 'c')]
    pub container: bool,
    /// Time to live in ms (ttl modes; implies ttl without --mode).
    #[arg(long, short = 't')]
    pub ttl_ms: Option<u64>,
    /// Owning session id (ephemeral modes).
    #[arg(long)]
    pub session: Option<u64>,
}

impl ModeArgs {
    /// The create options these flags name, or why they name none.
    pub fn options(&self) -> Result<CreateOptions, String> {
        let mode = match self.mode {
            Some(mode) => mode,
            None => CreateMode::from_flags(
                self.ephemeral,
                self.sequential,
                self.ttl_ms.is_some(),
                self.container,
            )
            .ok_or(
                "these mode flags do not combine (ephemeral, container and ttl exclude each other)",
            )?,
        };
        if mode.is_ephemeral() && self.session.is_none() {
            return Err(format!("mode {mode} needs --session"));
        }
        if !mode.is_ephemeral() && self.session.is_some() {
            return Err(format!(
                "--session only applies to ephemeral modes, not {mode}"
            ));
        }
        if mode.is_ttl() && self.ttl_ms.is_none() {
            return Err(format!("mode {mode} needs --ttl-ms"));
        }
        if !mode.is_ttl() && self.ttl_ms.is_some() {
            return Err(format!("--ttl-ms only applies to ttl modes, not {mode}"));
        }
        Ok(CreateOptions {
            mode,
            session: self.session,
            ttl_ms: self.ttl_ms,
        })
    }
}

/// keeperctl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a node; prints the created path.
    Create {
        /// Node path.
        path: String,
        #[command(flatten)]
        data: DataSource,
        #[command(flatten)]
        mode: ModeArgs,
        #[command(flatten)]
        fence: FenceArgs,
    },
    /// Print a node's data (raw bytes; with --json the node as JSON).
    Get {
        /// Node path.
        path: String,
        /// Confirm with a quorum first.
        #[arg(long, short = 'l')]
        linearizable: bool,
    },
    /// Replace a node's data.
    Set {
        /// Node path.
        path: String,
        #[command(flatten)]
        data: DataSource,
        /// Expected version (-1: any).
        #[arg(long, short = 'v', default_value_t = -1, allow_negative_numbers = true)]
        version: i32,
        #[command(flatten)]
        fence: FenceArgs,
    },
    /// Delete a node.
    #[command(alias = "delete")]
    Rm {
        /// Node path.
        path: String,
        /// Expected version (-1: any).
        #[arg(long, short = 'v', default_value_t = -1, allow_negative_numbers = true)]
        version: i32,
        #[command(flatten)]
        fence: FenceArgs,
    },
    /// List a node's children, one per line (all pages unless --limit).
    Ls {
        /// Node path.
        #[arg(default_value = "/")]
        path: String,
        /// Fetch one page of at most this many children.
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this child name (with --limit).
        #[arg(long, requires = "limit")]
        after: Option<String>,
    },
    /// Print a node's stat, one field per line.
    Stat {
        /// Node path.
        path: String,
    },
    /// Apply a multi atomically. Input: the /v1/txn body, {"ops":[...]}.
    Txn {
        /// JSON file with the ops (`-` or absent: stdin).
        file: Option<PathBuf>,
    },
    /// Sessions: create, keepalive, close, or hold one open.
    Session {
        #[command(subcommand)]
        action: SessionAction,
    },
    /// Show the answering member's view of the ensemble.
    Cluster,
    /// Linearizable barrier; prints the zxid reached.
    Sync,
    /// Probe /healthz and /readyz; exit 1 unless a member is ready.
    Health,
    /// Backups: `snapshot save FILE` streams a consistent snapshot from a live member.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Run CMD while holding lock NAME. CMD gets the fencing token in
    /// $KEEPER_FENCING_TOKEN (and $KEEPER_LOCK_NAME, $KEEPER_LOCK_KEY); it is
    /// stopped (SIGTERM, then SIGKILL after --kill-after-ms) if the session
    /// is lost. The lock is released when CMD exits. Exit status: CMD's
    /// (128+N if a signal N ended it); 3 if the lock was lost while CMD ran
    /// (or was found lost when it ended); 1 if it was not granted.
    Lock {
        /// The lock's name.
        name: String,
        /// Session timeout in ms: how long the servers keep the lock after
        /// the last acknowledged keepalive.
        #[arg(long, default_value_t = 10_000)]
        session_timeout_ms: u64,
        /// Give up if not granted within this many ms (default: wait).
        #[arg(long)]
        wait_ms: Option<u64>,
        /// Grace period between SIGTERM and SIGKILL when the lock is lost.
        #[arg(long, default_value_t = 5_000)]
        kill_after_ms: u64,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, num_args = 1..)]
        cmd: Vec<String>,
    },
    /// Campaign in election NAME with VALUE and print every change of
    /// leader (`leader KEY term=T value=V`, `leader none`) and `elected KEY
    /// term=T` when this campaign wins, until interrupted (SIGINT/SIGTERM:
    /// resign, exit 0). Exit 3 if the session is lost while leading.
    Elect {
        /// The election's name.
        name: String,
        /// This candidate's value.
        value: String,
        /// Session timeout in ms.
        #[arg(long, default_value_t = 10_000)]
        session_timeout_ms: u64,
        /// Resign and exit after leading for this many ms.
        #[arg(long)]
        lead_ms: Option<u64>,
    },
    /// Print the changes at a node and its children (or its whole subtree)
    /// as they happen, one per line, resuming on another member if one
    /// fails; runs until interrupted, --count events or --for-ms pass.
    Watch {
        /// Node path.
        path: String,
        /// The whole subtree, not only the node and its children.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// First print every change after this zxid (from the history).
        #[arg(long)]
        from_zxid: Option<u64>,
        /// Include the node's data and stat after each change.
        #[arg(long)]
        with_data: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Exit after this many ms.
        #[arg(long)]
        for_ms: Option<u64>,
    },
}

/// `keeperctl snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// Save a consistent backup (stamped with its zxid, tree digest and a CRC-32) from
    /// the first member that answers into FILE. The file appears only once it is
    /// complete and its checksum verified. Restore with `keeper restore --from FILE`.
    Save {
        /// Where to write the backup (must not exist).
        file: PathBuf,
    },
}

/// `keeperctl session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionAction {
    /// Create a session; prints its id.
    Create {
        /// Requested timeout in ms (the server clamps it).
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Send one keepalive.
    Keepalive {
        /// Session id.
        id: u64,
    },
    /// Close a session, deleting its ephemeral nodes.
    Close {
        /// Session id.
        id: u64,
    },
    /// Create a session, print its id, keep it alive until interrupted
    /// (SIGINT/SIGTERM), stdin closes (with --until-eof) or --hold-ms pass,
    /// then close it. Exit 1 if it expires meanwhile.
    Hold {
        /// Requested timeout in ms.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Close after this many ms.
        #[arg(long)]
        hold_ms: Option<u64>,
        /// Close when stdin reaches end of file.
        #[arg(long)]
        until_eof: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("keeperctl").chain(args.iter().copied()))
    }

    fn create_options(args: &[&str]) -> Result<CreateOptions, String> {
        match parse(args).map_err(|e| e.to_string())?.command {
            Command::Create { mode, .. } => mode.options(),
            other => Err(format!("not a create: {other:?}")),
        }
    }

    #[test]
    fn globals_work_before_and_after_the_command() {
        let cli = parse(&["--json", "--endpoints", "a:1,b:2", "get", "/x"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.endpoints, "a:1,b:2");
        let cli = parse(&["get", "/x", "--json", "--timeout-ms", "50"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.timeout_ms, 50);
        assert!(
            matches!(cli.command, Command::Get { ref path, linearizable: false } if path == "/x")
        );
    }

    #[test]
    fn mode_flags_and_names_pick_the_same_modes() {
        let o = create_options(&["create", "/a"]).unwrap();
        assert_eq!(o, CreateOptions::persistent());
        let o = create_options(&["create", "/a", "-e", "--session", "5"]).unwrap();
        assert_eq!(o, CreateOptions::ephemeral(5));
        let o = create_options(&["create", "/a", "-e", "-s", "--session", "5"]).unwrap();
        assert_eq!(o, CreateOptions::ephemeral_sequential(5));
        let o = create_options(&[
            "create",
            "/a",
            "--mode",
            "ephemeral-sequential",
            "--session",
            "5",
        ])
        .unwrap();
        assert_eq!(o, CreateOptions::ephemeral_sequential(5));
        let o = create_options(&["create", "/a", "-s"]).unwrap();
        assert_eq!(o.mode, CreateMode::PersistentSequential);
        let o = create_options(&["create", "/a", "--container"]).unwrap();
        assert_eq!(o.mode, CreateMode::Container);
        let o = create_options(&["create", "/a", "--ttl-ms", "500"]).unwrap();
        assert_eq!(o, CreateOptions::ttl(500));
        let o = create_options(&["create", "/a", "-s", "-t", "500"]).unwrap();
        assert_eq!(o.mode, CreateMode::TtlSequential);
        let o = create_options(&["create", "/a", "-m", "ttl", "-t", "9"]).unwrap();
        assert_eq!(o, CreateOptions::ttl(9));
    }

    #[test]
    fn impossible_mode_combinations_are_usage_errors() {
        for bad in [
            &["create", "/a", "-e"][..],
            &["create", "/a", "-e", "-t", "5", "--session", "1"],
            &["create", "/a", "--session", "1"],
            &["create", "/a", "-m", "ttl"],
            &["create", "/a", "-m", "persistent", "-t", "5"],
            &["create", "/a", "-c", "-s"],
        ] {
            assert!(create_options(bad).is_err(), "{bad:?}");
        }
        let err = parse(&["create", "/a", "--mode", "forever"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let err = parse(&["create", "/a", "--mode", "ephemeral", "-e"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn data_sources_exclude_each_other() {
        let err = parse(&["set", "/a", "x", "--file", "f"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        let err = parse(&["set", "/a", "x", "--stdin"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        let cli = parse(&["set", "/a", "hello", "-v", "3"]).unwrap();
        match cli.command {
            Command::Set { data, version, .. } => {
                assert_eq!(data.read().unwrap(), b"hello");
                assert_eq!(version, 3);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["rm", "/a", "--version", "-1"]).unwrap();
        assert!(matches!(cli.command, Command::Rm { version: -1, .. }));
        let cli = parse(&["delete", "/a"]).unwrap();
        assert!(matches!(cli.command, Command::Rm { .. }));
    }

    #[test]
    fn data_from_a_file() {
        let dir = std::env::temp_dir().join(format!("keeperctl-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("data.bin");
        std::fs::write(&file, [0u8, 1, 255]).unwrap();
        let cli = parse(&["create", "/a", "--file", file.to_str().unwrap()]).unwrap();
        match cli.command {
            Command::Create { data, .. } => assert_eq!(data.read().unwrap(), vec![0u8, 1, 255]),
            other => panic!("{other:?}"),
        }
        let missing = dir.join("missing");
        let cli = parse(&["create", "/a", "--file", missing.to_str().unwrap()]).unwrap();
        match cli.command {
            Command::Create { data, .. } => assert!(data.read().is_err()),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ls_defaults_to_root_and_after_needs_limit() {
        let cli = parse(&["ls"]).unwrap();
        assert!(
            matches!(cli.command, Command::Ls { ref path, limit: None, after: None } if path == "/")
        );
        assert!(parse(&["ls", "/a", "--after", "x"]).is_err());
        assert!(parse(&["ls", "/a", "--limit", "2", "--after", "x"]).is_ok());
    }

    #[test]
    fn lock_takes_a_command_after_the_separator_and_fences_need_a_token() {
        let cli = parse(&[
            "lock",
            "jobs",
            "--",
            "sh",
            "-c",
            "echo $KEEPER_FENCING_TOKEN",
        ])
        .unwrap();
        match cli.command {
            Command::Lock { name, cmd, .. } => {
                assert_eq!(name, "jobs");
                assert_eq!(cmd, vec!["sh", "-c", "echo $KEEPER_FENCING_TOKEN"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["lock", "jobs"]).is_err(), "a command is required");
        let fence = |args: &[&str]| match parse(args).unwrap().command {
            Command::Set { fence, .. } => fence.fence(),
            other => panic!("{other:?}"),
        };
        assert_eq!(fence(&["set", "/a", "x"]), Ok(None));
        assert_eq!(
            fence(&["set", "/a", "x", "--fence-lock", "l", "--fence-token", "7"]),
            Ok(Some(Fence::lock("l", 7)))
        );
        assert_eq!(
            fence(&[
                "set",
                "/a",
                "x",
                "--fence-election",
                "e",
                "--fence-token",
                "9"
            ]),
            Ok(Some(Fence::election("e", 9)))
        );
        if std::env::var_os("KEEPER_FENCING_TOKEN").is_none() {
            assert!(fence(&["set", "/a", "x", "--fence-lock", "l"]).is_err());
        }
        assert!(parse(&["set", "/a", "--fence-lock", "l", "--fence-election", "e"]).is_err());
    }

    #[test]
    fn session_subcommands_parse() {
        let cli = parse(&["session", "hold", "--timeout-ms", "3000", "--hold-ms", "10"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Session {
                action: SessionAction::Hold {
                    timeout_ms: 3000,
                    hold_ms: Some(10),
                    until_eof: false
                }
            }
        ));
        assert!(parse(&["session", "close", "abc"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }
}
