//! The seeded cluster simulator: the proof that the core keeps ZAB's
//! guarantees under crashes, partitions, message loss and slow disks.
//!
//! One seed = one deterministic, single-threaded run of a 3- or 5-member
//! cluster driving the real [`Core`](crate::Core) over [`MemLog`](crate::MemLog)s:
//! a fault phase with the seed's own fault mix ([`FaultPlan`]) and client
//! load, then a liveness phase where every fault heals and a new proposal
//! must commit everywhere and all members must converge, within a bound.
//! Every invariant (see [`check`]) is judged at the step that could break it.
//! A failing seed reports a one-line command that reproduces it.

pub mod check;
mod faults;
mod network;
#[cfg(test)]
mod tests;
mod world;

pub use faults::{FaultCounts, FaultPlan};
pub use network::{Network, Packet};
pub use world::{run_seed, Failure, FailureKind, SeedReport, SimOptions};
