//! `keeper-server`: the tokio driver, sessions and the HTTP API of Keeper.
//!
//! Follow a write through the files:
//! [`http`] (request -> `Txn`) -> [`proposer`] (the one write path's trait) ->
//! [`standalone`] (one member: group-committed log append) or [`zab_driver`]
//! (a cluster member: ZAB over [`peer`] links) -> [`applier`]
//! (`Store::apply` in zxid order, applied-zxid watch, change events, answer).
//! -> [`watches`] (the applied changes to one-shot watches and event streams).
//! Around it: [`sessions`] (expiry tracking, create/close through the write
//! path), [`reaper`] (containers and ttl nodes), [`recipes`] (locks), [`config`], [`error`]
//! (the API's one error type), [`metrics`], [`backup`] (backup files and restore),
//! and [`node`] (start, serve, shut down).

pub mod applier;
pub mod backup;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod proposer;
pub mod reaper;
pub mod recipes;
pub mod sessions;
pub mod sim;
pub mod standalone;
pub mod watches;
pub mod zab_driver;

pub use config::{Config, ConfigError, PeerSpec};
pub use error::{ApiError, ErrorCode};
pub use http::{app, AppState};
pub use node::{run, Node, ServerError};
pub use proposer::{ClusterStatus, ProposeError, Proposer, Role};
