//! Server configuration: every address, directory and bound the server uses.
//!
//! The binary (`main.rs`) builds a [`Config`] from defaults, an optional TOML
//! file, `KEEPER_*` environment variables and command-line flags (in rising
//! precedence), then calls [`Config::validate`] before anything starts. The
//! rest of the server only ever sees a validated `Config`; it knows nothing
//! about clap or the environment.

use keeper_store::StoreConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Most members a StatefulSet pattern may name (`replicas`).
pub const MAX_REPLICAS: u64 = 255;

/// Splits a StatefulSet pod hostname into the set's name and the pod's ordinal:
/// `keeper-2` -> `("keeper", 2)`. A fully qualified name is cut at the first dot.
pub fn statefulset_ordinal(hostname: &str) -> Result<(String, u64), ConfigError> {
    let short = hostname.split('.').next().unwrap_or_default();
    let bad = || {
        ConfigError(format!(
            "hostname {hostname:?} is not a StatefulSet pod name (NAME-ORDINAL, e.g. keeper-2)"
        ))
    };
    let (set, ordinal) = short.rsplit_once('-').ok_or_else(bad)?;
    if set.is_empty() || ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ordinal = ordinal.parse::<u64>().map_err(|_| bad())?;
    if ordinal >= MAX_REPLICAS {
        return Err(bad());
    }
    Ok((set.to_string(), ordinal))
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// One member of the ensemble as given by `--peers`: `id=HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// The member's id (`--id` on that member), at least 1.
    pub id: u64,
    /// The member's peer address, `HOST:PORT`.
    pub addr: String,
}

impl PeerSpec {
    /// Parses a comma-separated list `1=HOST:PORT,2=HOST:PORT,...`.
    pub fn parse_list(list: &str) -> Result<Vec<PeerSpec>, ConfigError> {
        let mut peers = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, addr) = item.split_once('=').ok_or_else(|| {
                ConfigError(format!("peer {item:?} is not of the form ID=HOST:PORT"))
            })?;
            let id = id
                .trim()
                .parse::<u64>()
                .map_err(|e| ConfigError(format!("peer id {id:?} in {item:?}: {e}")))?;
            peers.push(PeerSpec {
                id,
                addr: addr.trim().to_string(),
            });
        }
        Ok(peers)
    }
}

/// Most bytes one session's verdict takes in a keepalive answer to a
/// follower (id, verdict and its short reason).
pub const KEEPALIVE_VERDICT_MAX_BYTES: usize = 256;

/// The leader's heartbeat period in ticks (the ZAB core's default).
pub const HEARTBEAT_INTERVAL_TICKS: u64 = 2;

