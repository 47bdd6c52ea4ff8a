//! The HTTP API (axum): routes, shared state, and the layers around them.
//!
//! Where it sits: requests come in here; reads go straight to the store (after
//! the read barrier for `?consistency=linearizable`), writes become a `Txn`
//! handed to the [`Proposer`]. One module per resource: [`nodes`],
//! [`children`], [`txn`], [`sessions`], [`locks`], [`semaphores`],
//! [`elections`], [`cluster`] (+ `/v1/sync`),
//! [`watch`] (one-shot watches), [`events`] (event streams, SSE),
//! [`health`], [`metrics`].
//!
//! Every route is listed once in [`routes`] (method, OpenAPI path, router
//! patterns, handler): the router is built from it, and a test compares it
//! with `api/openapi.yaml`. Around the routes, outermost first: the zxid layer
//! (`X-Keeper-Min-Zxid` wait, `X-Keeper-Zxid` on every response, request
//! metrics, a debug event per request), then timeout and the global concurrency limit (both
//! answered in the [`ApiError`] format), then the body size limit (rejected
//! by [`extract::JsonBody`] as `413 TooLarge`). Watch routes (long polls
//! and streams, [`RouteSpec::long_lived`]) skip the timeout and the
//! concurrency limit: `max_watch_streams` bounds them instead.

pub mod admin;
pub mod children;
pub mod cluster;
pub mod elections;
pub mod events;
pub mod extract;
pub mod health;
pub mod locks;
pub mod metrics;
pub mod nodes;
pub mod semaphores;
pub mod sessions;
pub mod txn;
pub mod watch;

use crate::applier::AppliedView;
use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::proposer::{Proposer, Role};
use crate::sessions::Sessions;
use crate::watches::Hub;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use keeper_store::Store;
use keeper_zab::Zxid;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Response header: the last zxid applied by the member that answered.
pub const ZXID_HEADER: HeaderName = HeaderName::from_static("x-keeper-zxid");
/// Request header: wait until this member has applied at least this zxid.
pub const MIN_ZXID_HEADER: HeaderName = HeaderName::from_static("x-keeper-min-zxid");

/// Everything handlers share: one `Arc`, so the clone that every request
/// and every layer makes is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared state and registers its scrape-time gauges
    /// ([`metrics::StateCollector`]) in the process's registry.
    pub fn new(shared: Shared) -> AppState {
        let state = AppState(Arc::new(shared));
        state
            .metrics
            .register_collector(Box::new(metrics::StateCollector(Arc::downgrade(&state.0))));
        state
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub proposer: Arc<dyn Proposer>,
    pub applied: AppliedView,
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<Metrics>,
    /// The member's watches (one-shot and streams).
    pub watches: Arc<Hub>,
    /// False while starting and once shutting down (`/readyz` answers 503).
    pub ready: Arc<AtomicBool>,
    /// Backups that may run at once (`max_concurrent_backups`).
    pub backup_slots: Arc<Semaphore>,
}

impl AppState {
    /// True when `/readyz` should say ready: started and not shutting down, the
    /// applier healthy, in the broadcast phase with a leader (a member without a
    /// quorum has none), and caught up: applied within `ready_max_lag_entries` of
    /// the committed zxid (same epoch; across epochs it must have applied all).
    pub fn is_ready(&self) -> bool {
        if !self.ready.load(Ordering::Acquire)
            || self.applied.has_failed()
            || self.proposer.failed()
        {
            return false;
        }
        let status = self.proposer.status();
        status.has_leader()
            && caught_up(
                self.applied.applied_zxid().0,
                status.committed_zxid,
                self.config.ready_max_lag_entries,
            )
    }
}

/// True when `applied` is within `max_lag` entries of `committed` (zxids of one
/// epoch count entries in their low 32 bits; across epochs, all must be applied).
pub fn caught_up(applied: u64, committed: u64, max_lag: u64) -> bool {
    if applied >= committed {
        return true;
    }
    applied >> 32 == committed >> 32 && committed - applied <= max_lag
}

