//! The client's one error type, and the single place where an HTTP answer
//! (status + body) becomes an [`Error`].
//!
//! Data flow: `transport` sends a request and, for any non-2xx answer, calls
//! [`Error::from_response`]; transport failures become [`Error::Transport`] or
//! [`Error::ConnectionLoss`] there too.

use std::fmt;

use serde::Deserialize;

/// The error codes of Keeper's HTTP API (`docs/http-api.md`), named after ZooKeeper's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 404: the node does not exist (also: unknown route).
    NoNode,
    /// 409: the node already exists.
    NodeExists,
    /// 409: the expected version did not match.
    BadVersion,
    /// 409: the node has children.
    NotEmpty,
    /// 400: ephemeral nodes cannot have children.
    NoChildrenForEphemerals,
    /// 400: the path is not a valid znode path.
    InvalidPath,
    /// 400: the request is malformed.
    BadArguments,
    /// 410: the session is unknown or expired.
    SessionExpired,
    /// 503: the member cannot serve the request now (no quorum, no leader, not caught up).
    Unavailable,
    /// 410: the requested history has been compacted away.
    Compacted,
    /// 413: the request or the data is too large.
    TooLarge,
    /// 504: the server gave up waiting (for a quorum, or for `X-Keeper-Min-Zxid`).
    Timeout,
    /// 401: not authenticated.
    Unauthorized,
    /// 403: not allowed.
    Forbidden,
    /// 409: a fenced write whose token is not the current holder's (of the
    /// lock) or the current leader's term (of the election).
    Fenced,
}

