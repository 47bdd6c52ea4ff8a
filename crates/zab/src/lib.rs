//! `keeper-zab`: the ZAB atomic broadcast core of Keeper.
//!
//! This crate is a sans-IO state machine: it reads no clock and does no I/O.
//! The server's driver feeds it ticks and messages and executes the actions it
//! returns. See `docs/zab.md`.

mod action;
mod config;
mod core;
mod error;
mod log;
mod mem_log;
mod message;
pub mod sim;
mod status;
mod zxid;

pub use crate::action::{Action, Role};
pub use crate::config::{Bootstrap, Config, Member, MemberKind};
pub use crate::core::{Core, Proposed};
pub use crate::error::{LogError, ZabError};
pub use crate::log::LogReader;
pub use crate::mem_log::MemLog;
pub use crate::message::{Entry, Message, NodeId, ServerState, Vote};
pub use crate::status::{FollowerStatus, Status};
pub use crate::zxid::Zxid;
