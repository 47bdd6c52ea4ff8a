//! Counters of the peer transport, kept in plain atomics so that links update them
//! without locks and the server can export a [`NetworkMetrics`] snapshot at any time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a link was closed. Each reason has its own counter per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// `send` found the outbound queue full; the link was reset.
    QueueFull,
    /// The peer sent a malformed frame (magic, version, size, checksum, decoding).
    BadFrame,
    /// The peer closed the connection, or a socket error occurred.
    Io,
    /// A newer connection from the same peer replaced this one.
    Replaced,
    /// The owner called `PeerHandle::disconnect`.
    Requested,
    /// An outbound message could not be encoded or exceeded `max_frame_bytes`.
    Outbound,
    /// The network was shut down, or the owner dropped the event receiver.
    Shutdown,
}

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [DropReason; 7] = [
        DropReason::QueueFull,
        DropReason::BadFrame,
        DropReason::Io,
        DropReason::Replaced,
        DropReason::Requested,
        DropReason::Outbound,
        DropReason::Shutdown,
    ];

    /// A short stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::BadFrame => "bad_frame",
            DropReason::Io => "io",
            DropReason::Replaced => "replaced",
            DropReason::Requested => "requested",
            DropReason::Outbound => "outbound",
            DropReason::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Live counters for one peer.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub frames_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub links_established: AtomicU64,
    pub dial_failures: AtomicU64,
    pub sends_without_link: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl PeerCounters {
    pub fn link_dropped(&self, reason: DropReason) {
        if let Some(c) = self.dropped.get(reason.index()) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn snapshot(&self, queue_depth: usize, connected: bool) -> PeerMetrics {
        PeerMetrics {
            frames_sent: self.frames_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            frames_received: self.frames_received.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            links_established: self.links_established.load(Relaxed),
            dial_failures: self.dial_failures.load(Relaxed),
            sends_without_link: self.sends_without_link.load(Relaxed),
            links_dropped: DropReason::ALL
                .iter()
                .map(|r| {
                    let n = self.dropped.get(r.index()).map_or(0, |c| c.load(Relaxed));
                    (*r, n)
                })
                .collect(),
            queue_depth,
            connected,
        }
    }
}

/// A point-in-time copy of one peer's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMetrics {
    /// Message frames written to the socket (handshakes excluded).
    pub frames_sent: u64,
    /// Bytes written, headers included.
    pub bytes_sent: u64,
    /// Message frames read and decoded.
    pub frames_received: u64,
    /// Bytes read, headers included.
    pub bytes_received: u64,
    /// Links that completed a handshake (the first connect counts: reconnects = this - 1).
    pub links_established: u64,
    /// Dials or outbound handshakes that failed.
    pub dial_failures: u64,
    /// `send` calls dropped because no link was up.
    pub sends_without_link: u64,
    /// Links closed, per reason.
    pub links_dropped: BTreeMap<DropReason, u64>,
    /// Messages waiting in the outbound queue now.
    pub queue_depth: usize,
    /// Whether a link is up now.
    pub connected: bool,
}

impl PeerMetrics {
    /// Links closed for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.links_dropped.get(&reason).copied().unwrap_or(0)
    }
}

/// Network-wide counters plus one [`PeerMetrics`] per configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkMetrics {
    /// TCP connections accepted by the listener.
    pub connections_accepted: u64,
    /// Inbound connections closed before or during the handshake (bad frame, unknown
    /// id, wrong cluster/version/direction, timeout, too many pending).
    pub handshakes_refused: u64,
    /// Per-peer counters.
    pub peers: BTreeMap<u64, PeerMetrics>,
}

#[derive(Debug, Default)]
pub(crate) struct NetworkCounters {
    pub connections_accepted: AtomicU64,
    pub handshakes_refused: AtomicU64,
}
