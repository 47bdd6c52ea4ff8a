//! One event stream: replay from the change history, then live changes from
//! the hub, with progress events, until the client goes or it is cut off.
//!
//! The stream keeps `position`: every matching change up to it has been
//! sent. It registers with the hub *before* reading the history, so a
//! change is either in what the replay reads or among the groups the hub
//! sends afterwards (the applier writes the history before it publishes);
//! changes at or below `position` are the replay's and are skipped. Within
//! an entry, every change but the last carries no SSE `id`; the last one's
//! `id` is the entry's zxid, so a client resuming from its last `id` gets no
//! gap, and can drop the changes of a half-received entry it gets again.
//!
//! The stream writes SSE text itself: each change's JSON is made once per
//! apply run and shared by every stream that sends it
//! ([`AppliedChanges::wire`]), and everything ready is handed to the HTTP
//! body as one chunk, so a busy stream costs one write per wake-up, not one
//! per event.

use super::hub::{matches, Admission, CutReason, Group, Hub, Scope, StreamFeed};
use super::WireEvent;
use crate::applier::AppliedChanges;
use crate::metrics::Metrics;
use bytes::{BufMut, Bytes, BytesMut};
use keeper_store::{ChangesRead, Store};
use keeper_zab::Zxid;
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

/// Groups drained into one chunk at most (then the chunk goes out).
const MAX_GROUPS_PER_CHUNK: usize = 256;

/// A running stream; [`EventStream::next`] gives its SSE text.
pub struct EventStream {
    store: Arc<Store>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    spec: StreamSpec,
    feed: StreamFeed,
    position: Zxid,
    phase: Phase,
    /// SSE text ready to go out.
    pending: BytesMut,
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
            pending: BytesMut::new(),
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

    /// The next chunk of SSE text (one or more whole events), or `None`
    /// when the stream is over.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            if !self.pending.is_empty() {
                return Some(self.pending.split().freeze());
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
        self.metrics.watch_replay_reads.inc();
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
        let run = Arc::new(AppliedChanges::new(last, changes, false));
        let indices = run
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                self.spec
                    .watches
                    .iter()
                    .any(|(path, scope)| matches(*scope, path, &e.path, e.kind))
            })
            .map(|(i, _)| i as u32)
            .collect();
        let group = Group {
            changes: run,
            indices,
            entries: 0,
        };
        self.emit(&group);
        // Every change up to `last` was read: the ones that did not match too.
        self.position = self.position.max(last);
        Ok(())
    }

    async fn live_step(&mut self) {
        tokio::select! {
            biased;
            group = self.feed.recv() => match group {
                Some(group) => {
                    self.emit(&group);
                    // Whatever else is ready goes out in the same chunk.
                    for _ in 1..MAX_GROUPS_PER_CHUNK {
                        match self.feed.try_recv() {
                            Ok(group) => self.emit(&group),
                            Err(_) => break,
                        }
                    }
                }
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
                while let Ok(group) = self.feed.try_recv() {
                    self.emit(&group);
                }
                if !cut {
                    self.position = self.position.max(through);
                    self.push(&WireEvent::progress(self.position.0), true);
                }
            }
        }
    }

    /// Queues a group's changes, skipping those the replay already sent.
    /// The last change of each entry carries the entry's zxid as its `id`.
    fn emit(&mut self, group: &Group) {
        let mut changes = group
            .indexed()
            .filter(|(_, e)| e.zxid > self.position)
            .peekable();
        let mut sent = 0u64;
        let mut last = self.position;
        while let Some((index, event)) = changes.next() {
            let completes = changes
                .peek()
                .is_none_or(|(_, next)| next.zxid != event.zxid);
            if let Some(json) = group.changes.wire(index, self.spec.with_data) {
                let id = completes.then_some(event.zxid.0);
                write_event(&mut self.pending, super::kind_name(event.kind), json, id);
                sent += 1;
            }
            last = event.zxid;
        }
        self.metrics.watch_events_sent.inc_by(sent);
        self.position = last;
    }

    fn end(&mut self, reason: &'static str) {
        self.push(&WireEvent::cut_off(self.position.0, reason), true);
        self.phase = Phase::Done;
    }

    fn push(&mut self, wire: &WireEvent, with_id: bool) {
        // Plain strings and numbers always serialize.
        let json = serde_json::to_vec(wire).unwrap_or_default();
        let id = with_id.then_some(wire.zxid);
        write_event(&mut self.pending, wire.kind, &json, id);
    }
}

/// Appends one SSE message: `event:`, `data:` (one line: JSON has no raw
/// newline), and `id:` when it completes an entry.
fn write_event(out: &mut BytesMut, kind: &str, json: &[u8], id: Option<u64>) {
    out.reserve(kind.len() + json.len() + 40);
    out.put_slice(b"event: ");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(json);
    if let Some(id) = id {
        out.put_slice(b"\nid: ");
        out.put_slice(id.to_string().as_bytes());
    }
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_written_as_one_sse_message() {
        let mut out = BytesMut::new();
        write_event(
            &mut out,
            "created",
            br#"{"type":"created","zxid":7}"#,
            Some(7),
        );
        write_event(
            &mut out,
            "progress",
            br#"{"type":"progress","zxid":9}"#,
            None,
        );
        assert_eq!(
            &out[..],
            &b"event: created\ndata: {\"type\":\"created\",\"zxid\":7}\nid: 7\n\nevent: progress\ndata: {\"type\":\"progress\",\"zxid\":9}\n\n"[..]
        );
    }
}
