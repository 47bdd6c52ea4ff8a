//! Process metrics, rendered in the Prometheus text format by `GET /metrics`.
//!
//! Counters and histograms are plain atomics updated on the request path
//! (HTTP middleware) and the write path (log writer, proposals); gauges that
//! already live elsewhere (applied zxid, sessions) are passed in at render time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// Request counts: route pattern -> method -> status. Nested so that the
/// hot path looks up borrowed strings (no allocation) under a read lock.
/// Every level is bounded: routes are the router's patterns (or
/// `unmatched`), methods one of [`METHODS`] or `OTHER`, statuses what the
/// server answers.
type RequestCounts = HashMap<String, HashMap<&'static str, HashMap<u16, AtomicU64>>>;

/// The HTTP methods counted by name; any other (a client can send any
/// token) counts as `OTHER`, so a client cannot grow the metrics.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// The label a request's method is counted under.
fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
}

/// A fixed-bucket histogram (cumulative on render, as Prometheus wants).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            if let Some(c) = self.counts.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((value * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {total}");
    }
}

const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const SECONDS_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// All metrics of one server process.
pub struct Metrics {
    requests: RwLock<RequestCounts>,
    /// Txns handed to the log writer.
    pub proposals: AtomicU64,
    /// Txns that failed to commit (unavailable or storage failure).
    pub proposal_failures: AtomicU64,
    /// Entries per group commit.
    pub batch_entries: Histogram,
    /// Time of one `append_log` (write + fsync), in seconds.
    pub append_seconds: Histogram,
    /// Time of one HTTP request, in seconds.
    pub request_seconds: Histogram,
    /// Sessions closed because they expired.
    pub sessions_expired: AtomicU64,
    /// Nodes deleted by the reaper.
    pub nodes_reaped: AtomicU64,
    /// Watch events written to event streams and answered to one-shot watches
    /// (change events only; progress and cut-off events are not counted).
    pub watch_events_sent: AtomicU64,
    /// Event streams cut off because their consumer fell too far behind.
    pub watch_slow_consumers: AtomicU64,
    /// Reads of the change history (stream replays and `after_zxid` checks).
    pub watch_replay_reads: AtomicU64,
    /// Watch requests refused because `max_watch_streams` were open.
    pub watch_streams_refused: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: RwLock::new(HashMap::new()),
            proposals: AtomicU64::new(0),
            proposal_failures: AtomicU64::new(0),
            batch_entries: Histogram::new(BATCH_BOUNDS),
            append_seconds: Histogram::new(SECONDS_BOUNDS),
            request_seconds: Histogram::new(SECONDS_BOUNDS),
            sessions_expired: AtomicU64::new(0),
            nodes_reaped: AtomicU64::new(0),
            watch_events_sent: AtomicU64::new(0),
            watch_slow_consumers: AtomicU64::new(0),
            watch_replay_reads: AtomicU64::new(0),
            watch_streams_refused: AtomicU64::new(0),
        }
    }
}

/// Gauges read from their owners when `/metrics` is rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub applied_zxid: u64,
    pub committed_zxid: u64,
    pub epoch: u32,
    pub sessions: usize,
    pub znodes: usize,
    /// Event streams and waiting one-shot watches open on this member.
    pub watch_streams: usize,
}

