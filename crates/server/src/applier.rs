//! The applier: the one place committed entries reach the znode store.
//!
//! Data flow: a proposer (standalone log writer, or the ZAB driver) commits
//! entries and sends them, in zxid order, as [`Committed`] batches to
//! [`ApplierInput`]. A dedicated thread applies everything queued with one
//! `Store::apply_batch` (one RocksDB write per run of tree entries), then,
//! in this order: advances the applied-zxid `watch` (which
//! `X-Keeper-Min-Zxid` waits and read barriers observe), publishes the run's
//! [`ChangeEvent`]s as one [`AppliedChanges`] on a bounded broadcast channel
//! (never waiting: the watch hub in `crate::watches` consumes it), and
//! answers the waiting request (if this member took it) with its [`Applied`].
//! Because the watch moves before the answer, a client's next request on this
//! member sees its own write.
//!
//! At startup, [`Applier::start`] first replays every logged entry above
//! `last_applied` (entries that were durable but not applied at a crash),
//! before anything is served.

use crate::proposer::ProposeError;
use bytes::Bytes;
use keeper_store::{Applied, ChangeEvent, Entry, Store, StoreError};
use keeper_zab::Zxid;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Where the answer for a proposed txn goes once it is applied.
pub type Reply = oneshot::Sender<Result<Applied, ProposeError>>;

/// A committed entry on its way to the store.
#[derive(Debug)]
pub struct Committed {
    pub zxid: Zxid,
    pub entry: Entry,
    /// The waiting request, if this member took it.
    pub reply: Option<Reply>,
}

/// Entries read from the log per step of the startup replay.
const REPLAY_CHUNK_ENTRIES: usize = 1024;

/// Most committed entries applied with one store write (queued batches
/// are merged up to this).
const MAX_APPLY_RUN_ENTRIES: usize = 1024;

/// Options of the applier. Every bound has a name.
#[derive(Debug, Clone, Copy)]
pub struct ApplierOptions {
    /// Committed batches queued for the apply thread before senders wait.
    pub queue_batches: usize,
    /// Apply runs ([`AppliedChanges`]) buffered for slow subscribers before they lag.
    pub event_channel_capacity: usize,
    /// Replay logged entries above `last_applied` at start. True for a
    /// standalone member (everything logged is committed); false in a
    /// cluster, where the log's tail may be uncommitted and the ZAB driver
    /// hands over exactly the committed entries.
    pub replay_log: bool,
}

/// What travels to the apply thread.
enum ApplierMsg {
    /// Committed entries, ascending zxids, continuing the previous batch.
    Batch(Vec<Committed>),
    /// The store was replaced by a snapshot at this zxid (already installed).
    Reset(Zxid),
}

/// The sending side: the proposer's handle for committed batches.
/// When every `ApplierInput` is dropped, the apply thread drains and exits.
#[derive(Clone)]
pub struct ApplierInput {
    tx: mpsc::Sender<ApplierMsg>,
}

impl ApplierInput {
    /// Queues a committed batch (ascending zxids, continuing the previous
    /// batch) from a blocking thread. On failure, the batch's waiters are
    /// answered `Unavailable` (the applier is gone: shutting down).
    pub fn blocking_submit(&self, batch: Vec<Committed>) {
        if let Err(mpsc::error::SendError(ApplierMsg::Batch(batch))) =
            self.tx.blocking_send(ApplierMsg::Batch(batch))
        {
            fail_all(batch, ProposeError::Unavailable("applier stopped".into()));
        }
    }

    /// Queues a committed batch from async code (see [`Self::blocking_submit`]).
    pub async fn submit(&self, batch: Vec<Committed>) {
        if let Err(mpsc::error::SendError(ApplierMsg::Batch(batch))) =
            self.tx.send(ApplierMsg::Batch(batch)).await
        {
            fail_all(batch, ProposeError::Unavailable("applier stopped".into()));
        }
    }

    /// Tells the apply thread that the store now holds a snapshot at `zxid`
    /// (installed by the caller after the applier drained): the applied
    /// watch jumps there and the next batch continues after it.
    pub async fn reset_to(&self, zxid: Zxid) {
        let _ = self.tx.send(ApplierMsg::Reset(zxid)).await;
    }
}

