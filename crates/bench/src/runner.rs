//! The run: setup (prefix and key space), then the closed-loop clients, then the merge.
//!
//! Data flow: `BenchConfig` → resolve endpoints → [`setup`] creates missing znodes →
//! `clients` tasks run [`client_loop`] until the deadline, each with its own connection and
//! `ClientStats` → merged into a `Report`.
//!
//! Timing: all clients share one clock origin. A request counts when it *started* at or
//! after the end of the warm-up; a success counts only if it also finished before the
//! deadline (requests still in flight at the deadline are dropped, at most one per client).
//! No request is started after the deadline, so a run lasts at most warm-up + duration +
//! the per-request timeout.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::time::Instant;

use crate::args::BenchConfig;
use crate::conn::{Connection, Endpoint, RequestError};
use crate::error::BenchError;
use crate::report::{ClientStats, Report, RunShape};
use crate::workload::{build_request, node_uri, parse_uri, SplitMix64, Workload, WorkloadPlan};

/// Runs the whole benchmark described by `config` and returns its report.
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    let mut endpoints = Vec::with_capacity(config.endpoints.len());
    for authority in &config.endpoints {
        endpoints.push(Endpoint::resolve(authority).await?);
    }
    let workload = Arc::new(
        Workload::new(
            config.plan.clone(),
            &config.prefix,
            config.keys,
            config.value_size,
            run_id(),
        )
        .map_err(|reason| BenchError::InvalidFlag {
            flag: "prefix",
            reason,
        })?,
    );
    setup(config, &endpoints, &workload).await?;

    let start = Instant::now();
    let window = Window {
        measure_from: start + config.warmup,
        deadline: start + config.warmup + config.duration,
    };
    let locks = Arc::new(crate::locks::Shared::new(run_id()));
    let mut tasks = Vec::with_capacity(config.clients);
    for client in 0..config.clients {
        let endpoint = endpoints
            .get(client % endpoints.len())
            .cloned()
            .ok_or_else(|| BenchError::ClientTask("no endpoints".into()))?;
        let workload = Arc::clone(&workload);
        let client_config = ClientConfig {
            id: client,
            seed: config.seed.wrapping_add(client as u64),
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            reconnect_backoff: config.reconnect_backoff,
        };
        match config.plan {
            WorkloadPlan::Single(op) if op.is_recipe() => {
                tasks.push(tokio::spawn(crate::locks::client_loop(
                    client_config,
                    endpoint,
                    op,
                    Arc::clone(&locks),
                    window,
                )));
            }
            _ => tasks.push(tokio::spawn(client_loop(
                client_config,
                endpoint,
                workload,
                window,
            ))),
        }
    }
    let mut merged = ClientStats::default();
    for task in tasks {
        let stats = task
            .await
            .map_err(|e| BenchError::ClientTask(e.to_string()))?;
        merged.merge(&stats);
    }
    let shape = RunShape {
        op: config.plan.describe(),
        is_mix: matches!(config.plan, WorkloadPlan::Mix(_)),
        clients: config.clients,
        endpoints: endpoints.len(),
        value_size: config.value_size,
        keys: workload.key_paths().len(),
        warmup: config.warmup,
        duration: config.duration,
    };
    Ok(Report::new(&shape, &merged))
}

/// A value that differs between runs, so create paths of two runs never collide.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// The measured window, shared by all clients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub measure_from: Instant,
    pub deadline: Instant,
}

/// Per-client settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientConfig {
    pub id: usize,
    pub seed: u64,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub reconnect_backoff: Duration,
}

/// One closed-loop client: one connection, one request at a time, until the deadline.
/// Broken or timed-out connections are replaced; errors are counted by kind.
async fn client_loop(
    config: ClientConfig,
    endpoint: Endpoint,
    workload: Arc<Workload>,
    window: Window,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut rng = SplitMix64::new(config.seed);
    let mut connection: Option<Connection> = None;
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        if now >= window.deadline {
            break;
        }
        let measuring = now >= window.measure_from;
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match Connection::open(&endpoint, config.connect_timeout).await {
                Ok(conn) => connection.insert(conn),
                Err(error) => {
                    if measuring {
                        stats.error(error.kind());
                    }
                    tokio::time::sleep(config.reconnect_backoff).await;
                    continue;
                }
            },
        };
        let (op, request) = match workload.next_request(&mut rng, &endpoint.host, config.id, seq) {
            Ok(next) => next,
            Err(detail) => {
                // Only reachable through a bug in URI building; count it and stop.
                eprintln!("keeper-bench: client {}: {detail}", config.id);
                stats.error("request_build");
                break;
            }
        };
        seq += 1;
        let started = Instant::now();
        let result = conn.send_within(request, config.request_timeout).await;
        let finished = Instant::now();
        let counted = started >= window.measure_from;
        match result {
            Ok(status) if status == op.expected_status() => {
                if counted && finished <= window.deadline {
                    stats.record(op, finished - started);
                }
            }
            Ok(status) => {
                if counted {
                    stats.error(&status_kind(status));
                }
            }
            Err(error) => {
                if counted {
                    stats.error(error.kind());
                }
                connection = None;
            }
        }
    }
    stats
}

