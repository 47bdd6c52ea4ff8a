//! `keeper-store`: the znode tree and sessions on RocksDB, and the transaction
//! log in segment files beside it (`wal`).
//!
//! Where it sits in the write path: the server's proposer gets an [`Entry`]
//! committed at a zxid (by the single-node log or by ZAB), then calls
//! [`Store::apply`], which computes the deterministic [`TxnOutcome`] and writes
//! the changed znodes together with `last_applied` in one RocksDB batch.
//!
//! Modules: `keys` (column families and key layout), `path` (path rules),
//! `record` (stored znode form, digests), `apply` (the state machine),
//! `log` (the log's API, ZAB epochs), `wal` (the log's segment files),
//! `snapshot` (checkpoints).
//!
//! Column families: `nodes`, `sessions`, `ephemerals` (session -> paths
//! index), `reap` (due time -> container/ttl node index), `meta`, and `log`
//! (empty; stores written before the log moved to `wal` had it there).

mod apply;
mod changes;
#[cfg(test)]
mod crash_test;
mod error;
mod keys;
mod log;
mod mem;
mod path;
mod record;
mod replication;
pub mod sim_disk;
mod snapshot;
mod types;
mod wal;

pub use changes::ChangesRead;
pub use error::StoreError;
pub use path::validate_path;
pub use record::{node_digest, session_digest};
pub use types::*;

use keeper_zab::Zxid;
use keys::{
    decode_u64, key_path, node_key, split_index_key, u64_key, ALL_CFS, CF_EPHEMERALS, CF_LOG,
    CF_META, CF_NODES, CF_REAP, CF_SESSIONS, META_LAST_APPLIED, META_LOG_VOID_BELOW,
};
use mem::MemTree;
use record::NodeRecord;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction,
    IteratorMode, MemtableFactory, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Bounds and options of the store. Every bound has a name and a default.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Largest znode data accepted, in bytes (default 1 MiB).
    pub max_data_bytes: usize,
    /// Longest path accepted, in bytes (default 4096).
    pub max_path_bytes: usize,
    /// Largest page of children returned by one listing (default 10_000).
    pub max_children_page: usize,
    /// fsync the log on append (default true; tests of pure logic may turn it off).
    pub sync_log: bool,
    /// A log segment file takes no more entries once it holds this many
    /// bytes (default 64 MiB); compaction deletes whole segments.
    pub log_segment_bytes: u64,
    /// Size of one RocksDB memtable per column family, in bytes (default
    /// 64 MiB).
    pub memtable_bytes: usize,
}

/// RocksDB block cache shared by all column families, in bytes.
pub const BLOCK_CACHE_BYTES: usize = 32 << 20;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_data_bytes: 1 << 20,
            max_path_bytes: 4096,
            max_children_page: 10_000,
            sync_log: true,
            memtable_bytes: 64 << 20,
            log_segment_bytes: 64 << 20,
        }
    }
}

/// Durable ZAB metadata (see docs/zab.md): persisted with fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZabMeta {
    pub accepted_epoch: u32,
    pub current_epoch: u32,
}

/// One member's storage: RocksDB (column families `nodes`, `sessions`, `meta`
/// and the indexes) and the log's segment files in `<dir>/log`. Cheap to share behind an
/// `Arc`; all methods take `&self` and are safe to call from many threads,
/// except that `apply` calls must be serialized by the caller (one applier).
pub struct Store {
    db: DB,
    /// The options the DB was opened with (they hold its statistics).
    #[cfg(test)]
    db_opts: Options,
    config: StoreConfig,
    last_applied: AtomicU64,
    /// A `last_applied` known to be on disk (applies skip the WAL; see
    /// [`Store::flush_tree`]). The log is never compacted above it.
    durable_applied: AtomicU64,
    last_logged: AtomicU64,
    /// Every change above this zxid is in the change history (`changes`).
    changes_floor: AtomicU64,
    /// The transaction log (segment files in `<dir>/log`).
    wal: wal::Wal,
    /// Serializes log mutations (append, truncate, compact) and `last_logged`.
    log_lock: Mutex<()>,
    /// Held while apply writes its batch and while a checkpoint is cut, so a
    /// checkpoint's `last_applied` is exact.
    apply_lock: Mutex<()>,
    /// The whole tree in memory (see `mem`). Its write lock is held across
    /// each RocksDB write of the tree and the matching map update, so a
    /// reader that takes a RocksDB snapshot under the read lock sees the
    /// same state as the map.
    mem: RwLock<MemTree>,
    zab: Mutex<ZabMeta>,
}

