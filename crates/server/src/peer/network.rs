//! The running transport: the accept loop, one supervisor task per peer (dial or wait
//! for the peer's connection, run the link, report up/down), and the reader and writer
//! tasks of each link. See the module docs of [`super`] for the guarantees.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn, Instrument};

use super::config::PeerConfig;
use super::frame::{self, Handshake, MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION};
use super::metrics::{DropReason, NetworkCounters, NetworkMetrics, PeerCounters};
use super::PeerError;

/// Read buffer of a link's reader.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Accepted-but-not-yet-running connections per peer (a newer one replaces the running link).
const ACCEPTED_QUEUE: usize = 4;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// What the transport tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent<M> {
    /// A message from `from`, in the order `from` sent it on the current link.
    Message {
        /// Sender's member id.
        from: u64,
        /// The decoded message.
        msg: M,
    },
    /// A link to `peer` is up; `send` to it queues from now on.
    Connected {
        /// The peer's member id.
        peer: u64,
    },
    /// The link to `peer` broke; whatever was queued or in flight on it is lost.
    Disconnected {
        /// The peer's member id.
        peer: u64,
    },
}

/// Entry point: starts a member's peer transport. See [`PeerNetwork::start`].
pub struct PeerNetwork<M>(PhantomData<fn() -> M>);

/// Handle to a running transport. Cheap to clone; when the last clone is dropped the
/// transport shuts down (without waiting; call [`PeerHandle::shutdown`] to wait).
pub struct PeerHandle<M> {
    inner: Arc<HandleInner<M>>,
}

impl<M> Clone for PeerHandle<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Reads a transport's counters (see [`PeerHandle::metrics_reader`]); after the
/// transport stopped it reads the final values.
pub struct MetricsReader<M>(Arc<Shared<M>>);

impl<M> MetricsReader<M> {
    /// A snapshot of every counter.
    pub fn read(&self) -> NetworkMetrics {
        network_metrics(&self.0)
    }
}

impl<M> std::fmt::Debug for MetricsReader<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsReader").finish_non_exhaustive()
    }
}

fn network_metrics<M>(shared: &Shared<M>) -> NetworkMetrics {
    NetworkMetrics {
        connections_accepted: shared.net.connections_accepted.load(Relaxed),
        handshakes_refused: shared.net.handshakes_refused.load(Relaxed),
        peers: shared
            .peers
            .iter()
            .map(|(&id, slot)| {
                let connected = lock(&slot.link).is_some();
                (
                    id,
                    slot.counters.snapshot(slot_queue_depth(slot), connected),
                )
            })
            .collect(),
    }
}

struct HandleInner<M> {
    shared: Arc<Shared<M>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    local_addr: Option<SocketAddr>,
}

impl<M> Drop for HandleInner<M> {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// A one-shot cancellation signal that many tasks can wait on.
#[derive(Default)]
struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    fn cancel(&self) {
        self.flag.store(true, Relaxed);
        self.notify.notify_waiters();
    }

    fn is_cancelled(&self) -> bool {
        self.flag.load(Relaxed)
    }

    async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Stops one link; the first reason given is the one reported.
#[derive(Default)]
struct LinkStop {
    cancel: Cancel,
    reason: Mutex<Option<(DropReason, String)>>,
}

impl LinkStop {
    fn stop(&self, reason: DropReason, detail: impl Into<String>) {
        {
            let mut r = lock(&self.reason);
            if r.is_none() {
                *r = Some((reason, detail.into()));
            }
        }
        self.cancel.cancel();
    }

