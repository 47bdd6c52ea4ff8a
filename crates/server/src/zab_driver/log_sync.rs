//! Group commit for the replicated log: a dedicated thread that makes
//! appended entries durable, one fsync for everything appended meanwhile.
//!
//! The driver appends without sync, then calls [`LogSync::appended`] with the
//! last zxid. The thread wakes, notes the highest appended zxid, calls
//! `Store::sync_wal` once, and reports `Persisted { generation, upto }` back
//! to the driver, which tells the core (`on_persisted`). Truncations and
//! snapshot installs bump the generation; a report from an older generation
//! is dropped (the core's contract: a completion in flight across a snapshot
//! install must not be reported).

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

    /// Entries up to `upto` were appended in `generation`: make them durable.
    pub fn appended(&self, generation: u64, upto: Zxid) {
        let (lock, cv) = &*self.want;
        let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
        w.generation = generation;
        w.upto = upto;
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
