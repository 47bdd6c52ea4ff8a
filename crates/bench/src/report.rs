//! Measurements and the printed report.
//!
//! Data flow: each client records into its own [`ClientStats`] (no sharing during the run);
//! the runner merges them with [`ClientStats::merge`] and turns the result into a
//! [`Report`], printed as text, one JSON line or one table row.
//!
//! Latencies are recorded in microseconds in an HdrHistogram (3 significant digits,
//! 1 µs to [`MAX_RECORDED_LATENCY_US`]; longer latencies are clamped) and reported in ms.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::OpKind;

/// Largest latency the histograms hold exactly; larger values are recorded as this.
pub const MAX_RECORDED_LATENCY_US: u64 = 60_000_000;
/// Significant decimal digits the histograms keep.
const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram with the bounds above.
fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure would be a bug here.
    Histogram::new_with_bounds(1, MAX_RECORDED_LATENCY_US, HISTOGRAM_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// What one client measured in the measured window.
#[derive(Debug, Clone)]
pub struct ClientStats {
    /// Latency of successful requests, per op kind (indexed by `OpKind::index`).
    latency_us: [Histogram<u64>; OpKind::ALL.len()],
    /// Failed requests by kind: `status_<code>`, `connect`, `io`, `timeout`.
    errors: BTreeMap<String, u64>,
}

impl Default for ClientStats {
    fn default() -> Self {
        Self {
            latency_us: std::array::from_fn(|_| new_histogram()),
            errors: BTreeMap::new(),
        }
    }
}

impl ClientStats {
    /// Records one successful request of kind `op` that took `latency`.
    pub fn record(&mut self, op: OpKind, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Some(histogram) = self.latency_us.get_mut(op.index()) {
            histogram.saturating_record(micros);
        }
    }

    /// Counts one failed request of kind `kind`.
    pub fn error(&mut self, kind: &str) {
        match self.errors.get_mut(kind) {
            Some(count) => *count += 1,
            None => {
                self.errors.insert(kind.to_string(), 1);
            }
        }
    }

    /// Adds `other`'s measurements to these.
    pub fn merge(&mut self, other: &ClientStats) {
        for (mine, theirs) in self.latency_us.iter_mut().zip(&other.latency_us) {
            // Same bounds on both sides, so `add` cannot fail; saturate defensively.
            if mine.add(theirs).is_err() {
                for value in theirs.iter_recorded() {
                    mine.saturating_record_n(value.value_iterated_to(), value.count_at_value());
                }
            }
        }
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_insert(0) += count;
        }
    }

    /// Successful requests recorded, all kinds.
    #[cfg(test)]
    pub fn ops(&self) -> u64 {
        self.latency_us.iter().map(Histogram::len).sum()
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest recorded.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl LatencyMs {
    fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self {
                p50: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// Throughput and latency of one op kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpSummary {
    /// Successful requests in the measured window.
    pub ops: u64,
    /// `ops` / measured seconds.
    pub ops_per_sec: f64,
    /// Latency of those requests.
    pub latency_ms: LatencyMs,
}

/// Failed requests in the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorSummary {
    /// All failed requests.
    pub total: u64,
    /// By kind: `status_<code>` (answered with another status than expected), `connect`,
    /// `io` (connection broke), `timeout`.
    pub by_kind: BTreeMap<String, u64>,
}

/// The result of one run; `--json` prints exactly this as one line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `set`, `get`, ..., or `mix(set=20,get=80)`.
    pub op: String,
    /// Closed-loop clients.
    pub clients: usize,
    /// Endpoints the clients were spread over.
    pub endpoints: usize,
    /// Bytes of data per create/set.
    pub value_size: usize,
    /// Key space size (0 for create).
    pub keys: usize,
    /// Warm-up length, seconds.
    pub warmup_s: f64,
    /// Measured window length, seconds.
    pub duration_s: f64,
    /// Successful requests in the measured window, all kinds.
    pub ops: u64,
    /// `ops` / `duration_s`.
    pub ops_per_sec: f64,
    /// Latency over all kinds (one histogram merged across clients and kinds).
    pub latency_ms: LatencyMs,
    /// Failed requests.
    pub errors: ErrorSummary,
    /// Per kind, only for mixes (empty, and left out of JSON, for a single op).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_op: BTreeMap<String, OpSummary>,
}

/// What a run was, for the report's header fields.
#[derive(Debug, Clone)]
pub struct RunShape {
    /// Plan description (`set`, `mix(...)`).
    pub op: String,
    /// Whether per-kind summaries should be reported.
    pub is_mix: bool,
    /// Clients.
    pub clients: usize,
    /// Endpoints.
    pub endpoints: usize,
    /// Value size.
    pub value_size: usize,
    /// Key space size.
    pub keys: usize,
    /// Warm-up length.
    pub warmup: Duration,
    /// Measured window length.
    pub duration: Duration,
}

impl Report {
    /// Summarizes merged stats of a run of shape `shape`.
    pub fn new(shape: &RunShape, stats: &ClientStats) -> Self {
        let seconds = shape.duration.as_secs_f64();
        let rate = |ops: u64| {
            if seconds > 0.0 {
                ops as f64 / seconds
            } else {
                0.0
            }
        };
        let mut all = new_histogram();
        let mut by_op = BTreeMap::new();
        for op in OpKind::ALL {
            let Some(histogram) = stats.latency_us.get(op.index()) else {
                continue;
            };
            let _ = all.add(histogram);
            if shape.is_mix && !histogram.is_empty() {
                by_op.insert(
                    op.name().to_string(),
                    OpSummary {
                        ops: histogram.len(),
                        ops_per_sec: rate(histogram.len()),
                        latency_ms: LatencyMs::from_histogram(histogram),
                    },
                );
            }
        }
        Self {
            op: shape.op.clone(),
            clients: shape.clients,
            endpoints: shape.endpoints,
            value_size: shape.value_size,
            keys: shape.keys,
            warmup_s: shape.warmup.as_secs_f64(),
            duration_s: seconds,
            ops: all.len(),
            ops_per_sec: rate(all.len()),
            latency_ms: LatencyMs::from_histogram(&all),
            errors: ErrorSummary {
                total: stats.errors.values().sum(),
                by_kind: stats.errors.clone(),
            },
            by_op,
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of numbers, strings and string-keyed maps cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    /// A few human-readable lines.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "keeper-bench: op={} clients={} endpoints={} value={}B keys={} warmup={:.2}s measured={:.2}s\n",
            self.op,
            self.clients,
            self.endpoints,
            self.value_size,
            self.keys,
            self.warmup_s,
            self.duration_s
        );
        text.push_str(&format!(
            "  ops        {} ({:.1} ops/s)\n",
            self.ops, self.ops_per_sec
        ));
        text.push_str(&format!(
            "  latency    {}\n",
            latency_line(&self.latency_ms)
        ));
        for (name, summary) in &self.by_op {
            text.push_str(&format!(
                "  {name:<10} {} ({:.1} ops/s) {}\n",
                summary.ops,
                summary.ops_per_sec,
                latency_line(&summary.latency_ms)
            ));
        }
        text.push_str(&format!("  errors     {}", self.errors.total));
        for (kind, count) in &self.errors.by_kind {
            text.push_str(&format!(" {kind}={count}"));
        }
        text.push('\n');
        text
    }

    /// One fixed-width row matching [`Report::row_header`].
    pub fn to_row(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "{:<22} {:>7} {:>11.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7}",
            self.op, self.clients, self.ops_per_sec, l.p50, l.p99, l.p999, l.max, self.errors.total
        )
    }

    /// The header of [`Report::to_row`] rows.
    pub fn row_header() -> String {
        format!(
            "{:<22} {:>7} {:>11} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "op", "clients", "ops/s", "p50 ms", "p99 ms", "p999 ms", "max ms", "errors"
        )
    }
}

