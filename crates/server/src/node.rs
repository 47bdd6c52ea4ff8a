//! Assembly of one member: open the store, replay, start the write path,
//! sessions and reaper, serve HTTP, and shut all of it down in order.
//!
//! Start order: `Store::open` -> [`Applier::start`] (standalone: replays the
//! log above `last_applied`) -> the write path: [`StandaloneProposer::start`]
//! (new epoch, persisted), or, with `--peers`, the peer transport and the
//! [`ZabProposer`] (the ZAB driver; it joins an election) -> session tracker
//! rebuilt from the store -> background tasks -> ready.
//!
//! Shutdown order ([`Node::shutdown`]): not ready -> background tasks stop ->
//! the write path stops taking txns (standalone: flushes what is queued;
//! cluster: the driver stops, then the peer links close) -> the applier
//! drains and exits -> the last `Arc<Store>` drops (RocksDB closes).

use crate::applier::{Applier, ApplierOptions};
use crate::config::{Config, ConfigError};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::peer::{PeerCollector, PeerHandle, PeerNetwork};
use crate::proposer::Proposer;
use crate::reaper;
use crate::sessions::{self, SessionTracker, Sessions};
use crate::standalone::{StandaloneOptions, StandaloneProposer};
use crate::watches::Hub;
use crate::zab_driver::{
    DriverParts, KeepaliveBounds, MemberAddr, PeerMsg, ZabOptions, ZabProposer,
};
use keeper_store::{Store, StoreError};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal: {0}")]
    Internal(String),
}

/// Longest wait at shutdown for queued peer messages to be written.
const LEAVING_FLUSH_WAIT: Duration = Duration::from_millis(300);

/// Committed batches queued between the log writer and the applier.
const APPLIER_QUEUE_BATCHES: usize = 64;

/// The write path this member runs.
enum WritePath {
    Standalone(Arc<StandaloneProposer>),
    Cluster {
        proposer: Arc<ZabProposer>,
        peers: PeerHandle<PeerMsg>,
        stop_driver: watch::Sender<bool>,
    },
}