impl ErrorCode {
    /// Every code, in the order of the API table.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::NoNode,
        ErrorCode::NodeExists,
        ErrorCode::BadVersion,
        ErrorCode::NotEmpty,
        ErrorCode::NoChildrenForEphemerals,
        ErrorCode::InvalidPath,
        ErrorCode::BadArguments,
        ErrorCode::SessionExpired,
        ErrorCode::Unavailable,
        ErrorCode::Compacted,
        ErrorCode::TooLarge,
        ErrorCode::Timeout,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Fenced,
    ];

    /// The code's wire name, e.g. `"NoNode"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoNode => "NoNode",
            ErrorCode::NodeExists => "NodeExists",
            ErrorCode::BadVersion => "BadVersion",
            ErrorCode::NotEmpty => "NotEmpty",
            ErrorCode::NoChildrenForEphemerals => "NoChildrenForEphemerals",
            ErrorCode::InvalidPath => "InvalidPath",
            ErrorCode::BadArguments => "BadArguments",
            ErrorCode::SessionExpired => "SessionExpired",
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::Compacted => "Compacted",
            ErrorCode::TooLarge => "TooLarge",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::Fenced => "Fenced",
        }
    }

    /// Parses a wire name; `None` for a code this client does not know.
    pub fn parse(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The HTTP status the server uses for this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::NoNode => 404,
            ErrorCode::NodeExists
            | ErrorCode::BadVersion
            | ErrorCode::NotEmpty
            | ErrorCode::Fenced => 409,
            ErrorCode::NoChildrenForEphemerals
            | ErrorCode::InvalidPath
            | ErrorCode::BadArguments => 400,
            ErrorCode::SessionExpired | ErrorCode::Compacted => 410,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
        }
    }

    /// The code a bare status implies when the body is not Keeper's error JSON
    /// (a proxy's error page, a truncated body). 409 is ambiguous and reads as
    /// `NodeExists`; 502 (a proxy without a backend) reads as `Unavailable`.
    pub fn from_status(status: u16) -> Option<ErrorCode> {
        Some(match status {
            400 => ErrorCode::BadArguments,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NoNode,
            409 => ErrorCode::NodeExists,
            410 => ErrorCode::SessionExpired,
            413 => ErrorCode::TooLarge,
            502 | 503 => ErrorCode::Unavailable,
            504 => ErrorCode::Timeout,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the server said about a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiError {
    /// Human-readable explanation from the server.
    pub message: String,
    /// The znode path the error is about, when there is one.
    pub path: Option<String>,
    /// For a failed multi/txn: the index of the op that failed.
    pub index: Option<usize>,
    /// For [`Error::Compacted`]: the oldest zxid a watch can still resume from.
    pub oldest_zxid: Option<u64>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(path) = &self.path {
            write!(f, " ({path})")?;
        }
        if let Some(index) = self.index {
            write!(f, " [op {index}]")?;
        }
        Ok(())
    }
}

/// Every way a client call can fail.
///
/// The first fifteen variants are the server's answers, one per [`ErrorCode`].
/// The others are the client's own: [`Error::Transport`] (no answer, and nothing
/// is in doubt), [`Error::ConnectionLoss`] (a write was sent and its outcome is
/// unknown), [`Error::Decode`] and [`Error::Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The node does not exist.
    #[error("NoNode: {0}")]
    NoNode(ApiError),
    /// The node already exists.
    #[error("NodeExists: {0}")]
    NodeExists(ApiError),
    /// The expected version did not match.
    #[error("BadVersion: {0}")]
    BadVersion(ApiError),
    /// The node has children.
    #[error("NotEmpty: {0}")]
    NotEmpty(ApiError),
    /// Ephemeral nodes cannot have children.
    #[error("NoChildrenForEphemerals: {0}")]
    NoChildrenForEphemerals(ApiError),
    /// The path is not a valid znode path.
    #[error("InvalidPath: {0}")]
    InvalidPath(ApiError),
    /// The request was malformed.
    #[error("BadArguments: {0}")]
    BadArguments(ApiError),
    /// The session is unknown or expired.
    #[error("SessionExpired: {0}")]
    SessionExpired(ApiError),
    /// No member could serve the request (the last one's answer).
    #[error("Unavailable: {0}")]
    Unavailable(ApiError),
    /// The requested history has been compacted away.
    #[error("Compacted: {0}")]
    Compacted(ApiError),
    /// The request or the data is too large.
    #[error("TooLarge: {0}")]
    TooLarge(ApiError),
    /// The server gave up waiting (for a quorum or for `X-Keeper-Min-Zxid`).
    /// For a write, the outcome is unknown.
    #[error("Timeout: {0}")]
    Timeout(ApiError),
    /// Not authenticated.
    #[error("Unauthorized: {0}")]
    Unauthorized(ApiError),
    /// Not allowed.
    #[error("Forbidden: {0}")]
    Forbidden(ApiError),
    /// A fenced write was refused: its token no longer holds the lock (or
    /// its term no longer leads the election). Nothing was changed.
    #[error("Fenced: {0}")]
    Fenced(ApiError),
    /// An HTTP error status outside the API table, with a body that is not
    /// Keeper's error JSON.
    #[error("HttpStatus {status}: {message}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
        /// The start of the body.
        message: String,
    },
    /// No endpoint answered, and nothing is in doubt: either the request never
    /// reached a server, or it is safe to repeat (a read). Safe to retry.
    #[error("Transport: {message}")]
    Transport {
        /// What went wrong, per endpoint tried.
        message: String,
    },
    /// A write was sent but its answer was lost (timeout, reset connection):
    /// it may or may not have been applied. Like ZooKeeper's `ConnectionLoss`,
    /// the caller must find out (e.g. read back) before retrying.
    #[error("ConnectionLoss: outcome unknown: {message}")]
    ConnectionLoss {
        /// What went wrong.
        message: String,
    },
    /// The server answered with a body this client could not understand.
    #[error("Decode: {message}")]
    Decode {
        /// What could not be decoded.
        message: String,
    },
    /// The client was misconfigured (no endpoints, a bad URL, a zero bound).
    #[error("Config: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

/// The wire body of an error: `{"error":{"code","message","path"?,"index"?}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    oldest_zxid: Option<u64>,
}

/// How much of a non-JSON error body is kept in the message.
const MAX_ERROR_BODY_CHARS: usize = 200;

impl Error {
    /// Builds the error for code `code` carrying `detail`.
    pub fn from_code(code: ErrorCode, detail: ApiError) -> Error {
        match code {
            ErrorCode::NoNode => Error::NoNode(detail),
            ErrorCode::NodeExists => Error::NodeExists(detail),
            ErrorCode::BadVersion => Error::BadVersion(detail),
            ErrorCode::NotEmpty => Error::NotEmpty(detail),
            ErrorCode::NoChildrenForEphemerals => Error::NoChildrenForEphemerals(detail),
            ErrorCode::InvalidPath => Error::InvalidPath(detail),
            ErrorCode::BadArguments => Error::BadArguments(detail),
            ErrorCode::SessionExpired => Error::SessionExpired(detail),
            ErrorCode::Unavailable => Error::Unavailable(detail),
            ErrorCode::Compacted => Error::Compacted(detail),
            ErrorCode::TooLarge => Error::TooLarge(detail),
            ErrorCode::Timeout => Error::Timeout(detail),
            ErrorCode::Unauthorized => Error::Unauthorized(detail),
            ErrorCode::Forbidden => Error::Forbidden(detail),
            ErrorCode::Fenced => Error::Fenced(detail),
        }
    }