fn latency_line(l: &LatencyMs) -> String {
    format!(
        "ms p50 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3}  mean {:.3}",
        l.p50, l.p99, l.p999, l.max, l.mean
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(is_mix: bool) -> RunShape {
        RunShape {
            op: if is_mix {
                "mix(set=50,get=50)".into()
            } else {
                "set".into()
            },
            is_mix,
            clients: 2,
            endpoints: 1,
            value_size: 256,
            keys: 10,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
        }
    }

    /// Approximate equality within HdrHistogram's 3-significant-digit resolution.
    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 0.002 + 1e-9
    }

    #[test]
    fn percentiles_come_from_the_merged_histogram() {
        // Client a: 1..=500 ms; client b: 501..=1000 ms. Merged: 1..=1000 ms, uniform.
        let mut a = ClientStats::default();
        let mut b = ClientStats::default();
        for ms in 1..=500u64 {
            a.record(OpKind::Set, Duration::from_millis(ms));
            b.record(OpKind::Set, Duration::from_millis(ms + 500));
        }
        a.error("status_503");
        b.error("status_503");
        b.error("timeout");
        let mut merged = ClientStats::default();
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.ops(), 1000);

        let report = Report::new(&shape(false), &merged);
        assert_eq!(report.ops, 1000);
        assert!(close(report.ops_per_sec, 500.0));
        assert!(
            close(report.latency_ms.p50, 500.0),
            "{:?}",
            report.latency_ms
        );
        assert!(
            close(report.latency_ms.p99, 990.0),
            "{:?}",
            report.latency_ms
        );
        assert!(
            close(report.latency_ms.p999, 999.0),
            "{:?}",
            report.latency_ms
        );
        assert!(
            close(report.latency_ms.max, 1000.0),
            "{:?}",
            report.latency_ms
        );
        assert!(
            close(report.latency_ms.mean, 500.5),
            "{:?}",
            report.latency_ms
        );
        assert_eq!(report.errors.total, 3);
        assert_eq!(report.errors.by_kind.get("status_503"), Some(&2));
        assert_eq!(report.errors.by_kind.get("timeout"), Some(&1));
        assert!(report.by_op.is_empty());
    }

    #[test]
    fn latencies_beyond_the_bound_are_clamped_not_lost() {
        let mut stats = ClientStats::default();
        stats.record(OpKind::Get, Duration::from_secs(3600));
        stats.record(OpKind::Get, Duration::ZERO);
        let report = Report::new(&shape(false), &stats);
        assert_eq!(report.ops, 2);
        assert!(close(
            report.latency_ms.max,
            MAX_RECORDED_LATENCY_US as f64 / 1000.0
        ));
    }

    #[test]
    fn empty_run_reports_zeros() {
        let report = Report::new(&shape(false), &ClientStats::default());
        assert_eq!(report.ops, 0);
        assert_eq!(report.ops_per_sec, 0.0);
        assert_eq!(report.latency_ms.p99, 0.0);
        assert_eq!(report.errors.total, 0);
    }

    #[test]
    fn json_is_one_line_with_the_documented_shape() {
        let mut stats = ClientStats::default();
        stats.record(OpKind::Set, Duration::from_millis(2));
        stats.record(OpKind::Get, Duration::from_millis(1));
        stats.error("io");
        let single = Report::new(&shape(false), &stats).to_json();
        assert!(!single.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&single).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "clients",
                "duration_s",
                "endpoints",
                "errors",
                "keys",
                "latency_ms",
                "op",
                "ops",
                "ops_per_sec",
                "value_size",
                "warmup_s"
            ]
        );
        assert_eq!(value["op"], "set");
        assert_eq!(value["ops"], 2);
        assert_eq!(value["ops_per_sec"], 1.0);
        assert_eq!(value["errors"]["total"], 1);
        assert_eq!(value["errors"]["by_kind"]["io"], 1);
        for field in ["p50", "p99", "p999", "max", "mean"] {
            assert!(value["latency_ms"][field].is_f64(), "latency_ms.{field}");
        }

        let mix: serde_json::Value =
            serde_json::from_str(&Report::new(&shape(true), &stats).to_json()).unwrap();
        assert_eq!(mix["by_op"]["set"]["ops"], 1);
        assert_eq!(mix["by_op"]["get"]["ops"], 1);
        assert!(mix["by_op"].get("lget").is_none());
        assert!(close(
            mix["by_op"]["set"]["latency_ms"]["p50"].as_f64().unwrap(),
            2.0
        ));
    }

    #[test]
    fn row_lines_up_with_its_header() {
        let mut stats = ClientStats::default();
        stats.record(OpKind::Set, Duration::from_micros(1234));
        let row = Report::new(&shape(false), &stats).to_row();
        assert_eq!(row.len(), Report::row_header().len());
        assert!(row.starts_with("set "));
        assert!(row.contains("1.234"));
        let text = Report::new(&shape(false), &stats).to_text();
        assert!(text.contains("op=set clients=2"));
        assert!(text.contains("errors     0"));
    }
}
