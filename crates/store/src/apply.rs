//! The deterministic state machine: turns one committed `(zxid, Entry)` into a
//! [`TxnOutcome`], the [`ChangeEvent`]s for watches, and the RocksDB writes
//! (znodes, sessions, ephemeral and reap indexes) that `Store::apply` commits
//! in one batch together with `last_applied`.
//!
//! Ops run against an [`Overlay`]: reads see earlier ops of the same entry
//! (so later ops of a multi see earlier ops' effects), and nothing reaches the
//! batch unless the whole entry succeeds. Index entries are derived at commit
//! time from each touched node's before/after records, so every kind of change
//! keeps the indexes right the same way. Nothing here reads a clock: time is
//! the entry's `time_ms`.
//!
//! Error order (first match wins), following ZooKeeper:
//! - create: BadArguments (ttl/mode mismatch, ephemeral without session),
//!   InvalidPath, TooLarge, SessionExpired, NoNode (the parent's path),
//!   NodeExists (root, or the final path), NoChildrenForEphemerals.
//! - set: InvalidPath, TooLarge, NoNode, BadVersion.
//! - delete: InvalidPath, BadArguments (root), NoNode, BadVersion, NotEmpty.
//! - check: InvalidPath, NoNode, BadVersion.
//!
//! Sequential names: the requested path plus the parent's `cversion` before
//! this create, formatted `%010d` (ZooKeeper's rule; the counter therefore also
//! moves on child deletes). The requested path may end in `/` for a sequential
//! create (`/q/` -> `/q/0000000004`); the final path must be valid.

use crate::keys::{
    change_key, ephemeral_key, node_key, reap_key, u64_key, CF_CHANGES, CF_EPHEMERALS, CF_NODES,
    CF_REAP, CF_SESSIONS,
};
use crate::path::{split_parent, validate_path};
use crate::record::NodeRecord;
use crate::{
    Applied, ChangeEvent, ChangeKind, Entry, Fence, FenceScope, MultiError, NodeMode, Op, OpResult,
    SessionId, Stat, StoreConfig, StoreError, Txn, TxnError, TxnOutcome,
};
use bytes::Bytes;
use keeper_zab::Zxid;
use std::collections::HashMap;

