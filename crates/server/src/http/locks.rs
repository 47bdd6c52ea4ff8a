//! `/v1/locks/{name}`: acquire (POST .../acquire), release (DELETE
//! .../{key}), show (GET). The recipe is [`crate::recipes::lock`].

use super::extract::JsonBody;
use super::AppState;
use crate::error::ApiError;
use crate::recipes::lock::{self, Grant, LockState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::collections::HashMap;

/// Body of an acquire.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    pub session: u64,
    /// How long to wait for the grant, in ms (0: only if free now);
    /// clamped to `max_lock_wait_ms`.
    #[serde(default)]
    pub wait_ms: u64,
}

/// Path parameter `name` (the router always provides it).
pub fn param(params: &HashMap<String, String>, name: &str) -> Result<String, ApiError> {
    params
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::bad_arguments(format!("missing {name}")))
}

/// `POST /v1/locks/{name}/acquire` -> `200 {key, fencing_token}`; `504
/// Timeout` if not granted within `wait_ms` (the contender is removed).
pub async fn acquire(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    JsonBody(body): JsonBody<AcquireBody>,
) -> Result<Json<Grant>, ApiError> {
    let name = param(&params, "name")?;
    Ok(Json(
        lock::acquire(&state, &name, body.session, body.wait_ms).await?,
    ))
}

/// `DELETE /v1/locks/{name}/{key}` -> `204`; `404` if there is no such contender.
pub async fn release(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let (name, key) = (param(&params, "name")?, param(&params, "key")?);
    lock::release(&state, &name, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/locks/{name}` -> `200 {name, holder, queue}`.
pub async fn show(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<LockState>, ApiError> {
    let name = param(&params, "name")?;
    Ok(Json(lock::describe(&state, &name)?))
}
