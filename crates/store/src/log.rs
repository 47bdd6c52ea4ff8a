//! The transaction log (segment files, see `wal`) and the durable ZAB
//! epochs. The server's driver appends proposals here (fsynced,
//! group-committed by the caller's batching) before acknowledging them;
//! apply reads nothing from here.
//!
//! `last_logged` is the highest zxid in the log, or, when the log is empty,
//! the highest of the compaction floor (the highest zxid ever compacted away,
//! kept in meta) and `last_applied` (a snapshot's zxid).

use crate::keys::{decode_u64, u64_key, CF_LOG, CF_META, META_LOG_FLOOR, META_ZAB};
use crate::{Store, StoreError, ZabMeta};
use keeper_zab::Zxid;
use rocksdb::{WriteBatch, WriteOptions};
use std::sync::atomic::Ordering;

impl Store {
    /// Appends encoded entries (ascending zxids, above `last_logged`) with
    /// ONE write, fsynced when `sync_log` (group commit: the caller passes
    /// everything that is waiting). Returns after the data is durable.
    pub fn append_log<B: AsRef<[u8]>>(&self, entries: &[(Zxid, B)]) -> Result<(), StoreError> {
        self.append_log_unsynced(entries)?;
        self.sync_wal()
    }

    /// Appends like [`Store::append_log`] but without writing to disk: the
    /// entries are visible to `read_log` at once and become durable with
    /// the next [`Store::sync_wal`]. The ZAB driver appends this way and
    /// group-commits with one `sync_wal` for everything appended meanwhile.
    /// A crash loses a suffix of unsynced entries, never a hole.
    pub fn append_log_unsynced<B: AsRef<[u8]>>(
        &self,
        entries: &[(Zxid, B)],
    ) -> Result<(), StoreError> {
        let Some((last, _)) = entries.last() else {
            return Ok(());
        };
        let _guard = self.lock_log();
        self.wal
            .append(entries.iter().map(|(z, b)| (z.0, b.as_ref())))?;
        self.last_logged.store(last.0, Ordering::Release);
        Ok(())
    }

