//! The nemesis: faults injected into a running [`Cluster`] on a schedule drawn
//! from a seed, each one recorded in the history and undone before the next.
//!
//! Process faults use the harness (`kill -9`, restart, `SIGSTOP`/`SIGCONT`);
//! network faults use the proxies of [`crate::proxy`] (blackholes both ways or
//! one way, delays, connection resets). A schedule names one kind of fault, or
//! `mixed`, which draws a kind per round and sometimes overlays a network fault
//! and a process fault (combinations).
//!
//! A slow *disk* is left out: `dm-delay` needs the kernel's device-mapper
//! driver, which this machine's kernel does not have (no `device-mapper` in
//! `/proc/devices`, no `/dev/mapper/control`, no modules to load), although loop
//! devices work; a delaying FUSE file system would be a FUSE server of our own.
//! The `slow-member` fault (a member stopped and resumed every few hundred ms)
//! stands in for it: the member's fsyncs, acks and heartbeats all stall the way a
//! slow disk stalls them.
//!
//! The same seed gives the same choices (kinds, members, durations); which member
//! is leader at that moment comes from the real cluster, so a rerun injects the
//! same schedule but is not bit-for-bit the same run.

use crate::history::Recorder;
use crate::Cluster;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;
use tokio::time::Instant;

/// A nemesis schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Schedule {
    KillLeader,
    KillRandom,
    KillMajority,
    PauseLeader,
    IsolateLeader,
    IsolateKeepaliveFollower,
    FlappingPartition,
    OneWayPartition,
    Delay,
    ResetLinks,
    SlowMember,
    RestartCluster,
    Mixed,
}

impl Schedule {
    /// Every schedule, `mixed` last.
    pub const ALL: [Schedule; 13] = [
        Schedule::KillLeader,
        Schedule::KillRandom,
        Schedule::KillMajority,
        Schedule::PauseLeader,
        Schedule::IsolateLeader,
        Schedule::IsolateKeepaliveFollower,
        Schedule::FlappingPartition,
        Schedule::OneWayPartition,
        Schedule::Delay,
        Schedule::ResetLinks,
        Schedule::SlowMember,
        Schedule::RestartCluster,
        Schedule::Mixed,
    ];

    /// The schedule's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::KillLeader => "kill-leader",
            Schedule::KillRandom => "kill-random",
            Schedule::KillMajority => "kill-majority",
            Schedule::PauseLeader => "pause-leader",
            Schedule::IsolateLeader => "isolate-leader",
            Schedule::IsolateKeepaliveFollower => "isolate-keepalive-follower",
            Schedule::FlappingPartition => "flapping-partition",
            Schedule::OneWayPartition => "one-way-partition",
            Schedule::Delay => "delay",
            Schedule::ResetLinks => "reset-links",
            Schedule::SlowMember => "slow-member",
            Schedule::RestartCluster => "restart-cluster",
            Schedule::Mixed => "mixed",
        }
    }

    /// Parses a name given by [`Schedule::name`].
    pub fn parse(name: &str) -> Option<Schedule> {
        Schedule::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A running nemesis over one cluster.
pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    rec: Recorder,
    rng: ChaCha8Rng,
    /// No new fault starts after this.
    until: Instant,
    session_timeout_ms: u64,
    http: reqwest::Client,
}

