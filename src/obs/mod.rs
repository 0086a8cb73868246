//! Observability: the router's metrics (one registry, named once here), the
//! trace links the pipeline writes next to its outputs, and the W3C trace
//! context helpers.
//!
//! The metrics are process-wide (`metrics()`): a plugin call records its
//! latency without a handle to the runtime. Everything counted here is
//! counted once, after the write that made it true (an event is "in" when
//! its ingest commit returned, "out" when the pipeline's batch committed), so
//! a batch retried after a failed commit is not counted twice.

pub mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde_json::json;

use crate::event::{ATTR_PLUGIN, Event};
use crate::router::Route;
pub use metrics::{Counter, Family, Histogram};

/// Every metric the router keeps itself.
pub struct Metrics {
    /// Events accepted into the ingest topic, per source (`http`,
    /// `sqs:NAME`) and event type.
    pub events_in: Family<Counter, 2>,
    /// Records the pipeline (and direct delivery) wrote to output topics.
    pub events_out: Family<Counter, 1>,
    /// Requests or messages refused at the door, per source and reason.
    pub rejected: Family<Counter, 2>,
    /// Records written to the dead-letter topic, per plugin and reason.
    pub dead_lettered: Family<Counter, 2>,
    /// Plugin call latency, per plugin and version.
    pub plugin_calls: Family<Histogram, 2>,
    /// Calls that ended in a trap, timeout, memory cap or denied capability.
    pub traps: Family<Counter, 3>,
    /// Reload attempts, per kind (`plugin`, `config`) and outcome.
    pub reloads: Family<Counter, 2>,
    /// Events each route ran on (the edge ingest → route on the web page).
    pub route_events: Family<Counter, 1>,
    /// Records each route wrote, per topic (the edge route → topic).
    pub route_outputs: Family<Counter, 2>,
    /// Store commits (one transaction, however many writes it folds in),
    /// per outcome.
    pub store_commits: Family<Histogram, 1>,
    /// Store writes from queueing to durable, per outcome: what a caller
    /// waits. Writes per commit = this count over `store_commits`'.
    pub store_writes: Family<Histogram, 1>,
    /// Store checkpoints (redb made durable, the write-ahead log started
    /// over), per outcome: the writer takes no commit meanwhile.
    pub store_checkpoints: Family<Histogram, 1>,
    /// Syncs of the store's write-ahead log: the disk's part of a commit.
    pub store_wal_syncs: Family<Histogram, 0>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            events_in: Family::new(
                "switchyard_events_in_total",
                "Events accepted into the ingest topic, per source and event type.",
                ["source", "type"],
            ),
            events_out: Family::new(
                "switchyard_events_out_total",
                "Records written to output topics by routes, per topic.",
                ["topic"],
            ),
            rejected: Family::new(
                "switchyard_rejected_total",
                "Requests refused at ingest, per source and reason.",
                ["source", "reason"],
            ),
            dead_lettered: Family::new(
                "switchyard_dead_lettered_total",
                "Records written to the dead-letter topic, per plugin and reason.",
                ["plugin", "reason"],
            ),
            plugin_calls: Family::new(
                "switchyard_plugin_call_duration_seconds",
                "Time of one plugin handle call, per plugin and version.",
                ["plugin", "version"],
            ),
            traps: Family::new(
                "switchyard_plugin_traps_total",
                "Plugin calls that trapped, ran out of time or memory, or used a denied capability.",
                ["plugin", "version", "kind"],
            ),
            reloads: Family::new(
                "switchyard_reloads_total",
                "Reload attempts, per kind (plugin, config) and outcome.",
                ["kind", "outcome"],
            ),
            route_events: Family::new(
                "switchyard_route_events_total",
                "Events each route ran on.",
                ["route"],
            ),
            route_outputs: Family::new(
                "switchyard_route_outputs_total",
                "Records each route wrote, per topic (dead-letter records included).",
                ["route", "topic"],
            ),
            store_commits: Family::new(
                "switchyard_store_commit_duration_seconds",
                "Time of one store commit (the transaction and its durable write; it folds in every write queued), per outcome.",
                ["outcome"],
            ),
            store_writes: Family::new(
                "switchyard_store_write_duration_seconds",
                "Time from a store write's queueing to the end of its commit (what an ingest request or a pipeline batch waits for durability), per outcome.",
                ["outcome"],
            ),
            store_checkpoints: Family::new(
                "switchyard_store_checkpoint_duration_seconds",
                "Time of one store checkpoint (the database made durable up to the write-ahead log's end, which then starts over), per outcome; no write commits meanwhile.",
                ["outcome"],
            ),
            store_wal_syncs: Family::new(
                "switchyard_store_wal_sync_duration_seconds",
                "Time of one sync of the store's write-ahead log (the disk's part of a store commit).",
                [],
            ),
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// Writes every family in the text exposition format.
    pub fn render(&self, out: &mut String) {
        self.events_in.render(out);
        self.events_out.render(out);
        self.rejected.render(out);
        self.dead_lettered.render(out);
        self.plugin_calls.render(out);
        self.traps.render(out);
        self.reloads.render(out);
        self.route_events.render(out);
        self.route_outputs.render(out);
        self.store_commits.render(out);
        self.store_writes.render(out);
        self.store_checkpoints.render(out);
        self.store_wal_syncs.render(out);
    }
}

