//! The ZAB core's read-only view of the log ([`keeper_zab::LogReader`]) over
//! the member's RocksDB store.
//!
//! The driver appends entries with `Store::append_log_unsynced` as soon as
//! the core asks (so this view reflects every executed `Append`, durable or
//! not, as the core's contract requires) and makes them durable in the
//! background with one `sync_wal` per group (see `log_sync.rs`).

use bytes::Bytes;
use keeper_store::Store;
use keeper_zab::{Entry, LogError, LogReader, Zxid};

/// `LogReader` over a store.
pub struct StoreLog<'a>(pub &'a Store);

fn err(e: keeper_store::StoreError) -> LogError {
    LogError(e.to_string())
}

impl LogReader for StoreLog<'_> {
    fn last_zxid(&self) -> Result<Zxid, LogError> {
        Ok(self.0.last_logged())
    }

    fn snapshot_zxid(&self) -> Result<Zxid, LogError> {
        // Entries at or below the floor were compacted away or replaced by an
        // installed snapshot. A store that applied entries without logging
        // them (never in a cluster) would report its applied zxid here.
        let floor = self.0.log_floor_zxid().map_err(err)?;
        match self.0.first_logged() {
            Some(_) => Ok(floor),
            None => Ok(floor.max(self.0.last_logged())),
        }
    }

    fn first_retained(&self) -> Result<Option<Zxid>, LogError> {
        Ok(self.0.first_logged())
    }

    fn floor(&self, zxid: Zxid) -> Result<Option<Zxid>, LogError> {
        let snap = self.snapshot_zxid()?;
        if zxid < snap {
            return Ok(None);
        }
        match self.0.log_entry_at_or_below(zxid).map_err(err)? {
            Some(z) if z >= snap => Ok(Some(z)),
            _ => Ok(Some(snap)),
        }
    }

    fn contains(&self, zxid: Zxid) -> Result<bool, LogError> {
        self.0.log_contains(zxid).map_err(err)
    }

    fn entries_after(
        &self,
        after: Zxid,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        let snap = self.snapshot_zxid()?;
        if after < snap {
            return Err(LogError(format!(
                "entries after {after} were compacted (log starts after {snap})"
            )));
        }
        let rows = self
            .0
            .read_log_within(after, max_entries, max_bytes)
            .map_err(err)?;
        Ok(rows
            .into_iter()
            .map(|(zxid, bytes)| Entry {
                zxid,
                data: Bytes::from(bytes),
            })
            .collect())
    }
}
