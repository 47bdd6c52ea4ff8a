//! The in-memory copy of the znode tree: every node's record by path, and
//! every node's children names, sorted.
//!
//! Like ZooKeeper's DataTree, the whole tree lives in memory; RocksDB's
//! `nodes` column family is its durable copy, read only to load this map
//! (open, snapshot install), for digests and for checkpoints. Point reads
//! (`Store::get`), listings (`Store::children`) and every read the state
//! machine makes while applying are served from here: a hash lookup and a
//! reference-counted clone of the data instead of a memtable search, a
//! decode and a copy. Because nothing else reads the `nodes` column family
//! by key, it can use an append-only memtable (see `Store::open`).
//!
//! Only `Store::open` (load), apply (change) and `Store::install_snapshot`
//! (reload) write it, all under the store's apply lock. Each change also
//! moves `applied`, the zxid the map reflects, under the same lock, so a
//! reader gets a record together with a zxid at or above the state it came
//! from (`Store::get_at`).

use crate::keys::key_path;
use crate::path::split_parent;
use crate::record::NodeRecord;
use crate::StoreError;
use rocksdb::{ColumnFamily, IteratorMode, DB};
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

/// Every znode by path, children names by parent, and the zxid of the last
/// entry reflected.
#[derive(Default)]
pub(crate) struct MemTree {
    nodes: HashMap<Box<str>, NodeRecord>,
    /// Names of each node's children, sorted bytewise; no entry: no children.
    children: HashMap<Box<str>, BTreeSet<Box<str>>>,
    applied: u64,
}

impl MemTree {
    /// Loads every record of the `nodes` column family.
    pub(crate) fn load(db: &DB, cf: &ColumnFamily, applied: u64) -> Result<MemTree, StoreError> {
        let mut tree = MemTree {
            applied,
            ..MemTree::default()
        };
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item?;
            tree.insert(key_path(&key)?, NodeRecord::decode(&value)?);
        }
        Ok(tree)
    }

    /// A tree of these records (the simulated disk's `nodes`).
    pub(crate) fn from_records(
        records: impl IntoIterator<Item = (String, NodeRecord)>,
        applied: u64,
    ) -> MemTree {
        let mut tree = MemTree {
            applied,
            ..MemTree::default()
        };
        for (path, rec) in records {
            tree.insert(path, rec);
        }
        tree
    }

    fn insert(&mut self, path: String, rec: NodeRecord) {
        if !self.nodes.contains_key(path.as_str()) {
            if let Some((parent, name)) = split_parent(&path) {
                self.children
                    .entry(parent.into())
                    .or_default()
                    .insert(name.into());
            }
        }
        self.nodes.insert(path.into_boxed_str(), rec);
    }

    fn remove(&mut self, path: &str) {
        if self.nodes.remove(path).is_none() {
            return;
        }
        if let Some((parent, name)) = split_parent(path) {
            if let Some(names) = self.children.get_mut(parent) {
                names.remove(name);
                if names.is_empty() {
                    self.children.remove(parent);
                }
            }
        }
    }

    /// Up to `limit` children names of `path` after `after` (exclusive),
    /// sorted, and whether more follow.
    pub(crate) fn children_page(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let Some(names) = self.children.get(path) else {
            return (Vec::new(), false);
        };
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut range = names.range::<str, _>((start, Bound::Unbounded));
        let page: Vec<String> = range.by_ref().take(limit).map(|n| n.to_string()).collect();
        (page, range.next().is_some())
    }

    /// The first child of `path` (bytewise) for which `keep` holds.
    pub(crate) fn first_child(&self, path: &str, keep: impl Fn(&str) -> bool) -> Option<String> {
        self.children
            .get(path)?
            .iter()
            .find(|name| keep(name))
            .map(|name| name.to_string())
    }

    /// The holder of `scope`'s `name`: its lowest-sequence contender's path
    /// and stat (see `Store::holder`).
    pub(crate) fn holder(
        &self,
        scope: crate::FenceScope,
        name: &str,
        max_path_bytes: usize,
    ) -> Result<Option<(String, crate::Stat)>, crate::TxnError> {
        let dir = scope.dir(name, max_path_bytes)?;
        Ok(self
            .first_child(&dir, crate::is_contender_name)
            .and_then(|child| {
                let path = format!("{dir}/{child}");
                self.get(&path).map(|rec| (path, rec.stat))
            }))
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
                Some(rec) => self.insert(path, rec),
                None => self.remove(&path),
            }
        }
        self.applied = self.applied.max(zxid);
    }
}
