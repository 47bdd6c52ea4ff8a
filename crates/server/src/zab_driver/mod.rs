//! The replicated write path: the tokio driver that runs the `keeper-zab`
//! core and implements [`Proposer`] for a cluster member.
//!
//! ```text
//! HTTP handler ─propose(txn)─▶ ZabProposer ─Cmd─▶ driver loop (one task)
//!   leader:   stamp Entry{time, txn} ─▶ core.propose ─▶ Append (unsynced) ─▶ log_sync thread:
//!             one fsync per group ─▶ core.on_persisted ─▶ PROPOSAL/ACK/COMMIT via peer links
//!   follower: Forward{txn} to the leader; the leader answers Forwarded{zxid}
//!             after the PROPOSAL on the same FIFO link
//!   everyone: core Commit{upto} ─▶ entries from the in-memory log tail (or read back
//!             from the local log) ─▶ applier (Store::apply_batch, in zxid order)
//!             ─▶ the waiting request gets its Applied
//! ```
//!
//! The loop executes the core's actions in order (see `keeper_zab::Action`
//! for the persist-before-send rules): appends go to the log at once without
//! fsync (so the core's [`StoreLog`] view reflects them) and become durable in
//! the `log_sync` thread; epochs and truncations are fsynced in a blocking
//! task that the loop awaits before the next action runs (the order of
//! writes is the contract; only the runtime's worker thread is spared).
//! Snapshot streams, checkpoints and installs run off the loop entirely
//! (`snapshot.rs`), so ticks and heartbeats go on during a SNAP. Everything
//! a request waits on is bounded: the command channel
//! (`max_inflight_proposals`), pending forwards, read barriers (the core's
//! `max_pending_reads`), and the peer messages held while a snapshot
//! installs (`snapshot_install_stash_bytes`).
//!
//! A fatal error (the member's disk or log is broken, or an invariant the
//! driver relies on fails) stops the loop: the member publishes role
//! `failed` with no leader (so `/readyz` answers 503 and nothing is served
//! as if replicated), answers every waiting write 503, and reports the
//! failure through [`ZabProposer::failure`]; `node::run` then shuts the
//! process down with a non-zero exit so that a supervisor restarts it (a
//! restart reopens the store and rejoins; see docs/operations.md).
//!
//! A member answers a write only after it has applied it itself, so a client
//! reads its own writes on the member it wrote to. When the leadership this
//! member knew changes, every write still waiting is answered `Unavailable`
//! (its fate is unknown: it may or may not commit under the next leader).

pub(crate) mod batching;
pub(crate) mod forwarding;
pub(crate) mod keepalive;
pub(crate) mod log_sync;
mod log_tail;
mod log_view;
mod snapshot;
mod wire;

pub use keepalive::KeepaliveBounds;
pub use log_view::StoreLog;
pub use wire::PeerMsg;

use crate::applier::{AppliedView, ApplierInput, Committed, Reply};
use crate::peer::{PeerEvent, PeerHandle};
use crate::proposer::{ClusterStatus, MemberStatus, ProposeError, Proposer, Role};
use crate::sessions::{KeepaliveVerdict, Touch};
use batching::{txn_wire_bytes, BatchQueue};
use bytes::Bytes;
use forwarding::Forwards;
use futures::future::BoxFuture;
use keepalive::{Keepalives, Standing};
use keeper_store::{Applied, Entry, SessionId, SessionInfo, Store, Txn};
use keeper_zab::{Action, Bootstrap, Core, Member, MemberKind, NodeId, Zxid};
use log_sync::{Durability, LogSync, Persisted};
use log_tail::LogTail;
use snapshot::{InStream, OutStream, OutStreamParams, StreamId};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use wire::RequestId;

/// One member of the static ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddr {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
}

/// Options of the driver. Every bound has a name and a unit.
#[derive(Debug, Clone)]
pub struct ZabOptions {
    pub id: u64,
    pub members: Vec<MemberAddr>,
    /// Where snapshot streams are staged (`<data-dir>/snapshots`).
    pub snapshot_dir: PathBuf,
    /// Wall time of one core tick.
    pub tick_ms: u64,
    /// The core's tunables (in ticks).
    pub zab: keeper_zab::Config,
    /// Commands queued for the driver before `propose` waits for room.
    pub max_inflight_proposals: usize,
    /// Most txns proposed in one batch (one append, one PROPOSAL per follower).
    pub max_batch_entries: usize,
    /// Most bytes in one proposal batch or one `Forward` message (see
    /// `batching::txn_wire_bytes`); a larger single write is refused.
    pub max_batch_bytes: usize,
    /// Most forwarded writes a follower waits on at once.
    pub max_pending_forwards: usize,
    /// Bounds of the keepalive path (see `keepalive.rs`).
    pub keepalive: KeepaliveBounds,
    /// Size of one snapshot chunk on the peer link.
    pub snapshot_chunk_bytes: usize,
    /// Most snapshot bytes sent and not yet acknowledged by the receiver.
    pub snapshot_window_bytes: u64,
    /// A snapshot stream whose receiver acknowledges nothing for this long fails.
    pub snapshot_stall_timeout_ms: u64,
    /// Most bytes of peer messages held back while a snapshot installs
    /// (they are handled after it, in order); beyond it they are dropped,
    /// which ZAB treats as message loss.
    pub snapshot_install_stash_bytes: u64,
    /// Log entries kept behind the applied state for DIFF catch-up (and
    /// watch resume); older ones are compacted away.
    pub log_retain_entries: u64,
    /// How long a read barrier may wait for this member to apply.
    pub read_barrier_wait_ms: u64,
    /// Seeds the core's randomized election timeouts.
    pub seed: u64,
}

/// The session layer's leases, as the driver uses them (implemented by
/// `SessionTracker`). Called on the driver task; every call is short.
pub trait SessionHooks: Send + Sync + 'static {
    /// Leader: keepalives arrived for these sessions (from any member):
    /// touch each now, before the quorum round that confirms them starts.
    fn touch(&self, ids: &[SessionId]) -> Vec<Touch>;
    /// Leader, after that round: the verdict for `id`, whose touch found
    /// `touch`, given `stored`, the session in this member's state applied
    /// up to `applied` (at least the commit point the round confirmed).
    fn settle(
        &self,
        id: SessionId,
        touch: Touch,
        stored: Option<SessionInfo>,
        applied: Zxid,
    ) -> KeepaliveVerdict;
    /// This member just became the established leader: every session gets
    /// a full timeout from now. Called before the new role is published.
    fn leadership_gained(&self);
}

/// How a local keepalive is answered.
type KeepaliveReply = oneshot::Sender<KeepaliveVerdict>;