    fn reason(&self) -> (DropReason, String) {
        lock(&self.reason)
            .clone()
            .unwrap_or((DropReason::Shutdown, "stopped".into()))
    }
}

/// One message waiting for the writer: either a value to encode, or a whole frame
/// already encoded by `broadcast`.
enum Outbound<M> {
    Msg(M),
    Frame(Bytes),
}

/// The current link of a peer, as seen by `send`.
struct LinkEntry<M> {
    generation: u64,
    tx: mpsc::Sender<Outbound<M>>,
    stop: Arc<LinkStop>,
}

struct PeerSlot<M> {
    id: u64,
    addr: String,
    counters: PeerCounters,
    link: Mutex<Option<LinkEntry<M>>>,
    /// Where the accept loop hands handshaken connections (only for peers that dial us).
    accepted_tx: Option<mpsc::Sender<TcpStream>>,
}

struct Shared<M> {
    config: PeerConfig,
    events: mpsc::Sender<PeerEvent<M>>,
    peers: BTreeMap<u64, PeerSlot<M>>,
    net: NetworkCounters,
    next_generation: AtomicU64,
    shutdown: Cancel,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a task panicked while holding it (a bug); the data is
    // still a plain Option/queue handle, so keep going rather than cascade panics.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<M> PeerNetwork<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Validates `config`, starts accepting peers on `listener` and dialing the peers
    /// with larger ids. Must be called inside a tokio runtime. Returns the handle to send
    /// with and the single receiver of [`PeerEvent`]s (bounded by `peer_event_queue`; the
    /// owner must keep reading it or links stall).
    pub fn start(
        config: PeerConfig,
        listener: TcpListener,
    ) -> Result<(PeerHandle<M>, mpsc::Receiver<PeerEvent<M>>), PeerError> {
        config.validate()?;
        let (events_tx, events_rx) = mpsc::channel(config.peer_event_queue);
        let mut peers = BTreeMap::new();
        let mut accepted_rxs = BTreeMap::new();
        for (&id, addr) in &config.peers {
            if id == config.my_id {
                continue;
            }
            let accepted_tx = if id < config.my_id {
                let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
                accepted_rxs.insert(id, rx);
                Some(tx)
            } else {
                None
            };
            peers.insert(
                id,
                PeerSlot {
                    id,
                    addr: addr.clone(),
                    counters: PeerCounters::default(),
                    link: Mutex::new(None),
                    accepted_tx,
                },
            );
        }
        let shared = Arc::new(Shared {
            config,
            events: events_tx,
            peers,
            net: NetworkCounters::default(),
            next_generation: AtomicU64::new(1),
            shutdown: Cancel::default(),
        });
        let me = shared.config.my_id;
        let local_addr = listener.local_addr().ok();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(
            accept_loop(Arc::clone(&shared), listener)
                .instrument(tracing::info_span!("peer_accept", me)),
        ));
        for &peer in shared.peers.keys() {
            let rx = accepted_rxs.remove(&peer);
            tasks.push(tokio::spawn(
                supervise(Arc::clone(&shared), peer, rx)
                    .instrument(tracing::info_span!("peer", me, peer)),
            ));
        }
        let handle = PeerHandle {
            inner: Arc::new(HandleInner {
                shared,
                tasks: Mutex::new(tasks),
                local_addr,
            }),
        };
        Ok((handle, events_rx))
    }
}

