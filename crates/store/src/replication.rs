//! What replication needs from the store beyond apply: log queries for the
//! ZAB core's `LogReader` (the server's driver wraps these), and installing a
//! leader's snapshot in place (ZAB SNAP catch-up).
//!
//! Installing in place (rather than swapping the data directory) keeps the
//! live `Store` that readers hold valid: one synced write batch replaces the
//! tree, the sessions and their indexes (range deletions over each whole
//! column family, then the snapshot's keys), sets `last_applied` to the
//! snapshot's zxid, empties the log and sets its floor to that zxid. Readers
//! see either the old state or the new one, never a mix; a crash leaves one
//! of the two, whatever of the old state was only in memtables (applies skip
//! the WAL). The member's own ZAB epochs are kept.

use crate::keys::{
    decode_u64, u64_key, ALL_CFS, CF_CHANGES, CF_LOG, CF_META, CF_NODES, CF_SESSIONS,
    META_LAST_APPLIED, META_LOG_FLOOR, META_LOG_VOID_BELOW,
};
use crate::mem::MemTree;
use crate::{SessionId, SessionInfo};
use crate::{Store, StoreError};
use keeper_zab::Zxid;
use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use std::path::Path;
use std::sync::atomic::Ordering;

/// Every key of the column families an install replaces sorts below this:
/// node keys are UTF-8 paths (no 0xFF byte); session and log keys are 8
/// bytes (a prefix of it at most); index keys are 8 bytes then a path,
/// whose first byte is `/`.
const KEYS_END: [u8; 9] = [0xFF; 9];

impl Store {
    /// One live session, if it exists (a follower answers keepalives from this).
    pub fn session(&self, id: SessionId) -> Result<Option<SessionInfo>, StoreError> {
        match self.db.get_pinned_cf(self.cf(CF_SESSIONS)?, u64_key(id))? {
            Some(v) => Ok(Some(SessionInfo {
                id,
                timeout_ms: decode_u64(&v, "session timeout")?,
            })),
            None => Ok(None),
        }
    }

    /// The log's floor: every zxid at or below it has been compacted away or
    /// replaced by an installed snapshot (`Zxid::ZERO` if none).
    pub fn log_floor_zxid(&self) -> Result<Zxid, StoreError> {
        self.log_floor().map(Zxid)
    }

    /// Whether the log holds an entry at exactly `zxid`.
    pub fn log_contains(&self, zxid: Zxid) -> Result<bool, StoreError> {
        Ok(self.wal.at_or_below(zxid.0) == Some(zxid.0))
    }

    /// The largest logged zxid `<= zxid`, if any entry at or below it is retained.
    pub fn log_entry_at_or_below(&self, zxid: Zxid) -> Result<Option<Zxid>, StoreError> {
        Ok(self.wal.at_or_below(zxid.0).map(Zxid))
    }

    /// Replaces this store's tree, sessions and indexes with those of the
    /// checkpoint in `checkpoint_dir` (written by [`Store::checkpoint`] on the
    /// leader), in one synced batch. Afterwards `last_applied` is the
    /// checkpoint's, the log is empty and its floor is that zxid. The caller
    /// must make sure no `apply` runs concurrently (the applier is drained).
    /// Returns the snapshot's zxid.
    pub fn install_snapshot(&self, checkpoint_dir: &Path) -> Result<Zxid, StoreError> {
        let snap = DB::open_cf_for_read_only(&Options::default(), checkpoint_dir, ALL_CFS, false)?;
        let snap_meta = snap
            .cf_handle(CF_META)
            .ok_or_else(|| StoreError::Rocks("snapshot lacks the meta column family".into()))?;
        let zxid = match snap.get_pinned_cf(snap_meta, META_LAST_APPLIED)? {
            Some(v) => decode_u64(&v, "snapshot last_applied")?,
            None => {
                return Err(StoreError::Corrupt {
                    what: "snapshot",
                    detail: "no last_applied".into(),
                })
            }
        };
        let _apply = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _log = self.log_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        for name in ALL_CFS {
            if name == CF_META {
                continue;
            }
            if name == CF_CHANGES {
                // The history restarts at the snapshot (the leader's may
                // reach further back, but copying it is not worth the time).
                self.reset_changes(&mut batch, zxid)?;
                continue;
            }
            let live = self.cf(name)?;
            // Delete by range over the whole column family, not key by key
            // from what an iterator sees: applies skip RocksDB's WAL, so a
            // key deleted since the last flush is hidden by a tombstone that
            // lives only in the memtable. A crash loses that tombstone, the
            // key comes back from the table files, and only a range
            // tombstone in this (WAL-synced) batch still covers it.
            let everything: (&[u8], &[u8]) = (&[], &KEYS_END);
            batch.delete_range_cf(live, everything.0, everything.1);
            // No key of ours sorts at or after KEYS_END (see its docs);
            // should one exist, it goes too.
            let mut it = self.db.raw_iterator_cf(live);
            it.seek(KEYS_END);
            while let Some(key) = it.key() {
                batch.delete_cf(live, key);
                it.next();
            }
            it.status()?;
            if name == CF_LOG {
                continue; // the leader's log (and its uncommitted tail) is not ours
            }
            let from = snap
                .cf_handle(name)
                .ok_or_else(|| StoreError::Rocks(format!("snapshot lacks column family {name}")))?;
            let mut it = snap.raw_iterator_cf(from);
            it.seek_to_first();
            while let (Some(key), Some(value)) = (it.key(), it.value()) {
                batch.put_cf(live, key, value);
                it.next();
            }
            it.status()?;
        }
        let meta = self.cf(CF_META)?;
        batch.put_cf(meta, META_LAST_APPLIED, u64_key(zxid));
        batch.put_cf(meta, META_LOG_FLOOR, u64_key(zxid));
        // The log's segments go with the old state: the batch voids them,
        // so a crash before `reset` below cannot bring them back.
        let void_below = self.wal.next_seq();
        batch.put_cf(meta, META_LOG_VOID_BELOW, u64_key(void_below));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut mem = self.mem_write();
        self.db.write_opt(batch, &opts)?;
        *mem = MemTree::load(&self.db, self.cf(CF_NODES)?, zxid)?;
        drop(mem);
        self.wal.reset(void_below)?;
        self.last_applied.store(zxid, Ordering::Release);
        self.durable_applied.store(zxid, Ordering::Release);
        self.last_logged.store(zxid, Ordering::Release);
        Ok(Zxid(zxid))
    }
}

