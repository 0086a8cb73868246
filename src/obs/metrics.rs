//! A small Prometheus registry on atomics.
//!
//! Why hand-written: the router needs counters and one histogram family, and
//! the hot path must stay cheap. A series is found once per label set (hash
//! of the label values, then a read-locked bucket compared without
//! allocating) and after that is a plain atomic; plugins resolve their
//! latency series when they are loaded, so a plugin call costs two atomic
//! adds and no lookup at all. Gauges that mirror state the router already
//! keeps (consumer lag, rebuild progress) are not kept here: the scrape
//! reads them (see `admin::metrics`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds (seconds) of the plugin call latency buckets: a Rust guest
/// answers in microseconds, a JavaScript or Python one in a millisecond or
/// so, and a call is cut off at its deadline (hundreds of ms).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// One counter series.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One histogram series with [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative; the render adds them up).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The total of what was observed.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed))
    }
}

type Bucket<S, const N: usize> = Vec<([Box<str>; N], Arc<S>)>;

/// Series of one metric, by label values.
pub struct Family<S, const N: usize> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
    series: RwLock<HashMap<u64, Bucket<S, N>>>,
}

fn hash<const N: usize>(values: &[&str; N]) -> u64 {
    let mut h = DefaultHasher::new();
    values.hash(&mut h);
    h.finish()
}

impl<S: Default, const N: usize> Family<S, N> {
    pub fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Self {
            name,
            help,
            labels,
            series: RwLock::new(HashMap::new()),
        }
    }

    /// The series for `values` if it exists (never creates one).
    pub fn find(&self, values: [&str; N]) -> Option<Arc<S>> {
        let h = hash(&values);
        let same = |k: &[Box<str>; N]| k.iter().zip(values.iter()).all(|(a, b)| &**a == *b);
        let map = crate::sync::read(&self.series);
        map.get(&h)
            .and_then(|b| b.iter().find(|(k, _)| same(k)))
            .map(|(_, s)| s.clone())
    }

    /// The series for `values`, created on first use. Keep the `Arc` where a
    /// caller records often under the same labels.
    pub fn series(&self, values: [&str; N]) -> Arc<S> {
        if let Some(s) = self.find(values) {
            return s;
        }
        let h = hash(&values);
        let same = |k: &[Box<str>; N]| k.iter().zip(values.iter()).all(|(a, b)| &**a == *b);
        let mut map = crate::sync::write(&self.series);
        let bucket = map.entry(h).or_default();
        if let Some((_, s)) = bucket.iter().find(|(k, _)| same(k)) {
            return s.clone();
        }
        let s = Arc::new(S::default());
        bucket.push((values.map(Box::from), s.clone()));
        s
    }

    /// Label values and series, sorted by label values (stable output).
    fn snapshot(&self) -> Vec<([Box<str>; N], Arc<S>)> {
        let map = crate::sync::read(&self.series);
        let mut all: Vec<_> = map.values().flatten().cloned().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }
}

impl<const N: usize> Family<Counter, N> {
    /// Adds one to the series for `values`.
    pub fn inc(&self, values: [&str; N]) {
        self.series(values).inc();
    }

    /// The value of the series for `values` (0 when it does not exist;
    /// reading does not create it).
    pub fn get(&self, values: [&str; N]) -> u64 {
        self.find(values).map_or(0, |c| c.get())
    }

    /// The sum of the series whose label number `label` is `value`.
    pub fn sum_where(&self, label: usize, value: &str) -> u64 {
        let map = crate::sync::read(&self.series);
        map.values()
            .flatten()
            .filter(|(k, _)| k.get(label).is_some_and(|v| &**v == value))
            .map(|(_, c)| c.get())
            .sum()
    }

    pub fn render(&self, out: &mut String) {
        self.header(out, "counter");
        for (values, c) in self.snapshot() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                labels(&self.labels, &values, None),
                c.get()
            );
        }
    }
}

impl<const N: usize> Family<Histogram, N> {
    pub fn render(&self, out: &mut String) {
        self.header(out, "histogram");
        for (values, h) in self.snapshot() {
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i].load(Ordering::Relaxed);
                let le = bound.to_string();
                let l = labels(&self.labels, &values, Some(&le));
                let _ = writeln!(out, "{}_bucket{l} {cumulative}", self.name);
            }
            let count = h.count();
            let l = labels(&self.labels, &values, Some("+Inf"));
            let _ = writeln!(out, "{}_bucket{l} {count}", self.name);
            let l = labels(&self.labels, &values, None);
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{}_sum{l} {sum}", self.name);
            let _ = writeln!(out, "{}_count{l} {count}", self.name);
        }
    }
}

/// `{a="x",b="y"}` (or nothing without labels), with an optional `le`.
pub fn labels(names: &[&str], values: &[Box<str>], le: Option<&str>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Escapes a label value for the text exposition format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one gauge family from `(label values, value)` pairs.
pub fn render_gauge<const N: usize>(
    out: &mut String,
    name: &str,
    help: &str,
    names: [&str; N],
    rows: &[([String; N], f64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (values, v) in rows {
        let boxed: Vec<Box<str>> = values.iter().map(|s| Box::from(s.as_str())).collect();
        let _ = writeln!(out, "{name}{} {v}", labels(&names, &boxed, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_find_their_series_and_render_sorted_and_escaped() {
        let f: Family<Counter, 2> = Family::new("x_total", "help", ["a", "b"]);
        f.inc(["2", "q\"n"]);
        f.inc(["1", "z"]);
        f.inc(["2", "q\"n"]);
        assert_eq!(f.get(["2", "q\"n"]), 2);
        let mut out = String::new();
        f.render(&mut out);
        assert_eq!(
            out,
            "# HELP x_total help\n# TYPE x_total counter\n\
             x_total{a=\"1\",b=\"z\"} 1\nx_total{a=\"2\",b=\"q\\\"n\"} 2\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let f: Family<Histogram, 1> = Family::new("lat_seconds", "help", ["p"]);
        let s = f.series(["a"]);
        s.observe(Duration::from_micros(3));
        s.observe(Duration::from_millis(2));
        s.observe(Duration::from_secs(5));
        let mut out = String::new();
        f.render(&mut out);
        assert!(
            out.contains("lat_seconds_bucket{p=\"a\",le=\"0.000005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_seconds_bucket{p=\"a\",le=\"0.0025\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_seconds_bucket{p=\"a\",le=\"1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_seconds_bucket{p=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("lat_seconds_count{p=\"a\"} 3\n"), "{out}");
    }
}
