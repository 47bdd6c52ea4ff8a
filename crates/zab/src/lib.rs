//! `keeper-zab`: the ZAB atomic broadcast core of Keeper, and the seeded
//! simulator that checks it.
//!
//! The core ([`Core`]) is a sans-IO state machine: it reads no clock, does no
//! I/O and spawns nothing. Time comes in as [`Core::tick`], messages as
//! [`Core::step`], client writes as [`Core::propose`], disk completions as
//! [`Core::on_persisted`]. Every effect comes back as a list of [`Action`]s,
//! which the driver executes **in order** (see [`Action`] for what must be
//! durable before what may be sent). The log is read through the read-only
//! [`LogReader`] trait; all writes are actions. See `docs/zab.md` for the
//! phases and what is persisted when.
//!
//! # A driver in a few lines
//!
//! A one-member ensemble, driven by hand. A real driver does the same in a
//! loop: tick on a timer, step on every received message, and run the
//! actions (send over the peer link, append and fsync, persist epochs,
//! apply commits).
//!
//! ```
//! use bytes::Bytes;
//! use keeper_zab::{Action, Bootstrap, Config, Core, Member, MemberKind, MemLog, Role, Zxid};
//!
//! // The driver owns the log; the core only reads it.
//! let mut log = MemLog::new();
//! let boot = Bootstrap {
//!     id: 1,
//!     members: vec![Member { id: 1, kind: MemberKind::Participant }],
//!     accepted_epoch: 0, // read from disk on a restart
//!     current_epoch: 0,
//!     applied_zxid: Zxid::ZERO,
//!     seed: 42, // randomizes election timeouts
//! };
//! let mut core = Core::new(Config::default(), boot, &log)?;
//!
//! // Execute actions in order. Epoch persistence and truncation are
//! // synchronous; appends may complete later (reported via on_persisted).
//! let mut applied = Vec::new();
//! let mut run = |actions: Vec<Action>, log: &mut MemLog, applied: &mut Vec<Bytes>| {
//!     let mut appended = None;
//!     for a in actions {
//!         match a {
//!             Action::Append { entries } => {
//!                 appended = entries.last().map(|e| e.zxid);
//!                 log.append(&entries).unwrap();
//!             }
//!             Action::Commit { upto } => {
//!                 // Read committed entries back from our own log and apply them.
//!                 let done = applied.len() as u32;
//!                 for e in log.range(Zxid::new(1, done), upto) {
//!                     applied.push(e.data.clone());
//!                 }
//!             }
//!             Action::Send { .. } => { /* no peers here */ }
//!             _ => { /* persist epochs (fsync), role changes, reads ... */ }
//!         }
//!     }
//!     appended
//! };
//!
//! // A lone member elects itself and becomes an established leader.
//! let actions = core.tick(&log)?;
//! run(actions, &mut log, &mut applied);
//! assert_eq!(core.role(), Role::Leading);
//! assert!(core.serving());
//!
//! // Propose a batch: one append (one fsync) for both entries.
//! let p = core.propose(&log, vec![Bytes::from("a"), Bytes::from("b")])?;
//! let last = run(p.actions, &mut log, &mut applied).unwrap();
//! assert!(applied.is_empty(), "nothing is committed before it is durable");
//!
//! // The fsync finished: tell the core. It commits (a quorum of one).
//! let actions = core.on_persisted(&log, last)?;
//! run(actions, &mut log, &mut applied);
//! assert_eq!(applied, vec![Bytes::from("a"), Bytes::from("b")]);
//!
//! // A read barrier: on a lone leader it is confirmed at once.
//! assert_eq!(core.read_index(7), vec![Action::ReadReady { ctx: 7, zxid: last }]);
//! # Ok::<(), keeper_zab::ZabError>(())
//! ```

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
pub use crate::message::{
    wire_bytes, Entry, Message, NodeId, ServerState, Vote, ENTRY_OVERHEAD_BYTES,
};
pub use crate::status::{FollowerStatus, Status};
pub use crate::zxid::Zxid;
