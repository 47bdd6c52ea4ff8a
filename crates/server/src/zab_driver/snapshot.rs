//! SNAP catch-up over the peer link, off the driver task.
//!
//! Leader ([`OutStream`]): on the core's `SendSnapshot` the driver sends
//! `SnapBegin{stream}` and starts one thread per stream, which waits until the
//! applier has applied every commit emitted so far, cuts a RocksDB checkpoint
//! (`Store::checkpoint`), and streams its files as `SnapChunk`s, then
//! `SnapEnd{zxid}`. Flow control: at most `window_bytes` are sent and not yet
//! acknowledged by the receiver (`SnapAck{bytes}` after it wrote them), and a
//! stream whose receiver acknowledges nothing for `stall_timeout` fails. The
//! thread reports `SnapshotSent` to the driver, which calls the core's
//! `snapshot_sent` (the DIFF after the snapshot follows on the same FIFO link).
//! While a stream lives the driver sends `SnapWait{stream}` every tick, so
//! the follower hears from its leader even while the checkpoint is cut. One
//! stream per follower: a newer one, a role change or a broken link cancels
//! the older. The log is never compacted above a live stream's zxid
//! ([`OutStream::needs_log_after`]): the DIFF after the snapshot reads it.
//!
//! Follower ([`InStream`]): the chunks of the stream the core expects go to
//! a writer thread that writes them into a staging directory and acks them;
//! at `SnapEnd` it makes the files durable and reports `SnapshotReceived`.
//! The driver then installs the snapshot in a blocking task (see
//! `Driver::start_install`). Every stream message counts as progress for the
//! core (`Core::snapshot_progress`), so a long transfer is not mistaken for
//! a dead leader.

use super::wire::PeerMsg;
use super::Internal;
use crate::applier::AppliedView;
use crate::peer::PeerHandle;
use bytes::Bytes;
use keeper_store::Store;
use keeper_zab::{NodeId, Zxid};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Longest file name accepted in a stream.
const MAX_FILE_NAME_BYTES: usize = 255;
/// How often a waiting sender re-checks cancellation, acks and the link.
const POLL: Duration = Duration::from_millis(2);

/// Identifies one snapshot stream of one leader run.
pub type StreamId = u64;

/// What a leader's stream needs.
pub struct OutStreamParams {
    pub to: NodeId,
    pub id: StreamId,
    /// The snapshot must include every commit up to here (applied first).
    pub include: Zxid,
    pub dir: PathBuf,
    pub chunk_bytes: usize,
    pub window_bytes: u64,
    pub stall_timeout: Duration,
}

/// A leader's live stream to one follower (see the module docs).
pub struct OutStream {
    pub to: NodeId,
    pub id: StreamId,
    cancel: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    /// Lowest zxid whose successors the stream's DIFF needs: `include`
    /// until the checkpoint is cut, then the checkpoint's zxid.
    floor: Arc<AtomicU64>,
}

impl OutStream {
    /// Starts the stream's thread. It reports `Internal::SnapshotSent` when
    /// done (or failed) unless cancelled first.
    pub fn start(
        params: OutStreamParams,
        store: Arc<Store>,
        view: AppliedView,
        peers: PeerHandle<PeerMsg>,
        report: mpsc::UnboundedSender<Internal>,
    ) -> std::io::Result<OutStream> {
        let stream = OutStream {
            to: params.to,
            id: params.id,
            cancel: Arc::new(AtomicBool::new(false)),
            acked: Arc::new(AtomicU64::new(0)),
            floor: Arc::new(AtomicU64::new(params.include.0)),
        };
        let ctx = Sender {
            cancel: stream.cancel.clone(),
            acked: stream.acked.clone(),
            floor: stream.floor.clone(),
            store,
            view,
            peers,
            params,
        };
        std::thread::Builder::new()
            .name(format!("keeper-snap-to-{}", stream.to))
            .spawn(move || {
                let (to, id) = (ctx.params.to, ctx.params.id);
                let result = ctx.run();
                let _ = std::fs::remove_dir_all(&ctx.params.dir);
                if ctx.cancel.load(Ordering::Acquire) {
                    tracing::info!(peer = to, stream = id, "snapshot stream cancelled");
                    return;
                }
                let (zxid, ok) = match result {
                    Ok(zxid) => (zxid, true),
                    Err(e) => {
                        tracing::warn!(peer = to, stream = id, error = %e, "snapshot stream failed");
                        (Zxid::ZERO, false)
                    }
                };
                let _ = report.send(Internal::SnapshotSent {
                    to,
                    stream: id,
                    zxid,
                    ok,
                });
            })?;
        Ok(stream)
    }

    /// The receiver acknowledged `bytes` written.
    pub fn acked(&self, bytes: u64) {
        self.acked.fetch_max(bytes, Ordering::AcqRel);
    }

