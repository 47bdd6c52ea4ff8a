//! `/v1/nodes/{path}`: create (POST), read (GET), set (PUT), delete (DELETE).
//!
//! Writes are validated here (path, data size, arguments) so that junk never
//! reaches the log, then proposed as `Txn::Op`; the store's deterministic
//! result becomes the response. Reads go to the store directly, after the
//! read barrier when `?consistency=linearizable`.

use super::extract::{
    check_data_size, check_version, request_data, JsonBody, QueryArgs, ZnodePath,
};
use super::{with_read_zxid, AppState};
use crate::error::{ApiError, ErrorCode};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use keeper_store::{Fence, FenceScope, NodeMode, Op, OpResult, Stat, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};

/// Body of a create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub data: Option<String>,
    pub data_b64: Option<String>,
    pub mode: Option<NodeMode>,
    pub session: Option<u64>,
    pub ttl_ms: Option<u64>,
    pub fence: Option<FenceBody>,
}

/// `fence: {lock | election, token}` of a write: it applies only while
/// `token` is the fencing token of lock `lock`'s current holder, or the term
/// of election `election`'s current leader (else `409 Fenced`). Exactly one
/// of `lock` and `election`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceBody {
    pub lock: Option<String>,
    pub election: Option<String>,
    pub token: u64,
}

/// `txn` guarded by `fence`, if there is one (the name checked first).
pub fn fence_txn(state: &AppState, fence: Option<FenceBody>, txn: Txn) -> Result<Txn, ApiError> {
    let Some(FenceBody {
        lock,
        election,
        token,
    }) = fence
    else {
        return Ok(txn);
    };
    let txn = Box::new(txn);
    match (lock, election) {
        (Some(lock), None) => {
            keeper_store::lock_dir(&lock, state.config.max_path_bytes)?;
            Ok(Txn::Fenced {
                fence: Fence { lock, token },
                txn,
            })
        }
        (None, Some(election)) => {
            keeper_store::election_dir(&election, state.config.max_path_bytes)?;
            Ok(Txn::FencedBy {
                scope: FenceScope::Election,
                fence: Fence {
                    lock: election,
                    token,
                },
                txn,
            })
        }
        _ => Err(ApiError::bad_arguments(
            "a fence names exactly one of \"lock\" and \"election\"",
        )),
    }
}

/// Body of a set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    pub data: Option<String>,
    pub data_b64: Option<String>,
    pub version: Option<i32>,
    pub fence: Option<FenceBody>,
}

/// Read consistency: local (sequential, the default) or confirmed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    #[default]
    Sequential,
    Linearizable,
}

/// How response data is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// `"data"` when the bytes are UTF-8, `"data_b64"` otherwise.
    #[default]
    Auto,
    Base64,
}

/// Query of a read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    pub consistency: Consistency,
    #[serde(default)]
    pub encoding: Encoding,
}

/// Query of a delete.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    pub version: Option<i32>,
    /// With `fence_token`: the delete is fenced by this lock.
    pub fence_lock: Option<String>,
    /// With `fence_token`: the delete is fenced by this election's term.
    pub fence_election: Option<String>,
    pub fence_token: Option<u64>,
}

/// `{path, stat}`: the answer to create and set.
#[derive(Debug, Serialize)]
pub struct PathStat {
    pub path: String,
    pub stat: Stat,
}

/// `{path, data|data_b64, stat}`: the answer to a read.
#[derive(Debug, Serialize)]
pub struct NodeBody {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
    pub stat: Stat,
}

/// Checks a path against the store's rules (`400 InvalidPath`).
pub fn check_path(state: &AppState, path: &str) -> Result<(), ApiError> {
    keeper_store::validate_path(path, state.config.max_path_bytes).map_err(ApiError::from)
}

/// Builds a create op from request fields, checking everything the server can
/// check before the log: path, data size, mode/session/ttl combinations.
pub fn create_op(
    state: &AppState,
    path: String,
    data: Option<String>,
    data_b64: Option<String>,
    mode: Option<NodeMode>,
    session: Option<u64>,
    ttl_ms: Option<u64>,
) -> Result<Op, ApiError> {
    check_path(state, &path)?;
    if path == "/" {
        return Err(ApiError::new(ErrorCode::NodeExists, "the root always exists").with_path(path));
    }
    let data = request_data(data, data_b64)?;
    check_data_size(&data, state.config.max_data_bytes)?;
    let mode = mode.unwrap_or(NodeMode::Persistent);
    let session = if mode.is_ephemeral() {
        match session {
            Some(id) if id != 0 => id,
            _ => {
                return Err(ApiError::bad_arguments(
                    "ephemeral modes need a \"session\"",
                ))
            }
        }
    } else {
        0
    };
    match (mode.is_ttl(), ttl_ms) {
        (true, None) | (true, Some(0)) => {
            return Err(ApiError::bad_arguments(
                "ttl modes need a positive \"ttl_ms\"",
            ))
        }
        (false, Some(_)) => {
            return Err(ApiError::bad_arguments(
                "\"ttl_ms\" is only allowed with ttl modes",
            ))
        }
        _ => {}
    }
    Ok(Op::Create {
        path,
        data,
        mode,
        session,
        ttl_ms,
    })
}

