//! SNAP catch-up over the peer link: the leader streams a RocksDB checkpoint
//! of its store in chunks; the follower writes the files into a staging
//! directory and, when the stream is complete, installs it in place
//! (`Store::install_snapshot`).
//!
//! The stream travels on the same FIFO link as the ZAB messages, so the
//! entries the leader sends after `snapshot_sent` arrive after the snapshot.
//! The sender paces itself on the link's queue depth so a large snapshot
//! never fills memory.

use super::wire::PeerMsg;
use crate::peer::PeerHandle;
use bytes::Bytes;
use keeper_zab::{NodeId, Zxid};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest file name accepted in a stream.
const MAX_FILE_NAME_BYTES: usize = 255;
/// The sender waits while the link holds more than this many queued frames.
const MAX_QUEUED_CHUNKS: usize = 16;

/// Streams the checkpoint in `dir` (at `zxid`) to `to`; returns `false` if the
/// link failed. Removes `dir` afterwards either way.
pub async fn stream_checkpoint(
    peers: PeerHandle<PeerMsg>,
    to: NodeId,
    dir: PathBuf,
    zxid: Zxid,
    chunk_bytes: usize,
) -> bool {
    let ok = stream(&peers, to, &dir, zxid, chunk_bytes.max(1)).await;
    if let Err(e) = &ok {
        tracing::warn!(peer = to, error = %e, "snapshot stream failed");
    }
    let _ = std::fs::remove_dir_all(&dir);
    ok.is_ok()
}

async fn stream(
    peers: &PeerHandle<PeerMsg>,
    to: NodeId,
    dir: &Path,
    zxid: Zxid,
    chunk_bytes: usize,
) -> Result<(), String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    send(peers, to, PeerMsg::SnapBegin { zxid })?;
    let mut total = 0u64;
    for name in &names {
        let mut file = File::open(dir.join(name)).map_err(|e| e.to_string())?;
        let mut sent_any = false;
        loop {
            let mut buf = vec![0u8; chunk_bytes];
            let n = read_full(&mut file, &mut buf).map_err(|e| e.to_string())?;
            if n == 0 && sent_any {
                break;
            }
            buf.truncate(n);
            total += n as u64;
            while peers.queue_depth(to).unwrap_or(0) > MAX_QUEUED_CHUNKS {
                if !peers.is_connected(to) {
                    return Err("link down".into());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            send(
                peers,
                to,
                PeerMsg::SnapChunk {
                    file: name.clone(),
                    data: Bytes::from(buf),
                },
            )?;
            sent_any = true;
            if n < chunk_bytes {
                break;
            }
        }
    }
    send(
        peers,
        to,
        PeerMsg::SnapEnd {
            zxid,
            files: names.len() as u32,
            bytes: total,
        },
    )?;
    tracing::info!(peer = to, zxid = %zxid, files = names.len(), bytes = total, "snapshot streamed");
    Ok(())
}

fn send(peers: &PeerHandle<PeerMsg>, to: NodeId, msg: PeerMsg) -> Result<(), String> {
    peers.send(to, msg).map_err(|e| e.to_string())
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// A snapshot being received from `from`.
pub struct Incoming {
    pub from: NodeId,
    pub zxid: Zxid,
    pub dir: PathBuf,
    files: Vec<String>,
    current: Option<(String, File)>,
    bytes: u64,
}

impl Incoming {
    /// Starts receiving into `dir` (emptied first).
    pub fn begin(from: NodeId, zxid: Zxid, dir: PathBuf) -> std::io::Result<Incoming> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Incoming {
            from,
            zxid,
            dir,
            files: Vec::new(),
            current: None,
            bytes: 0,
        })
    }

    /// Appends a chunk of `file`. File names are plain names; anything that
    /// could escape the staging directory is refused.
    pub fn chunk(&mut self, file: &str, data: &[u8]) -> Result<(), String> {
        if file.is_empty()
            || file.len() > MAX_FILE_NAME_BYTES
            || file.contains('/')
            || file.contains('\\')
            || file == "."
            || file == ".."
            || file.contains('\0')
        {
            return Err(format!("bad snapshot file name {file:?}"));
        }
        let same = matches!(&self.current, Some((name, _)) if name == file);
        if !same {
            if self.files.iter().any(|f| f == file) {
                return Err(format!("snapshot file {file:?} sent twice"));
            }
            self.finish_current()?;
            let f = File::create(self.dir.join(file)).map_err(|e| e.to_string())?;
            self.files.push(file.to_string());
            self.current = Some((file.to_string(), f));
        }
        if let Some((_, f)) = self.current.as_mut() {
            f.write_all(data).map_err(|e| e.to_string())?;
        }
        self.bytes += data.len() as u64;
        Ok(())
    }

    fn finish_current(&mut self) -> Result<(), String> {
        if let Some((_, f)) = self.current.take() {
            f.sync_all().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Checks the end marker against what arrived and makes the files durable.
    pub fn end(&mut self, zxid: Zxid, files: u32, bytes: u64) -> Result<(), String> {
        self.finish_current()?;
        if zxid != self.zxid || files as usize != self.files.len() || bytes != self.bytes {
            return Err(format!(
                "snapshot stream incomplete: got {} files / {} bytes at {}, expected {files} / {bytes} at {zxid}",
                self.files.len(),
                self.bytes,
                self.zxid
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_refuses_names_that_escape_the_staging_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut inc = Incoming::begin(1, Zxid(5), dir.path().join("in")).unwrap();
        for bad in ["", "../x", "a/b", "..", ".", "a\0b"] {
            assert!(inc.chunk(bad, b"x").is_err(), "{bad:?} accepted");
        }
        inc.chunk("CURRENT", b"abc").unwrap();
        inc.chunk("CURRENT", b"def").unwrap();
        inc.chunk("000001.sst", b"").unwrap();
        assert!(inc.chunk("CURRENT", b"again").is_err());
        assert!(
            inc.end(Zxid(5), 2, 5).is_err(),
            "byte count mismatch accepted"
        );
        let mut inc2 = Incoming::begin(1, Zxid(5), dir.path().join("in2")).unwrap();
        inc2.chunk("CURRENT", b"abcdef").unwrap();
        inc2.end(Zxid(5), 1, 6).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("in2/CURRENT")).unwrap(),
            b"abcdef"
        );
    }
}