/// A running member (without its HTTP listener): see the module docs.
pub struct Node {
    state: AppState,
    write_path: WritePath,
    applier_thread: std::thread::JoinHandle<()>,
    stop_tasks: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Validates `config`, opens the store, replays the log and starts the
    /// write path and background tasks. Serving can begin when this returns.
    pub async fn start(config: Config) -> Result<Node, ServerError> {
        config.validate()?;
        let cluster = !config.is_standalone();
        let metrics = Arc::new(Metrics::default());
        let cfg = config.clone();
        let metrics_for_start = metrics.clone();
        let started = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&cfg.data_dir)?;
            let store = Arc::new(Store::open(&cfg.data_dir, cfg.store_config())?);
            let applier = Applier::start(
                store.clone(),
                ApplierOptions {
                    queue_batches: APPLIER_QUEUE_BATCHES,
                    event_channel_capacity: cfg.event_channel_capacity,
                    replay_log: !cluster,
                },
            )?;
            let sessions = store.sessions()?;
            if cluster {
                return Ok::<_, ServerError>((store, applier, None, sessions));
            }
            let proposer = StandaloneProposer::start(
                store.clone(),
                applier.input.clone(),
                applier.view.clone(),
                StandaloneOptions {
                    id: cfg.id,
                    client_addr: cfg.client_addr.clone(),
                    peer_addr: cfg.peer_addr.clone(),
                    max_inflight_proposals: cfg.max_inflight_proposals,
                    max_batch_entries: cfg.max_batch_entries,
                },
                metrics_for_start,
            )?;
            Ok::<_, ServerError>((store, applier, Some(proposer), sessions))
        })
        .await
        .map_err(|e| ServerError::Internal(format!("startup task failed: {e}")))??;
        let (store, applier, standalone, existing_sessions) = started;
        let view = applier.view.clone();
        let applier_thread = applier.thread;
        let tracker = Arc::new(SessionTracker::rebuild(
            &existing_sessions,
            std::time::Instant::now(),
        ));
        let (write_path, dyn_proposer): (WritePath, Arc<dyn Proposer>) = match standalone {
            Some(p) => {
                let p = Arc::new(p);
                (WritePath::Standalone(p.clone()), p)
            }
            None => {
                let (stop_driver, stop_rx) = watch::channel(false);
                let (proposer, peers) = start_cluster(
                    &config,
                    store.clone(),
                    applier.input,
                    view.clone(),
                    tracker.clone(),
                    &metrics,
                    stop_rx,
                )
                .await?;
                let proposer = Arc::new(proposer);
                (
                    WritePath::Cluster {
                        proposer: proposer.clone(),
                        peers,
                        stop_driver,
                    },
                    proposer,
                )
            }
        };
        let sessions = Arc::new(Sessions::new(
            tracker,
            store.clone(),
            dyn_proposer.clone(),
            metrics.clone(),
            config.min_session_timeout_ms,
            config.max_session_timeout_ms,
        ));
        tracing::info!(
            sessions = existing_sessions.len(),
            applied = %view.applied_zxid(),
            data_dir = %config.data_dir.display(),
            "store open"
        );

        let (stop_tasks, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(sessions::run_expiry(
                sessions.clone(),
                Duration::from_millis(config.session_tick_ms),
                stop_rx.clone(),
            )),
            tokio::spawn(reaper::run_reaper(
                store.clone(),
                dyn_proposer.clone(),
                metrics.clone(),
                Duration::from_millis(config.reap_interval_ms),
                config.max_reap_batch,
                stop_rx,
            )),
        ];
        let config_backups = config.max_concurrent_backups;
        let watches = Hub::start(
            &view,
            metrics.clone(),
            config.max_watch_streams,
            config.watch_stream_buffer,
        )?;
        let state = AppState::new(http::Shared {
            config: Arc::new(config),
            store,
            proposer: dyn_proposer,
            applied: view,
            sessions,
            metrics,
            watches,
            ready: Arc::new(AtomicBool::new(true)),
            backup_slots: Arc::new(tokio::sync::Semaphore::new(config_backups)),
        });
        Ok(Node {
            state,
            write_path,
            applier_thread,
            stop_tasks,
            tasks,
        })
    }

    /// The HTTP API of this member.
    pub fn app(&self) -> axum::Router {
        http::app(self.state.clone())
    }

    /// Becomes `Some(why)` when the cluster write path stopped on a fatal
    /// error (`None` forever for a standalone member). [`run`] shuts the
    /// member down then, and returns the error (the binary exits non-zero).
    pub fn failure(&self) -> Option<watch::Receiver<Option<String>>> {
        match &self.write_path {
            WritePath::Standalone(_) => None,
            WritePath::Cluster { proposer, .. } => Some(proposer.failure()),
        }
    }

    /// The shared state (for tests and the future peer transport).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops everything in order (see the module docs) and closes the store.
    /// Routers made by [`Node::app`] must be dropped first for RocksDB to
    /// close here; otherwise it closes when the last one drops.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let Node {
            state,
            write_path,
            applier_thread,
            stop_tasks,
            tasks,
        } = self;
        state.ready.store(false, Ordering::Release);
        let _ = stop_tasks.send(true);
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "background task ended badly");
            }
        }
        match &write_path {
            WritePath::Standalone(proposer) => proposer.close().await,
            WritePath::Cluster {
                proposer,
                peers,
                stop_driver,
            } => {
                let _ = stop_driver.send(true);
                proposer.join().await;
                // Let the driver's last words (a leader's `Leaving`) reach the wire.
                let deadline = tokio::time::Instant::now() + LEAVING_FLUSH_WAIT;
                while tokio::time::Instant::now() < deadline
                    && peers.metrics().peers.values().any(|p| p.queue_depth > 0)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                peers.shutdown().await;
            }
        }
        let store = state.store.clone();
        drop(state);
        drop(write_path);
        let joined = tokio::task::spawn_blocking(move || applier_thread.join())
            .await
            .map_err(|e| ServerError::Internal(format!("joining the applier: {e}")))?;
        if joined.is_err() {
            return Err(ServerError::Internal("applier thread panicked".into()));
        }
        match Arc::try_unwrap(store) {
            Ok(store) => {
                drop(store);
                tracing::info!("store closed");
            }
            Err(_) => tracing::warn!("store still referenced; it closes when the last user drops"),
        }
        Ok(())
    }
}

