//! What members say to each other over the peer links: the ZAB core's
//! messages, plus the server's own traffic (forwarded writes, keepalive
//! batches, snapshot streams). One enum, framed by `crate::peer`.

use crate::sessions::KeepaliveVerdict;
use bytes::Bytes;
use keeper_store::{SessionId, Txn};
use keeper_zab::{Message, Zxid};
use serde::{Deserialize, Serialize};

/// A request id chosen by the forwarding member (unique per member run).
pub type RequestId = u64;

/// One frame's payload on a peer link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerMsg {
    /// A ZAB message for the core.
    Zab(Message),
    /// Follower to leader: propose these txns for me.
    Forward { reqs: Vec<(RequestId, Txn)> },
    /// Leader to follower: the zxid each forwarded txn got, or why it was
    /// refused. Sent after the PROPOSALs it names, on the same FIFO link.
    Forwarded {
        results: Vec<(RequestId, Result<Zxid, String>)>,
    },
    /// Follower to leader: sessions that received a keepalive since the
    /// last batch. The leader answers with `KeepalivesAck` for `batch`.
    Keepalives { batch: u64, ids: Vec<SessionId> },
    /// Leader to follower: the verdict for each session of `batch`, sent
    /// once the leader touched them and then confirmed its leadership with a
    /// quorum round (see "The session contract" in docs/ARCHITECTURE.md).
    KeepalivesAck {
        batch: u64,
        results: Vec<(SessionId, KeepaliveVerdict)>,
    },
    /// Leader to follower: snapshot stream `stream` starts (SNAP catch-up;
    /// see `snapshot.rs`). A newer stream replaces an older one.
    SnapBegin { stream: u64 },
    /// Leader to follower: the stream is alive (the leader is still cutting
    /// the checkpoint, or waits for acks); sent every tick.
    SnapWait { stream: u64 },
    /// One chunk of one checkpoint file, in order.
    SnapChunk {
        stream: u64,
        file: String,
        data: Bytes,
    },
    /// The stream is complete: a checkpoint at `zxid`, `files` files,
    /// `bytes` bytes in all.
    SnapEnd {
        stream: u64,
        zxid: Zxid,
        files: u32,
        bytes: u64,
    },
    /// Follower to leader: `bytes` of the stream are written here (flow
    /// control); repeated every tick while the snapshot installs.
    SnapAck { stream: u64, bytes: u64 },
    /// Leader to followers: I am shutting down (drain); elect a new leader now
    /// rather than after an election timeout.
    Leaving,
}
