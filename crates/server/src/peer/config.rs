//! Configuration of the peer transport: who I am, who my peers are, and every bound
//! the transport enforces (frame size, queue sizes, backoff, timeouts).
//!
//! The binary builds a [`PeerConfig`] from its flags/config file; the transport only
//! checks it with [`PeerConfig::validate`] at start.

use std::collections::BTreeMap;
use std::time::Duration;

use super::PeerError;

/// Settings of one member's peer transport. Every bound has a name and a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// This member's id. Must be unique in the cluster.
    pub my_id: u64,
    /// Cluster name, checked in the handshake: links between clusters are refused.
    pub cluster_name: String,
    /// Address this member listens on for peers (informational: the caller binds the
    /// listener and passes it to `PeerNetwork::start`).
    pub listen_addr: String,
    /// Every member of the cluster: id -> "host:port" of its peer listener. An entry
    /// for `my_id` is allowed and ignored, so the whole member list can be passed.
    pub peers: BTreeMap<u64, String>,
    /// Largest payload accepted or sent in one frame, in bytes (default 16 MiB;
    /// snapshot chunks of ~1 MiB travel on peer links).
    pub max_frame_bytes: usize,
    /// Outbound messages waiting per peer. When full, the link is reset.
    pub peer_send_queue_frames: usize,
    /// Events (messages, connects, disconnects) waiting for the owner, all peers together.
    pub peer_event_queue: usize,
    /// The writer stops draining its queue into one write once this many bytes are buffered.
    pub write_batch_max_bytes: usize,
    /// First delay before redialing a peer, doubled after each failure.
    pub reconnect_backoff_min_ms: u64,
    /// Largest delay between two dials of the same peer.
    pub reconnect_backoff_max_ms: u64,
    /// Time allowed for a TCP connect to a peer.
    pub connect_timeout_ms: u64,
    /// Time allowed for the handshake exchange, on both sides.
    pub handshake_timeout_ms: u64,
    /// Inbound connections allowed to be in the handshake at once; more are closed.
    pub max_pending_handshakes: usize,
    /// Set TCP_NODELAY on peer sockets (the writer batches by itself).
    pub tcp_nodelay: bool,
    /// A file of `HOST:PORT ADDR:PORT` lines consulted before DNS at every dial
    /// (see [`super::hosts`]). `None`: DNS only.
    pub hosts_file: Option<std::path::PathBuf>,
}

/// Largest accepted cluster name, in bytes.
pub const MAX_CLUSTER_NAME_BYTES: usize = 255;

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            my_id: 1,
            cluster_name: "keeper".to_string(),
            listen_addr: "127.0.0.1:7888".to_string(),
            peers: BTreeMap::new(),
            max_frame_bytes: 16 * 1024 * 1024,
            peer_send_queue_frames: 8192,
            peer_event_queue: 8192,
            write_batch_max_bytes: 256 * 1024,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 1000,
            connect_timeout_ms: 1000,
            handshake_timeout_ms: 2000,
            max_pending_handshakes: 64,
            tcp_nodelay: true,
            hosts_file: None,
        }
    }
}

impl PeerConfig {
    /// Checks every field; `PeerNetwork::start` refuses a config that fails this.
    pub fn validate(&self) -> Result<(), PeerError> {
        let bad = |msg: String| Err(PeerError::Config(msg));
        if self.cluster_name.is_empty() || self.cluster_name.len() > MAX_CLUSTER_NAME_BYTES {
            return bad(format!(
                "cluster_name must be 1..={MAX_CLUSTER_NAME_BYTES} bytes"
            ));
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > u32::MAX as usize {
            return bad(format!(
                "max_frame_bytes must be in 1024..={}, got {}",
                u32::MAX,
                self.max_frame_bytes
            ));
        }
        for (name, v) in [
            ("peer_send_queue_frames", self.peer_send_queue_frames),
            ("peer_event_queue", self.peer_event_queue),
            ("write_batch_max_bytes", self.write_batch_max_bytes),
            ("max_pending_handshakes", self.max_pending_handshakes),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0"));
            }
        }
        for (name, v) in [
            ("reconnect_backoff_min_ms", self.reconnect_backoff_min_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0"));
            }
        }
        if self.reconnect_backoff_max_ms < self.reconnect_backoff_min_ms {
            return bad("reconnect_backoff_max_ms must be >= reconnect_backoff_min_ms".into());
        }
        for (id, addr) in &self.peers {
            if addr.is_empty() {
                return bad(format!("peer {id} has an empty address"));
            }
        }
        Ok(())
    }

    pub(crate) fn backoff_min(&self) -> Duration {
        Duration::from_millis(self.reconnect_backoff_min_ms)
    }
    pub(crate) fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_backoff_max_ms)
    }
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(PeerConfig::default().validate().is_ok());
        assert_eq!(PeerConfig::default().reconnect_backoff_min_ms, 50);
        assert_eq!(PeerConfig::default().reconnect_backoff_max_ms, 1000);
    }

    #[test]
    fn rejects_bad_values() {
        let cases: Vec<fn(&mut PeerConfig)> = vec![
            |c| c.cluster_name.clear(),
            |c| c.max_frame_bytes = 10,
            |c| c.peer_send_queue_frames = 0,
            |c| c.peer_event_queue = 0,
            |c| c.reconnect_backoff_min_ms = 0,
            |c| c.reconnect_backoff_max_ms = 10,
            |c| c.connect_timeout_ms = 0,
            |c| {
                c.peers.insert(2, String::new());
            },
        ];
        for (i, f) in cases.into_iter().enumerate() {
            let mut c = PeerConfig::default();
            f(&mut c);
            assert!(c.validate().is_err(), "case {i} should be rejected");
        }
    }
}
