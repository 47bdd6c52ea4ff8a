//! The change history: every [`ChangeEvent`] apply made, by zxid, kept as
//! long as the log keeps the entry that made it. Watch streams replay it to
//! resume from a zxid (`from_zxid`) on any member, including one that never
//! served the stream before: every member writes the same history, because
//! apply is deterministic.
//!
//! Apply writes an entry's changes in the same RocksDB batch as the tree
//! (`apply::Overlay::commit`), so a reader sees all of an entry's changes or
//! none, and after a crash the re-applied entries write them again.
//! Compaction (`Store::compact_log_before`) cuts the history where it cuts
//! the log; an installed snapshot starts a new history at its zxid. The
//! floor ([`Store::changes_floor`]) says where the history starts: every
//! change with a zxid above it is here.

use crate::keys::{change_key, decode_u64, u64_key, CF_CHANGES, CF_META, META_CHANGES_FLOOR};
use crate::{ChangeEvent, Store, StoreError};
use keeper_zab::Zxid;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::sync::atomic::Ordering;

/// The stored form of a change.
pub(crate) fn encode_change(event: &ChangeEvent) -> Vec<u8> {
    // Plain structs, strings and bytes into a Vec cannot fail to encode.
    postcard::to_allocvec(event).unwrap_or_else(|e| unreachable!("encoding a change: {e}"))
}

fn decode_change(bytes: &[u8]) -> Result<ChangeEvent, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        what: "change history",
        detail: e.to_string(),
    })
}

/// The history read from a zxid on: see [`Store::read_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangesRead {
    /// Changes of whole entries, ascending zxids, all above the zxid asked for.
    Changes(Vec<ChangeEvent>),
    /// The changes right after the zxid asked for are gone; the history
    /// now starts after `floor` (resume from `floor` or later).
    Compacted { floor: Zxid },
}

impl Store {
    /// Every change with a zxid above this is in the history.
    pub fn changes_floor(&self) -> Zxid {
        Zxid(self.changes_floor.load(Ordering::Acquire))
    }

