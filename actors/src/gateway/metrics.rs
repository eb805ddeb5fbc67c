//! A small Prometheus metrics registry: counters, gauges and histograms with labels, rendered
//! in the Prometheus text exposition format (version 0.0.4). Clone the registry freely; every
//! clone shares the same metrics. The gateway registers its own metrics; the pipeline adds
//! per-stage ones to the same registry.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a metric could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// Metric or label name not matching `[a-zA-Z_:][a-zA-Z0-9_:]*` (labels: no `:`).
    #[error("invalid metric or label name `{0}`")]
    InvalidName(String),
    /// The name is already registered as another kind.
    #[error("metric `{name}` is already registered as a {existing}")]
    KindMismatch {
        /// Metric name.
        name: String,
        /// Its registered kind.
        existing: &'static str,
    },
    /// Histogram buckets must be finite and strictly increasing.
    #[error("histogram `{0}` needs finite, strictly increasing buckets")]
    BadBuckets(String),
}

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Set the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Add `d` (may be negative).
    pub fn add(&self, d: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + d).to_bits())
            });
    }
    /// Add one.
    pub fn inc(&self) {
        self.add(1.0);
    }
    /// Subtract one.
    pub fn dec(&self) {
        self.add(-1.0);
    }
    /// Current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct HistState {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A distribution of observed values in fixed buckets.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Mutex<HistState>>);

impl Histogram {
    /// Record one value.
    pub fn observe(&self, v: f64) {
        let mut s = self.0.lock();
        if let Some(i) = s.bounds.iter().position(|b| v <= *b) {
            s.counts[i] += 1;
        }
        s.sum += v;
        s.count += 1;
    }
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.0.lock().count
    }
    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.0.lock().sum
    }
}

/// Default latency buckets in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug, Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: &'static str,
    series: BTreeMap<String, Series>,
}

/// Shared registry of metrics.
#[derive(Debug, Clone, Default)]
pub struct MetricsRegistry {
    families: Arc<Mutex<BTreeMap<String, Family>>>,
}

fn valid_name(name: &str, allow_colon: bool) -> bool {
    let mut chars = name.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (allow_colon && c == ':');
    match chars.next() {
        Some(c) if ok_first(c) => chars.all(|c| ok_first(c) || c.is_ascii_digit()),
        _ => false,
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(labels: &[(&str, &str)]) -> Result<String, MetricsError> {
    let mut sorted: Vec<(&str, &str)> = labels.to_vec();
    sorted.sort();
    let mut parts = Vec::new();
    for (k, v) in sorted {
        if !valid_name(k, false) || k.starts_with("__") || k == "le" {
            return Err(MetricsError::InvalidName(k.to_string()));
        }
        parts.push(format!("{k}=\"{}\"", escape_label(v)));
    }
    Ok(parts.join(","))
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn get_or_insert(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Series,
    ) -> Result<Series, MetricsError> {
        if !valid_name(name, true) {
            return Err(MetricsError::InvalidName(name.to_string()));
        }
        let key = render_labels(labels)?;
        let mut fams = self.families.lock();
        let fam = fams.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind,
            series: BTreeMap::new(),
        });
        if fam.kind != kind {
            return Err(MetricsError::KindMismatch {
                name: name.to_string(),
                existing: fam.kind,
            });
        }
        Ok(fam.series.entry(key).or_insert_with(make).clone())
    }

    /// The counter `name{labels}`, created on first use (same handle afterwards).
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<Counter, MetricsError> {
        match self.get_or_insert(name, help, "counter", labels, || {
            Series::Counter(Counter::default())
        })? {
            Series::Counter(c) => Ok(c),
            _ => Err(MetricsError::KindMismatch {
                name: name.to_string(),
                existing: "other",
            }),
        }
    }

    /// The gauge `name{labels}`, created on first use.
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<Gauge, MetricsError> {
        match self.get_or_insert(name, help, "gauge", labels, || {
            Series::Gauge(Gauge::default())
        })? {
            Series::Gauge(g) => Ok(g),
            _ => Err(MetricsError::KindMismatch {
                name: name.to_string(),
                existing: "other",
            }),
        }
    }

    /// The histogram `name{labels}` with upper bounds `buckets`, created on first use (the
    /// buckets of the first registration are kept).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[f64],
    ) -> Result<Histogram, MetricsError> {
        if buckets.is_empty()
            || buckets.iter().any(|b| !b.is_finite())
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(MetricsError::BadBuckets(name.to_string()));
        }
        let make = || {
            Series::Histogram(Histogram(Arc::new(Mutex::new(HistState {
                bounds: buckets.to_vec(),
                counts: vec![0; buckets.len()],
                sum: 0.0,
                count: 0,
            }))))
        };
        match self.get_or_insert(name, help, "histogram", labels, make)? {
            Series::Histogram(h) => Ok(h),
            _ => Err(MetricsError::KindMismatch {
                name: name.to_string(),
                existing: "other",
            }),
        }
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let fams = self.families.lock();
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let help = fam.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind);
            for (labels, series) in &fam.series {
                let braces = |extra: &str| -> String {
                    match (labels.is_empty(), extra.is_empty()) {
                        (true, true) => String::new(),
                        (true, false) => format!("{{{extra}}}"),
                        (false, true) => format!("{{{labels}}}"),
                        (false, false) => format!("{{{labels},{extra}}}"),
                    }
                };
                match series {
                    Series::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {}", braces(""), c.get());
                    }
                    Series::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {}", braces(""), fmt_value(g.get()));
                    }
                    Series::Histogram(h) => {
                        let s = h.0.lock();
                        let mut cum = 0;
                        for (b, c) in s.bounds.iter().zip(&s.counts) {
                            cum += c;
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cum}",
                                braces(&format!("le=\"{}\"", fmt_value(*b)))
                            );
                        }
                        let _ = writeln!(out, "{name}_bucket{} {}", braces("le=\"+Inf\""), s.count);
                        let _ = writeln!(out, "{name}_sum{} {}", braces(""), fmt_value(s.sum));
                        let _ = writeln!(out, "{name}_count{} {}", braces(""), s.count);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = MetricsRegistry::new();
        let c = r
            .counter(
                "req_total",
                "Requests.",
                &[("endpoint", "chat"), ("code", "200")],
            )
            .unwrap();
        c.inc();
        r.counter(
            "req_total",
            "Requests.",
            &[("code", "200"), ("endpoint", "chat")],
        )
        .unwrap()
        .add(2);
        r.gauge("in_flight", "In flight.", &[]).unwrap().set(3.0);
        let h = r
            .histogram("lat_seconds", "Latency.", &[], &[0.1, 1.0])
            .unwrap();
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let text = r.render();
        assert!(
            text.contains(
                "# TYPE req_total counter\nreq_total{code=\"200\",endpoint=\"chat\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("in_flight 3\n"));
        assert!(text.contains("lat_seconds_bucket{le=\"0.1\"} 1\nlat_seconds_bucket{le=\"1\"} 2\nlat_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("lat_seconds_count 3\n"));
        assert!(matches!(
            r.gauge("req_total", "", &[]),
            Err(MetricsError::KindMismatch { .. })
        ));
        assert!(matches!(
            r.counter("bad name", "", &[]),
            Err(MetricsError::InvalidName(_))
        ));
        assert!(r.histogram("h2", "", &[], &[1.0, 1.0]).is_err());
    }
}
