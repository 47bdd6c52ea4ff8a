//! `GET /v1/cluster` (this member's view of the ensemble) and `POST /v1/sync`
//! (the linearizable barrier, through `Proposer::read_barrier`).

use super::AppState;
use crate::error::ApiError;
use crate::proposer::ClusterStatus;
use axum::extract::State;
use axum::Json;
use serde::Serialize;

/// Answer of `/v1/sync`.
#[derive(Debug, Serialize)]
pub struct SyncBody {
    /// Everything committed before the call is applied here, up to this zxid.
    pub zxid: u64,
}

/// `POST /v1/sync` -> `200 {zxid}`.
pub async fn sync(State(state): State<AppState>) -> Result<Json<SyncBody>, ApiError> {
    let zxid = state.proposer.read_barrier().await?;
    Ok(Json(SyncBody { zxid: zxid.0 }))
}

/// `GET /v1/cluster` -> `200 {id, role, leader, epoch, ...}`.
pub async fn status(State(state): State<AppState>) -> Json<ClusterStatus> {
    Json(state.proposer.status())
}