/// What the state machine needs from the store it applies to: reads of the
/// applied state and a batch to put its writes in. The seam between the one
/// apply code and its durable backends: RocksDB ([`crate::Store`]) in a
/// member, the simulated disk ([`crate::sim_disk::SimStore`]) in the
/// whole-member simulator. Both run exactly this module.
pub(crate) trait ApplyTarget {
    /// The writes of a run of entries, committed by the backend in one go.
    type Batch: Default;
    /// The store's bounds (path and data sizes).
    fn config(&self) -> &StoreConfig;
    /// The applied record at `path` (the in-memory tree).
    fn read_node(&self, path: &str) -> Option<NodeRecord>;
    /// Whether session `id` is live in the applied state.
    fn session_exists(&self, id: SessionId) -> Result<bool, StoreError>;
    /// Paths of the ephemerals owned by session `id`, sorted bytewise.
    fn ephemerals_of(&self, id: SessionId) -> Result<Vec<String>, StoreError>;
    /// The holder of `scope`'s `name` in the applied state (see `Store::holder`).
    fn holder(&self, scope: FenceScope, name: &str) -> Result<Option<(String, Stat)>, TxnError>;
    /// Adds a put of `key` in column family `cf` to `batch`.
    fn put(
        &self,
        batch: &mut Self::Batch,
        cf: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError>;
    /// Adds a delete of `key` in column family `cf` to `batch`.
    fn delete(
        &self,
        batch: &mut Self::Batch,
        cf: &'static str,
        key: &[u8],
    ) -> Result<(), StoreError>;
}

/// Applies `entries` (ascending zxids above `last`) to `target` exactly as
/// one by one would, calling `write_run(run, last zxid of the run)` for
/// each run of tree entries, and alone for each session entry (those read
/// the session indexes, so the entries before them must be written first).
/// The loop of `Store::apply_batch` and of the simulated store.
pub(crate) fn apply_entries<'e, T: ApplyTarget>(
    target: &T,
    mut last: u64,
    entries: impl IntoIterator<Item = (Zxid, &'e Entry)>,
    mut write_run: impl FnMut(&mut Run<T::Batch>, u64) -> Result<(), StoreError>,
) -> Result<Vec<Applied>, StoreError> {
    let mut run = Run::default();
    let mut out = Vec::new();
    for (zxid, entry) in entries {
        assert!(
            zxid.0 > last,
            "apply: zxid {zxid} is not above last_applied {}",
            Zxid(last)
        );
        let alone = entry.txn.reads_session_indexes();
        if alone && !run.is_empty() {
            write_run(&mut run, last)?;
        }
        let (outcome, events) = apply_entry(target, &mut run, zxid, entry)?;
        last = zxid.0;
        if alone {
            write_run(&mut run, last)?;
        }
        out.push(Applied {
            zxid,
            outcome,
            events,
        });
    }
    if !run.is_empty() {
        write_run(&mut run, last)?;
    }
    Ok(out)
}

/// Why an op stopped: a deterministic txn error, or a fatal storage error.
enum Fail {
    Txn(TxnError),
    Store(StoreError),
}

impl From<TxnError> for Fail {
    fn from(e: TxnError) -> Fail {
        Fail::Txn(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

/// A touched znode: its record in the database and after the entry's ops.
struct Slot {
    before: Option<NodeRecord>,
    after: Option<NodeRecord>,
    dirty: bool,
}

/// Pending changes of one entry on top of the run's and the store's tree.
struct Overlay<'s, T: ApplyTarget> {
    store: &'s T,
    /// Node changes of the earlier entries of the run.
    pending: &'s mut HashMap<String, Option<NodeRecord>>,
    zxid: Zxid,
    time_ms: u64,
    nodes: HashMap<String, Slot>,
    events: Vec<ChangeEvent>,
}

/// Node changes for the in-memory tree: path and new record (`None`: deleted).
pub(crate) type NodeChanges = Vec<(String, Option<NodeRecord>)>;

/// Entries applied but not yet written: their RocksDB writes in one batch,
/// and their node changes (the last one per path), which later entries of
/// the run read before the in-memory tree.
pub(crate) struct Run<B> {
    batch: B,
    nodes: HashMap<String, Option<NodeRecord>>,
    entries: usize,
}

impl<B: Default> Default for Run<B> {
    fn default() -> Run<B> {
        Run {
            batch: B::default(),
            nodes: HashMap::new(),
            entries: 0,
        }
    }
}

impl<B: Default> Run<B> {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The batch and the node changes; the run is empty afterwards.
    pub(crate) fn take(&mut self) -> (B, NodeChanges) {
        self.entries = 0;
        (
            std::mem::take(&mut self.batch),
            self.nodes.drain().collect(),
        )
    }
}

/// One entry's outcome and events.
type Effects = (TxnOutcome, Vec<ChangeEvent>);

/// Computes the outcome of `entry` at `zxid` on top of the store and the
/// entries before it in `run`, and adds its writes (everything except
/// `last_applied`) and node changes to `run`. A failed op or multi adds
/// nothing.
pub(crate) fn apply_entry<T: ApplyTarget>(
    store: &T,
    run: &mut Run<T::Batch>,
    zxid: Zxid,
    entry: &Entry,
) -> Result<Effects, StoreError> {
    run.entries += 1;
    let Run {
        batch,
        nodes: pending,
        ..
    } = run;
    let ov = Overlay {
        store,
        pending,
        zxid,
        time_ms: entry.time_ms,
        nodes: HashMap::new(),
        events: Vec::new(),
    };
    apply_txn(store, batch, ov, zxid, entry.time_ms, &entry.txn)
}

/// [`apply_entry`] for one txn (a fenced txn recurses into the txn it guards).
fn apply_txn<T: ApplyTarget>(
    store: &T,
    batch: &mut T::Batch,
    mut ov: Overlay<'_, T>,
    zxid: Zxid,
    time_ms: u64,
    txn: &Txn,
) -> Result<Effects, StoreError> {
    match txn {
        Txn::Op(op) => match ov.op(op) {
            Ok(result) => {
                let events = ov.commit(batch)?;
                Ok((TxnOutcome::Op(Ok(result)), events))
            }
            Err(Fail::Txn(e)) => Ok((TxnOutcome::Op(Err(e)), Vec::new())),
            Err(Fail::Store(e)) => Err(e),
        },
        Txn::Multi(ops) => {
            let mut results = Vec::with_capacity(ops.len());
            for (index, op) in ops.iter().enumerate() {
                match ov.op(op) {
                    Ok(result) => results.push(result),
                    Err(Fail::Txn(error)) => {
                        return Ok((
                            TxnOutcome::Multi(Err(MultiError { index, error })),
                            Vec::new(),
                        ));
                    }
                    Err(Fail::Store(e)) => return Err(e),
                }
            }
            let events = ov.commit(batch)?;
            Ok((TxnOutcome::Multi(Ok(results)), events))
        }
        Txn::CreateSession { timeout_ms } => {
            let id: SessionId = zxid.0;
            store.put(batch, CF_SESSIONS, &u64_key(id), &u64_key(*timeout_ms))?;
            Ok((
                TxnOutcome::SessionCreated {
                    id,
                    timeout_ms: *timeout_ms,
                },
                Vec::new(),
            ))
        }
        Txn::CloseSession { id } => {
            if !store.session_exists(*id)? {
                return Ok((
                    TxnOutcome::SessionClosed(Err(TxnError::SessionExpired { id: *id })),
                    Vec::new(),
                ));
            }
            let paths = store.ephemerals_of(*id)?;
            let mut deleted = Vec::with_capacity(paths.len());
            for path in paths {
                // The index is kept in the same batches as the tree; a missing
                // node means the database is inconsistent.
                match ov.node(&path)? {
                    Some(rec) if rec.stat.ephemeral_owner == *id => {
                        ov.remove(&path, &rec)?;
                        deleted.push(path);
                    }
                    _ => {
                        return Err(StoreError::Corrupt {
                            what: "ephemeral index",
                            detail: format!("session {id} lists {path}, which it does not own"),
                        })
                    }
                }
            }
            store.delete(batch, CF_SESSIONS, &u64_key(*id))?;
            let events = ov.commit(batch)?;
            Ok((TxnOutcome::SessionClosed(Ok(deleted)), events))
        }
        Txn::Reap { candidates } => {
            let mut paths = Vec::new();
            for cand in candidates {
                if cand.path == "/"
                    || validate_path(&cand.path, store.config().max_path_bytes).is_err()
                {
                    continue;
                }
                if let Some(rec) = ov.node(&cand.path)? {
                    let due = rec.due_ms().is_some_and(|d| d <= time_ms);
                    if due && rec.stat.czxid == cand.czxid {
                        ov.remove(&cand.path, &rec)?;
                        paths.push(cand.path.clone());
                    }
                }
            }
            let events = ov.commit(batch)?;
            Ok((TxnOutcome::Reaped { paths }, events))
        }
        Txn::Noop => Ok((TxnOutcome::Noop, Vec::new())),
        Txn::Fenced { fence, txn } => {
            let scope = FenceScope::Lock;
            apply_fenced(store, batch, ov, zxid, time_ms, scope, fence, txn)
        }
        Txn::FencedBy { scope, fence, txn } => {
            apply_fenced(store, batch, ov, zxid, time_ms, *scope, fence, txn)
        }
    }
}

/// A fenced txn: `txn` applies only while `fence.token` is the czxid of the
/// lowest contender of `scope`'s `fence.lock`; otherwise `Fenced`.
#[allow(clippy::too_many_arguments)]
fn apply_fenced<T: ApplyTarget>(
    store: &T,
    batch: &mut T::Batch,
    ov: Overlay<'_, T>,
    zxid: Zxid,
    time_ms: u64,
    scope: FenceScope,
    fence: &Fence,
    txn: &Txn,
) -> Result<Effects, StoreError> {
    let refuse = |error: TxnError| match txn {
        Txn::Multi(_) => TxnOutcome::Multi(Err(MultiError { index: 0, error })),
        _ => TxnOutcome::Op(Err(error)),
    };
    if !matches!(txn, Txn::Op(_) | Txn::Multi(_)) {
        let error = bad_arguments("a fence guards only an op or a multi");
        return Ok((refuse(error), Vec::new()));
    }
    // Entries before a fenced one are written first (it is applied
    // alone), so the in-memory tree is the state this entry sees.
    let holder = match store.holder(scope, &fence.lock) {
        Ok(holder) => holder.map(|(_, stat)| stat.czxid),
        Err(error) => return Ok((refuse(error), Vec::new())),
    };
    if holder != Some(fence.token) {
        let error = TxnError::Fenced {
            lock: fence.lock.clone(),
            token: fence.token,
            holder,
        };
        return Ok((refuse(error), Vec::new()));
    }
    apply_txn(store, batch, ov, zxid, time_ms, txn)
}

fn check_version(path: &str, expected: i32, stat: &Stat) -> Result<(), TxnError> {
    if expected != -1 && expected != stat.version {
        return Err(TxnError::BadVersion {
            path: path.to_string(),
            expected,
            actual: stat.version,
        });
    }
    Ok(())
}

fn bad_arguments(message: &str) -> TxnError {
    TxnError::BadArguments {
        message: message.to_string(),
    }
}

impl<T: ApplyTarget> Overlay<'_, T> {
    /// The node at `path` as earlier ops of this entry left it.
    fn node(&mut self, path: &str) -> Result<Option<NodeRecord>, StoreError> {
        if let Some(slot) = self.nodes.get(path) {
            return Ok(slot.after.clone());
        }
        let rec = match self.pending.get(path) {
            Some(rec) => rec.clone(),
            None => self.store.read_node(path),
        };
        self.nodes.insert(
            path.to_string(),
            Slot {
                before: rec.clone(),
                after: rec.clone(),
                dirty: false,
            },
        );
        Ok(rec)
    }

    /// Replaces the node at `path`, which must have been read with [`Self::node`].
    fn put(&mut self, path: &str, rec: Option<NodeRecord>) {
        match self.nodes.get_mut(path) {
            Some(slot) => {
                slot.after = rec;
                slot.dirty = true;
            }
            None => unreachable!("overlay write before read of {path}"),
        }
    }

    /// Records a change; `node` is the state it left at `path` (the parent's
    /// for `ChildrenChanged`, where the data is left out).
    fn event(&mut self, path: &str, kind: ChangeKind, node: Option<&NodeRecord>) {
        let with_data = matches!(kind, ChangeKind::Created | ChangeKind::DataChanged);
        self.events.push(ChangeEvent {
            zxid: self.zxid,
            path: path.to_string(),
            kind,
            stat: node.map(|n| n.stat),
            data: node.filter(|_| with_data).map(|n| n.data.clone()),
        });
    }

    fn op(&mut self, op: &Op) -> Result<OpResult, Fail> {
        match op {
            Op::Create {
                path,
                data,
                mode,
                session,
                ttl_ms,
            } => self.create(path, data, *mode, *session, *ttl_ms),
            Op::Set {
                path,
                data,
                version,
            } => self.set(path, data, *version),
            Op::Delete { path, version } => self.delete(path, *version),
            Op::Check { path, version } => {
                validate_path(path, self.store.config().max_path_bytes)?;
                let rec = self
                    .node(path)?
                    .ok_or_else(|| TxnError::NoNode { path: path.clone() })?;
                check_version(path, *version, &rec.stat)?;
                Ok(OpResult::Checked { path: path.clone() })
            }
        }
    }

    fn check_data(&self, data: &Bytes) -> Result<(), TxnError> {
        let limit = self.store.config().max_data_bytes;
        if data.len() > limit {
            return Err(TxnError::TooLarge {
                size: data.len(),
                limit,
            });
        }
        Ok(())
    }

    fn create(
        &mut self,
        path: &str,
        data: &Bytes,
        mode: NodeMode,
        session: SessionId,
        ttl_ms: Option<u64>,
    ) -> Result<OpResult, Fail> {
        match (mode.is_ttl(), ttl_ms) {
            (true, None) => return Err(bad_arguments("ttl modes need ttl_ms").into()),
            (true, Some(0)) => return Err(bad_arguments("ttl_ms must be above 0").into()),
            (false, Some(_)) => return Err(bad_arguments("ttl_ms is only for ttl modes").into()),
            _ => {}
        }
        if mode.is_ephemeral() && session == 0 {
            return Err(bad_arguments("ephemeral nodes need a session").into());
        }
        // A sequential path gets a 10-character suffix: validate the final shape.
        let shape = if mode.is_sequential() {
            format!("{path}0000000000")
        } else {
            path.to_string()
        };
        validate_path(&shape, self.store.config().max_path_bytes)?;
        self.check_data(data)?;
        if mode.is_ephemeral() && !self.store.session_exists(session)? {
            return Err(TxnError::SessionExpired { id: session }.into());
        }
        let Some((parent, _)) = split_parent(&shape) else {
            return Err(TxnError::NodeExists {
                path: "/".to_string(),
            }
            .into());
        };
        let parent = parent.to_string();
        let mut parent_rec = self.node(&parent)?.ok_or_else(|| TxnError::NoNode {
            path: parent.clone(),
        })?;
        let path = if mode.is_sequential() {
            format!("{path}{:010}", parent_rec.stat.cversion)
        } else {
            shape
        };
        if self.node(&path)?.is_some() {
            return Err(TxnError::NodeExists { path }.into());
        }
        if parent_rec.mode.is_ephemeral() {
            return Err(TxnError::NoChildrenForEphemerals { path }.into());
        }
        let z = self.zxid.0;
        let stat = Stat {
            czxid: z,
            mzxid: z,
            pzxid: z,
            ctime: self.time_ms,
            mtime: self.time_ms,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: if mode.is_ephemeral() { session } else { 0 },
            data_length: data.len() as u32,
            num_children: 0,
        };
        let rec = NodeRecord {
            stat,
            mode,
            ttl_ms,
            data: data.clone(),
        };
        self.event(&path, ChangeKind::Created, Some(&rec));
        self.put(&path, Some(rec));
        parent_rec.stat.cversion = parent_rec.stat.cversion.wrapping_add(1);
        parent_rec.stat.pzxid = z;
        parent_rec.stat.num_children += 1;
        self.event(&parent, ChangeKind::ChildrenChanged, Some(&parent_rec));
        self.put(&parent, Some(parent_rec));
        Ok(OpResult::Created { path, stat })
    }

    fn set(&mut self, path: &str, data: &Bytes, version: i32) -> Result<OpResult, Fail> {
        validate_path(path, self.store.config().max_path_bytes)?;
        self.check_data(data)?;
        let mut rec = self.node(path)?.ok_or_else(|| TxnError::NoNode {
            path: path.to_string(),
        })?;
        check_version(path, version, &rec.stat)?;
        rec.stat.version = rec.stat.version.wrapping_add(1);
        rec.stat.mzxid = self.zxid.0;
        rec.stat.mtime = self.time_ms;
        rec.stat.data_length = data.len() as u32;
        rec.data = data.clone();
        let stat = rec.stat;
        self.event(path, ChangeKind::DataChanged, Some(&rec));
        self.put(path, Some(rec));
        Ok(OpResult::Set {
            path: path.to_string(),
            stat,
        })
    }

    fn delete(&mut self, path: &str, version: i32) -> Result<OpResult, Fail> {
        validate_path(path, self.store.config().max_path_bytes)?;
        if path == "/" {
            return Err(bad_arguments("the root cannot be deleted").into());
        }
        let rec = self.node(path)?.ok_or_else(|| TxnError::NoNode {
            path: path.to_string(),
        })?;
        check_version(path, version, &rec.stat)?;
        if rec.stat.num_children > 0 {
            return Err(TxnError::NotEmpty {
                path: path.to_string(),
            }
            .into());
        }
        self.remove(path, &rec)?;
        Ok(OpResult::Deleted {
            path: path.to_string(),
        })
    }

    /// Deletes the childless node `rec` at `path` and updates its parent.
    fn remove(&mut self, path: &str, rec: &NodeRecord) -> Result<(), StoreError> {
        assert_eq!(
            rec.stat.num_children, 0,
            "removing {path}, which has children"
        );
        let Some((parent, _)) = split_parent(path) else {
            unreachable!("removing the root");
        };
        let parent = parent.to_string();
        let mut parent_rec = self.node(&parent)?.ok_or_else(|| StoreError::Corrupt {
            what: "node tree",
            detail: format!("{path} exists but its parent does not"),
        })?;
        self.put(path, None);
        parent_rec.stat.cversion = parent_rec.stat.cversion.wrapping_add(1);
        parent_rec.stat.pzxid = self.zxid.0;
        parent_rec.stat.num_children = parent_rec.stat.num_children.saturating_sub(1);
        self.event(path, ChangeKind::Deleted, None);
        self.event(&parent, ChangeKind::ChildrenChanged, Some(&parent_rec));
        self.put(&parent, Some(parent_rec));
        Ok(())
    }

    /// Writes every changed node and the index entries derived from it,
    /// hands the node changes to the run, and returns the events.
    fn commit(self, batch: &mut T::Batch) -> Result<Vec<ChangeEvent>, StoreError> {
        let store = self.store;
        for (index, event) in self.events.iter().enumerate() {
            let index = u32::try_from(index).map_err(|_| StoreError::Corrupt {
                what: "change history",
                detail: format!("entry {} made more than u32::MAX changes", self.zxid),
            })?;
            store.put(
                batch,
                CF_CHANGES,
                &change_key(self.zxid.0, index),
                &crate::changes::encode_change(event),
            )?;
        }
        for (path, slot) in self.nodes {
            if !slot.dirty {
                continue;
            }
            let key = node_key(&path);
            match &slot.after {
                Some(rec) => store.put(batch, CF_NODES, &key, &rec.encode())?,
                None => store.delete(batch, CF_NODES, &key)?,
            }
            let owner = |r: &Option<NodeRecord>| r.as_ref().map_or(0, |r| r.stat.ephemeral_owner);
            let (old_owner, new_owner) = (owner(&slot.before), owner(&slot.after));
            if old_owner != new_owner {
                if old_owner != 0 {
                    store.delete(batch, CF_EPHEMERALS, &ephemeral_key(old_owner, &path))?;
                }
                if new_owner != 0 {
                    store.put(batch, CF_EPHEMERALS, &ephemeral_key(new_owner, &path), &[])?;
                }
            }
            let old_due = slot.before.as_ref().and_then(NodeRecord::due_ms);
            let new_due = slot.after.as_ref().and_then(NodeRecord::due_ms);
            if let Some(due) = old_due {
                if old_due != new_due {
                    store.delete(batch, CF_REAP, &reap_key(due, &path))?;
                }
            }
            if let (Some(due), Some(rec)) = (new_due, &slot.after) {
                store.put(
                    batch,
                    CF_REAP,
                    &reap_key(due, &path),
                    &u64_key(rec.stat.czxid),
                )?;
            }
            self.pending.insert(path, slot.after);
        }
        Ok(self.events)
    }
}
