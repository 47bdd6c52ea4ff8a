//! `keeper-client`: an async client for Keeper's HTTP API (`docs/http-api.md`).
//!
//! It speaks HTTP/JSON only and shares no code with the server. What it adds
//! on top of the wire API:
//! - **Failover** across the configured members: connect errors, lost answers
//!   to reads, `503 Unavailable` and `504 Timeout` to reads move on to the next
//!   member, with bounded attempts and backoff ([`ClientConfig`]). A write is
//!   repeated only when it provably reached no server; otherwise a lost answer
//!   is [`Error::ConnectionLoss`]: outcome unknown.
//! - **No going back in time**: the client remembers the highest
//!   `X-Keeper-Zxid` it has seen and sends it as `X-Keeper-Min-Zxid` on every
//!   request (keepalives and health probes excepted), so a lagging member
//!   never shows it older state.
//! - **Sessions** kept alive in the background ([`Session`]).
//! - **Locks, semaphores and leader election** ([`Client::lock`],
//!   [`Client::semaphore`], [`Client::election`]) whose guards keep their
//!   session alive and report its loss ([`LockGuard::lost`]), and **fenced
//!   writes** ([`Client::set_fenced`], [`Fence`]) the servers refuse once the
//!   lock or leadership is lost.
//! - Typed values ([`Stat`], [`Node`], [`CreateMode`], [`Op`], ...) and one
//!   error enum ([`Error`]) with the server's codes.
//!
//! ```no_run
//! use std::time::Duration;
//! use keeper_client::{Client, ClientConfig, CreateMode, CreateOptions, Error, Op, ANY_VERSION};
//!
//! # async fn demo() -> Result<(), Error> {
//! let client = Client::new(ClientConfig::new(["http://127.0.0.1:7181", "http://127.0.0.1:7182"]))?;
//!
//! client.create("/app", "v1", CreateOptions::persistent()).await?;
//! let node = client.get("/app").await?;
//! assert_eq!(&node.data[..], b"v1");
//! client.set("/app", "v2", node.stat.version).await?;
//!
//! // An ephemeral node lives as long as the session.
//! let session = client.session(Duration::from_secs(10)).await?;
//! let me = client
//!     .create("/app/member-", "", CreateOptions::ephemeral_sequential(session.id()))
//!     .await?;
//! println!("joined as {}", me.path);
//!
//! // All or nothing.
//! client
//!     .multi(vec![
//!         Op::check("/app", ANY_VERSION),
//!         Op::create("/app/flag", "on", CreateOptions::mode(CreateMode::Persistent)),
//!     ])
//!     .await?;
//!
//! match client.get("/missing").await {
//!     Err(Error::NoNode(detail)) => println!("no such node: {detail}"),
//!     other => println!("{other:?}"),
//! }
//! session.close().await?; // deletes /app/member-000000000N
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod error;
mod recipes;
mod session;
mod transport;
mod types;
mod watch;

pub use client::{Client, Consistency, MAX_CHILDREN_PAGES};
pub use config::{
    ClientConfig, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_ENDPOINT, DEFAULT_MAX_ATTEMPTS, DEFAULT_REQUEST_TIMEOUT,
};
pub use error::{ApiError, Error, ErrorCode, Result};
pub use recipes::{
    Election, LeaderInfo, Leadership, LockGuard, RecipeOptions, SemaphoreGuard,
    DEFAULT_RECIPE_SESSION_TIMEOUT, DEFAULT_WAIT_PER_REQUEST,
};
pub use session::{
    LossReason, Session, SessionLoss, SessionState, KEEPALIVES_PER_TIMEOUT,
    KEEPALIVE_RETRIES_PER_INTERVAL, MIN_KEEPALIVE_PAUSE,
};
pub use transport::{MIN_ZXID_HEADER, ZXID_HEADER};
pub use types::{
    ChildrenPage, ClusterInfo, CreateMode, CreateOptions, Created, Fence, Health, Member, Node, Op,
    OpResult, Role, SessionInfo, Stat, TxnRequest, TxnResponse, ANY_VERSION,
};
pub use watch::{EventType, OneShotWatch, WatchEvent, WatchKind, WatchOptions};