impl<M> PeerHandle<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Queues `msg` for `to` without blocking. On `Ok` the message will be written after
    /// every message queued before it, unless the link breaks first. Errors: unknown
    /// peer, no link up (message dropped), queue full (message dropped and the link is
    /// reset), shut down.
    pub fn send(&self, to: u64, msg: M) -> Result<(), PeerError> {
        self.enqueue(to, Outbound::Msg(msg))
    }

    /// Encodes `msg` once and queues the same frame to every peer in `to`, with the same
    /// per-peer rules as [`send`](Self::send). Returns how many peers it was queued to;
    /// fails only if the message cannot be encoded within `max_frame_bytes`.
    pub fn broadcast(&self, to: &[u64], msg: &M) -> Result<usize, PeerError> {
        let mut buf = Vec::new();
        frame::encode_frame(msg, self.inner.shared.config.max_frame_bytes, &mut buf)?;
        let frame = Bytes::from(buf);
        Ok(to
            .iter()
            .filter(|&&peer| self.enqueue(peer, Outbound::Frame(frame.clone())).is_ok())
            .count())
    }

    fn enqueue(&self, to: u64, item: Outbound<M>) -> Result<(), PeerError> {
        let shared = &self.inner.shared;
        if shared.shutdown.is_cancelled() {
            return Err(PeerError::ShutDown);
        }
        let slot = shared.peers.get(&to).ok_or(PeerError::UnknownPeer(to))?;
        let mut link = lock(&slot.link);
        let Some(entry) = link.as_ref() else {
            slot.counters.sends_without_link.fetch_add(1, Relaxed);
            return Err(PeerError::NotConnected(to));
        };
        match entry.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let generation = entry.generation;
                if let Some(entry) = link.take() {
                    entry.stop.stop(
                        DropReason::QueueFull,
                        format!(
                            "send queue of {} frames is full",
                            shared.config.peer_send_queue_frames
                        ),
                    );
                }
                warn!(
                    me = shared.config.my_id,
                    peer = to,
                    generation,
                    "peer send queue full; resetting link"
                );
                Err(PeerError::QueueFull(to))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The writer is gone: the link is being torn down.
                slot.counters.sends_without_link.fetch_add(1, Relaxed);
                Err(PeerError::NotConnected(to))
            }
        }
    }

    /// Closes the current link to `peer` on purpose (fault injection, tests). The
    /// owner gets `Disconnected{peer}`; a dialer redials after its backoff. Returns
    /// whether a link was up.
    pub fn disconnect(&self, peer: u64) -> bool {
        let Some(slot) = self.inner.shared.peers.get(&peer) else {
            return false;
        };
        match lock(&slot.link).take() {
            Some(entry) => {
                entry
                    .stop
                    .stop(DropReason::Requested, "disconnect requested by owner");
                true
            }
            None => false,
        }
    }

    /// Whether a link to `peer` is up now.
    pub fn is_connected(&self, peer: u64) -> bool {
        self.inner
            .shared
            .peers
            .get(&peer)
            .is_some_and(|s| lock(&s.link).is_some())
    }

    /// Messages waiting in `peer`'s outbound queue (`None` for an unknown peer; 0 when
    /// no link is up).
    pub fn queue_depth(&self, peer: u64) -> Option<usize> {
        self.inner.shared.peers.get(&peer).map(slot_queue_depth)
    }

    /// This member's id.
    pub fn my_id(&self) -> u64 {
        self.inner.shared.config.my_id
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// A snapshot of every counter.
    pub fn metrics(&self) -> NetworkMetrics {
        network_metrics(&self.inner.shared)
    }

    /// Reads this transport's counters later without keeping it running (what the
    /// metrics registry holds).
    pub fn metrics_reader(&self) -> MetricsReader<M> {
        MetricsReader(Arc::clone(&self.inner.shared))
    }

    /// Stops every task this transport started (listener, dialers, links) and waits for
    /// them. Closes every connection; no `Disconnected` events are sent for them.
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown.cancel();
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for t in tasks {
            if let Err(e) = t.await {
                warn!(me = self.my_id(), error = %e, "peer task ended abnormally");
            }
        }
    }
}

fn slot_queue_depth<M>(slot: &PeerSlot<M>) -> usize {
    lock(&slot.link)
        .as_ref()
        .map_or(0, |e| e.tx.max_capacity() - e.tx.capacity())
}

// ---------------------------------------------------------------------------------
// Accepting

async fn accept_loop<M>(shared: Arc<Shared<M>>, listener: TcpListener)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let pending = Arc::new(Semaphore::new(shared.config.max_pending_handshakes));
    let mut handshakes = JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "peer accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        shared.net.connections_accepted.fetch_add(1, Relaxed);
        let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
            shared.net.handshakes_refused.fetch_add(1, Relaxed);
            warn!(%remote, limit = shared.config.max_pending_handshakes,
                "too many pending peer handshakes; closing connection");
            continue;
        };
        let shared = Arc::clone(&shared);
        handshakes.spawn(async move {
            let _permit = permit;
            let timeout = shared.config.handshake_timeout();
            let result =
                match tokio::time::timeout(timeout, accept_handshake(&shared, stream)).await {
                    Ok(r) => r,
                    Err(_) => Err(PeerError::Handshake("handshake timed out".into())),
                };
            match result {
                Ok((peer, stream)) => hand_over(&shared, peer, stream, remote),
                Err(e) => {
                    shared.net.handshakes_refused.fetch_add(1, Relaxed);
                    warn!(%remote, reason = %e, "refused inbound peer connection");
                }
            }
        });
    }
    handshakes.abort_all();
    while handshakes.join_next().await.is_some() {}
}

fn hand_over<M>(shared: &Shared<M>, peer: u64, stream: TcpStream, remote: SocketAddr) {
    let Some(tx) = shared.peers.get(&peer).and_then(|s| s.accepted_tx.as_ref()) else {
        return; // checked in accept_handshake; unreachable in practice
    };
    if tx.try_send(stream).is_err() {
        shared.net.handshakes_refused.fetch_add(1, Relaxed);
        warn!(peer, %remote, "too many new connections from peer at once; closing one");
    }
}

