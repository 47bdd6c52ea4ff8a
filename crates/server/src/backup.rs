//! Backup and restore: a consistent snapshot of a live member in one file, and
//! the data directory of a new member made from it.
//!
//! Where it sits: `GET /v1/admin/snapshot` ([`crate::http::admin`]) cuts a
//! RocksDB checkpoint of the store with its exact `last_applied` zxid and the
//! tree digest of that same state ([`keeper_store::Store::checkpoint_with_digest`]),
//! writes it with [`write_backup`] and streams the file. `keeper restore`
//! ([`restore`]) reads it back: it checks everything before it touches the target
//! directory, builds the new member's store in a staging directory beside it, checks
//! that the restored tree has the stamped digest, and only then renames the staging
//! directory into place. A corrupt or truncated file is refused with a clear error
//! and leaves nothing behind.
//!
//! # File format (version 1, integers big-endian)
//! ```text
//! "KEEPERBK" | version u32 | zxid u64 | digest u64 | file count u32
//! per file:  name length u16 | name (UTF-8, a plain file name) | size u64 | bytes
//! trailer:   "KEEPEND!" | CRC-32 of every byte before the trailer u32 | total length u64
//! ```
//! `digest` is the member's `GET /v1/cluster/digest` value at `zxid`: a cluster
//! restored from the file reports exactly it.

use keeper_store::{Store, StoreConfig, StoreError, ZabMeta};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// First bytes of a backup file.
pub const MAGIC: &[u8; 8] = b"KEEPERBK";
/// First bytes of the trailer.
pub const TRAILER_MAGIC: &[u8; 8] = b"KEEPEND!";
/// The format version written and read.
pub const VERSION: u32 = 1;
/// Bytes of the trailer.
pub const TRAILER_BYTES: u64 = 8 + 4 + 8;
/// Most files a backup may hold (a checkpoint has a few dozen).
pub const MAX_FILES: u32 = 100_000;
/// Longest file name in a backup.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a backup could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file is not a Keeper backup, is damaged, or was cut short.
    #[error("backup file refused: {0}")]
    Corrupt(String),
    /// The target is not usable (e.g. it already holds data).
    #[error("restore target refused: {0}")]
    Target(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// What a backup holds, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupInfo {
    /// The last zxid applied in the snapshot.
    pub zxid: u64,
    /// The tree digest of the snapshot (as `/v1/cluster/digest` reports it).
    pub digest: u64,
    /// Files of the checkpoint.
    pub files: u32,
    /// Bytes of the whole backup file.
    pub bytes: u64,
}

/// A writer that keeps the CRC-32 and length of everything written.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the checkpoint in `checkpoint_dir` (cut at `zxid`, tree digest `digest`)
/// as a backup file to `out`.
pub fn write_backup(
    checkpoint_dir: &Path,
    zxid: u64,
    digest: u64,
    out: impl Write,
) -> Result<BackupInfo, BackupError> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(checkpoint_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            return Err(BackupError::Target(format!(
                "checkpoint holds a non-file {:?}",
                entry.file_name()
            )));
        }
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| BackupError::Target(format!("non-UTF-8 file name {n:?}")))?;
        names.push(name);
    }
    names.sort();
    let count = u32::try_from(names.len())
        .ok()
        .filter(|n| *n <= MAX_FILES)
        .ok_or_else(|| BackupError::Target("too many checkpoint files".into()))?;
    let mut w = Summing {
        inner: BufWriter::new(out),
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_be_bytes())?;
    w.write_all(&zxid.to_be_bytes())?;
    w.write_all(&digest.to_be_bytes())?;
    w.write_all(&count.to_be_bytes())?;
    for name in &names {
        let mut file = File::open(checkpoint_dir.join(name))?;
        let size = file.metadata()?.len();
        w.write_all(&(name.len() as u16).to_be_bytes())?;
        w.write_all(name.as_bytes())?;
        w.write_all(&size.to_be_bytes())?;
        let copied = std::io::copy(&mut (&mut file).take(size), &mut w)?;
        if copied != size {
            return Err(BackupError::Target(format!(
                "{name} shrank while being read"
            )));
        }
    }
    let crc = w.crc.clone().finalize();
    let total = w.len + TRAILER_BYTES;
    let mut inner = w.inner;
    inner.write_all(TRAILER_MAGIC)?;
    inner.write_all(&crc.to_be_bytes())?;
    inner.write_all(&total.to_be_bytes())?;
    inner.flush()?;
    Ok(BackupInfo {
        zxid,
        digest,
        files: count,
        bytes: total,
    })
}

/// A reader that keeps the CRC-32 and length of everything read.
struct Checked<R> {
    inner: R,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<R: Read> Checked<R> {
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), BackupError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                BackupError::Corrupt(format!("truncated: the file ends inside {what}"))
            }
            _ => BackupError::Io(e),
        })?;
        self.crc.update(buf);
        self.len += buf.len() as u64;
        Ok(())
    }
    fn u16(&mut self, what: &str) -> Result<u16, BackupError> {
        let mut b = [0u8; 2];
        self.exact(&mut b, what)?;
        Ok(u16::from_be_bytes(b))
    }
    fn u32(&mut self, what: &str) -> Result<u32, BackupError> {
        let mut b = [0u8; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self, what: &str) -> Result<u64, BackupError> {
        let mut b = [0u8; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_be_bytes(b))
    }
}

