//! `/v1/elections/{name}`: campaign, resign, proclaim (POSTs), the leader
//! (GET) and a stream of leadership changes (GET .../events, SSE). The
//! recipe is [`crate::recipes::election`].

use super::extract::JsonBody;
use super::locks::param;
use super::AppState;
use crate::error::ApiError;
use crate::recipes::election::{self, Elected, ElectionState, Leader, Observed, Observer};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

/// Body of a campaign.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    pub session: u64,
    /// The candidate's value (shown as the leader's value once elected).
    #[serde(default)]
    pub value: String,
    /// How long to wait to be elected, in ms; clamped to `max_lock_wait_ms`.
    #[serde(default)]
    pub wait_ms: u64,
}

/// Body of a resign.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResignBody {
    pub key: String,
}

/// Body of a proclaim.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProclaimBody {
    pub key: String,
    pub value: String,
}

/// `POST /v1/elections/{name}/campaign` -> `200 {key, term}` once elected;
/// `504 Timeout` if not elected within `wait_ms` (the candidate is withdrawn).
pub async fn campaign(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    JsonBody(body): JsonBody<CampaignBody>,
) -> Result<Json<Elected>, ApiError> {
    let name = param(&params, "name")?;
    let value = Bytes::from(body.value);
    Ok(Json(
        election::campaign(&state, &name, body.session, value, body.wait_ms).await?,
    ))
}

/// `POST /v1/elections/{name}/resign {key}` -> `204`; `404` if no such candidate.
pub async fn resign(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    JsonBody(body): JsonBody<ResignBody>,
) -> Result<StatusCode, ApiError> {
    let name = param(&params, "name")?;
    election::resign(&state, &name, &body.key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/elections/{name}/proclaim {key, value}` -> `200` the leader;
/// `409 Fenced` if `key` is not the leader.
pub async fn proclaim(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    JsonBody(body): JsonBody<ProclaimBody>,
) -> Result<Json<Leader>, ApiError> {
    let name = param(&params, "name")?;
    let value = Bytes::from(body.value);
    Ok(Json(
        election::proclaim(&state, &name, &body.key, value).await?,
    ))
}

/// `GET /v1/elections/{name}` -> `200 {name, leader, waiting}`; `leader`
/// is `null` when nobody campaigns.
pub async fn show(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<ElectionState>, ApiError> {
    let name = param(&params, "name")?;
    Ok(Json(election::describe(&state, &name)?))
}

/// The data of a `leader` event.
#[derive(Debug, Serialize)]
struct LeaderEvent {
    leader: Option<Leader>,
    zxid: u64,
}

/// The data of a `cut_off` event.
#[derive(Debug, Serialize)]
struct CutOffEvent {
    reason: &'static str,
}

fn sse(kind: &'static str, data: &impl Serialize) -> Event {
    match Event::default().event(kind).json_data(data) {
        Ok(event) => event,
        Err(e) => Event::default().event("error").data(e.to_string()),
    }
}

/// `GET /v1/elections/{name}/events` -> SSE: a `leader` event with the
/// current leader (`null`: none) first, then one per change of leader or
/// of its value; a `cut_off` event ends a stream the member had to drop
/// (reconnect and read the leader again).
pub async fn events(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = param(&params, "name")?;
    let observer = Observer::start(&state, &name)?;
    let body = futures::stream::unfold(observer, |mut observer| async move {
        let event = match observer.next().await? {
            Observed::Leader { leader, zxid } => sse("leader", &LeaderEvent { leader, zxid }),
            Observed::CutOff(reason) => sse(
                "cut_off",
                &CutOffEvent {
                    reason: reason.as_str(),
                },
            ),
        };
        Some((Ok::<_, Infallible>(event), observer))
    });
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
