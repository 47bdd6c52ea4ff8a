//! Key layout of the column families. Everything that turns a path, a zxid or
//! a session id into RocksDB key bytes (and back) lives here.
//!
//! Node keys: the path with its LAST `/` replaced by a NUL byte (`/a/b` ->
//! `/a\0b`, `/a` -> `\0a`), and the root is the empty key. Paths contain no NUL,
//! so the first NUL of a key separates the parent path from the child name and
//! every child of `P` starts with `children_prefix(P)` (`P\0`, or `\0` for the
//! root): listing children is a prefix scan, sorted bytewise by child name.

use crate::StoreError;

/// The transaction log of stores written before the log moved to segment
/// files (`wal`): big-endian zxid -> encoded `Entry`. Moved out at open.
pub(crate) const CF_LOG: &str = "log";
/// The znode tree: node key -> encoded `NodeRecord`.
pub(crate) const CF_NODES: &str = "nodes";
/// Live sessions: big-endian session id -> big-endian timeout_ms.
pub(crate) const CF_SESSIONS: &str = "sessions";
/// Ephemeral-owner index: big-endian session id ++ path -> empty.
pub(crate) const CF_EPHEMERALS: &str = "ephemerals";
/// Reap index: big-endian due time (ms) ++ path -> big-endian czxid. Holds the
/// containers and ttl nodes that have no children (and, for containers, had one).
pub(crate) const CF_REAP: &str = "reap";
/// Store metadata (last applied zxid, log floor, ZAB epochs).
pub(crate) const CF_META: &str = "meta";
/// The change history that watch streams replay: [`change_key`] (big-endian
/// zxid ++ big-endian index of the change within its entry) -> encoded
/// `ChangeEvent`. Written in the same batch as the tree, compacted with the log.
pub(crate) const CF_CHANGES: &str = "changes";

pub(crate) const ALL_CFS: [&str; 7] = [
    CF_LOG,
    CF_NODES,
    CF_SESSIONS,
    CF_EPHEMERALS,
    CF_REAP,
    CF_META,
    CF_CHANGES,
];

/// meta: big-endian u64, the zxid of the last applied entry.
pub(crate) const META_LAST_APPLIED: &[u8] = b"last_applied";
/// meta: big-endian u64, the highest zxid ever removed by compaction.
pub(crate) const META_LOG_FLOOR: &[u8] = b"log_floor";
/// meta: big-endian u64, log segments numbered below it were replaced by an
/// installed snapshot and are deleted when the store opens.
pub(crate) const META_LOG_VOID_BELOW: &[u8] = b"log_void_below";
/// meta: big-endian u64, every change with a zxid above it is in `CF_CHANGES`
/// (the changes at or below it were compacted away or predate a snapshot).
pub(crate) const META_CHANGES_FLOOR: &[u8] = b"changes_floor";
/// meta: big-endian u32 accepted epoch ++ big-endian u32 current epoch.
pub(crate) const META_ZAB: &[u8] = b"zab";

/// The key of a (valid) path in `CF_NODES`.
pub(crate) fn node_key(path: &str) -> Vec<u8> {
    if path == "/" {
        return Vec::new();
    }
    let mut key = path.as_bytes().to_vec();
    if let Some(slash) = path.rfind('/') {
        key[slash] = 0;
    }
    key
}

/// The common prefix of the keys of all children of `path` (the layout
/// keeps a node's children together; listings are served from memory).
#[cfg(test)]
pub(crate) fn children_prefix(path: &str) -> Vec<u8> {
    let mut prefix = if path == "/" {
        Vec::new()
    } else {
        path.as_bytes().to_vec()
    };
    prefix.push(0);
    prefix
}

/// The exclusive upper bound of a prefix that ends in a NUL byte.
#[cfg(test)]
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The path of a node key (inverse of [`node_key`]).
pub(crate) fn key_path(key: &[u8]) -> Result<String, StoreError> {
    if key.is_empty() {
        return Ok("/".to_string());
    }
    let sep = key
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| StoreError::Corrupt {
            what: "node key",
            detail: format!("no separator in {key:?}"),
        })?;
    let mut bytes = Vec::with_capacity(key.len() + 1);
    if sep > 0 {
        bytes.extend_from_slice(&key[..sep]);
    }
    bytes.push(b'/');
    bytes.extend_from_slice(&key[sep + 1..]);
    String::from_utf8(bytes).map_err(|e| StoreError::Corrupt {
        what: "node key",
        detail: e.to_string(),
    })
}

pub(crate) fn u64_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Decodes a big-endian u64 (a key or a value); `what` names the record for errors.
pub(crate) fn decode_u64(bytes: &[u8], what: &'static str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("expected 8 bytes, got {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// The `CF_CHANGES` key of the `index`th change made by the entry at `zxid`.
pub(crate) fn change_key(zxid: u64, index: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&zxid.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The ephemeral-index key of (`session`, `path`).
pub(crate) fn ephemeral_key(session: u64, path: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + path.len());
    key.extend_from_slice(&session.to_be_bytes());
    key.extend_from_slice(path.as_bytes());
    key
}

/// The reap-index key of a node due at `due_ms`.
pub(crate) fn reap_key(due_ms: u64, path: &str) -> Vec<u8> {
    ephemeral_key(due_ms, path)
}

/// Splits an index key made by [`ephemeral_key`] / [`reap_key`].
pub(crate) fn split_index_key(key: &[u8], what: &'static str) -> Result<(u64, String), StoreError> {
    if key.len() < 8 {
        return Err(StoreError::Corrupt {
            what,
            detail: format!("key of {} bytes", key.len()),
        });
    }
    let (head, tail) = key.split_at(8);
    let n = decode_u64(head, what)?;
    let path = std::str::from_utf8(tail).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })?;
    Ok((n, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_round_trip_and_children_share_a_prefix() {
        for p in ["/", "/a", "/a/b", "/ab/c/d"] {
            assert_eq!(key_path(&node_key(p)).unwrap(), p);
        }
        assert_eq!(node_key("/a/b"), b"/a\0b".to_vec());
        assert!(node_key("/a").starts_with(&children_prefix("/")));
        assert!(node_key("/a/b").starts_with(&children_prefix("/a")));
        // A grandchild and a sibling with a longer name are not children.
        assert!(!node_key("/a/b/c").starts_with(&children_prefix("/a")));
        assert!(!node_key("/ab/c").starts_with(&children_prefix("/a")));
        assert_eq!(prefix_end(&children_prefix("/a")), b"/a\x01".to_vec());
    }

    #[test]
    fn corrupt_keys_are_errors() {
        assert!(key_path(b"abc").is_err());
        assert!(key_path(b"\0\xff").is_err());
        assert!(decode_u64(b"short", "x").is_err());
        assert!(split_index_key(b"1234", "x").is_err());
    }
}