/// Serves the API of a fresh [`Node`] on `listener` until `shutdown`
/// completes; then stops accepting, gives in-flight requests up to
/// `shutdown_grace_ms`, and shuts the node down (store closed on return).
///
/// A member whose replication fails (`Node::failure`) shuts down the same
/// way and returns the failure as an error: a member that cannot take part
/// in replication any more must not linger as a zombie, and a restart by
/// the supervisor reopens the store and rejoins the ensemble.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let node = Node::start(config).await?;
    let app = node.app();
    tracing::info!(addr = %listener.local_addr()?, "serving the HTTP API");

    let (signalled_tx, mut signalled_rx) = watch::channel(false);
    let ready = node.state.ready.clone();
    let failure = node.failure();
    let failed_at_end = failure.clone();
    let watches = node.state().watches.clone();
    let graceful = async move {
        let failed = async move {
            match failure {
                Some(mut rx) => {
                    if rx.wait_for(|f| f.is_some()).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = failed => tracing::error!("replication failed; shutting this member down"),
        }
        // Not ready from the signal on: load balancers stop sending new requests
        // while the ones in flight finish.
        ready.store(false, Ordering::Release);
        // Open event streams end now (each gets its resume zxid).
        watches.close();
        let _ = signalled_tx.send(true);
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let serve = tokio::spawn(async move { serve.await });
    let serve_abort = serve.abort_handle();
    let served = tokio::select! {
        result = serve => Some(result),
        _ = async {
            let _ = signalled_rx.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => None,
    };
    match served {
        Some(Ok(Ok(()))) => tracing::info!("HTTP server stopped"),
        Some(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server failed"),
        Some(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        None => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "grace period over; dropping open requests"
            );
            serve_abort.abort();
        }
    }
    node.shutdown().await?;
    match failed_at_end.and_then(|rx| rx.borrow().clone()) {
        Some(why) => Err(ServerError::Internal(format!("replication failed: {why}"))),
        None => Ok(()),
    }
}

/// Starts the peer transport and the ZAB driver of a cluster member.
async fn start_cluster(
    config: &Config,
    store: Arc<Store>,
    input: crate::applier::ApplierInput,
    view: crate::applier::AppliedView,
    tracker: Arc<SessionTracker>,
    metrics: &Metrics,
    stop: watch::Receiver<bool>,
) -> Result<(ZabProposer, PeerHandle<PeerMsg>), ServerError> {
    let listener = TcpListener::bind(&config.peer_addr).await?;
    let peer_config = config.peer_config();
    let (peers, events) = PeerNetwork::<PeerMsg>::start(peer_config, listener)
        .map_err(|e| ServerError::Internal(format!("peer transport: {e}")))?;
    metrics.register_collector(Box::new(PeerCollector(peers.metrics_reader())));
    let zab = keeper_zab::Config {
        heartbeat_interval_ticks: crate::config::HEARTBEAT_INTERVAL_TICKS,
        election_timeout_ticks: config.election_timeout_ticks,
        step_down_ticks: config.step_down_ticks,
        max_batch_entries: config.max_batch_entries,
        max_batch_bytes: config.max_batch_bytes,
        max_sync_batch_bytes: config.max_batch_bytes,
        max_diff_bytes: config.max_diff_bytes,
        ..keeper_zab::Config::default()
    };
    let seed = config.id
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let options = ZabOptions {
        id: config.id,
        members: config
            .peers
            .iter()
            .map(|p| MemberAddr {
                id: p.id,
                client_addr: if p.id == config.id {
                    config.client_addr.clone()
                } else {
                    String::new()
                },
                peer_addr: p.addr.clone(),
            })
            .collect(),
        snapshot_dir: config.data_dir.join("snapshots"),
        tick_ms: config.tick_ms,
        zab,
        max_inflight_proposals: config.max_inflight_proposals,
        max_batch_entries: config.max_batch_entries,
        max_batch_bytes: config.max_batch_bytes,
        max_pending_forwards: config.max_pending_forwards,
        keepalive: KeepaliveBounds {
            confirm_wait: Duration::from_millis(config.keepalive_confirm_wait_ms),
            leader_silence: Duration::from_millis(config.keepalive_leader_silence_ms),
            max_batch: config.max_keepalive_batch,
            max_waiting: config.max_pending_keepalives,
        },
        snapshot_chunk_bytes: config.snapshot_chunk_bytes,
        snapshot_window_bytes: config.snapshot_window_bytes,
        snapshot_stall_timeout_ms: config.snapshot_stall_timeout_ms,
        snapshot_install_stash_bytes: config.snapshot_install_stash_bytes,
        log_retain_entries: config.log_retain_entries,
        read_barrier_wait_ms: config.min_zxid_wait_ms,
        seed,
    };
    tracing::info!(id = config.id, peers = config.peers.len(), peer_addr = %config.peer_addr, "starting as a cluster member");
    let parts = DriverParts {
        store,
        applier: input,
        view,
        peers: peers.clone(),
        events,
        hooks: tracker,
    };
    let proposer = ZabProposer::start(parts, options, stop).map_err(ServerError::Internal)?;
    Ok((proposer, peers))
}