    /// Makes every log entry appended so far durable (one write and, when
    /// `sync_log`, one fsync). May run while appends go on.
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        self.wal.sync()
    }

    /// Highest zxid in the log (or the snapshot's zxid if the log is empty).
    pub fn last_logged(&self) -> Zxid {
        Zxid(self.last_logged.load(Ordering::Acquire))
    }

    /// Lowest zxid still in the log, if any (older ones are compacted away).
    pub fn first_logged(&self) -> Option<Zxid> {
        self.wal.first().map(Zxid)
    }

    /// Log entries with zxid > `after`, ascending, at most `limit` of them.
    pub fn read_log(&self, after: Zxid, limit: usize) -> Result<Vec<(Zxid, Vec<u8>)>, StoreError> {
        self.read_log_within(after, limit, usize::MAX)
    }

    /// [`Store::read_log`], and no more than `max_bytes` in all, counted as
    /// [`keeper_zab::wire_bytes`] of each payload, except that the first
    /// entry is returned whatever its size.
    pub fn read_log_within(
        &self,
        after: Zxid,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Zxid, Vec<u8>)>, StoreError> {
        Ok(self
            .wal
            .read(after.0, limit, max_bytes)?
            .into_iter()
            .map(|(z, v)| (Zxid(z), v))
            .collect())
    }

    /// Removes every log entry with zxid > `zxid` (ZAB TRUNC), durably.
    pub fn truncate_log_after(&self, zxid: Zxid) -> Result<(), StoreError> {
        let _guard = self.lock_log();
        // The floor comes down first: a crash in between leaves the log as
        // it was (the leader truncates it again), never a floor above it.
        if self.log_floor()? > zxid.0 {
            self.put_meta_synced(META_LOG_FLOOR, zxid.0)?;
        }
        self.wal.truncate_after(zxid.0)?;
        self.last_logged
            .store(self.compute_last_logged()?, Ordering::Release);
        Ok(())
    }

    /// Removes log entries with zxid < `zxid` (compaction behind a snapshot),
    /// in whole segments: what remains may start lower. The highest removed
    /// zxid is kept in meta, so `last_logged` survives compacting everything.
    /// Never removes an entry above [`Store::durable_applied`] (the store may
    /// need it again after a crash): the cut is lowered to that. Returns the
    /// cut used.
    pub fn compact_log_before(&self, zxid: Zxid) -> Result<Zxid, StoreError> {
        let _guard = self.lock_log();
        let durable = self.durable_applied();
        let zxid = if zxid.0 > durable.0.saturating_add(1) {
            Zxid(durable.0.saturating_add(1))
        } else {
            zxid
        };
        if zxid.0 == 0 {
            return Ok(zxid);
        }
        let floor = self.log_floor()?;
        // The floor is durable before any segment goes (see `Wal::compact_before`).
        let removed = self.wal.compact_before(zxid.0, |removed_max| {
            if removed_max > floor {
                self.put_meta_synced(META_LOG_FLOOR, removed_max)?;
            }
            Ok(())
        })?;
        let Some(removed_max) = removed else {
            return Ok(zxid);
        };
        // The change history is kept exactly as long as the log.
        self.compact_changes_through(removed_max)?;
        self.last_logged
            .store(self.compute_last_logged()?, Ordering::Release);
        Ok(zxid)
    }

    /// Stores written before the log moved to segment files kept it in the
    /// `log` column family: move those entries to the segments (once, at open).
    pub(crate) fn move_log_out_of_rocksdb(&self) -> Result<(), StoreError> {
        if self.first_rocks_log_key()?.is_none() {
            return Ok(());
        }
        let cf = self.cf(CF_LOG)?;
        let after = self.wal.last().unwrap_or(0);
        let mut moved = 0usize;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let zxid = decode_u64(key, "log key")?;
            if zxid > after {
                self.wal.append([(zxid, value)])?;
                moved += 1;
            }
            it.next();
        }
        it.status()?;
        drop(it);
        self.wal.sync()?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, u64_key(0), u64_key(u64::MAX));
        batch.delete_cf(cf, u64_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        tracing::info!(
            entries = moved,
            "moved the log out of RocksDB into segment files"
        );
        Ok(())
    }

    fn first_rocks_log_key(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_LOG)?);
        it.seek_to_first();
        let key = it.key().map(|k| k.to_vec());
        it.status()?;
        Ok(key)
    }

    /// The durable ZAB epochs (zero in a fresh store).
    pub fn zab_meta(&self) -> ZabMeta {
        *self.zab.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persists the epochs with fsync before returning.
    pub fn set_zab_meta(&self, meta: ZabMeta) -> Result<(), StoreError> {
        let mut guard = self.zab.lock().unwrap_or_else(|p| p.into_inner());
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&meta.accepted_epoch.to_be_bytes());
        value[4..].copy_from_slice(&meta.current_epoch.to_be_bytes());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, META_ZAB, value);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        *guard = meta;
        Ok(())
    }

    pub(crate) fn read_zab_meta(&self) -> Result<ZabMeta, StoreError> {
        match self.db.get_pinned_cf(self.cf(CF_META)?, META_ZAB)? {
            None => Ok(ZabMeta::default()),
            Some(v) => {
                let v = decode_u64(&v, "zab meta")?;
                Ok(ZabMeta {
                    accepted_epoch: (v >> 32) as u32,
                    current_epoch: v as u32,
                })
            }
        }
    }

    /// Writes one meta value through RocksDB's WAL with fsync: durable when
    /// this returns (applies skip the WAL, so an unsynced write could be
    /// lost by a power failure even after later writes are on disk).
    fn put_meta_synced(&self, key: &[u8], value: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, key, u64_key(value));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    pub(crate) fn log_floor(&self) -> Result<u64, StoreError> {
        match self.db.get_pinned_cf(self.cf(CF_META)?, META_LOG_FLOOR)? {
            None => Ok(0),
            Some(v) => decode_u64(&v, "log floor"),
        }
    }

    /// See the module docs.
    pub(crate) fn compute_last_logged(&self) -> Result<u64, StoreError> {
        if let Some(last) = self.wal.last() {
            return Ok(last);
        }
        Ok(self
            .log_floor()?
            .max(self.last_applied.load(Ordering::Acquire)))
    }

    fn lock_log(&self) -> std::sync::MutexGuard<'_, ()> {
        self.log_lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use crate::crash_test::{as_crashing_child, crash_in_child};
    use crate::keys::{u64_key, CF_LOG};
    use crate::{Entry, Store, StoreConfig, Txn};
    use keeper_zab::Zxid;

    fn small_segments() -> StoreConfig {
        StoreConfig {
            log_segment_bytes: 100,
            ..StoreConfig::default()
        }
    }

    /// Issue 9, problem 9: compaction wrote the log floor with an unsynced
    /// RocksDB write (and after unlinking the segments it covers).
    #[test]
    fn compaction_writes_the_log_floor_synced_and_it_survives_a_crash() {
        as_crashing_child(|sdir| {
            let store = Store::open(sdir, small_segments()).unwrap();
            let noop = Entry {
                time_ms: 1,
                txn: Txn::Noop,
            }
            .encode();
            for z in 1..=20u64 {
                store.append_log(&[(Zxid(z), noop.clone())]).unwrap();
                store
                    .apply(Zxid(z), &Entry::decode(&noop).unwrap())
                    .unwrap();
            }
            store.flush_tree().unwrap();
            let syncs = store.wal_syncs();
            store.compact_log_before(Zxid(15)).unwrap();
            assert_eq!(store.wal_syncs(), syncs + 1, "the floor write is synced");
            let floor = store.log_floor().unwrap();
            assert!(floor > 0 && floor < 15, "floor {floor}");
            assert_eq!(store.first_logged(), Some(Zxid(floor + 1)));
            std::fs::write(sdir.with_extension("floor"), floor.to_string()).unwrap();
            store
        });
        let dir = tempfile::tempdir().unwrap();
        let sdir = dir.path().join("s");
        crash_in_child(
            "log::tests::compaction_writes_the_log_floor_synced_and_it_survives_a_crash",
            &sdir,
        );
        let floor: u64 = std::fs::read_to_string(sdir.with_extension("floor"))
            .unwrap()
            .parse()
            .unwrap();
        let store = Store::open(&sdir, small_segments()).unwrap();
        assert_eq!(store.log_floor().unwrap(), floor);
        assert_eq!(store.first_logged(), Some(Zxid(floor + 1)));
        assert_eq!(store.last_logged(), Zxid(20));
    }

    #[test]
    fn a_log_left_in_rocksdb_by_an_older_version_moves_to_segments_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let cf = store.cf(CF_LOG).unwrap();
        for z in 1..=3u64 {
            store.db.put_cf(cf, u64_key(z), [z as u8; 3]).unwrap();
        }
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let want: Vec<(Zxid, Vec<u8>)> = (1..=3u64).map(|z| (Zxid(z), vec![z as u8; 3])).collect();
        assert_eq!(store.read_log(Zxid::ZERO, 10).unwrap(), want);
        assert_eq!(store.last_logged(), Zxid(3));
        assert!(store.first_rocks_log_key().unwrap().is_none());
        store.append_log(&[(Zxid(4), vec![4])]).unwrap();
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        assert_eq!(store.read_log(Zxid(2), 10).unwrap().len(), 2);
        assert_eq!(store.last_logged(), Zxid(4));
    }
}
