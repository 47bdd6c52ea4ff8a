//! `/v1/sessions`: create (POST), keepalive (POST .../keepalive), close (DELETE).
//! See [`crate::sessions`] for how sessions live and expire.

use super::extract::{IdParam, JsonBody};
use super::AppState;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// Body of a session create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionBody {
    pub timeout_ms: u64,
}

/// `{id, timeout_ms}`: a session and its granted timeout.
#[derive(Debug, Serialize)]
pub struct SessionBody {
    pub id: u64,
    pub timeout_ms: u64,
}

/// `POST /v1/sessions` -> `201 {id, timeout_ms}` (timeout clamped into the configured range).
pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateSessionBody>,
) -> Result<Response, ApiError> {
    let (id, timeout_ms) = state.sessions.create(body.timeout_ms).await?;
    Ok((StatusCode::CREATED, Json(SessionBody { id, timeout_ms })).into_response())
}

/// `POST /v1/sessions/{id}/keepalive` -> `200 {id, timeout_ms}` once the
/// leader confirmed it with a quorum; ended (in the replicated state): 410;
/// not confirmed (no leader, cut off, lagging): 503, retry another member.
pub async fn keepalive(
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> Result<Json<SessionBody>, ApiError> {
    let timeout_ms = state.sessions.keepalive(id).await?;
    Ok(Json(SessionBody { id, timeout_ms }))
}

/// `DELETE /v1/sessions/{id}` -> `204`; unknown or expired: 410.
pub async fn close(
    State(state): State<AppState>,
    IdParam(id): IdParam,
) -> Result<StatusCode, ApiError> {
    state.sessions.close(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