/// The error kind of an unexpected status: `status_409`.
pub(crate) fn status_kind(status: StatusCode) -> String {
    format!("status_{}", status.as_u16())
}

/// Creates the prefix (and its ancestors) and every missing key of the key space, then
/// asks every member to sync so that local reads see the keys.
async fn setup(
    config: &BenchConfig,
    endpoints: &[Endpoint],
    workload: &Arc<Workload>,
) -> Result<(), BenchError> {
    let Some(first) = endpoints.first() else {
        return Ok(());
    };
    let mut setup_client = SetupClient::new(config, first.clone());
    // Prefix and ancestors: /a, then /a/b. Existing ones answer 409.
    let mut path = String::new();
    for segment in config.prefix.split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        path.push_str(segment);
        setup_client
            .request(
                Method::POST,
                &path,
                Bytes::from_static(br#"{"data":""}"#),
                &[StatusCode::CREATED, StatusCode::CONFLICT],
            )
            .await?;
    }
    if workload.key_paths().is_empty() {
        return Ok(());
    }

    let workers = config.setup_concurrency.min(workload.key_paths().len());
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let endpoint = endpoints
            .get(worker % endpoints.len())
            .cloned()
            .unwrap_or_else(|| first.clone());
        let mut client = SetupClient::new(config, endpoint);
        let workload = Arc::clone(workload);
        tasks.push(tokio::spawn(async move {
            let paths = workload.key_paths().iter().skip(worker).step_by(workers);
            for path in paths {
                // A read first: keys left by an earlier run cost no write.
                let status = client
                    .request(
                        Method::GET,
                        path,
                        Bytes::new(),
                        &[StatusCode::OK, StatusCode::NOT_FOUND],
                    )
                    .await?;
                if status == StatusCode::NOT_FOUND {
                    client
                        .request(
                            Method::POST,
                            path,
                            workload.value().clone(),
                            &[StatusCode::CREATED, StatusCode::CONFLICT],
                        )
                        .await?;
                }
            }
            Ok::<(), BenchError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| BenchError::ClientTask(e.to_string()))??;
    }
    for endpoint in endpoints {
        let mut client = SetupClient::new(config, endpoint.clone());
        if let Err(error) = client.sync().await {
            eprintln!(
                "keeper-bench: warning: sync on {} failed ({error}); early local reads may miss keys",
                endpoint.authority
            );
        }
    }
    Ok(())
}

/// A retrying request helper for setup, with one reusable connection.
struct SetupClient {
    endpoint: Endpoint,
    connection: Option<Connection>,
    attempts: u32,
    backoff: Duration,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl SetupClient {
    fn new(config: &BenchConfig, endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            connection: None,
            attempts: config.setup_attempts.max(1),
            backoff: config.setup_retry_backoff,
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
        }
    }

    /// Sends `method path` until it answers one of `accept` (returned), retrying other
    /// statuses and connection errors up to the attempt bound.
    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        accept: &[StatusCode],
    ) -> Result<StatusCode, BenchError> {
        let uri = parse_uri(node_uri(path)).map_err(|detail| BenchError::Setup {
            path: path.to_string(),
            detail,
        })?;
        self.send_retrying(method, uri, body, accept)
            .await
            .map_err(|detail| BenchError::Setup {
                path: path.to_string(),
                detail,
            })
    }

    /// `POST /v1/sync`, one attempt round.
    async fn sync(&mut self) -> Result<StatusCode, String> {
        let uri = parse_uri("/v1/sync".to_string())?;
        self.send_retrying(Method::POST, uri, Bytes::new(), &[StatusCode::OK])
            .await
    }

    async fn send_retrying(
        &mut self,
        method: Method,
        uri: hyper::Uri,
        body: Bytes,
        accept: &[StatusCode],
    ) -> Result<StatusCode, String> {
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff).await;
            }
            let conn = match self.connection.as_mut() {
                Some(conn) => conn,
                None => match Connection::open(&self.endpoint, self.connect_timeout).await {
                    Ok(conn) => self.connection.insert(conn),
                    Err(error) => {
                        last = error.to_string();
                        continue;
                    }
                },
            };
            let request = build_request(
                method.clone(),
                uri.clone(),
                body.clone(),
                &self.endpoint.host,
            );
            match conn.send_within(request, self.request_timeout).await {
                Ok(status) if accept.contains(&status) => return Ok(status),
                Ok(status) => {
                    last = format!(
                        "unexpected status {status} from {}",
                        self.endpoint.authority
                    )
                }
                Err(error) => {
                    last = describe(&error, &self.endpoint);
                    self.connection = None;
                }
            }
        }
        Err(format!("{last} (after {} attempts)", self.attempts))
    }
}

