//! A small Prometheus text-format registry of labelled counters, gauges and histograms.
//!
//! Deliberately not a process-global recorder: each pipeline or server owns one, so tests can
//! run several side by side and read exact values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Observations counted into cumulative buckets, with their sum and count.
    Histogram,
}

type Labels = Vec<(String, String)>;

/// One labelled histogram series: per-bucket counts (not cumulative), sum and count.
#[derive(Clone, Debug, Default)]
struct Hist {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

struct Family {
    help: &'static str,
    kind: MetricKind,
    series: BTreeMap<Labels, f64>,
    /// Upper bounds of a histogram's buckets (ascending; `+Inf` is implied).
    bounds: &'static [f64],
    hists: BTreeMap<Labels, Hist>,
}

impl Family {
    fn new(kind: MetricKind, help: &'static str) -> Self {
        Family {
            help,
            kind,
            series: BTreeMap::new(),
            bounds: &[],
            hists: BTreeMap::new(),
        }
    }
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// Labelled counters, gauges and histograms, rendered in the Prometheus text format.
#[derive(Default)]
pub struct Registry {
    families: BTreeMap<&'static str, Family>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a metric so it is rendered (with HELP/TYPE) even before it has values.
    pub fn describe(&mut self, name: &'static str, kind: MetricKind, help: &'static str) {
        self.families
            .entry(name)
            .or_insert_with(|| Family::new(kind, help));
    }

    /// Declares a histogram with these bucket upper bounds (ascending; `+Inf` is added).
    pub fn describe_histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        bounds: &'static [f64],
    ) {
        let f = self
            .families
            .entry(name)
            .or_insert_with(|| Family::new(MetricKind::Histogram, help));
        f.kind = MetricKind::Histogram;
        f.bounds = bounds;
    }

    /// Records one observation in a histogram declared with [`Self::describe_histogram`]
    /// (an undeclared one gets a single `+Inf` bucket).
    pub fn observe(&mut self, name: &'static str, labels_: &[(&str, &str)], value: f64) {
        let f = self
            .families
            .entry(name)
            .or_insert_with(|| Family::new(MetricKind::Histogram, ""));
        let n = f.bounds.len();
        let slot = f.bounds.iter().position(|b| value <= *b).unwrap_or(n);
        let h = f.hists.entry(labels(labels_)).or_insert_with(|| Hist {
            buckets: vec![0; n + 1],
            ..Hist::default()
        });
        h.buckets[slot] += 1;
        h.sum += value;
        h.count += 1;
    }

    /// Number of observations in a histogram series (0 when absent).
    pub fn histogram_count(&self, name: &str, labels_: &[(&str, &str)]) -> u64 {
        let key = labels(labels_);
        self.families
            .get(name)
            .and_then(|f| f.hists.get(&key))
            .map_or(0, |h| h.count)
    }

    fn series(&mut self, name: &'static str, labels_: &[(&str, &str)]) -> &mut f64 {
        let family = self
            .families
            .entry(name)
            .or_insert_with(|| Family::new(MetricKind::Counter, ""));
        family.series.entry(labels(labels_)).or_insert(0.0)
    }

    /// Adds `by` to a counter.
    pub fn inc(&mut self, name: &'static str, labels: &[(&str, &str)], by: u64) {
        *self.series(name, labels) += by as f64;
    }

    /// Sets a gauge.
    pub fn set(&mut self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        *self.series(name, labels) = value;
    }

    /// Current value of a series (0 when absent).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.families
            .get(name)
            .and_then(|f| {
                f.series.iter().find(|(k, _)| {
                    k.len() == labels.len()
                        && k.iter()
                            .zip(labels)
                            .all(|((a, b), (c, d))| a == c && b == d)
                })
            })
            .map_or(0.0, |(_, v)| *v)
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.families {
            if !f.help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {}", f.help);
            }
            let kind = match f.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
                MetricKind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &f.series {
                sample(&mut out, name, "", labels, None, *value);
            }
            for (labels, h) in &f.hists {
                let mut cumulative = 0;
                for (i, n) in h.buckets.iter().enumerate() {
                    cumulative += n;
                    let le = f
                        .bounds
                        .get(i)
                        .map_or_else(|| "+Inf".to_string(), f64::to_string);
                    sample(
                        &mut out,
                        name,
                        "_bucket",
                        labels,
                        Some(&le),
                        cumulative as f64,
                    );
                }
                sample(&mut out, name, "_sum", labels, None, h.sum);
                sample(&mut out, name, "_count", labels, None, h.count as f64);
            }
        }
        out
    }
}

/// One sample line; `le` is appended as the last label (histogram buckets).
fn sample(out: &mut String, name: &str, suffix: &str, labels: &Labels, le: Option<&str>, v: f64) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let le = le.map(|l| ("le".to_string(), l.to_string()));
        for (i, (k, val)) in labels.iter().chain(le.as_ref()).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(val));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {v}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut r = Registry::new();
        r.describe("x_total", MetricKind::Counter, "Things.");
        r.inc("x_total", &[("type", "a\"b")], 2);
        r.inc("x_total", &[("type", "a\"b")], 1);
        r.set("g", &[], 1.5);
        let text = r.render();
        assert!(
            text.contains(
                "# HELP x_total Things.\n# TYPE x_total counter\nx_total{type=\"a\\\"b\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE g counter\ng 1.5\n"), "{text}");
        assert_eq!(r.get("x_total", &[("type", "a\"b")]), 3.0);
    }

    #[test]
    fn renders_histograms_with_cumulative_buckets() {
        let mut r = Registry::new();
        r.describe_histogram("d_seconds", "Durations.", &[0.1, 1.0]);
        r.observe("d_seconds", &[("op", "a")], 0.0625);
        r.observe("d_seconds", &[("op", "a")], 0.5);
        r.observe("d_seconds", &[("op", "a")], 3.0);
        let text = r.render();
        let expected = "# HELP d_seconds Durations.\n# TYPE d_seconds histogram\n\
            d_seconds_bucket{op=\"a\",le=\"0.1\"} 1\n\
            d_seconds_bucket{op=\"a\",le=\"1\"} 2\n\
            d_seconds_bucket{op=\"a\",le=\"+Inf\"} 3\n\
            d_seconds_sum{op=\"a\"} 3.5625\n\
            d_seconds_count{op=\"a\"} 3\n";
        assert_eq!(text, expected);
        assert_eq!(r.histogram_count("d_seconds", &[("op", "a")]), 3);
        assert_eq!(r.histogram_count("d_seconds", &[("op", "b")]), 0);
    }
}
