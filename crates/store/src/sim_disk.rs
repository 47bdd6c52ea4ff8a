//! The store over a simulated disk, for the whole-member simulator
//! (`keeper-server`'s `sim`): the same apply code as [`crate::Store`]
//! (`apply.rs` through its [`ApplyTarget`] seam, and the same in-memory
//! tree), over column families kept in two layers instead of RocksDB:
//!
//! - `live`: what the database shows now (memtables and table files);
//! - `durable`: what survives a crash.
//!
//! The layers follow RocksDB's rules as `Store` uses them: applies skip the
//! WAL, so they reach only `live`; [`SimStore::flush_tree`] (an atomic flush
//! of every column family) copies `live` to `durable`; a WAL-synced batch
//! (an installed snapshot) is applied to both, on top of whatever each holds,
//! exactly as RocksDB replays a synced WAL record over the flushed tables
//! after a crash. [`SimStore::crash`] drops `live` back to `durable`, and the
//! tree and `last_applied` come back from there, as `Store::open` reads them.
//!
//! The change history (`changes`, read only by watch streams, which the
//! simulator does not run) is not kept. The transaction log is not here
//! either: the simulator keeps it beside the store, with its own unsynced
//! tail.

use crate::apply::{self, ApplyTarget};
use crate::keys::{
    decode_u64, key_path, node_key, split_index_key, u64_key, CF_CHANGES, CF_EPHEMERALS, CF_META,
    CF_NODES, CF_REAP, CF_SESSIONS, META_LAST_APPLIED, META_LOG_FLOOR,
};
use crate::mem::MemTree;
use crate::record::NodeRecord;
use crate::{
    node_digest, session_digest, Applied, Entry, FenceScope, NodeMode, SessionId, SessionInfo,
    Stat, StoreConfig, StoreError, TxnError,
};
use keeper_zab::Zxid;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The column families the simulated disk keeps (not `log`, not `changes`).
const CFS: [&str; 5] = [CF_NODES, CF_SESSIONS, CF_EPHEMERALS, CF_REAP, CF_META];

fn cf_index(cf: &str) -> Option<usize> {
    CFS.iter().position(|c| *c == cf)
}

type Family = BTreeMap<Vec<u8>, Vec<u8>>;

/// One column family's write.
#[derive(Debug, Clone)]
enum Write {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    /// A range deletion over the whole column family.
    DeleteAll(usize),
}

/// Writes of a run of entries (one RocksDB batch in `Store`).
#[derive(Debug, Default)]
pub struct SimBatch(Vec<Write>);

/// A leader's checkpoint: its applied column families at `zxid`.
#[derive(Debug, Clone)]
pub struct SimSnapshot {
    /// The snapshot's `last_applied`.
    pub zxid: Zxid,
    families: Arc<Vec<Family>>,
}

impl SimSnapshot {
    /// Keys in the snapshot (its size, for transfer pacing).
    pub fn keys(&self) -> usize {
        self.families.iter().map(|f| f.len()).sum()
    }
}

/// The store of one simulated member. Single-threaded (the simulator is).
pub struct SimStore {
    config: StoreConfig,
    live: Vec<Family>,
    durable: Vec<Family>,
    mem: MemTree,
    last_applied: u64,
    durable_applied: u64,
    /// Sum of node and session digests of `live` (see `Store::tree_digest`).
    digest: u64,
    /// Flushes done (a figure for reports).
    pub flushes: u64,
}

impl SimStore {
    /// A fresh store: the root `/` and `last_applied == 0`, on disk.
    pub fn new(config: StoreConfig) -> SimStore {
        let mut families = vec![Family::new(); CFS.len()];
        let root = NodeRecord {
            stat: Stat::default(),
            mode: NodeMode::Persistent,
            ttl_ms: None,
            data: bytes::Bytes::new(),
        };
        families[0].insert(node_key("/"), root.encode());
        families[4].insert(META_LAST_APPLIED.to_vec(), u64_key(0).to_vec());
        let mut store = SimStore {
            config,
            live: families.clone(),
            durable: families,
            mem: MemTree::default(),
            last_applied: 0,
            durable_applied: 0,
            digest: 0,
            flushes: 0,
        };
        store.reload();
        store
    }

