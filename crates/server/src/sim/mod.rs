//! The whole-member simulator (VOPR-style): seeded, deterministic,
//! single-threaded runs of 3- or 5-member clusters in which every member is
//! the ZAB core, the driver's decision state (the same plain-state modules
//! the tokio driver executes: `log_sync::Durability`, `batching::BatchQueue`,
//! `keepalive::Keepalives`, `sessions::Leases`), its forwarding, waiters and
//! snapshot transfer state, the applier, and a store running the real apply
//! code (`keeper_store::sim_disk`) on a disk whose crash loses what was not
//! synced: the txn log's unsynced tail and every apply since the last flush
//! (applies skip RocksDB's WAL).
//!
//! Faults: crashes, partitions, broken links, slow and stalled disks, long
//! snapshot transfers (small chunks and windows), and clients that write and
//! keep sessions alive through random members. Checks after every step: the
//! ZAB invariants (the core simulator's checkers), equal applied zxids have
//! equal tree digests, no acknowledged write is lost, and the session
//! contract ([`contract`]). A failure reports its seed and the command that
//! reproduces it (`member-sim`). See docs/testing.md.

pub mod contract;
mod member;
#[cfg(test)]
mod tests;
mod world;

pub use keeper_zab::sim::check::Violation;
pub use member::Mutation;
pub use world::{run_seed, Failure, MemberCounts, MemberPlan, SeedReport, SimOptions, TICK_MS};
