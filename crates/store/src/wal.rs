//! The transaction log on disk: numbered segment files in `<data-dir>/log/`,
//! beside RocksDB rather than in one of its column families.
//!
//! Why: every group commit ends in one fsync per member, and on the reference
//! VM (ext4 on virtio) the kind of fsync decides the write throughput of the
//! whole ensemble. Appending to a file and `fdatasync` costs about 240 µs and
//! 100 µs of CPU, because the file's size changes and ext4 must commit its
//! journal as well; that is what RocksDB's WAL does. Overwriting blocks that
//! are already allocated with `O_DIRECT | O_DSYNC` costs about 110 µs and
//! 40 µs of CPU (docs/ARCHITECTURE.md, "The log on disk", has the figures).
//! So a segment is zero-filled ahead of the write position (in the same write
//! as the records, [`ZERO_AHEAD_BYTES`] at a time), and the records after it
//! only overwrite zeros.
//!
//! A record is `len u32 LE | crc32 u32 LE | zxid u64 LE | payload`, the CRC
//! over zxid and payload. Sixteen zero bytes mark the end. Recovery reads each
//! segment up to the first record that is not whole and valid (a torn tail)
//! or whose zxid does not rise; a truncation writes such an end marker and
//! moves later appends to a new segment, so stale records stay behind it.
//!
//! [`Wal::append`] only copies into memory; [`Wal::sync`] writes everything
//! pending (one write per segment touched: block-aligned with
//! `O_DIRECT | O_DSYNC`, or `pwrite` and `fdatasync` where the file system
//! refuses `O_DIRECT`) and returns once it is durable. Appends may go on
//! while a sync runs. Reads see every appended entry at once, from memory
//! or from the file. Once a write fails, the log refuses everything after
//! it (a failed fsync leaves the file's state unknown).

use crate::StoreError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of a record header.
const HEADER: usize = 16;
/// Alignment of `O_DIRECT` writes (offsets, lengths and memory).
const BLOCK: u64 = 4096;
/// A payload longer than this is garbage to recovery.
const MAX_PAYLOAD: usize = 1 << 30;
/// How far past the last record a segment is zero-filled, in bytes: a write
/// that would pass the zeroed part extends it this far beyond its own end.
pub const ZERO_AHEAD_BYTES: u64 = 512 << 10;
/// Name suffix of segment files (`<seq:020>.wal`).
const SUFFIX: &str = ".wal";

/// Options of the log.
#[derive(Debug, Clone)]
pub(crate) struct WalOptions {
    /// A segment takes no more records once it holds this many bytes.
    pub segment_bytes: u64,
    /// Make writes durable (`false` only for tests of pure logic).
    pub sync: bool,
}

/// One record's place: its zxid, the offset of its header, its payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    zxid: u64,
    offset: u64,
    len: u32,
}

impl Rec {
    fn end(&self) -> u64 {
        self.offset + HEADER as u64 + u64::from(self.len)
    }
}

/// A segment file's handles: one for writes (`O_DIRECT | O_DSYNC` when the
/// log is direct) and a plain one for reads and buffered writes.
struct SegFile {
    direct: Option<File>,
    plain: File,
}

struct Segment {
    seq: u64,
    /// `None` until the first sync that writes to it creates the file.
    file: Option<Arc<SegFile>>,
    index: Vec<Rec>,
    /// Bytes `[0, written)` are in the file.
    written: u64,
    /// Bytes `[0, zeroed)` of the file are allocated (records or zeros).
    zeroed: u64,
    /// The partial last block of the written bytes (for aligned rewrites).
    tail: Vec<u8>,
    /// Bytes `[written, written + in_flight.len())`, being written by a sync.
    in_flight: Option<Arc<Vec<u8>>>,
    /// Bytes appended after those.
    pending: Vec<u8>,
}

impl Segment {
    fn new(seq: u64) -> Segment {
        Segment {
            seq,
            file: None,
            index: Vec::new(),
            written: 0,
            zeroed: 0,
            tail: Vec::new(),
            in_flight: None,
            pending: Vec::new(),
        }
    }

    fn end(&self) -> u64 {
        self.written
            + self.in_flight.as_ref().map_or(0, |b| b.len() as u64)
            + self.pending.len() as u64
    }

    fn first(&self) -> Option<u64> {
        self.index.first().map(|r| r.zxid)
    }

    fn last(&self) -> Option<u64> {
        self.index.last().map(|r| r.zxid)
    }
}

struct State {
    /// Ascending by seq; appends go to the last one.
    segments: Vec<Segment>,
    next_seq: u64,
    /// The next append starts a new segment (set by a truncation).
    roll: bool,
    failed: Option<String>,
}

/// The log. All methods take `&self`; appends and reads are short critical
/// sections, writes to disk happen outside them.
pub(crate) struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    state: Mutex<State>,
    /// Serializes file writes and structural changes (sync, truncate,
    /// compact, reset).
    io: Mutex<Scratch>,
    /// Writes use `O_DIRECT | O_DSYNC` (until the file system refuses it).
    direct: AtomicBool,
    /// Segments fsynced by `open` (what a test checks).
    #[cfg_attr(not(test), allow(dead_code))]
    synced_at_open: usize,
}