/// Acceptor side: read and check the dialer's handshake, answer with ours.
async fn accept_handshake<M>(
    shared: &Shared<M>,
    mut stream: TcpStream,
) -> Result<(u64, TcpStream), PeerError> {
    let cfg = &shared.config;
    stream.set_nodelay(cfg.tcp_nodelay)?;
    let mut buf = Vec::new();
    frame::read_frame(&mut stream, MAX_HANDSHAKE_BYTES, &mut buf).await?;
    let hello: Handshake = frame::decode_payload(&buf)?;
    check_handshake(cfg, &hello)?;
    let peer = hello.member_id;
    if !shared.peers.contains_key(&peer) {
        return Err(PeerError::Handshake(format!("unknown member id {peer}")));
    }
    if peer > cfg.my_id {
        return Err(PeerError::Handshake(format!(
            "member {peer} dialed member {}, but the smaller id dials",
            cfg.my_id
        )));
    }
    write_handshake(cfg, &mut stream).await?;
    Ok((peer, stream))
}

fn check_handshake(cfg: &PeerConfig, h: &Handshake) -> Result<(), PeerError> {
    if h.protocol_version != PROTOCOL_VERSION {
        return Err(PeerError::BadVersion(h.protocol_version));
    }
    if h.cluster != cfg.cluster_name {
        return Err(PeerError::Handshake(format!(
            "cluster {:?} is not {:?}",
            h.cluster, cfg.cluster_name
        )));
    }
    if h.member_id == cfg.my_id {
        return Err(PeerError::Handshake(format!(
            "peer claims my own id {}",
            h.member_id
        )));
    }
    Ok(())
}

async fn write_handshake(cfg: &PeerConfig, stream: &mut TcpStream) -> Result<(), PeerError> {
    let hello = Handshake {
        protocol_version: PROTOCOL_VERSION,
        cluster: cfg.cluster_name.clone(),
        member_id: cfg.my_id,
    };
    let mut out = Vec::new();
    frame::encode_frame(&hello, MAX_HANDSHAKE_BYTES, &mut out)?;
    stream.write_all(&out).await?;
    Ok(())
}

/// Dialer side: connect, send our handshake, check the answer comes from `peer`.
async fn dial<M>(shared: &Shared<M>, slot: &PeerSlot<M>) -> Result<TcpStream, PeerError> {
    let cfg = &shared.config;
    let target = super::hosts::dial_target(cfg.hosts_file.as_deref(), &slot.addr).await;
    let mut stream = tokio::time::timeout(cfg.connect_timeout(), TcpStream::connect(&target))
        .await
        .map_err(|_| PeerError::Io(std::io::ErrorKind::TimedOut.into()))??;
    stream.set_nodelay(cfg.tcp_nodelay)?;
    let exchange = async {
        write_handshake(cfg, &mut stream).await?;
        let mut buf = Vec::new();
        frame::read_frame(&mut stream, MAX_HANDSHAKE_BYTES, &mut buf).await?;
        let answer: Handshake = frame::decode_payload(&buf)?;
        check_handshake(cfg, &answer)?;
        if answer.member_id != slot.id {
            return Err(PeerError::Handshake(format!(
                "dialed member {} at {} but member {} answered",
                slot.id, slot.addr, answer.member_id
            )));
        }
        Ok::<_, PeerError>(())
    };
    match tokio::time::timeout(cfg.handshake_timeout(), exchange).await {
        Ok(r) => r?,
        Err(_) => return Err(PeerError::Handshake("handshake timed out".into())),
    }
    Ok(stream)
}

// ---------------------------------------------------------------------------------
// Supervising one peer