fn describe(error: &RequestError, endpoint: &Endpoint) -> String {
    format!("{error} ({})", endpoint.authority)
}

#[cfg(test)]
mod tests {
    //! The runner against an in-process mock of the node endpoints (not the real server:
    //! that is `tests/bench_smoke.rs`). The mock can answer writes with a chosen status.

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
    use std::sync::Mutex;

    use axum::body::Bytes as AxumBytes;
    use axum::extract::{Path, State};
    use axum::http::StatusCode as AxumStatus;
    use axum::routing::{get, post};
    use axum::Router;

    use super::*;
    use crate::workload::{Mix, OpKind};

    #[derive(Default)]
    struct Mock {
        nodes: Mutex<HashMap<String, Vec<u8>>>,
        /// When non-zero, PUTs answer this status instead of writing.
        put_status: AtomicU16,
        syncs: AtomicU64,
    }

    async fn node_get(State(mock): State<Arc<Mock>>, Path(path): Path<String>) -> AxumStatus {
        let nodes = mock.nodes.lock().unwrap();
        if nodes.contains_key(&format!("/{path}")) {
            AxumStatus::OK
        } else {
            AxumStatus::NOT_FOUND
        }
    }

    async fn node_create(
        State(mock): State<Arc<Mock>>,
        Path(path): Path<String>,
        body: AxumBytes,
    ) -> AxumStatus {
        let mut nodes = mock.nodes.lock().unwrap();
        let path = format!("/{path}");
        if nodes.contains_key(&path) {
            return AxumStatus::CONFLICT;
        }
        nodes.insert(path, body.to_vec());
        AxumStatus::CREATED
    }

    async fn node_set(
        State(mock): State<Arc<Mock>>,
        Path(path): Path<String>,
        body: AxumBytes,
    ) -> AxumStatus {
        let forced = mock.put_status.load(Ordering::Relaxed);
        if forced != 0 {
            return AxumStatus::from_u16(forced).unwrap();
        }
        let mut nodes = mock.nodes.lock().unwrap();
        match nodes.get_mut(&format!("/{path}")) {
            Some(data) => {
                *data = body.to_vec();
                AxumStatus::OK
            }
            None => AxumStatus::NOT_FOUND,
        }
    }

    async fn sync(State(mock): State<Arc<Mock>>) -> AxumStatus {
        mock.syncs.fetch_add(1, Ordering::Relaxed);
        AxumStatus::OK
    }

    /// Serves the mock on 127.0.0.1:0; returns its address.
    async fn serve(mock: Arc<Mock>) -> String {
        let app = Router::new()
            .route(
                "/v1/nodes/{*path}",
                get(node_get).post(node_create).put(node_set),
            )
            .route("/v1/sync", post(sync))
            .with_state(mock);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr.to_string()
    }

    fn config(endpoint: String, plan: WorkloadPlan) -> BenchConfig {
        BenchConfig {
            endpoints: vec![endpoint],
            clients: 4,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            value_size: 16,
            plan,
            keys: 20,
            prefix: "/b/c".into(),
            request_timeout: Duration::from_secs(2),
            setup_attempts: 3,
            setup_retry_backoff: Duration::from_millis(10),
            ..BenchConfig::default()
        }
    }