impl Store {
    /// Opens (or creates) the store in `dir`. A fresh store holds only the
    /// root `/` (empty data, all-zero stat) and has `last_applied == 0`.
    /// A directory written by [`Store::checkpoint`] opens the same way.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let mut cf_opts = Options::default();
        cf_opts.set_compression_type(DBCompressionType::None);
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_write_buffer_size(config.memtable_bytes);
        let mut db_opts = cf_opts.clone();
        // Each column family has one writer thread (the log: the driver;
        // the tree: the applier); sequential inserts reuse their skiplist
        // position instead of searching from the top.
        db_opts.set_allow_concurrent_memtable_write(false);
        // Applies skip the WAL (the log is the durable record, see
        // `write_run`): every flush must cut all column families at one
        // point, so that the tree, its indexes and `last_applied` on disk
        // always agree.
        db_opts.set_atomic_flush(true);
        // Flush rather than keep WAL files for a rarely written family.
        db_opts.set_max_total_wal_size(4 * config.memtable_bytes as u64);

        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        // Tests read RocksDB's tickers (e.g. how many WAL syncs a call made).
        #[cfg(test)]
        db_opts.enable_statistics();
        let cfs = ALL_CFS.iter().map(|name| {
            let mut opts = cf_opts.clone();
            if *name == CF_NODES {
                // Only full scans read this column family (the tree is served
                // from memory): an append-only memtable, sorted once at flush,
                // instead of a skiplist search per written node.
                opts.set_memtable_factory(MemtableFactory::Vector);
            }
            ColumnFamilyDescriptor::new(*name, opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs)?;
        let void_below = match db.cf_handle(CF_META) {
            Some(meta) => match db.get_pinned_cf(meta, META_LOG_VOID_BELOW)? {
                Some(v) => decode_u64(&v, "log void_below")?,
                None => 0,
            },
            None => 0,
        };
        let wal = wal::Wal::open(
            &dir.join("log"),
            wal::WalOptions {
                segment_bytes: config.log_segment_bytes,
                sync: config.sync_log,
            },
            void_below,
        )?;
        let store = Store {
            db,
            #[cfg(test)]
            db_opts,
            config,
            last_applied: AtomicU64::new(0),
            durable_applied: AtomicU64::new(0),
            last_logged: AtomicU64::new(0),
            changes_floor: AtomicU64::new(0),
            wal,
            log_lock: Mutex::new(()),
            apply_lock: Mutex::new(()),
            mem: RwLock::new(MemTree::default()),
            zab: Mutex::new(ZabMeta::default()),
        };
        let meta = store.cf(CF_META)?;
        let last_applied = match store.db.get_pinned_cf(meta, META_LAST_APPLIED)? {
            Some(v) => decode_u64(&v, "last_applied")?,
            None => {
                // Fresh store: the root and last_applied = 0, atomically.
                let root = NodeRecord {
                    stat: Stat::default(),
                    mode: NodeMode::Persistent,
                    ttl_ms: None,
                    data: bytes::Bytes::new(),
                };
                let mut batch = WriteBatch::default();
                batch.put_cf(store.cf(CF_NODES)?, node_key("/"), root.encode());
                batch.put_cf(meta, META_LAST_APPLIED, u64_key(0));
                store.db.write(batch)?;
                0
            }
        };
        store.last_applied.store(last_applied, Ordering::Release);
        store.durable_applied.store(last_applied, Ordering::Release);
        store.load_changes_floor(last_applied)?;
        *store.mem_write() = MemTree::load(&store.db, store.cf(CF_NODES)?, last_applied)?;
        store.move_log_out_of_rocksdb()?;
        store
            .last_logged
            .store(store.compute_last_logged()?, Ordering::Release);
        *store.zab.lock().unwrap_or_else(|p| p.into_inner()) = store.read_zab_meta()?;
        tracing::debug!(dir = %dir.display(), last_applied = %Zxid(last_applied),
            last_logged = %store.last_logged(), "store opened");
        Ok(store)
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Rocks(format!("missing column family {name}")))
    }

