//! The hub: every watch registered on this member, indexed by path, and the
//! dispatcher thread that hands each applied change to the watches it matches.
//!
//! Data flow: the applier publishes one [`AppliedChanges`] per apply run on a
//! bounded broadcast channel (it never waits for watchers). The dispatcher
//! thread receives them in zxid order and, for each change, looks up the
//! registrations at the changed path and at each of its ancestors (a hash
//! lookup per path segment; the number of watches does not matter). A
//! stream gets the matching changes of one entry as one [`Group`] through a
//! bounded channel with `try_send`: a full channel cuts that stream off
//! (its registrations go, and the stream ends with the zxid to resume from)
//! instead of making the dispatcher, the applier or other streams wait. A
//! one-shot watch gets its first matching change and is removed.
//!
//! [`Hub::through`] is the zxid every published run up to which has been
//! dispatched: a stream that has drained its channel has seen every
//! matching change up to it (its progress events say so).

use crate::applier::{AppliedChanges, AppliedView};
use crate::metrics::Metrics;
use keeper_store::{ChangeEvent, ChangeKind};
use keeper_zab::Zxid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Per stream: the indexes of its matching events in the current run, the
/// number of entries (distinct zxids) among them, and its sink.
type StreamMatches = (Vec<u32>, u32, Arc<StreamSink>);

/// A set of change kinds (for one-shot watches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSet(u8);

impl KindSet {
    pub fn of(kinds: &[ChangeKind]) -> KindSet {
        KindSet(kinds.iter().fold(0, |acc, k| acc | Self::bit(*k)))
    }

    pub fn contains(self, kind: ChangeKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    fn bit(kind: ChangeKind) -> u8 {
        match kind {
            ChangeKind::Created => 1,
            ChangeKind::Deleted => 2,
            ChangeKind::DataChanged => 4,
            ChangeKind::ChildrenChanged => 8,
        }
    }
}

/// Which changes a watch wants, relative to its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Changes at the path itself, of these kinds (one-shot watches).
    Node(KindSet),
    /// Changes at the path and at its direct children.
    NodeAndChildren,
    /// Changes at the path and anywhere below it.
    Recursive,
}

/// The parent of a valid path (`None` for the root).
pub fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Whether a change of `kind` at `changed` is one a watch of `scope` on
/// `watched` wants. The hub's index gives the same answer (tested).
pub fn matches(scope: Scope, watched: &str, changed: &str, kind: ChangeKind) -> bool {
    match scope {
        Scope::Node(kinds) => changed == watched && kinds.contains(kind),
        Scope::NodeAndChildren => changed == watched || parent_of(changed) == Some(watched),
        Scope::Recursive => {
            changed == watched
                || watched == "/"
                || (changed.starts_with(watched)
                    && changed.as_bytes().get(watched.len()) == Some(&b'/'))
        }
    }
}

/// The matching changes of one apply run for one stream, in apply order:
/// indexes into a shared run (nothing is copied per stream). It may span
/// several entries (zxids).
#[derive(Debug, Clone)]
pub struct Group {
    pub changes: Arc<AppliedChanges>,
    pub indices: Vec<u32>,
    /// How many entries (distinct zxids) the indexed changes belong to.
    pub entries: u32,
}

impl Group {
    /// The zxid of its last change (`Zxid::ZERO` for an empty group, which
    /// is never sent).
    pub fn last_zxid(&self) -> Zxid {
        self.indices
            .last()
            .and_then(|i| self.changes.events.get(*i as usize))
            .map_or(Zxid::ZERO, |e| e.zxid)
    }

    /// Its changes with their indexes into the run (for the run's cached
    /// wire form, [`AppliedChanges::wire`]).
    pub fn indexed(&self) -> impl Iterator<Item = (usize, &ChangeEvent)> + '_ {
        self.indices.iter().filter_map(|i| {
            let i = *i as usize;
            self.changes.events.get(i).map(|e| (i, e))
        })
    }

    pub fn events(&self) -> impl Iterator<Item = &ChangeEvent> + '_ {
        self.indices
            .iter()
            .filter_map(|i| self.changes.events.get(*i as usize))
    }
}