    /// Log entries after this zxid must stay: the DIFF that follows the
    /// snapshot is read from the log.
    pub fn needs_log_after(&self) -> Zxid {
        Zxid(self.floor.load(Ordering::Acquire))
    }

    /// Stops the stream; its thread removes its checkpoint and reports nothing.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }
}

impl Drop for OutStream {
    fn drop(&mut self) {
        self.cancel();
    }
}

struct Sender {
    cancel: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    floor: Arc<AtomicU64>,
    store: Arc<Store>,
    view: AppliedView,
    peers: PeerHandle<PeerMsg>,
    params: OutStreamParams,
}

impl Sender {
    fn cancelled(&self) -> Result<(), String> {
        if self.cancel.load(Ordering::Acquire) {
            return Err("cancelled".into());
        }
        Ok(())
    }

    fn run(&self) -> Result<Zxid, String> {
        let p = &self.params;
        // Every commit emitted before SendSnapshot must be in the snapshot.
        loop {
            self.cancelled()?;
            if self.view.has_failed() {
                return Err("the applier failed".into());
            }
            if self.view.applied_zxid() >= p.include {
                break;
            }
            std::thread::sleep(POLL);
        }
        self.cancelled()?;
        if p.dir.exists() {
            std::fs::remove_dir_all(&p.dir).map_err(|e| e.to_string())?;
        }
        if let Some(parent) = p.dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let started = Instant::now();
        let zxid = self.store.checkpoint(&p.dir).map_err(|e| e.to_string())?;
        self.floor.store(zxid.0, Ordering::Release);
        tracing::info!(peer = p.to, stream = p.id, zxid = %zxid,
            cut_ms = started.elapsed().as_millis() as u64, "streaming a snapshot (SNAP)");
        let mut names: Vec<String> = std::fs::read_dir(&p.dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let chunk_bytes = p.chunk_bytes.max(1);
        let mut sent = 0u64;
        for name in &names {
            let mut file = File::open(p.dir.join(name)).map_err(|e| e.to_string())?;
            let mut sent_any = false;
            loop {
                self.wait_for_window(sent)?;
                let mut buf = vec![0u8; chunk_bytes];
                let n = read_full(&mut file, &mut buf).map_err(|e| e.to_string())?;
                if n == 0 && sent_any {
                    break;
                }
                buf.truncate(n);
                sent += n as u64;
                self.send(PeerMsg::SnapChunk {
                    stream: p.id,
                    file: name.clone(),
                    data: Bytes::from(buf),
                })?;
                sent_any = true;
                if n < chunk_bytes {
                    break;
                }
            }
        }
        self.cancelled()?;
        self.send(PeerMsg::SnapEnd {
            stream: p.id,
            zxid,
            files: names.len() as u32,
            bytes: sent,
        })?;
        tracing::info!(peer = p.to, stream = p.id, zxid = %zxid, files = names.len(), bytes = sent,
            secs = started.elapsed().as_secs_f64(), "snapshot streamed");
        Ok(zxid)
    }

    /// Waits until fewer than `window_bytes` are unacknowledged.
    fn wait_for_window(&self, sent: u64) -> Result<(), String> {
        let p = &self.params;
        let mut last_ack = self.acked.load(Ordering::Acquire);
        let mut since = Instant::now();
        loop {
            self.cancelled()?;
            let acked = self.acked.load(Ordering::Acquire);
            if sent.saturating_sub(acked) < p.window_bytes {
                return Ok(());
            }
            if !self.peers.is_connected(p.to) {
                return Err("link down".into());
            }
            if acked != last_ack {
                last_ack = acked;
                since = Instant::now();
            } else if since.elapsed() > p.stall_timeout {
                return Err(format!(
                    "the receiver acknowledged nothing for {} ms",
                    p.stall_timeout.as_millis()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn send(&self, msg: PeerMsg) -> Result<(), String> {
        self.peers
            .send(self.params.to, msg)
            .map_err(|e| e.to_string())
    }
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

/// A follower's stream being received from its leader (see the module docs).
pub struct InStream {
    pub from: NodeId,
    pub id: StreamId,
    ops: Option<std_mpsc::Sender<InOp>>,
    cancel: Arc<AtomicBool>,
    /// Bytes written so far (what the writer acked).
    written: Arc<AtomicU64>,
    /// `written` as of the last [`InStream::progressed`].
    seen: u64,
}

enum InOp {
    Chunk { file: String, data: Bytes },
    End { zxid: Zxid, files: u32, bytes: u64 },
}

impl InStream {
    /// Starts the writer thread for stream `id` from `from`, staging into
    /// `dir` (emptied first). It acks every chunk it wrote to `from` and
    /// reports `Internal::SnapshotReceived` at the end or on failure.
    pub fn start(
        from: NodeId,
        id: StreamId,
        dir: PathBuf,
        peers: PeerHandle<PeerMsg>,
        report: mpsc::UnboundedSender<Internal>,
    ) -> std::io::Result<InStream> {
        let (tx, rx) = std_mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (c, w) = (cancel.clone(), written.clone());
        std::thread::Builder::new()
            .name(format!("keeper-snap-from-{from}"))
            .spawn(move || {
                let result = receive(from, id, &dir, &rx, &c, &w, &peers);
                if c.load(Ordering::Acquire) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return;
                }
                if result.is_err() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                let _ = report.send(Internal::SnapshotReceived {
                    from,
                    stream: id,
                    result: result.map(|zxid| (zxid, dir)),
                });
            })?;
        Ok(InStream {
            from,
            id,
            ops: Some(tx),
            cancel,
            written,
            seen: 0,
        })
    }

    /// Whether the writer wrote anything since the last call.
    pub fn progressed(&mut self) -> bool {
        let now = self.written();
        let moved = now > self.seen;
        self.seen = now;
        moved
    }

    /// Queues a chunk for the writer (bounded by the sender's window).
    pub fn chunk(&self, file: String, data: Bytes) {
        if let Some(tx) = &self.ops {
            let _ = tx.send(InOp::Chunk { file, data });
        }
    }

    /// Queues the end marker; the writer checks it and reports.
    pub fn end(&mut self, zxid: Zxid, files: u32, bytes: u64) {
        if let Some(tx) = self.ops.take() {
            let _ = tx.send(InOp::End { zxid, files, bytes });
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }
}

impl Drop for InStream {
    /// Dropping a stream before its report cancels it: the writer stops and
    /// removes its staging directory.
    fn drop(&mut self) {
        if self.ops.is_some() {
            self.cancel.store(true, Ordering::Release);
        }
    }
}

fn receive(
    from: NodeId,
    id: StreamId,
    dir: &Path,
    ops: &std_mpsc::Receiver<InOp>,
    cancel: &AtomicBool,
    written: &AtomicU64,
    peers: &PeerHandle<PeerMsg>,
) -> Result<Zxid, String> {
    let mut inc = Incoming::begin(dir.to_path_buf()).map_err(|e| e.to_string())?;
    loop {
        let op = ops
            .recv()
            .map_err(|_| "the stream was dropped".to_string())?;
        if cancel.load(Ordering::Acquire) {
            return Err("cancelled".into());
        }
        match op {
            InOp::Chunk { file, data } => {
                inc.chunk(&file, &data)?;
                written.store(inc.bytes, Ordering::Release);
                let _ = peers.send(
                    from,
                    PeerMsg::SnapAck {
                        stream: id,
                        bytes: inc.bytes,
                    },
                );
            }
            InOp::End { zxid, files, bytes } => {
                inc.end(files, bytes)?;
                return Ok(zxid);
            }
        }
    }
}

/// The files of a snapshot being received, staged in `dir`.
pub struct Incoming {
    pub dir: PathBuf,
    files: Vec<String>,
    current: Option<(String, File)>,
    bytes: u64,
}

impl Incoming {
    /// Starts receiving into `dir` (emptied first).
    pub fn begin(dir: PathBuf) -> std::io::Result<Incoming> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Incoming {
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

    /// Checks the end marker against what arrived and makes the files (and
    /// the directory listing them) durable.
    pub fn end(&mut self, files: u32, bytes: u64) -> Result<(), String> {
        self.finish_current()?;
        if files as usize != self.files.len() || bytes != self.bytes {
            return Err(format!(
                "snapshot stream incomplete: got {} files / {} bytes, expected {files} / {bytes}",
                self.files.len(),
                self.bytes,
            ));
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_refuses_names_that_escape_the_staging_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut inc = Incoming::begin(dir.path().join("in")).unwrap();
        for bad in ["", "../x", "a/b", "..", ".", "a\0b"] {
            assert!(inc.chunk(bad, b"x").is_err(), "{bad:?} accepted");
        }
        inc.chunk("CURRENT", b"abc").unwrap();
        inc.chunk("CURRENT", b"def").unwrap();
        inc.chunk("000001.sst", b"").unwrap();
        assert!(inc.chunk("CURRENT", b"again").is_err());
        assert!(inc.end(2, 5).is_err(), "byte count mismatch accepted");
        let mut inc2 = Incoming::begin(dir.path().join("in2")).unwrap();
        inc2.chunk("CURRENT", b"abcdef").unwrap();
        inc2.end(1, 6).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("in2/CURRENT")).unwrap(),
            b"abcdef"
        );
    }
}