    // ---- apply (the deterministic state machine) -------------------------

    /// Applies a committed entry. `zxid` must be above `last_applied`.
    /// Deterministic: same tree + same (zxid, entry) => same outcome on every
    /// member. Writes all changed keys and `last_applied = zxid` in one batch
    /// (WAL on, not fsynced: the log is the durable record). A failed op or
    /// multi changes nothing but still consumes the zxid.
    pub fn apply(&self, zxid: Zxid, entry: &Entry) -> Result<Applied, StoreError> {
        let mut applied = self.apply_batch([(zxid, entry)])?;
        applied
            .pop()
            .ok_or_else(|| StoreError::Rocks("apply produced no result".into()))
    }

    /// Applies committed entries in order (ascending zxids above
    /// `last_applied`), exactly as [`Store::apply`] one by one would, with
    /// one RocksDB write for a run of tree entries (ops, multis, reaps,
    /// no-ops) instead of one per entry. Session entries read the session
    /// and ephemeral indexes, so each is written on its own, after the
    /// entries before it. Later entries of a run see earlier ones' nodes.
    pub fn apply_batch<'e>(
        &self,
        entries: impl IntoIterator<Item = (Zxid, &'e Entry)>,
    ) -> Result<Vec<Applied>, StoreError> {
        let _guard = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let last = self.last_applied.load(Ordering::Acquire);
        apply::apply_entries(self, last, entries, |run, last| self.write_run(run, last))
    }

    /// Writes a run's batch with `last_applied = last`, then its node
    /// changes to the in-memory tree, under the tree's write lock.
    ///
    /// The batch skips RocksDB's WAL: every applied entry is already durable
    /// in the log, so after a crash the store comes back at the last
    /// (atomic) flush, with a `last_applied` that matches it, and the
    /// entries above are applied again from the log (replayed at start by a
    /// standalone member, committed again by ZAB in a cluster). The log is
    /// not compacted above [`Store::durable_applied`], so they are there.
    fn write_run(&self, run: &mut apply::Run<WriteBatch>, last: u64) -> Result<(), StoreError> {
        let (mut batch, changes) = run.take();
        batch.put_cf(self.cf(CF_META)?, META_LAST_APPLIED, u64_key(last));
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        let mut mem = self.mem_write();
        self.db.write_opt(batch, &opts)?;
        mem.apply(last, changes);
        drop(mem);
        self.last_applied.store(last, Ordering::Release);
        Ok(())
    }

    /// Flushes the tree, its indexes and `last_applied` to disk (atomically;
    /// the log is durable through the WAL and is left in memory) and returns
    /// the `last_applied` that is now durable, at least.
    pub fn flush_tree(&self) -> Result<Zxid, StoreError> {
        // Everything applied up to here was written before the flush starts.
        let applied = self.last_applied.load(Ordering::Acquire);
        let cfs = ALL_CFS
            .iter()
            .filter(|name| **name != CF_LOG)
            .map(|name| self.cf(name))
            .collect::<Result<Vec<_>, _>>()?;
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        self.durable_applied.fetch_max(applied, Ordering::AcqRel);
        Ok(Zxid(applied))
    }

    /// A zxid at or below which every applied entry is on disk.
    pub fn durable_applied(&self) -> Zxid {
        Zxid(self.durable_applied.load(Ordering::Acquire))
    }

