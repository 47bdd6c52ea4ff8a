//! One event stream: replay from the change history, then live changes from
//! the hub, with progress events, until the client goes or it is cut off.
//!
//! The stream keeps `position`: every matching change up to it has been
//! sent. It registers with the hub *before* reading the history, so a
//! change is either in what the replay reads or among the groups the hub
//! sends afterwards (the applier writes the history before it publishes);
//! groups at or below `position` are the replay's and are skipped. Within
//! an entry, every change but the last carries no SSE `id`; the last one's
//! `id` is the entry's zxid, so a client resuming from its last `id` gets no
//! gap, and can drop the changes of a half-received entry it gets again.

use super::hub::{matches, Admission, CutReason, Group, Hub, Scope, StreamFeed};
use super::WireEvent;
use crate::applier::AppliedChanges;
use crate::metrics::Metrics;
use axum::response::sse::Event;
use keeper_store::{ChangesRead, Store};
use keeper_zab::Zxid;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Interval, MissedTickBehavior};

/// What a stream was asked for.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// `(path, scope)` of every watched path.
    pub watches: Vec<(String, Scope)>,
    /// Replay the changes after this zxid first.
    pub from_zxid: Option<Zxid>,
    /// Without `from_zxid`: start after this zxid at least (the member's
    /// applied zxid when the stream opens, so a change the member already
    /// shows is not sent as new).
    pub live_after: Zxid,
    pub with_data: bool,
}

/// The stream could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// `from_zxid` is below the history; resume from `floor` or later.
    Compacted {
        floor: Zxid,
    },
    Storage(String),
}

enum HistoryError {
    Compacted(Zxid),
    Storage(String),
}

enum Phase {
    Replay,
    Live,
    Done,
}

/// A running stream; [`EventStream::next`] gives its SSE events.
pub struct EventStream {
    store: Arc<Store>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    spec: StreamSpec,
    feed: StreamFeed,
    position: Zxid,
    phase: Phase,
    pending: VecDeque<Event>,
    progress: Interval,
    replay_chunk: usize,
    _admission: Admission,
}

impl EventStream {
    /// Registers the stream and, with `from_zxid`, reads the first chunk of
    /// history (so a compacted start is an HTTP error, not a stream event).
    pub fn start(
        store: Arc<Store>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        spec: StreamSpec,
        admission: Admission,
        progress_interval: Duration,
        replay_chunk: usize,
    ) -> Result<EventStream, StartError> {
        let feed = hub.register_stream(&spec.watches);
        let position = spec
            .from_zxid
            .unwrap_or_else(|| feed.start.max(spec.live_after));
        let mut progress = tokio::time::interval_at(
            tokio::time::Instant::now() + progress_interval,
            progress_interval,
        );
        progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stream = EventStream {
            store,
            hub,
            metrics,
            feed,
            position,
            phase: if spec.from_zxid.is_some() {
                Phase::Replay
            } else {
                Phase::Live
            },
            spec,
            pending: VecDeque::new(),
            progress,
            replay_chunk: replay_chunk.max(1),
            _admission: admission,
        };
        // The first event says where the stream starts.
        stream.push(&WireEvent::progress(position.0), true);
        if matches!(stream.phase, Phase::Replay) {
            match stream.read_history() {
                Ok(()) => {}
                Err(HistoryError::Compacted(floor)) => return Err(StartError::Compacted { floor }),
                Err(HistoryError::Storage(e)) => return Err(StartError::Storage(e)),
            }
        }
        Ok(stream)
    }

    /// The next SSE event, or `None` when the stream is over.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Replay => match self.read_history() {
                    Ok(()) => {}
                    Err(HistoryError::Compacted(_)) => self.end("compacted"),
                    Err(HistoryError::Storage(_)) => self.end("storage"),
                },
                Phase::Live => self.live_step().await,
            }
        }
    }

    /// Reads one chunk of history after `position` into `pending`; an empty
    /// chunk ends the replay.
    fn read_history(&mut self) -> Result<(), HistoryError> {
        self.metrics
            .watch_replay_reads
            .fetch_add(1, Ordering::Relaxed);
        let changes = match self.store.read_changes(self.position, self.replay_chunk) {
            Ok(ChangesRead::Changes(changes)) => changes,
            Ok(ChangesRead::Compacted { floor }) => return Err(HistoryError::Compacted(floor)),
            Err(e) => {
                tracing::warn!(error = %e, "reading the change history failed");
                return Err(HistoryError::Storage(e.to_string()));
            }
        };
        let Some(last) = changes.last().map(|c| c.zxid) else {
            self.phase = Phase::Live;
            return Ok(());
        };
        let run = Arc::new(AppliedChanges {
            upto: last,
            events: changes,
            reset: false,
        });
        let mut i = 0;
        while i < run.events.len() {
            let zxid = run.events[i].zxid;
            let mut indices = Vec::new();
            while i < run.events.len() && run.events[i].zxid == zxid {
                let e = &run.events[i];
                if self
                    .spec
                    .watches
                    .iter()
                    .any(|(path, scope)| matches(*scope, path, &e.path, e.kind))
                {
                    indices.push(i as u32);
                }
                i += 1;
            }
            let group = Group {
                changes: run.clone(),
                indices,
            };
            self.emit(&group);
            self.position = self.position.max(zxid);
        }
        Ok(())
    }

    async fn live_step(&mut self) {
        tokio::select! {
            biased;
            group = self.feed.rx.recv() => match group {
                Some(group) => self.emit(&group),
                None => {
                    let reason = self.feed.cut_reason().unwrap_or(CutReason::Shutdown);
                    self.end(reason.as_str());
                }
            },
            _ = self.progress.tick() => {
                // Read first: every group of a run up to `through` is
                // already in the channel (or the stream was cut).
                let through = self.hub.through();
                let cut = self.feed.cut_reason().is_some();
                while let Ok(group) = self.feed.rx.try_recv() {
                    self.emit(&group);
                }
                if !cut {
                    self.position = self.position.max(through);
                    self.push(&WireEvent::progress(self.position.0), true);
                }
            }
        }
    }

    /// Queues a group's changes (unless the replay already sent them).
    fn emit(&mut self, group: &Group) {
        let zxid = group.zxid();
        if zxid <= self.position {
            return;
        }
        let count = group.indices.len();
        for (n, event) in group.events().enumerate() {
            let wire = WireEvent::change(event, self.spec.with_data, self.spec.with_data);
            self.push(&wire, n + 1 == count);
        }
        self.metrics
            .watch_events_sent
            .fetch_add(count as u64, Ordering::Relaxed);
        self.position = zxid;
    }

    fn end(&mut self, reason: &'static str) {
        self.push(&WireEvent::cut_off(self.position.0, reason), true);
        self.phase = Phase::Done;
    }

    fn push(&mut self, wire: &WireEvent, with_id: bool) {
        let json = serde_json::to_string(wire).unwrap_or_else(|e| {
            // Plain strings and numbers always serialize.
            unreachable!("serializing an event: {e}")
        });
        let mut event = Event::default().event(wire.kind).data(json);
        if with_id {
            event = event.id(wire.zxid.to_string());
        }
        self.pending.push_back(event);
    }
}
