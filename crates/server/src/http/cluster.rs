//! `GET /v1/cluster` (this member's view of the ensemble) and `POST /v1/sync`
//! (the linearizable barrier, through `Proposer::read_barrier`), and
//! `GET /v1/cluster/digest` (a checksum of this member's tree, to compare members).

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

/// Answer of `/v1/cluster/digest`.
#[derive(Debug, Serialize)]
pub struct DigestBody {
    /// The zxid this member had applied when the digest was taken.
    pub applied_zxid: u64,
    /// Order-independent checksum of every znode (path, data, stat) and session.
    pub digest: u64,
}

/// `GET /v1/cluster/digest` -> `200 {applied_zxid, digest}`. Two members with
/// the same `applied_zxid` must report the same `digest`. One scan of one
/// store snapshot, which also gives the zxid (no retry under a write load).
pub async fn digest(State(state): State<AppState>) -> Result<Json<DigestBody>, ApiError> {
    let store = state.store.clone();
    let (applied_zxid, digest) = tokio::task::spawn_blocking(move || store.digest_at())
        .await
        .map_err(|e| {
            ApiError::new(
                crate::error::ErrorCode::Internal,
                format!("digest task failed: {e}"),
            )
        })??;
    Ok(Json(DigestBody {
        applied_zxid: applied_zxid.0,
        digest,
    }))
}