/// A reusable buffer for aligned writes.
#[derive(Default)]
struct Scratch(Vec<u8>);

impl Scratch {
    /// A zeroed, BLOCK-aligned buffer of `len` bytes.
    fn aligned(&mut self, len: usize) -> &mut [u8] {
        let need = len + BLOCK as usize;
        if self.0.len() < need {
            self.0 = vec![0; need];
        }
        let at = self.0.as_ptr().align_offset(BLOCK as usize);
        let buf = &mut self.0[at..at + len];
        buf.fill(0);
        buf
    }
}

/// A write of one segment's pending bytes, taken out of the state.
struct Job {
    seq: u64,
    file: Option<Arc<SegFile>>,
    written: u64,
    zeroed: u64,
    tail: Vec<u8>,
    data: Arc<Vec<u8>>,
}

fn failed(why: &str) -> StoreError {
    StoreError::Io(io::Error::other(format!("the log failed earlier: {why}")))
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt {
        what: "log",
        detail,
    }
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

impl Wal {
    /// Opens the log in `dir` (created if missing), recovering every segment.
    /// Segments numbered below `void_below` are deleted: an installed
    /// snapshot replaced them (see `Store::install_snapshot`).
    pub(crate) fn open(dir: &Path, opts: WalOptions, void_below: u64) -> Result<Wal, StoreError> {
        fs::create_dir_all(dir)?;
        let mut seqs = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = name
                .strip_suffix(SUFFIX)
                .and_then(|s| s.parse::<u64>().ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut segments: Vec<Segment> = Vec::new();
        // Bytes after the last record of the last segment (a torn write, or
        // records cut by a truncation): appends go to a new segment.
        let mut roll = false;
        let mut next_seq = void_below;
        let mut last: Option<u64> = None;
        let mut cut = false;
        let mut removed = false;
        for seq in seqs {
            next_seq = next_seq.max(seq + 1);
            let path = dir.join(segment_name(seq));
            if seq < void_below || cut {
                fs::remove_file(&path)?;
                removed = true;
                continue;
            }
            let mut data = Vec::new();
            File::open(&path)?.read_to_end(&mut data)?;
            let (index, end, clean) = scan(&data, last);
            let file = open_segment(&path, false, false)?;
            if !clean {
                // A torn or stale record: it gets an end marker, and nothing
                // after it can be trusted.
                tracing::warn!(segment = %path.display(), valid_bytes = end,
                    "log segment ends in an invalid record; later segments are dropped");
                file.plain.write_all_at(&[0u8; HEADER], end)?;
                file.plain.sync_data()?;
                cut = true;
            }
            last = index.last().map(|r| r.zxid).or(last);
            roll = data[end as usize..].iter().any(|b| *b != 0);
            let tail_from = (end - end % BLOCK) as usize;
            segments.push(Segment {
                seq,
                file: Some(Arc::new(file)),
                index,
                written: end,
                zeroed: data.len() as u64,
                tail: data[tail_from..end as usize].to_vec(),
                in_flight: None,
                pending: Vec::new(),
            });
        }
        // Recovered records count as persisted (they are the member's last
        // zxid in votes and acknowledgements), but a process that crashed
        // between a buffered write and its fdatasync left them only in the
        // page cache: make them durable before anyone relies on them. On a
        // clean log this costs one cheap fdatasync per segment.
        let mut synced_at_open = 0;
        if opts.sync {
            for seg in &segments {
                if let Some(file) = &seg.file {
                    file.plain.sync_data()?;
                    synced_at_open += 1;
                }
            }
        }
        if removed || (opts.sync && !segments.is_empty()) {
            sync_dir(dir)?;
        }
        let wal = Wal {
            dir: dir.to_path_buf(),
            direct: AtomicBool::new(opts.sync),
            opts,
            state: Mutex::new(State {
                segments,
                next_seq,
                roll,
                failed: None,
            }),
            io: Mutex::new(Scratch::default()),
            synced_at_open,
        };
        // Recovered segments get write handles of the log's mode.
        let direct = wal.direct.load(Ordering::Acquire);
        if let Some(seg) = wal.state().segments.last_mut() {
            let path = dir.join(segment_name(seg.seq));
            match open_segment(&path, false, direct) {
                Ok(f) => seg.file = Some(Arc::new(f)),
                Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    wal.direct.store(false, Ordering::Release);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(wal)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io(&self) -> MutexGuard<'_, Scratch> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends entries (zxids strictly rising above the last one) to memory;
    /// they are readable at once and durable after the next [`Wal::sync`].
    pub(crate) fn append<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), StoreError> {
        let mut st = self.state();
        if let Some(why) = &st.failed {
            return Err(failed(why));
        }
        let mut prev = st.segments.iter().rev().find_map(|s| s.last());
        for (zxid, payload) in entries {
            if prev.is_some_and(|p| zxid <= p) {
                return Err(corrupt(format!(
                    "append of zxid {zxid:#x} after {:#x}",
                    prev.unwrap_or(0)
                )));
            }
            if payload.len() > MAX_PAYLOAD {
                return Err(corrupt(format!("entry of {} bytes", payload.len())));
            }
            prev = Some(zxid);
            let size = (HEADER + payload.len()) as u64;
            let need_new = match st.segments.last() {
                None => true,
                Some(s) => {
                    st.roll || (s.end() + size > self.opts.segment_bytes && !s.index.is_empty())
                }
            };
            if need_new {
                let seq = st.next_seq;
                st.next_seq += 1;
                st.roll = false;
                st.segments.push(Segment::new(seq));
            }
            let Some(seg) = st.segments.last_mut() else {
                continue; // just pushed
            };
            let offset = seg.end();
            let mut crc = crc32fast::Hasher::new();
            crc.update(&zxid.to_le_bytes());
            crc.update(payload);
            seg.pending
                .extend_from_slice(&(payload.len() as u32).to_le_bytes());
            seg.pending.extend_from_slice(&crc.finalize().to_le_bytes());
            seg.pending.extend_from_slice(&zxid.to_le_bytes());
            seg.pending.extend_from_slice(payload);
            seg.index.push(Rec {
                zxid,
                offset,
                len: payload.len() as u32,
            });
        }
        Ok(())
    }

    /// Makes everything appended before this call durable.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let mut scratch = self.io();
        let jobs: Vec<Job> = {
            let mut st = self.state();
            if let Some(why) = &st.failed {
                return Err(failed(why));
            }
            st.segments
                .iter_mut()
                .filter(|s| !s.pending.is_empty())
                .map(|s| {
                    let data = Arc::new(std::mem::take(&mut s.pending));
                    s.in_flight = Some(data.clone());
                    Job {
                        seq: s.seq,
                        file: s.file.clone(),
                        written: s.written,
                        zeroed: s.zeroed,
                        tail: s.tail.clone(),
                        data,
                    }
                })
                .collect()
        };
        for job in jobs {
            match self.write_job(&mut scratch, &job) {
                Ok((file, zeroed)) => {
                    let mut st = self.state();
                    if let Some(seg) = st.segments.iter_mut().find(|s| s.seq == job.seq) {
                        let data = seg.in_flight.take().unwrap_or_default();
                        let new_written = seg.written + data.len() as u64;
                        let keep = (new_written % BLOCK) as usize;
                        let mut joined = std::mem::take(&mut seg.tail);
                        joined.extend_from_slice(&data);
                        seg.tail = joined[joined.len().saturating_sub(keep)..].to_vec();
                        seg.written = new_written;
                        seg.zeroed = seg.zeroed.max(zeroed);
                        seg.file = Some(file);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "log write failed; the log refuses further writes");
                    self.state().failed = Some(e.to_string());
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Writes one job; returns the segment's file and how far it is now
    /// allocated.
    fn write_job(&self, scratch: &mut Scratch, job: &Job) -> io::Result<(Arc<SegFile>, u64)> {
        let file = match &job.file {
            Some(f) => f.clone(),
            None => Arc::new(self.create_segment(job.seq)?),
        };
        let end = job.written + job.data.len() as u64;
        // A write that would pass the zeroed part extends it: one size
        // change per ZERO_AHEAD_BYTES instead of one per sync.
        let extend = round_up(end) > job.zeroed;
        let zeroed = if extend {
            round_up(end + ZERO_AHEAD_BYTES)
        } else {
            job.zeroed
        };
        if let (Some(direct), true) = (&file.direct, self.direct.load(Ordering::Acquire)) {
            // Whole blocks from the start of the partial last one.
            let start = job.written - job.tail.len() as u64;
            let stop = if extend { zeroed } else { round_up(end) };
            let buf = scratch.aligned((stop - start) as usize);
            buf[..job.tail.len()].copy_from_slice(&job.tail);
            buf[job.tail.len()..job.tail.len() + job.data.len()].copy_from_slice(&job.data);
            match direct.write_all_at(buf, start) {
                Ok(()) => return Ok((file, zeroed)),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(error = %e, "O_DIRECT writes refused; the log falls back to fdatasync");
                    self.direct.store(false, Ordering::Release);
                }
                Err(e) => return Err(e),
            }
        }
        file.plain.write_all_at(&job.data, job.written)?;
        if extend {
            let zeros = vec![0u8; (zeroed - end) as usize];
            file.plain.write_all_at(&zeros, end)?;
        }
        if self.opts.sync {
            file.plain.sync_data()?;
        }
        Ok((file, zeroed))
    }

    fn create_segment(&self, seq: u64) -> io::Result<SegFile> {
        let path = self.dir.join(segment_name(seq));
        let direct = self.direct.load(Ordering::Acquire);
        let file = match open_segment(&path, true, direct) {
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(error = %e, "O_DIRECT refused; the log falls back to fdatasync");
                self.direct.store(false, Ordering::Release);
                open_segment(&path, true, false)?
            }
            other => other?,
        };
        if self.opts.sync {
            sync_dir(&self.dir)?;
        }
        Ok(file)
    }

    /// Lowest zxid in the log.
    pub(crate) fn first(&self) -> Option<u64> {
        self.state().segments.iter().find_map(|s| s.first())
    }

    /// Highest zxid in the log.
    pub(crate) fn last(&self) -> Option<u64> {
        self.state().segments.iter().rev().find_map(|s| s.last())
    }

    /// The largest zxid in the log that is `<= zxid`.
    pub(crate) fn at_or_below(&self, zxid: u64) -> Option<u64> {
        let st = self.state();
        st.segments.iter().rev().find_map(|s| {
            let i = s.index.partition_point(|r| r.zxid <= zxid);
            i.checked_sub(1).map(|i| s.index[i].zxid)
        })
    }

    /// Entries with zxid > `after`, ascending, at most `limit`, and no more
    /// than `max_bytes` of `keeper_zab::wire_bytes(payload)` in all (the
    /// first entry whatever its size).
    pub(crate) fn read(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let st = self.state();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for seg in &st.segments {
            if out.len() >= limit || bytes >= max_bytes {
                break;
            }
            if seg.last().is_none_or(|l| l <= after) {
                continue;
            }
            let from = seg.index.partition_point(|r| r.zxid <= after);
            let mut upto = from;
            for r in &seg.index[from..] {
                let next = bytes.saturating_add(keeper_zab::wire_bytes(r.len as usize));
                if out.len() + (upto - from) >= limit
                    || (next > max_bytes && (!out.is_empty() || upto > from))
                {
                    break;
                }
                bytes = next;
                upto += 1;
            }
            let recs = &seg.index[from..upto];
            let (Some(first), Some(last)) = (recs.first(), recs.last()) else {
                continue;
            };
            // The records in the file are read with one pread.
            let file_end = last.end().min(seg.written);
            let disk = if first.offset < file_end {
                let file = seg
                    .file
                    .as_ref()
                    .ok_or_else(|| corrupt(format!("segment {} has no file", seg.seq)))?;
                let mut buf = vec![0u8; (file_end - first.offset) as usize];
                file.plain.read_exact_at(&mut buf, first.offset)?;
                buf
            } else {
                Vec::new()
            };
            let in_flight = seg.in_flight.as_deref().map_or(&[][..], |v| &v[..]);
            for r in recs {
                let at = r.offset + HEADER as u64;
                let bytes = if r.end() <= seg.written {
                    let s = (at - first.offset) as usize;
                    &disk[s..s + r.len as usize]
                } else if r.end() <= seg.written + in_flight.len() as u64 {
                    let s = (at - seg.written) as usize;
                    &in_flight[s..s + r.len as usize]
                } else {
                    let s = (at - seg.written - in_flight.len() as u64) as usize;
                    &seg.pending[s..s + r.len as usize]
                };
                out.push((r.zxid, bytes.to_vec()));
            }
        }
        Ok(out)
    }

    /// Removes every entry with zxid > `zxid`, durably.
    pub(crate) fn truncate_after(&self, zxid: u64) -> Result<(), StoreError> {
        let _io = self.io();
        let mut st = self.state();
        if let Some(why) = &st.failed {
            return Err(failed(why));
        }
        // Later segments go first (newest first), so a crash leaves a prefix.
        let mut dropped_files = false;
        let mut popped = false;
        while let Some(seg) = st.segments.last() {
            if seg.first().is_some_and(|f| f > zxid) || seg.index.is_empty() {
                popped = true;
                if let Some(seg) = st.segments.pop() {
                    if seg.file.is_some() {
                        fs::remove_file(self.dir.join(segment_name(seg.seq)))?;
                        dropped_files = true;
                    }
                }
            } else {
                break;
            }
        }
        if dropped_files && self.opts.sync {
            sync_dir(&self.dir)?;
        }
        // Appends never go back to a segment whose tail was cut.
        st.roll |= popped;
        let Some(seg) = st.segments.last_mut() else {
            return Ok(());
        };
        let keep = seg.index.partition_point(|r| r.zxid <= zxid);
        let Some(cut) = seg.index.get(keep).map(|r| r.offset) else {
            return Ok(()); // nothing above zxid
        };
        seg.index.truncate(keep);
        if cut >= seg.written {
            seg.pending.truncate((cut - seg.written) as usize);
            return Ok(());
        }
        // Records on disk are cut by an end marker; later appends go to a
        // new segment, so the stale bytes behind the marker stay there.
        seg.pending.clear();
        let file = seg
            .file
            .clone()
            .ok_or_else(|| corrupt(format!("segment {} has no file", seg.seq)))?;
        file.plain.write_all_at(&[0u8; HEADER], cut)?;
        file.plain.sync_data()?;
        seg.written = cut;
        seg.tail.clear();
        st.roll = true;
        Ok(())
    }

    /// Deletes the oldest whole segments whose entries are all below `zxid`
    /// and on disk. Returns the highest zxid removed.
    ///
    /// Crash safety: `before_unlink(highest zxid to be removed)` runs before
    /// the first file goes (the store makes its log floor durable there, so a
    /// crash never leaves a log that starts above a floor on disk that says
    /// less), and the directory is fsynced after the last unlink, so removed
    /// segments do not come back. Nothing is removed if `before_unlink` fails.
    pub(crate) fn compact_before(
        &self,
        zxid: u64,
        before_unlink: impl FnOnce(u64) -> Result<(), StoreError>,
    ) -> Result<Option<u64>, StoreError> {
        let _io = self.io();
        // Held throughout: an append cannot slip into a segment being removed.
        let mut st = self.state();
        if let Some(why) = &st.failed {
            return Err(failed(why));
        }
        let count = st
            .segments
            .iter()
            .take_while(|s| s.last().is_none_or(|l| l < zxid) && s.pending.is_empty())
            .count();
        let removed = st.segments[..count].iter().rev().find_map(|s| s.last());
        if let Some(removed) = removed {
            before_unlink(removed)?;
        }
        let mut unlinked = false;
        for seg in st.segments.drain(..count) {
            if seg.file.is_some() {
                fs::remove_file(self.dir.join(segment_name(seg.seq)))?;
                unlinked = true;
            }
        }
        if unlinked && self.opts.sync {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// The number the next new segment gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.state().next_seq
    }

    /// Deletes every segment; the next one is numbered at least `next_seq`.
    pub(crate) fn reset(&self, next_seq: u64) -> Result<(), StoreError> {
        let _io = self.io();
        let mut st = self.state();
        for seg in std::mem::take(&mut st.segments) {
            if seg.file.is_some() {
                fs::remove_file(self.dir.join(segment_name(seg.seq)))?;
            }
        }
        st.next_seq = st.next_seq.max(next_seq);
        st.roll = false;
        if self.opts.sync {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Reads records from the start of a segment's bytes, after zxid `prev`.
/// Returns them, the end of the last valid one, and whether the data ended
/// cleanly (an end marker or the end of the file) rather than in an
/// invalid record.
fn scan(data: &[u8], mut prev: Option<u64>) -> (Vec<Rec>, u64, bool) {
    let mut index = Vec::new();
    let mut at = 0usize;
    loop {
        let Some(header) = data.get(at..at + HEADER) else {
            return (
                index,
                at as u64,
                data.len() - at < HEADER && data[at..].iter().all(|b| *b == 0),
            );
        };
        if header.iter().all(|b| *b == 0) {
            return (index, at as u64, true);
        }
        let word = |i: usize| [header[i], header[i + 1], header[i + 2], header[i + 3]];
        let len = u32::from_le_bytes(word(0)) as usize;
        let crc = u32::from_le_bytes(word(4));
        let mut z = [0u8; 8];
        z.copy_from_slice(&header[8..16]);
        let zxid = u64::from_le_bytes(z);
        let Some(payload) = data.get(at + HEADER..(at + HEADER).saturating_add(len)) else {
            return (index, at as u64, false);
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&z);
        h.update(payload);
        if len > MAX_PAYLOAD || h.finalize() != crc || prev.is_some_and(|p| zxid <= p) {
            return (index, at as u64, false);
        }
        index.push(Rec {
            zxid,
            offset: at as u64,
            len: len as u32,
        });
        prev = Some(zxid);
        at += HEADER + len;
    }
}

fn open_segment(path: &Path, create: bool, direct: bool) -> io::Result<SegFile> {
    let plain = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)?;
    let direct = if direct {
        Some(
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
                .open(path)?,
        )
    } else {
        None
    };
    Ok(SegFile { direct, plain })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(sync: bool, segment_bytes: u64) -> WalOptions {
        WalOptions {
            segment_bytes,
            sync,
        }
    }

    fn entries(zxids: impl IntoIterator<Item = u64>) -> Vec<(u64, Vec<u8>)> {
        zxids
            .into_iter()
            .map(|z| (z, format!("entry-{z}").into_bytes()))
            .collect()
    }

    fn rows(entries: &[(u64, Vec<u8>)]) -> impl Iterator<Item = (u64, &[u8])> {
        entries.iter().map(|(z, b)| (*z, b.as_slice()))
    }

    fn no_floor(_: u64) -> Result<(), StoreError> {
        Ok(())
    }

    fn all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
        wal.read(0, usize::MAX, usize::MAX).unwrap()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn appended_entries_read_back_before_and_after_sync_and_reopen() {
        for sync in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let wal = Wal::open(dir.path(), opts(sync, 1 << 20), 0).unwrap();
            wal.append(rows(&entries(1..=3))).unwrap();
            assert_eq!(all(&wal), entries(1..=3), "pending entries are readable");
            wal.sync().unwrap();
            wal.append(rows(&entries(4..=6))).unwrap();
            assert_eq!(all(&wal), entries(1..=6), "file and pending together");
            assert_eq!(wal.read(2, 3, usize::MAX).unwrap(), entries(3..=5));
            assert_eq!(wal.read(4, usize::MAX, usize::MAX).unwrap(), entries(5..=6));
            wal.sync().unwrap();
            assert_eq!((wal.first(), wal.last()), (Some(1), Some(6)));
            assert_eq!(wal.at_or_below(100), Some(6));
            assert_eq!(wal.at_or_below(0), None);
            drop(wal);
            let wal = Wal::open(dir.path(), opts(sync, 1 << 20), 0).unwrap();
            assert_eq!(all(&wal), entries(1..=6), "sync={sync}");
            // Appends after a reopen continue the same segment.
            wal.append(rows(&entries(7..=7))).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let wal = Wal::open(dir.path(), opts(sync, 1 << 20), 0).unwrap();
            assert_eq!(all(&wal), entries(1..=7), "sync={sync}");
            assert_eq!(segment_files(dir.path()).len(), 1);
        }
    }

    #[test]
    fn reads_are_bounded_in_bytes_but_return_at_least_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        // "entry-N": 7 bytes, 23 as counted; two records per segment.
        let wal = Wal::open(dir.path(), opts(false, 60), 0).unwrap();
        wal.append(rows(&entries(1..=6))).unwrap();
        wal.sync().unwrap();
        wal.append(rows(&entries(7..=8))).unwrap(); // pending only
        assert_eq!(segment_files(dir.path()).len(), 3);
        assert_eq!(wal.read(0, 100, 46).unwrap(), entries(1..=2));
        assert_eq!(wal.read(0, 100, 45).unwrap(), entries(1..=1));
        assert_eq!(wal.read(0, 100, 1).unwrap(), entries(1..=1), "one at least");
        assert_eq!(wal.read(2, 100, 3 * 23).unwrap(), entries(3..=5));
        assert_eq!(wal.read(2, 2, 1000).unwrap(), entries(3..=4));
        assert_eq!(wal.read(5, 100, 1000).unwrap(), entries(6..=8));
    }

    #[test]
    fn a_synced_segment_is_zero_filled_ahead_of_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), opts(true, 1 << 20), 0).unwrap();
        wal.append(rows(&entries(1..=2))).unwrap();
        wal.sync().unwrap();
        let len = fs::metadata(&segment_files(dir.path())[0]).unwrap().len();
        assert!(len >= ZERO_AHEAD_BYTES, "file is {len} bytes");
        // Further small syncs overwrite within the zeroed part.
        wal.append(rows(&entries(3..=4))).unwrap();
        wal.sync().unwrap();
        assert_eq!(
            fs::metadata(&segment_files(dir.path())[0]).unwrap().len(),
            len
        );
    }

    #[test]
    fn a_torn_tail_is_dropped_and_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), opts(true, 1 << 20), 0).unwrap();
        wal.append(rows(&entries(1..=3))).unwrap();
        wal.sync().unwrap();
        drop(wal);
        // Flip the last byte of the third record's payload.
        let path = segment_files(dir.path())[0].clone();
        let data = fs::read(&path).unwrap();
        let (index, end, clean) = scan(&data, None);
        assert!(clean);
        assert_eq!(index.len(), 3);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[data[end as usize - 1] ^ 0xff], end - 1)
            .unwrap();
        drop(f);
        let wal = Wal::open(dir.path(), opts(true, 1 << 20), 0).unwrap();
        assert_eq!(all(&wal), entries(1..=2));
        wal.append(rows(&entries(10..=11))).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), opts(true, 1 << 20), 0).unwrap();
        let mut want = entries(1..=2);
        want.extend(entries(10..=11));
        assert_eq!(all(&wal), want);
    }

    #[test]
    fn truncation_is_durable_and_stale_records_never_return() {
        for sync in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let wal = Wal::open(dir.path(), opts(sync, 1 << 20), 0).unwrap();
            wal.append(rows(&entries(1..=5))).unwrap();
            wal.sync().unwrap();
            wal.append(rows(&entries(6..=7))).unwrap(); // pending only
            wal.truncate_after(3).unwrap();
            assert_eq!(all(&wal), entries(1..=3));
            drop(wal);
            let wal = Wal::open(dir.path(), opts(sync, 1 << 20), 0).unwrap();
            assert_eq!(all(&wal), entries(1..=3), "sync={sync}");
            // New entries (a later epoch) go to a new segment.
            wal.append(rows(&entries([1 << 32, (1 << 32) + 1])))
                .unwrap();
            wal.sync().unwrap();
            assert_eq!(segment_files(dir.path()).len(), 2);
            drop(wal);
            let wal = Wal::open(dir.path(), opts(sync, 1 << 20), 0).unwrap();
            let mut want = entries(1..=3);
            want.extend(entries([1 << 32, (1 << 32) + 1]));
            assert_eq!(all(&wal), want, "sync={sync}");
            // Truncating into an earlier segment drops the later ones.
            wal.truncate_after(2).unwrap();
            assert_eq!(segment_files(dir.path()).len(), 1);
            drop(wal);
            let wal = Wal::open(dir.path(), opts(sync, 1 << 20), 0).unwrap();
            assert_eq!(all(&wal), entries(1..=2), "sync={sync}");
            wal.truncate_after(0).unwrap();
            assert_eq!(all(&wal), vec![]);
            assert_eq!(wal.last(), None);
        }
    }

    #[test]
    fn segments_roll_and_compaction_removes_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        // Each record is 16 + 8..9 bytes: two fit in 60 bytes.
        let wal = Wal::open(dir.path(), opts(true, 60), 0).unwrap();
        wal.append(rows(&entries(1..=7))).unwrap();
        wal.sync().unwrap();
        assert_eq!(segment_files(dir.path()).len(), 4);
        assert_eq!(
            wal.compact_before(4, no_floor).unwrap(),
            Some(2),
            "3 shares a segment with 4"
        );
        assert_eq!(wal.first(), Some(3));
        assert_eq!(all(&wal), entries(3..=7));
        assert_eq!(wal.compact_before(3, no_floor).unwrap(), None);
        drop(wal);
        let wal = Wal::open(dir.path(), opts(true, 60), 0).unwrap();
        assert_eq!(all(&wal), entries(3..=7));
        // Entries not yet on disk are never compacted (8 joins 7's segment).
        wal.append(rows(&entries(8..=9))).unwrap();
        assert_eq!(wal.compact_before(100, no_floor).unwrap(), Some(6));
        assert_eq!(all(&wal), entries(7..=9));
        wal.sync().unwrap();
        assert_eq!(wal.compact_before(100, no_floor).unwrap(), Some(9));
        assert_eq!((wal.first(), wal.last()), (None, None));
        wal.append(rows(&entries(10..=10))).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), opts(true, 60), 0).unwrap();
        assert_eq!(all(&wal), entries(10..=10));
    }

    /// Issue 9, problem 8: with the buffered fallback, records written by a
    /// process that died before its fdatasync are only in the page cache,
    /// yet the next open counts them as persisted. Open must make them
    /// durable first.
    #[test]
    fn records_recovered_at_open_are_fsynced_before_they_count_as_persisted() {
        let dir = tempfile::tempdir().unwrap();
        // Written without fsync (pwrite only), as a crash between the
        // buffered write and its fdatasync leaves them.
        let wal = Wal::open(dir.path(), opts(false, 60), 0).unwrap();
        wal.append(rows(&entries(1..=6))).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let on_disk = segment_files(dir.path()).len();
        assert_eq!(on_disk, 3);
        let wal = Wal::open(dir.path(), opts(true, 60), 0).unwrap();
        assert_eq!(all(&wal), entries(1..=6));
        assert_eq!(
            wal.synced_at_open, on_disk,
            "every recovered segment is fsynced at open"
        );
    }

    /// Issue 9, problem 9: the floor must be durable before any segment file
    /// goes, and nothing goes when it cannot be made durable.
    #[test]
    fn compaction_makes_the_floor_durable_before_unlinking_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), opts(true, 60), 0).unwrap();
        wal.append(rows(&entries(1..=7))).unwrap();
        wal.sync().unwrap();
        let before = segment_files(dir.path());
        assert_eq!(before.len(), 4);
        let refused = wal.compact_before(5, |_| {
            Err(StoreError::Io(io::Error::other("floor write failed")))
        });
        assert!(refused.is_err());
        assert_eq!(segment_files(dir.path()), before, "nothing removed");
        assert_eq!(all(&wal), entries(1..=7));
        let mut floor = None;
        let removed = wal
            .compact_before(5, |max| {
                assert_eq!(
                    segment_files(dir.path()),
                    before,
                    "the floor is written while every segment is still there"
                );
                floor = Some(max);
                Ok(())
            })
            .unwrap();
        assert_eq!(removed, Some(4));
        assert_eq!(floor, Some(4), "the floor covers every removed entry");
        assert_eq!(segment_files(dir.path()), before[2..].to_vec());
        assert_eq!(all(&wal), entries(5..=7));
    }

    #[test]
    fn reset_voids_every_older_segment() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), opts(true, 60), 0).unwrap();
        wal.append(rows(&entries(1..=5))).unwrap();
        wal.sync().unwrap();
        let void_below = wal.next_seq();
        drop(wal);
        // A crash between voiding (in the store's meta) and `reset`: the
        // old segments are deleted at open.
        let wal = Wal::open(dir.path(), opts(true, 60), void_below).unwrap();
        assert_eq!(all(&wal), vec![]);
        assert!(segment_files(dir.path()).is_empty());
        wal.append(rows(&entries(20..=21))).unwrap();
        wal.sync().unwrap();
        let next = wal.next_seq();
        wal.reset(next).unwrap();
        assert_eq!(all(&wal), vec![]);
        wal.append(rows(&entries(30..=30))).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), opts(true, 60), next).unwrap();
        assert_eq!(all(&wal), entries(30..=30));
    }

    #[test]
    fn garbage_in_an_earlier_segment_drops_the_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), opts(true, 60), 0).unwrap();
        wal.append(rows(&entries(1..=6))).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 3);
        let f = OpenOptions::new().write(true).open(&files[1]).unwrap();
        f.write_all_at(b"garbage!", 3).unwrap();
        drop(f);
        let wal = Wal::open(dir.path(), opts(true, 60), 0).unwrap();
        assert_eq!(all(&wal), entries(1..=2));
        assert_eq!(segment_files(dir.path()).len(), 2);
    }

    #[test]
    fn out_of_order_appends_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), opts(false, 1 << 20), 0).unwrap();
        wal.append(rows(&entries(5..=5))).unwrap();
        assert!(matches!(
            wal.append(rows(&entries(5..=5))),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(wal.append(rows(&entries(4..=4))).is_err());
        assert_eq!(all(&wal), entries(5..=5));
    }

    #[test]
    fn scan_stops_at_an_end_marker_a_bad_crc_or_a_falling_zxid() {
        let record = |zxid: u64, payload: &[u8]| {
            let mut h = crc32fast::Hasher::new();
            h.update(&zxid.to_le_bytes());
            h.update(payload);
            let mut r = (payload.len() as u32).to_le_bytes().to_vec();
            r.extend_from_slice(&h.finalize().to_le_bytes());
            r.extend_from_slice(&zxid.to_le_bytes());
            r.extend_from_slice(payload);
            r
        };
        let mut data = record(1, b"a");
        data.extend(record(2, b"bb"));
        let two = data.len() as u64;
        assert_eq!(scan(&data, None).1, two);
        assert!(scan(&data, None).2, "the end of the data is clean");
        let mut with_zeros = data.clone();
        with_zeros.extend([0u8; 40]);
        assert_eq!(scan(&with_zeros, None), (scan(&data, None).0, two, true));
        let mut falling = data.clone();
        falling.extend(record(1, b"c"));
        assert_eq!(scan(&falling, None).1, two);
        assert!(!scan(&falling, None).2);
        assert_eq!(
            scan(&data, Some(1)).1,
            0,
            "zxids must rise across segments too"
        );
        let mut bad = data.clone();
        bad.extend(record(3, b"ddd"));
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(scan(&bad, None).1, two);
        let mut short = data.clone();
        short.extend(&record(3, b"ddd")[..10]);
        assert_eq!(scan(&short, None).1, two);
        assert!(!scan(&short, None).2);
        let mut huge = data;
        huge.extend(u32::MAX.to_le_bytes());
        huge.extend([1u8; 12]);
        assert_eq!(scan(&huge, None).1, two);
    }

    /// A small deterministic generator for the model test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Random appends, syncs, truncations, compactions, resets, clean reopens
    /// and crashes (dropping whatever was not synced) against a model: the
    /// log always reads back exactly the model's entries.
    #[test]
    fn wal_matches_the_model_across_crashes() {
        let seed: u64 = std::env::var("KEEPER_WAL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("wal model: seed {seed} (reproduce: KEEPER_WAL_SEED={seed} cargo test -p keeper-store --lib wal_matches_the_model)");
        let mut rng = Rng(seed);
        for case in 0..24 {
            let sync = case % 2 == 0;
            let segment_bytes = 64 + rng.below(2048);
            let dir = tempfile::tempdir().unwrap();
            let mut void_below = 0;
            let mut wal = Wal::open(dir.path(), opts(sync, segment_bytes), void_below).unwrap();
            let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut synced = 0usize;
            let mut next_zxid = 1u64;
            for step in 0..120 {
                let ctx = format!("seed {seed} case {case} step {step}");
                match rng.below(10) {
                    0..=3 => {
                        let n = 1 + rng.below(6);
                        let batch: Vec<(u64, Vec<u8>)> = (0..n)
                            .map(|_| {
                                next_zxid += 1 + rng.below(3);
                                let max = if rng.below(8) == 0 { 5000 } else { 40 };
                                let len = rng.below(max);
                                (next_zxid, vec![(next_zxid % 251) as u8; len as usize])
                            })
                            .collect();
                        wal.append(rows(&batch)).unwrap();
                        model.extend(batch);
                    }
                    4 | 5 => {
                        wal.sync().unwrap();
                        synced = model.len();
                    }
                    6 => {
                        let cut = model
                            .get(rng.below(model.len() as u64 + 1) as usize)
                            .map_or(next_zxid, |(z, _)| z.saturating_sub(rng.below(2)));
                        wal.truncate_after(cut).unwrap();
                        model.retain(|(z, _)| *z <= cut);
                        synced = synced.min(model.len());
                    }
                    7 => {
                        let cut = model
                            .get(rng.below(model.len() as u64 + 1) as usize)
                            .map_or(next_zxid + 1, |(z, _)| *z);
                        let removed = wal.compact_before(cut, no_floor).unwrap();
                        let gone = removed.map_or(0, |r| model.partition_point(|(z, _)| *z <= r));
                        assert!(gone <= synced, "{ctx}: compacted entries not yet durable");
                        assert!(
                            model[..gone].iter().all(|(z, _)| *z < cut),
                            "{ctx}: compacted at or above the cut {cut}"
                        );
                        model.drain(..gone);
                        synced -= gone;
                    }
                    8 => {
                        if rng.below(4) == 0 {
                            void_below = wal.next_seq();
                            wal.reset(void_below).unwrap();
                            model.clear();
                            synced = 0;
                        } else {
                            // A crash: what was not synced is gone.
                            drop(wal);
                            model.truncate(synced);
                            wal = Wal::open(dir.path(), opts(sync, segment_bytes), void_below)
                                .unwrap();
                        }
                    }
                    _ => {
                        wal.sync().unwrap();
                        synced = model.len();
                        drop(wal);
                        wal = Wal::open(dir.path(), opts(sync, segment_bytes), void_below).unwrap();
                    }
                }
                assert_eq!(all(&wal), model, "{ctx}");
                assert_eq!(wal.last(), model.last().map(|(z, _)| *z), "{ctx}");
                assert_eq!(wal.first(), model.first().map(|(z, _)| *z), "{ctx}");
            }
        }
    }
}
