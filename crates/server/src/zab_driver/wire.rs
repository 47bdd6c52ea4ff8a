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
    /// Leader to follower: a snapshot stream starts (a store checkpoint at `zxid`).
    SnapBegin { zxid: Zxid },
    /// One chunk of one checkpoint file, in order.
    SnapChunk { file: String, data: Bytes },
    /// The stream is complete: `files` files, `bytes` bytes in all.
    SnapEnd { zxid: Zxid, files: u32, bytes: u64 },
    /// Leader to followers: I am shutting down (drain); elect a new leader now
    /// rather than after an election timeout.
    Leaving,
}
