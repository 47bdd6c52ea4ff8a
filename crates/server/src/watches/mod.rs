//! Watches: one-shot watches (`GET /v1/watch/...`) and event streams
//! (`GET /v1/events/...`), fed by the applier and resumable from a zxid.
//!
//! Where it sits: the applier (`crate::applier`) applies a run of entries,
//! writes their changes to the store's change history in the same batch
//! (`keeper_store::Store::read_changes`), and publishes the run's
//! [`keeper_store::ChangeEvent`]s. The [`hub`]'s dispatcher thread matches
//! every change against the registered watches (by path, never by scanning
//! watches) and hands them on without ever waiting. A [`stream`] first
//! replays the history after its `from_zxid`, then forwards what the hub
//! gives it, skipping what the replay already sent: no gap, no duplicate.
//! The HTTP handlers are `crate::http::watch` and `crate::http::events`.
//!
//! The wire form of an event is [`WireEvent`]: `type`, `zxid`, `path`, and
//! with `with_data` the stat and data after the change.

pub mod hub;
pub mod stream;

pub use hub::{Hub, KindSet, Scope};

use base64::Engine as _;
use keeper_store::{ChangeEvent, ChangeKind, Stat};
use serde::Serialize;

/// The `type` of a change event on the wire.
pub fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Created => "created",
        ChangeKind::Deleted => "deleted",
        ChangeKind::DataChanged => "data_changed",
        ChangeKind::ChildrenChanged => "children_changed",
    }
}

/// One event as the API sends it (SSE `data:` line, one-shot answer).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WireEvent {
    /// `created`, `deleted`, `data_changed`, `children_changed`, or, on a
    /// stream, `progress` and `cut_off`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The change's zxid; for `progress` and `cut_off` the zxid to resume
    /// from (every matching change up to it has been sent).
    pub zxid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stat: Option<Stat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
    /// `cut_off` only: why (`slow_consumer`, `reset`, `shutdown`, `compacted`, `storage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl WireEvent {
    /// A change event; with `with_data`, its stat and data (text when UTF-8).
    pub fn change(event: &ChangeEvent, with_stat: bool, with_data: bool) -> WireEvent {
        let (data, data_b64) = match (&event.data, with_data) {
            (Some(bytes), true) => match std::str::from_utf8(bytes) {
                Ok(text) => (Some(text.to_string()), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                ),
            },
            _ => (None, None),
        };
        WireEvent {
            kind: kind_name(event.kind),
            zxid: event.zxid.0,
            path: Some(event.path.clone()),
            stat: if with_stat || with_data {
                event.stat
            } else {
                None
            },
            data,
            data_b64,
            reason: None,
        }
    }

    /// A progress event: every matching change up to `zxid` has been sent.
    pub fn progress(zxid: u64) -> WireEvent {
        WireEvent {
            kind: "progress",
            zxid,
            path: None,
            stat: None,
            data: None,
            data_b64: None,
            reason: None,
        }
    }

    /// The last event of a stream that was cut off: resume from `zxid`.
    pub fn cut_off(zxid: u64, reason: &'static str) -> WireEvent {
        WireEvent {
            reason: Some(reason),
            kind: "cut_off",
            ..WireEvent::progress(zxid)
        }
    }
}