#[cfg(test)]
mod tests {
    use crate::crash_test::{as_crashing_child, crash_in_child};
    use crate::{Entry, NodeMode, Op, Store, StoreConfig, Txn};
    use bytes::Bytes;
    use keeper_zab::Zxid;

    fn create(path: &str, data: &str) -> Entry {
        Entry {
            time_ms: 1,
            txn: Txn::Op(Op::Create {
                path: path.into(),
                data: Bytes::from(data.to_string()),
                mode: NodeMode::Persistent,
                session: 0,
                ttl_ms: None,
            }),
        }
    }

    fn delete(path: &str) -> Entry {
        Entry {
            time_ms: 1,
            txn: Txn::Op(Op::Delete {
                path: path.into(),
                version: -1,
            }),
        }
    }

    /// A crashed child really loses what applies wrote since the last flush
    /// (otherwise the test below could not fail).
    #[test]
    fn a_crashed_child_loses_unflushed_applies() {
        as_crashing_child(|sdir| {
            let store = Store::open(sdir, StoreConfig::default()).unwrap();
            store.apply(Zxid::new(1, 1), &create("/a", "x")).unwrap();
            store.flush_tree().unwrap();
            store.apply(Zxid::new(1, 2), &create("/b", "y")).unwrap();
            assert!(store.get("/b").unwrap().is_some());
            store
        });
        let dir = tempfile::tempdir().unwrap();
        let sdir = dir.path().join("s");
        crash_in_child(
            "replication::tests::a_crashed_child_loses_unflushed_applies",
            &sdir,
        );
        let store = Store::open(&sdir, StoreConfig::default()).unwrap();
        assert_eq!(store.last_applied(), Zxid::new(1, 1));
        assert!(store.get("/a").unwrap().is_some());
        assert!(store.get("/b").unwrap().is_none());
    }

    /// Issue 9, problem 2: a key deleted since the last flush (its tombstone
    /// only in the memtable, applies skip the WAL) came back after a snapshot
    /// install and a crash, under the snapshot's `last_applied`.
    #[test]
    fn snapshot_install_then_crash_never_brings_deleted_keys_back() {
        // The follower: "/gone" is in a table file, its delete only in a
        // memtable when the leader's snapshot (without it) is installed.
        as_crashing_child(|fdir| {
            let follower = Store::open(fdir, StoreConfig::default()).unwrap();
            follower
                .apply(Zxid::new(1, 1), &create("/gone", "old"))
                .unwrap();
            follower.flush_tree().unwrap();
            follower.apply(Zxid::new(1, 2), &delete("/gone")).unwrap();
            assert!(follower.get("/gone").unwrap().is_none());
            let cp = fdir.with_file_name("cp");
            assert_eq!(follower.install_snapshot(&cp).unwrap(), Zxid::new(1, 5));
            assert!(follower.get("/gone").unwrap().is_none());
            follower
        });
        let dir = tempfile::tempdir().unwrap();
        let leader = Store::open(&dir.path().join("leader"), StoreConfig::default()).unwrap();
        for i in 1..=5u32 {
            leader
                .apply(Zxid::new(1, i), &create(&format!("/n{i}"), "v"))
                .unwrap();
        }
        assert_eq!(
            leader.checkpoint(&dir.path().join("cp")).unwrap(),
            Zxid::new(1, 5)
        );
        let fdir = dir.path().join("f");
        crash_in_child(
            "replication::tests::snapshot_install_then_crash_never_brings_deleted_keys_back",
            &fdir,
        );
        let follower = Store::open(&fdir, StoreConfig::default()).unwrap();
        assert_eq!(follower.last_applied(), Zxid::new(1, 5));
        assert!(
            follower.get("/gone").unwrap().is_none(),
            "a deleted key came back after install and crash"
        );
        assert_eq!(
            follower.tree_digest().unwrap(),
            leader.tree_digest().unwrap()
        );
    }

