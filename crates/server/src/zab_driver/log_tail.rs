//! The in-memory tail of the local log (see [`LogTail`]).

use bytes::Bytes;
use keeper_zab::Zxid;
use std::collections::VecDeque;

/// Most appended entries kept in memory for their commit (see [`LogTail`]).
pub(super) const TAIL_MAX_ENTRIES: usize = 65_536;

/// The newest entries of the local log, kept in memory from their append
/// until they are committed, so that a commit hands them to the applier
/// without reading them back from RocksDB. It always holds a contiguous
/// suffix of the log: every logged entry above `base`, in order (appends
/// push at the back; truncation cuts the back; a snapshot install or the
/// size bound moves `base` up).
pub(super) struct LogTail {
    base: Zxid,
    entries: VecDeque<(Zxid, Bytes)>,
}

impl LogTail {
    pub(super) fn new(last_logged: Zxid) -> LogTail {
        LogTail {
            base: last_logged,
            entries: VecDeque::new(),
        }
    }

    pub(super) fn appended(&mut self, zxid: Zxid, data: Bytes) {
        self.entries.push_back((zxid, data));
        if self.entries.len() > TAIL_MAX_ENTRIES {
            if let Some((z, _)) = self.entries.pop_front() {
                self.base = z;
            }
        }
    }

    /// The log lost every entry above `to`.
    pub(super) fn truncated(&mut self, to: Zxid) {
        while self.entries.back().is_some_and(|(z, _)| *z > to) {
            self.entries.pop_back();
        }
        self.base = self.base.min(to);
    }

    /// The log now starts after `zxid` (an installed snapshot).
    pub(super) fn reset(&mut self, zxid: Zxid) {
        self.entries.clear();
        self.base = zxid;
    }

    /// Takes the entries in `(after, upto]`, if the tail holds all of them.
    pub(super) fn take(&mut self, after: Zxid, upto: Zxid) -> Option<Vec<(Zxid, Bytes)>> {
        if after < self.base {
            return None;
        }
        while let Some((z, _)) = self.entries.front() {
            if *z > after {
                break;
            }
            self.base = *z;
            self.entries.pop_front();
        }
        let mut out = Vec::new();
        while let Some((z, _)) = self.entries.front() {
            if *z > upto {
                break;
            }
            if let Some(entry) = self.entries.pop_front() {
                self.base = entry.0;
                out.push(entry);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(n: u64) -> Zxid {
        Zxid::new(1, n as u32)
    }

    fn zxids(rows: &[(Zxid, Bytes)]) -> Vec<Zxid> {
        rows.iter().map(|(z, _)| *z).collect()
    }

    #[test]
    fn commits_take_appended_entries_in_order() {
        let mut tail = LogTail::new(z(0));
        for n in 1..=5 {
            tail.appended(z(n), Bytes::from(vec![n as u8]));
        }
        let rows = tail.take(z(0), z(3)).unwrap();
        assert_eq!(zxids(&rows), vec![z(1), z(2), z(3)]);
        assert_eq!(rows[2].1, Bytes::from(vec![3]));
        assert_eq!(zxids(&tail.take(z(3), z(9)).unwrap()), vec![z(4), z(5)]);
        assert!(tail.take(z(5), z(9)).unwrap().is_empty());
    }

    #[test]
    fn a_commit_from_before_the_tail_is_read_from_the_log() {
        // Started on a log that already held entries up to 4.
        let mut tail = LogTail::new(z(4));
        tail.appended(z(5), Bytes::new());
        assert!(tail.take(z(2), z(5)).is_none());
        assert_eq!(zxids(&tail.take(z(4), z(5)).unwrap()), vec![z(5)]);
    }

    #[test]
    fn truncation_cuts_the_back_and_a_snapshot_resets() {
        let mut tail = LogTail::new(z(0));
        for n in 1..=5 {
            tail.appended(z(n), Bytes::new());
        }
        tail.truncated(z(3));
        tail.appended(Zxid::new(2, 1), Bytes::new());
        assert_eq!(
            zxids(&tail.take(z(0), Zxid::new(2, 1)).unwrap()),
            vec![z(1), z(2), z(3), Zxid::new(2, 1)]
        );
        // Truncating below the tail's base: nothing above `to` is left.
        let mut tail = LogTail::new(z(4));
        tail.appended(z(5), Bytes::new());
        tail.truncated(z(2));
        assert!(tail.take(z(1), z(9)).is_none());
        assert!(tail.take(z(2), z(9)).unwrap().is_empty());
        tail.reset(Zxid::new(3, 7));
        assert!(tail.take(z(2), z(9)).is_none());
        tail.appended(Zxid::new(3, 8), Bytes::new());
        assert_eq!(
            zxids(&tail.take(Zxid::new(3, 7), Zxid::new(3, 8)).unwrap()),
            vec![Zxid::new(3, 8)]
        );
    }

    #[test]
    fn the_size_bound_drops_the_oldest_entries() {
        let mut tail = LogTail::new(z(0));
        let n = TAIL_MAX_ENTRIES as u64 + 2;
        for i in 1..=n {
            tail.appended(z(i), Bytes::new());
        }
        assert!(tail.take(z(1), z(n)).is_none());
        let rows = tail.take(z(2), z(n)).unwrap();
        assert_eq!(rows.len(), TAIL_MAX_ENTRIES);
        assert_eq!(rows.first().map(|r| r.0), Some(z(3)));
    }
}
