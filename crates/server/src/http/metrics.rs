//! `GET /metrics`: Prometheus text exposition of [`crate::metrics::Metrics`].

use super::AppState;
use crate::metrics::Gauges;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

/// `GET /metrics` -> `200 text/plain; version=0.0.4`.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let status = state.proposer.status();
    let mut text = state.metrics.render(Gauges {
        applied_zxid: state.applied.applied_zxid().0,
        committed_zxid: status.committed_zxid,
        epoch: status.epoch,
        sessions: state.sessions.count(),
        znodes: state.store.node_count(),
        watch_streams: state.watches.open(),
    });
    state.proposer.render_metrics(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
