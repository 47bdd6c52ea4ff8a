//! Assembly of one member: open the store, replay, start the write path,
//! sessions and reaper, serve HTTP, and shut all of it down in order.
//!
//! Start order: `Store::open` -> [`Applier::start`] (replays the log above
//! `last_applied`) -> [`StandaloneProposer::start`] (new epoch, persisted) ->
//! session tracker rebuilt from the store -> background tasks -> ready.
//!
//! Shutdown order ([`Node::shutdown`]): not ready -> background tasks stop ->
//! the proposer stops taking txns and flushes what is queued -> the applier
//! drains and exits -> the last `Arc<Store>` drops (RocksDB closes).

use crate::applier::{Applier, ApplierOptions};
use crate::config::{Config, ConfigError};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::proposer::Proposer;
use crate::reaper;
use crate::sessions::{self, Sessions};
use crate::standalone::{StandaloneOptions, StandaloneProposer};
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

/// Committed batches queued between the log writer and the applier.
const APPLIER_QUEUE_BATCHES: usize = 64;

/// A running member (without its HTTP listener): see the module docs.
pub struct Node {
    state: AppState,
    proposer: Arc<StandaloneProposer>,
    applier_thread: std::thread::JoinHandle<()>,
    stop_tasks: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Validates `config`, opens the store, replays the log and starts the
    /// write path and background tasks. Serving can begin when this returns.
    pub async fn start(config: Config) -> Result<Node, ServerError> {
        config.validate()?;
        if !config.is_standalone() {
            tracing::warn!(
                "--peers given, but replication is not available yet: running standalone"
            );
        }
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
                },
            )?;
            let proposer = StandaloneProposer::start(
                store.clone(),
                applier.input,
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
            let sessions = store.sessions()?;
            Ok::<_, ServerError>((store, applier.view, applier.thread, proposer, sessions))
        })
        .await
        .map_err(|e| ServerError::Internal(format!("startup task failed: {e}")))??;
        let (store, view, applier_thread, proposer, existing_sessions) = started;
        let proposer = Arc::new(proposer);
        let dyn_proposer: Arc<dyn Proposer> = proposer.clone();
        let sessions = Arc::new(Sessions::new(
            dyn_proposer.clone(),
            metrics.clone(),
            &existing_sessions,
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
        let state = AppState {
            config: Arc::new(config),
            store,
            proposer: dyn_proposer,
            applied: view,
            sessions,
            metrics,
            ready: Arc::new(AtomicBool::new(true)),
        };
        Ok(Node {
            state,
            proposer,
            applier_thread,
            stop_tasks,
            tasks,
        })
    }

    /// The HTTP API of this member.
    pub fn app(&self) -> axum::Router {
        http::app(self.state.clone())
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
            proposer,
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
        proposer.close().await;
        let store = state.store.clone();
        drop(state);
        drop(proposer);
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
    let graceful = async move {
        shutdown.await;
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
    node.shutdown().await
}
