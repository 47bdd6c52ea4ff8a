//! `GET /v1/children/{path}?limit=&after=`: one page of a node's children.

use super::extract::{QueryArgs, ZnodePath};
use super::nodes::{check_path, Consistency};
use super::{with_read_zxid, AppState};
use crate::error::{ApiError, ErrorCode};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// Query of a listing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size: default and maximum `max_children_page`; 0 is refused.
    pub limit: Option<usize>,
    /// Start after this child name (the last one of the previous page).
    pub after: Option<String>,
    #[serde(default)]
    pub consistency: Consistency,
}

/// `GET /v1/children/{path}` -> `200 {children, stat, more}`.
pub async fn list(
    State(state): State<AppState>,
    ZnodePath(path): ZnodePath,
    QueryArgs(query): QueryArgs<ListQuery>,
) -> Result<Response, ApiError> {
    check_path(&state, &path)?;
    let max = state.config.max_children_page;
    let limit = match query.limit {
        Some(0) => return Err(ApiError::bad_arguments("limit must be at least 1")),
        Some(n) => n.min(max),
        None => max,
    };
    if let Some(after) = &query.after {
        if after.contains('/') {
            return Err(ApiError::bad_arguments(
                "after must be a child name, without '/'",
            ));
        }
    }
    if query.consistency == Consistency::Linearizable {
        state.proposer.read_barrier().await?;
    }
    let (page, zxid) = state
        .store
        .children_at(&path, query.after.as_deref(), limit)?;
    let page = page.ok_or_else(|| {
        ApiError::new(ErrorCode::NoNode, format!("node does not exist: {path}")).with_path(path)
    })?;
    Ok(with_read_zxid(Json(page).into_response(), zxid))
}