    /// Rebuilds the tree, `last_applied` and the digest from `live` (what
    /// `Store::open` and an install do).
    fn reload(&mut self) {
        let applied = self.live[4]
            .get(META_LAST_APPLIED)
            .and_then(|v| decode_u64(v, "last_applied").ok())
            .unwrap_or(0);
        let records = self.live[0]
            .iter()
            .filter_map(|(k, v)| Some((key_path(k).ok()?, NodeRecord::decode(v).ok()?)));
        self.mem = MemTree::from_records(records, applied);
        self.last_applied = applied;
        self.digest = 0;
        for (k, v) in &self.live[0] {
            self.digest = self.digest.wrapping_add(node_value_digest(k, v));
        }
        for (k, v) in &self.live[1] {
            self.digest = self.digest.wrapping_add(session_value_digest(k, v));
        }
    }

    fn write(&mut self, batch: SimBatch, synced: bool) {
        for w in &batch.0 {
            apply_write(&mut self.live, w, Some(&mut self.digest));
            if synced {
                apply_write(&mut self.durable, w, None);
            }
        }
    }

    /// Applies a run in which only the first entry may read the session
    /// indexes (see [`SimStore::apply`]).
    fn apply_run<'e>(
        &mut self,
        entries: impl IntoIterator<Item = (Zxid, &'e Entry)>,
    ) -> Result<Vec<Applied>, StoreError> {
        let last = self.last_applied;
        let mut runs = Vec::new();
        // The target reads the state before the run's writes; a run sees
        // its own earlier entries through the run itself, as in `Store`.
        let out = {
            let target = Reader { store: self };
            apply::apply_entries(&target, last, entries, |run, last| {
                let (batch, changes) = run.take();
                runs.push((batch, changes, last));
                Ok(())
            })?
        };
        // Writes are deferred to here (the target borrows the store), so
        // `apply` hands over runs in which no later entry reads what an
        // earlier one wrote outside the run's own node overlay.
        for (batch, changes, last) in runs {
            self.write_run(batch, changes, last);
        }
        Ok(out)
    }

    /// Applies committed entries in order, exactly as
    /// [`crate::Store::apply_batch`] (the same code, cut into the same
    /// runs: an entry that reads the session indexes alone, after the
    /// writes before it); the writes reach only the live layer.
    pub fn apply(&mut self, entries: &[(Zxid, Entry)]) -> Result<Vec<Applied>, StoreError> {
        let mut out = Vec::with_capacity(entries.len());
        let mut start = 0;
        for (i, (_, e)) in entries.iter().enumerate() {
            if e.txn.reads_session_indexes() {
                if start < i {
                    out.extend(self.apply_run(entries[start..i].iter().map(|(z, e)| (*z, e)))?);
                }
                out.extend(self.apply_run(std::iter::once((entries[i].0, &entries[i].1)))?);
                start = i + 1;
            }
        }
        if start < entries.len() {
            out.extend(self.apply_run(entries[start..].iter().map(|(z, e)| (*z, e)))?);
        }
        Ok(out)
    }

    fn write_run(
        &mut self,
        mut batch: SimBatch,
        changes: Vec<(String, Option<NodeRecord>)>,
        last: u64,
    ) {
        batch.0.push(Write::Put(
            4,
            META_LAST_APPLIED.to_vec(),
            u64_key(last).to_vec(),
        ));
        self.write(batch, false);
        self.mem.apply(last, changes);
        self.last_applied = last;
    }

    /// An atomic flush of every column family: everything applied is now
    /// durable. Returns the durable `last_applied`.
    pub fn flush_tree(&mut self) -> Zxid {
        self.durable = self.live.clone();
        self.durable_applied = self.last_applied;
        self.flushes += 1;
        Zxid(self.durable_applied)
    }

    /// A zxid at or below which every applied entry is on disk.
    pub fn durable_applied(&self) -> Zxid {
        Zxid(self.durable_applied)
    }