/// Why a stream was cut off (the last event it gets says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// Its buffer was full: the consumer reads too slowly.
    SlowConsumer = 1,
    /// The dispatcher fell behind the applier, or the store jumped to a
    /// snapshot: changes this member never published may be missing.
    Reset = 2,
    /// The member is shutting down.
    Shutdown = 3,
}

impl CutReason {
    pub fn from_code(code: u64) -> Option<CutReason> {
        match code {
            1 => Some(CutReason::SlowConsumer),
            2 => Some(CutReason::Reset),
            3 => Some(CutReason::Shutdown),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CutReason::SlowConsumer => "slow_consumer",
            CutReason::Reset => "reset",
            CutReason::Shutdown => "shutdown",
        }
    }
}

/// A stream's side of its channel, shared by all its registrations.
struct StreamSink {
    tx: mpsc::UnboundedSender<Group>,
    /// 0 while live, else the [`CutReason`] code.
    cut: Arc<AtomicU64>,
    /// Entries sent and not yet received (bounded by the hub's `buffer`).
    queued: Arc<AtomicUsize>,
}

/// Where a registration's matches go.
enum Sink {
    Stream(Arc<StreamSink>),
    Once {
        tx: Option<oneshot::Sender<Result<ChangeEvent, CutReason>>>,
        /// Only changes above this zxid fire it.
        after: Zxid,
    },
}

struct Reg {
    id: u64,
    scope: Scope,
    sink: Sink,
}

#[derive(Default)]
struct Registry {
    by_path: HashMap<Box<str>, Vec<Reg>>,
    /// Every registered id's paths (to remove them all at once).
    paths_of: HashMap<u64, Vec<Box<str>>>,
}

impl Registry {
    fn insert(&mut self, path: &str, reg: Reg) {
        self.paths_of.entry(reg.id).or_default().push(path.into());
        self.by_path.entry(path.into()).or_default().push(reg);
    }

    fn remove(&mut self, id: u64) {
        let Some(paths) = self.paths_of.remove(&id) else {
            return;
        };
        for path in paths {
            if let Some(regs) = self.by_path.get_mut(&path) {
                regs.retain(|r| r.id != id);
                if regs.is_empty() {
                    self.by_path.remove(&path);
                }
            }
        }
    }
}

/// The member's watches and their dispatcher. Shared as `Arc<Hub>`.
pub struct Hub {
    registry: Mutex<Registry>,
    through: AtomicU64,
    next_id: AtomicU64,
    open: AtomicUsize,
    max_open: usize,
    buffer: usize,
    metrics: Arc<Metrics>,
    /// Set by [`Hub::close`]: nothing more is admitted.
    closed: AtomicBool,
}

/// One admitted stream or one-shot watch: counts against
/// `max_watch_streams` until dropped.
pub struct Admission {
    hub: Arc<Hub>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A registration; dropping it removes the watch.
pub struct Registration {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.lock().remove(self.id);
    }
}

/// What a stream reads from: its groups, and why it was cut off.
pub struct StreamFeed {
    rx: mpsc::UnboundedReceiver<Group>,
    pub cut: Arc<AtomicU64>,
    /// Entries sent and not yet received; [`StreamFeed::recv`] counts down.
    queued: Arc<AtomicUsize>,
    /// Every change up to this zxid was dispatched before the stream
    /// registered (it gets every later one, or is cut off).
    pub start: Zxid,
    pub registration: Registration,
}

impl StreamFeed {
    /// Why the stream was cut off, if it was.
    pub fn cut_reason(&self) -> Option<CutReason> {
        CutReason::from_code(self.cut.load(Ordering::Acquire))
    }

