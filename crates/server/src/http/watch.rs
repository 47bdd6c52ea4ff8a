//! `GET /v1/watch/{path}`: a one-shot watch with ZooKeeper's semantics, as a
//! long poll.
//!
//! `kind=data` fires on `data_changed` and `deleted` of the node (ZooKeeper's
//! getData watch), `children` on `children_changed` and `deleted` (getChildren),
//! `exists` on `created`, `deleted` and `data_changed` (exists). `data` and
//! `children` need the node to exist (`404 NoNode` otherwise), as in
//! ZooKeeper. The answer is the first matching change after registration,
//! or, with `after_zxid=Z`, the first one after Z, found in the change
//! history at once if it was already committed: a read at zxid Z followed by
//! a watch with `after_zxid=Z` misses nothing in between. When `wait_ms`
//! runs out the answer is `200 {"event": null}`.

use super::extract::{QueryArgs, ZnodePath};
use super::nodes::check_path;
use super::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::watches::hub::CutReason;
use crate::watches::{KindSet, WireEvent};
use axum::extract::State;
use axum::Json;
use keeper_store::{ChangeKind, ChangesRead};
use keeper_zab::Zxid;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a one-shot watch watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchKind {
    #[default]
    Data,
    Children,
    Exists,
}

impl WatchKind {
    /// The change kinds that fire it (ZooKeeper's event types per watch).
    pub fn fires_on(self) -> KindSet {
        match self {
            WatchKind::Data => KindSet::of(&[ChangeKind::DataChanged, ChangeKind::Deleted]),
            WatchKind::Children => KindSet::of(&[ChangeKind::ChildrenChanged, ChangeKind::Deleted]),
            WatchKind::Exists => KindSet::of(&[
                ChangeKind::Created,
                ChangeKind::Deleted,
                ChangeKind::DataChanged,
            ]),
        }
    }
}

/// Query of a one-shot watch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    #[serde(default)]
    pub kind: WatchKind,
    /// How long to wait, in ms (default and cap: `max_watch_wait_ms`).
    pub wait_ms: Option<u64>,
    /// Fire for a matching change committed after this zxid, even one
    /// committed before the request.
    pub after_zxid: Option<u64>,
}

/// `{"event": ...}`: the change, or `null` when the wait ran out.
#[derive(Debug, Serialize)]
pub struct WatchAnswer {
    pub event: Option<WireEvent>,
}

/// `GET /v1/watch/{path}?kind=&wait_ms=&after_zxid=`.
pub async fn watch(
    State(state): State<AppState>,
    ZnodePath(path): ZnodePath,
    QueryArgs(query): QueryArgs<WatchQuery>,
) -> Result<Json<WatchAnswer>, ApiError> {
    check_path(&state, &path)?;
    let max_wait = state.config.max_watch_wait_ms;
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(max_wait).min(max_wait));
    let _admission = state.watches.admit().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "too many watches open on this member (max_watch_streams)",
        )
    })?;
    let kinds = query.kind.fires_on();
    // Without after_zxid the watch covers changes after the state this member
    // has applied now: a change applied before the request (which the hub may
    // not have dispatched yet) must not fire it.
    let after = match query.after_zxid {
        Some(z) => Zxid(z),
        None => state.applied.applied_zxid(),
    };
    let (_registration, mut rx) = state.watches.register_once(&path, kinds, after);
    let answer = |event: &keeper_store::ChangeEvent| -> Result<Json<WatchAnswer>, ApiError> {
        state.metrics.watch_events_sent.inc();
        Ok(Json(WatchAnswer {
            event: Some(WireEvent::change(event, true, false)),
        }))
    };
    if query.after_zxid.is_some() {
        // Registered first: whatever the history read misses, the hub sends.
        let mut cursor = after;
        loop {
            state.metrics.watch_replay_reads.inc();
            let changes = match state
                .store
                .read_changes(cursor, state.config.watch_replay_chunk)?
            {
                ChangesRead::Changes(changes) => changes,
                ChangesRead::Compacted { floor } => {
                    return Err(ApiError::compacted(after.0, floor.0).with_path(&path))
                }
            };
            let Some(last) = changes.last().map(|c| c.zxid) else {
                break;
            };
            if let Some(hit) = changes
                .iter()
                .find(|c| c.path == path && kinds.contains(c.kind))
            {
                // Found in the history (the hub counts what it sends).
                return answer(hit);
            }
            cursor = last;
        }
    }
    if query.kind != WatchKind::Exists && state.store.get(&path)?.is_none() {
        // Deleted after registration: that deletion is the answer.
        if let Ok(Ok(event)) = rx.try_recv() {
            return Ok(Json(WatchAnswer {
                event: Some(WireEvent::change(&event, true, false)),
            }));
        }
        return Err(
            ApiError::new(ErrorCode::NoNode, format!("node does not exist: {path}"))
                .with_path(&path),
        );
    }
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(Ok(event))) => Ok(Json(WatchAnswer {
            event: Some(WireEvent::change(&event, true, false)),
        })),
        Ok(Ok(Err(reason))) => Err(dropped(reason)),
        Ok(Err(_)) => Err(dropped(CutReason::Shutdown)),
        Err(_) => Ok(Json(WatchAnswer { event: None })),
    }
}

/// The watch was dropped without firing (the member reset or is stopping):
/// the client asks again, with `after_zxid`, here or elsewhere.
fn dropped(reason: CutReason) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!(
            "the watch was dropped ({}); watch again with after_zxid",
            reason.as_str()
        ),
    )
}
