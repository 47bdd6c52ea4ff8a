//! An in-memory log with compaction, used by the simulator and tests. It is the
//! reference for what a [`LogReader`] must answer.

use std::collections::VecDeque;

use crate::error::LogError;
use crate::log::LogReader;
use crate::message::Entry;
use crate::Zxid;

/// Entries after a snapshot point, in zxid order.
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    base: Zxid,
    entries: VecDeque<Entry>,
}

impl MemLog {
    /// An empty log (snapshot point zero).
    pub fn new() -> MemLog {
        MemLog::default()
    }

    /// Appends entries; each must be greater than the current last zxid.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        let mut last = self.last();
        for e in entries {
            if e.zxid <= last {
                return Err(LogError(format!("append {} after {}", e.zxid, last)));
            }
            last = e.zxid;
        }
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    /// Drops every entry after `to`. Fails if `to` is below the snapshot point.
    pub fn truncate(&mut self, to: Zxid) -> Result<(), LogError> {
        if to < self.base {
            return Err(LogError(format!(
                "truncate to {} below snapshot {}",
                to, self.base
            )));
        }
        let keep = self.entries.partition_point(|e| e.zxid <= to);
        self.entries.truncate(keep);
        Ok(())
    }

    /// Compacts every entry `<= upto` into the snapshot point.
    pub fn compact(&mut self, upto: Zxid) {
        if upto <= self.base {
            return;
        }
        let drop = self.entries.partition_point(|e| e.zxid <= upto);
        self.entries.drain(..drop);
        self.base = upto;
    }

    /// Replaces the whole log by an empty one starting after snapshot `base`.
    pub fn reset(&mut self, base: Zxid) {
        self.entries.clear();
        self.base = base;
    }

    /// The retained entry with this zxid.
    pub fn get(&self, zxid: Zxid) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.zxid < zxid);
        self.entries.get(i).filter(|e| e.zxid == zxid)
    }

    /// Number of retained entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The snapshot point.
    pub fn base(&self) -> Zxid {
        self.base
    }

    /// The last zxid (snapshot point if empty).
    pub fn last(&self) -> Zxid {
        self.entries.back().map_or(self.base, |e| e.zxid)
    }

    /// Iterates retained entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Retained entries with zxid in `(after, upto]`.
    pub fn range(&self, after: Zxid, upto: Zxid) -> impl Iterator<Item = &Entry> {
        let start = self.entries.partition_point(|e| e.zxid <= after);
        self.entries
            .range(start..)
            .take_while(move |e| e.zxid <= upto)
    }
}

impl LogReader for MemLog {
    fn last_zxid(&self) -> Result<Zxid, LogError> {
        Ok(self.last())
    }

    fn snapshot_zxid(&self) -> Result<Zxid, LogError> {
        Ok(self.base)
    }

    fn first_retained(&self) -> Result<Option<Zxid>, LogError> {
        Ok(self.entries.front().map(|e| e.zxid))
    }

    fn floor(&self, zxid: Zxid) -> Result<Option<Zxid>, LogError> {
        if zxid < self.base {
            return Ok(None);
        }
        let i = self.entries.partition_point(|e| e.zxid <= zxid);
        Ok(Some(if i == 0 {
            self.base
        } else {
            self.entries[i - 1].zxid
        }))
    }

    fn contains(&self, zxid: Zxid) -> Result<bool, LogError> {
        Ok(self.get(zxid).is_some())
    }

    fn entries_after(
        &self,
        after: Zxid,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        if after < self.base {
            return Err(LogError(format!(
                "entries after {} compacted (snapshot {})",
                after, self.base
            )));
        }
        let start = self.entries.partition_point(|e| e.zxid <= after);
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for e in self.entries.range(start..).take(max_entries) {
            bytes = bytes.saturating_add(e.wire_bytes());
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(epoch: u32, c: u32) -> Entry {
        Entry {
            zxid: Zxid::new(epoch, c),
            data: Bytes::new(),
        }
    }

    #[test]
    fn floor_entries_after_and_compaction_answer_like_a_log_reader() {
        let mut log = MemLog::new();
        log.append(&[e(1, 1), e(1, 2), e(3, 1)]).unwrap();
        assert!(log.append(&[e(2, 5)]).is_err(), "append must be increasing");
        assert_eq!(log.floor(Zxid::new(2, 9)).unwrap(), Some(Zxid::new(1, 2)));
        assert_eq!(log.floor(Zxid::new(0, 9)).unwrap(), Some(Zxid::ZERO));
        log.compact(Zxid::new(1, 1));
        assert_eq!(log.floor(Zxid::new(0, 9)).unwrap(), None);
        assert_eq!(log.first_retained().unwrap(), Some(Zxid::new(1, 2)));
        assert!(log.entries_after(Zxid::ZERO, 10, usize::MAX).is_err());
        let after = log.entries_after(Zxid::new(1, 1), 1, usize::MAX).unwrap();
        assert_eq!(after, vec![e(1, 2)]);
        log.truncate(Zxid::new(1, 2)).unwrap();
        assert_eq!(log.last(), Zxid::new(1, 2));
        assert!(log.truncate(Zxid::ZERO).is_err());
    }

    proptest::proptest! {
        /// MemLog answers every LogReader query like a plain list of zxids
        /// (the reference model), across appends, truncations and compactions.
        #[test]
        fn mem_log_matches_a_plain_model(ops in proptest::collection::vec((0u8..3, 1u32..4, 0u32..6), 1..40),
                                         probe in (0u32..6, 0u32..8)) {
            let mut log = MemLog::new();
            let mut model: Vec<Zxid> = Vec::new();
            let mut base = Zxid::ZERO;
            for (op, epoch_step, n) in ops {
                let last = model.last().copied().unwrap_or(base);
                match op {
                    0 => {
                        let epoch = last.epoch() + epoch_step - 1;
                        let start = if epoch == last.epoch() { last.counter() } else { 0 };
                        let new: Vec<Entry> = (1..=n).map(|i| e(epoch.max(1), start + i)).collect();
                        if log.append(&new).is_ok() {
                            model.extend(new.iter().map(|x| x.zxid));
                        }
                    }
                    1 => {
                        let to = model.get(n as usize).copied().unwrap_or(last);
                        log.truncate(to).unwrap();
                        model.retain(|z| *z <= to);
                    }
                    _ => {
                        if let Some(upto) = model.get(n as usize).copied() {
                            log.compact(upto);
                            model.retain(|z| *z > upto);
                            base = upto;
                        }
                    }
                }
            }
            let x = Zxid::new(probe.0, probe.1);
            proptest::prop_assert_eq!(log.last(), model.last().copied().unwrap_or(base));
            proptest::prop_assert_eq!(log.contains(x).unwrap(), model.contains(&x));
            let floor = if x < base { None } else { Some(model.iter().copied().filter(|z| *z <= x).max().unwrap_or(base)) };
            proptest::prop_assert_eq!(log.floor(x).unwrap(), floor);
            if x >= base {
                let after: Vec<Zxid> = log.entries_after(x, 3, usize::MAX).unwrap().iter().map(|en| en.zxid).collect();
                let want: Vec<Zxid> = model.iter().copied().filter(|z| *z > x).take(3).collect();
                proptest::prop_assert_eq!(after, want);
            } else {
                proptest::prop_assert!(log.entries_after(x, 3, usize::MAX).is_err());
            }
        }
    }
}
