//! Group commit for the replicated log: a dedicated thread that makes
//! appended entries durable, one fsync for everything appended meanwhile.
//!
//! The driver appends without sync, then calls [`LogSync::appended`] with the
//! last zxid. The thread wakes, notes the highest appended zxid, calls
//! `Store::sync_wal` once, and reports `Persisted { generation, upto }` back
//! to the driver, which tells the core (`on_persisted`). Truncations and
//! snapshot installs bump the generation; a report from an older generation
//! is dropped (the core's contract: a completion in flight across a snapshot
//! install must not be reported). [`Durability`] is the driver's side of that
//! bookkeeping as plain state, so its rules are unit-tested: every new
//! generation that keeps log entries the core has not seen durable asks for
//! a sync of its own, or the core could wait for a report that never comes.

use keeper_store::Store;
use keeper_zab::Zxid;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// A durability report from the sync thread.
#[derive(Debug, Clone, Copy)]
pub struct Persisted {
    pub generation: u64,
    pub upto: Zxid,
    /// How long the fsync took, in microseconds.
    pub fsync_us: u64,
}

/// A sync the driver must ask the sync thread for ([`LogSync::appended`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRequest {
    pub generation: u64,
    pub upto: Zxid,
}

/// What the driver knows about its log's durability: the generation
/// (bumped by truncations and snapshot installs), the last appended zxid
/// and the last one reported durable in this generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    generation: u64,
    appended: Zxid,
    durable: Zxid,
}

impl Durability {
    /// A log whose entries up to `last` are durable (as found at start).
    pub fn new(last: Zxid) -> Durability {
        Durability {
            generation: 0,
            appended: last,
            durable: last,
        }
    }

    /// Entries up to `last` were appended (unsynced): sync them.
    pub fn appended(&mut self, last: Zxid) -> SyncRequest {
        self.appended = last;
        SyncRequest {
            generation: self.generation,
            upto: last,
        }
    }

    /// The log was cut after `to` (ZAB TRUNC). Reports in flight are dropped
    /// (new generation), so the entries kept up to `to` need a sync report
    /// of their own: without one, a follower whose last durable report was
    /// below `to` would wait for it forever and never ack NEWLEADER
    /// (issue 9, problem 5). The returned request must be sent.
    pub fn truncated(&mut self, to: Zxid) -> SyncRequest {
        self.generation += 1;
        self.appended = to;
        self.durable = self.durable.min(to);
        SyncRequest {
            generation: self.generation,
            upto: to,
        }
    }

    /// A snapshot install starts: reports in flight are dropped from now on
    /// (the log they describe is being replaced).
    pub fn invalidate(&mut self) {
        self.generation += 1;
    }

    /// A snapshot install that was started did not happen: the log stays,
    /// but reports in flight were dropped, so ask for a sync of all of it.
    pub fn install_abandoned(&mut self) -> SyncRequest {
        self.generation += 1;
        SyncRequest {
            generation: self.generation,
            upto: self.appended,
        }
    }

    /// A snapshot at `zxid` was installed (durably, with an empty log).
    pub fn installed(&mut self, zxid: Zxid) {
        self.generation += 1;
        self.appended = zxid;
        self.durable = zxid;
    }

    /// A report from the sync thread: the zxid to give the core's
    /// `on_persisted`, or `None` for a report of an older generation.
    pub fn persisted(&mut self, p: &Persisted) -> Option<Zxid> {
        if p.generation != self.generation {
            return None;
        }
        self.durable = self.durable.max(p.upto);
        Some(p.upto)
    }

    /// Appended entries are not all reported durable yet.
    pub fn syncing(&self) -> bool {
        self.durable < self.appended
    }

    pub fn appended_zxid(&self) -> Zxid {
        self.appended
    }
}

#[derive(Default)]
struct Want {
    generation: u64,
    upto: Zxid,
    stop: bool,
}

