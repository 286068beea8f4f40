//! tracelight's own metrics, rendered in the Prometheus text exposition format.
//!
//! A small registry instead of a metrics framework: each component registers the handful of
//! series it owns at construction and keeps the `Arc`s; `/metrics` renders the registry. No
//! global state: the registry is created in the binary and passed down.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

/// A monotonically increasing count, optionally split by one label.
pub struct Counter {
    label: Option<&'static str>,
    values: Mutex<BTreeMap<String, u64>>,
}

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.add_labeled("", n);
    }
    /// Adds to the series whose label has the given value.
    pub fn add_labeled(&self, value: &str, n: u64) {
        *self.values.lock().entry(value.to_string()).or_default() += n;
    }
    pub fn get(&self) -> u64 {
        self.get_labeled("")
    }
    pub fn get_labeled(&self, value: &str) -> u64 {
        self.values.lock().get(value).copied().unwrap_or(0)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram of seconds with fixed bucket bounds.
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add((seconds * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Default buckets for latencies from 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

/// The set of series `/metrics` shows.
#[derive(Default)]
pub struct Registry {
    metrics: Mutex<Vec<(&'static str, &'static str, Metric)>>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    pub fn counter(&self, name: &'static str, help: &'static str) -> Arc<Counter> {
        self.labeled_counter(name, help, None)
    }

    /// A counter split by one label, e.g. rejections by `reason`.
    pub fn counter_vec(&self, name: &'static str, help: &'static str, label: &'static str) -> Arc<Counter> {
        self.labeled_counter(name, help, Some(label))
    }

    fn labeled_counter(&self, name: &'static str, help: &'static str, label: Option<&'static str>) -> Arc<Counter> {
        let c = Arc::new(Counter { label, values: Mutex::new(BTreeMap::new()) });
        self.metrics.lock().push((name, help, Metric::Counter(c.clone())));
        c
    }

    pub fn gauge(&self, name: &'static str, help: &'static str) -> Arc<Gauge> {
        let g = Arc::new(Gauge::default());
        self.metrics.lock().push((name, help, Metric::Gauge(g.clone())));
        g
    }

    pub fn histogram(&self, name: &'static str, help: &'static str, bounds: &[f64]) -> Arc<Histogram> {
        let h = Arc::new(Histogram::new(bounds));
        self.metrics.lock().push((name, help, Metric::Histogram(h.clone())));
        h
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, metric) in self.metrics.lock().iter() {
            match metric {
                Metric::Counter(c) => {
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                    let values = c.values.lock();
                    match c.label {
                        None => {
                            let _ = writeln!(out, "{name} {}", values.get("").copied().unwrap_or(0));
                        }
                        Some(label) => {
                            for (v, n) in values.iter() {
                                let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape_label(v));
                            }
                        }
                    }
                }
                Metric::Gauge(g) => {
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", g.get());
                }
                Metric::Histogram(h) => {
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
                    for (b, c) in h.bounds.iter().zip(&h.counts) {
                        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Ordering::Relaxed));
                    }
                    let count = h.count.load(Ordering::Relaxed);
                    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
                    let _ =
                        writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}");
                }
            }
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::new();
        let c = r.counter_vec("tl_rejected_total", "Rejected items.", "reason");
        c.add_labeled("invalid \"id\"", 2);
        let h = r.histogram("tl_fsync_seconds", "fsync latency.", &[0.001, 0.01]);
        h.observe(0.005);
        let g = r.gauge("tl_head_bytes", "Head size.");
        g.set(42);
        let text = r.render();
        assert!(text.contains("tl_rejected_total{reason=\"invalid \\\"id\\\"\"} 2"), "{text}");
        assert!(text.contains("tl_fsync_seconds_bucket{le=\"0.001\"} 0"), "{text}");
        assert!(text.contains("tl_fsync_seconds_bucket{le=\"0.01\"} 1"), "{text}");
        assert!(text.contains("tl_fsync_seconds_count 1"), "{text}");
        assert!(text.contains("tl_head_bytes 42"), "{text}");
    }
}