/// Everything the server needs to run. `Default` gives a working standalone
/// server on 127.0.0.1:7181 storing into `./data`.
///
/// Units are the last part of each name: `_ms` milliseconds, `_bytes` bytes;
/// counts have no suffix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory of this member's RocksDB (created if missing).
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on, `HOST:PORT`.
    pub client_addr: String,
    /// This member's id in the ensemble (>= 1). Ignored when `peers` is empty.
    pub id: u64,
    /// Address the peer (ZAB) transport listens on, `HOST:PORT`. Ignored when `peers` is empty.
    pub peer_addr: String,
    /// All members of the ensemble, this one included. Empty: standalone.
    pub peers: Vec<PeerSpec>,

    /// Largest HTTP request body accepted, in bytes (413 TooLarge above).
    pub max_request_bytes: usize,
    /// Largest znode data accepted, in bytes.
    pub max_data_bytes: usize,
    /// Longest znode path accepted, in bytes.
    pub max_path_bytes: usize,
    /// Largest page of children one listing returns (also the default `limit`).
    pub max_children_page: usize,
    /// Most operations in one `/v1/txn` multi.
    pub max_ops_per_txn: usize,
    /// Proposals waiting for the log writer before `propose` waits for room.
    pub max_inflight_proposals: usize,
    /// Most entries appended (and fsynced) together in one group commit.
    pub max_batch_entries: usize,
    /// Most bytes in one proposal batch, in one message of forwarded writes
    /// and in one DIFF message, each entry counted as its encoded size plus
    /// `keeper_zab::ENTRY_OVERHEAD_BYTES`. A single write larger than this is
    /// refused (413); `validate` makes sure every accepted request fits.
    pub max_batch_bytes: usize,
    /// Cluster only: largest message on a peer link (one frame's payload),
    /// in bytes. Must exceed `max_batch_bytes` and `snapshot_chunk_bytes`
    /// by [`PEER_MESSAGE_OVERHEAD_BYTES`].
    pub max_frame_bytes: usize,
    /// Cluster only: a follower missing more log bytes than this (counted
    /// as for `max_batch_bytes`) catches up by snapshot instead of DIFF: the
    /// leader holds a whole DIFF in memory while it sends it.
    pub max_diff_bytes: usize,
    /// HTTP requests served at the same time; further requests wait.
    pub max_concurrent_requests: usize,
    /// Longest time one HTTP request may take, in ms (504 Timeout after).
    pub request_timeout_ms: u64,
    /// Longest wait for `X-Keeper-Min-Zxid` to be applied, in ms (504 Timeout after).
    pub min_zxid_wait_ms: u64,
    /// Longest `wait_ms` a lock acquire may ask for, in ms (larger asks are
    /// clamped down). Below `request_timeout_ms`, so a waiter gets its own
    /// `Timeout` answer and removes its contender node.
    pub max_lock_wait_ms: u64,
    /// Smallest session timeout granted, in ms (requests are clamped up to it).
    pub min_session_timeout_ms: u64,
    /// Largest session timeout granted, in ms (requests are clamped down to it).
    pub max_session_timeout_ms: u64,
    /// How often expired sessions are looked for and closed, in ms.
    pub session_tick_ms: u64,
    /// How often empty containers and expired ttl nodes are looked for, in ms.
    pub reap_interval_ms: u64,
    /// Most nodes deleted by one reap transaction.
    pub max_reap_batch: usize,
    /// Apply runs (each with its change events) buffered between the
    /// applier and the watch dispatcher; a dispatcher further behind cuts
    /// every stream off (each resumes from its last zxid).
    pub event_channel_capacity: usize,
    /// Event streams (`/v1/events`) and waiting one-shot watches
    /// (`/v1/watch`) open at once on this member; more are refused (503).
    pub max_watch_streams: usize,
    /// Paths one event stream may watch (its path plus `also=` paths).
    pub max_watches_per_stream: usize,
    /// Entries (zxids) with matching changes buffered per event stream; a
    /// consumer this far behind is cut off with the zxid to resume from.
    pub watch_stream_buffer: usize,
    /// How often an event stream sends a progress event with the zxid it
    /// has covered, in ms.
    pub watch_progress_interval_ms: u64,
    /// Longest `wait_ms` of a one-shot watch, in ms (also its default). Kept
    /// under the 10 s read timeout common in HTTP clients and proxies (and in
    /// API fuzzers); a client polls again with `after_zxid`, losing nothing.
    pub max_watch_wait_ms: u64,
    /// Changes read from the history per step of a stream's replay.
    pub watch_replay_chunk: usize,
    /// After a shutdown signal, how long in-flight requests may take to finish, in ms.
    pub shutdown_grace_ms: u64,
    /// `/readyz` says ready only while this member's applied zxid is at most this many
    /// entries behind the committed one (it must first join a quorum and catch up).
    pub ready_max_lag_entries: u64,
    /// Backups (`GET /v1/admin/snapshot`) that may run at once; more get 503.
    pub max_concurrent_backups: usize,

    /// Cluster only: the name every member must share (checked in the peer handshake).
    pub cluster_name: String,
    /// Cluster only: wall time of one consensus tick, in ms (heartbeats and
    /// timeouts of the ZAB core are counted in ticks).
    pub tick_ms: u64,
    /// Cluster only: ticks without a leader's heartbeat before a follower starts
    /// an election (randomized up to twice this).
    pub election_timeout_ticks: u64,
    /// Cluster only: ticks a leader keeps leading without hearing from a quorum.
    pub step_down_ticks: u64,
    /// Cluster only: writes a follower forwards to the leader and waits on at once.
    pub max_pending_forwards: usize,
    /// Cluster only: log entries kept behind the applied state for DIFF catch-up;
    /// a member further behind catches up by snapshot (SNAP).
    pub log_retain_entries: u64,
    /// A log segment file takes no more entries past this size, in bytes;
    /// compaction deletes whole segments, so up to one segment more than
    /// `log_retain_entries` stays on disk.
    pub log_segment_bytes: u64,
    /// Cluster only: size of one snapshot chunk on the peer link, in bytes.
    pub snapshot_chunk_bytes: usize,
    /// Cluster only: a keepalive not confirmed by the leader's quorum round
    /// within this long after it arrived is answered 503, in ms. At most
    /// `min_session_timeout_ms`.
    pub keepalive_confirm_wait_ms: u64,
    /// Cluster only: a follower that has heard nothing from its leader for
    /// this long answers keepalives 503 at once, in ms. At least two leader
    /// heartbeat periods (`2 * 2 * tick_ms`).
    pub keepalive_leader_silence_ms: u64,
    /// Cluster only: most distinct sessions in one keepalive batch a
    /// follower relays to its leader (its answer must fit in one frame:
    /// `max_keepalive_batch * KEEPALIVE_VERDICT_MAX_BYTES <= max_frame_bytes`).
    pub max_keepalive_batch: usize,
    /// Cluster only: most keepalives waiting for confirmation on one member
    /// (further ones are answered 503 at once).
    pub max_pending_keepalives: usize,

    /// Peer link: outbound messages queued per peer; a full queue resets the link.
    pub peer_send_queue_frames: usize,
    /// Peer link: inbound events (messages, connects, disconnects) queued for the driver.
    pub peer_event_queue: usize,
    /// Peer link: a writer stops batching queued frames into one write past this, in bytes.
    pub peer_write_batch_max_bytes: usize,
    /// Peer link: first delay before redialing a peer (or retrying a name that does not
    /// resolve yet), doubled after each failure, in ms.
    pub peer_reconnect_backoff_min_ms: u64,
    /// Peer link: longest delay between two dials of the same peer, in ms.
    pub peer_reconnect_backoff_max_ms: u64,
    /// Peer link: time allowed for one TCP connect, in ms.
    pub peer_connect_timeout_ms: u64,
    /// Peer link: time allowed for the handshake exchange, in ms.
    pub peer_handshake_timeout_ms: u64,
    /// Peer link: inbound connections in the handshake at once; more are closed.
    pub peer_max_pending_handshakes: usize,
    /// Peer link: set TCP_NODELAY on peer sockets.
    pub peer_tcp_nodelay: bool,
    /// Peer link: a file of `HOST:PORT ADDR:PORT` lines (`#` comments) consulted before
    /// DNS when dialing a peer, re-read at every dial. Empty: DNS only. Meant for tests
    /// and hosts without cluster DNS.
    pub peer_hosts_file: PathBuf,

    /// StatefulSet startup: take `id` from the ordinal of `hostname` (`keeper-2` is id 3).
    pub id_from_hostname: bool,
    /// StatefulSet startup: this pod's hostname. Empty: the operating system's hostname.
    pub hostname: String,
    /// StatefulSet startup: when above 0, `peers` is the pod DNS pattern
    /// `{set}-{i}.{peer_service}.{namespace}.svc.{cluster_domain}:{peer_port}` for
    /// `i` in `0..replicas` (member id `i + 1`), `{set}` being `hostname` without its ordinal.
    pub replicas: u64,
    /// StatefulSet startup: the headless Service that gives the pods their DNS names.
    pub peer_service: String,
    /// StatefulSet startup: the pods' namespace.
    pub namespace: String,
    /// StatefulSet startup: the cluster's DNS domain.
    pub cluster_domain: String,
    /// StatefulSet startup: the peer port every pod listens on.
    pub peer_port: u16,
    /// Cluster only: most snapshot bytes in flight to a follower and not yet
    /// acknowledged as written (flow control); at least one chunk.
    pub snapshot_window_bytes: u64,
    /// Cluster only: a snapshot stream whose receiver acknowledges nothing
    /// for this long fails (the follower rejoins and gets a new one), in ms.
    pub snapshot_stall_timeout_ms: u64,
    /// Cluster only: most bytes of peer messages a follower holds while it
    /// installs a snapshot (handled in order afterwards; beyond this they
    /// are dropped, which ZAB treats as message loss).
    pub snapshot_install_stash_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        let store = StoreConfig::default();
        Config {
            data_dir: PathBuf::from("./data"),
            client_addr: "127.0.0.1:7181".to_string(),
            id: 1,
            peer_addr: "127.0.0.1:7888".to_string(),
            peers: Vec::new(),
            max_request_bytes: 4 << 20,
            max_data_bytes: store.max_data_bytes,
            max_path_bytes: store.max_path_bytes,
            max_children_page: store.max_children_page,
            max_ops_per_txn: 1000,
            max_inflight_proposals: 10_000,
            max_batch_entries: 1000,
            max_batch_bytes: 8 << 20,
            max_frame_bytes: 16 << 20,
            max_diff_bytes: 128 << 20,
            max_concurrent_requests: 1024,
            request_timeout_ms: 30_000,
            min_zxid_wait_ms: 5_000,
            max_lock_wait_ms: 20_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 60_000,
            session_tick_ms: 200,
            reap_interval_ms: 1_000,
            max_reap_batch: 1_000,
            event_channel_capacity: 4_096,
            max_watch_streams: 10_000,
            max_watches_per_stream: 64,
            watch_stream_buffer: 1_024,
            watch_progress_interval_ms: 1_000,
            max_watch_wait_ms: 9_000,
            watch_replay_chunk: 1_024,
            shutdown_grace_ms: 10_000,
            ready_max_lag_entries: 1_000,
            max_concurrent_backups: 1,
            cluster_name: "keeper".to_string(),
            tick_ms: 50,
            election_timeout_ticks: 10,
            step_down_ticks: 10,
            max_pending_forwards: 10_000,
            log_retain_entries: 100_000,
            log_segment_bytes: store.log_segment_bytes,
            snapshot_chunk_bytes: 1 << 20,
            keepalive_confirm_wait_ms: 1_000,
            keepalive_leader_silence_ms: 500,
            max_keepalive_batch: 4_096,
            max_pending_keepalives: 10_000,
            peer_send_queue_frames: 8192,
            peer_event_queue: 8192,
            peer_write_batch_max_bytes: 256 << 10,
            peer_reconnect_backoff_min_ms: 50,
            peer_reconnect_backoff_max_ms: 1000,
            peer_connect_timeout_ms: 1000,
            peer_handshake_timeout_ms: 2000,
            peer_max_pending_handshakes: 64,
            peer_tcp_nodelay: true,
            peer_hosts_file: PathBuf::new(),
            id_from_hostname: false,
            hostname: String::new(),
            replicas: 0,
            peer_service: "keeper-peers".to_string(),
            namespace: "default".to_string(),
            cluster_domain: "cluster.local".to_string(),
            peer_port: 7888,
            snapshot_window_bytes: 8 << 20,
            snapshot_stall_timeout_ms: 10_000,
            snapshot_install_stash_bytes: 64 << 20,
        }
    }
}

