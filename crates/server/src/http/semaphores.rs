//! `/v1/semaphores/{name}`: acquire (POST .../acquire), release (DELETE
//! .../{key}), show (GET). The recipe is [`crate::recipes::semaphore`].

use super::extract::JsonBody;
use super::locks::param;
use super::AppState;
use crate::error::ApiError;
use crate::recipes::semaphore::{self, Permit, SemaphoreState};
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
    /// How many holders the semaphore allows; every contender must agree.
    pub permits_max: u64,
    /// How long to wait for a permit, in ms (0: only if one is free now);
    /// clamped to `max_lock_wait_ms`.
    #[serde(default)]
    pub wait_ms: u64,
}

/// `POST /v1/semaphores/{name}/acquire` -> `200 {key, permits_max}`; `400
/// BadArguments` if `permits_max` differs from the semaphore's; `504
/// Timeout` if no permit within `wait_ms` (the contender is removed).
pub async fn acquire(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    JsonBody(body): JsonBody<AcquireBody>,
) -> Result<Json<Permit>, ApiError> {
    let name = param(&params, "name")?;
    Ok(Json(
        semaphore::acquire(&state, &name, body.session, body.permits_max, body.wait_ms).await?,
    ))
}

/// `DELETE /v1/semaphores/{name}/{key}` -> `204`; `404` if there is no such contender.
pub async fn release(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let (name, key) = (param(&params, "name")?, param(&params, "key")?);
    semaphore::release(&state, &name, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/semaphores/{name}` -> `200 {name, permits_max, holders, queue}`.
pub async fn show(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<SemaphoreState>, ApiError> {
    let name = param(&params, "name")?;
    Ok(Json(semaphore::describe(&state, &name)?))
}
