//! `GET /v1/events/{path}`: a stream of change events as server-sent events.
//!
//! Query: `recursive=true` (the whole subtree; otherwise the node and its
//! direct children), `from_zxid=Z` (first replay every matching change
//! after Z from the change history, then live changes: no gap, no
//! duplicate), `with_data=true` (each change carries the node's stat and
//! data after it), and `also=PATH`, repeatable, for more paths on the same
//! stream (`max_watches_per_stream` in all).
//!
//! Each SSE message has `event:` = the type and `data:` = a [`WireEvent`].
//! The first message is a `progress` event naming the zxid the stream
//! starts from; more follow every `watch_progress_interval_ms`. A message
//! with an `id:` completes its zxid: resuming with `from_zxid` = the last
//! `id` seen misses nothing. A stream that falls `watch_stream_buffer`
//! entries behind ends with a `cut_off` event naming the zxid to resume
//! from. A `from_zxid` below the retained history is `410 Compacted` with
//! `oldest_zxid`. The stream is not subject to the request timeout or the
//! concurrency limit; `max_watch_streams` bounds the streams of a member.

use super::extract::ZnodePath;
use super::nodes::check_path;
use super::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::watches::stream::{EventStream, StartError, StreamSpec};
use crate::watches::Scope;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keeper_zab::Zxid;
use std::convert::Infallible;
use std::time::Duration;

/// The parsed query of a stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct EventsQuery {
    recursive: bool,
    from_zxid: Option<u64>,
    with_data: bool,
    also: Vec<String>,
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad_arguments(format!(
            "{name} must be true or false, not {value:?}"
        ))),
    }
}

fn parse_query(pairs: Vec<(String, String)>) -> Result<EventsQuery, ApiError> {
    let mut q = EventsQuery::default();
    for (key, value) in pairs {
        match key.as_str() {
            "recursive" => q.recursive = parse_bool("recursive", &value)?,
            "with_data" => q.with_data = parse_bool("with_data", &value)?,
            "from_zxid" => {
                q.from_zxid = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::bad_arguments("from_zxid must be a decimal unsigned integer")
                })?)
            }
            "also" => q.also.push(value),
            other => {
                return Err(ApiError::bad_arguments(format!(
                    "bad query string: unknown parameter {other:?}"
                )))
            }
        }
    }
    Ok(q)
}

/// `GET /v1/events/{path}?recursive=&from_zxid=&with_data=&also=`.
pub async fn events(
    State(state): State<AppState>,
    ZnodePath(path): ZnodePath,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query
        .map_err(|e| ApiError::bad_arguments(format!("bad query string: {}", e.body_text())))?;
    let q = parse_query(pairs)?;
    check_path(&state, &path)?;
    for extra in &q.also {
        check_path(&state, extra)?;
    }
    let watched = 1 + q.also.len();
    if watched > state.config.max_watches_per_stream {
        return Err(ApiError::bad_arguments(format!(
            "{watched} paths on one stream; at most {} (max_watches_per_stream)",
            state.config.max_watches_per_stream
        )));
    }
    let scope = if q.recursive {
        Scope::Recursive
    } else {
        Scope::NodeAndChildren
    };
    let watches = std::iter::once(path)
        .chain(q.also)
        .map(|p| (p, scope))
        .collect();
    let admission = state.watches.admit().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "too many watch streams open on this member (max_watch_streams)",
        )
    })?;
    let from = q.from_zxid;
    let stream = EventStream::start(
        state.store.clone(),
        state.watches.clone(),
        state.metrics.clone(),
        StreamSpec {
            watches,
            from_zxid: from.map(Zxid),
            live_after: state.applied.applied_zxid(),
            with_data: q.with_data,
        },
        admission,
        Duration::from_millis(state.config.watch_progress_interval_ms),
        state.config.watch_replay_chunk,
    )
    .map_err(|e| match e {
        StartError::Compacted { floor } => ApiError::compacted(from.unwrap_or(0), floor.0),
        StartError::Storage(why) => {
            ApiError::new(ErrorCode::Internal, format!("storage failure: {why}"))
        }
    })?;
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next().await?;
        Some((Ok::<_, Infallible>(chunk), stream))
    });
    // Progress events (every `watch_progress_interval_ms`) keep an idle
    // stream alive.
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_parses_repeated_paths_and_refuses_junk() {
        let q = parse_query(pairs(&[
            ("recursive", "true"),
            ("from_zxid", "42"),
            ("also", "/b"),
            ("also", "/c"),
        ]))
        .unwrap();
        assert_eq!(
            q,
            EventsQuery {
                recursive: true,
                from_zxid: Some(42),
                with_data: false,
                also: vec!["/b".into(), "/c".into()],
            }
        );
        assert!(parse_query(pairs(&[("from_zxid", "-1")])).is_err());
        assert!(parse_query(pairs(&[("recursive", "maybe")])).is_err());
        assert!(parse_query(pairs(&[("bogus", "1")])).is_err());
    }
}