/// What a plugin records per call: its latency series, resolved at load.
#[derive(Clone)]
pub struct PluginSeries {
    latency: Arc<Histogram>,
    name: Arc<str>,
    version: Arc<str>,
}

impl PluginSeries {
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            latency: metrics().plugin_calls.series([name, version]),
            name: name.into(),
            version: version.into(),
        }
    }

    /// One call took `d`; `fault` is the kind of a trap-like failure.
    pub fn observe(&self, d: Duration, fault: Option<&str>) {
        self.latency.observe(d);
        if let Some(kind) = fault {
            metrics().traps.inc([&self.name, &self.version, kind]);
        }
    }
}

/// Counts of one write, taken before it and recorded only once it succeeded.
#[derive(Debug, Default)]
pub struct Tally {
    out: HashMap<String, u64>,
    dead: HashMap<(String, String), u64>,
    routes: HashMap<String, u64>,
    edges: HashMap<(String, String), u64>,
}

impl Tally {
    /// The output and dead-letter records among `appends` (records to
    /// `skip`, the ingest topic, are inputs, not outputs).
    pub fn of(appends: &[(String, Event)], skip: &str, dead_letter: &str) -> Self {
        let mut t = Tally::default();
        t.add(appends, skip, dead_letter);
        t
    }

    /// Route `route` ran on one event and wrote `appends`.
    pub fn route(&mut self, route: &str, appends: &[(String, Event)]) {
        *self.routes.entry(route.to_string()).or_default() += 1;
        for (topic, _) in appends {
            *self
                .edges
                .entry((route.to_string(), topic.clone()))
                .or_default() += 1;
        }
    }

    /// Like [`Tally::of`], into this tally.
    pub fn add(&mut self, appends: &[(String, Event)], skip: &str, dead_letter: &str) {
        let t = self;
        for (topic, ev) in appends {
            if topic == dead_letter {
                let plugin = ev.attributes.get(ATTR_PLUGIN).cloned().unwrap_or_default();
                let reason = ev.attributes.get("reason").cloned().unwrap_or_default();
                *t.dead.entry((plugin, reason)).or_default() += 1;
            } else if topic != skip {
                *t.out.entry(topic.clone()).or_default() += 1;
            }
        }
    }

    /// The write succeeded: count it.
    pub fn record(self) {
        let m = metrics();
        for (topic, n) in self.out {
            m.events_out.series([&topic]).add(n);
        }
        for ((plugin, reason), n) in self.dead {
            m.dead_lettered.series([&plugin, &reason]).add(n);
        }
        for (route, n) in self.routes {
            m.route_events.series([&route]).add(n);
        }
        for ((route, topic), n) in self.edges {
            m.route_outputs.series([&route, &topic]).add(n);
        }
    }
}

/// What the trace of an input shows about an output of `route`: the route
/// and the plugin version of every stage it passed (stored with the trace
/// link).
pub fn route_link(route: &Route) -> Vec<u8> {
    let stages: Vec<_> = route
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| json!({ "stage": i, "plugin": s.plugin.name(), "version": s.plugin.version() }))
        .collect();
    json!({ "route": route.name, "stages": stages })
        .to_string()
        .into_bytes()
}

/// The trace link of an output of a direct-delivery route, written with its
/// input during the request: the producing plugin is on the output itself.
pub fn direct_link(out: &Event) -> Vec<u8> {
    let attr = |k: &str| out.attributes.get(k).cloned();
    json!({
        "route": null,
        "delivery": "direct",
        "stages": [{ "plugin": attr(ATTR_PLUGIN), "version": attr(crate::event::ATTR_PLUGIN_VERSION) }],
    })
    .to_string()
    .into_bytes()
}

/// The trace link of a dead-letter record (its data says the rest).
pub fn dead_letter_link(route: Option<&str>) -> Vec<u8> {
    json!({ "route": route, "deadLetter": true })
        .to_string()
        .into_bytes()
}

/// Whether `tp` is a well-formed W3C `traceparent` (version 00:
/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero).
pub fn valid_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && nonzero(parts[1])
        && hex(parts[2], 16)
        && nonzero(parts[2])
        && hex(parts[3], 2)
}

/// The trace id of a W3C `traceparent`, when it has one.
pub fn trace_id(tp: &str) -> Option<&str> {
    valid_traceparent(tp).then(|| &tp[3..35])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(ok));
        assert_eq!(trace_id(ok), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!valid_traceparent("00-abc-def-01"));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
    }

    #[test]
    fn a_tally_counts_outputs_and_dead_letters_apart_from_inputs() {
        let ev = |attrs: &[(&str, &str)]| Event {
            id: "x".into(),
            event_type: "t".into(),
            version: "1".into(),
            source: "s".into(),
            key: None,
            time: String::new(),
            content_type: "application/json".into(),
            data: "{}".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            traceparent: None,
        };
        let appends = vec![
            ("events".to_string(), ev(&[])),
            ("out".to_string(), ev(&[])),
            ("out".to_string(), ev(&[])),
            (
                "dlq".to_string(),
                ev(&[("plugin", "p"), ("reason", "trap")]),
            ),
        ];
        let t = Tally::of(&appends, "events", "dlq");
        assert_eq!(t.out.get("out"), Some(&2));
        assert_eq!(t.out.len(), 1);
        assert_eq!(t.dead.get(&("p".into(), "trap".into())), Some(&1));
    }
}