    pub(crate) fn mem_read(&self) -> RwLockReadGuard<'_, MemTree> {
        self.mem.read().unwrap_or_else(|p| p.into_inner())
    }

    fn mem_write(&self) -> RwLockWriteGuard<'_, MemTree> {
        self.mem.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The zxid of the last applied entry.
    pub fn last_applied(&self) -> Zxid {
        Zxid(self.last_applied.load(Ordering::Acquire))
    }

    // ---- reads -----------------------------------------------------------

    /// The applied record at `path` (from the in-memory tree).
    pub(crate) fn read_node(&self, path: &str) -> Option<NodeRecord> {
        self.mem_read().get(path).cloned()
    }

    /// How many znodes exist (the root included).
    pub fn node_count(&self) -> usize {
        self.mem_read().len()
    }

    pub(crate) fn session_exists(&self, id: SessionId) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_SESSIONS)?, u64_key(id))?
            .is_some())
    }

    /// Paths of the ephemerals owned by session `id`, sorted bytewise.
    pub(crate) fn ephemerals_of(&self, id: SessionId) -> Result<Vec<String>, StoreError> {
        let cf = self.cf(CF_EPHEMERALS)?;
        let start = u64_key(id);
        let mut opts = ReadOptions::default();
        if let Some(next) = id.checked_add(1) {
            opts.set_iterate_upper_bound(u64_key(next).to_vec());
        }
        let mut out = Vec::new();
        for item in
            self.db
                .iterator_cf_opt(cf, opts, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, _) = item?;
            let (owner, path) = split_index_key(&key, "ephemeral index")?;
            if owner != id {
                break;
            }
            out.push(path);
        }
        Ok(out)
    }

    /// Data and stat of `path`, or `Ok(None)` if it does not exist (an
    /// invalid path, see [`validate_path`], does not exist).
    /// Served from memory; never blocks on I/O.
    pub fn get(&self, path: &str) -> Result<Option<(bytes::Bytes, Stat)>, StoreError> {
        Ok(self.get_at(path).0)
    }

    /// [`Store::get`], and the zxid of the applied state it was read from
    /// (at or above the node's `mzxid`; what `X-Keeper-Zxid` should say).
    pub fn get_at(&self, path: &str) -> (Option<(bytes::Bytes, Stat)>, Zxid) {
        if validate_path(path, self.config.max_path_bytes).is_err() {
            return (None, Zxid(self.mem_read().applied()));
        }
        let mem = self.mem_read();
        let found = mem.get(path).map(|rec| (rec.data.clone(), rec.stat));
        (found, Zxid(mem.applied()))
    }

    /// A page of children of `path` (a prefix scan), starting after the child
    /// name `after`, at most `limit` (capped by `max_children_page`), sorted
    /// bytewise, with the parent's stat from the same snapshot.
    /// `Ok(None)` if `path` does not exist.
    pub fn children(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<ChildrenPage>, StoreError> {
        Ok(self.children_at(path, after, limit)?.0)
    }

    /// [`Store::children`], and the zxid of the applied state it was read
    /// from. Served from the in-memory tree.
    pub fn children_at(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Option<ChildrenPage>, Zxid), StoreError> {
        let mem = self.mem_read();
        let zxid = Zxid(mem.applied());
        if validate_path(path, self.config.max_path_bytes).is_err() {
            return Ok((None, zxid));
        }
        let Some(parent) = mem.get(path) else {
            return Ok((None, zxid));
        };
        let limit = limit.min(self.config.max_children_page);
        let (children, more) = mem.children_page(path, after, limit);
        Ok((
            Some(ChildrenPage {
                children,
                stat: parent.stat,
                more,
            }),
            zxid,
        ))
    }

    /// The holder of lock `name`: the path and stat of its lowest-sequence
    /// contender (a child of [`lock_dir`] named by [`is_contender_name`]),
    /// or `Ok(None)` if nobody holds it. The holder's fencing token is its
    /// `czxid`. `Err` if `name` is not a valid lock name.
    pub fn lock_holder(&self, name: &str) -> Result<Option<(String, Stat)>, TxnError> {
        self.holder(FenceScope::Lock, name)
    }

    /// The holder of `scope`'s `name` (a lock's holder, an election's
    /// leader): see [`Store::lock_holder`].
    pub fn holder(
        &self,
        scope: FenceScope,
        name: &str,
    ) -> Result<Option<(String, Stat)>, TxnError> {
        self.mem_read()
            .holder(scope, name, self.config.max_path_bytes)
    }

    /// Every contender of lock `name` in queue order (the holder first):
    /// child name and stat. `Err` if `name` is not a valid lock name.
    pub fn lock_contenders(&self, name: &str) -> Result<Vec<(String, Stat)>, TxnError> {
        let dir = lock_dir(name, self.config.max_path_bytes)?;
        Ok(self
            .contenders(&dir)
            .into_iter()
            .map(|(child, stat, _)| (child, stat))
            .collect())
    }

    /// Every contender child of the recipe directory `dir` (children named
    /// by [`is_contender_name`]) in queue order: name, stat and data.
    pub fn contenders(&self, dir: &str) -> Vec<(String, Stat, bytes::Bytes)> {
        let mem = self.mem_read();
        mem.children_page(dir, None, usize::MAX)
            .0
            .into_iter()
            .filter(|child| is_contender_name(child))
            .filter_map(|child| {
                let rec = mem.get(&format!("{dir}/{child}"))?;
                Some((child, rec.stat, rec.data.clone()))
            })
            .collect()
    }

    /// All live sessions, by id (used by the leader to rebuild expiry tracking).
    pub fn sessions(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_SESSIONS)?, IteratorMode::Start)
        {
            let (key, value) = item?;
            out.push(SessionInfo {
                id: decode_u64(&key, "session key")?,
                timeout_ms: decode_u64(&value, "session timeout")?,
            });
        }
        Ok(out)
    }

    /// Containers and ttl nodes that are due at `now_ms`, at most `limit`,
    /// earliest due first. Reads only the reap index (containers that have
    /// had a child and have none, childless ttl nodes), never the tree.
    pub fn reap_candidates(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReapCandidate>, StoreError> {
        let mut out = Vec::new();
        let mut opts = ReadOptions::default();
        if let Some(end) = now_ms.checked_add(1) {
            opts.set_iterate_upper_bound(u64_key(end).to_vec());
        }
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_REAP)?, opts, IteratorMode::Start)
        {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let (due, path) = split_index_key(&key, "reap index")?;
            if due > now_ms {
                break;
            }
            out.push(ReapCandidate {
                path,
                czxid: decode_u64(&value, "reap index czxid")?,
            });
        }
        Ok(out)
    }

    /// A checksum over the whole tree and sessions (for comparing members):
    /// the wrapping sum of [`node_digest`] over every znode and
    /// [`session_digest`] over every session, read from one snapshot.
    pub fn tree_digest(&self) -> Result<u64, StoreError> {
        Ok(self.digest_at()?.1)
    }

    /// [`Store::tree_digest`] and the `last_applied` of the state it sums,
    /// both read from one RocksDB snapshot (every apply writes the tree and
    /// `last_applied` in one batch), so they always belong together and a
    /// concurrent apply never makes the scan start over.
    pub fn digest_at(&self) -> Result<(Zxid, u64), StoreError> {
        let snap = self.db.snapshot();
        let applied = match snap.get_cf(self.cf(CF_META)?, META_LAST_APPLIED)? {
            Some(v) => decode_u64(&v, "last_applied")?,
            None => 0,
        };
        let mut sum = 0u64;
        for item in snap.iterator_cf(self.cf(CF_NODES)?, IteratorMode::Start) {
            let (key, value) = item?;
            let path = key_path(&key)?;
            let rec = NodeRecord::decode(&value)?;
            sum = sum.wrapping_add(node_digest(
                &path, &rec.data, &rec.stat, rec.mode, rec.ttl_ms,
            ));
        }
        for item in snap.iterator_cf(self.cf(CF_SESSIONS)?, IteratorMode::Start) {
            let (key, value) = item?;
            let info = SessionInfo {
                id: decode_u64(&key, "session key")?,
                timeout_ms: decode_u64(&value, "session timeout")?,
            };
            sum = sum.wrapping_add(session_digest(&info));
        }
        Ok((Zxid(applied), sum))
    }

    /// How many times RocksDB synced its WAL so far.
    #[cfg(test)]
    pub(crate) fn wal_syncs(&self) -> u64 {
        self.db_opts
            .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
    }
}

impl apply::ApplyTarget for Store {
    type Batch = WriteBatch;

    fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn read_node(&self, path: &str) -> Option<NodeRecord> {
        Store::read_node(self, path)
    }

    fn session_exists(&self, id: SessionId) -> Result<bool, StoreError> {
        Store::session_exists(self, id)
    }

    fn ephemerals_of(&self, id: SessionId) -> Result<Vec<String>, StoreError> {
        Store::ephemerals_of(self, id)
    }

    fn holder(&self, scope: FenceScope, name: &str) -> Result<Option<(String, Stat)>, TxnError> {
        Store::holder(self, scope, name)
    }

    fn put(
        &self,
        batch: &mut WriteBatch,
        cf: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        batch.put_cf(self.cf(cf)?, key, value);
        Ok(())
    }

    fn delete(
        &self,
        batch: &mut WriteBatch,
        cf: &'static str,
        key: &[u8],
    ) -> Result<(), StoreError> {
        batch.delete_cf(self.cf(cf)?, key);
        Ok(())
    }
}