/// Reads and checks the backup `file` completely, writing its checkpoint files into
/// `into` (a fresh directory). Every size is checked against the file's length
/// before anything is allocated, and the CRC-32 and length of the trailer must match.
pub fn unpack(file: &Path, into: &Path) -> Result<BackupInfo, BackupError> {
    let file_len = std::fs::metadata(file)?.len();
    if file_len < 8 + 4 + 8 + 8 + 4 + TRAILER_BYTES {
        return Err(BackupError::Corrupt(format!(
            "truncated: {file_len} bytes is shorter than any backup"
        )));
    }
    let body_len = file_len - TRAILER_BYTES;
    let mut r = Checked {
        inner: BufReader::new(File::open(file)?),
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    let mut magic = [0u8; 8];
    r.exact(&mut magic, "the header")?;
    if &magic != MAGIC {
        return Err(BackupError::Corrupt(
            "not a Keeper backup (bad magic)".into(),
        ));
    }
    let version = r.u32("the header")?;
    if version != VERSION {
        return Err(BackupError::Corrupt(format!(
            "format version {version}; this keeper reads version {VERSION}"
        )));
    }
    let zxid = r.u64("the header")?;
    let digest = r.u64("the header")?;
    let files = r.u32("the header")?;
    if files > MAX_FILES {
        return Err(BackupError::Corrupt(format!("claims {files} files")));
    }
    std::fs::create_dir_all(into)?;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..files {
        let name_len = usize::from(r.u16("a file header")?);
        if name_len == 0 || name_len > MAX_NAME_BYTES {
            return Err(BackupError::Corrupt(format!(
                "file {i} has a name of {name_len} bytes"
            )));
        }
        let mut name = vec![0u8; name_len];
        r.exact(&mut name, "a file name")?;
        let name = String::from_utf8(name)
            .map_err(|_| BackupError::Corrupt(format!("file {i} has a non-UTF-8 name")))?;
        if name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
            return Err(BackupError::Corrupt(format!(
                "file name {name:?} is not plain"
            )));
        }
        let size = r.u64("a file header")?;
        if size > body_len.saturating_sub(r.len) {
            return Err(BackupError::Corrupt(format!(
                "truncated: {name} claims {size} bytes, more than the file holds"
            )));
        }
        let mut out = BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(into.join(&name))
                .map_err(|e| BackupError::Corrupt(format!("file {name}: {e}")))?,
        );
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let chunk = &mut buf[..n];
            r.exact(chunk, "file data")?;
            out.write_all(chunk)?;
            left -= n as u64;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
    }
    if r.len > body_len {
        return Err(BackupError::Corrupt(
            "truncated: the trailer is cut short or missing".into(),
        ));
    }
    if r.len < body_len {
        return Err(BackupError::Corrupt(format!(
            "{} unexpected bytes before the trailer",
            body_len - r.len
        )));
    }
    let crc = r.crc.clone().finalize();
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    r.inner
        .read_exact(&mut trailer)
        .map_err(|_| BackupError::Corrupt("truncated: no trailer".into()))?;
    if &trailer[..8] != TRAILER_MAGIC {
        return Err(BackupError::Corrupt(
            "no trailer where the file ends (truncated or appended to)".into(),
        ));
    }
    let want_crc = u32::from_be_bytes([trailer[8], trailer[9], trailer[10], trailer[11]]);
    let mut total = [0u8; 8];
    total.copy_from_slice(&trailer[12..20]);
    let want_len = u64::from_be_bytes(total);
    if want_len != file_len {
        return Err(BackupError::Corrupt(format!(
            "truncated or extended: the trailer says {want_len} bytes, the file has {file_len}"
        )));
    }
    if want_crc != crc {
        return Err(BackupError::Corrupt(format!(
            "checksum mismatch (CRC-32 {crc:08x}, expected {want_crc:08x}): the file is damaged"
        )));
    }
    Ok(BackupInfo {
        zxid,
        digest,
        files,
        bytes: file_len,
    })
}

/// What [`restore`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    pub info: BackupInfo,
    /// The digest of the restored tree (equal to `info.digest`).
    pub restored_digest: u64,
}

