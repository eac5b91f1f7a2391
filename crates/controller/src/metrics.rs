//! Controller metrics under KIC's names (`ingress_controller_*`), in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Histogram buckets in milliseconds.
const BUCKETS_MS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// `ingress_controller_configuration_push_count`
pub const PUSH_COUNT: &str = "ingress_controller_configuration_push_count";
/// `ingress_controller_configuration_push_duration_milliseconds`
pub const PUSH_DURATION: &str = "ingress_controller_configuration_push_duration_milliseconds";
/// `ingress_controller_configuration_push_size`
pub const PUSH_SIZE: &str = "ingress_controller_configuration_push_size";
/// `ingress_controller_configuration_push_last_successful`
pub const PUSH_LAST_SUCCESSFUL: &str = "ingress_controller_configuration_push_last_successful";
/// `ingress_controller_configuration_push_broken_resource_count`
pub const PUSH_BROKEN: &str = "ingress_controller_configuration_push_broken_resource_count";
/// `ingress_controller_translation_count`
pub const TRANSLATION_COUNT: &str = "ingress_controller_translation_count";
/// `ingress_controller_translation_duration_milliseconds`
pub const TRANSLATION_DURATION: &str = "ingress_controller_translation_duration_milliseconds";
/// `ingress_controller_translation_broken_resource_count`
pub const TRANSLATION_BROKEN: &str = "ingress_controller_translation_broken_resource_count";
/// `ingress_controller_fallback_translation_count`
pub const FALLBACK_TRANSLATION_COUNT: &str = "ingress_controller_fallback_translation_count";
/// `ingress_controller_fallback_translation_broken_resource_count`
pub const FALLBACK_TRANSLATION_BROKEN: &str =
    "ingress_controller_fallback_translation_broken_resource_count";
/// `ingress_controller_fallback_configuration_push_count`
pub const FALLBACK_PUSH_COUNT: &str = "ingress_controller_fallback_configuration_push_count";
/// `ingress_controller_fallback_configuration_push_duration_milliseconds`
pub const FALLBACK_PUSH_DURATION: &str =
    "ingress_controller_fallback_configuration_push_duration_milliseconds";
/// `ingress_controller_fallback_configuration_push_broken_resource_count`
pub const FALLBACK_PUSH_BROKEN: &str =
    "ingress_controller_fallback_configuration_push_broken_resource_count";
/// `ingress_controller_fallback_configuration_push_size`
pub const FALLBACK_PUSH_SIZE: &str = "ingress_controller_fallback_configuration_push_size";
/// `ingress_controller_fallback_configuration_push_last`
pub const FALLBACK_PUSH_LAST: &str = "ingress_controller_fallback_configuration_push_last";

const HELP: &[(&str, &str, &str)] = &[
    (
        PUSH_COUNT,
        "counter",
        "Configuration pushes to a data plane.",
    ),
    (
        PUSH_DURATION,
        "histogram",
        "Duration of configuration pushes.",
    ),
    (
        PUSH_SIZE,
        "gauge",
        "Size of the last configuration pushed (not a fallback one), bytes.",
    ),
    (
        PUSH_LAST_SUCCESSFUL,
        "gauge",
        "Unix time of the last successful push of a configuration (not a fallback one).",
    ),
    (
        PUSH_BROKEN,
        "gauge",
        "Objects a data plane rejected in the last push.",
    ),
    (
        TRANSLATION_COUNT,
        "counter",
        "Translations of the objects into a configuration.",
    ),
    (
        TRANSLATION_DURATION,
        "histogram",
        "Duration of translations.",
    ),
    (
        TRANSLATION_BROKEN,
        "gauge",
        "Objects with translation problems.",
    ),
    (
        FALLBACK_TRANSLATION_COUNT,
        "counter",
        "Fallback translations (broken objects left out).",
    ),
    (
        FALLBACK_TRANSLATION_BROKEN,
        "gauge",
        "Objects left out by the last fallback translation.",
    ),
    (
        FALLBACK_PUSH_COUNT,
        "counter",
        "Pushes of fallback configurations.",
    ),
    (
        FALLBACK_PUSH_DURATION,
        "histogram",
        "Duration of fallback pushes.",
    ),
    (
        FALLBACK_PUSH_BROKEN,
        "gauge",
        "Objects rejected in the last fallback push.",
    ),
    (
        FALLBACK_PUSH_SIZE,
        "gauge",
        "Size of the last fallback configuration pushed, bytes.",
    ),
    (
        FALLBACK_PUSH_LAST,
        "gauge",
        "Unix time of the last successful push of a fallback configuration.",
    ),
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    values: BTreeMap<(String, String), f64>,
    histograms: BTreeMap<(String, String), Histogram>,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(l: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

impl Metrics {
    /// Adds 1 to a counter.
    pub fn inc(&self, name: &str, l: &[(&str, &str)]) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.values.entry((name.into(), labels(l))).or_default() += 1.0;
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, l: &[(&str, &str)], v: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.values.insert((name.into(), labels(l)), v);
    }

    /// Records an observation (milliseconds) in a histogram.
    pub fn observe(&self, name: &str, l: &[(&str, &str)], ms: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = m
            .histograms
            .entry((name.into(), labels(l)))
            .or_insert_with(|| Histogram {
                counts: vec![0; BUCKETS_MS.len()],
                ..Histogram::default()
            });
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += ms;
        h.count += 1;
    }

    /// A counter's or gauge's value (0 when never set).
    pub fn get(&self, name: &str, l: &[(&str, &str)]) -> f64 {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.values
            .get(&(name.to_string(), labels(l)))
            .copied()
            .unwrap_or(0.0)
    }

    /// The sum of a metric's values over every label set.
    pub fn total(&self, name: &str) -> f64 {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.values
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if *kind == "histogram" {
                for ((n, l), h) in &m.histograms {
                    if n != name {
                        continue;
                    }
                    let sep = if l.is_empty() { "" } else { "," };
                    for (i, b) in BUCKETS_MS.iter().enumerate() {
                        let _ =
                            writeln!(out, "{name}_bucket{{{l}{sep}le=\"{b}\"}} {}", h.counts[i]);
                    }
                    let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                    let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
                    let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
                }
            } else {
                for ((n, l), v) in &m.values {
                    if n == name {
                        let _ = writeln!(out, "{name}{{{l}}} {v}");
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
    fn renders_counters_gauges_histograms() {
        let m = Metrics::default();
        m.inc(PUSH_COUNT, &[("success", "true"), ("dataplane", "a\"b")]);
        m.inc(PUSH_COUNT, &[("success", "true"), ("dataplane", "a\"b")]);
        m.set(TRANSLATION_BROKEN, &[], 3.0);
        m.observe(PUSH_DURATION, &[("success", "true")], 7.0);
        let t = m.render();
        assert!(t.contains(
            "ingress_controller_configuration_push_count{success=\"true\",dataplane=\"a\\\"b\"} 2"
        ));
        assert!(t.contains("ingress_controller_translation_broken_resource_count{} 3"));
        assert!(t.contains(
            "ingress_controller_configuration_push_duration_milliseconds_bucket{success=\"true\",le=\"5\"} 0"
        ));
        assert!(t.contains(
            "ingress_controller_configuration_push_duration_milliseconds_bucket{success=\"true\",le=\"10\"} 1"
        ));
        assert_eq!(m.total(PUSH_COUNT), 2.0);
    }
}