/// Owns the lifecycle of the links to one peer: obtains a connection (dials it, or
/// waits for it to dial us), runs it, and reports `Connected`/`Disconnected` in order.
async fn supervise<M>(
    shared: Arc<Shared<M>>,
    peer: u64,
    mut accepted: Option<mpsc::Receiver<TcpStream>>,
) where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let Some(slot) = shared.peers.get(&peer) else {
        return;
    };
    let cfg = &shared.config;
    let mut backoff = cfg.backoff_min();
    loop {
        // 1. Obtain a connection.
        let stream = match accepted.as_mut() {
            None => {
                let r = tokio::select! {
                    biased;
                    _ = shared.shutdown.cancelled() => return,
                    r = dial(&shared, slot) => r,
                };
                match r {
                    Ok(s) => {
                        backoff = cfg.backoff_min();
                        s
                    }
                    Err(e) => {
                        slot.counters.dial_failures.fetch_add(1, Relaxed);
                        debug!(addr = %slot.addr, error = %e, backoff_ms = backoff.as_millis() as u64,
                            "dial to peer failed");
                        if !sleep_or_shutdown(&shared, backoff).await {
                            return;
                        }
                        backoff = (backoff * 2).min(cfg.backoff_max());
                        continue;
                    }
                }
            }
            Some(rx) => {
                let s = tokio::select! {
                    biased;
                    _ = shared.shutdown.cancelled() => return,
                    s = rx.recv() => s,
                };
                match s {
                    Some(s) => s,
                    None => return,
                }
            }
        };

        // 2. Run links until none is left (an acceptor may get a replacement).
        let mut next = Some(stream);
        while let Some(stream) = next.take() {
            let generation = shared.next_generation.fetch_add(1, Relaxed);
            let (read_half, write_half) = stream.into_split();
            let stop = Arc::new(LinkStop::default());
            let (tx, rx) = mpsc::channel(cfg.peer_send_queue_frames);
            let span = tracing::info_span!("peer_link", me = cfg.my_id, peer, generation);
            let writer = tokio::spawn(
                write_loop(Arc::clone(&shared), peer, Arc::clone(&stop), rx, write_half)
                    .instrument(span.clone()),
            );
            *lock(&slot.link) = Some(LinkEntry {
                generation,
                tx,
                stop: Arc::clone(&stop),
            });
            slot.counters.links_established.fetch_add(1, Relaxed);
            info!(generation, "peer link up");
            if !emit(&shared, PeerEvent::Connected { peer }).await {
                stop.stop(DropReason::Shutdown, "shutting down");
                finish_link(slot, generation, &stop, None, writer).await;
                return;
            }
            let reader = tokio::spawn(
                read_loop(Arc::clone(&shared), peer, Arc::clone(&stop), read_half).instrument(span),
            );

            tokio::select! {
                biased;
                _ = shared.shutdown.cancelled() => stop.stop(DropReason::Shutdown, "shutting down"),
                _ = stop.cancel.cancelled() => {}
                s = recv_replacement(&mut accepted) => {
                    match s {
                        Some(s) => {
                            next = Some(s);
                            stop.stop(DropReason::Replaced, "a newer connection from the peer arrived");
                        }
                        None => stop.stop(DropReason::Shutdown, "accept loop ended"),
                    }
                }
            }
            let (reason, detail) = stop.reason();
            finish_link(slot, generation, &stop, Some(reader), writer).await;
            slot.counters.link_dropped(reason);
            match reason {
                DropReason::Shutdown => {
                    debug!(generation, reason = reason.as_str(), %detail, "peer link closed")
                }
                DropReason::Replaced | DropReason::Requested | DropReason::Io => {
                    info!(generation, reason = reason.as_str(), %detail, "peer link closed")
                }
                DropReason::QueueFull | DropReason::BadFrame | DropReason::Outbound => {
                    warn!(generation, reason = reason.as_str(), %detail, "peer link closed")
                }
            }
            if shared.shutdown.is_cancelled() || reason == DropReason::Shutdown {
                return;
            }
            if !emit(&shared, PeerEvent::Disconnected { peer }).await {
                return;
            }
        }

        // 3. A dialer waits before redialing, so a peer that accepts and drops at once
        //    is not hammered.
        if accepted.is_none() {
            if !sleep_or_shutdown(&shared, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(cfg.backoff_max());
        }
    }
}

