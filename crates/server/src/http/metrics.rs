//! `GET /metrics`: the process's one Prometheus registry ([`crate::metrics`]),
//! OpenMetrics text; and [`StateCollector`], which reads the member's state gauges
//! and the write path's own families at every scrape.

use super::{AppState, Shared};
use crate::metrics::{encode_gauge, zxid_gauge, DescriptorEncoder, CONTENT_TYPE};
use crate::proposer::Role;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::Weak;

/// `GET /metrics` -> `200 application/openmetrics-text`.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
}

/// Reads the member's gauges (zxids, epoch, sessions, znodes, readiness, leadership)
/// and the write path's families at scrape time. Holds the state weakly, so the
/// registry never keeps the store open after shutdown.
#[derive(Debug)]
pub struct StateCollector(pub(crate) Weak<Shared>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(shared) = self.0.upgrade() else {
            return Ok(());
        };
        let state = AppState(shared);
        let status = state.proposer.status();
        let gauges: [(&str, &str, i64); 9] = [
            (
                "keeper_watch_streams_open",
                "Event streams and waiting one-shot watches open on this member.",
                i64::try_from(state.watches.open()).unwrap_or(i64::MAX),
            ),
            (
                "keeper_applied_zxid",
                "Last zxid applied on this member.",
                zxid_gauge(state.applied.applied_zxid().0),
            ),
            (
                "keeper_committed_zxid",
                "Last zxid known committed.",
                zxid_gauge(status.committed_zxid),
            ),
            (
                "keeper_last_logged_zxid",
                "Last zxid in the log.",
                zxid_gauge(status.last_logged_zxid),
            ),
            ("keeper_epoch", "Current epoch.", i64::from(status.epoch)),
            (
                "keeper_is_leader",
                "1 on the established leader (and on a standalone member).",
                i64::from(matches!(status.role, Role::Leader | Role::Standalone)),
            ),
            (
                "keeper_ready",
                "1 when /readyz answers 200 (in the broadcast phase with a quorum, caught up, write path healthy).",
                i64::from(state.is_ready()),
            ),
            (
                "keeper_sessions",
                "Live sessions tracked.",
                i64::try_from(state.sessions.count()).unwrap_or(i64::MAX),
            ),
            (
                "keeper_znodes",
                "Znodes in the tree, the root included.",
                i64::try_from(state.store.node_count()).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, v) in gauges {
            encode_gauge(&mut encoder, name, help, v)?;
        }
        state.proposer.encode_metrics(&mut encoder)
    }
}
