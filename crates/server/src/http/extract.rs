//! Extractors whose rejections are [`ApiError`]s (never axum's plain text):
//! JSON bodies, query strings, znode paths from the URL, and request data.

use crate::error::{ApiError, ErrorCode};
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// A JSON request body. An empty body reads as `{}`. Malformed JSON and
/// unknown fields are `400 BadArguments`; a body above `max_request_bytes`
/// is `413 TooLarge`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::TooLarge, "request body is too large")
            } else {
                ApiError::bad_arguments(format!("cannot read request body: {rejection}"))
            }
        })?;
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &body
        };
        serde_json::from_slice(body)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_arguments(format!("invalid JSON body: {e}")))
    }
}

/// Query parameters; unknown or malformed ones are `400 BadArguments`.
pub struct QueryArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryArgs(v))
            .map_err(|e| ApiError::bad_arguments(format!("bad query string: {}", e.body_text())))
    }
}

/// The znode path of a `/v1/nodes/...` or `/v1/children/...` URL: the rest of
/// the URL path after the prefix, percent-decoded, with a leading `/`; the
/// bare prefix is the root `/`. Its validity is checked separately.
pub struct ZnodePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ZnodePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Path(params)) => match params.get("path") {
                Some(rest) => Ok(ZnodePath(format!("/{rest}"))),
                None => Ok(ZnodePath("/".to_string())),
            },
            Err(PathRejection::MissingPathParams(_)) => Ok(ZnodePath("/".to_string())),
            Err(e) => Err(ApiError::new(
                ErrorCode::InvalidPath,
                format!("cannot decode path: {}", e.body_text()),
            )),
        }
    }
}

/// A numeric id from the URL (`/v1/sessions/{id}`); garbage is `400 BadArguments`.
pub struct IdParam(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for IdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_arguments(format!("bad id: {}", e.body_text())))?;
        let raw = params
            .get("id")
            .ok_or_else(|| ApiError::bad_arguments("missing id"))?;
        raw.parse::<u64>()
            .map(IdParam)
            .map_err(|e| ApiError::bad_arguments(format!("bad id {raw:?}: {e}")))
    }
}

/// Turns a request's `data` / `data_b64` pair into bytes: at most one may be
/// given; neither means empty data; bad base64 is `400 BadArguments`.
pub fn request_data(data: Option<String>, data_b64: Option<String>) -> Result<Bytes, ApiError> {
    match (data, data_b64) {
        (Some(_), Some(_)) => Err(ApiError::bad_arguments(
            "give either \"data\" or \"data_b64\", not both",
        )),
        (Some(text), None) => Ok(Bytes::from(text)),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map(Bytes::from)
            .map_err(|e| ApiError::bad_arguments(format!("\"data_b64\" is not valid base64: {e}"))),
        (None, None) => Ok(Bytes::new()),
    }
}

/// Checks data size before anything is proposed (`413 TooLarge`).
pub fn check_data_size(data: &Bytes, max_data_bytes: usize) -> Result<(), ApiError> {
    if data.len() > max_data_bytes {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "data is {} bytes, above the limit of {max_data_bytes}",
                data.len()
            ),
        ));
    }
    Ok(())
}

/// A version argument: `-1` (any) or a non-negative version.
pub fn check_version(version: i32) -> Result<i32, ApiError> {
    if version < -1 {
        return Err(ApiError::bad_arguments(format!(
            "version must be -1 (any) or >= 0, not {version}"
        )));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_data_accepts_one_form_and_refuses_both_or_bad_base64() {
        assert_eq!(request_data(None, None).unwrap(), Bytes::new());
        assert_eq!(
            request_data(Some("hi".into()), None).unwrap(),
            Bytes::from("hi")
        );
        assert_eq!(
            request_data(None, Some("/wA=".into())).unwrap(),
            Bytes::from_static(b"\xff\x00")
        );
        assert_eq!(
            request_data(Some("a".into()), Some("YQ==".into()))
                .unwrap_err()
                .code,
            ErrorCode::BadArguments
        );
        assert_eq!(
            request_data(None, Some("!!".into())).unwrap_err().code,
            ErrorCode::BadArguments
        );
    }
}