    /// The next group; `None` once the stream was cut off (or the hub
    /// closed) and everything sent before was received.
    pub async fn recv(&mut self) -> Option<Group> {
        let group = self.rx.recv().await?;
        self.received(&group);
        Some(group)
    }

    /// A group already sent, without waiting.
    pub fn try_recv(&mut self) -> Result<Group, mpsc::error::TryRecvError> {
        let group = self.rx.try_recv()?;
        self.received(&group);
        Ok(group)
    }

    fn received(&self, group: &Group) {
        self.queued
            .fetch_sub(group.entries as usize, Ordering::AcqRel);
    }
}

impl Hub {
    /// Subscribes to the applier's changes and starts the dispatcher thread
    /// (it ends when the applier does).
    pub fn start(
        view: &AppliedView,
        metrics: Arc<Metrics>,
        max_open: usize,
        buffer: usize,
    ) -> std::io::Result<Arc<Hub>> {
        let rx = view.subscribe_events();
        let hub = Arc::new(Hub {
            registry: Mutex::new(Registry::default()),
            through: AtomicU64::new(view.applied_zxid().0),
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            max_open,
            buffer: buffer.max(1),
            metrics,
            closed: AtomicBool::new(false),
        });
        let dispatcher = hub.clone();
        std::thread::Builder::new()
            .name("keeper-watches".into())
            .spawn(move || dispatcher.run(rx))?;
        Ok(hub)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every published run up to this zxid has been dispatched.
    pub fn through(&self) -> Zxid {
        Zxid(self.through.load(Ordering::Acquire))
    }

    /// Streams and waiting one-shot watches open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Ends every stream (`cut_off`, reason `shutdown`) and every waiting
    /// one-shot watch, and admits no more: the member is shutting down, and
    /// open streams would otherwise hold the HTTP server's graceful stop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        cut_all(&mut self.lock(), CutReason::Shutdown);
    }

