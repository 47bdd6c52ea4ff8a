//! The single-node [`Proposer`]: a group-committing log writer.
//!
//! Data flow: `propose(txn)` puts the txn on a bounded channel
//! (`max_inflight_proposals`). A dedicated log-writer thread takes the first
//! waiting txn and everything queued behind it (up to `max_batch_entries`),
//! stamps each one (`Entry { time_ms, txn }`, zxid = epoch<<32 | counter),
//! appends the whole batch with ONE `Store::append_log` (one fsync), and hands
//! the committed batch to the shared [`Applier`](crate::applier), which applies
//! it and answers each waiting caller. While the applier applies batch N, the
//! writer already appends batch N+1.
//!
//! Epochs: at start the writer takes `epoch = max(current_epoch, epoch of the
//! last logged zxid) + 1` and persists it with `set_zab_meta` before stamping
//! anything, so zxids never repeat across restarts. Leader timestamps never go
//! backwards (a clock step back reuses the previous time).

use crate::applier::{AppliedView, ApplierInput, Committed, Reply};
use crate::metrics::Metrics;
use crate::proposer::{ClusterStatus, MemberStatus, ProposeError, Proposer, Role};
use futures::future::BoxFuture;
use keeper_store::{Applied, Entry, Store, StoreError, Txn, ZabMeta};
use keeper_zab::Zxid;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Identity and bounds of a standalone member.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    /// Txns queued for the writer before `propose` waits for room.
    pub max_inflight_proposals: usize,
    /// Most entries in one group commit.
    pub max_batch_entries: usize,
}

struct Proposal {
    txn: Txn,
    reply: Reply,
}

/// Progress shared between the writer thread and `status()`.
#[derive(Default)]
struct Progress {
    epoch: AtomicU32,
    /// Last zxid durably appended (= committed on one node).
    committed: AtomicU64,
    /// Set when an append failed: the member refuses further writes.
    failed: AtomicBool,
}

/// The single-node write path. See the module docs.
pub struct StandaloneProposer {
    sender: Mutex<Option<mpsc::Sender<Proposal>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    progress: Arc<Progress>,
    view: AppliedView,
    options: StandaloneOptions,
    metrics: Arc<Metrics>,
}

impl StandaloneProposer {
    /// Takes a new epoch (persisted), then starts the writer thread. Entries
    /// it commits go to `input`. Call from a blocking context (it fsyncs).
    pub fn start(
        store: Arc<Store>,
        input: ApplierInput,
        view: AppliedView,
        options: StandaloneOptions,
        metrics: Arc<Metrics>,
    ) -> Result<StandaloneProposer, StoreError> {
        let last_logged = store.last_logged();
        let epoch = new_epoch(&store)?;
        let progress = Arc::new(Progress::default());
        progress.epoch.store(epoch, Ordering::Release);
        progress.committed.store(last_logged.0, Ordering::Release);
        tracing::info!(epoch, last_logged = %last_logged, "standalone write path started");

        let (tx, rx) = mpsc::channel(options.max_inflight_proposals.max(1));
        let writer = LogWriter {
            store,
            input,
            progress: progress.clone(),
            metrics: metrics.clone(),
            max_batch_entries: options.max_batch_entries.max(1),
            epoch,
            counter: 0,
            last_time_ms: 0,
        };
        let thread = std::thread::Builder::new()
            .name("keeper-log-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(StandaloneProposer {
            sender: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(thread)),
            progress,
            view,
            options,
            metrics,
        })
    }

    /// Stops taking proposals, lets the writer append and hand over
    /// everything already queued, and waits for the writer thread to exit.
    /// Proposals made after this answer `Unavailable`.
    pub async fn close(&self) {
        drop(lock(&self.sender).take());
        let thread = lock(&self.writer).take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("log writer thread panicked");
            }
        }
    }
}

