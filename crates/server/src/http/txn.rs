//! `POST /v1/txn`: an atomic multi of create / set / delete / check ops.
//!
//! Each op is checked like its single form, then the whole list is proposed
//! as one `Txn::Multi`; apply runs all of it or none of it. A failure answers
//! with the failing op's code and its `index`.

use super::extract::{check_version, JsonBody};
use super::nodes::{check_path, create_op, fence_txn, set_op, FenceBody};
use super::AppState;
use crate::error::{ApiError, ErrorCode};
use axum::extract::State;
use axum::Json;
use keeper_store::{NodeMode, Op, OpResult, Stat, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};

/// One op of a multi request.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOpBody {
    Create {
        path: String,
        data: Option<String>,
        data_b64: Option<String>,
        mode: Option<NodeMode>,
        session: Option<u64>,
        ttl_ms: Option<u64>,
    },
    Set {
        path: String,
        data: Option<String>,
        data_b64: Option<String>,
        version: Option<i32>,
    },
    Delete {
        path: String,
        version: Option<i32>,
    },
    Check {
        path: String,
        version: Option<i32>,
    },
}

/// Body of `POST /v1/txn`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnBody {
    pub ops: Vec<TxnOpBody>,
    /// Guards the whole txn (a failed fence answers `Fenced` with index 0).
    pub fence: Option<FenceBody>,
}

/// One op's result in the answer.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnOpResult {
    Create { path: String, stat: Stat },
    Set { path: String, stat: Stat },
    Delete { path: String },
    Check { path: String },
}

/// Answer of `POST /v1/txn`.
#[derive(Debug, Serialize)]
pub struct TxnResults {
    pub results: Vec<TxnOpResult>,
}

fn to_op(state: &AppState, body: TxnOpBody) -> Result<Op, ApiError> {
    match body {
        TxnOpBody::Create {
            path,
            data,
            data_b64,
            mode,
            session,
            ttl_ms,
        } => create_op(state, path, data, data_b64, mode, session, ttl_ms),
        TxnOpBody::Set {
            path,
            data,
            data_b64,
            version,
        } => set_op(state, path, data, data_b64, version),
        TxnOpBody::Delete { path, version } => {
            check_path(state, &path)?;
            let version = check_version(version.unwrap_or(-1))?;
            Ok(Op::Delete { path, version })
        }
        TxnOpBody::Check { path, version } => {
            check_path(state, &path)?;
            let version = check_version(version.unwrap_or(-1))?;
            Ok(Op::Check { path, version })
        }
    }
}

/// `POST /v1/txn` -> `200 {results}`, or the failing op's error with `index`.
pub async fn multi(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<TxnBody>,
) -> Result<Json<TxnResults>, ApiError> {
    if body.ops.is_empty() {
        return Err(ApiError::bad_arguments("\"ops\" is empty"));
    }
    if body.ops.len() > state.config.max_ops_per_txn {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "{} ops, above the limit of {}",
                body.ops.len(),
                state.config.max_ops_per_txn
            ),
        ));
    }
    let mut ops = Vec::with_capacity(body.ops.len());
    for (index, op) in body.ops.into_iter().enumerate() {
        let op = to_op(&state, op).map_err(|mut e| {
            e.message = format!("op {index}: {}", e.message);
            e.index = Some(index);
            e
        })?;
        ops.push(op);
    }
    let txn = fence_txn(&state, body.fence, Txn::Multi(ops))?;
    let applied = state.proposer.propose(txn).await?;
    let results = match applied.outcome {
        TxnOutcome::Multi(Ok(results)) => results,
        TxnOutcome::Multi(Err(e)) => return Err(e.into()),
        other => {
            tracing::error!(?other, "unexpected outcome for a multi");
            return Err(ApiError::new(ErrorCode::Internal, "unexpected outcome"));
        }
    };
    let results = results
        .into_iter()
        .map(|r| match r {
            OpResult::Created { path, stat } => TxnOpResult::Create { path, stat },
            OpResult::Set { path, stat } => TxnOpResult::Set { path, stat },
            OpResult::Deleted { path } => TxnOpResult::Delete { path },
            OpResult::Checked { path } => TxnOpResult::Check { path },
        })
        .collect();
    Ok(Json(TxnResults { results }))
}
