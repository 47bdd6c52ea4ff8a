//! The one error type of the HTTP API and the one code -> status table.
//!
//! Every handler, extractor and middleware that fails produces an [`ApiError`];
//! its `IntoResponse` renders `{"error":{"code","message","path"?,"index"?}}`
//! with the status fixed by [`ErrorCode::status`] (the table of
//! `docs/http-api.md`). Store results ([`TxnError`]), write-path failures
//! ([`ProposeError`]) and fatal storage errors ([`StoreError`]) convert into it.

use crate::proposer::ProposeError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keeper_store::{MultiError, StoreError, TxnError};
use serde::Serialize;

/// The error codes of the API (ZooKeeper's names), plus `Internal` for a
/// broken server (storage failure), the only 5xx besides Unavailable/Timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    NoNode,
    NodeExists,
    BadVersion,
    NotEmpty,
    NoChildrenForEphemerals,
    InvalidPath,
    BadArguments,
    SessionExpired,
    Compacted,
    TooLarge,
    Unavailable,
    Timeout,
    Unauthorized,
    Forbidden,
    /// The route exists but not with this HTTP method (405).
    MethodNotAllowed,
    Internal,
}

impl ErrorCode {
    /// The HTTP status of a code. This is the only place that decides it.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::NoNode => StatusCode::NOT_FOUND,
            ErrorCode::NodeExists | ErrorCode::BadVersion | ErrorCode::NotEmpty => {
                StatusCode::CONFLICT
            }
            ErrorCode::NoChildrenForEphemerals
            | ErrorCode::InvalidPath
            | ErrorCode::BadArguments => StatusCode::BAD_REQUEST,
            ErrorCode::SessionExpired | ErrorCode::Compacted => StatusCode::GONE,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error: a code, a human message, and where it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The znode path the error is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For a failed multi: the index of the failing op.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// For `Compacted`: the oldest zxid a watch can still resume from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_zxid: Option<u64>,
}

impl ApiError {
    /// An error with a code and message, no path.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            path: None,
            index: None,
            oldest_zxid: None,
        }
    }

    /// `410 Compacted`: `from` is below the retained history, which now
    /// starts after `oldest` (resume from `oldest` or later).
    pub fn compacted(from: u64, oldest: u64) -> ApiError {
        let mut e = ApiError::new(
            ErrorCode::Compacted,
            format!(
                "the changes after zxid {from} have been compacted away; the oldest zxid to resume from is {oldest}"
            ),
        );
        e.oldest_zxid = Some(oldest);
        e
    }

    /// `400 BadArguments`.
    pub fn bad_arguments(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadArguments, message)
    }

    /// Attaches the znode path the error is about.
    pub fn with_path(mut self, path: impl Into<String>) -> ApiError {
        self.path = Some(path.into());
        self
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a ApiError,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = ?self.code, message = %self.message, "request failed");
        }
        (status, axum::Json(ErrorBody { error: &self })).into_response()
    }
}

impl From<TxnError> for ApiError {
    fn from(e: TxnError) -> ApiError {
        let message = e.to_string();
        let (code, path) = match e {
            TxnError::NoNode { path } => (ErrorCode::NoNode, Some(path)),
            TxnError::NodeExists { path } => (ErrorCode::NodeExists, Some(path)),
            TxnError::BadVersion { path, .. } => (ErrorCode::BadVersion, Some(path)),
            TxnError::NotEmpty { path } => (ErrorCode::NotEmpty, Some(path)),
            TxnError::NoChildrenForEphemerals { path } => {
                (ErrorCode::NoChildrenForEphemerals, Some(path))
            }
            TxnError::InvalidPath { path, .. } => (ErrorCode::InvalidPath, Some(path)),
            TxnError::BadArguments { .. } => (ErrorCode::BadArguments, None),
            TxnError::SessionExpired { .. } => (ErrorCode::SessionExpired, None),
            TxnError::TooLarge { .. } => (ErrorCode::TooLarge, None),
        };
        ApiError {
            code,
            message,
            path,
            index: None,
            oldest_zxid: None,
        }
    }
}

impl From<MultiError> for ApiError {
    fn from(e: MultiError) -> ApiError {
        let mut api = ApiError::from(e.error);
        api.message = format!("op {}: {}", e.index, api.message);
        api.index = Some(e.index);
        api
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> ApiError {
        let code = match e {
            ProposeError::Unavailable(_) => ErrorCode::Unavailable,
            ProposeError::Storage(_) => ErrorCode::Internal,
            ProposeError::TooLarge(_) => ErrorCode::TooLarge,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::new(ErrorCode::Internal, format!("storage failure: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_has_the_documented_status() {
        let table = [
            (ErrorCode::NoNode, 404),
            (ErrorCode::NodeExists, 409),
            (ErrorCode::BadVersion, 409),
            (ErrorCode::NotEmpty, 409),
            (ErrorCode::NoChildrenForEphemerals, 400),
            (ErrorCode::InvalidPath, 400),
            (ErrorCode::BadArguments, 400),
            (ErrorCode::SessionExpired, 410),
            (ErrorCode::Compacted, 410),
            (ErrorCode::TooLarge, 413),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Timeout, 504),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::MethodNotAllowed, 405),
            (ErrorCode::Internal, 500),
        ];
        for (code, status) in table {
            assert_eq!(code.status().as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn multi_error_keeps_index_and_path() {
        let e = ApiError::from(MultiError {
            index: 2,
            error: TxnError::NoNode { path: "/x".into() },
        });
        assert_eq!(e.code, ErrorCode::NoNode);
        assert_eq!(e.index, Some(2));
        assert_eq!(e.path.as_deref(), Some("/x"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["code"], "NoNode");
        assert_eq!(json["index"], 2);
    }
}