    /// Admits one more stream or one-shot watch, or `None` at
    /// `max_watch_streams` (or once closed).
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut cur = self.open.load(Ordering::Acquire);
        loop {
            if cur >= self.max_open {
                self.metrics.watch_streams_refused.inc();
                return None;
            }
            match self
                .open
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Admission { hub: self.clone() }),
                Err(now) => cur = now,
            }
        }
    }

    /// Registers a stream watching each `(path, scope)`.
    pub fn register_stream(self: &Arc<Self>, watches: &[(String, Scope)]) -> StreamFeed {
        let (tx, rx) = mpsc::unbounded_channel();
        let cut = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let sink = Arc::new(StreamSink {
            tx,
            cut: cut.clone(),
            queued: queued.clone(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut registry = self.lock();
        for (path, scope) in watches {
            registry.insert(
                path,
                Reg {
                    id,
                    scope: *scope,
                    sink: Sink::Stream(sink.clone()),
                },
            );
        }
        // Read under the lock: no run is half dispatched.
        let start = self.through();
        drop(registry);
        StreamFeed {
            rx,
            cut,
            queued,
            start,
            registration: Registration {
                hub: self.clone(),
                id,
            },
        }
    }

    /// Registers a one-shot watch: the first change above `after` at `path`
    /// whose kind is in `kinds` is sent, and the watch is gone.
    pub fn register_once(
        self: &Arc<Self>,
        path: &str,
        kinds: KindSet,
        after: Zxid,
    ) -> (
        Registration,
        oneshot::Receiver<Result<ChangeEvent, CutReason>>,
    ) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            path,
            Reg {
                id,
                scope: Scope::Node(kinds),
                sink: Sink::Once {
                    tx: Some(tx),
                    after,
                },
            },
        );
        (
            Registration {
                hub: self.clone(),
                id,
            },
            rx,
        )
    }

    fn run(&self, mut rx: broadcast::Receiver<Arc<AppliedChanges>>) {
        loop {
            match rx.blocking_recv() {
                Ok(run) => {
                    let mut registry = self.lock();
                    if run.reset {
                        cut_all(&mut registry, CutReason::Reset);
                    } else {
                        self.dispatch(&mut registry, &run);
                    }
                    self.through.fetch_max(run.upto.0, Ordering::AcqRel);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "watch dispatcher fell behind the applier; cutting every stream off"
                    );
                    cut_all(&mut self.lock(), CutReason::Reset);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    cut_all(&mut self.lock(), CutReason::Shutdown);
                    return;
                }
            }
        }
    }

    /// Hands every change of `run` to the watches it matches: one group
    /// per stream for the whole run.
    fn dispatch(&self, registry: &mut Registry, run: &Arc<AppliedChanges>) {
        if registry.by_path.is_empty() {
            return;
        }
        // Per stream id: its matches in this run.
        let mut groups: HashMap<u64, StreamMatches> = HashMap::new();
        let mut fired: Vec<u64> = Vec::new();
        let mut cut: Vec<u64> = Vec::new();
        for (index, event) in run.events.iter().enumerate() {
            let mut visit = |at: &str, level: Level| {
                let Some(regs) = registry.by_path.get_mut(at) else {
                    return;
                };
                for reg in regs.iter_mut() {
                    let wanted = match (reg.scope, level) {
                        (Scope::Node(kinds), Level::Itself) => kinds.contains(event.kind),
                        (Scope::Node(_), _) => false,
                        (Scope::NodeAndChildren, Level::Below) => false,
                        (Scope::NodeAndChildren, _) | (Scope::Recursive, _) => true,
                    };
                    if !wanted {
                        continue;
                    }
                    match &mut reg.sink {
                        Sink::Stream(sink) => {
                            if sink.cut.load(Ordering::Acquire) != 0 {
                                continue;
                            }
                            let group = groups
                                .entry(reg.id)
                                .or_insert_with(|| (Vec::new(), 0, sink.clone()));
                            // Two watched paths of one stream may both match.
                            if group.0.last() == Some(&(index as u32)) {
                                continue;
                            }
                            let new_entry = group
                                .0
                                .last()
                                .and_then(|i| run.events.get(*i as usize))
                                .is_none_or(|last| last.zxid != event.zxid);
                            if new_entry {
                                group.1 += 1;
                            }
                            group.0.push(index as u32);
                        }
                        Sink::Once { tx, after } => {
                            if event.zxid <= *after {
                                continue;
                            }
                            if let Some(tx) = tx.take() {
                                if tx.send(Ok(event.clone())).is_ok() {
                                    self.metrics.watch_events_sent.inc();
                                }
                                fired.push(reg.id);
                            }
                        }
                    }
                }
            };
            visit(&event.path, Level::Itself);
            let mut level = Level::Child;
            let mut at = event.path.as_str();
            while let Some(parent) = parent_of(at) {
                visit(parent, level);
                level = Level::Below;
                at = parent;
            }
        }
        for (id, (indices, entries, sink)) in groups {
            let queued = sink.queued.load(Ordering::Acquire);
            if queued + entries as usize > self.buffer {
                sink.cut
                    .store(CutReason::SlowConsumer as u64, Ordering::Release);
                self.metrics.watch_slow_consumers.inc();
                cut.push(id);
                continue;
            }
            sink.queued.fetch_add(entries as usize, Ordering::AcqRel);
            let group = Group {
                changes: run.clone(),
                indices,
                entries,
            };
            // An error means the stream is going away; its registration goes with it.
            let _ = sink.tx.send(group);
        }
        for id in fired.into_iter().chain(cut) {
            // Dropping the senders ends the stream once it drained its buffer.
            registry.remove(id);
        }
    }
}

/// Where a registration's path is relative to a changed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Itself,
    Child,
    Below,
}