/// Handle to the sync thread.
pub struct LogSync {
    want: Arc<(Mutex<Want>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogSync {
    /// Starts the thread; reports go to `reports` (`Err` reports mean the disk failed).
    pub fn start(
        store: Arc<Store>,
        reports: mpsc::UnboundedSender<Result<Persisted, String>>,
    ) -> std::io::Result<LogSync> {
        let want = Arc::new((Mutex::new(Want::default()), Condvar::new()));
        let w = want.clone();
        let thread = std::thread::Builder::new()
            .name("keeper-log-sync".into())
            .spawn(move || sync_loop(store, w, reports))?;
        Ok(LogSync {
            want,
            thread: Some(thread),
        })
    }

    /// Make the entries of `req` durable and report them.
    pub fn request(&self, req: SyncRequest) {
        let (lock, cv) = &*self.want;
        let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
        w.generation = req.generation;
        w.upto = req.upto;
        cv.notify_one();
    }

    /// Stops the thread after its current fsync.
    pub fn stop(&mut self) {
        {
            let (lock, cv) = &*self.want;
            let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
            w.stop = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LogSync {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sync_loop(
    store: Arc<Store>,
    want: Arc<(Mutex<Want>, Condvar)>,
    reports: mpsc::UnboundedSender<Result<Persisted, String>>,
) {
    let (lock, cv) = &*want;
    let mut done = (0u64, Zxid::ZERO);
    loop {
        let (generation, upto) = {
            let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !w.stop && (w.generation, w.upto) == done {
                w = cv.wait(w).unwrap_or_else(|p| p.into_inner());
            }
            if w.stop {
                return;
            }
            (w.generation, w.upto)
        };
        let started = Instant::now();
        let result = store.sync_wal();
        let fsync_us = started.elapsed().as_micros() as u64;
        done = (generation, upto);
        let report = result.map(|()| Persisted {
            generation,
            upto,
            fsync_us,
        });
        let failed = report.is_err();
        if reports.send(report.map_err(|e| e.to_string())).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keeper_store::StoreConfig;
    use std::time::Duration;

    fn report(generation: u64, upto: Zxid) -> Persisted {
        Persisted {
            generation,
            upto,
            fsync_us: 0,
        }
    }

    /// Regression (issue 9, problem 5): TRUNC bumped the generation, which
    /// dropped the fsync report in flight, and scheduled no other sync; with
    /// no append after the TRUNC the core never learnt the kept entries were
    /// durable and the follower never acked NEWLEADER.
    #[test]
    fn truncation_drops_the_report_in_flight_and_asks_for_a_sync_of_what_it_kept() {
        let z = |c| Zxid::new(1, c);
        let mut d = Durability::new(z(2));
        assert_eq!(
            d.appended(z(9)),
            SyncRequest {
                generation: 0,
                upto: z(9)
            }
        );
        assert!(d.syncing());
        let req = d.truncated(z(5));
        assert_eq!(
            req,
            SyncRequest {
                generation: 1,
                upto: z(5)
            }
        );
        // The report for the old generation is stale: never passed on.
        assert_eq!(d.persisted(&report(0, z(9))), None);
        assert!(d.syncing(), "entries 3..5 are not known durable yet");
        // The requested sync's report reaches the core.
        assert_eq!(d.persisted(&report(1, z(5))), Some(z(5)));
        assert!(!d.syncing());
        // Install: reports in flight during it are dropped; after it the
        // snapshot's zxid is durable.
        d.appended(z(6));
        d.invalidate();
        assert_eq!(d.persisted(&report(1, z(6))), None);
        // An abandoned install asks for a sync of the whole log again.
        let req = d.install_abandoned();
        assert_eq!(req.upto, z(6));
        assert_eq!(d.persisted(&report(req.generation - 1, z(6))), None);
        assert_eq!(d.persisted(&report(req.generation, z(6))), Some(z(6)));
        d.invalidate();
        d.installed(Zxid::new(2, 4));
        assert!(!d.syncing());
        assert_eq!(d.persisted(&report(2, z(6))), None);
        assert_eq!(d.appended_zxid(), Zxid::new(2, 4));
    }

    /// The same, end to end through the sync thread and a store: after a
    /// truncation with no later append, a report for the new generation
    /// arrives and covers the cut.
    #[test]
    fn sync_thread_reports_the_kept_prefix_after_a_truncation_without_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreConfig::default()).unwrap());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut sync = LogSync::start(store.clone(), tx).unwrap();
        let mut d = Durability::new(Zxid::ZERO);
        let rows: Vec<(Zxid, Vec<u8>)> =
            (1..=9).map(|c| (Zxid::new(1, c), vec![c as u8])).collect();
        store.append_log_unsynced(&rows).unwrap();
        sync.request(d.appended(Zxid::new(1, 9)));
        store.truncate_log_after(Zxid::new(1, 5)).unwrap();
        sync.request(d.truncated(Zxid::new(1, 5)));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut told = None;
        while told.is_none() {
            assert!(
                Instant::now() < deadline,
                "no report for the new generation"
            );
            match rx.try_recv() {
                Ok(r) => told = d.persisted(&r.unwrap()),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert_eq!(told, Some(Zxid::new(1, 5)));
        sync.stop();
        drop(store);
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        assert_eq!(store.last_logged(), Zxid::new(1, 5));
    }
}
