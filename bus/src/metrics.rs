//! The node's Prometheus registry. Components register their metrics when they are built;
//! the ops server encodes the lot on `/metrics`, as OpenMetrics for scrapers that ask for it
//! (Prometheus does) and as the classic text format (0.0.4) for everything else (`curl`,
//! `promtool check metrics`, older agents).

use std::{any::Any, collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use prometheus_client::{encoding::text::encode, registry::Registry};

/// A shared Prometheus registry. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// Metric families several components of one node write to (a dead-letter counter per
    /// sink, say): registered once, handed out again by name, because a registry that holds
    /// one name twice exposes it twice and scrapers reject the whole page.
    shared: Arc<Mutex<HashMap<String, Box<dyn Any + Send>>>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers metrics under the `govex` prefix. `f` gets the registry to add to.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut registry = self.registry.lock();
        f(registry.sub_registry_with_prefix("govex"));
    }

    /// Registers a clone of `metric` (a family or metric shares its state with its clones)
    /// as `name` with `help`, and gives it back: a component makes each metric it keeps with
    /// one call.
    pub fn add<M: prometheus_client::registry::Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        self.register(|registry| registry.register(name, help, metric.clone()));
        metric
    }

    /// The metric `name` (under the `govex` prefix), registered on first use and the same
    /// handle for every later caller.
    pub fn shared<M>(&self, name: &str, help: &str) -> M
    where
        M: prometheus_client::registry::Metric + Clone + Default,
    {
        let mut shared = self.shared.lock();
        if let Some(existing) = shared.get(name).and_then(|m| m.downcast_ref::<M>()) {
            return existing.clone();
        }
        let metric = M::default();
        self.register(|r| r.register(name, help, metric.clone()));
        shared.insert(name.to_owned(), Box::new(metric.clone()));
        metric
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry.lock());
        out
    }

    /// The classic Prometheus text exposition (version 0.0.4) of every registered metric.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }
}

/// Rewrites prometheus-client's OpenMetrics output into the 0.0.4 text format. The two differ
/// only in naming and markers for what govex exposes: an OpenMetrics counter family `x` has
/// samples `x_total`, which the text format names on its `HELP`/`TYPE` lines too; `# UNIT`
/// and `# EOF` do not exist there, and `unknown` is called `untyped`.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // prometheus-client writes HELP before TYPE: hold HELP until the type names the family.
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = pending_help.take() {
                push_help(&mut out, name, "", help);
            }
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" | "stateset" | "gaugehistogram" => ("", "untyped"),
                other => ("", other),
            };
            if let Some((help_name, help)) = pending_help.take() {
                push_help(&mut out, help_name, if help_name == name { suffix } else { "" }, help);
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        if let Some((name, help)) = pending_help.take() {
            push_help(&mut out, name, "", help);
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn push_help(out: &mut String, name: &str, suffix: &str, help: &str) {
    out.push_str(&format!("# HELP {name}{suffix} {help}\n"));
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};

    use super::*;

    #[test]
    fn text_format_names_counters_by_their_samples_and_drops_openmetrics_markers() {
        let metrics = Metrics::new();
        let counter = Counter::<u64>::default();
        let gauge = Gauge::<i64>::default();
        let histogram = Histogram::new([0.1, 1.0]);
        metrics.register(|r| {
            r.register("intake_records", "Records accepted", counter.clone());
            r.register_with_unit("latency", "Latency", prometheus_client::registry::Unit::Seconds, histogram.clone());
            r.register("in_flight", "In flight", gauge.clone());
        });
        counter.inc_by(3);
        gauge.set(2);
        histogram.observe(0.5);
        let text = metrics.encode_text();
        assert!(text.contains("# HELP govex_intake_records_total Records accepted.\n"), "{text}");
        assert!(text.contains("# TYPE govex_intake_records_total counter\ngovex_intake_records_total 3\n"), "{text}");
        assert!(text.contains("# TYPE govex_latency_seconds histogram\n"), "{text}");
        assert!(text.contains("govex_latency_seconds_bucket{le=\"1.0\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE govex_in_flight gauge\ngovex_in_flight 2\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }

    #[test]
    fn a_shared_family_is_registered_once_and_counts_for_every_holder() {
        let metrics = Metrics::new();
        let first: Family<Vec<(String, String)>, Counter> = metrics.shared("bus_dead_letters", "Dead letters");
        let second: Family<Vec<(String, String)>, Counter> = metrics.shared("bus_dead_letters", "Dead letters");
        first.get_or_create(&vec![("component".into(), "a".into())]).inc();
        second.get_or_create(&vec![("component".into(), "b".into())]).inc();
        let text = metrics.encode();
        assert_eq!(text.matches("# TYPE govex_bus_dead_letters counter").count(), 1, "{text}");
        assert!(text.contains("govex_bus_dead_letters_total{component=\"a\"} 1"), "{text}");
        assert!(text.contains("govex_bus_dead_letters_total{component=\"b\"} 1"), "{text}");
    }
}
