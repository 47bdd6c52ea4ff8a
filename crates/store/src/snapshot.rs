//! Snapshots: a RocksDB checkpoint of the whole store (tree, sessions, log,
//! meta), cut at an exact `last_applied`, and installing one in place of a
//! member's data directory (ZAB SNAP catch-up).

use crate::{Store, StoreConfig, StoreError};
use keeper_zab::Zxid;
use rocksdb::checkpoint::Checkpoint;
use std::path::Path;
use std::sync::atomic::Ordering;

impl Store {
    /// Writes a RocksDB checkpoint of the whole store into `dir` (which must
    /// not exist) and returns its `last_applied` zxid. No apply runs while the
    /// checkpoint is cut. Blocking disk work (a flush, then hard links): run
    /// it off async tasks.
    ///
    /// The tree is flushed first without holding off applies, so the cut
    /// itself (which flushes again, under the apply lock) only writes what
    /// was applied meanwhile: with a large store, applies on the leader stall
    /// for that small flush rather than for a flush of everything.
    pub fn checkpoint(&self, dir: &Path) -> Result<Zxid, StoreError> {
        self.flush_tree()?;
        let _guard = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let zxid = Zxid(self.last_applied.load(Ordering::Acquire));
        Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(zxid)
    }

    /// Like [`Store::checkpoint`], and also returns the [`Store::tree_digest`] of
    /// exactly the checkpointed state (no apply runs between the two): what a
    /// backup is stamped with. The digest reads the whole tree, so applies wait
    /// that long.
    pub fn checkpoint_with_digest(&self, dir: &Path) -> Result<(Zxid, u64), StoreError> {
        let _guard = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let zxid = Zxid(self.last_applied.load(Ordering::Acquire));
        Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        let digest = self.tree_digest()?;
        Ok((zxid, digest))
    }

    /// Replaces the store in `data_dir` with a copy of the checkpoint in
    /// `checkpoint_dir` and opens it. The caller must have dropped any `Store`
    /// open on `data_dir`. Returns the store; its `last_applied()` is the
    /// checkpoint's zxid.
    pub fn install_checkpoint(
        checkpoint_dir: &Path,
        data_dir: &Path,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        if data_dir.exists() {
            std::fs::remove_dir_all(data_dir)?;
        }
        copy_dir(checkpoint_dir, data_dir)?;
        Store::open(data_dir, config)
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
