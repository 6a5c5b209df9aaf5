//! A small Prometheus text-format registry of labelled counters and gauges.
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
}

struct Family {
    help: &'static str,
    kind: MetricKind,
    series: BTreeMap<Vec<(String, String)>, f64>,
}

/// Labelled counters and gauges, rendered in the Prometheus text format.
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
        self.families.entry(name).or_insert(Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
    }

    fn series(&mut self, name: &'static str, labels: &[(&str, &str)]) -> &mut f64 {
        let family = self.families.entry(name).or_insert(Family {
            help: "",
            kind: MetricKind::Counter,
            series: BTreeMap::new(),
        });
        let key = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        family.series.entry(key).or_insert(0.0)
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
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &f.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {value}");
            }
        }
        out
    }
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
}
