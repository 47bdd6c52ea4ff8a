//! Peer transport: the FIFO links between cluster members that ZAB runs on.
//!
//! Where it sits: the server's driver owns one [`PeerNetwork`] instance. It hands
//! outbound messages (ZAB messages, forwarded writes, keepalive batches, snapshot chunks
//! — any `M: Serialize + DeserializeOwned + Send`) to [`PeerHandle::send`], and reads
//! [`PeerEvent`]s (messages, link up, link down) from one bounded receiver.
//!
//! ```text
//! driver ──send(to, M)──▶ per-peer queue ──writer task──▶ TCP ──reader task──▶ events ──▶ driver
//!                         (bounded)        (encode+batch)        (decode+check)  (bounded)
//! ```
//!
//! # Frames
//! Every frame is a 12-byte header — magic `"KP"`, protocol version (u16), payload
//! length (u32), CRC32 of the payload (u32), all big-endian — followed by a postcard
//! payload (see [`frame`]). A bad magic, version, checksum, an undecodable payload or a
//! length above `max_frame_bytes` closes the link; the reason is logged at `warn` with the
//! peer id and counted in [`PeerMetrics::links_dropped`]. No input panics.
//!
//! # One link per pair, and who dials
//! There is exactly one TCP connection per pair of members, carrying both directions.
//! The member with the smaller id dials the larger one; the larger one only accepts.
//! So two members never race to open duplicate connections, and an inbound connection
//! from a larger id is refused as a protocol error. The first frame each way is a
//! [`Handshake`] (protocol version, cluster name, member id): the acceptor refuses an
//! unknown id, a wrong cluster or version, then answers with its own handshake, which
//! the dialer checks (it must come from the member it meant to reach). A dialer redials
//! a broken link after an exponential backoff between `reconnect_backoff_min_ms` and
//! `reconnect_backoff_max_ms` (reset after a successful handshake). When a new
//! connection from a peer arrives while an old one is still up (the peer restarted),
//! the new one replaces the old one, which is closed.
//!
//! # FIFO and breakage semantics (what ZAB may assume)
//! - Messages from A to B on one link arrive in the order A called `send`.
//! - A link breaks as a whole: messages queued or in flight when it breaks are lost,
//!   and `send` while no link is up drops the message (returns
//!   [`PeerError::NotConnected`]). Nothing is retransmitted; ZAB recovers by its own
//!   timeouts and re-sync.
//! - The owner sees `Connected{peer}` before any message of a link and
//!   `Disconnected{peer}` after the last one; every `Connected` is followed by exactly
//!   one `Disconnected` unless the network shuts down first. Each link has a generation
//!   number, so the tasks of an old link can never clear or replace a newer one.
//!
//! # Bounds
//! - Per-peer outbound queue of `peer_send_queue_frames` messages. `send` never blocks:
//!   if the queue is full, the link is closed and reset (counted as
//!   [`DropReason::QueueFull`]) — exactly ZAB's "a broken link drops what was in flight".
//! - One event queue of `peer_event_queue` entries to the owner; when the owner is slow,
//!   readers stop reading and TCP pushes back on the senders.
//! - Frames up to `max_frame_bytes` (default 16 MiB); handshakes up to
//!   [`frame::MAX_HANDSHAKE_BYTES`]; at most `max_pending_handshakes` inbound
//!   connections in the handshake, each limited by `handshake_timeout_ms`.
//! - The writer drains everything waiting (up to `write_batch_max_bytes`) into one buffer
//!   and writes it with one `write_all`; with TCP_NODELAY this batches under load and
//!   adds no delay when idle.
//!
//! # Where encoding happens
//! [`PeerHandle::send`] moves the message into the queue and the writer task encodes it,
//! so the driver's loop pays only a channel push per message. [`PeerHandle::broadcast`]
//! encodes once on the caller's side and queues the same bytes to every peer, which is
//! cheaper than N encodes for proposals and commits sent to every follower.

pub mod config;
pub mod frame;
pub mod hosts;
pub mod metrics;
mod network;

pub use config::PeerConfig;
pub use frame::Handshake;
pub use metrics::{DropReason, NetworkMetrics, PeerCollector, PeerMetrics};
pub use network::{MetricsReader, PeerEvent, PeerHandle, PeerNetwork};

/// Errors of the peer transport: bad config, bad frames, refused handshakes, and the
/// outcome of a `send` that could not queue its message.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// `PeerConfig::validate` failed.
    #[error("invalid peer config: {0}")]
    Config(String),
    /// The frame does not start with the magic bytes.
    #[error("bad frame magic {0:#06x}")]
    BadMagic(u16),
    /// The frame or handshake carries a protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    BadVersion(u16),
    /// The payload length is above the limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced or encoded payload length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The payload does not match its CRC32.
    #[error("frame checksum mismatch")]
    BadChecksum,
    /// The payload is not a valid message.
    #[error("payload does not decode: {0}")]
    Decode(String),
    /// The message could not be encoded.
    #[error("message does not encode: {0}")]
    Encode(String),
    /// The handshake was refused (by us or by the other side).
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// The other side closed the connection.
    #[error("connection closed by the other side")]
    Closed,
    /// A socket error, including connect and handshake timeouts.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// `send` to an id that is not a configured peer.
    #[error("unknown peer {0}")]
    UnknownPeer(u64),
    /// `send` while no link to the peer is up: the message was dropped.
    #[error("no link to peer {0}; message dropped")]
    NotConnected(u64),
    /// `send` found the queue full: the message was dropped and the link reset.
    #[error("send queue to peer {0} is full; link reset")]
    QueueFull(u64),
    /// The network was shut down.
    #[error("peer network is shut down")]
    ShutDown,
}