enum Cmd {
    Propose {
        txn: Txn,
        reply: Reply,
    },
    Read {
        reply: oneshot::Sender<Result<Zxid, ProposeError>>,
    },
    Keepalive {
        id: SessionId,
        reply: KeepaliveReply,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ZabMetrics {
    pub proposals: AtomicU64,
    pub batches: AtomicU64,
    pub forwarded: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_us_total: AtomicU64,
    pub fsync_us_max: AtomicU64,
    pub commit_latency_us_total: AtomicU64,
    pub commits_timed: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub leader_changes: AtomicU64,
}

struct Shared {
    status: RwLock<ClusterStatus>,
    metrics: ZabMetrics,
    follower_lag: RwLock<Vec<(u64, u64)>>,
    /// A background store flush is running (see `flush_tree_in_background`).
    flushing: AtomicBool,
    /// Set once when the driver stopped on a fatal error (see the module docs).
    failure: watch::Sender<Option<String>>,
    /// The oldest zxid still in the log (0: none), for `/metrics`.
    log_first: AtomicU64,
}

/// What the driver runs on: the member's store and applier, its peer
/// transport, and the session layer's hooks.
pub struct DriverParts {
    pub store: Arc<Store>,
    pub applier: ApplierInput,
    pub view: AppliedView,
    pub peers: PeerHandle<PeerMsg>,
    pub events: mpsc::Receiver<PeerEvent<PeerMsg>>,
    pub hooks: Arc<dyn SessionHooks>,
}

/// The cluster member's [`Proposer`]: a handle to the driver task.
pub struct ZabProposer {
    cmds: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    view: AppliedView,
    read_wait: Duration,
    keepalive_wait: Duration,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ZabProposer {
    /// Builds the core from the store's persisted state and starts the driver
    /// task. `peers`/`events` come from an already started peer network.
    pub fn start(
        parts: DriverParts,
        options: ZabOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ZabProposer, String> {
        let DriverParts {
            store,
            applier,
            view,
            peers,
            events,
            hooks,
        } = parts;
        let meta = store.zab_meta();
        let boot = Bootstrap {
            id: options.id,
            members: options
                .members
                .iter()
                .map(|m| Member {
                    id: m.id,
                    kind: MemberKind::Participant,
                })
                .collect(),
            accepted_epoch: meta.accepted_epoch,
            current_epoch: meta.current_epoch,
            applied_zxid: store.last_applied(),
            seed: options.seed,
        };
        let core =
            Core::new(options.zab.clone(), boot, &StoreLog(&store)).map_err(|e| e.to_string())?;
        // Streams staged by an earlier run are of no use now.
        if options.snapshot_dir.exists() {
            std::fs::remove_dir_all(&options.snapshot_dir)
                .map_err(|e| format!("cannot clear {}: {e}", options.snapshot_dir.display()))?;
        }
        let (persisted_tx, persisted_rx) = mpsc::unbounded_channel();
        let sync = LogSync::start(store.clone(), persisted_tx).map_err(|e| e.to_string())?;
        let (cmd_tx, cmd_rx) = mpsc::channel(options.max_inflight_proposals.max(1));
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            status: RwLock::new(ClusterStatus {
                id: options.id,
                role: Role::Looking,
                leader: None,
                epoch: meta.current_epoch,
                last_logged_zxid: store.last_logged().0,
                committed_zxid: store.last_applied().0,
                applied_zxid: store.last_applied().0,
                members: members_status(&options.members, options.id, Role::Looking, None),
            }),
            metrics: ZabMetrics::default(),
            follower_lag: RwLock::new(Vec::new()),
            flushing: AtomicBool::new(false),
            failure: watch::channel(None).0,
            log_first: AtomicU64::new(0),
        });
        let submitted = store.last_applied();
        let last_logged = store.last_logged();
        let tail = LogTail::new(last_logged);
        let mut driver = Driver {
            core,
            store,
            peers,
            applier,
            view: view.clone(),
            shared: shared.clone(),
            hooks,
            sync,
            durability: Durability::new(last_logged),
            appended_since_sample: 0,
            samples: VecDeque::new(),
            submitted,
            tail,
            queued: BatchQueue::new(options.max_batch_entries, options.max_batch_bytes),
            waiters: HashMap::new(),
            forwards: Forwards::new(
                options.max_batch_entries,
                options.max_batch_bytes,
                options.max_pending_forwards,
            ),
            reads: HashMap::new(),
            next_read: 1,
            keepalives: Keepalives::new(options.keepalive.clone(), Instant::now()),
            last_time_ms: 0,
            known: (keeper_zab::Role::Looking, None, 0, false),
            incoming: None,
            installing: None,
            out_streams: HashMap::new(),
            // Unique across restarts of this member, so a follower never
            // takes a new stream for an older one.
            next_stream: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| (d.as_millis() as u64) << 16)
                .unwrap_or(1),
            internal_tx,
            propose_started: HashMap::new(),
            opts: options,
        };
        let read_wait = Duration::from_millis(driver.opts.read_barrier_wait_ms);
        // A backstop: the driver answers every keepalive within the confirm
        // wait (checked each tick); this covers a driver that is stuck.
        let keepalive_wait =
            driver.opts.keepalive.confirm_wait + Duration::from_millis(2 * driver.opts.tick_ms);
        let task = tokio::spawn(async move {
            driver
                .run(cmd_rx, events, persisted_rx, internal_rx, shutdown)
                .await;
        });
        Ok(ZabProposer {
            cmds: cmd_tx,
            shared,
            view,
            read_wait,
            keepalive_wait,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Driver counters.
    pub fn metrics(&self) -> &ZabMetrics {
        &self.shared.metrics
    }

    /// `(follower id, last zxid it acknowledged)`, on the leader.
    pub fn follower_acked(&self) -> Vec<(u64, u64)> {
        self.shared
            .follower_lag
            .read()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Becomes `Some(why)` when the driver stopped on a fatal error: the
    /// member can no longer take part in replication and should exit (see
    /// the module docs).
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.shared.failure.subscribe()
    }

    /// Waits for the driver task to finish (after shutdown was signalled).
    pub async fn join(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Proposer for ZabProposer {
    fn propose(&self, txn: Txn) -> BoxFuture<'_, Result<Applied, ProposeError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.cmds
                .send(Cmd::Propose { txn, reply })
                .await
                .map_err(|_| ProposeError::Unavailable("server is shutting down".into()))?;
            rx.await
                .map_err(|_| ProposeError::Unavailable("server is shutting down".into()))?
        })
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<Zxid, ProposeError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.cmds
                .send(Cmd::Read { reply })
                .await
                .map_err(|_| ProposeError::Unavailable("server is shutting down".into()))?;
            let zxid = rx
                .await
                .map_err(|_| ProposeError::Unavailable("server is shutting down".into()))??;
            self.view
                .wait_for(zxid, self.read_wait)
                .await
                .map_err(|e| ProposeError::Unavailable(format!("read barrier: {e}")))?;
            Ok(zxid)
        })
    }

    fn status(&self) -> ClusterStatus {
        let mut s = match self.shared.status.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        s.applied_zxid = self.view.applied_zxid().0;
        s
    }

    fn keepalive(&self, id: SessionId) -> Option<BoxFuture<'_, KeepaliveVerdict>> {
        Some(Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            if let Err(e) = self.cmds.try_send(Cmd::Keepalive { id, reply }) {
                // Never dropped silently: the client hears 503 at once.
                return KeepaliveVerdict::Unavailable(match e {
                    mpsc::error::TrySendError::Full(_) => {
                        "this member's command queue is full".into()
                    }
                    mpsc::error::TrySendError::Closed(_) => "replication stopped".into(),
                });
            }
            match tokio::time::timeout(self.keepalive_wait, rx).await {
                Ok(Ok(verdict)) => verdict,
                Ok(Err(_)) => KeepaliveVerdict::Unavailable("replication stopped".into()),
                Err(_) => KeepaliveVerdict::Unavailable("the replication driver is stalled".into()),
            }
        }))
    }

    fn failed(&self) -> bool {
        self.shared.failure.borrow().is_some()
    }

    fn encode_metrics(
        &self,
        encoder: &mut crate::metrics::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use crate::metrics::{
            encode_counter, encode_gauge, encode_gauge_f64, zxid_gauge, EncodeMetric,
        };
        let m = &self.shared.metrics;
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 9] = [
            (
                "keeper_zab_proposals",
                "Entries proposed by this member as leader.",
                load(&m.proposals),
            ),
            (
                "keeper_zab_proposal_batches",
                "Proposal batches (one append each).",
                load(&m.batches),
            ),
            (
                "keeper_zab_forwarded",
                "Writes proposed on behalf of followers.",
                load(&m.forwarded),
            ),
            (
                "keeper_zab_fsyncs",
                "Log fsyncs (group commits).",
                load(&m.fsyncs),
            ),
            (
                "keeper_zab_commits_timed",
                "Commits whose latency is in keeper_zab_commit_latency_microseconds_total.",
                load(&m.commits_timed),
            ),
            (
                "keeper_zab_snapshots_sent",
                "Snapshots streamed to followers (SNAP).",
                load(&m.snapshots_sent),
            ),
            (
                "keeper_zab_snapshots_installed",
                "Snapshots installed from the leader.",
                load(&m.snapshots_installed),
            ),
            (
                "keeper_zab_leader_changes",
                "Times the known leader changed.",
                load(&m.leader_changes),
            ),
            (
                "keeper_zab_fsync_microseconds",
                "Total time spent in log fsyncs, in microseconds (divide by keeper_zab_fsyncs_total for the mean).",
                load(&m.fsync_us_total),
            ),
        ];
        for (name, help, v) in counters {
            encode_counter(encoder, name, help, v)?;
        }
        encode_counter(
            encoder,
            "keeper_zab_commit_latency_microseconds",
            "Total time from proposal to commit of timed commits, in microseconds (divide by keeper_zab_commits_timed_total for the mean).",
            load(&m.commit_latency_us_total),
        )?;
        encode_gauge_f64(
            encoder,
            "keeper_zab_fsync_max_seconds",
            "Longest log fsync so far, in seconds.",
            load(&m.fsync_us_max) as f64 / 1e6,
        )?;
        encode_gauge(
            encoder,
            "keeper_log_first_zxid",
            "Oldest zxid still in the log (older ones are compacted; a member behind it catches up by snapshot).",
            zxid_gauge(self.shared.log_first.load(Ordering::Relaxed)),
        )?;
        let lag = self.follower_acked();
        if !lag.is_empty() {
            let family = prometheus_client::metrics::gauge::ConstGauge::new(0i64);
            let mut metric = encoder.encode_descriptor(
                "keeper_follower_acked_zxid",
                "Last zxid each follower acknowledged (leader only).",
                None,
                family.metric_type(),
            )?;
            for (id, acked) in lag {
                let labels = [("follower", id.to_string())];
                let sample = metric.encode_family(&labels)?;
                prometheus_client::metrics::gauge::ConstGauge::new(zxid_gauge(acked))
                    .encode(sample)?;
            }
        }
        Ok(())
    }
}