/// One API route: what the router serves and what the OpenAPI spec documents.
pub struct RouteSpec {
    pub method: Method,
    /// The path as `api/openapi.yaml` writes it.
    pub spec_path: &'static str,
    /// The axum patterns that serve it (the root of a znode prefix needs extra ones).
    pub patterns: &'static [&'static str],
    /// A long poll or a stream: served without the request timeout and the
    /// concurrency limit (bounded by `max_watch_streams` instead).
    pub long_lived: bool,
}

const NODE_PATTERNS: &[&str] = &["/v1/nodes", "/v1/nodes/", "/v1/nodes/{*path}"];
const CHILDREN_PATTERNS: &[&str] = &["/v1/children", "/v1/children/", "/v1/children/{*path}"];
const WATCH_PATTERNS: &[&str] = &["/v1/watch", "/v1/watch/", "/v1/watch/{*path}"];
const EVENTS_PATTERNS: &[&str] = &["/v1/events", "/v1/events/", "/v1/events/{*path}"];

/// The route table: every route with its handler. The only list of routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    fn r(
        method: Method,
        spec_path: &'static str,
        patterns: &'static [&'static str],
        handler: MethodRouter<AppState>,
    ) -> (RouteSpec, MethodRouter<AppState>) {
        (
            RouteSpec {
                method,
                spec_path,
                patterns,
                long_lived: spec_path.starts_with("/v1/watch/")
                    || spec_path.starts_with("/v1/events/")
                    || spec_path.ends_with("/events"),
            },
            handler,
        )
    }
    let node = "/v1/nodes/{path}";
    vec![
        r(
            Method::POST,
            node,
            NODE_PATTERNS,
            on(MethodFilter::POST, nodes::create),
        ),
        r(
            Method::GET,
            node,
            NODE_PATTERNS,
            on(MethodFilter::GET, nodes::read),
        ),
        r(
            Method::PUT,
            node,
            NODE_PATTERNS,
            on(MethodFilter::PUT, nodes::set),
        ),
        r(
            Method::DELETE,
            node,
            NODE_PATTERNS,
            on(MethodFilter::DELETE, nodes::delete),
        ),
        r(
            Method::GET,
            "/v1/children/{path}",
            CHILDREN_PATTERNS,
            on(MethodFilter::GET, children::list),
        ),
        r(
            Method::GET,
            "/v1/watch/{path}",
            WATCH_PATTERNS,
            on(MethodFilter::GET, watch::watch),
        ),
        r(
            Method::GET,
            "/v1/events/{path}",
            EVENTS_PATTERNS,
            on(MethodFilter::GET, events::events),
        ),
        r(
            Method::POST,
            "/v1/txn",
            &["/v1/txn"],
            on(MethodFilter::POST, txn::multi),
        ),
        r(
            Method::POST,
            "/v1/sessions",
            &["/v1/sessions"],
            on(MethodFilter::POST, sessions::create),
        ),
        r(
            Method::POST,
            "/v1/sessions/{id}/keepalive",
            &["/v1/sessions/{id}/keepalive"],
            on(MethodFilter::POST, sessions::keepalive),
        ),
        r(
            Method::DELETE,
            "/v1/sessions/{id}",
            &["/v1/sessions/{id}"],
            on(MethodFilter::DELETE, sessions::close),
        ),
        r(
            Method::POST,
            "/v1/locks/{name}/acquire",
            &["/v1/locks/{name}/acquire"],
            on(MethodFilter::POST, locks::acquire),
        ),
        r(
            Method::DELETE,
            "/v1/locks/{name}/{key}",
            &["/v1/locks/{name}/{key}"],
            on(MethodFilter::DELETE, locks::release),
        ),
        r(
            Method::GET,
            "/v1/locks/{name}",
            &["/v1/locks/{name}"],
            on(MethodFilter::GET, locks::show),
        ),
        r(
            Method::POST,
            "/v1/semaphores/{name}/acquire",
            &["/v1/semaphores/{name}/acquire"],
            on(MethodFilter::POST, semaphores::acquire),
        ),
        r(
            Method::DELETE,
            "/v1/semaphores/{name}/{key}",
            &["/v1/semaphores/{name}/{key}"],
            on(MethodFilter::DELETE, semaphores::release),
        ),
        r(
            Method::GET,
            "/v1/semaphores/{name}",
            &["/v1/semaphores/{name}"],
            on(MethodFilter::GET, semaphores::show),
        ),
        r(
            Method::POST,
            "/v1/elections/{name}/campaign",
            &["/v1/elections/{name}/campaign"],
            on(MethodFilter::POST, elections::campaign),
        ),
        r(
            Method::POST,
            "/v1/elections/{name}/resign",
            &["/v1/elections/{name}/resign"],
            on(MethodFilter::POST, elections::resign),
        ),
        r(
            Method::POST,
            "/v1/elections/{name}/proclaim",
            &["/v1/elections/{name}/proclaim"],
            on(MethodFilter::POST, elections::proclaim),
        ),
        r(
            Method::GET,
            "/v1/elections/{name}",
            &["/v1/elections/{name}"],
            on(MethodFilter::GET, elections::show),
        ),
        r(
            Method::GET,
            "/v1/elections/{name}/events",
            &["/v1/elections/{name}/events"],
            on(MethodFilter::GET, elections::events),
        ),
        r(
            Method::POST,
            "/v1/sync",
            &["/v1/sync"],
            on(MethodFilter::POST, cluster::sync),
        ),
        r(
            Method::GET,
            "/v1/cluster",
            &["/v1/cluster"],
            on(MethodFilter::GET, cluster::status),
        ),
        r(
            Method::GET,
            "/v1/cluster/digest",
            &["/v1/cluster/digest"],
            on(MethodFilter::GET, cluster::digest),
        ),
        r(
            Method::GET,
            "/v1/admin/snapshot",
            &["/v1/admin/snapshot"],
            on(MethodFilter::GET, admin::snapshot),
        ),
        r(
            Method::GET,
            "/healthz",
            &["/healthz"],
            on(MethodFilter::GET, health::healthz),
        ),
        r(
            Method::GET,
            "/readyz",
            &["/readyz"],
            on(MethodFilter::GET, health::readyz),
        ),
        r(
            Method::GET,
            "/metrics",
            &["/metrics"],
            on(MethodFilter::GET, metrics::render),
        ),
    ]
}