fn fail_all(batch: Vec<Committed>, error: ProposeError) {
    for c in batch {
        if let Some(reply) = c.reply {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// What one apply run changed, as published to watches: every entry up to
/// `upto` is applied, and the changes of those after the previous batch's
/// `upto` are `events`, in zxid and apply order.
#[derive(Debug, Clone)]
pub struct AppliedChanges {
    pub upto: Zxid,
    pub events: Vec<ChangeEvent>,
    /// The store jumped to `upto` by installing a snapshot: the changes
    /// between the previous batch and `upto` were never published.
    pub reset: bool,
    /// Each event's wire form (JSON), made once by the first stream that
    /// sends it and shared by all others: `[without data, with data]`. The
    /// table itself is made on first use, so a run nobody watches costs
    /// nothing on the write path.
    wire: OnceLock<Box<[[OnceLock<Bytes>; 2]]>>,
}

impl AppliedChanges {
    pub fn new(upto: Zxid, events: Vec<ChangeEvent>, reset: bool) -> AppliedChanges {
        AppliedChanges {
            upto,
            events,
            reset,
            wire: OnceLock::new(),
        }
    }

    /// The JSON of event `index` (see [`crate::watches::WireEvent::change`]),
    /// made at most once per run; `None` past the end.
    pub fn wire(&self, index: usize, with_data: bool) -> Option<&Bytes> {
        let event = self.events.get(index)?;
        let table = self
            .wire
            .get_or_init(|| self.events.iter().map(|_| Default::default()).collect());
        let cell = &table.get(index)?[usize::from(with_data)];
        Some(cell.get_or_init(|| {
            let wire = crate::watches::WireEvent::change(event, with_data, with_data);
            // Plain strings and numbers always serialize.
            Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
        }))
    }
}

/// The reading side: what readers (HTTP, watches, barriers) observe. Cheap to clone.
#[derive(Clone)]
pub struct AppliedView {
    applied: watch::Receiver<Zxid>,
    events: broadcast::Sender<Arc<AppliedChanges>>,
    failed: Arc<AtomicBool>,
}

/// The applied zxid was not reached in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("zxid {wanted} not applied within the wait (applied: {applied})")]
pub struct WaitTimeout {
    pub wanted: Zxid,
    pub applied: Zxid,
}

impl AppliedView {
    /// The zxid of the last entry applied on this member.
    pub fn applied_zxid(&self) -> Zxid {
        *self.applied.borrow()
    }

    /// A receiver that changes whenever the applied zxid advances.
    pub fn watch_applied(&self) -> watch::Receiver<Zxid> {
        self.applied.clone()
    }

    /// Subscribes to the changes of the runs applied from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<AppliedChanges>> {
        self.events.subscribe()
    }

    /// True once applying failed (storage broken): nothing will be applied any more.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Waits until at least `zxid` is applied, at most `timeout`; returns the applied zxid.
    pub async fn wait_for(&self, zxid: Zxid, timeout: Duration) -> Result<Zxid, WaitTimeout> {
        let mut rx = self.applied.clone();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= zxid)).await;
        match waited {
            Ok(Ok(applied)) => Ok(*applied),
            // Sender gone (shut down) or the deadline passed.
            _ => Err(WaitTimeout {
                wanted: zxid,
                applied: self.applied_zxid(),
            }),
        }
    }
}

/// A started applier: its input, its view, and the thread to join at shutdown.
pub struct Applier {
    pub input: ApplierInput,
    pub view: AppliedView,
    pub thread: std::thread::JoinHandle<()>,
}