fn members_status(
    members: &[MemberAddr],
    me: u64,
    my_role: Role,
    leader: Option<u64>,
) -> Vec<MemberStatus> {
    members
        .iter()
        .map(|m| MemberStatus {
            id: m.id,
            client_addr: m.client_addr.clone(),
            peer_addr: m.peer_addr.clone(),
            role: if m.id == me {
                Some(my_role)
            } else if Some(m.id) == leader {
                Some(Role::Leader)
            } else {
                None
            },
        })
        .collect()
}

/// Messages from helper tasks and threads back into the loop (today all of
/// them are about snapshot streams, hence the shared prefix).
#[allow(clippy::enum_variant_names)]
pub(crate) enum Internal {
    /// A leader's stream ended (`ok`) or failed.
    SnapshotSent {
        to: NodeId,
        stream: StreamId,
        zxid: Zxid,
        ok: bool,
    },
    /// A follower received a whole stream (staged in the directory) or failed.
    SnapshotReceived {
        from: NodeId,
        stream: StreamId,
        result: Result<(Zxid, PathBuf), String>,
    },
    /// A snapshot install finished.
    SnapshotInstalled {
        from: NodeId,
        result: Result<Zxid, String>,
    },
}

/// A follower installing a snapshot, from the stream's end marker (the
/// writer still makes the files durable) until the install is done: the core
/// is paused (neither stepped nor ticked, exactly as if the install were
/// synchronous) and peer events are held in order, so the DIFF and NEWLEADER
/// that follow the snapshot on the link reach the core after it.
struct Installing {
    from: NodeId,
    stream: StreamId,
    written: u64,
    stash: VecDeque<PeerEvent<PeerMsg>>,
    stash_bytes: u64,
    dropped: u64,
}

/// A fatal condition: the member's disk or log is broken; the driver stops.
#[derive(Debug)]
struct Fatal(String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Fatal {
        Fatal(e.to_string())
    }
}

/// The leader's leases for the keepalive path: the session layer's hooks
/// plus this member's applied store.
struct LeaderBook<'a> {
    hooks: &'a dyn SessionHooks,
    store: &'a Store,
}

impl keepalive::LeaseBook for LeaderBook<'_> {
    fn touch(&mut self, ids: &[SessionId]) -> Vec<Touch> {
        self.hooks.touch(ids)
    }

    fn settle(&mut self, id: SessionId, touch: Touch, applied: Zxid) -> KeepaliveVerdict {
        // `applied` was read before this lookup, so the store is at least there.
        match self.store.session(id) {
            Ok(stored) => self.hooks.settle(id, touch, stored, applied),
            Err(e) => {
                tracing::warn!(session = id, error = %e, "reading a session for a keepalive failed");
                KeepaliveVerdict::Unavailable("this leader cannot read its sessions".into())
            }
        }
    }
}

/// Runs blocking disk work on tokio's blocking pool and waits for it; the
/// driver does nothing else meanwhile, so the order of writes is kept.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, Fatal>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| Fatal(e.to_string())),
        Err(e) => Err(Fatal(format!("blocking task failed: {e}"))),
    }
}

/// Runs `f`, which may read the log at length, in place but off the
/// runtime's scheduler (`block_in_place`) on a multi-threaded runtime, so
/// other tasks move to another worker meanwhile.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Roughly how many bytes a held peer event takes (entries and chunks
/// dominate).
fn event_bytes(ev: &PeerEvent<PeerMsg>) -> u64 {
    const OVERHEAD: u64 = 64;
    let payload = match ev {
        PeerEvent::Message { msg, .. } => match msg {
            PeerMsg::Zab(
                keeper_zab::Message::Proposal { entries, .. }
                | keeper_zab::Message::Diff { entries, .. },
            ) => entries.iter().map(|e| e.data.len() as u64 + 16).sum(),
            PeerMsg::SnapChunk { data, .. } => data.len() as u64,
            PeerMsg::Forward { reqs } => reqs.len() as u64 * OVERHEAD,
            _ => 0,
        },
        _ => 0,
    };
    OVERHEAD + payload
}

/// Every this many appended entries, the driver remembers a zxid for compaction.
const COMPACTION_SAMPLE_ENTRIES: u64 = 1024;
/// Entries read from the log per step when applying a commit.
const COMMIT_READ_CHUNK: usize = 1024;
/// The answer to a write larger than any batch may be.
fn too_large(bytes: usize, max: usize) -> ProposeError {
    ProposeError::TooLarge(format!(
        "the write makes a log entry of {bytes} bytes; a batch holds at most {max} (max_batch_bytes)"
    ))
}

/// The answers to one follower's forwarded writes: their zxids, or why not.
type ForwardResults = Vec<(RequestId, Result<Zxid, String>)>;

/// Who waits for a queued write: a client of this member, or a follower
/// that forwarded it.
enum Origin {
    Local(Reply),
    Forwarded(NodeId, RequestId),
}