/// The API router over `state`, with every layer. Testable with `oneshot`.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let mut limited: Router<AppState> = Router::new();
    let mut long_lived: Router<AppState> = Router::new();
    for (spec, handler) in routes() {
        let router = if spec.long_lived {
            &mut long_lived
        } else {
            &mut limited
        };
        for pattern in spec.patterns {
            *router = std::mem::take(router).route(pattern, handler.clone());
        }
    }
    with_limits(limited, &config)
        .merge(long_lived)
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            zxid_layer,
        ))
        .with_state(state)
}

/// Wraps `router` in the request limits of `config`: body size (rejected by
/// [`extract::JsonBody`] as `413 TooLarge`), then one middleware with the
/// concurrency limit shared by all routes (excess requests wait) and the
/// per-request timeout (`504 Timeout`; waiting for a slot counts).
fn with_limits<S: Clone + Send + Sync + 'static>(router: Router<S>, config: &Config) -> Router<S> {
    let limits = Limits {
        permits: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        timeout: Duration::from_millis(config.request_timeout_ms),
    };
    router
        .layer(DefaultBodyLimit::max(config.max_request_bytes))
        .layer(axum::middleware::from_fn_with_state(limits, limit_layer))
}

/// The shared concurrency limit and the request timeout.
#[derive(Clone)]
struct Limits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// Runs a request once a slot is free, within the timeout. One plain
/// middleware: tower's timeout, concurrency-limit and error-handling layers
/// cost a boxed future and an error conversion each, on every request.
async fn limit_layer(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let run = async {
        let Ok(_permit) = limits.permits.acquire().await else {
            return ApiError::new(ErrorCode::Unavailable, "server shutting down").into_response();
        };
        next.run(request).await
    };
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(response) => response,
        Err(_) => ApiError::new(ErrorCode::Timeout, "request timed out").into_response(),
    }
}

async fn no_such_endpoint() -> ApiError {
    ApiError::new(ErrorCode::NoNode, "no such endpoint")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("method {method} is not allowed on this endpoint"),
    )
}