/// Builds a set op, checking path, data size and version.
pub fn set_op(
    state: &AppState,
    path: String,
    data: Option<String>,
    data_b64: Option<String>,
    version: Option<i32>,
) -> Result<Op, ApiError> {
    check_path(state, &path)?;
    let data = request_data(data, data_b64)?;
    check_data_size(&data, state.config.max_data_bytes)?;
    let version = check_version(version.unwrap_or(-1))?;
    Ok(Op::Set {
        path,
        data,
        version,
    })
}

/// Proposes a single op (fenced, if asked) and returns its deterministic result.
async fn propose_op(
    state: &AppState,
    op: Op,
    fence: Option<FenceBody>,
) -> Result<OpResult, ApiError> {
    let txn = fence_txn(state, fence, Txn::Op(op))?;
    let applied = state.proposer.propose(txn).await?;
    match applied.outcome {
        TxnOutcome::Op(result) => result.map_err(ApiError::from),
        other => {
            tracing::error!(?other, "unexpected outcome for a single op");
            Err(ApiError::new(ErrorCode::Internal, "unexpected outcome"))
        }
    }
}

/// `POST /v1/nodes/{path}` -> `201 {path, stat}`.
pub async fn create(
    State(state): State<AppState>,
    ZnodePath(path): ZnodePath,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    let op = create_op(
        &state,
        path,
        body.data,
        body.data_b64,
        body.mode,
        body.session,
        body.ttl_ms,
    )?;
    match propose_op(&state, op, body.fence).await? {
        OpResult::Created { path, stat } => {
            Ok((StatusCode::CREATED, Json(PathStat { path, stat })).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

/// `PUT /v1/nodes/{path}` -> `200 {path, stat}`.
pub async fn set(
    State(state): State<AppState>,
    ZnodePath(path): ZnodePath,
    JsonBody(body): JsonBody<SetBody>,
) -> Result<Json<PathStat>, ApiError> {
    let op = set_op(&state, path, body.data, body.data_b64, body.version)?;
    match propose_op(&state, op, body.fence).await? {
        OpResult::Set { path, stat } => Ok(Json(PathStat { path, stat })),
        other => Err(unexpected(&other)),
    }
}

/// `DELETE /v1/nodes/{path}?version=n` -> `204`.
pub async fn delete(
    State(state): State<AppState>,
    ZnodePath(path): ZnodePath,
    QueryArgs(query): QueryArgs<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    check_path(&state, &path)?;
    if path == "/" {
        return Err(ApiError::bad_arguments("the root cannot be deleted").with_path(path));
    }
    let version = check_version(query.version.unwrap_or(-1))?;
    let fence = match (query.fence_lock, query.fence_election, query.fence_token) {
        (None, None, None) => None,
        (lock, election, Some(token)) if lock.is_some() != election.is_some() => Some(FenceBody {
            lock,
            election,
            token,
        }),
        _ => {
            return Err(ApiError::bad_arguments(
                "\"fence_token\" goes with exactly one of \"fence_lock\" and \"fence_election\"",
            ))
        }
    };
    match propose_op(&state, Op::Delete { path, version }, fence).await? {
        OpResult::Deleted { .. } => Ok(StatusCode::NO_CONTENT),
        other => Err(unexpected(&other)),
    }
}

/// `GET /v1/nodes/{path}` -> `200 {path, data|data_b64, stat}`. Served
/// from the in-memory tree, on the request's own task.
pub async fn read(
    State(state): State<AppState>,
    ZnodePath(path): ZnodePath,
    QueryArgs(query): QueryArgs<ReadQuery>,
) -> Result<Response, ApiError> {
    check_path(&state, &path)?;
    if query.consistency == Consistency::Linearizable {
        state.proposer.read_barrier().await?;
    }
    let (found, zxid) = state.store.get_at(&path);
    let (data, stat) = found.ok_or_else(|| {
        ApiError::new(ErrorCode::NoNode, format!("node does not exist: {path}")).with_path(&path)
    })?;
    let (text, b64) = match (query.encoding, std::str::from_utf8(&data)) {
        (Encoding::Auto, Ok(text)) => (Some(text.to_string()), None),
        _ => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&data)),
        ),
    };
    let body = Json(NodeBody {
        path,
        data: text,
        data_b64: b64,
        stat,
    });
    Ok(with_read_zxid(body.into_response(), zxid))
}

fn unexpected(result: &OpResult) -> ApiError {
    tracing::error!(?result, "unexpected op result");
    ApiError::new(ErrorCode::Internal, "unexpected op result")
}
