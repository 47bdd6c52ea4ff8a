//! The simulator must catch protocol bugs: each test switches on one
//! test-only mutation of the core and requires some seed to fail with the
//! invariant that mutation breaks. This proves the checkers are not vacuous.

use super::{run_seed, FailureKind, SimOptions};
use crate::core::Mutation;

/// Runs seeds until one fails; returns the failure's invariant name.
fn first_failure(mutation: Mutation, seeds: u64) -> Option<(u64, String)> {
    let opts = SimOptions {
        mutation: Some(mutation),
        ..SimOptions::default()
    };
    for seed in 0..seeds {
        let r = run_seed(seed, &opts);
        match r.failure {
            Some(f) if f.kind == FailureKind::Safety => return Some((seed, f.invariant)),
            _ => {}
        }
    }
    None
}

#[test]
fn commit_without_quorum_is_caught() {
    let found = first_failure(Mutation::CommitWithoutQuorum, 500);
    let (seed, inv) = found.expect("committing without a quorum must break an invariant");
    println!("caught at seed {seed}: {inv}");
    assert!(
        [
            "QuorumDurability",
            "PrefixConsistency",
            "PrimaryIntegrity",
            "TruncateCommitted",
            "CommitBeyondPersisted"
        ]
        .contains(&inv.as_str()),
        "unexpected invariant {inv}"
    );
}

#[test]
fn acking_before_persisting_is_caught() {
    let (seed, inv) =
        first_failure(Mutation::AckBeforePersist, 2_000).expect("ack before fsync must be caught");
    println!("caught at seed {seed}: {inv}");
    assert!([
        "QuorumDurability",
        "PrefixConsistency",
        "PrimaryIntegrity",
        "TruncateCommitted"
    ]
    .contains(&inv.as_str()));
}

#[test]
fn reusing_an_epoch_is_caught() {
    let (seed, inv) =
        first_failure(Mutation::ReuseEpoch, 2_000).expect("epoch reuse must be caught");
    println!("caught at seed {seed}: {inv}");
}

#[test]
fn follower_reads_from_local_state_are_caught() {
    let (seed, inv) =
        first_failure(Mutation::ReadLocally, 2_000).expect("stale reads must be caught");
    println!("caught at seed {seed}: {inv}");
    assert_eq!(inv, "ReadIndexLinearizable");
}