impl Applier {
    /// Replays the log above `last_applied` into the store (blocking), then
    /// starts the apply thread. Call from a blocking context.
    pub fn start(store: Arc<Store>, options: ApplierOptions) -> Result<Applier, StoreError> {
        let replayed = if options.replay_log {
            replay(&store)?
        } else {
            0
        };
        if replayed > 0 {
            tracing::info!(replayed, applied = %store.last_applied(), "replayed log entries");
        }
        let (applied_tx, applied_rx) = watch::channel(store.last_applied());
        let (events, _) = broadcast::channel(options.event_channel_capacity.max(1));
        let (tx, rx) = mpsc::channel(options.queue_batches.max(1));
        let failed = Arc::new(AtomicBool::new(false));
        let view = AppliedView {
            applied: applied_rx,
            events: events.clone(),
            failed: failed.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("keeper-applier".into())
            .spawn(move || apply_loop(store, rx, applied_tx, events, failed))?;
        Ok(Applier {
            input: ApplierInput { tx },
            view,
            thread,
        })
    }
}

/// Applies every logged entry above `last_applied`; returns how many.
fn replay(store: &Store) -> Result<usize, StoreError> {
    let mut count = 0;
    loop {
        let after = store.last_applied();
        let chunk = store.read_log(after, REPLAY_CHUNK_ENTRIES)?;
        if chunk.is_empty() {
            return Ok(count);
        }
        let entries = chunk
            .iter()
            .map(|(zxid, bytes)| Ok((*zxid, Entry::decode(bytes)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        count += store
            .apply_batch(entries.iter().map(|(z, e)| (*z, e)))?
            .len();
    }
}

fn apply_loop(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<ApplierMsg>,
    applied_tx: watch::Sender<Zxid>,
    events: broadcast::Sender<Arc<AppliedChanges>>,
    failed: Arc<AtomicBool>,
) {
    let mut last = store.last_applied();
    let mut next = rx.blocking_recv();
    while let Some(msg) = next.take() {
        let mut batch = match msg {
            ApplierMsg::Batch(batch) => batch,
            ApplierMsg::Reset(zxid) => {
                last = zxid;
                applied_tx.send_replace(last);
                let _ = events.send(Arc::new(AppliedChanges::new(zxid, Vec::new(), true)));
                next = rx.blocking_recv();
                continue;
            }
        };
        // Whatever else is already queued joins this run (one store write).
        while batch.len() < MAX_APPLY_RUN_ENTRIES {
            match rx.try_recv() {
                Ok(ApplierMsg::Batch(more)) => batch.extend(more),
                Ok(reset) => {
                    next = Some(reset);
                    break;
                }
                Err(_) => break,
            }
        }
        last = apply_run(&store, batch, last, &applied_tx, &events, &failed);
        if next.is_none() {
            next = rx.blocking_recv();
        }
    }
    tracing::debug!(applied = %last, "applier stopped");
}

/// Applies one run of committed entries with one `Store::apply_batch`, then
/// moves the applied watch, publishes the events and answers the waiters, in
/// that order. Returns the new last applied zxid.
fn apply_run(
    store: &Store,
    batch: Vec<Committed>,
    mut last: Zxid,
    applied_tx: &watch::Sender<Zxid>,
    events: &broadcast::Sender<Arc<AppliedChanges>>,
    failed: &AtomicBool,
) -> Zxid {
    let mut run = Vec::with_capacity(batch.len());
    for committed in batch {
        if failed.load(Ordering::Acquire) {
            fail_one(committed, "an earlier apply failed");
        } else if committed.zxid <= run.last().map_or(last, |c: &Committed| c.zxid) {
            // A proposer bug: entries must arrive once, in zxid order.
            tracing::error!(zxid = %committed.zxid, last = %last, "entry out of order; not applied");
            fail_one(committed, "entry out of zxid order");
        } else {
            run.push(committed);
        }
    }
    if run.is_empty() {
        return last;
    }
    match store.apply_batch(run.iter().map(|c| (c.zxid, &c.entry))) {
        Ok(applied) => {
            if let Some(c) = run.last() {
                last = c.zxid;
            }
            applied_tx.send_replace(last);
            let mut applied = applied;
            let changes: Vec<ChangeEvent> = applied
                .iter_mut()
                .flat_map(|a| std::mem::take(&mut a.events))
                .collect();
            // Never waits: no subscribers is fine, lagging ones see `Lagged`.
            let _ = events.send(Arc::new(AppliedChanges::new(last, changes, false)));
            for (committed, applied) in run.into_iter().zip(applied) {
                if let Some(reply) = committed.reply {
                    let _ = reply.send(Ok(applied));
                }
            }
        }
        Err(e) => {
            tracing::error!(first = %run[0].zxid, error = %e, "apply failed; storage is broken");
            failed.store(true, Ordering::Release);
            let why = e.to_string();
            for committed in run {
                fail_one(committed, &why);
            }
        }
    }
    last
}

fn fail_one(committed: Committed, why: &str) {
    if let Some(reply) = committed.reply {
        let _ = reply.send(Err(ProposeError::Storage(why.to_string())));
    }
}
