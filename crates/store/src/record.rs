//! The stored form of a znode ([`NodeRecord`]) and the digest functions that
//! `Store::tree_digest` sums. Records are encoded with postcard; decoding never
//! panics (a bad record is `StoreError::Corrupt`).

use crate::{NodeMode, SessionInfo, Stat, StoreError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One znode as stored in the `nodes` column family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub stat: Stat,
    pub mode: NodeMode,
    /// Set only for ttl modes.
    pub ttl_ms: Option<u64>,
    pub data: Bytes,
}

impl NodeRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serializing plain structs, enums and byte strings into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_else(|e| unreachable!("encoding a node record: {e}"))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<NodeRecord, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
            what: "node record",
            detail: e.to_string(),
        })
    }

    /// When this node becomes due for reaping, if it is a reapable node
    /// without children: containers as soon as they have had a child
    /// (cversion > 0), ttl nodes at `mtime + ttl_ms`.
    pub(crate) fn due_ms(&self) -> Option<u64> {
        if self.stat.num_children != 0 {
            return None;
        }
        match self.mode {
            NodeMode::Container if self.stat.cversion > 0 => Some(0),
            NodeMode::Ttl | NodeMode::TtlSequential => {
                self.ttl_ms.map(|ttl| self.stat.mtime.saturating_add(ttl))
            }
            _ => None,
        }
    }
}

/// 64-bit FNV-1a, fixed forever (digests are compared across members and builds).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn blob(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.bytes(bytes);
    }
}

/// The digest of one znode. `Store::tree_digest` is the wrapping sum of the
/// digests of all znodes and all sessions, so it does not depend on the order
/// in which they are visited; a test model can compute the same value.
pub fn node_digest(
    path: &str,
    data: &[u8],
    stat: &Stat,
    mode: NodeMode,
    ttl_ms: Option<u64>,
) -> u64 {
    let mut h = Fnv::new();
    h.u64(1); // record kind: znode
    h.blob(path.as_bytes());
    h.blob(data);
    for v in [stat.czxid, stat.mzxid, stat.pzxid, stat.ctime, stat.mtime] {
        h.u64(v);
    }
    for v in [stat.version, stat.cversion, stat.aversion] {
        h.u64(u64::from(v as u32));
    }
    h.u64(stat.ephemeral_owner);
    h.u64(u64::from(stat.data_length));
    h.u64(u64::from(stat.num_children));
    h.u64(mode as u64);
    h.u64(ttl_ms.map_or(0, |t| t.wrapping_add(1)));
    h.0
}

/// The digest of one session (see [`node_digest`]).
pub fn session_digest(session: &SessionInfo) -> u64 {
    let mut h = Fnv::new();
    h.u64(2); // record kind: session
    h.u64(session.id);
    h.u64(session.timeout_ms);
    h.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_garbage_is_corrupt() {
        let rec = NodeRecord {
            stat: Stat {
                czxid: 5,
                data_length: 3,
                ..Stat::default()
            },
            mode: NodeMode::Ttl,
            ttl_ms: Some(10),
            data: Bytes::from_static(b"\x00\xffz"),
        };
        assert_eq!(NodeRecord::decode(&rec.encode()).unwrap(), rec);
        assert!(matches!(
            NodeRecord::decode(b"\xff\xff\xff"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            NodeRecord::decode(b""),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn digests_see_every_field() {
        let stat = Stat::default();
        let base = node_digest("/a", b"x", &stat, NodeMode::Persistent, None);
        assert_ne!(
            base,
            node_digest("/b", b"x", &stat, NodeMode::Persistent, None)
        );
        assert_ne!(
            base,
            node_digest("/a", b"y", &stat, NodeMode::Persistent, None)
        );
        assert_ne!(
            base,
            node_digest(
                "/a",
                b"x",
                &Stat {
                    cversion: 1,
                    ..stat
                },
                NodeMode::Persistent,
                None
            )
        );
        assert_ne!(
            base,
            node_digest("/a", b"x", &stat, NodeMode::Container, None)
        );
        assert_ne!(
            session_digest(&SessionInfo {
                id: 1,
                timeout_ms: 2
            }),
            session_digest(&SessionInfo {
                id: 1,
                timeout_ms: 3
            })
        );
    }
}