struct Driver {
    core: Core,
    store: Arc<Store>,
    peers: PeerHandle<PeerMsg>,
    applier: ApplierInput,
    view: AppliedView,
    shared: Arc<Shared>,
    hooks: Arc<dyn SessionHooks>,
    sync: LogSync,
    /// Generation, appended and durable zxids (see `log_sync::Durability`).
    durability: Durability,
    appended_since_sample: u64,
    /// `(entries appended before it, zxid)` every COMPACTION_SAMPLE_ENTRIES appends.
    samples: VecDeque<(u64, Zxid)>,
    /// Highest zxid handed to the applier.
    submitted: Zxid,
    /// Appended entries not yet handed to the applier.
    tail: LogTail,
    /// Leader: writes waiting for the next proposal batch (see `flush_proposals`).
    queued: BatchQueue<(Txn, Origin)>,
    /// Writes taken by this member whose zxid is known, until applied.
    waiters: HashMap<Zxid, Reply>,
    /// Follower: writes forwarded to the leader, until it names their zxid.
    /// Follower: writes forwarded (or to forward) to the leader, until it
    /// names their zxid (see `forwarding.rs` and `flush_forwards`).
    forwards: Forwards<Reply>,
    reads: HashMap<u64, oneshot::Sender<Result<Zxid, ProposeError>>>,
    next_read: u64,
    /// Keepalives waiting for the leader's confirmation (see `keepalive.rs`).
    keepalives: Keepalives<KeepaliveReply>,
    last_time_ms: u64,
    /// (role, leader, epoch, serving) as last reported by the core.
    known: (keeper_zab::Role, Option<NodeId>, u32, bool),
    /// Follower: the snapshot stream being received.
    incoming: Option<InStream>,
    /// Follower: the snapshot being installed.
    installing: Option<Installing>,
    /// Leader: the live snapshot stream to each follower.
    out_streams: HashMap<NodeId, OutStream>,
    next_stream: StreamId,
    internal_tx: mpsc::UnboundedSender<Internal>,
    /// When each locally proposed zxid was proposed (commit latency metric).
    propose_started: HashMap<Zxid, Instant>,
    opts: ZabOptions,
}

