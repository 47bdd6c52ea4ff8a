//! Process metrics: one Prometheus registry (the `prometheus-client` crate) that
//! `GET /metrics` encodes in the OpenMetrics text format, every family with its HELP
//! and TYPE.
//!
//! Where the numbers come from: counters and histograms here are updated on the
//! request path (HTTP middleware, [`Metrics::record_request`]) and the write path
//! (log writer, proposals, sessions, reaper). Values that live elsewhere are read at
//! scrape time by [`Collector`]s registered into the same registry: the member's state
//! gauges (applied zxid, sessions, znodes, readiness; see `node.rs`), the ZAB driver's
//! counters and the peer links' counters. Label values are bounded: `method` is one
//! of the known HTTP methods or `OTHER`, `route` is a route pattern of the router
//! (or `unmatched`), `status` an HTTP status.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

pub use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
pub use prometheus_client::metrics::counter::ConstCounter;
pub use prometheus_client::metrics::gauge::ConstGauge;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The HTTP method label: the known methods, anything else is `OTHER`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    PATCH,
    OPTIONS,
    CONNECT,
    TRACE,
    OTHER,
}

impl MethodLabel {
    /// The label of a request method (`OTHER` for any method not listed).
    pub fn of(method: &str) -> MethodLabel {
        match method {
            "GET" => MethodLabel::GET,
            "HEAD" => MethodLabel::HEAD,
            "POST" => MethodLabel::POST,
            "PUT" => MethodLabel::PUT,
            "DELETE" => MethodLabel::DELETE,
            "PATCH" => MethodLabel::PATCH,
            "OPTIONS" => MethodLabel::OPTIONS,
            "CONNECT" => MethodLabel::CONNECT,
            "TRACE" => MethodLabel::TRACE,
            _ => MethodLabel::OTHER,
        }
    }
}

/// Labels of `keeper_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: MethodLabel,
    pub status: u16,
}

/// Most distinct route labels; further unknown routes count as `unmatched`. The
/// router has a few dozen patterns, so this is never reached in practice.
const MAX_ROUTE_LABELS: usize = 256;

/// The route pattern as a `&'static str` (patterns are few and fixed by the router,
/// so each is stored once for the life of the process; see [`MAX_ROUTE_LABELS`]).
fn route_label(route: &str) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| RwLock::new(HashSet::from(["unmatched"])));
    if let Some(known) = routes.read().unwrap_or_else(|p| p.into_inner()).get(route) {
        return known;
    }
    let mut routes = routes.write().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = routes.get(route) {
        return known;
    }
    if routes.len() >= MAX_ROUTE_LABELS {
        return "unmatched";
    }
    let leaked: &'static str = Box::leak(route.to_string().into_boxed_str());
    routes.insert(leaked);
    leaked
}

