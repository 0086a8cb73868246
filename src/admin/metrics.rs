//! `GET /metrics` (Prometheus text format) and `GET /readyz`.
//!
//! Counters and histograms come from the process registry (`obs::metrics`);
//! gauges that mirror state the router keeps anyway (topic lengths, consumer
//! lag, projection rebuild progress, sink back-off) are read at scrape time,
//! so keeping them costs nothing between scrapes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::obs::metrics::render_gauge;
use crate::runtime::Runtime;

/// The content type of the text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(rt): State<Arc<Runtime>>) -> Response {
    let mut out = String::with_capacity(8 * 1024);
    crate::obs::metrics().render(&mut out);
    if let Err(e) = gauges(&rt, &mut out) {
        // Counters are still worth having when the store cannot be read.
        tracing::warn!(error = %e, "metrics: cannot read the store for gauges");
    }
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], out).into_response()
}

/// The topic a consumer cursor reads, from its name: the pipeline's cursor
/// and projection rebuilds (`rebuild/NAME/gN`) read the ingest topic, a
/// sink's outbox (`sink/NAME/TOPIC`) the topic it forwards.
fn cursor_topic<'a>(rt: &'a Runtime, consumer: &'a str) -> Option<&'a str> {
    if consumer == rt.config.router.consumer || consumer.starts_with("rebuild/") {
        return Some(rt.config.ingest.topic.as_str());
    }
    let rest = consumer.strip_prefix("sink/")?;
    rest.split_once('/').map(|(_, topic)| topic)
}

fn gauges(rt: &Runtime, out: &mut String) -> Result<(), crate::store::StoreError> {
    let topics = rt.store.topics()?;
    let len_of = |t: &str| topics.iter().find(|(n, _)| n == t).map_or(0, |(_, l)| *l);
    let rows: Vec<_> = topics
        .iter()
        .map(|(t, l)| ([t.clone()], *l as f64))
        .collect();
    render_gauge(
        out,
        "switchyard_topic_length",
        "Records in each topic of the embedded log.",
        ["topic"],
        &rows,
    );
    let (runs, waiting) = rt.store.trace_index();
    let help = format!(
        "Sorted runs in the trace index ({} of one size are merged into one): a trace lookup reads one block of each.",
        crate::store::Store::TRACE_FAN_IN
    );
    render_gauge(
        out,
        "switchyard_trace_index_runs",
        &help,
        [],
        &[([], runs as f64)],
    );
    let help = format!(
        "Trace index entries waiting in chunks to be sorted into a run (at {} a run is made).",
        crate::store::Store::TRACE_RUN_ENTRIES
    );
    render_gauge(
        out,
        "switchyard_trace_index_waiting",
        &help,
        [],
        &[([], waiting as f64)],
    );
    render_gauge(
        out,
        "switchyard_store_wal_bytes",
        "Bytes of commits in the store's write-ahead log since its last checkpoint: what a restart would apply again.",
        [],
        &[([], rt.store.wal_bytes() as f64)],
    );
    render_gauge(
        out,
        "switchyard_store_write_failing",
        "1 after a store commit failed, until one succeeds or for 10 s, or while the store refuses every write until a restart.",
        [],
        &[([], f64::from(u8::from(rt.store.write_failure().is_some())))],
    );
    let mut lag = Vec::new();
    for (consumer, cursor) in rt.store.cursors()? {
        if let Some(topic) = cursor_topic(rt, &consumer) {
            let behind = len_of(topic).saturating_sub(cursor);
            lag.push(([consumer.clone(), topic.to_string()], behind as f64));
        }
    }
    render_gauge(
        out,
        "switchyard_consumer_lag",
        "Records of the topic after the consumer's durable cursor.",
        ["consumer", "topic"],
        &lag,
    );
    let names: Vec<String> = crate::sync::read(&rt.plugins).keys().cloned().collect();
    let (mut offset, mut total, mut running) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        if let Some(r) = rt.statuses.view(&name).rebuild {
            offset.push(([name.clone(), r.version.clone()], r.offset as f64));
            total.push(([name.clone(), r.version.clone()], r.total as f64));
            let on = if r.state == "running" { 1.0 } else { 0.0 };
            running.push(([name, r.version], on));
        }
    }
    let labels = ["plugin", "version"];
    let help = "Next offset of the ingest topic a projection rebuild will replay.";
    render_gauge(out, "switchyard_rebuild_offset", help, labels, &offset);
    let help = "Length of the ingest topic when the rebuild last looked.";
    render_gauge(out, "switchyard_rebuild_total", help, labels, &total);
    let help = "1 while a projection rebuild is running.";
    render_gauge(out, "switchyard_rebuild_running", help, labels, &running);
    if let Some(aws) = &rt.aws {
        let rows: Vec<_> = aws
            .sinks
            .iter()
            .map(|s| {
                let r = s.stats.retrying.load(Ordering::Relaxed);
                ([s.name.clone()], if r { 1.0 } else { 0.0 })
            })
            .collect();
        let help = "1 while a sink's last delivery failed and it is retrying.";
        render_gauge(out, "switchyard_sink_retrying", help, ["sink"], &rows);
    }
    Ok(())
}

/// Ready when the store answers and its writes are not failing, every
/// configured plugin is loaded, and no sink is backing off from its broker;
/// otherwise 503 naming the failed check.
pub async fn readyz(State(rt): State<Arc<Runtime>>) -> Response {
    let mut failed = Vec::new();
    if *rt.stopping.borrow() {
        failed.push(json!({ "check": "running", "reason": "the router is stopping" }));
    }
    if let Err(e) = rt.store.topic_len(&rt.config.ingest.topic) {
        failed.push(json!({ "check": "store", "reason": e.to_string() }));
    }
    // Ingest answers 503 meanwhile: a full disk, or a store that refuses
    // writes until a restart.
    if let Some(why) = rt.store.write_failure() {
        failed.push(
            json!({ "check": "store", "reason": format!("store writes are failing: {why}") }),
        );
    }
    let loaded = crate::sync::read(&rt.plugins).clone();
    for name in rt.live_config().plugins.keys() {
        if !loaded.contains_key(name) {
            failed.push(
                json!({ "check": "plugins", "reason": format!("plugin {name} is not loaded") }),
            );
        }
    }
    for sink in rt.aws.iter().flat_map(|a| a.sinks.iter()) {
        if sink.stats.retrying.load(Ordering::Relaxed) {
            let last = sink
                .stats
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default()
                .unwrap_or_default();
            failed.push(json!({
                "check": "sinks",
                "reason": format!("sink {} cannot deliver: {last}", sink.name),
            }));
        }
    }
    // Ingest refuses events meanwhile: traffic is better sent elsewhere.
    if let Some(b) = &rt.backlog
        && let Some(behind) = b.over()
    {
        failed.push(json!({
            "check": "lag",
            "reason": format!("the router is {behind} events behind on the ingest topic, past ingest.max_lag = {}", b.max()),
        }));
    }
    let checks = json!({ "store": "ok", "plugins": loaded.len(), "sinks": rt.aws.as_ref().map_or(0, |a| a.sinks.len()) });
    if failed.is_empty() {
        Json(json!({ "status": "ready", "checks": checks })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "failed": failed })),
        )
            .into_response()
    }
}