impl Metrics {
    /// Counts one HTTP request by route pattern, method (see [`METHODS`])
    /// and status.
    pub fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.request_seconds.observe(elapsed.as_secs_f64());
        let method = method_label(method);
        {
            let map = self.requests.read().unwrap_or_else(|p| p.into_inner());
            let counter = map
                .get(route)
                .and_then(|m| m.get(method))
                .and_then(|m| m.get(&status));
            if let Some(counter) = counter {
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self.requests.write().unwrap_or_else(|p| p.into_inner());
        map.entry(route.to_string())
            .or_default()
            .entry(method)
            .or_default()
            .entry(status)
            .or_insert_with(|| AtomicU64::new(0))
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP keeper_http_requests_total HTTP requests by route, method and status."
        );
        let _ = writeln!(out, "# TYPE keeper_http_requests_total counter");
        {
            let map = self.requests.read().unwrap_or_else(|p| p.into_inner());
            let mut sorted = BTreeMap::new();
            for (route, methods) in map.iter() {
                for (method, statuses) in methods {
                    for (status, n) in statuses {
                        sorted.insert((route, method, *status), n.load(Ordering::Relaxed));
                    }
                }
            }
            for ((route, method, status), n) in sorted {
                let route = route.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "keeper_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        self.request_seconds.render(
            &mut out,
            "keeper_http_request_duration_seconds",
            "Time to answer an HTTP request.",
        );
        let counters = [
            (
                "keeper_proposals_total",
                "Txns handed to the write path.",
                &self.proposals,
            ),
            (
                "keeper_proposal_failures_total",
                "Txns that failed to commit.",
                &self.proposal_failures,
            ),
            (
                "keeper_sessions_expired_total",
                "Sessions closed because they expired.",
                &self.sessions_expired,
            ),
            (
                "keeper_nodes_reaped_total",
                "Nodes deleted by the reaper.",
                &self.nodes_reaped,
            ),
            (
                "keeper_watch_events_sent_total",
                "Change events sent to watch streams and one-shot watches.",
                &self.watch_events_sent,
            ),
            (
                "keeper_watch_slow_consumers_total",
                "Event streams cut off because their consumer fell too far behind.",
                &self.watch_slow_consumers,
            ),
            (
                "keeper_watch_replay_reads_total",
                "Reads of the change history for stream replays and after_zxid checks.",
                &self.watch_replay_reads,
            ),
            (
                "keeper_watch_streams_refused_total",
                "Watch requests refused because max_watch_streams were open.",
                &self.watch_streams_refused,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        self.batch_entries.render(
            &mut out,
            "keeper_log_batch_entries",
            "Entries per group commit (one fsync).",
        );
        self.append_seconds.render(
            &mut out,
            "keeper_log_append_seconds",
            "Time of one log append including fsync.",
        );
        let gauges = [
            (
                "keeper_applied_zxid",
                "Last zxid applied on this member.",
                gauges.applied_zxid,
            ),
            (
                "keeper_committed_zxid",
                "Last zxid known committed.",
                gauges.committed_zxid,
            ),
            ("keeper_epoch", "Current epoch.", u64::from(gauges.epoch)),
            (
                "keeper_sessions",
                "Live sessions tracked.",
                gauges.sessions as u64,
            ),
            (
                "keeper_znodes",
                "Znodes in the tree, the root included.",
                gauges.znodes as u64,
            ),
            (
                "keeper_watch_streams_open",
                "Event streams and waiting one-shot watches open on this member.",
                gauges.watch_streams as u64,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_requests_and_histograms_cumulatively() {
        let m = Metrics::default();
        m.record_request("/v1/nodes/{*path}", "GET", 200, Duration::from_millis(1));
        m.record_request("/v1/nodes/{*path}", "GET", 200, Duration::from_millis(1));
        m.batch_entries.observe(3.0);
        m.batch_entries.observe(100.0);
        m.record_request("/v1/nodes/{*path}", "GET", 404, Duration::from_millis(1));
        m.record_request("/v1/nodes/{*path}", "PUT", 200, Duration::from_millis(1));
        let text = m.render(Gauges {
            applied_zxid: 9,
            znodes: 3,
            ..Gauges::default()
        });
        assert!(text.contains(
            "keeper_http_requests_total{route=\"/v1/nodes/{*path}\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains("keeper_log_batch_entries_bucket{le=\"4\"} 1"));
        assert!(text.contains("keeper_log_batch_entries_bucket{le=\"128\"} 2"));
        assert!(text.contains("keeper_log_batch_entries_count 2"));
        assert!(text.contains(
            "keeper_http_requests_total{route=\"/v1/nodes/{*path}\",method=\"GET\",status=\"404\"} 1"
        ));
        assert!(text.contains(
            "keeper_http_requests_total{route=\"/v1/nodes/{*path}\",method=\"PUT\",status=\"200\"} 1"
        ));
        assert!(text.contains("keeper_applied_zxid 9"));
        assert!(text.contains("keeper_znodes 3"));
    }

    /// Issue 9, problem 13: request counts were keyed by the client-supplied
    /// method, so a client sending ever new method tokens grew them forever.
    #[test]
    fn request_metrics_stay_bounded_whatever_methods_clients_send() {
        let m = Metrics::default();
        for i in 0..10_000 {
            m.record_request("unmatched", &format!("X{i}"), 405, Duration::ZERO);
        }
        m.record_request("unmatched", "DELETE", 405, Duration::ZERO);
        let text = m.render(Gauges::default());
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("keeper_http_requests_total{"))
            .collect();
        assert_eq!(
            lines,
            vec![
                "keeper_http_requests_total{route=\"unmatched\",method=\"DELETE\",status=\"405\"} 1",
                "keeper_http_requests_total{route=\"unmatched\",method=\"OTHER\",status=\"405\"} 10000",
            ]
        );
        let methods: usize = m
            .requests
            .read()
            .unwrap()
            .values()
            .map(|by_method| by_method.len())
            .sum();
        assert_eq!(methods, 2);
    }
}