impl Driver {
    async fn run(
        &mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut events: mpsc::Receiver<PeerEvent<PeerMsg>>,
        mut persisted: mpsc::UnboundedReceiver<Result<Persisted, String>>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let tick = Duration::from_millis(self.opts.tick_ms.max(1));
        let mut next_tick = tokio::time::Instant::now() + tick;
        let result: Result<(), Fatal> = async {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => {
                        if *shutdown.borrow() {
                            self.announce_leaving();
                            return Ok(());
                        }
                    }
                    r = persisted.recv() => match r {
                        Some(Ok(p)) => self.on_persisted(p).await?,
                        Some(Err(e)) => return Err(Fatal(format!("log fsync failed: {e}"))),
                        None => return Err(Fatal("log sync thread stopped".into())),
                    },
                    ev = events.recv() => match ev {
                        Some(ev) => self.on_peer_event(ev).await?,
                        None => return Ok(()),
                    },
                    cmd = cmds.recv() => match cmd {
                        Some(cmd) => {
                            let mut batch = vec![cmd];
                            while batch.len() < self.opts.max_batch_entries {
                                match cmds.try_recv() {
                                    Ok(c) => batch.push(c),
                                    Err(_) => break,
                                }
                            }
                            self.on_cmds(batch).await?;
                        }
                        None => return Ok(()),
                    },
                    Some(i) = internal.recv() => self.on_internal(i).await?,
                    _ = tokio::time::sleep_until(next_tick) => {}
                }
                // Ticks are never starved by a busy link or a stream of writes.
                let now = tokio::time::Instant::now();
                if now >= next_tick {
                    next_tick = now + tick;
                    self.on_tick().await?;
                    self.flush_proposals(true).await?;
                }
                self.flush_proposals(false).await?;
                self.flush_forwards();
            }
        }
        .await;
        let why = match result {
            Ok(()) => "server stopped".to_string(),
            Err(Fatal(e)) => {
                tracing::error!(id = self.opts.id, error = %e,
                    "replication driver stopped on a fatal error; this member is failed");
                self.publish_failed(&e);
                format!("this member failed: {e}")
            }
        };
        self.out_streams.clear();
        self.incoming = None;
        self.fail_all_waiting(&why);
        for (_, reply) in self.reads.drain() {
            let _ = reply.send(Err(ProposeError::Unavailable(why.clone())));
        }
        self.sync.stop();
    }

    // ---- inputs -----------------------------------------------------------

    async fn on_tick(&mut self) -> Result<(), Fatal> {
        if let Some(inst) = &self.installing {
            // The core is paused while the snapshot installs (see
            // `Installing`); tell the leader we are still at it.
            let (from, stream, bytes) = (inst.from, inst.stream, inst.written);
            let _ = self.peers.send(from, PeerMsg::SnapAck { stream, bytes });
            self.publish_status();
            return Ok(());
        }
        if let Some(inc) = self.incoming.as_mut() {
            // Our own writer's progress counts too (a slow disk is not a dead leader).
            if inc.progressed() {
                self.core.snapshot_progress(inc.from);
            }
        }
        let actions = self.core.tick(&StoreLog(&self.store))?;
        self.execute(actions).await?;
        for s in self.out_streams.values() {
            let _ = self.peers.send(s.to, PeerMsg::SnapWait { stream: s.id });
        }
        self.keepalive_tick().await?;
        self.publish_status();
        self.maybe_compact()?;
        Ok(())
    }

    async fn on_persisted(&mut self, p: Persisted) -> Result<(), Fatal> {
        let m = &self.shared.metrics;
        m.fsyncs.fetch_add(1, Ordering::Relaxed);
        m.fsync_us_total.fetch_add(p.fsync_us, Ordering::Relaxed);
        m.fsync_us_max.fetch_max(p.fsync_us, Ordering::Relaxed);
        // None: in flight across a truncation or snapshot install.
        let Some(upto) = self.durability.persisted(&p) else {
            return Ok(());
        };
        let actions = self.core.on_persisted(&StoreLog(&self.store), upto)?;
        self.execute(actions).await
    }

    async fn on_peer_event(&mut self, ev: PeerEvent<PeerMsg>) -> Result<(), Fatal> {
        if let Some(inst) = self.installing.as_mut() {
            let bytes = event_bytes(&ev);
            if inst.dropped == 0
                && inst.stash_bytes + bytes <= self.opts.snapshot_install_stash_bytes
            {
                inst.stash_bytes += bytes;
                inst.stash.push_back(ev);
            } else {
                // Beyond the bound: dropped, which ZAB treats as message
                // loss (the follower resynchronizes).
                inst.dropped += 1;
            }
            return Ok(());
        }
        match ev {
            PeerEvent::Message { from, msg } => self.on_peer_msg(from, msg).await,
            PeerEvent::Connected { peer } => {
                tracing::debug!(peer, "peer link up");
                Ok(())
            }
            PeerEvent::Disconnected { peer } => {
                tracing::debug!(peer, "peer link down");
                if self.incoming.as_ref().is_some_and(|i| i.from == peer) {
                    self.incoming = None;
                }
                // What was queued for it is lost: the stream cannot complete.
                self.out_streams.remove(&peer);
                // Writes forwarded over a broken link may never be answered.
                if self.known.1 == Some(peer) && self.known.0 == keeper_zab::Role::Following {
                    self.fail_forwards("link to the leader broke; outcome unknown");
                }
                Ok(())
            }
        }
    }

    /// Drain: a leader that is stopping tells its followers, so they elect a new
    /// leader at once (see `Core::leader_left`). The core takes no step after
    /// this, so the stopping member cannot be elected again meanwhile.
    fn announce_leaving(&self) {
        if self.known.0 != keeper_zab::Role::Leading {
            return;
        }
        let mut told = 0;
        for m in &self.opts.members {
            if m.id != self.opts.id && self.peers.send(m.id, PeerMsg::Leaving).is_ok() {
                told += 1;
            }
        }
        tracing::info!(followers = told, "leader stepping down: shutting down");
    }

    async fn on_peer_msg(&mut self, from: NodeId, msg: PeerMsg) -> Result<(), Fatal> {
        if self.known.1 == Some(from) {
            self.keepalives.heard_from_leader(Instant::now());
        }
        match msg {
            PeerMsg::Leaving => {
                tracing::info!(
                    leader = from,
                    "the leader is shutting down; electing a new one"
                );
                let actions = self.core.leader_left(from);
                self.execute(actions).await
            }
            PeerMsg::Zab(m) => {
                let actions = if matches!(m, keeper_zab::Message::AckEpoch { .. }) {
                    // Planning a follower's sync reads up to max_diff_entries
                    // from the log: keep the runtime's other tasks running.
                    let (core, store) = (&mut self.core, &self.store);
                    off_runtime(|| core.step(&StoreLog(store), from, m))?
                } else {
                    self.core.step(&StoreLog(&self.store), from, m)?
                };
                self.execute(actions).await
            }
            PeerMsg::Forward { reqs } => self.on_forward(from, reqs).await,
            PeerMsg::Forwarded { results } => {
                for outcome in self.forwards.answered(results, self.submitted) {
                    match outcome {
                        forwarding::Outcome::Wait { zxid, reply } => {
                            self.waiters.insert(zxid, reply);
                        }
                        forwarding::Outcome::Fail { reply, why } => {
                            let _ = reply.send(Err(ProposeError::Unavailable(why)));
                        }
                    }
                }
                Ok(())
            }
            PeerMsg::Keepalives { batch, ids } => {
                self.keepalives.relayed(from, batch, ids, Instant::now());
                self.run_keepalive_effects();
                Ok(())
            }
            PeerMsg::KeepalivesAck { batch, results } => {
                self.keepalives.acked(from, batch, results, Instant::now());
                self.run_keepalive_effects();
                Ok(())
            }
            PeerMsg::SnapBegin { stream } => {
                if self.core.expects_snapshot_from() != Some(from) {
                    tracing::warn!(from, stream, "unexpected snapshot stream ignored");
                    return Ok(());
                }
                // A newer stream replaces (and cancels) an older one.
                self.incoming = None;
                let dir = self.opts.snapshot_dir.join(format!("in-{from}-{stream}"));
                let inc = InStream::start(
                    from,
                    stream,
                    dir,
                    self.peers.clone(),
                    self.internal_tx.clone(),
                )
                .map_err(|e| Fatal(format!("cannot start a snapshot writer: {e}")))?;
                tracing::info!(from, stream, "receiving a snapshot (SNAP)");
                self.incoming = Some(inc);
                self.core.snapshot_progress(from);
                Ok(())
            }
            PeerMsg::SnapWait { stream } => {
                if self.receiving(from, stream) {
                    self.core.snapshot_progress(from);
                }
                Ok(())
            }
            PeerMsg::SnapChunk { stream, file, data } => {
                if self.receiving(from, stream) {
                    if let Some(inc) = &self.incoming {
                        inc.chunk(file, data);
                    }
                    self.core.snapshot_progress(from);
                }
                Ok(())
            }
            PeerMsg::SnapEnd {
                stream,
                zxid,
                files,
                bytes,
            } => {
                if self.receiving(from, stream) {
                    if let Some(inc) = self.incoming.as_mut() {
                        inc.end(zxid, files, bytes);
                        // From here the core waits for the install.
                        self.installing = Some(Installing {
                            from,
                            stream,
                            written: inc.written(),
                            stash: VecDeque::new(),
                            stash_bytes: 0,
                            dropped: 0,
                        });
                        self.durability.invalidate();
                    }
                }
                Ok(())
            }
            PeerMsg::SnapAck { stream, bytes } => {
                if let Some(s) = self.out_streams.get(&from).filter(|s| s.id == stream) {
                    s.acked(bytes);
                }
                // Receiving or installing: the follower is alive and busy.
                self.core.snapshot_progress(from);
                Ok(())
            }
        }
    }

    /// Whether `stream` from `from` is the snapshot stream this follower
    /// receives now (and its core still expects one from `from`).
    fn receiving(&self, from: NodeId, stream: StreamId) -> bool {
        self.core.expects_snapshot_from() == Some(from)
            && self
                .incoming
                .as_ref()
                .is_some_and(|i| i.from == from && i.id == stream)
    }

    async fn on_cmds(&mut self, cmds: Vec<Cmd>) -> Result<(), Fatal> {
        let mut proposals = Vec::new();
        for cmd in cmds {
            match cmd {
                Cmd::Propose { txn, reply } => proposals.push((txn, reply)),
                Cmd::Read { reply } => {
                    let ctx = self.next_read;
                    self.next_read += 1;
                    self.reads.insert(ctx, reply);
                    let actions = self.core.read_index(ctx);
                    self.execute(actions).await?;
                }
                Cmd::Keepalive { id, reply } => {
                    self.keepalives.request(id, reply, Instant::now());
                    self.run_keepalive_effects();
                }
            }
        }
        if proposals.is_empty() {
            return Ok(());
        }
        if self.is_serving_leader() {
            for (txn, reply) in proposals {
                self.enqueue(txn, Origin::Local(reply));
            }
        } else if self.known.0 == keeper_zab::Role::Following && self.known.3 {
            for (txn, reply) in proposals {
                match self.forwards.push(txn, reply) {
                    Ok(()) => {}
                    Err((reply, forwarding::Refusal::TooMany)) => {
                        let _ = reply.send(Err(ProposeError::Unavailable(
                            "too many writes waiting for the leader".into(),
                        )));
                    }
                    Err((reply, forwarding::Refusal::TooLarge { bytes })) => {
                        let _ = reply.send(Err(too_large(bytes, self.opts.max_batch_bytes)));
                    }
                }
            }
        } else {
            for (_, reply) in proposals {
                let _ = reply.send(Err(ProposeError::Unavailable(
                    "no leader: the ensemble has no quorum or is electing".into(),
                )));
            }
        }
        Ok(())
    }

    async fn on_forward(&mut self, from: NodeId, reqs: Vec<(RequestId, Txn)>) -> Result<(), Fatal> {
        if self.is_serving_leader() {
            self.shared
                .metrics
                .forwarded
                .fetch_add(reqs.len() as u64, Ordering::Relaxed);
            for (r, txn) in reqs {
                self.enqueue(txn, Origin::Forwarded(from, r));
            }
        } else {
            let results = reqs
                .into_iter()
                .map(|(r, _)| (r, Err("not the leader any more".to_string())))
                .collect();
            let _ = self.peers.send(from, PeerMsg::Forwarded { results });
        }
        Ok(())
    }

    /// Leader: queues a write for the next proposal batch, or refuses it at
    /// once if it is larger than a whole batch.
    fn enqueue(&mut self, txn: Txn, origin: Origin) {
        let bytes = txn_wire_bytes(&txn);
        if let Err((_, origin)) = self.queued.push((txn, origin), bytes) {
            let max = self.opts.max_batch_bytes;
            match origin {
                Origin::Local(reply) => {
                    let _ = reply.send(Err(too_large(bytes, max)));
                }
                Origin::Forwarded(from, req) => {
                    let results = vec![(req, Err(too_large(bytes, max).to_string()))];
                    let _ = self.peers.send(from, PeerMsg::Forwarded { results });
                }
            }
        }
    }

    /// Leader: proposes the queued writes in batches once the previous
    /// batch is both durable here and committed (`force`, or a full batch,
    /// proposes at once). One batch in flight at a time is group commit
    /// across the whole ensemble: writes arriving while a batch is on its
    /// way to a quorum would wait for that round anyway, and gathering them
    /// makes one append, one fsync per member, one PROPOSAL, ACK and COMMIT
    /// per follower out of many. Every fsync costs far more CPU than the
    /// entries it carries (see docs/ARCHITECTURE.md, "Group commit"), so on
    /// a busy ensemble this raises throughput and lowers latency.
    /// A batch never holds more than `max_batch_entries` writes or
    /// `max_batch_bytes` bytes (the core refuses larger ones, and a PROPOSAL
    /// must fit a peer frame): a longer queue goes out as several batches.
    /// Followers learn the zxids of their forwarded writes after the
    /// PROPOSAL, on the same FIFO link.
    async fn flush_proposals(&mut self, force: bool) -> Result<(), Fatal> {
        while !self.queued.is_empty() {
            if !force && self.batch_in_flight() && !self.queued.has_full_batch() {
                return Ok(());
            }
            let batch = self.queued.take_batch();
            let (txns, origins): (Vec<Txn>, Vec<Origin>) = batch.into_iter().unzip();
            let proposed = if self.is_serving_leader() {
                self.propose_batch(txns).await?
            } else {
                Err("not the leader any more".to_string())
            };
            let answers = origins.into_iter().enumerate().map(|(i, origin)| {
                let result = proposed.clone().map(|first| Zxid(first.0 + i as u64));
                (origin, result)
            });
            self.answer_queued(answers);
        }
        Ok(())
    }

    /// The last proposed batch is not yet durable here or not yet committed.
    fn batch_in_flight(&self) -> bool {
        self.durability.syncing() || self.submitted < self.durability.appended_zxid()
    }

    /// Tells each queued write where it went: a local one waits for its zxid
    /// (or fails `Unavailable`); forwarded ones are answered per follower in
    /// one `Forwarded` message (after the PROPOSAL, on the same FIFO link).
    fn answer_queued(&mut self, answers: impl IntoIterator<Item = (Origin, Result<Zxid, String>)>) {
        let mut forwarded: HashMap<NodeId, ForwardResults> = HashMap::new();
        for answer in answers {
            match answer {
                (Origin::Local(reply), Ok(zxid)) => {
                    self.waiters.insert(zxid, reply);
                }
                (Origin::Local(reply), Err(why)) => {
                    let _ = reply.send(Err(ProposeError::Unavailable(why)));
                }
                (Origin::Forwarded(from, req), result) => {
                    forwarded.entry(from).or_default().push((req, result));
                }
            }
        }
        for (from, results) in forwarded {
            let _ = self.peers.send(from, PeerMsg::Forwarded { results });
        }
    }

    async fn on_internal(&mut self, i: Internal) -> Result<(), Fatal> {
        match i {
            Internal::SnapshotSent {
                to,
                stream,
                zxid,
                ok,
            } => {
                if self.out_streams.get(&to).is_none_or(|s| s.id != stream) {
                    return Ok(()); // cancelled meanwhile
                }
                if !ok {
                    // The follower times out and rejoins; its next sync
                    // starts a new stream.
                    self.out_streams.remove(&to);
                    return Ok(());
                }
                self.shared
                    .metrics
                    .snapshots_sent
                    .fetch_add(1, Ordering::Relaxed);
                // The DIFF after the snapshot is read from the log, which
                // the stream kept from compaction until now.
                let (core, store) = (&mut self.core, &self.store);
                let actions = off_runtime(|| core.snapshot_sent(&StoreLog(store), to, zxid));
                self.out_streams.remove(&to);
                self.execute(actions?).await
            }
            Internal::SnapshotReceived {
                from,
                stream,
                result,
            } => {
                if !self
                    .incoming
                    .as_ref()
                    .is_some_and(|i| i.from == from && i.id == stream)
                {
                    if let Ok((_, dir)) = result {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    return Ok(());
                }
                let inc = self.incoming.take();
                let written = inc.as_ref().map_or(0, |i| i.written());
                let waiting = self
                    .installing
                    .as_ref()
                    .is_some_and(|i| i.from == from && i.stream == stream);
                match result {
                    Ok((zxid, dir))
                        if waiting && self.core.expects_snapshot_from() == Some(from) =>
                    {
                        self.start_install(from, stream, written, zxid, dir);
                        Ok(())
                    }
                    other => {
                        match other {
                            Err(e) => {
                                tracing::warn!(from, stream, error = %e, "snapshot stream refused")
                            }
                            Ok((_, dir)) => {
                                let _ = std::fs::remove_dir_all(dir);
                            }
                        }
                        // The core resumes without a snapshot (it times out
                        // and rejoins); what was held goes to it in order.
                        if waiting {
                            self.sync.request(self.durability.install_abandoned());
                            if let Some(inst) = self.installing.take() {
                                for ev in inst.stash {
                                    self.on_peer_event(ev).await?;
                                }
                            }
                        }
                        Ok(())
                    }
                }
            }
            Internal::SnapshotInstalled { from, result } => {
                let zxid = result.map_err(|e| Fatal(format!("installing a snapshot: {e}")))?;
                self.finish_install(from, zxid).await
            }
        }
    }

    // ---- the leader's propose --------------------------------------------

    /// Stamps and proposes `txns` as one batch; `Ok(Ok(first zxid))`, or
    /// `Ok(Err(why))` when the core refuses (not serving, backpressure).
    async fn propose_batch(&mut self, txns: Vec<Txn>) -> Result<Result<Zxid, String>, Fatal> {
        let n = txns.len() as u64;
        let time_ms = self.stamp_time();
        let payloads = txns
            .into_iter()
            .map(|txn| bytes::Bytes::from(Entry { time_ms, txn }.encode()))
            .collect();
        let proposed = match self.core.propose(&StoreLog(&self.store), payloads) {
            Ok(p) => p,
            Err(keeper_zab::ZabError::Log(e)) => return Err(Fatal(e.to_string())),
            Err(e) => return Ok(Err(e.to_string())),
        };
        if proposed.last.0 - proposed.first.0 + 1 != n {
            // The core promises consecutive zxids within one epoch.
            return Err(Fatal(format!(
                "core gave non-consecutive zxids {}..{} for {n} entries",
                proposed.first, proposed.last
            )));
        }
        let m = &self.shared.metrics;
        m.proposals.fetch_add(n, Ordering::Relaxed);
        m.batches.fetch_add(1, Ordering::Relaxed);
        self.propose_started.insert(proposed.last, Instant::now());
        self.execute(proposed.actions).await?;
        Ok(Ok(proposed.first))
    }

    /// Leader timestamps never go backwards.
    fn stamp_time(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_time_ms = self.last_time_ms.max(now);
        self.last_time_ms
    }

    fn is_serving_leader(&self) -> bool {
        self.known.0 == keeper_zab::Role::Leading && self.known.3
    }

    // ---- executing the core's actions ---------------------------------------

    async fn execute(&mut self, actions: Vec<Action>) -> Result<(), Fatal> {
        for action in actions {
            match action {
                Action::Send { to, msg } => {
                    // A message to a peer with no link is lost; ZAB recovers.
                    let _ = self.peers.send(to, PeerMsg::Zab(msg));
                }
                Action::Append { entries } => {
                    let Some(last) = entries.last().map(|e| e.zxid) else {
                        continue;
                    };
                    let rows: Vec<(Zxid, Bytes)> =
                        entries.into_iter().map(|e| (e.zxid, e.data)).collect();
                    self.store.append_log_unsynced(&rows)?;
                    self.note_appended(rows.len() as u64, last);
                    self.sync.request(self.durability.appended(last));
                    for (zxid, data) in rows {
                        self.tail.appended(zxid, data);
                    }
                }
                Action::Truncate { to } => {
                    if to < self.submitted {
                        return Err(Fatal(format!(
                            "asked to truncate to {to} below the applied {}",
                            self.submitted
                        )));
                    }
                    let store = self.store.clone();
                    blocking(move || store.truncate_log_after(to)).await?;
                    self.tail.truncated(to);
                    // Reports in flight are dropped (new generation); what
                    // the cut kept gets a sync report of its own.
                    self.sync.request(self.durability.truncated(to));
                    self.samples.retain(|(_, z)| *z <= to);
                }
                Action::PersistAcceptedEpoch { epoch } => {
                    let store = self.store.clone();
                    blocking(move || {
                        let mut meta = store.zab_meta();
                        meta.accepted_epoch = epoch;
                        store.set_zab_meta(meta)
                    })
                    .await?;
                }
                Action::PersistCurrentEpoch { epoch } => {
                    let store = self.store.clone();
                    blocking(move || {
                        let mut meta = store.zab_meta();
                        meta.current_epoch = epoch;
                        store.set_zab_meta(meta)
                    })
                    .await?;
                }
                Action::Commit { upto } => self.commit(upto).await?,
                Action::SendSnapshot { to } => self.start_stream(to)?,
                Action::RoleChanged {
                    role,
                    leader,
                    epoch,
                    serving,
                } => self.role_changed(role, leader, epoch, serving),
                Action::ReadReady { ctx, zxid } if Keepalives::<KeepaliveReply>::owns(ctx) => {
                    self.keepalive_round_confirmed(ctx, zxid);
                }
                Action::ReadFailed { ctx } if Keepalives::<KeepaliveReply>::owns(ctx) => {
                    self.keepalives.round_failed(ctx);
                    self.run_keepalive_effects();
                }
                Action::ReadReady { ctx, zxid } => {
                    if let Some(reply) = self.reads.remove(&ctx) {
                        let _ = reply.send(Ok(zxid));
                    }
                }
                Action::ReadFailed { ctx } => {
                    if let Some(reply) = self.reads.remove(&ctx) {
                        let _ = reply.send(Err(ProposeError::Unavailable(
                            "read barrier failed: no leader with a quorum".into(),
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands the newly committed entries, with their waiting requests, to
    /// the applier: from the in-memory tail, or read back from the local log
    /// when the tail does not reach back far enough.
    async fn commit(&mut self, upto: Zxid) -> Result<(), Fatal> {
        while self.submitted < upto {
            let rows = match self.tail.take(self.submitted, upto) {
                Some(rows) => rows,
                None => {
                    let (store, after) = (self.store.clone(), self.submitted);
                    blocking(move || store.read_log(after, COMMIT_READ_CHUNK))
                        .await?
                        .into_iter()
                        .map(|(z, v)| (z, Bytes::from(v)))
                        .collect()
                }
            };
            if rows.is_empty() {
                return Err(Fatal(format!(
                    "committed entries after {} up to {upto} are not in the local log",
                    self.submitted
                )));
            }
            let mut batch = Vec::with_capacity(rows.len());
            for (zxid, bytes) in rows {
                if zxid > upto {
                    break;
                }
                let entry = Entry::decode(&bytes)?;
                if let Some(started) = self.propose_started.remove(&zxid) {
                    let m = &self.shared.metrics;
                    m.commit_latency_us_total
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    m.commits_timed.fetch_add(1, Ordering::Relaxed);
                }
                batch.push(Committed {
                    zxid,
                    entry,
                    reply: self.waiters.remove(&zxid),
                });
                self.submitted = zxid;
            }
            self.applier.submit(batch).await;
        }
        Ok(())
    }

    fn role_changed(
        &mut self,
        role: keeper_zab::Role,
        leader: Option<NodeId>,
        epoch: u32,
        serving: bool,
    ) {
        let old = self.known;
        self.known = (role, leader, epoch, serving);
        if (old.0, old.1, old.2) != (role, leader, epoch) {
            if old.0 != keeper_zab::Role::Looking || role != keeper_zab::Role::Looking {
                self.shared
                    .metrics
                    .leader_changes
                    .fetch_add(u64::from(old.1 != leader), Ordering::Relaxed);
            }
            self.fail_all_waiting("leadership changed; the write's outcome is unknown");
            self.propose_started.clear();
            // Streams belong to the leadership that started them.
            self.out_streams.clear();
            if role != keeper_zab::Role::Following || leader != old.1 {
                self.incoming = None;
            }
        }
        let standing = match (role, leader, serving) {
            (keeper_zab::Role::Leading, _, true) => Standing::Leading,
            (keeper_zab::Role::Following, Some(l), true) => Standing::Following(l),
            _ => Standing::NotServing,
        };
        self.keepalives.set_standing(standing, Instant::now());
        self.run_keepalive_effects();
        let became_leader = role == keeper_zab::Role::Leading
            && serving
            && !(old.0 == keeper_zab::Role::Leading && old.3);
        tracing::info!(
            id = self.opts.id,
            ?role,
            ?leader,
            epoch,
            serving,
            "role changed"
        );
        if became_leader {
            // Before the role is published: the expiry task acts only once
            // it sees this member lead, and must see the fresh deadlines.
            self.hooks.leadership_gained();
        }
        self.publish_status();
    }

    fn fail_all_waiting(&mut self, why: &str) {
        for (_, reply) in self.waiters.drain() {
            let _ = reply.send(Err(ProposeError::Unavailable(why.to_string())));
        }
        // Queued writes were never proposed: they will not commit.
        let queued = self.queued.take_all();
        self.answer_queued(
            queued
                .into_iter()
                .map(|(_, origin)| (origin, Err(why.to_string()))),
        );
        self.fail_forwards(why);
    }

    fn fail_forwards(&mut self, why: &str) {
        for reply in self.forwards.fail_all() {
            let _ = reply.send(Err(ProposeError::Unavailable(why.to_string())));
        }
    }

    /// Follower: sends the writes waiting to be forwarded to the leader, in
    /// messages bounded like proposal batches (so each fits a peer frame).
    fn flush_forwards(&mut self) {
        if self.forwards.nothing_to_send() {
            return;
        }
        let leader = match self.known {
            (keeper_zab::Role::Following, Some(l), _, true) => l,
            _ => {
                for reply in self.forwards.fail_unsent() {
                    let _ = reply.send(Err(ProposeError::Unavailable("no leader".into())));
                }
                return;
            }
        };
        while !self.forwards.nothing_to_send() {
            let reqs = self.forwards.take_batch();
            let ids: Vec<RequestId> = reqs.iter().map(|(r, _)| *r).collect();
            if let Err(e) = self.peers.send(leader, PeerMsg::Forward { reqs }) {
                for reply in self.forwards.send_failed(&ids) {
                    let _ = reply.send(Err(ProposeError::Unavailable(format!(
                        "cannot reach the leader: {e}"
                    ))));
                }
            }
        }
    }

    // ---- keepalives (the decisions are in keepalive.rs) ---------------------

    /// Once per tick: relay, expire and settle keepalives; on the leader,
    /// touch what is queued and then start one quorum round for all of it.
    async fn keepalive_tick(&mut self) -> Result<(), Fatal> {
        let now = Instant::now();
        let applied = self.view.applied_zxid();
        let mut book = LeaderBook {
            hooks: &*self.hooks,
            store: &self.store,
        };
        self.keepalives.tick(now, applied, &mut book);
        let round = self.keepalives.start_round(now, &mut book);
        if let Some(ctx) = round {
            // The round starts after the touch (the session contract).
            let actions = self.core.read_index(ctx);
            self.execute(actions).await?;
        }
        self.run_keepalive_effects();
        Ok(())
    }

    fn keepalive_round_confirmed(&mut self, ctx: u64, commit: Zxid) {
        let applied = self.view.applied_zxid();
        let mut book = LeaderBook {
            hooks: &*self.hooks,
            store: &self.store,
        };
        self.keepalives
            .round_confirmed(ctx, commit, applied, &mut book);
        self.run_keepalive_effects();
    }

    fn run_keepalive_effects(&mut self) {
        loop {
            let effects = self.keepalives.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    keepalive::Effect::Answer { reply, verdict } => {
                        let _ = reply.send(verdict);
                    }
                    keepalive::Effect::Relay { to, batch, ids } => {
                        if let Err(e) = self.peers.send(to, PeerMsg::Keepalives { batch, ids }) {
                            self.keepalives.relay_failed(batch, &e.to_string());
                        }
                    }
                    keepalive::Effect::Ack { to, batch, results } => {
                        // Lost: the follower answers 503 after its confirm wait.
                        let _ = self
                            .peers
                            .send(to, PeerMsg::KeepalivesAck { batch, results });
                    }
                }
            }
        }
    }

    // ---- snapshots ----------------------------------------------------------

    /// Leader: starts a stream to `to` for the core's `SendSnapshot`
    /// (cancelling an older one). `SnapBegin` goes out now, right after
    /// the core's SNAP on the same link; the stream's thread does the rest.
    fn start_stream(&mut self, to: NodeId) -> Result<(), Fatal> {
        self.out_streams.remove(&to);
        self.next_stream += 1;
        let id = self.next_stream;
        let params = OutStreamParams {
            to,
            id,
            // Every commit emitted so far was submitted: the snapshot must
            // include it (the core's SendSnapshot contract).
            include: self.submitted,
            dir: self.opts.snapshot_dir.join(format!("out-{to}-{id}")),
            chunk_bytes: self.opts.snapshot_chunk_bytes,
            window_bytes: self.opts.snapshot_window_bytes,
            stall_timeout: Duration::from_millis(self.opts.snapshot_stall_timeout_ms),
        };
        if self
            .peers
            .send(to, PeerMsg::SnapBegin { stream: id })
            .is_err()
        {
            return Ok(()); // no link: the follower rejoins and asks again
        }
        let stream = OutStream::start(
            params,
            self.store.clone(),
            self.view.clone(),
            self.peers.clone(),
            self.internal_tx.clone(),
        )
        .map_err(|e| Fatal(format!("cannot start a snapshot stream: {e}")))?;
        self.out_streams.insert(to, stream);
        Ok(())
    }

    /// Follower: a whole stream is staged in `dir`; install it in a
    /// blocking task once the applier has drained. Until it ends the core
    /// is paused and peer events are held (see `Installing`); fsync reports
    /// in flight are dropped (the log they describe is being replaced).
    fn start_install(
        &mut self,
        from: NodeId,
        stream: StreamId,
        written: u64,
        zxid: Zxid,
        dir: PathBuf,
    ) {
        tracing::info!(from, stream, zxid = %zxid, bytes = written, "snapshot received; installing");
        if let Some(inst) = self.installing.as_mut() {
            inst.written = written;
        }
        let (store, view, tx) = (
            self.store.clone(),
            self.view.clone(),
            self.internal_tx.clone(),
        );
        let submitted = self.submitted;
        tokio::spawn(async move {
            let result = async {
                // No apply may run during the install: drain the applier.
                while view.applied_zxid() < submitted {
                    if view.has_failed() {
                        return Err("the applier failed".to_string());
                    }
                    let _ = view.wait_for(submitted, Duration::from_millis(100)).await;
                }
                let started = Instant::now();
                let d = dir.clone();
                let installed = tokio::task::spawn_blocking(move || store.install_snapshot(&d))
                    .await
                    .map_err(|e| format!("install task: {e}"))?
                    .map_err(|e| e.to_string());
                let _ = std::fs::remove_dir_all(&dir);
                let zxid = installed?;
                tracing::info!(zxid = %zxid, secs = started.elapsed().as_secs_f64(), "snapshot installed");
                Ok(zxid)
            }
            .await;
            let _ = tx.send(Internal::SnapshotInstalled { from, result });
        });
    }

    /// Follower: the install ended; the core resumes, then the events held
    /// meanwhile are handled in their order.
    async fn finish_install(&mut self, from: NodeId, zxid: Zxid) -> Result<(), Fatal> {
        let Some(inst) = self.installing.take() else {
            return Ok(());
        };
        self.durability.installed(zxid);
        self.submitted = zxid;
        self.tail.reset(zxid);
        self.samples.clear();
        self.appended_since_sample = 0;
        self.applier.reset_to(zxid).await;
        self.shared
            .metrics
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(zxid = %zxid, from, held = inst.stash.len(), dropped = inst.dropped,
            "installed a snapshot from the leader");
        let actions = self.core.snapshot_installed(zxid);
        self.execute(actions).await?;
        for ev in inst.stash {
            self.on_peer_event(ev).await?;
        }
        Ok(())
    }

    // ---- log compaction -----------------------------------------------------

    fn note_appended(&mut self, count: u64, last: Zxid) {
        self.appended_since_sample += count;
        if self.appended_since_sample >= COMPACTION_SAMPLE_ENTRIES {
            let total =
                self.samples.back().map(|(n, _)| *n).unwrap_or(0) + self.appended_since_sample;
            self.samples.push_back((total, last));
            self.appended_since_sample = 0;
        }
    }

    /// Removes log entries older than `log_retain_entries` behind the newest
    /// sample, never above what is applied (the store is the snapshot).
    fn maybe_compact(&mut self) -> Result<(), Fatal> {
        let Some(&(newest, _)) = self.samples.back() else {
            return Ok(());
        };
        if self.installing.is_some() {
            return Ok(()); // the log is being replaced
        }
        let applied = self.view.applied_zxid();
        let durable = self.store.durable_applied();
        // A live snapshot stream's DIFF reads the log after its zxid: an
        // entry it needs must never go (issue 9, problem 4: compaction
        // under a long stream made `snapshot_sent` fail and killed the
        // driver). `compact_log_before(z)` keeps `z` and above.
        let pinned = self.out_streams.values().map(|s| s.needs_log_after()).min();
        let mut cut = None;
        while let Some(&(n, z)) = self.samples.front() {
            if newest - n <= self.opts.log_retain_entries
                || z > applied
                || pinned.is_some_and(|p| z > p)
            {
                break;
            }
            if z > durable {
                // Entries above what is on disk may be needed after a
                // crash: flush first; a later call (on a tick) cuts.
                self.flush_tree_in_background();
                break;
            }
            cut = Some(z);
            self.samples.pop_front();
        }
        if let Some(z) = cut {
            let done = self.store.compact_log_before(z)?;
            tracing::debug!(wanted = %z, before = %done, "compacted the log");
        }
        Ok(())
    }

    /// Flushes the store in a blocking task (at most one at a time), which
    /// moves `durable_applied` up to what is applied now; the next
    /// compactions can then cut that far.
    fn flush_tree_in_background(&self) {
        if self.shared.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.store.clone();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            match store.flush_tree() {
                Ok(zxid) => tracing::debug!(durable = %zxid, "flushed the store"),
                Err(e) => tracing::warn!(error = %e, "flushing the store failed"),
            }
            shared.flushing.store(false, Ordering::Release);
        });
    }

    // ---- status -------------------------------------------------------------

    /// The driver stopped on a fatal error: the member serves nothing as
    /// replicated any more (role `failed`, no leader: `/readyz` is 503), and
    /// the failure is reported to the node, which exits.
    fn publish_failed(&self, why: &str) {
        if let Ok(mut s) = self.shared.status.write() {
            s.role = Role::Failed;
            s.leader = None;
            s.members = members_status(&self.opts.members, self.opts.id, Role::Failed, None);
        }
        if let Ok(mut lag) = self.shared.follower_lag.write() {
            lag.clear();
        }
        self.shared.failure.send_replace(Some(why.to_string()));
    }

    fn publish_status(&self) {
        let st = self.core.status();
        let role = match (st.role, st.serving) {
            (keeper_zab::Role::Leading, true) => Role::Leader,
            (keeper_zab::Role::Following, true) => Role::Follower,
            _ => Role::Looking,
        };
        let leader = if st.serving { st.leader } else { None };
        let status = ClusterStatus {
            id: self.opts.id,
            role,
            leader,
            epoch: st.current_epoch,
            last_logged_zxid: st.last_zxid.0,
            committed_zxid: st.committed_zxid.0,
            applied_zxid: self.view.applied_zxid().0,
            members: members_status(&self.opts.members, self.opts.id, role, leader),
        };
        if let Ok(mut s) = self.shared.status.write() {
            *s = status;
        }
        self.shared.log_first.store(
            self.store.first_logged().map_or(0, |z| z.0),
            Ordering::Relaxed,
        );
        if let Ok(mut lag) = self.shared.follower_lag.write() {
            *lag = st
                .followers
                .iter()
                .map(|f| (f.id, f.acked_zxid.0))
                .collect();
        }
    }
}
