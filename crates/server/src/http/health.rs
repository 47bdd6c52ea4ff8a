//! `GET /healthz` (the process is up) and `GET /readyz` (it can serve: a
//! leader is known, storage is healthy, not shutting down).

use super::AppState;
use crate::error::{ApiError, ErrorCode};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// `GET /healthz` -> `200 {"status":"ok"}`.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz` -> `200 {"status":"ready"}` or `503 Unavailable`.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.is_ready() {
        Ok(Json(json!({"status": "ready"})))
    } else {
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "not ready: starting, shutting down, no leader, or storage failed",
        ))
    }
}
