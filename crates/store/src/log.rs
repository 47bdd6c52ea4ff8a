//! The replicated transaction log (`log` column family, big-endian zxid ->
//! encoded `Entry`) and the durable ZAB epochs. The server's driver appends
//! proposals here (fsynced, group-committed by the caller's batching) before
//! acknowledging them; apply reads nothing from here.
//!
//! `last_logged` is the highest zxid in the log, or, when the log is empty,
//! the highest of the compaction floor (the highest zxid ever compacted away,
//! kept in meta) and `last_applied` (a snapshot's zxid).

use crate::keys::{decode_u64, u64_key, CF_LOG, CF_META, META_LOG_FLOOR, META_ZAB};
use crate::{Store, StoreError, ZabMeta};
use keeper_zab::Zxid;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};
use std::sync::atomic::Ordering;

impl Store {
    /// Appends encoded entries (ascending zxids, above `last_logged`) in ONE
    /// write batch, fsynced when `sync_log` (group commit: the caller passes
    /// everything that is waiting). Returns after the data is durable.
    pub fn append_log<B: AsRef<[u8]>>(&self, entries: &[(Zxid, B)]) -> Result<(), StoreError> {
        self.append_log_opt(entries, self.config.sync_log)
    }

    /// Appends like [`Store::append_log`] but without fsync: the entries are
    /// visible to `read_log` at once and become durable with the next
    /// [`Store::sync_wal`] (or any synced write). The ZAB driver appends this
    /// way and group-commits with one `sync_wal` for everything appended
    /// meanwhile. A crash loses a suffix of unsynced entries, never a hole.
    pub fn append_log_unsynced<B: AsRef<[u8]>>(
        &self,
        entries: &[(Zxid, B)],
    ) -> Result<(), StoreError> {
        self.append_log_opt(entries, false)
    }

    /// Makes every write made so far durable (fsync of RocksDB's WAL).
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        if self.config.sync_log {
            self.db.flush_wal(true)?;
        }
        Ok(())
    }

    fn append_log_opt<B: AsRef<[u8]>>(
        &self,
        entries: &[(Zxid, B)],
        sync: bool,
    ) -> Result<(), StoreError> {
        let Some((last, _)) = entries.last() else {
            return Ok(());
        };
        let _guard = self.lock_log();
        let mut prev = self.last_logged.load(Ordering::Acquire);
        let cf = self.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        for (zxid, bytes) in entries {
            assert!(
                zxid.0 > prev,
                "append_log: zxid {zxid} is not above the previous {}",
                Zxid(prev)
            );
            prev = zxid.0;
            batch.put_cf(cf, u64_key(zxid.0), bytes);
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts)?;
        self.last_logged.store(last.0, Ordering::Release);
        Ok(())
    }

    /// Highest zxid in the log (or the snapshot's zxid if the log is empty).
    pub fn last_logged(&self) -> Zxid {
        Zxid(self.last_logged.load(Ordering::Acquire))
    }

    /// Lowest zxid still in the log, if any (older ones are compacted away).
    pub fn first_logged(&self) -> Option<Zxid> {
        let cf = self.cf(CF_LOG).ok()?;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_to_first();
        let key = it.key()?;
        decode_u64(key, "log key").ok().map(Zxid)
    }

    /// Log entries with zxid > `after`, ascending, at most `limit` of them.
    pub fn read_log(&self, after: Zxid, limit: usize) -> Result<Vec<(Zxid, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let Some(start) = after.0.checked_add(1) else {
            return Ok(out);
        };
        let cf = self.cf(CF_LOG)?;
        let iter = self
            .db
            .iterator_cf(cf, IteratorMode::From(&u64_key(start), Direction::Forward));
        for item in iter.take(limit) {
            let (key, value) = item?;
            out.push((Zxid(decode_u64(&key, "log key")?), value.into_vec()));
        }
        Ok(out)
    }

    /// Removes every log entry with zxid > `zxid` (ZAB TRUNC), durably.
    pub fn truncate_log_after(&self, zxid: Zxid) -> Result<(), StoreError> {
        let _guard = self.lock_log();
        let Some(from) = zxid.0.checked_add(1) else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_LOG)?;
        batch.delete_range_cf(cf, u64_key(from), u64_key(u64::MAX));
        batch.delete_cf(cf, u64_key(u64::MAX));
        let floor = self.log_floor()?;
        if floor > zxid.0 {
            batch.put_cf(self.cf(CF_META)?, META_LOG_FLOOR, u64_key(zxid.0));
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        self.last_logged
            .store(self.compute_last_logged()?, Ordering::Release);
        Ok(())
    }

    /// Removes log entries with zxid < `zxid` (compaction behind a snapshot).
    /// The highest removed zxid is kept in meta, so `last_logged` survives
    /// compacting everything. Never removes an entry above
    /// [`Store::durable_applied`] (the store may need it again after a
    /// crash): the cut is lowered to that. Returns the cut used.
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
        let cf = self.cf(CF_LOG)?;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_for_prev(u64_key(zxid.0 - 1));
        let removed_max = match it.key() {
            Some(key) => decode_u64(key, "log key")?,
            None => {
                it.status()?;
                return Ok(zxid); // nothing below zxid
            }
        };
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, u64_key(0), u64_key(zxid.0));
        if removed_max > self.log_floor()? {
            batch.put_cf(self.cf(CF_META)?, META_LOG_FLOOR, u64_key(removed_max));
        }
        self.db.write(batch)?;
        self.last_logged
            .store(self.compute_last_logged()?, Ordering::Release);
        Ok(zxid)
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

    pub(crate) fn log_floor(&self) -> Result<u64, StoreError> {
        match self.db.get_pinned_cf(self.cf(CF_META)?, META_LOG_FLOOR)? {
            None => Ok(0),
            Some(v) => decode_u64(&v, "log floor"),
        }
    }

    /// See the module docs.
    pub(crate) fn compute_last_logged(&self) -> Result<u64, StoreError> {
        let cf = self.cf(CF_LOG)?;
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        let mut it = self.db.raw_iterator_cf_opt(cf, opts);
        it.seek_to_last();
        if let Some(key) = it.key() {
            return decode_u64(key, "log key");
        }
        it.status()?;
        Ok(self
            .log_floor()?
            .max(self.last_applied.load(Ordering::Acquire)))
    }

    fn lock_log(&self) -> std::sync::MutexGuard<'_, ()> {
        self.log_lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}
