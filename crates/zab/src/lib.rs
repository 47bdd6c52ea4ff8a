//! `keeper-zab`: the ZAB atomic broadcast core of Keeper.
//!
//! This crate is a sans-IO state machine: it reads no clock and does no I/O.
//! The server's driver feeds it ticks and messages and executes the actions it
//! returns. See `docs/zab.md`.

mod zxid;

pub use zxid::Zxid;