    /// The zxid of the last applied entry.
    pub fn last_applied(&self) -> Zxid {
        Zxid(self.last_applied)
    }

    /// The process dies: what was not flushed or synced is lost, and the
    /// store comes back as `Store::open` would find it.
    pub fn crash(&mut self) {
        self.live = self.durable.clone();
        self.reload();
        self.durable_applied = self.last_applied;
    }

    /// A checkpoint (`Store::checkpoint`: a flush, then the files).
    pub fn checkpoint(&mut self) -> SimSnapshot {
        self.flush_tree();
        SimSnapshot {
            zxid: Zxid(self.last_applied),
            families: Arc::new(self.live.clone()),
        }
    }

    /// Installs a leader's checkpoint in place, as `Store::install_snapshot`
    /// does: one WAL-synced batch that range-deletes every column family and
    /// puts the snapshot's keys, `last_applied` and the log floor.
    pub fn install_snapshot(&mut self, snap: &SimSnapshot) -> Zxid {
        self.install_snapshot_with(snap, true)
    }

    /// [`SimStore::install_snapshot`]; with `range_delete` false it deletes
    /// only the keys the live layer shows, as `Store::install_snapshot` did
    /// before issue 9's problem 2 was fixed (the simulator's own tests put
    /// that bug back to prove they catch it).
    #[doc(hidden)]
    pub fn install_snapshot_with(&mut self, snap: &SimSnapshot, range_delete: bool) -> Zxid {
        let mut batch = SimBatch::default();
        for (i, family) in snap.families.iter().enumerate() {
            if CFS[i] == CF_META {
                continue;
            }
            if range_delete {
                batch.0.push(Write::DeleteAll(i));
            } else {
                for k in self.live[i].keys() {
                    batch.0.push(Write::Delete(i, k.clone()));
                }
            }
            for (k, v) in family {
                batch.0.push(Write::Put(i, k.clone(), v.clone()));
            }
        }
        let z = u64_key(snap.zxid.0).to_vec();
        batch
            .0
            .push(Write::Put(4, META_LAST_APPLIED.to_vec(), z.clone()));
        batch.0.push(Write::Put(4, META_LOG_FLOOR.to_vec(), z));
        self.write(batch, true);
        self.reload();
        self.durable_applied = self.last_applied;
        Zxid(self.last_applied)
    }

    /// The sum of node and session digests (equal to `Store::tree_digest`
    /// over the same state).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Data and stat of `path`, if it exists.
    pub fn get(&self, path: &str) -> Option<(bytes::Bytes, Stat)> {
        self.mem.get(path).map(|r| (r.data.clone(), r.stat))
    }

    /// One live session, if it exists.
    pub fn session(&self, id: SessionId) -> Option<SessionInfo> {
        let v = self.live[1].get(&u64_key(id)[..])?;
        Some(SessionInfo {
            id,
            timeout_ms: decode_u64(v, "session timeout").ok()?,
        })
    }

    /// All live sessions.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.live[1]
            .iter()
            .filter_map(|(k, v)| {
                Some(SessionInfo {
                    id: decode_u64(k, "session key").ok()?,
                    timeout_ms: decode_u64(v, "session timeout").ok()?,
                })
            })
            .collect()
    }

    /// Paths of the ephemerals of session `id`.
    pub fn ephemerals(&self, id: SessionId) -> Vec<String> {
        self.ephemerals_of(id).unwrap_or_default()
    }

    fn ephemerals_of(&self, id: SessionId) -> Result<Vec<String>, StoreError> {
        let start = u64_key(id).to_vec();
        let mut out = Vec::new();
        for (k, _) in self.live[2].range(start..) {
            let (owner, path) = split_index_key(k, "ephemeral index")?;
            if owner != id {
                break;
            }
            out.push(path);
        }
        Ok(out)
    }

    /// How many znodes exist (the root included).
    pub fn node_count(&self) -> usize {
        self.mem.len()
    }
}