impl<'a> Nemesis<'a> {
    /// A nemesis drawing from `seed`, starting no fault after `until`.
    pub fn new(
        cluster: &'a mut Cluster,
        rec: Recorder,
        seed: u64,
        until: Instant,
        session_timeout_ms: u64,
    ) -> Self {
        Nemesis {
            cluster,
            rec,
            rng: ChaCha8Rng::seed_from_u64(seed),
            until,
            session_timeout_ms,
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(400))
                .connect_timeout(Duration::from_millis(200))
                .build()
                .expect("reqwest client"),
        }
    }

    /// Runs `schedule` until `until`: a quiet spell, a fault, its undo, again.
    pub async fn run(&mut self, schedule: Schedule) {
        loop {
            let quiet = Duration::from_millis(self.rng.gen_range(1_000..2_500));
            tokio::time::sleep(quiet).await;
            if Instant::now() + Duration::from_millis(500) >= self.until {
                return;
            }
            let kind = if schedule == Schedule::Mixed {
                if self.rng.gen_bool(0.3) {
                    self.combination().await;
                    continue;
                }
                Schedule::ALL[self.rng.gen_range(0..Schedule::ALL.len() - 1)]
            } else {
                schedule
            };
            self.fault(kind).await;
        }
    }

    /// The member every member's view agrees leads, if any (paused and stopped
    /// members are not asked).
    pub async fn leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None; // (epoch, id)
        for m in &self.cluster.members {
            if !m.is_started() || m.is_paused() {
                continue;
            }
            let Ok(resp) = self
                .http
                .get(format!("{}/v1/cluster", m.url()))
                .send()
                .await
            else {
                continue;
            };
            let Ok(v) = resp.json::<serde_json::Value>().await else {
                continue;
            };
            if v["role"] == "leader" {
                let epoch = v["epoch"].as_u64().unwrap_or(0);
                if best.is_none_or(|(e, _)| epoch > e) {
                    best = Some((epoch, m.id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    async fn leader_or_any(&mut self) -> u64 {
        match self.leader().await {
            Some(l) => l,
            None => self.any_member(),
        }
    }

    fn any_member(&mut self) -> u64 {
        let ids = self.cluster.ids();
        ids[self.rng.gen_range(0..ids.len())]
    }

    fn ms(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(self.rng.gen_range(range))
    }

    /// Sleeps `d`, but not much past the end of the run.
    async fn hold(&self, d: Duration) {
        let latest = self.until + Duration::from_secs(1);
        let end = (Instant::now() + d).min(latest.max(Instant::now()));
        tokio::time::sleep_until(end).await;
    }

    fn net_all(&self) -> Vec<u64> {
        self.cluster.ids()
    }

    /// Injects one fault of `kind`, holds it, undoes it.
    pub async fn fault(&mut self, kind: Schedule) {
        let t = self.session_timeout_ms;
        match kind {
            Schedule::KillLeader | Schedule::KillRandom => {
                let id = if kind == Schedule::KillLeader {
                    self.leader_or_any().await
                } else {
                    self.any_member()
                };
                let d = self.ms(1_000..4_000);
                let f = self.rec.start_fault(
                    kind.name(),
                    format!("kill -9 member {id}, restart after {d:?}"),
                );
                self.cluster.kill(id);
                self.hold(d).await;
                self.cluster.spawn(id);
                self.rec.end_fault(f);
            }
            Schedule::KillMajority => {
                let mut ids = self.cluster.ids();
                ids.shuffle(&mut self.rng);
                ids.truncate(ids.len() / 2 + 1);
                let d = self.ms(2_000..5_000);
                let f = self.rec.start_fault(
                    kind.name(),
                    format!("kill -9 members {ids:?}, restart after {d:?}"),
                );
                for id in &ids {
                    self.cluster.kill(*id);
                }
                self.hold(d).await;
                for id in &ids {
                    self.cluster.spawn(*id);
                }
                self.rec.end_fault(f);
            }
            Schedule::PauseLeader => {
                let id = self.leader_or_any().await;
                let d = Duration::from_millis(t) + self.ms(1_000..2_500);
                let f = self.rec.start_fault(
                    kind.name(),
                    format!("SIGSTOP member {id} for {d:?} (session timeout {t} ms)"),
                );
                self.cluster.pause(id);
                self.hold(d).await;
                self.cluster.resume(id);
                self.rec.end_fault(f);
            }
            Schedule::IsolateLeader | Schedule::IsolateKeepaliveFollower => {
                let leader = self.leader_or_any().await;
                let id = if kind == Schedule::IsolateLeader {
                    leader
                } else {
                    let followers: Vec<u64> = self
                        .cluster
                        .ids()
                        .into_iter()
                        .filter(|m| *m != leader)
                        .collect();
                    *followers.choose(&mut self.rng).unwrap_or(&leader)
                };
                let d = Duration::from_millis(t) + self.ms(1_500..3_500);
                let what = if kind == Schedule::IsolateLeader {
                    "leader"
                } else {
                    "follower (home of a session client's keepalives)"
                };
                let f = self
                    .rec
                    .start_fault(kind.name(), format!("isolate {what} member {id} for {d:?}"));
                let all = self.net_all();
                if let Some(net) = self.cluster.net() {
                    net.isolate(id, &all);
                }
                self.hold(d).await;
                self.heal_net();
                self.rec.end_fault(f);
            }
            Schedule::FlappingPartition => {
                let d = self.ms(4_000..8_000);
                let f = self
                    .rec
                    .start_fault(kind.name(), format!("flapping partition for {d:?}"));
                let end = Instant::now() + d;
                let mut steps = Vec::new();
                while Instant::now() < end && Instant::now() < self.until {
                    let id = self.any_member();
                    let all = self.net_all();
                    if let Some(net) = self.cluster.net() {
                        net.isolate(id, &all);
                    }
                    let on = self.ms(300..900);
                    steps.push(format!("{id}:{}ms", on.as_millis()));
                    tokio::time::sleep(on).await;
                    self.heal_net();
                    let off = self.ms(100..600);
                    tokio::time::sleep(off).await;
                }
                self.heal_net();
                self.rec.end_fault(f);
                let _ = steps;
            }
            Schedule::OneWayPartition => {
                let leader = self.leader_or_any().await;
                let outbound = self.rng.gen_bool(0.5);
                let d = self.ms(2_000..5_000);
                let f = self.rec.start_fault(
                    kind.name(),
                    format!(
                        "drop everything member {leader} (leader) {} for {d:?}",
                        if outbound { "sends" } else { "receives" }
                    ),
                );
                if let Some(net) = self.cluster.net() {
                    for other in self.cluster.ids() {
                        if other != leader {
                            if outbound {
                                net.drop_one_way(leader, other);
                            } else {
                                net.drop_one_way(other, leader);
                            }
                        }
                    }
                }
                self.hold(d).await;
                self.heal_net();
                self.rec.end_fault(f);
            }
            Schedule::Delay => {
                let id = self.any_member();
                let delay = self.rng.gen_range(50..400);
                let d = self.ms(3_000..6_000);
                let f = self.rec.start_fault(
                    kind.name(),
                    format!("delay every link of member {id} by {delay} ms for {d:?}"),
                );
                if let Some(net) = self.cluster.net() {
                    for other in self.cluster.ids() {
                        if other != id {
                            net.delay(id, other, delay);
                            net.delay(other, id, delay);
                        }
                    }
                }
                self.hold(d).await;
                self.heal_net();
                self.rec.end_fault(f);
            }
            Schedule::ResetLinks => {
                let d = self.ms(3_000..6_000);
                let f = self
                    .rec
                    .start_fault(kind.name(), format!("reset random peer links for {d:?}"));
                let end = Instant::now() + d;
                let mut resets = 0;
                while Instant::now() < end && Instant::now() < self.until {
                    let a = self.any_member();
                    let b = self.any_member();
                    if let Some(net) = self.cluster.net() {
                        resets += net.reset(a, b);
                    }
                    let gap = self.ms(200..700);
                    tokio::time::sleep(gap).await;
                }
                let _ = resets;
                self.rec.end_fault(f);
            }
            Schedule::SlowMember => {
                let id = if self.rng.gen_bool(0.5) {
                    self.leader_or_any().await
                } else {
                    self.any_member()
                };
                let d = self.ms(3_000..6_000);
                let f = self.rec.start_fault(
                    kind.name(),
                    format!("member {id} stalls (SIGSTOP/SIGCONT every 100-300 ms) for {d:?}"),
                );
                let end = Instant::now() + d;
                while Instant::now() < end && Instant::now() < self.until {
                    self.cluster.pause(id);
                    let stalled = self.ms(100..300);
                    tokio::time::sleep(stalled).await;
                    self.cluster.resume(id);
                    let running = self.ms(100..300);
                    tokio::time::sleep(running).await;
                }
                self.cluster.resume(id);
                self.rec.end_fault(f);
            }
            Schedule::RestartCluster => {
                let down = self.ms(200..1_000);
                let f = self.rec.start_fault(
                    kind.name(),
                    format!("kill -9 every member, restart all after {down:?}"),
                );
                for id in self.cluster.ids() {
                    self.cluster.kill(id);
                }
                tokio::time::sleep(down).await;
                for id in self.cluster.ids() {
                    self.cluster.spawn(id);
                }
                // The fault lasts until a leader is back (bounded).
                let _ = self.cluster.wait_for_leader(Duration::from_secs(15)).await;
                self.rec.end_fault(f);
            }
            Schedule::Mixed => self.combination().await,
        }
    }

    /// A network fault and a process fault at once.
    async fn combination(&mut self) {
        let leader = self.leader_or_any().await;
        let all = self.net_all();
        let net_kind = self.rng.gen_range(0..3);
        let net_detail = match net_kind {
            0 => {
                let id = self.any_member();
                if let Some(net) = self.cluster.net() {
                    net.isolate(id, &all);
                }
                format!("isolate member {id}")
            }
            1 => {
                let delay = self.rng.gen_range(50..300);
                if let Some(net) = self.cluster.net() {
                    for a in &all {
                        for b in &all {
                            if a != b {
                                net.delay(*a, *b, delay);
                            }
                        }
                    }
                }
                format!("delay every link by {delay} ms")
            }
            _ => {
                let to = self.any_member();
                if let Some(net) = self.cluster.net() {
                    if to != leader {
                        net.drop_one_way(leader, to);
                    }
                }
                format!("drop {leader}->{to}")
            }
        };
        let f = self.rec.start_fault("combination", net_detail);
        let process = [
            Schedule::KillLeader,
            Schedule::KillRandom,
            Schedule::PauseLeader,
            Schedule::SlowMember,
        ];
        let p = process[self.rng.gen_range(0..process.len())];
        // Boxed: `fault(Mixed)` comes back here.
        Box::pin(self.fault(p)).await;
        self.heal_net();
        self.rec.end_fault(f);
    }

    fn heal_net(&self) {
        if let Some(net) = self.cluster.net() {
            net.heal();
        }
    }

    /// Undoes everything: heals the network, resumes paused members, restarts
    /// killed ones.
    pub fn heal_all(&mut self) {
        self.heal_net();
        for id in self.cluster.ids() {
            let (started, paused) = {
                let m = self.cluster.member(id);
                (m.is_started(), m.is_paused())
            };
            if paused {
                self.cluster.resume(id);
            }
            if !started {
                self.cluster.spawn(id);
            }
        }
        self.rec.end_all_faults();
    }
}