    /// Maps a non-2xx answer to an error. Keeper's error JSON wins; otherwise
    /// the status picks the code (see [`ErrorCode::from_status`]) and the body's
    /// start becomes the message. An unknown code in valid JSON also falls back
    /// to the status, keeping the server's message.
    pub fn from_response(status: u16, body: &[u8]) -> Error {
        let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
        let (named, detail) = match parsed {
            Some(ErrorBody { error: d }) => {
                let named = ErrorCode::parse(&d.code);
                let message = if named.is_some() {
                    d.message
                } else {
                    format!("{} (unknown code {})", d.message, d.code)
                };
                (
                    named,
                    ApiError {
                        message,
                        path: d.path,
                        index: d.index,
                        oldest_zxid: d.oldest_zxid,
                    },
                )
            }
            None => {
                let text = String::from_utf8_lossy(body);
                let trimmed: String = text.trim().chars().take(MAX_ERROR_BODY_CHARS).collect();
                let message = if trimmed.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {trimmed}")
                };
                (
                    None,
                    ApiError {
                        message,
                        path: None,
                        index: None,
                        oldest_zxid: None,
                    },
                )
            }
        };
        match named.or_else(|| ErrorCode::from_status(status)) {
            Some(code) => Error::from_code(code, detail),
            None => Error::HttpStatus {
                status,
                message: detail.message,
            },
        }
    }

    /// The server's code, for the server's answers.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::NoNode(_) => ErrorCode::NoNode,
            Error::NodeExists(_) => ErrorCode::NodeExists,
            Error::BadVersion(_) => ErrorCode::BadVersion,
            Error::NotEmpty(_) => ErrorCode::NotEmpty,
            Error::NoChildrenForEphemerals(_) => ErrorCode::NoChildrenForEphemerals,
            Error::InvalidPath(_) => ErrorCode::InvalidPath,
            Error::BadArguments(_) => ErrorCode::BadArguments,
            Error::SessionExpired(_) => ErrorCode::SessionExpired,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Compacted(_) => ErrorCode::Compacted,
            Error::TooLarge(_) => ErrorCode::TooLarge,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::Fenced(_) => ErrorCode::Fenced,
            _ => return None,
        })
    }

    /// The server's details (message, path, index), for the server's answers.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::NoNode(d)
            | Error::NodeExists(d)
            | Error::BadVersion(d)
            | Error::NotEmpty(d)
            | Error::NoChildrenForEphemerals(d)
            | Error::InvalidPath(d)
            | Error::BadArguments(d)
            | Error::SessionExpired(d)
            | Error::Unavailable(d)
            | Error::Compacted(d)
            | Error::TooLarge(d)
            | Error::Timeout(d)
            | Error::Unauthorized(d)
            | Error::Forbidden(d)
            | Error::Fenced(d) => Some(d),
            _ => None,
        }
    }

    /// The path the server named in the error, if any.
    pub fn path(&self) -> Option<&str> {
        self.api().and_then(|d| d.path.as_deref())
    }

    /// A short name for the kind of error: the server's code, or
    /// `HttpStatus`, `Transport`, `ConnectionLoss`, `Decode`, `Config`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::HttpStatus { .. } => "HttpStatus",
            Error::Transport { .. } => "Transport",
            Error::ConnectionLoss { .. } => "ConnectionLoss",
            Error::Decode { .. } => "Decode",
            Error::Config { .. } => "Config",
            other => other.code().map(ErrorCode::as_str).unwrap_or("Unknown"),
        }
    }

    /// True when the operation may or may not have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::ConnectionLoss { .. } | Error::Timeout(_))
    }

    pub(crate) fn decode(what: impl fmt::Display) -> Error {
        Error::Decode {
            message: what.to_string(),
        }
    }

    pub(crate) fn config(what: impl fmt::Display) -> Error {
        Error::Config {
            message: what.to_string(),
        }
    }

    pub(crate) fn local(code: ErrorCode, message: impl Into<String>, path: Option<&str>) -> Error {
        Error::from_code(
            code,
            ApiError {
                message: message.into(),
                path: path.map(str::to_string),
                index: None,
                oldest_zxid: None,
            },
        )
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_its_name_and_status() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let body = format!(
                r#"{{"error":{{"code":"{}","message":"m","path":"/p"}}}}"#,
                code.as_str()
            );
            let err = Error::from_response(code.status(), body.as_bytes());
            assert_eq!(err.code(), Some(code), "{body}");
            assert_eq!(err.path(), Some("/p"));
            assert_eq!(err.api().map(|d| d.message.as_str()), Some("m"));
            assert_eq!(err.kind(), code.as_str());
        }
        assert_eq!(ErrorCode::parse("nonode"), None);
    }

    #[test]
    fn the_json_code_wins_over_the_status() {
        let err = Error::from_response(
            409,
            br#"{"error":{"code":"BadVersion","message":"expected 3, is 4","path":"/a"}}"#,
        );
        assert_eq!(
            err,
            Error::BadVersion(ApiError {
                message: "expected 3, is 4".into(),
                path: Some("/a".into()),
                index: None,
                oldest_zxid: None,
            })
        );
        assert_eq!(err.to_string(), "BadVersion: expected 3, is 4 (/a)");
    }

    #[test]
    fn multi_failures_carry_the_op_index() {
        let err = Error::from_response(
            404,
            br#"{"error":{"code":"NoNode","message":"no node","path":"/x","index":2}}"#,
        );
        assert_eq!(err.api().and_then(|d| d.index), Some(2));
        assert_eq!(err.to_string(), "NoNode: no node (/x) [op 2]");
    }

    #[test]
    fn non_json_bodies_map_by_status() {
        let cases = [
            (400, ErrorCode::BadArguments),
            (401, ErrorCode::Unauthorized),
            (403, ErrorCode::Forbidden),
            (404, ErrorCode::NoNode),
            (409, ErrorCode::NodeExists),
            (410, ErrorCode::SessionExpired),
            (413, ErrorCode::TooLarge),
            (502, ErrorCode::Unavailable),
            (503, ErrorCode::Unavailable),
            (504, ErrorCode::Timeout),
        ];
        for (status, code) in cases {
            let err = Error::from_response(status, b"<html>gateway says no</html>");
            assert_eq!(err.code(), Some(code), "status {status}");
            let message = &err.api().map(|d| d.message.clone()).unwrap_or_default();
            assert!(message.contains("gateway says no"), "{message}");
            assert!(message.contains(&status.to_string()), "{message}");
        }
        let err = Error::from_response(500, b"");
        assert_eq!(
            err,
            Error::HttpStatus {
                status: 500,
                message: "HTTP 500".into()
            }
        );
    }

    #[test]
    fn a_refused_fenced_write_is_fenced_not_node_exists() {
        let err =
            Error::from_response(409, br#"{"error":{"code":"Fenced","message":"old token"}}"#);
        assert!(
            matches!(err, Error::Fenced(ref d) if d.message == "old token"),
            "{err:?}"
        );
        assert_eq!(err.code(), Some(ErrorCode::Fenced));
        assert!(!err.is_outcome_unknown());
    }

    #[test]
    fn unknown_codes_fall_back_to_the_status_and_keep_the_message() {
        let err = Error::from_response(
            409,
            br#"{"error":{"code":"Frobbed","message":"old token"}}"#,
        );
        assert_eq!(err.code(), Some(ErrorCode::NodeExists));
        let message = err.api().map(|d| d.message.clone()).unwrap_or_default();
        assert!(
            message.contains("old token") && message.contains("Frobbed"),
            "{message}"
        );
        let err = Error::from_response(418, br#"{"error":{"code":"Teapot","message":"short"}}"#);
        assert!(
            matches!(err, Error::HttpStatus { status: 418, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn long_non_json_bodies_are_truncated() {
        let body = "x".repeat(10_000);
        let err = Error::from_response(503, body.as_bytes());
        let len = err.api().map(|d| d.message.len()).unwrap_or(0);
        assert!(len < MAX_ERROR_BODY_CHARS + 20, "{len}");
    }

    #[test]
    fn outcome_unknown_is_only_for_lost_answers() {
        assert!(Error::ConnectionLoss {
            message: "reset".into()
        }
        .is_outcome_unknown());
        assert!(Error::Timeout(ApiError::default()).is_outcome_unknown());
        assert!(!Error::Transport {
            message: "refused".into()
        }
        .is_outcome_unknown());
        assert!(!Error::NoNode(ApiError::default()).is_outcome_unknown());
    }
}
