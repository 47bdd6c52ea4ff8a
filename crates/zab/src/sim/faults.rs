//! The per-seed fault mix (swarm testing): each seed turns each fault kind on
//! or off and draws its intensity, so different seeds stress different
//! combinations instead of all seeds averaging over everything.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What one seed does to the cluster while faults are on.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Members in the cluster (3 or 5).
    pub nodes: usize,
    /// Ticks of the fault phase; then everything heals.
    pub fault_ticks: u64,
    /// Message delay is uniform in 1..=max_delay_ticks.
    pub max_delay_ticks: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Per tick: probability that one random link breaks (dropping its queue).
    pub link_break: f64,
    /// Per tick: probability that a partition starts (if none is active).
    pub partition: f64,
    /// Partition length in ticks: uniform in 1..=max_partition_ticks.
    pub max_partition_ticks: u64,
    /// Per tick: probability that one random live member crashes.
    pub crash: f64,
    /// Down time in ticks: uniform in 1..=max_down_ticks.
    pub max_down_ticks: u64,
    /// An append becomes durable 0..=max_fsync_ticks after it is issued.
    pub max_fsync_ticks: u64,
    /// Per tick and member: probability of compacting the log.
    pub compaction: f64,
    /// Entries kept behind the applied point when compacting.
    pub compaction_keep: usize,
    /// The core's epoch counter limit (small values force epoch changes).
    pub epoch_counter_limit: u32,
    /// The core's DIFF limit (small values force SNAP).
    pub max_diff_entries: usize,
    /// The core's DIFF message size.
    pub max_sync_batch_entries: usize,
    /// The core's bound on proposal batches in bytes (entries here are 8-byte
    /// payloads, 24 bytes as counted).
    pub max_batch_bytes: usize,
    /// The core's DIFF message size in bytes (small values split DIFFs by
    /// bytes rather than by count).
    pub max_sync_batch_bytes: usize,
    /// The core's DIFF limit in bytes (small values force SNAP).
    pub max_diff_bytes: usize,
    /// Per tick: probability of a client proposal.
    pub propose: f64,
    /// Entries per proposal: uniform in 1..=max_batch.
    pub max_batch: usize,
    /// Per tick: probability of a read barrier on a random member.
    pub read: f64,
}

impl FaultPlan {
    /// Draws the plan of one seed.
    pub fn draw(seed: u64, rng: &mut ChaCha8Rng) -> FaultPlan {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let on = |p: f64, rng: &mut ChaCha8Rng| rng.gen_bool(p);
        let loss = if on(0.5, rng) {
            rng.gen_range(0.0..0.08)
        } else {
            0.0
        };
        let link_break = if on(0.4, rng) {
            rng.gen_range(0.0..0.03)
        } else {
            0.0
        };
        let partition = if on(0.5, rng) {
            rng.gen_range(0.0..0.03)
        } else {
            0.0
        };
        let crash = if on(0.5, rng) {
            rng.gen_range(0.0..0.03)
        } else {
            0.0
        };
        let compaction = if on(0.5, rng) {
            rng.gen_range(0.0..0.1)
        } else {
            0.0
        };
        let epoch_counter_limit = if on(0.25, rng) {
            rng.gen_range(3..40)
        } else {
            0xFFFF_F000
        };
        let max_diff_entries = if on(0.25, rng) {
            rng.gen_range(1..20)
        } else {
            100_000
        };
        // Byte bounds come from the seed, not the generator, so every other
        // draw of a seed stays what it was before they existed.
        let entry = crate::message::wire_bytes(8);
        let (max_batch_bytes, max_sync_batch_bytes) = if seed % 3 == 0 {
            (4 * entry, (4 + (seed / 3) % 4) as usize * entry)
        } else {
            (8 << 20, 8 << 20)
        };
        let max_diff_bytes = if seed % 5 == 1 {
            max_sync_batch_bytes + ((seed / 5) % 20) as usize * entry
        } else {
            128 << 20
        };
        FaultPlan {
            nodes,
            max_batch_bytes,
            max_sync_batch_bytes,
            max_diff_bytes,
            fault_ticks: rng.gen_range(100..400),
            max_delay_ticks: rng.gen_range(1..5),
            loss,
            link_break,
            partition,
            max_partition_ticks: rng.gen_range(5..80),
            crash,
            max_down_ticks: rng.gen_range(1..80),
            max_fsync_ticks: rng.gen_range(0..4),
            compaction,
            compaction_keep: rng.gen_range(0..10),
            epoch_counter_limit,
            max_diff_entries,
            max_sync_batch_entries: rng.gen_range(1..8),
            propose: rng.gen_range(0.05..0.9),
            max_batch: rng.gen_range(1..5),
            read: if on(0.5, rng) {
                rng.gen_range(0.0..0.3)
            } else {
                0.0
            },
        }
    }
}

/// How many faults of each kind a run injected (and a few protocol events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Messages dropped by random loss.
    pub lost: u64,
    /// Messages dropped because a partition separated the endpoints.
    pub partitioned: u64,
    /// Messages dropped because their link broke or an endpoint crashed.
    pub broken_in_flight: u64,
    /// Links broken.
    pub link_breaks: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Members crashed (losing unpersisted log entries).
    pub crashes: u64,
    /// Members restarted from disk.
    pub restarts: u64,
    /// Log compactions.
    pub compactions: u64,
    /// Snapshots streamed (SNAP sync).
    pub snapshots: u64,
    /// Log truncations (TRUNC sync).
    pub truncations: u64,
    /// Leaders established.
    pub leaders: u64,
    /// Proposals refused because the epoch's counter ran out.
    pub epoch_exhausted: u64,
    /// Entries proposed and accepted by a leader.
    pub proposed: u64,
    /// Read barriers confirmed / failed.
    pub reads_ready: u64,
    /// Read barriers failed.
    pub reads_failed: u64,
}

impl FaultCounts {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &FaultCounts) {
        self.lost += o.lost;
        self.partitioned += o.partitioned;
        self.broken_in_flight += o.broken_in_flight;
        self.link_breaks += o.link_breaks;
        self.partitions += o.partitions;
        self.crashes += o.crashes;
        self.restarts += o.restarts;
        self.compactions += o.compactions;
        self.snapshots += o.snapshots;
        self.truncations += o.truncations;
        self.leaders += o.leaders;
        self.epoch_exhausted += o.epoch_exhausted;
        self.proposed += o.proposed;
        self.reads_ready += o.reads_ready;
        self.reads_failed += o.reads_failed;
    }
}

impl std::fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lost={} partitioned={} broken_in_flight={} link_breaks={} partitions={} crashes={} restarts={} \
             compactions={} snapshots={} truncations={} leaders={} epoch_exhausted={} proposed={} \
             reads_ready={} reads_failed={}",
            self.lost,
            self.partitioned,
            self.broken_in_flight,
            self.link_breaks,
            self.partitions,
            self.crashes,
            self.restarts,
            self.compactions,
            self.snapshots,
            self.truncations,
            self.leaders,
            self.epoch_exhausted,
            self.proposed,
            self.reads_ready,
            self.reads_failed
        )
    }
}