const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const SECONDS_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// All metrics of one server process, in one registry.
pub struct Metrics {
    registry: RwLock<Registry>,
    requests: Family<RequestLabels, Counter>,
    /// Txns handed to the write path.
    pub proposals: Counter,
    /// Txns that failed to commit (unavailable or storage failure).
    pub proposal_failures: Counter,
    /// Entries per group commit.
    pub batch_entries: Histogram,
    /// Time of one log append (write + fsync), in seconds.
    pub append_seconds: Histogram,
    /// Time of one HTTP request, in seconds.
    pub request_seconds: Histogram,
    /// Sessions closed because they expired.
    pub sessions_expired: Counter,
    /// Nodes deleted by the reaper.
    pub nodes_reaped: Counter,
    /// Lock grants (acquires answered with a fencing token).
    pub lock_grants: Counter,
    /// Lock waiters woken because the contender they waited for went away
    /// (one per release with no herd effect).
    pub lock_wakeups: Counter,
    /// Semaphore permits granted.
    pub semaphore_grants: Counter,
    /// Semaphore waiters woken because enough of the contenders ahead of
    /// them went away (one per freed permit with no herd effect).
    pub semaphore_wakeups: Counter,
    /// Election candidates elected (campaigns answered with a term).
    pub election_wins: Counter,
    /// Election candidates woken by the deletion of their predecessor.
    pub election_wakeups: Counter,
    /// Watch events written to event streams and answered to one-shot watches
    /// (change events only; progress and cut-off events are not counted).
    pub watch_events_sent: Counter,
    /// Event streams cut off because their consumer fell too far behind.
    pub watch_slow_consumers: Counter,
    /// Reads of the change history (stream replays and `after_zxid` checks).
    pub watch_replay_reads: Counter,
    /// Watch requests refused because `max_watch_streams` were open.
    pub watch_streams_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let proposals = Counter::default();
        let proposal_failures = Counter::default();
        let batch_entries = Histogram::new(BATCH_BUCKETS);
        let append_seconds = seconds_histogram();
        let request_seconds = seconds_histogram();
        let sessions_expired = Counter::default();
        let nodes_reaped = Counter::default();
        let watch_events_sent = Counter::default();
        let watch_slow_consumers = Counter::default();
        let watch_replay_reads = Counter::default();
        let watch_streams_refused = Counter::default();
        let lock_grants = Counter::default();
        let lock_wakeups = Counter::default();
        let semaphore_grants = Counter::default();
        let semaphore_wakeups = Counter::default();
        let election_wins = Counter::default();
        let election_wakeups = Counter::default();
        let mut registry = Registry::default();
        for (name, help, counter) in [
            ("keeper_lock_grants", "Lock acquires granted.", &lock_grants),
            (
                "keeper_lock_wakeups",
                "Lock waiters woken by the deletion of the contender they waited for.",
                &lock_wakeups,
            ),
            (
                "keeper_semaphore_grants",
                "Semaphore permits granted.",
                &semaphore_grants,
            ),
            (
                "keeper_semaphore_wakeups",
                "Semaphore waiters woken because enough contenders ahead of them went away.",
                &semaphore_wakeups,
            ),
            (
                "keeper_election_wins",
                "Election candidates elected.",
                &election_wins,
            ),
            (
                "keeper_election_wakeups",
                "Election candidates woken by the deletion of their predecessor.",
                &election_wakeups,
            ),
            (
                "keeper_watch_events_sent",
                "Watch change events sent to streams and one-shot watches.",
                &watch_events_sent,
            ),
            (
                "keeper_watch_slow_consumers",
                "Event streams cut off because their consumer fell behind.",
                &watch_slow_consumers,
            ),
            (
                "keeper_watch_replay_reads",
                "Reads of the change history (stream replays, after_zxid checks).",
                &watch_replay_reads,
            ),
            (
                "keeper_watch_streams_refused",
                "Watch requests refused because max_watch_streams were open.",
                &watch_streams_refused,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "keeper_http_requests",
            "HTTP requests by route, method and status.",
            requests.clone(),
        );
        registry.register(
            "keeper_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            request_seconds.clone(),
        );
        registry.register(
            "keeper_proposals",
            "Txns handed to the write path.",
            proposals.clone(),
        );
        registry.register(
            "keeper_proposal_failures",
            "Txns that failed to commit.",
            proposal_failures.clone(),
        );
        registry.register(
            "keeper_sessions_expired",
            "Sessions closed because they expired.",
            sessions_expired.clone(),
        );
        registry.register(
            "keeper_nodes_reaped",
            "Nodes deleted by the reaper.",
            nodes_reaped.clone(),
        );
        registry.register(
            "keeper_log_batch_entries",
            "Entries per group commit (one fsync).",
            batch_entries.clone(),
        );
        registry.register(
            "keeper_log_append_seconds",
            "Time of one log append including fsync.",
            append_seconds.clone(),
        );
        Metrics {
            registry: RwLock::new(registry),
            requests,
            proposals,
            proposal_failures,
            batch_entries,
            append_seconds,
            request_seconds,
            sessions_expired,
            nodes_reaped,
            watch_events_sent,
            watch_slow_consumers,
            watch_replay_reads,
            watch_streams_refused,
            lock_grants,
            lock_wakeups,
            semaphore_grants,
            semaphore_wakeups,
            election_wins,
            election_wakeups,
        }
    }
}