/// Picks and persists the next epoch: above every epoch seen or logged.
fn new_epoch(store: &Store) -> Result<u32, StoreError> {
    let meta = store.zab_meta();
    let seen = meta
        .current_epoch
        .max(meta.accepted_epoch)
        .max(store.last_logged().epoch());
    let epoch = seen.checked_add(1).ok_or_else(|| StoreError::Corrupt {
        what: "zab meta",
        detail: "epoch space exhausted".into(),
    })?;
    store.set_zab_meta(ZabMeta {
        accepted_epoch: epoch,
        current_epoch: epoch,
    })?;
    Ok(epoch)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct LogWriter {
    store: Arc<Store>,
    input: ApplierInput,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    max_batch_entries: usize,
    epoch: u32,
    counter: u32,
    last_time_ms: u64,
}

impl LogWriter {
    fn run(mut self, mut rx: mpsc::Receiver<Proposal>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch_entries {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        tracing::debug!("log writer stopped");
    }

    fn commit(&mut self, batch: Vec<Proposal>) {
        if self.progress.failed.load(Ordering::Acquire) {
            return fail(
                batch,
                ProposeError::Storage("an earlier log append failed".into()),
            );
        }
        if let Err(e) = self.ensure_counter_room(batch.len()) {
            self.progress.failed.store(true, Ordering::Release);
            return fail(batch, ProposeError::Storage(e.to_string()));
        }
        let time_ms = now_ms().max(self.last_time_ms);
        self.last_time_ms = time_ms;
        let mut encoded = Vec::with_capacity(batch.len());
        let mut committed = Vec::with_capacity(batch.len());
        for proposal in batch {
            self.counter += 1;
            let zxid = Zxid::new(self.epoch, self.counter);
            let entry = Entry {
                time_ms,
                txn: proposal.txn,
            };
            encoded.push((zxid, entry.encode()));
            committed.push(Committed {
                zxid,
                entry,
                reply: Some(proposal.reply),
            });
        }
        let started = Instant::now();
        let appended = self.store.append_log(&encoded);
        self.metrics
            .append_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_entries.observe(encoded.len() as f64);
        match appended {
            Ok(()) => {
                if let Some((last, _)) = encoded.last() {
                    self.progress.committed.store(last.0, Ordering::Release);
                }
                self.input.blocking_submit(committed);
            }
            Err(e) => {
                tracing::error!(error = %e, "log append failed; refusing further writes");
                self.progress.failed.store(true, Ordering::Release);
                let error = ProposeError::Storage(e.to_string());
                for c in committed {
                    if let Some(reply) = c.reply {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Moves to a new (persisted) epoch if this batch would overflow the counter.
    fn ensure_counter_room(&mut self, entries: usize) -> Result<(), StoreError> {
        let room = u32::MAX - self.counter;
        if (room as usize) < entries {
            self.epoch = new_epoch(&self.store)?;
            self.counter = 0;
            self.progress.epoch.store(self.epoch, Ordering::Release);
            tracing::info!(epoch = self.epoch, "zxid counter exhausted; new epoch");
        }
        Ok(())
    }
}

fn fail(batch: Vec<Proposal>, error: ProposeError) {
    for p in batch {
        let _ = p.reply.send(Err(error.clone()));
    }
}

impl Proposer for StandaloneProposer {
    fn propose(&self, txn: Txn) -> BoxFuture<'_, Result<Applied, ProposeError>> {
        Box::pin(async move {
            self.metrics.proposals.inc();
            let result = self.propose_inner(txn).await;
            if result.is_err() {
                self.metrics.proposal_failures.inc();
            }
            result
        })
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<Zxid, ProposeError>> {
        Box::pin(async move {
            if self.progress.failed.load(Ordering::Acquire) || self.view.has_failed() {
                return Err(ProposeError::Storage("storage failed".into()));
            }
            // On one node, committed = appended; wait until all of it is applied.
            let target = Zxid(self.progress.committed.load(Ordering::Acquire));
            let mut applied = self.view.watch_applied();
            let reached = applied.wait_for(|z| *z >= target).await;
            match reached {
                Ok(z) => Ok(*z),
                Err(_) => Err(ProposeError::Unavailable("shutting down".into())),
            }
        })
    }

    fn status(&self) -> ClusterStatus {
        let committed = self.progress.committed.load(Ordering::Acquire);
        ClusterStatus {
            id: self.options.id,
            role: Role::Standalone,
            leader: Some(self.options.id),
            epoch: self.progress.epoch.load(Ordering::Acquire),
            last_logged_zxid: committed,
            committed_zxid: committed,
            applied_zxid: self.view.applied_zxid().0,
            members: vec![MemberStatus {
                id: self.options.id,
                client_addr: self.options.client_addr.clone(),
                peer_addr: self.options.peer_addr.clone(),
                role: Some(Role::Standalone),
            }],
        }
    }
}

impl StandaloneProposer {
    async fn propose_inner(&self, txn: Txn) -> Result<Applied, ProposeError> {
        if self.progress.failed.load(Ordering::Acquire) {
            return Err(ProposeError::Storage("an earlier log append failed".into()));
        }
        let sender = lock(&self.sender)
            .clone()
            .ok_or_else(|| ProposeError::Unavailable("shutting down".into()))?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Proposal { txn, reply })
            .await
            .map_err(|_| ProposeError::Unavailable("shutting down".into()))?;
        drop(sender);
        answer
            .await
            .map_err(|_| ProposeError::Unavailable("write path stopped before answering".into()))?
    }
}
