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

/// Encodes the peer links' counters into the process's registry at every scrape
/// (families `keeper_peer_*`, labelled by `peer` id).
pub struct PeerCollector<M>(pub super::MetricsReader<M>);

impl<M> std::fmt::Debug for PeerCollector<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PeerCollector").finish()
    }
}

impl<M: Send + 'static> prometheus_client::collector::Collector for PeerCollector<M>
where
    super::MetricsReader<M>: Send + Sync,
{
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let m = self.0.read();
        crate::metrics::encode_counter(
            &mut encoder,
            "keeper_peer_connections_accepted",
            "TCP connections accepted by the peer listener.",
            m.connections_accepted,
        )?;
        crate::metrics::encode_counter(
            &mut encoder,
            "keeper_peer_handshakes_refused",
            "Inbound peer connections refused before or during the handshake.",
            m.handshakes_refused,
        )?;
        type Get = fn(&PeerMetrics) -> u64;
        let counters: [(&str, &str, Get); 7] = [
            ("keeper_peer_frames_sent", "Frames written to a peer.", |p| p.frames_sent),
            ("keeper_peer_bytes_sent", "Bytes written to a peer, headers included.", |p| p.bytes_sent),
            ("keeper_peer_frames_received", "Frames read from a peer.", |p| p.frames_received),
            ("keeper_peer_bytes_received", "Bytes read from a peer, headers included.", |p| p.bytes_received),
            ("keeper_peer_links_established", "Links to a peer that completed a handshake.", |p| p.links_established),
            ("keeper_peer_dial_failures", "Dials or outbound handshakes to a peer that failed (an unresolvable name included).", |p| p.dial_failures),
            ("keeper_peer_sends_without_link", "Messages to a peer dropped because no link was up.", |p| p.sends_without_link),
        ];
        for (name, help, get) in counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for (id, peer) in &m.peers {
                let labels = [("peer", id.to_string())];
                ConstCounter::new(get(peer)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut dropped = encoder.encode_descriptor(
            "keeper_peer_links_dropped",
            "Links to a peer closed, by reason.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (id, peer) in &m.peers {
            for reason in DropReason::ALL {
                let labels = [
                    ("peer", id.to_string()),
                    ("reason", reason.as_str().to_string()),
                ];
                ConstCounter::new(peer.dropped(reason)).encode(dropped.encode_family(&labels)?)?;
            }
        }
        type GetGauge = fn(&PeerMetrics) -> i64;
        let gauges: [(&str, &str, GetGauge); 2] = [
            (
                "keeper_peer_connected",
                "1 while a link to the peer is up.",
                |p| i64::from(p.connected),
            ),
            (
                "keeper_peer_queue_depth",
                "Messages waiting in the outbound queue to the peer.",
                |p| i64::try_from(p.queue_depth).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, get) in gauges {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for (id, peer) in &m.peers {
                let labels = [("peer", id.to_string())];
                ConstGauge::new(get(peer)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