impl Metrics {
    /// Counts one HTTP request by route pattern, method (see [`MethodLabel`])
    /// and status.
    pub fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.request_seconds.observe(elapsed.as_secs_f64());
        let labels = RequestLabels {
            route: route_label(route),
            method: MethodLabel::of(method),
            status,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Adds a source of metrics read at every scrape (driver, peer links, state gauges).
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .register_collector(collector);
    }

    /// Encodes every metric of the registry (OpenMetrics text, ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Encodes one constant counter family (`name` gets its `_total` suffix).
pub fn encode_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

/// Encodes one constant gauge family.
pub fn encode_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

/// Encodes one constant gauge family holding a float (seconds, ratios).
pub fn encode_gauge_f64(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

/// A zxid as a gauge value (zxids stay far below `i64::MAX`: the epoch is 32 bits,
/// and its top bit would take 2^31 elections).
pub fn zxid_gauge(zxid: u64) -> i64 {
    i64::try_from(zxid).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;
    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            encode_gauge(&mut encoder, "keeper_applied_zxid", "Last applied.", 9)?;
            encode_counter(&mut encoder, "keeper_zab_fsyncs", "Fsyncs.", 4)
        }
    }

    #[test]
    fn render_counts_requests_and_histograms_cumulatively() {
        let m = Metrics::default();
        m.register_collector(Box::new(Fixed));
        m.record_request("/v1/nodes/{*path}", "GET", 200, Duration::from_millis(1));
        m.record_request("/v1/nodes/{*path}", "GET", 200, Duration::from_millis(1));
        m.batch_entries.observe(3.0);
        m.batch_entries.observe(100.0);
        m.record_request("/v1/nodes/{*path}", "GET", 404, Duration::from_millis(1));
        m.record_request("/v1/nodes/{*path}", "PUT", 200, Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains(
            "keeper_http_requests_total{route=\"/v1/nodes/{*path}\",method=\"GET\",status=\"200\"} 2"
        ), "{text}");
        assert!(
            text.contains("keeper_log_batch_entries_bucket{le=\"4.0\"} 1"),
            "{text}"
        );
        assert!(text.contains("keeper_log_batch_entries_bucket{le=\"128.0\"} 2"));
        assert!(text.contains("keeper_log_batch_entries_count 2"));
        assert!(text.contains(
            "keeper_http_requests_total{route=\"/v1/nodes/{*path}\",method=\"GET\",status=\"404\"} 1"
        ));
        assert!(text.contains(
            "keeper_http_requests_total{route=\"/v1/nodes/{*path}\",method=\"PUT\",status=\"200\"} 1"
        ));
        assert!(text.contains("keeper_applied_zxid 9"));
        assert!(text.contains("keeper_zab_fsyncs_total 4"));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn every_family_has_help_and_type() {
        let m = Metrics::default();
        m.register_collector(Box::new(Fixed));
        m.record_request("/x", "GET", 200, Duration::from_millis(1));
        let text = m.render();
        let mut families = HashSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_total", "_bucket", "_sum", "_count", "_created"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            families.insert(family.to_string());
        }
        assert!(families.len() >= 10, "{families:?}");
        for family in families {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family} has no HELP:\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} has no TYPE:\n{text}"
            );
        }
    }

    #[test]
    fn unknown_methods_count_as_other() {
        let m = Metrics::default();
        for method in ["BREW", "PROPFIND", "get", "X-EVIL"] {
            m.record_request("/v1/nodes/{*path}", method, 405, Duration::ZERO);
        }
        let text = m.render();
        assert!(text.contains(
            "keeper_http_requests_total{route=\"/v1/nodes/{*path}\",method=\"OTHER\",status=\"405\"} 4"
        ), "{text}");
        assert!(!text.contains("BREW"));
        assert_eq!(MethodLabel::of("DELETE"), MethodLabel::DELETE);
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
        let text = m.render();
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("keeper_http_requests_total{"))
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            vec![
                "keeper_http_requests_total{route=\"unmatched\",method=\"DELETE\",status=\"405\"} 1",
                "keeper_http_requests_total{route=\"unmatched\",method=\"OTHER\",status=\"405\"} 10000",
            ]
        );
    }
}
