//! The web page at `/ui`: the routes as a graph with live rates, recent
//! events per topic, follow-one-event, plugin status and reload history,
//! and the dead-letter list.
//!
//! Static files compiled into the binary (no CDN, works offline): one HTML
//! page, one script and one style sheet under `admin/ui/`. The page reads
//! the same API everyone else does, plus `GET /v1/flow`: the graph and its
//! counters in one JSON document, polled once a second (rates are the
//! page's differences between two polls).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use crate::runtime::Runtime;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

/// `GET /v1/flow`: sources, the ingest topic, routes with their stages,
/// topics and sinks, with the counters the page turns into rates.
pub async fn flow(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    let m = crate::obs::metrics();
    let config = rt.live_config();
    let table = rt.routes();
    let topics = rt.store.topics().unwrap_or_default();
    let mut sources = vec![json!({
        "name": "http",
        "kind": "http",
        "label": "POST /v1/events",
    })];
    for (name, s) in &config.sources.sqs {
        sources.push(json!({
            "name": format!("sqs:{name}"),
            "kind": "sqs",
            "label": format!("SQS {}", s.queue.get_ref()),
        }));
    }
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            let live = table.routes().iter().find(|t| t.name == r.name);
            let stages: Vec<Value> = live
                .map(|l| {
                    l.stages
                        .iter()
                        .map(|s| json!({ "plugin": s.plugin.name(), "version": s.plugin.version() }))
                        .collect()
                })
                .unwrap_or_default();
            let edges: Vec<Value> = topics
                .iter()
                .filter_map(|(t, _)| {
                    let n = m.route_outputs.get([&r.name, t]);
                    (n > 0).then(|| json!({ "topic": t, "count": n }))
                })
                .collect();
            json!({
                "name": r.name,
                "match": r.patterns.iter().map(|p| p.get_ref()).collect::<Vec<_>>(),
                "delivery": if r.delivery == crate::config::Delivery::Direct { "direct" } else { "outbox" },
                "declaredTopics": r.topics.as_ref().map(|ts| ts.iter().map(|t| t.get_ref()).collect::<Vec<_>>()),
                "stages": stages,
                "events": m.route_events.get([&r.name]),
                "outputs": edges,
            })
        })
        .collect();
    let sources: Vec<Value> = sources
        .into_iter()
        .map(|mut s| {
            let name = s["name"].as_str().unwrap_or_default().to_string();
            s["events"] = json!(m.events_in.sum_where(0, &name));
            s
        })
        .collect();
    let reserved = rt.config.reserved_topics();
    let sinks: Vec<Value> = rt
        .aws
        .iter()
        .flat_map(|a| a.sinks.iter())
        .map(|s| {
            let from: Vec<&str> = topics
                .iter()
                .filter(|(t, _)| s.forwards(t, &reserved))
                .map(|(t, _)| t.as_str())
                .collect();
            json!({
                "from": from,
                "name": s.name,
                "kind": s.dest.kind(),
                "target": s.dest.target(),
                "delivered": s.stats.delivered.load(Ordering::Relaxed),
                "retrying": s.stats.retrying.load(Ordering::Relaxed),
            })
        })
        .collect();
    Json(json!({
        "ingest": rt.config.ingest.topic,
        "deadLetter": rt.config.router.dead_letter_topic,
        "sources": sources,
        "routes": routes,
        "topics": topics.iter().map(|(t, l)| json!({ "name": t, "length": l })).collect::<Vec<_>>(),
        "sinks": sinks,
    }))
}