/// Waits for `X-Keeper-Min-Zxid`, runs the request, stamps `X-Keeper-Zxid`
/// on the response (whatever it is), and counts the request.
async fn zxid_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let waited = match min_zxid(&request) {
        Ok(Some(wanted)) => wait_min_zxid(&state, wanted).await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    let mut response = match waited {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    // A read handler may have noted the zxid of the state it read, which
    // can be ahead of the applied watch: keep the larger (see `with_read_zxid`).
    let read = response
        .extensions()
        .get::<ReadZxid>()
        .map_or(0, |r| r.0 .0);
    let zxid = state.applied.applied_zxid().0.max(read);
    response
        .headers_mut()
        .insert(ZXID_HEADER, HeaderValue::from(zxid));
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    // One event per request, only when asked for (`RUST_LOG=keeper_server::http=debug`).
    tracing::debug!(%method, route, status, ?elapsed, "request");
    state
        .metrics
        .record_request(route, method.as_str(), status, elapsed);
    response
}

/// Notes the zxid of the state a read saw, for `X-Keeper-Zxid`. The store
/// can be a step ahead of the applied watch (it is moved after the write), so
/// the watch alone could name a zxid below what the client was shown, and a
/// client carrying it to another member could then read older state.
pub fn with_read_zxid(mut response: Response, zxid: Zxid) -> Response {
    response.extensions_mut().insert(ReadZxid(zxid));
    response
}

/// The zxid of the state a read saw, for the zxid layer's header.
#[derive(Debug, Clone, Copy)]
struct ReadZxid(Zxid);

/// The `X-Keeper-Min-Zxid` of a request, if any; malformed is `400 BadArguments`.
fn min_zxid(request: &Request) -> Result<Option<u64>, ApiError> {
    let Some(raw) = request.headers().get(&MIN_ZXID_HEADER) else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_arguments("X-Keeper-Min-Zxid must be a decimal unsigned integer")
        })
}

/// Waits until `wanted` is applied, at most `min_zxid_wait_ms` (`504 Timeout` after).
///
/// A standalone member is the only one that mints zxids, and it commits a
/// zxid before any client can see it: a `wanted` above its committed zxid
/// names state that does not exist (a made-up value, or one from before its
/// data was replaced), so it is `400 BadArguments` at once instead of a wait
/// that cannot succeed. A cluster member cannot tell (a newer leader may
/// have committed it), so it waits.
async fn wait_min_zxid(state: &AppState, wanted: u64) -> Result<(), ApiError> {
    if state.applied.applied_zxid().0 >= wanted {
        return Ok(());
    }
    let status = state.proposer.status();
    if status.role == Role::Standalone && wanted > status.committed_zxid.max(status.applied_zxid) {
        return Err(ApiError::bad_arguments(format!(
            "X-Keeper-Min-Zxid {wanted} is ahead of everything this member has committed ({})",
            status.committed_zxid.max(status.applied_zxid)
        )));
    }
    let wait = Duration::from_millis(state.config.min_zxid_wait_ms);
    state
        .applied
        .wait_for(Zxid(wanted), wait)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::new(ErrorCode::Timeout, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn slow_router(config: &Config) -> Router {
        let slow = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                "done"
            }),
        );
        with_limits(slow, config)
    }

    async fn get_slow(router: &Router) -> (u16, serde_json::Value) {
        let req = Request::builder()
            .uri("/slow")
            .body(Body::empty())
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    #[tokio::test]
    async fn a_request_over_the_timeout_is_504_in_the_error_format() {
        let config = Config {
            request_timeout_ms: 20,
            ..Config::default()
        };
        let (status, body) = get_slow(&slow_router(&config)).await;
        assert_eq!(status, 504);
        assert_eq!(body["error"]["code"], "Timeout");
    }

    #[tokio::test]
    async fn the_concurrency_limit_is_shared_and_makes_requests_wait() {
        let config = Config {
            max_concurrent_requests: 1,
            ..Config::default()
        };
        let router = slow_router(&config);
        let started = Instant::now();
        let (a, b) = tokio::join!(get_slow(&router), get_slow(&router));
        assert_eq!((a.0, b.0), (200, 200));
        assert!(
            started.elapsed() >= Duration::from_millis(195),
            "two 100 ms requests ran concurrently despite a limit of 1: {:?}",
            started.elapsed()
        );
    }
}