/// What a peer message adds to the entries or chunk it carries, at most
/// (message tags, epoch, counts, a snapshot file's name), in bytes.
pub const PEER_MESSAGE_OVERHEAD_BYTES: usize = 4096;

/// What a log entry adds to the request it was made from, at most: its
/// timestamp and the txn's tags. An entry's binary ops are never larger
/// than their JSON, but a node's path comes in the URL, not the body.
pub const ENTRY_ENVELOPE_BYTES: usize = 64;

/// Checks that `addr` looks like `HOST:PORT` with a numeric port.
fn validate_host_port(name: &str, addr: &str) -> Result<(), ConfigError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| ConfigError(format!("{name} {addr:?} is not HOST:PORT")))?;
    if host.is_empty() {
        return Err(ConfigError(format!("{name} {addr:?} has an empty host")));
    }
    port.parse::<u16>()
        .map_err(|e| ConfigError(format!("{name} {addr:?} has a bad port: {e}")))?;
    Ok(())
}

impl Config {
    /// Parses a TOML config file's contents (every key optional, unknown keys refused).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("config file: {e}")))
    }

    /// Renders the configuration as TOML (what `keeper print-config` shows).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError(format!("rendering config: {e}")))
    }

    /// True when this member runs alone (no `--peers`).
    pub fn is_standalone(&self) -> bool {
        self.peers.is_empty()
    }

    /// Checks every field and their relations; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError("data_dir is empty".into()));
        }
        validate_host_port("client_addr", &self.client_addr)?;
        validate_host_port("peer_addr", &self.peer_addr)?;
        if self.id == 0 {
            return Err(ConfigError("id must be at least 1".into()));
        }
        if !self.peers.is_empty() {
            let mut ids = std::collections::BTreeSet::new();
            for peer in &self.peers {
                if peer.id == 0 {
                    return Err(ConfigError("peer ids must be at least 1".into()));
                }
                if !ids.insert(peer.id) {
                    return Err(ConfigError(format!("peer id {} listed twice", peer.id)));
                }
                validate_host_port(&format!("peer {}", peer.id), &peer.addr)?;
            }
            if !ids.contains(&self.id) {
                return Err(ConfigError(format!(
                    "id {} is not among the peers {:?}",
                    self.id, ids
                )));
            }
        }
        let positive = [
            ("max_request_bytes", self.max_request_bytes as u64),
            ("max_data_bytes", self.max_data_bytes as u64),
            ("max_path_bytes", self.max_path_bytes as u64),
            ("max_children_page", self.max_children_page as u64),
            ("max_ops_per_txn", self.max_ops_per_txn as u64),
            ("max_inflight_proposals", self.max_inflight_proposals as u64),
            ("max_batch_entries", self.max_batch_entries as u64),
            ("max_batch_bytes", self.max_batch_bytes as u64),
            ("max_frame_bytes", self.max_frame_bytes as u64),
            ("max_diff_bytes", self.max_diff_bytes as u64),
            (
                "max_concurrent_requests",
                self.max_concurrent_requests as u64,
            ),
            ("request_timeout_ms", self.request_timeout_ms),
            ("tick_ms", self.tick_ms),
            ("election_timeout_ticks", self.election_timeout_ticks),
            ("step_down_ticks", self.step_down_ticks),
            ("max_pending_forwards", self.max_pending_forwards as u64),
            ("log_retain_entries", self.log_retain_entries),
            ("log_segment_bytes", self.log_segment_bytes),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes as u64),
            ("snapshot_window_bytes", self.snapshot_window_bytes),
            ("snapshot_stall_timeout_ms", self.snapshot_stall_timeout_ms),
            (
                "snapshot_install_stash_bytes",
                self.snapshot_install_stash_bytes,
            ),
            ("min_zxid_wait_ms", self.min_zxid_wait_ms),
            ("max_lock_wait_ms", self.max_lock_wait_ms),
            ("min_session_timeout_ms", self.min_session_timeout_ms),
            ("max_session_timeout_ms", self.max_session_timeout_ms),
            ("session_tick_ms", self.session_tick_ms),
            ("reap_interval_ms", self.reap_interval_ms),
            ("max_reap_batch", self.max_reap_batch as u64),
            ("event_channel_capacity", self.event_channel_capacity as u64),
            ("keepalive_confirm_wait_ms", self.keepalive_confirm_wait_ms),
            (
                "keepalive_leader_silence_ms",
                self.keepalive_leader_silence_ms,
            ),
            ("max_keepalive_batch", self.max_keepalive_batch as u64),
            ("max_pending_keepalives", self.max_pending_keepalives as u64),
            ("max_concurrent_backups", self.max_concurrent_backups as u64),
            ("peer_port", u64::from(self.peer_port)),
            ("max_watch_streams", self.max_watch_streams as u64),
            ("max_watches_per_stream", self.max_watches_per_stream as u64),
            ("watch_stream_buffer", self.watch_stream_buffer as u64),
            (
                "watch_progress_interval_ms",
                self.watch_progress_interval_ms,
            ),
            ("max_watch_wait_ms", self.max_watch_wait_ms),
            ("watch_replay_chunk", self.watch_replay_chunk as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be positive")));
            }
        }
        if self.min_session_timeout_ms > self.max_session_timeout_ms {
            return Err(ConfigError(format!(
                "min_session_timeout_ms ({}) is above max_session_timeout_ms ({})",
                self.min_session_timeout_ms, self.max_session_timeout_ms
            )));
        }
        if self.max_lock_wait_ms >= self.request_timeout_ms {
            return Err(ConfigError(format!(
                "max_lock_wait_ms ({}) must be below request_timeout_ms ({})",
                self.max_lock_wait_ms, self.request_timeout_ms
            )));
        }
        if self.max_data_bytes > self.max_request_bytes {
            return Err(ConfigError(format!(
                "max_data_bytes ({}) is above max_request_bytes ({}): such data could never be sent",
                self.max_data_bytes, self.max_request_bytes
            )));
        }
        if self.snapshot_window_bytes < self.snapshot_chunk_bytes as u64 {
            return Err(ConfigError(format!(
                "snapshot_window_bytes ({}) is below snapshot_chunk_bytes ({}): a stream could never send",
                self.snapshot_window_bytes, self.snapshot_chunk_bytes
            )));
        }
        if self.max_watch_wait_ms >= self.request_timeout_ms {
            return Err(ConfigError(format!(
                "max_watch_wait_ms ({}) must be below request_timeout_ms ({})",
                self.max_watch_wait_ms, self.request_timeout_ms
            )));
        }
        if !self.is_standalone() {
            self.validate_keepalive_bounds()?;
        }
        if self.max_data_bytes > u32::MAX as usize {
            return Err(ConfigError("max_data_bytes must fit in u32".into()));
        }
        if self.replicas > 0 && !self.peers.is_empty() {
            return Err(ConfigError(
                "give either peers or replicas (the StatefulSet pattern), not both".into(),
            ));
        }
        if self.replicas > MAX_REPLICAS {
            return Err(ConfigError(format!(
                "replicas ({}) is above {MAX_REPLICAS}",
                self.replicas
            )));
        }
        self.peer_config()
            .validate()
            .map_err(|e| ConfigError(e.to_string()))?;
        self.validate_message_sizes()
    }

    /// The byte bounds of batches, DIFFs and peer messages fit each other:
    /// every write the HTTP layer accepts (and every reap the server makes)
    /// fits in one batch, and a full batch, DIFF message or snapshot chunk
    /// fits in one peer frame.
    fn validate_message_sizes(&self) -> Result<(), ConfigError> {
        let entry = keeper_zab::wire_bytes(
            self.max_request_bytes
                .saturating_add(self.max_path_bytes)
                .saturating_add(ENTRY_ENVELOPE_BYTES),
        );
        if entry > self.max_batch_bytes {
            return Err(ConfigError(format!(
                "max_batch_bytes ({}) must hold the largest write: max_request_bytes + max_path_bytes + {} = {entry}",
                self.max_batch_bytes,
                ENTRY_ENVELOPE_BYTES + keeper_zab::ENTRY_OVERHEAD_BYTES
            )));
        }
        // A reap names up to max_reap_batch paths (each with its czxid).
        let reap = keeper_zab::wire_bytes(
            self.max_reap_batch
                .saturating_mul(self.max_path_bytes.saturating_add(16))
                .saturating_add(ENTRY_ENVELOPE_BYTES),
        );
        if reap > self.max_batch_bytes {
            return Err(ConfigError(format!(
                "max_batch_bytes ({}) must hold a reap of max_reap_batch paths of max_path_bytes ({reap})",
                self.max_batch_bytes
            )));
        }
        for (name, bytes) in [
            ("max_batch_bytes", self.max_batch_bytes),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
        ] {
            if bytes.saturating_add(PEER_MESSAGE_OVERHEAD_BYTES) > self.max_frame_bytes {
                return Err(ConfigError(format!(
                    "{name} ({bytes}) + {PEER_MESSAGE_OVERHEAD_BYTES} is above max_frame_bytes ({}): such a message could never be sent",
                    self.max_frame_bytes
                )));
            }
        }
        if self.max_frame_bytes > u32::MAX as usize {
            return Err(ConfigError("max_frame_bytes must fit in u32".into()));
        }
        if self.max_diff_bytes < self.max_batch_bytes {
            return Err(ConfigError(format!(
                "max_diff_bytes ({}) is below max_batch_bytes ({})",
                self.max_diff_bytes, self.max_batch_bytes
            )));
        }
        Ok(())
    }

    /// Cluster only: the keepalive bounds against the session, tick and frame bounds.
    fn validate_keepalive_bounds(&self) -> Result<(), ConfigError> {
        let ack_bytes = self
            .max_keepalive_batch
            .saturating_mul(KEEPALIVE_VERDICT_MAX_BYTES);
        if ack_bytes > self.max_frame_bytes {
            return Err(ConfigError(format!(
                "max_keepalive_batch ({}) verdicts of up to {KEEPALIVE_VERDICT_MAX_BYTES} bytes do not fit in max_frame_bytes ({})",
                self.max_keepalive_batch, self.max_frame_bytes
            )));
        }
        if self.keepalive_confirm_wait_ms > self.min_session_timeout_ms {
            return Err(ConfigError(format!(
                "keepalive_confirm_wait_ms ({}) is above min_session_timeout_ms ({}): a keepalive could be confirmed after the session's whole timeout",
                self.keepalive_confirm_wait_ms, self.min_session_timeout_ms
            )));
        }
        let heartbeat_ms = self.tick_ms.saturating_mul(HEARTBEAT_INTERVAL_TICKS);
        if self.keepalive_leader_silence_ms < heartbeat_ms.saturating_mul(2) {
            return Err(ConfigError(format!(
                "keepalive_leader_silence_ms ({}) is below two leader heartbeat periods ({} ms): one late heartbeat would refuse keepalives",
                self.keepalive_leader_silence_ms,
                heartbeat_ms.saturating_mul(2)
            )));
        }
        Ok(())
    }

    /// Applies the StatefulSet startup options (see `id_from_hostname` and `replicas`):
    /// returns the config with `id` and `peers` filled in. `os_hostname` is used when
    /// `hostname` is empty. A config without those options comes back unchanged.
    pub fn resolve_statefulset(mut self, os_hostname: &str) -> Result<Config, ConfigError> {
        if !self.id_from_hostname && self.replicas == 0 {
            return Ok(self);
        }
        let hostname = if self.hostname.is_empty() {
            os_hostname.trim().to_string()
        } else {
            self.hostname.clone()
        };
        let (set, ordinal) = statefulset_ordinal(&hostname)?;
        if self.id_from_hostname {
            self.id = ordinal + 1;
        }
        if self.replicas > 0 {
            if !self.peers.is_empty() {
                return Err(ConfigError(
                    "give either peers or replicas (the StatefulSet pattern), not both".into(),
                ));
            }
            self.peers = (0..self.replicas)
                .map(|i| PeerSpec {
                    id: i + 1,
                    addr: format!(
                        "{set}-{i}.{}.{}.svc.{}:{}",
                        self.peer_service, self.namespace, self.cluster_domain, self.peer_port
                    ),
                })
                .collect();
            self.replicas = 0;
        }
        self.hostname = hostname;
        Ok(self)
    }

    /// The peer transport's settings implied by this configuration.
    pub fn peer_config(&self) -> crate::peer::PeerConfig {
        crate::peer::PeerConfig {
            my_id: self.id,
            cluster_name: self.cluster_name.clone(),
            listen_addr: self.peer_addr.clone(),
            peers: self.peers.iter().map(|p| (p.id, p.addr.clone())).collect(),
            max_frame_bytes: self.max_frame_bytes,
            peer_send_queue_frames: self.peer_send_queue_frames,
            peer_event_queue: self.peer_event_queue,
            write_batch_max_bytes: self.peer_write_batch_max_bytes,
            reconnect_backoff_min_ms: self.peer_reconnect_backoff_min_ms,
            reconnect_backoff_max_ms: self.peer_reconnect_backoff_max_ms,
            connect_timeout_ms: self.peer_connect_timeout_ms,
            handshake_timeout_ms: self.peer_handshake_timeout_ms,
            max_pending_handshakes: self.peer_max_pending_handshakes,
            tcp_nodelay: self.peer_tcp_nodelay,
            hosts_file: (!self.peer_hosts_file.as_os_str().is_empty())
                .then(|| self.peer_hosts_file.clone()),
        }
    }

    /// The store options implied by this configuration.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            max_data_bytes: self.max_data_bytes,
            max_path_bytes: self.max_path_bytes,
            max_children_page: self.max_children_page,
            sync_log: true,
            log_segment_bytes: self.log_segment_bytes,
            ..StoreConfig::default()
        }
    }

    /// Clamps a requested session timeout into `[min, max]_session_timeout_ms`.
    pub fn clamp_session_timeout_ms(&self, requested_ms: u64) -> u64 {
        requested_ms.clamp(self.min_session_timeout_ms, self.max_session_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_standalone() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.is_standalone());
        assert_eq!(c.client_addr, "127.0.0.1:7181");
        assert_eq!(c.peer_addr, "127.0.0.1:7888");
    }

    #[test]
    fn toml_round_trips_and_rejects_unknown_keys() {
        let c = Config {
            max_data_bytes: 1234,
            peers: PeerSpec::parse_list("1=a:1,2=b:2").unwrap(),
            ..Config::default()
        };
        let text = c.to_toml().unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), c);
        assert!(Config::from_toml("max_dta_bytes = 3").is_err());
        let partial = Config::from_toml("session_tick_ms = 50").unwrap();
        assert_eq!(partial.session_tick_ms, 50);
        assert_eq!(partial.max_data_bytes, Config::default().max_data_bytes);
    }

    #[test]
    fn validate_rejects_bad_values() {
        type Mutation = Box<dyn Fn(&mut Config)>;
        let bad: Vec<Mutation> = vec![
            Box::new(|c| c.client_addr = "nohost".into()),
            Box::new(|c| c.client_addr = "h:99999".into()),
            Box::new(|c| c.peer_addr = ":80".into()),
            Box::new(|c| c.id = 0),
            Box::new(|c| c.max_batch_entries = 0),
            Box::new(|c| c.session_tick_ms = 0),
            Box::new(|c| c.min_session_timeout_ms = c.max_session_timeout_ms + 1),
            Box::new(|c| c.max_data_bytes = c.max_request_bytes + 1),
            Box::new(|c| c.keepalive_confirm_wait_ms = 0),
            Box::new(|c| c.max_pending_keepalives = 0),
            Box::new(|c| c.snapshot_window_bytes = c.snapshot_chunk_bytes as u64 - 1),
            Box::new(|c| c.snapshot_stall_timeout_ms = 0),
            Box::new(|c| c.snapshot_install_stash_bytes = 0),
            Box::new(|c| c.max_batch_bytes = 0),
            Box::new(|c| c.max_batch_bytes = c.max_request_bytes),
            Box::new(|c| c.max_frame_bytes = c.max_batch_bytes),
            Box::new(|c| c.snapshot_chunk_bytes = c.max_frame_bytes),
            Box::new(|c| c.max_frame_bytes = u32::MAX as usize + 1),
            Box::new(|c| c.max_diff_bytes = c.max_batch_bytes - 1),
            Box::new(|c| c.max_reap_batch = 10_000),
            Box::new(|c| c.max_watch_streams = 0),
            Box::new(|c| c.max_watches_per_stream = 0),
            Box::new(|c| c.watch_stream_buffer = 0),
            Box::new(|c| c.watch_progress_interval_ms = 0),
            Box::new(|c| c.max_watch_wait_ms = c.request_timeout_ms),
            Box::new(|c| c.peers = PeerSpec::parse_list("2=a:1,3=b:2").unwrap()),
            Box::new(|c| c.peers = PeerSpec::parse_list("1=a:1,1=b:2").unwrap()),
            Box::new(|c| c.peers = PeerSpec::parse_list("1=a:1,2=b").unwrap()),
        ];
        for (i, mutate) in bad.iter().enumerate() {
            let mut c = Config::default();
            mutate(&mut c);
            assert!(c.validate().is_err(), "case {i} should be refused: {c:?}");
        }
    }

    /// Issue 9, problem 11: the byte bounds fit each other. The largest
    /// accepted write fits a batch; a batch fits a peer frame.
    #[test]
    fn the_largest_write_fits_a_batch_and_a_batch_fits_a_frame() {
        let c = Config::default();
        let largest_write =
            keeper_zab::wire_bytes(c.max_request_bytes + c.max_path_bytes + ENTRY_ENVELOPE_BYTES);
        assert!(largest_write <= c.max_batch_bytes);
        assert!(c.max_batch_bytes + PEER_MESSAGE_OVERHEAD_BYTES <= c.max_frame_bytes);
        assert!(c.snapshot_chunk_bytes + PEER_MESSAGE_OVERHEAD_BYTES <= c.max_frame_bytes);
        // Raising the request limit alone is refused until the batch grows.
        let c = Config {
            max_request_bytes: 16 << 20,
            max_data_bytes: 16 << 20,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            max_batch_bytes: 17 << 20,
            max_frame_bytes: 18 << 20,
            max_diff_bytes: 128 << 20,
            ..c
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn cluster_keepalive_bounds_are_checked_against_sessions_and_ticks() {
        let cluster = Config {
            peers: PeerSpec::parse_list("1=a:1,2=b:2,3=c:3").unwrap(),
            ..Config::default()
        };
        assert_eq!(cluster.validate(), Ok(()));
        let confirm_too_long = Config {
            keepalive_confirm_wait_ms: cluster.min_session_timeout_ms + 1,
            ..cluster.clone()
        };
        assert!(confirm_too_long.validate().is_err());
        let silence_below_two_heartbeats = Config {
            keepalive_leader_silence_ms: 3 * cluster.tick_ms,
            ..cluster.clone()
        };
        assert!(silence_below_two_heartbeats.validate().is_err());
        let batch_over_a_frame = Config {
            max_keepalive_batch: cluster.max_frame_bytes / KEEPALIVE_VERDICT_MAX_BYTES + 1,
            ..cluster.clone()
        };
        assert!(batch_over_a_frame.validate().is_err());
        // A standalone member has no keepalive path to bound.
        let standalone = Config {
            min_session_timeout_ms: 100,
            ..Config::default()
        };
        assert_eq!(standalone.validate(), Ok(()));
    }

    #[test]
    fn peer_list_parses_and_reports_garbage() {
        let peers = PeerSpec::parse_list("1=127.0.0.1:7888, 2=host:7889").unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[1].id, 2);
        assert_eq!(peers[1].addr, "host:7889");
        assert!(PeerSpec::parse_list("x=a:1").is_err());
        assert!(PeerSpec::parse_list("1:a:1").is_err());
    }

    #[test]
    fn statefulset_hostname_gives_the_id_and_the_dns_peers() {
        let c = Config {
            id_from_hostname: true,
            replicas: 3,
            namespace: "prod".into(),
            ..Config::default()
        };
        let c = c.resolve_statefulset("keeper-2\n").unwrap();
        assert_eq!(c.id, 3);
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.peers[0].id, 1);
        assert_eq!(
            c.peers[2].addr,
            "keeper-2.keeper-peers.prod.svc.cluster.local:7888"
        );
        assert_eq!(c.validate(), Ok(()));
        let overridden = Config {
            id_from_hostname: true,
            hostname: "zk-0.zk-peers.ns.svc.cluster.local".into(),
            ..Config::default()
        };
        assert_eq!(overridden.resolve_statefulset("ignored-7").unwrap().id, 1);
        for bad in ["keeper", "keeper-", "-2", "keeper-x", "keeper-999"] {
            assert!(
                statefulset_ordinal(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        let plain = Config::default();
        assert_eq!(
            plain.clone().resolve_statefulset("whatever").unwrap(),
            plain
        );
    }

    #[test]
    fn peer_limits_reach_the_transport_and_are_validated() {
        let c = Config {
            peer_send_queue_frames: 17,
            peer_reconnect_backoff_max_ms: 4000,
            ..Config::default()
        };
        let p = c.peer_config();
        assert_eq!(p.peer_send_queue_frames, 17);
        assert_eq!(p.reconnect_backoff_max_ms, 4000);
        for mutate in [
            (|c: &mut Config| c.peer_event_queue = 0) as fn(&mut Config),
            |c| c.peer_reconnect_backoff_max_ms = 1,
            |c| c.max_frame_bytes = c.snapshot_chunk_bytes,
            |c| c.replicas = 1000,
            |c| {
                c.replicas = 3;
                c.peers = PeerSpec::parse_list("1=a:1").unwrap();
            },
        ] {
            let mut c = Config::default();
            mutate(&mut c);
            assert!(c.validate().is_err(), "should be refused: {c:?}");
        }
    }

    #[test]
    fn session_timeout_is_clamped() {
        let c = Config::default();
        assert_eq!(c.clamp_session_timeout_ms(1), c.min_session_timeout_ms);
        assert_eq!(
            c.clamp_session_timeout_ms(u64::MAX),
            c.max_session_timeout_ms
        );
        assert_eq!(c.clamp_session_timeout_ms(5_000), 5_000);
    }
}