/// Waits for a newer connection for an acceptor; never resolves for a dialer.
async fn recv_replacement(accepted: &mut Option<mpsc::Receiver<TcpStream>>) -> Option<TcpStream> {
    match accepted {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for both tasks of a stopped link, then clears the slot if it still holds
/// this generation (a `send` or `disconnect` may already have taken it).
async fn finish_link<M>(
    slot: &PeerSlot<M>,
    generation: u64,
    stop: &LinkStop,
    reader: Option<JoinHandle<()>>,
    writer: JoinHandle<()>,
) {
    debug_assert!(stop.cancel.is_cancelled());
    {
        let mut link = lock(&slot.link);
        if link.as_ref().is_some_and(|e| e.generation == generation) {
            *link = None;
        }
    }
    for task in reader.into_iter().chain(std::iter::once(writer)) {
        if let Err(e) = task.await {
            warn!(generation, error = %e, "peer link task ended abnormally");
        }
    }
}

/// Sends an event to the owner unless shutting down; false if it could not.
async fn emit<M>(shared: &Shared<M>, event: PeerEvent<M>) -> bool {
    tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => false,
        r = shared.events.send(event) => r.is_ok(),
    }
}

async fn sleep_or_shutdown<M>(shared: &Shared<M>, d: Duration) -> bool {
    tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

// ---------------------------------------------------------------------------------
// Link tasks

async fn read_loop<M>(shared: Arc<Shared<M>>, peer: u64, stop: Arc<LinkStop>, r: OwnedReadHalf)
where
    M: DeserializeOwned + Send + 'static,
{
    let Some(slot) = shared.peers.get(&peer) else {
        return;
    };
    let max = shared.config.max_frame_bytes;
    let mut r = BufReader::with_capacity(READ_BUFFER_BYTES, r);
    let mut buf = Vec::new();
    loop {
        let read = tokio::select! {
            biased;
            _ = stop.cancel.cancelled() => return,
            r = frame::read_frame(&mut r, max, &mut buf) => r,
        };
        let msg: M = match read.and_then(|()| frame::decode_payload(&buf)) {
            Ok(m) => m,
            Err(e @ (PeerError::Closed | PeerError::Io(_))) => {
                stop.stop(DropReason::Io, e.to_string());
                return;
            }
            Err(e) => {
                stop.stop(DropReason::BadFrame, e.to_string());
                return;
            }
        };
        slot.counters.frames_received.fetch_add(1, Relaxed);
        slot.counters
            .bytes_received
            .fetch_add((frame::HEADER_LEN + buf.len()) as u64, Relaxed);
        if buf.capacity() > READ_BUFFER_BYTES * 16 {
            buf = Vec::new(); // do not keep a snapshot-chunk-sized buffer forever
        }
        let sent = tokio::select! {
            biased;
            _ = stop.cancel.cancelled() => return,
            r = shared.events.send(PeerEvent::Message { from: peer, msg }) => r,
        };
        if sent.is_err() {
            stop.stop(DropReason::Shutdown, "event receiver dropped");
            return;
        }
    }
}

async fn write_loop<M>(
    shared: Arc<Shared<M>>,
    peer: u64,
    stop: Arc<LinkStop>,
    mut rx: mpsc::Receiver<Outbound<M>>,
    mut w: OwnedWriteHalf,
) where
    M: Serialize + Send + 'static,
{
    let Some(slot) = shared.peers.get(&peer) else {
        return;
    };
    let max = shared.config.max_frame_bytes;
    let batch_max = shared.config.write_batch_max_bytes;
    let mut buf: Vec<u8> = Vec::with_capacity(batch_max.min(READ_BUFFER_BYTES));
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancel.cancelled() => return,
            m = rx.recv() => m,
        };
        let Some(first) = first else {
            stop.stop(DropReason::Shutdown, "send queue closed");
            return;
        };
        buf.clear();
        let mut frames = 0u64;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let pushed = match item {
                Outbound::Msg(m) => frame::encode_frame(&m, max, &mut buf).map(|_| ()),
                Outbound::Frame(f) => {
                    buf.extend_from_slice(&f);
                    Ok(())
                }
            };
            if let Err(e) = pushed {
                stop.stop(DropReason::Outbound, e.to_string());
                return;
            }
            frames += 1;
            if buf.len() < batch_max {
                next = rx.try_recv().ok();
            }
        }
        let written = tokio::select! {
            biased;
            _ = stop.cancel.cancelled() => return,
            r = async {
                w.write_all(&buf).await?;
                w.flush().await
            } => r,
        };
        if let Err(e) = written {
            stop.stop(DropReason::Io, e.to_string());
            return;
        }
        slot.counters.frames_sent.fetch_add(frames, Relaxed);
        slot.counters
            .bytes_sent
            .fetch_add(buf.len() as u64, Relaxed);
        if buf.capacity() > batch_max.saturating_mul(4) {
            buf = Vec::with_capacity(batch_max.min(READ_BUFFER_BYTES));
        }
    }
}