fn node_value_digest(key: &[u8], value: &[u8]) -> u64 {
    match (key_path(key), NodeRecord::decode(value)) {
        (Ok(path), Ok(rec)) => node_digest(&path, &rec.data, &rec.stat, rec.mode, rec.ttl_ms),
        _ => 0,
    }
}

fn session_value_digest(key: &[u8], value: &[u8]) -> u64 {
    match (decode_u64(key, "session key"), decode_u64(value, "timeout")) {
        (Ok(id), Ok(timeout_ms)) => session_digest(&SessionInfo { id, timeout_ms }),
        _ => 0,
    }
}

fn value_digest(cf: usize, key: &[u8], value: &[u8]) -> u64 {
    match cf {
        0 => node_value_digest(key, value),
        1 => session_value_digest(key, value),
        _ => 0,
    }
}

fn apply_write(families: &mut [Family], w: &Write, mut digest: Option<&mut u64>) {
    let sub = |cf: usize, k: &[u8], v: &[u8], digest: &mut Option<&mut u64>| {
        if let Some(d) = digest.as_deref_mut() {
            *d = d.wrapping_sub(value_digest(cf, k, v));
        }
    };
    match w {
        Write::Put(cf, k, v) => {
            if let Some(old) = families[*cf].insert(k.clone(), v.clone()) {
                sub(*cf, k, &old, &mut digest);
            }
            if let Some(d) = digest {
                *d = d.wrapping_add(value_digest(*cf, k, v));
            }
        }
        Write::Delete(cf, k) => {
            if let Some(old) = families[*cf].remove(k) {
                sub(*cf, k, &old, &mut digest);
            }
        }
        Write::DeleteAll(cf) => {
            for (k, old) in std::mem::take(&mut families[*cf]) {
                sub(*cf, &k, &old, &mut digest);
            }
        }
    }
}

/// The apply target: reads of the store's current (live) state; writes go
/// into a [`SimBatch`].
struct Reader<'a> {
    store: &'a SimStore,
}

