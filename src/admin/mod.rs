//! The read and admin API: topics, their events (page by page and live over
//! Server-Sent Events), health and readiness, metrics, event traces, and the
//! web page; `auth.rs` guards the mutating endpoints with the admin token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

mod auth;
mod dead_letter;
mod metrics;
mod plugins;
mod trace;
mod ui;

pub use auth::{AdminToken, require_admin};

use crate::config::check_topic_name;
use crate::envelope::to_cloudevent_json;
use crate::runtime::Runtime;
use crate::store::Record;
use crate::transport::http::error;

/// Default page size of `GET /v1/topics/{topic}/events`.
const DEFAULT_PAGE: usize = 100;
/// Largest page: bounds the memory and time of one read request.
const MAX_PAGE: usize = 1000;
/// Records sent per read while streaming a topic that is behind.
const STREAM_CHUNK: usize = 256;

pub fn routes(rt: Arc<Runtime>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/events/{id}/trace", get(trace::trace))
        .route("/v1/flow", get(ui::flow))
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/style.css", get(ui::style))
        .route("/v1/topics", get(topics))
        .route("/v1/topics/{topic}/events", get(events))
        .route("/v1/topics/{topic}/stream", get(stream))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/{name}/reload", post(plugins::reload))
        .route("/v1/plugins/{name}/rebuild", post(plugins::rebuild))
        .route("/v1/plugins/{name}/state", get(plugins::state))
        .route("/v1/config", get(plugins::config))
        .route("/v1/config/reload", post(plugins::reload_config))
        .route("/v1/dead-letter", get(dead_letter::list))
        .route("/v1/dead-letter/replay", post(dead_letter::replay))
        .with_state(rt)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store unavailable",
        json!([{ "field": "store", "reason": e.to_string() }]),
    )
}

async fn topics(State(rt): State<Arc<Runtime>>) -> Response {
    match rt.store.topics() {
        Ok(t) => {
            let list: Vec<_> = t
                .into_iter()
                .map(|(name, length)| json!({ "name": name, "length": length }))
                .collect();
            Json(json!({ "topics": list })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    from: Option<u64>,
    limit: Option<usize>,
}

/// A record as the API shows it: a CloudEvents 1.0 JSON object plus `offset`.
pub fn record_json(r: &Record) -> serde_json::Value {
    let mut v = to_cloudevent_json(&r.event);
    v["offset"] = json!(r.offset);
    v
}

fn bad_topic(topic: &str) -> Option<Response> {
    check_topic_name(topic).err().map(|reason| {
        error(
            StatusCode::BAD_REQUEST,
            "bad topic name",
            json!([{ "field": "topic", "reason": reason }]),
        )
    })
}

async fn events(
    State(rt): State<Arc<Runtime>>,
    Path(topic): Path<String>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(r) = bad_topic(&topic) {
        return r;
    }
    let Ok(Query(page)) = page else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query",
            json!([{ "field": "from/limit", "reason": "from and limit must be non-negative integers" }]),
        );
    };
    let from = page.from.unwrap_or(0);
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    match rt.store.read(&topic, from, limit) {
        Ok(records) => {
            let next = records.last().map(|r| r.offset + 1).unwrap_or(from);
            let events: Vec<_> = records.iter().map(record_json).collect();
            Json(json!({ "events": events, "next": next })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
struct StreamFrom {
    from: Option<u64>,
}

/// Live stream of a topic from `from` (or after `Last-Event-ID`), as SSE
/// events whose `id` is the offset, so a client reconnects where it left off.
async fn stream(
    State(rt): State<Arc<Runtime>>,
    Path(topic): Path<String>,
    Query(q): Query<StreamFrom>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = bad_topic(&topic) {
        return r;
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|o| o + 1);
    let from = resume.or(q.from).unwrap_or(0);
    let mut stopping = rt.stopping.subscribe();
    let stream = live(rt, topic, from).take_until(async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn live(
    rt: Arc<Runtime>,
    topic: String,
    from: u64,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let len = rt.store.watch(&topic);
    let state = (
        rt,
        topic,
        from,
        len,
        std::collections::VecDeque::<SseEvent>::new(),
        false,
    );
    futures::stream::unfold(
        state,
        |(rt, topic, mut next, mut len, mut pending, failed)| async move {
            loop {
                if let Some(ev) = pending.pop_front() {
                    return Some((Ok(ev), (rt, topic, next, len, pending, failed)));
                }
                if failed {
                    // The client reconnects with Last-Event-ID and resumes.
                    return None;
                }
                match rt.store.read(&topic, next, STREAM_CHUNK) {
                    Ok(records) if !records.is_empty() => {
                        for r in &records {
                            next = r.offset + 1;
                            pending.push_back(
                                SseEvent::default()
                                    .id(r.offset.to_string())
                                    .event("record")
                                    .data(record_json(r).to_string()),
                            );
                        }
                    }
                    Ok(_) => {
                        if len.changed().await.is_err() {
                            return None;
                        }
                    }
                    Err(e) => {
                        let ev = SseEvent::default().event("error").data(e.to_string());
                        return Some((Ok(ev), (rt, topic, next, len, pending, true)));
                    }
                }
            }
        },
    )
}