    /// Keys at the edges of every key space (the largest session id, its
    /// ephemerals) are replaced by an install too.
    #[test]
    fn snapshot_install_replaces_keys_at_the_end_of_every_key_space() {
        use crate::keys::{u64_key, CF_EPHEMERALS, CF_REAP, CF_SESSIONS};
        let dir = tempfile::tempdir().unwrap();
        let leader = Store::open(&dir.path().join("leader"), StoreConfig::default()).unwrap();
        leader.apply(Zxid::new(1, 1), &create("/a", "x")).unwrap();
        let cp = dir.path().join("cp");
        leader.checkpoint(&cp).unwrap();
        let follower = Store::open(&dir.path().join("f"), StoreConfig::default()).unwrap();
        let mut index_key = u64_key(u64::MAX).to_vec();
        index_key.extend_from_slice("/\u{10FFFF}".as_bytes());
        for (cf, key) in [
            (CF_SESSIONS, u64_key(u64::MAX).to_vec()),
            (CF_EPHEMERALS, index_key.clone()),
            (CF_REAP, index_key.clone()),
            (CF_SESSIONS, vec![0xFF; 12]), // no such key is ever written
        ] {
            follower
                .db
                .put_cf(follower.cf(cf).unwrap(), key, u64_key(1))
                .unwrap();
        }
        follower.install_snapshot(&cp).unwrap();
        assert_eq!(
            follower.tree_digest().unwrap(),
            leader.tree_digest().unwrap()
        );
        for cf in [CF_SESSIONS, CF_EPHEMERALS, CF_REAP] {
            let left: Vec<_> = follower
                .db
                .iterator_cf(follower.cf(cf).unwrap(), rocksdb::IteratorMode::Start)
                .collect();
            assert!(left.is_empty(), "{cf} keeps {} keys", left.len());
        }
    }

    #[test]
    fn installed_snapshot_replaces_tree_and_log_but_keeps_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let leader = Store::open(&dir.path().join("leader"), StoreConfig::default()).unwrap();
        leader.apply(Zxid::new(1, 1), &create("/a", "x")).unwrap();
        leader.apply(Zxid::new(1, 2), &create("/a/b", "y")).unwrap();
        leader
            .append_log(&[(Zxid::new(1, 3), vec![1, 2, 3])])
            .unwrap();
        let cp = dir.path().join("cp");
        assert_eq!(leader.checkpoint(&cp).unwrap(), Zxid::new(1, 2));

        let follower = Store::open(&dir.path().join("f"), StoreConfig::default()).unwrap();
        follower
            .set_zab_meta(crate::ZabMeta {
                accepted_epoch: 7,
                current_epoch: 6,
            })
            .unwrap();
        follower
            .apply(Zxid::new(1, 1), &create("/old", "z"))
            .unwrap();
        follower
            .append_log(&[(Zxid::new(1, 1), vec![9]), (Zxid::new(1, 2), vec![9])])
            .unwrap();

        assert_eq!(follower.install_snapshot(&cp).unwrap(), Zxid::new(1, 2));
        assert_eq!(follower.last_applied(), Zxid::new(1, 2));
        assert_eq!(follower.last_logged(), Zxid::new(1, 2));
        assert_eq!(follower.log_floor_zxid().unwrap(), Zxid::new(1, 2));
        assert!(follower.read_log(Zxid::ZERO, 10).unwrap().is_empty());
        assert!(follower.get("/old").unwrap().is_none());
        assert_eq!(follower.get("/a/b").unwrap().unwrap().0, Bytes::from("y"));
        assert_eq!(
            follower.tree_digest().unwrap(),
            leader.tree_digest().unwrap()
        );
        assert_eq!(follower.zab_meta().accepted_epoch, 7);

        // It survives a reopen.
        drop(follower);
        let follower = Store::open(&dir.path().join("f"), StoreConfig::default()).unwrap();
        assert_eq!(follower.last_applied(), Zxid::new(1, 2));
        assert_eq!(
            follower.tree_digest().unwrap(),
            leader.tree_digest().unwrap()
        );
        follower
            .append_log_unsynced(&[(Zxid::new(2, 1), vec![1])])
            .unwrap();
        follower.sync_wal().unwrap();
        assert!(follower.log_contains(Zxid::new(2, 1)).unwrap());
        assert_eq!(
            follower.log_entry_at_or_below(Zxid::new(2, 5)).unwrap(),
            Some(Zxid::new(2, 1))
        );
        assert_eq!(
            follower.log_entry_at_or_below(Zxid::new(1, 9)).unwrap(),
            None
        );
    }
}