/// Cuts every stream off and fails every one-shot watch (both may have
/// missed changes); removes them all.
fn cut_all(registry: &mut Registry, reason: CutReason) {
    for (_, regs) in registry.by_path.drain() {
        for reg in regs {
            match reg.sink {
                Sink::Stream(sink) => {
                    let _ = sink.cut.compare_exchange(
                        0,
                        reason as u64,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                Sink::Once { tx, .. } => {
                    if let Some(tx) = tx {
                        let _ = tx.send(Err(reason));
                    }
                }
            }
        }
    }
    registry.paths_of.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(zxid: u64, path: &str, kind: ChangeKind) -> ChangeEvent {
        ChangeEvent {
            zxid: Zxid(zxid),
            path: path.into(),
            kind,
            stat: None,
            data: None,
        }
    }

    fn hub(buffer: usize) -> Arc<Hub> {
        Arc::new(Hub {
            registry: Mutex::new(Registry::default()),
            through: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            max_open: 2,
            buffer,
            metrics: Arc::new(Metrics::default()),
            closed: AtomicBool::new(false),
        })
    }

    fn publish(hub: &Hub, upto: u64, events: Vec<ChangeEvent>) {
        let run = Arc::new(AppliedChanges::new(Zxid(upto), events, false));
        hub.dispatch(&mut hub.lock(), &run);
        hub.through.fetch_max(upto, Ordering::AcqRel);
    }

    fn drain(feed: &mut StreamFeed) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Ok(g) = feed.try_recv() {
            for e in g.events() {
                out.push((e.zxid.0, e.path.clone()));
            }
        }
        out
    }

    #[test]
    fn the_index_agrees_with_matches_for_every_scope_and_path() {
        let paths = ["/", "/a", "/a/b", "/a/b/c", "/ab", "/ab/c", "/b"];
        let kinds = [
            ChangeKind::Created,
            ChangeKind::Deleted,
            ChangeKind::DataChanged,
            ChangeKind::ChildrenChanged,
        ];
        let scopes = [
            Scope::Recursive,
            Scope::NodeAndChildren,
            Scope::Node(KindSet::of(&[ChangeKind::Created, ChangeKind::Deleted])),
        ];
        for watched in paths {
            for scope in scopes {
                for changed in paths {
                    for kind in kinds {
                        let h = hub(16);
                        let want = matches(scope, watched, changed, kind);
                        let got = match scope {
                            Scope::Node(kinds) => {
                                let (_reg, mut rx) = h.register_once(watched, kinds, Zxid::ZERO);
                                publish(&h, 1, vec![ev(1, changed, kind)]);
                                rx.try_recv().is_ok()
                            }
                            _ => {
                                let mut feed = h.register_stream(&[(watched.to_string(), scope)]);
                                publish(&h, 1, vec![ev(1, changed, kind)]);
                                !drain(&mut feed).is_empty()
                            }
                        };
                        assert_eq!(got, want, "{scope:?} on {watched} vs {kind:?} at {changed}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_stream_gets_one_group_per_run_without_duplicates() {
        let h = hub(16);
        let mut feed = h.register_stream(&[
            ("/a".to_string(), Scope::Recursive),
            ("/a/b".to_string(), Scope::Recursive),
        ]);
        publish(
            &h,
            4,
            vec![
                ev(2, "/a/b/c", ChangeKind::Created),
                ev(2, "/a/b", ChangeKind::ChildrenChanged),
                ev(3, "/x", ChangeKind::Created),
                ev(4, "/a", ChangeKind::DataChanged),
            ],
        );
        let g = feed.try_recv().expect("one group");
        assert_eq!(g.last_zxid(), Zxid(4));
        assert_eq!(g.indices, vec![0, 1, 3], "nothing for /x, nothing twice");
        assert_eq!(g.entries, 2);
        assert!(feed.try_recv().is_err(), "one group for the run");
        assert_eq!(h.through(), Zxid(4));
    }

    #[test]
    fn the_buffer_bound_counts_entries_not_runs_and_receiving_frees_it() {
        let h = hub(3);
        let mut feed = h.register_stream(&[("/".to_string(), Scope::Recursive)]);
        // Two entries queued, then received: the bound is free again.
        publish(
            &h,
            2,
            vec![
                ev(1, "/n", ChangeKind::DataChanged),
                ev(2, "/n", ChangeKind::DataChanged),
            ],
        );
        assert_eq!(feed.try_recv().expect("a group").entries, 2);
        publish(
            &h,
            5,
            (3..=5)
                .map(|z| ev(z, "/n", ChangeKind::DataChanged))
                .collect(),
        );
        assert_eq!(feed.cut_reason(), None, "3 entries fit a buffer of 3");
        // One more entry while 3 are queued: cut off.
        publish(&h, 6, vec![ev(6, "/n", ChangeKind::DataChanged)]);
        assert_eq!(feed.cut_reason(), Some(CutReason::SlowConsumer));
        assert_eq!(
            feed.try_recv().expect("what was queued").last_zxid(),
            Zxid(5)
        );
        assert!(matches!(
            feed.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn a_full_stream_is_cut_off_and_others_still_get_everything() {
        let h = hub(2);
        let mut slow = h.register_stream(&[("/".to_string(), Scope::Recursive)]);
        let mut fast = h.register_stream(&[("/".to_string(), Scope::Recursive)]);
        for z in 1..=5u64 {
            publish(&h, z, vec![ev(z, "/n", ChangeKind::DataChanged)]);
            assert_eq!(drain(&mut fast), vec![(z, "/n".to_string())]);
        }
        assert_eq!(slow.cut_reason(), Some(CutReason::SlowConsumer));
        // What was buffered before the cut is intact, then the channel ends.
        let got: Vec<u64> = std::iter::from_fn(|| slow.try_recv().ok())
            .map(|g| g.last_zxid().0)
            .collect();
        assert_eq!(got, vec![1, 2]);
        assert!(matches!(
            slow.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(h.metrics.watch_slow_consumers.get(), 1);
    }

    #[test]
    fn a_one_shot_fires_once_and_only_after_its_zxid() {
        let h = hub(4);
        let (_reg, mut rx) =
            h.register_once("/a", KindSet::of(&[ChangeKind::DataChanged]), Zxid(5));
        publish(&h, 5, vec![ev(5, "/a", ChangeKind::DataChanged)]);
        assert!(rx.try_recv().is_err());
        publish(
            &h,
            7,
            vec![
                ev(6, "/a", ChangeKind::DataChanged),
                ev(7, "/a", ChangeKind::DataChanged),
            ],
        );
        assert_eq!(rx.try_recv().unwrap().unwrap().zxid, Zxid(6));
        assert!(h.lock().by_path.is_empty(), "a fired watch is removed");
    }

    #[test]
    fn admission_is_bounded_and_released_on_drop() {
        let h = hub(4);
        let a = h.admit().expect("first");
        let _b = h.admit().expect("second");
        assert!(h.admit().is_none());
        drop(a);
        assert!(h.admit().is_some());
    }

    #[test]
    fn closing_ends_every_stream_and_one_shot_and_admits_no_more() {
        let h = hub(4);
        let mut feed = h.register_stream(&[("/".to_string(), Scope::Recursive)]);
        let (_reg, mut once) =
            h.register_once("/a", KindSet::of(&[ChangeKind::Created]), Zxid::ZERO);
        h.close();
        assert_eq!(feed.cut_reason(), Some(CutReason::Shutdown));
        assert!(matches!(
            feed.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(once.try_recv().unwrap(), Err(CutReason::Shutdown));
        assert!(h.admit().is_none());
    }

    #[test]
    fn dropping_a_registration_removes_its_watches() {
        let h = hub(4);
        let feed = h.register_stream(&[
            ("/a".to_string(), Scope::Recursive),
            ("/b".to_string(), Scope::NodeAndChildren),
        ]);
        assert_eq!(h.lock().by_path.len(), 2);
        drop(feed);
        assert!(h.lock().by_path.is_empty());
        assert!(h.lock().paths_of.is_empty());
    }
}