    /// The changes of the entries after `after`, ascending, in apply order
    /// within an entry: whole entries only, stopping once at least `limit`
    /// changes are collected (an entry is never split). Only applied
    /// entries have changes, so an empty answer means "none after `after`
    /// applied yet". `Compacted` if `after` is below the floor (checked
    /// after reading, so a concurrent compaction is never missed).
    pub fn read_changes(&self, after: Zxid, limit: usize) -> Result<ChangesRead, StoreError> {
        let cf = self.cf(CF_CHANGES)?;
        let Some(start) = after.0.checked_add(1) else {
            return Ok(ChangesRead::Changes(Vec::new()));
        };
        let from = change_key(start, 0);
        let mut out: Vec<ChangeEvent> = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item?;
            let zxid = decode_u64(&key[..key.len().min(8)], "change key")?;
            if out.len() >= limit.max(1) && out.last().is_some_and(|e| e.zxid.0 != zxid) {
                break;
            }
            let event = decode_change(&value)?;
            if event.zxid.0 != zxid {
                return Err(StoreError::Corrupt {
                    what: "change history",
                    detail: format!("key says zxid {zxid}, record {}", event.zxid),
                });
            }
            out.push(event);
        }
        // The floor moves before a compaction deletes anything: read after.
        let floor = self.changes_floor();
        if after < floor {
            return Ok(ChangesRead::Compacted { floor });
        }
        Ok(ChangesRead::Changes(out))
    }

    /// Loads the floor at open. A store without one (fresh, or written
    /// before the history existed) starts its history at `last_applied`.
    pub(crate) fn load_changes_floor(&self, last_applied: u64) -> Result<(), StoreError> {
        let meta = self.cf(CF_META)?;
        let floor = match self.db.get_pinned_cf(meta, META_CHANGES_FLOOR)? {
            Some(v) => decode_u64(&v, "changes floor")?,
            None => {
                self.db
                    .put_cf(meta, META_CHANGES_FLOOR, u64_key(last_applied))?;
                last_applied
            }
        };
        self.changes_floor.store(floor, Ordering::Release);
        Ok(())
    }

    /// Drops the history at and below `zxid` (the log was compacted up to
    /// it). The floor moves first, so a reader never misses the cut.
    pub(crate) fn compact_changes_through(&self, zxid: u64) -> Result<(), StoreError> {
        if zxid <= self.changes_floor.load(Ordering::Acquire) {
            return Ok(());
        }
        self.changes_floor.fetch_max(zxid, Ordering::AcqRel);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, META_CHANGES_FLOOR, u64_key(zxid));
        batch.delete_range_cf(
            self.cf(CF_CHANGES)?,
            change_key(0, 0),
            change_key(zxid.saturating_add(1), 0),
        );
        self.db.write(batch)?;
        Ok(())
    }

    /// Adds to `batch` what replaces the history by an empty one starting
    /// at `zxid` (a snapshot install). The floor moves at once, before the
    /// batch is written, so no reader takes the old history for complete.
    pub(crate) fn reset_changes(
        &self,
        batch: &mut WriteBatch,
        zxid: u64,
    ) -> Result<(), StoreError> {
        self.changes_floor.fetch_max(zxid, Ordering::AcqRel);
        let cf = self.cf(CF_CHANGES)?;
        batch.delete_range_cf(cf, change_key(0, 0), change_key(u64::MAX, u32::MAX));
        batch.delete_cf(cf, change_key(u64::MAX, u32::MAX));
        batch.put_cf(self.cf(CF_META)?, META_CHANGES_FLOOR, u64_key(zxid));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ChangesRead;
    use crate::{ChangeKind, Entry, NodeMode, Op, Store, StoreConfig, Txn};
    use bytes::Bytes;
    use keeper_zab::Zxid;

    fn entry(txn: Txn) -> Entry {
        Entry { time_ms: 1, txn }
    }

    fn create(path: &str) -> Entry {
        entry(Txn::Op(Op::Create {
            path: path.into(),
            data: Bytes::from(format!("d{path}")),
            mode: NodeMode::Persistent,
            session: 0,
            ttl_ms: None,
        }))
    }

    fn changes(read: ChangesRead) -> Vec<(u64, String, ChangeKind)> {
        match read {
            ChangesRead::Changes(c) => c.into_iter().map(|e| (e.zxid.0, e.path, e.kind)).collect(),
            other => panic!("expected changes, got {other:?}"),
        }
    }

    #[test]
    fn history_holds_every_applied_change_in_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        assert_eq!(store.changes_floor(), Zxid::ZERO);
        store.apply(Zxid(1), &create("/a")).unwrap();
        // A failed op makes no change but takes its zxid.
        store.apply(Zxid(2), &create("/a")).unwrap();
        store
            .apply(
                Zxid(3),
                &entry(Txn::Multi(vec![
                    Op::Set {
                        path: "/a".into(),
                        data: Bytes::from("x"),
                        version: -1,
                    },
                    Op::Delete {
                        path: "/a".into(),
                        version: -1,
                    },
                ])),
            )
            .unwrap();
        let all = vec![
            (1, "/a".to_string(), ChangeKind::Created),
            (1, "/".to_string(), ChangeKind::ChildrenChanged),
            (3, "/a".to_string(), ChangeKind::DataChanged),
            (3, "/a".to_string(), ChangeKind::Deleted),
            (3, "/".to_string(), ChangeKind::ChildrenChanged),
        ];
        assert_eq!(changes(store.read_changes(Zxid::ZERO, 100).unwrap()), all);
        // Whole entries only: a limit of 1 still returns both changes of zxid 1.
        assert_eq!(
            changes(store.read_changes(Zxid::ZERO, 1).unwrap()),
            all[..2]
        );
        assert_eq!(changes(store.read_changes(Zxid(1), 1).unwrap()), all[2..]);
        assert!(changes(store.read_changes(Zxid(3), 10).unwrap()).is_empty());
        // Stat and data ride along.
        let ChangesRead::Changes(c) = store.read_changes(Zxid(2), 10).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].data.as_deref(), Some(&b"x"[..]));
        assert_eq!(c[0].stat.map(|s| s.version), Some(1));
        assert_eq!(c[1].stat, None);
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        assert_eq!(changes(store.read_changes(Zxid::ZERO, 100).unwrap()), all);
    }

    #[test]
    fn compaction_cuts_the_history_with_the_log_and_says_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreConfig {
                log_segment_bytes: 1,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        for z in 1..=6u64 {
            let e = create(&format!("/n{z}"));
            store.append_log(&[(Zxid(z), e.encode())]).unwrap();
            store.apply(Zxid(z), &e).unwrap();
        }
        store.flush_tree().unwrap();
        store.compact_log_before(Zxid(4)).unwrap();
        let floor = store.changes_floor();
        assert!(floor >= Zxid(1) && floor < Zxid(4), "floor {floor}");
        assert_eq!(
            store.read_changes(Zxid::ZERO, 100).unwrap(),
            ChangesRead::Compacted { floor }
        );
        let after = changes(store.read_changes(floor, 100).unwrap());
        assert_eq!(after.first().map(|c| c.0), Some(floor.0 + 1));
        assert_eq!(after.last().map(|c| c.0), Some(6));
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        assert_eq!(store.changes_floor(), floor);
    }

    #[test]
    fn an_installed_snapshot_restarts_the_history_at_its_zxid() {
        let dir = tempfile::tempdir().unwrap();
        let leader = Store::open(&dir.path().join("l"), StoreConfig::default()).unwrap();
        for z in 1..=3u64 {
            leader.apply(Zxid(z), &create(&format!("/n{z}"))).unwrap();
        }
        let cp = dir.path().join("cp");
        leader.checkpoint(&cp).unwrap();
        let follower = Store::open(&dir.path().join("f"), StoreConfig::default()).unwrap();
        follower.apply(Zxid(1), &create("/other")).unwrap();
        follower.install_snapshot(&cp).unwrap();
        assert_eq!(follower.changes_floor(), Zxid(3));
        assert_eq!(
            follower.read_changes(Zxid(1), 10).unwrap(),
            ChangesRead::Compacted { floor: Zxid(3) }
        );
        assert!(changes(follower.read_changes(Zxid(3), 10).unwrap()).is_empty());
        follower.apply(Zxid(4), &create("/n4")).unwrap();
        assert_eq!(
            changes(follower.read_changes(Zxid(3), 10).unwrap()).len(),
            2
        );
    }
}