impl ApplyTarget for Reader<'_> {
    type Batch = SimBatch;

    fn config(&self) -> &StoreConfig {
        &self.store.config
    }

    fn read_node(&self, path: &str) -> Option<NodeRecord> {
        self.store.mem.get(path).cloned()
    }

    fn session_exists(&self, id: SessionId) -> Result<bool, StoreError> {
        Ok(self.store.live[1].contains_key(&u64_key(id)[..]))
    }

    fn ephemerals_of(&self, id: SessionId) -> Result<Vec<String>, StoreError> {
        self.store.ephemerals_of(id)
    }

    fn holder(&self, scope: FenceScope, name: &str) -> Result<Option<(String, Stat)>, TxnError> {
        self.store
            .mem
            .holder(scope, name, self.store.config.max_path_bytes)
    }

    fn put(
        &self,
        batch: &mut SimBatch,
        cf: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        if let Some(i) = cf_index(cf) {
            batch.0.push(Write::Put(i, key.to_vec(), value.to_vec()));
        } else if cf != CF_CHANGES {
            return Err(StoreError::Rocks(format!(
                "simulated disk: no column family {cf}"
            )));
        }
        Ok(())
    }

    fn delete(&self, batch: &mut SimBatch, cf: &'static str, key: &[u8]) -> Result<(), StoreError> {
        if let Some(i) = cf_index(cf) {
            batch.0.push(Write::Delete(i, key.to_vec()));
        } else if cf != CF_CHANGES {
            return Err(StoreError::Rocks(format!(
                "simulated disk: no column family {cf}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Op, Store, Txn};
    use bytes::Bytes;

    fn entry(txn: Txn) -> Entry {
        Entry { time_ms: 7, txn }
    }

    fn create(path: &str, mode: NodeMode, session: u64) -> Entry {
        entry(Txn::Op(Op::Create {
            path: path.into(),
            data: Bytes::from(path.to_string()),
            mode,
            session,
            ttl_ms: None,
        }))
    }

    fn delete(path: &str) -> Entry {
        entry(Txn::Op(Op::Delete {
            path: path.into(),
            version: -1,
        }))
    }

    /// A history touching every kind of entry: nodes, sequential and
    /// ephemeral nodes, sessions and their close, failures, multis.
    fn history() -> Vec<(Zxid, Entry)> {
        let mut h = vec![
            create("/a", NodeMode::Persistent, 0),
            entry(Txn::CreateSession { timeout_ms: 5000 }),
            create("/a/q-", NodeMode::PersistentSequential, 0),
            create("/a/e", NodeMode::Ephemeral, 2),
            create("/a", NodeMode::Persistent, 0),
            entry(Txn::Multi(vec![
                Op::Create {
                    path: "/m".into(),
                    data: Bytes::from_static(b"m"),
                    mode: NodeMode::Persistent,
                    session: 0,
                    ttl_ms: None,
                },
                Op::Set {
                    path: "/a".into(),
                    data: Bytes::from_static(b"x"),
                    version: 0,
                },
            ])),
            delete("/m"),
            entry(Txn::CloseSession { id: 2 }),
            entry(Txn::Noop),
        ];
        h.drain(..)
            .enumerate()
            .map(|(i, e)| (Zxid::new(1, i as u32 + 1), e))
            .collect()
    }

    #[test]
    fn the_simulated_store_applies_exactly_as_the_rocksdb_store() {
        let dir = tempfile::tempdir().unwrap();
        let rocks = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let mut sim = SimStore::new(StoreConfig::default());
        assert_eq!(sim.digest(), rocks.tree_digest().unwrap());
        for (z, e) in history() {
            let a = rocks.apply(z, &e).unwrap();
            let b = sim.apply(&[(z, e)]).unwrap();
            assert_eq!(vec![a.clone()], b, "outcome of {z}");
            assert_eq!(sim.digest(), rocks.tree_digest().unwrap(), "digest at {z}");
        }
        assert_eq!(sim.session(2), None);
        assert_eq!(sim.node_count(), rocks.node_count());
        // The same history in one call: the same state.
        let mut batched = SimStore::new(StoreConfig::default());
        batched.apply(&history()).unwrap();
        assert_eq!(batched.digest(), sim.digest());
        assert_eq!(batched.last_applied(), rocks.last_applied());
    }

    #[test]
    fn a_crash_loses_what_was_applied_since_the_last_flush() {
        let mut s = SimStore::new(StoreConfig::default());
        let h = history();
        s.apply(&h[..3]).unwrap();
        let flushed = s.flush_tree();
        let digest = s.digest();
        s.apply(&h[3..]).unwrap();
        assert_ne!(s.digest(), digest);
        s.crash();
        assert_eq!(s.last_applied(), flushed);
        assert_eq!(s.durable_applied(), flushed);
        assert_eq!(s.digest(), digest);
        assert!(s.get("/a/e").is_none());
        // Applied again from the log, it comes to the same state.
        let mut again = SimStore::new(StoreConfig::default());
        again.apply(&h).unwrap();
        s.apply(&h[3..]).unwrap();
        assert_eq!(s.digest(), again.digest());
    }

    /// Issue 9, problem 2 on the simulated disk: a key whose delete was only
    /// in the live layer does not come back after an install and a crash.
    #[test]
    fn an_installed_snapshot_survives_a_crash_without_deleted_keys() {
        let mut leader = SimStore::new(StoreConfig::default());
        let mut follower = SimStore::new(StoreConfig::default());
        let h = vec![
            (Zxid::new(1, 1), create("/gone", NodeMode::Persistent, 0)),
            (Zxid::new(1, 2), delete("/gone")),
            (Zxid::new(1, 3), create("/kept", NodeMode::Persistent, 0)),
        ];
        leader.apply(&h).unwrap();
        follower.apply(&h[..1]).unwrap();
        follower.flush_tree();
        follower.apply(&h[1..2]).unwrap();
        let snap = leader.checkpoint();
        assert_eq!(follower.install_snapshot(&snap), Zxid::new(1, 3));
        follower.crash();
        assert_eq!(follower.last_applied(), Zxid::new(1, 3));
        assert!(follower.get("/gone").is_none());
        assert_eq!(follower.digest(), leader.digest());
    }
}
