//! The in-memory copy of the znode tree: every node's record by path.
//!
//! Like ZooKeeper's DataTree, the whole tree lives in memory; RocksDB's
//! `nodes` column family is its durable copy. Point reads (`Store::get`) and
//! every read the state machine makes while applying are served from here,
//! never from RocksDB: a hash lookup and a reference-counted clone of the
//! data instead of a memtable search, a decode and a copy. Listings
//! (`Store::children`), digests and checkpoints still read RocksDB.
//!
//! Only `Store::open` (load), apply (change) and `Store::install_snapshot`
//! (reload) write it, all under the store's apply lock. Each change also
//! moves `applied`, the zxid the map reflects, under the same lock, so a
//! reader gets a record together with a zxid at or above the state it came
//! from (`Store::get_at`).

use crate::keys::key_path;
use crate::record::NodeRecord;
use crate::StoreError;
use rocksdb::{ColumnFamily, IteratorMode, DB};
use std::collections::HashMap;

/// Every znode by path, and the zxid of the last entry reflected.
#[derive(Default)]
pub(crate) struct MemTree {
    nodes: HashMap<Box<str>, NodeRecord>,
    applied: u64,
}

impl MemTree {
    /// Loads every record of the `nodes` column family.
    pub(crate) fn load(db: &DB, cf: &ColumnFamily, applied: u64) -> Result<MemTree, StoreError> {
        let mut nodes = HashMap::new();
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item?;
            nodes.insert(
                key_path(&key)?.into_boxed_str(),
                NodeRecord::decode(&value)?,
            );
        }
        Ok(MemTree { nodes, applied })
    }

    pub(crate) fn get(&self, path: &str) -> Option<&NodeRecord> {
        self.nodes.get(path)
    }

    /// The zxid of the last entry this map reflects.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Applies one entry's node changes (`None` deletes) and records its zxid.
    pub(crate) fn apply(&mut self, zxid: u64, changes: Vec<(String, Option<NodeRecord>)>) {
        for (path, rec) in changes {
            match rec {
                Some(rec) => {
                    self.nodes.insert(path.into_boxed_str(), rec);
                }
                None => {
                    self.nodes.remove(path.as_str());
                }
            }
        }
        self.applied = self.applied.max(zxid);
    }
}