    #[tokio::test]
    async fn setup_creates_prefix_and_keys_then_sets_succeed() {
        let mock = Arc::new(Mock::default());
        let endpoint = serve(Arc::clone(&mock)).await;
        let config = config(endpoint, WorkloadPlan::Single(OpKind::Set));
        let report = tokio::time::timeout(Duration::from_secs(10), run(&config))
            .await
            .unwrap()
            .unwrap();
        assert!(report.ops > 0, "{report:?}");
        assert_eq!(report.errors.total, 0, "{report:?}");
        assert_eq!(report.keys, 20);
        assert_eq!(report.duration_s, 0.3);
        let nodes = mock.nodes.lock().unwrap();
        assert!(nodes.contains_key("/b") && nodes.contains_key("/b/c"));
        for index in 0..20 {
            let data = nodes
                .get(&crate::workload::key_path("/b/c", index))
                .unwrap();
            assert_eq!(data.as_slice(), crate::workload::value_body(16).as_ref());
        }
        assert_eq!(mock.syncs.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn unexpected_statuses_are_counted_by_code_not_as_ops() {
        let mock = Arc::new(Mock::default());
        mock.put_status.store(503, Ordering::Relaxed);
        let endpoint = serve(Arc::clone(&mock)).await;
        let mix = Mix::new(vec![(OpKind::Set, 1), (OpKind::Get, 1)]).unwrap();
        let config = config(endpoint, WorkloadPlan::Mix(mix));
        let report = tokio::time::timeout(Duration::from_secs(10), run(&config))
            .await
            .unwrap()
            .unwrap();
        let failed = report
            .errors
            .by_kind
            .get("status_503")
            .copied()
            .unwrap_or(0);
        assert!(failed > 0, "{report:?}");
        assert_eq!(report.errors.total, failed);
        // Gets still succeed and are the only ops.
        assert!(
            report.by_op.get("get").is_some_and(|s| s.ops > 0),
            "{report:?}"
        );
        assert!(!report.by_op.contains_key("set"), "{report:?}");
        assert_eq!(report.ops, report.by_op["get"].ops);
    }

    #[tokio::test]
    async fn creates_use_fresh_paths() {
        let mock = Arc::new(Mock::default());
        let endpoint = serve(Arc::clone(&mock)).await;
        let config = config(endpoint, WorkloadPlan::Single(OpKind::Create));
        let report = tokio::time::timeout(Duration::from_secs(10), run(&config))
            .await
            .unwrap()
            .unwrap();
        assert!(report.ops > 0, "{report:?}");
        // 409 would mean a path was reused.
        assert_eq!(report.errors.total, 0, "{report:?}");
        assert_eq!(report.keys, 0);
        let creates = mock
            .nodes
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("/b/c/c-"))
            .count();
        assert!(creates as u64 >= report.ops);
    }

    #[tokio::test]
    async fn a_dead_endpoint_fails_setup_within_its_attempts() {
        // Bind and drop to get a port with nothing listening.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        drop(listener);
        let config = config(endpoint, WorkloadPlan::Single(OpKind::Get));
        let result = tokio::time::timeout(Duration::from_secs(10), run(&config))
            .await
            .unwrap();
        match result {
            Err(BenchError::Setup { path, detail }) => {
                assert_eq!(path, "/b");
                assert!(detail.contains("after 3 attempts"), "{detail}");
            }
            other => panic!("expected a setup error, got {other:?}"),
        }
    }

    /// A raw HTTP/1.1 server that answers each connection's first request (409 for POST,
    /// else 200) and then closes it, saying so (`connection: close`) when `announce`.
    /// Returns its address and the count of connections.
    async fn serve_one_request_per_connection(announce: bool) -> (String, Arc<AtomicU64>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let status = if request.starts_with(b"POST") {
                        "409 Conflict"
                    } else {
                        "200 OK"
                    };
                    let close = if announce {
                        "connection: close\r\n"
                    } else {
                        ""
                    };
                    let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n{close}\r\n");
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn announced_closes_reconnect_without_errors() {
        let (endpoint, accepted) = serve_one_request_per_connection(true).await;
        let mut config = config(endpoint, WorkloadPlan::Single(OpKind::Get));
        config.keys = 2;
        config.warmup = Duration::ZERO;
        let report = tokio::time::timeout(Duration::from_secs(10), run(&config))
            .await
            .unwrap()
            .unwrap();
        assert!(report.ops > 1, "{report:?}");
        assert_eq!(report.errors.total, 0, "{report:?}");
        // Each answer came on its own connection.
        assert!(accepted.load(Ordering::Relaxed) >= report.ops, "{report:?}");
    }

    #[tokio::test]
    async fn closed_connections_are_replaced_and_counted() {
        let (endpoint, accepted) = serve_one_request_per_connection(false).await;
        let mut config = config(endpoint, WorkloadPlan::Single(OpKind::Get));
        config.keys = 2;
        config.warmup = Duration::ZERO;
        config.reconnect_backoff = Duration::from_millis(1);
        let report = tokio::time::timeout(Duration::from_secs(10), run(&config))
            .await
            .unwrap()
            .unwrap();
        assert!(report.ops > 1, "{report:?}");
        // Every request after the first on a connection meets the close.
        let io = report.errors.by_kind.get("io").copied().unwrap_or(0);
        assert!(io > 0, "{report:?}");
        assert_eq!(report.errors.total, io, "{report:?}");
        // Each success needed its own connection (setup's and the run's).
        assert!(
            accepted.load(Ordering::Relaxed) >= report.ops + 4,
            "{report:?}"
        );
    }
}