/// Makes `data_dir` the data directory of a member of a new cluster holding exactly
/// the backup's tree and sessions: log empty from the snapshot's zxid on, epochs at
/// the snapshot's epoch (so the new cluster's first leader starts a later one).
/// `data_dir` must not exist or be empty. Nothing is left behind on failure.
pub fn restore(
    file: &Path,
    data_dir: &Path,
    config: StoreConfig,
) -> Result<RestoreReport, BackupError> {
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir)
            .map_err(|e| BackupError::Target(format!("{}: {e}", data_dir.display())))?;
        if entries.next().is_some() {
            return Err(BackupError::Target(format!(
                "{} is not empty; restore only into a new, empty data directory",
                data_dir.display()
            )));
        }
    }
    let staging = staging_dir(data_dir)?;
    let result = restore_into(file, &staging, config);
    match result {
        Ok(report) => {
            let target = staging.join("data");
            if data_dir.exists() {
                std::fs::remove_dir(data_dir)?;
            }
            std::fs::rename(&target, data_dir)?;
            let _ = std::fs::remove_dir_all(&staging);
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// A fresh staging directory beside `data_dir` (same file system: the final rename
/// is atomic).
fn staging_dir(data_dir: &Path) -> Result<PathBuf, BackupError> {
    let name = data_dir
        .file_name()
        .ok_or_else(|| BackupError::Target(format!("{} has no name", data_dir.display())))?
        .to_string_lossy()
        .to_string();
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let staging = parent.join(format!(".{name}.restore-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    Ok(staging)
}

fn restore_into(
    file: &Path,
    staging: &Path,
    config: StoreConfig,
) -> Result<RestoreReport, BackupError> {
    let checkpoint = staging.join("checkpoint");
    let info = unpack(file, &checkpoint)?;
    let store = Store::open(&staging.join("data"), config)?;
    let zxid = store
        .install_snapshot(&checkpoint)
        .map_err(|e| BackupError::Corrupt(format!("the snapshot does not open: {e}")))?;
    if zxid.0 != info.zxid {
        return Err(BackupError::Corrupt(format!(
            "the header says zxid {:#x}, the snapshot holds {:#x}",
            info.zxid, zxid.0
        )));
    }
    let epoch = zxid.epoch();
    store.set_zab_meta(ZabMeta {
        accepted_epoch: epoch,
        current_epoch: epoch,
    })?;
    let restored_digest = store.tree_digest()?;
    if restored_digest != info.digest {
        return Err(BackupError::Corrupt(format!(
            "the restored tree has digest {restored_digest}, the backup was stamped {}",
            info.digest
        )));
    }
    store.flush_tree()?;
    drop(store);
    Ok(RestoreReport {
        info,
        restored_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_checkpoint(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
        std::fs::write(dir.join("000001.sst"), vec![7u8; 3000]).unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
    }

    #[test]
    fn a_backup_unpacks_to_the_same_files() {
        let tmp = tempfile::tempdir().unwrap();
        sample_checkpoint(&tmp.path().join("cp"));
        let file = tmp.path().join("b.ksnap");
        let info = write_backup(
            &tmp.path().join("cp"),
            0x5_0000_0007,
            42,
            File::create(&file).unwrap(),
        )
        .unwrap();
        assert_eq!(info.files, 3);
        assert_eq!(info.bytes, std::fs::metadata(&file).unwrap().len());
        let back = unpack(&file, &tmp.path().join("out")).unwrap();
        assert_eq!(back, info);
        assert_eq!(
            std::fs::read(tmp.path().join("out/000001.sst")).unwrap(),
            vec![7u8; 3000]
        );
        assert!(tmp.path().join("out/empty").exists());
    }

    #[test]
    fn damaged_or_truncated_backups_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        sample_checkpoint(&tmp.path().join("cp"));
        let file = tmp.path().join("b.ksnap");
        write_backup(&tmp.path().join("cp"), 9, 1, File::create(&file).unwrap()).unwrap();
        let good = std::fs::read(&file).unwrap();
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("cut in the header", good[..20].to_vec()),
            ("cut in the data", good[..good.len() / 2].to_vec()),
            ("cut in the trailer", good[..good.len() - 3].to_vec()),
            ("appended to", [good.clone(), b"x".to_vec()].concat()),
        ];
        let mut flipped = good.clone();
        flipped[200] ^= 0x40;
        cases.push(("a flipped bit", flipped));
        let mut magic = good.clone();
        magic[0] = b'X';
        cases.push(("bad magic", magic));
        for (i, (what, bytes)) in cases.into_iter().enumerate() {
            let bad = tmp.path().join(format!("bad-{i}"));
            std::fs::write(&bad, &bytes).unwrap();
            let err = unpack(&bad, &tmp.path().join(format!("out-{i}"))).unwrap_err();
            assert!(
                matches!(err, BackupError::Corrupt(_)),
                "{what}: expected Corrupt, got {err}"
            );
        }
    }

    #[test]
    fn a_refused_restore_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        sample_checkpoint(&tmp.path().join("cp"));
        let file = tmp.path().join("b.ksnap");
        write_backup(&tmp.path().join("cp"), 9, 1, File::create(&file).unwrap()).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
        let target = tmp.path().join("member-1");
        let err = restore(&file, &target, StoreConfig::default()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(!target.exists());
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            !left.iter().any(|n| n.contains("restore")),
            "staging left behind: {left:?}"
        );
        // A non-empty target is refused before anything is read.
        std::fs::create_dir_all(target.join("x")).unwrap();
        let err = restore(&file, &target, StoreConfig::default()).unwrap_err();
        assert!(matches!(err, BackupError::Target(_)), "{err}");
    }
}
