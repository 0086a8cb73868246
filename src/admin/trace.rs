//! `GET /v1/events/{id}/trace`: where one event went.
//!
//! How it is recorded, cheaply: one `trace` entry per input event in the
//! store (id → its topic and offset, and a link per output or dead-letter
//! record: topic, offset, route and the plugin version of each stage),
//! written in the same transaction as those records by the pipeline (and,
//! under its own key, by direct delivery). One insert per event, not per
//! record, keeps it off the throughput; the trace is one
//! index read plus one read per record, and never names an output that was
//! not committed. An input not processed yet has no entry: it is found by
//! scanning the ingest topic from the pipeline's cursor (at most
//! `PENDING_SCAN` records). Outputs are traced from their input; they carry
//! `plugin` / `pluginversion` attributes and ids derived from the input id.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::event::{ATTR_PLUGIN, ATTR_PLUGIN_VERSION, Event};
use crate::runtime::Runtime;
use crate::store::StoreError;
use crate::transport::http::error;

pub async fn trace(State(rt): State<Arc<Runtime>>, Path(id): Path<String>) -> Response {
    match build(&rt, &id) {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no such event",
            json!([{ "field": "id", "reason": format!("no input event has id {id:?} (outputs are traced from their input)") }]),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable",
            json!([{ "field": "store", "reason": e.to_string() }]),
        ),
    }
}

fn record(rt: &Runtime, topic: &str, offset: u64) -> Result<Option<Event>, StoreError> {
    Ok(rt
        .store
        .read(topic, offset, 1)?
        .into_iter()
        .find(|r| r.offset == offset)
        .map(|r| r.event))
}

/// Records of the ingest topic after the pipeline's cursor searched for a
/// pending event: bounds the cost of a lookup on a router that is far behind.
const PENDING_SCAN: u64 = 10_000;

/// A pending input: `(offset, event)` among the unprocessed records.
fn find_pending(rt: &Runtime, id: &str) -> Result<Option<(u64, Event)>, StoreError> {
    let topic = &rt.config.ingest.topic;
    let cursor = rt.store.cursor(&rt.config.router.consumer)?;
    let end = rt.store.topic_len(topic)?.min(cursor + PENDING_SCAN);
    let mut from = cursor;
    while from < end {
        let records = rt.store.read(topic, from, 256)?;
        let Some(last) = records.last().map(|r| r.offset) else {
            break;
        };
        if let Some(r) = records.into_iter().find(|r| r.event.id == id) {
            return Ok(Some((r.offset, r.event)));
        }
        from = last + 1;
    }
    Ok(None)
}

/// The trace of input event `id`, or `None` when no processed or pending
/// input has that id.
pub fn build(rt: &Runtime, id: &str) -> Result<Option<Value>, StoreError> {
    let entries = rt.store.trace(id)?;
    let from = entries
        .iter()
        .find_map(|e| Some((e["from"][0].as_str()?.to_string(), e["from"][1].as_u64()?)));
    let cursor = rt.store.cursor(&rt.config.router.consumer)?;
    let (topic, offset, ev) = match from {
        Some((topic, offset)) => match record(rt, &topic, offset)? {
            Some(ev) if ev.id == id => (topic, offset, ev),
            _ => return Ok(None),
        },
        None => match find_pending(rt, id)? {
            Some((offset, ev)) => (rt.config.ingest.topic.clone(), offset, ev),
            None => return Ok(None),
        },
    };
    let state = if topic == rt.config.ingest.topic && offset >= cursor {
        "pending"
    } else {
        "processed"
    };
    let dlq = &rt.config.router.dead_letter_topic;
    let mut routes: BTreeMap<String, Value> = BTreeMap::new();
    let (mut outputs, mut dead_letters) = (Vec::new(), Vec::new());
    let links: Vec<Value> = entries
        .iter()
        .filter_map(|e| e["links"].as_array())
        .flatten()
        .cloned()
        .collect();
    for link in links {
        let (Some(t), Some(o)) = (link[0].as_str(), link[1].as_u64()) else {
            continue;
        };
        let info = &link[2];
        let route = info["route"].as_str().unwrap_or("").to_string();
        let Some(out) = record(rt, t, o)? else {
            continue;
        };
        let entry = routes.entry(route).or_insert_with(|| {
            json!({ "route": info["route"], "stages": info.get("stages").cloned().unwrap_or(json!([])), "outputs": [], "deadLetters": [] })
        });
        if t == dlq {
            let data: Value = serde_json::from_str(&out.data).unwrap_or(Value::Null);
            let d = json!({
                "topic": t, "offset": o, "id": out.id,
                "reason": data["reason"], "error": data["error"], "stage": data["stage"],
                "plugin": data["plugin"], "pluginVersion": data["pluginVersion"],
                "attempts": data["attempts"], "at": data["at"],
            });
            push(entry, "deadLetters", d.clone());
            dead_letters.push(d);
        } else {
            let attr = |k: &str| out.attributes.get(k).cloned();
            let o = json!({
                "topic": t, "offset": o, "id": out.id, "type": out.event_type,
                "route": info["route"], "plugin": attr(ATTR_PLUGIN),
                "pluginVersion": attr(ATTR_PLUGIN_VERSION), "traceparent": out.traceparent,
            });
            push(entry, "outputs", o.clone());
            outputs.push(o);
        }
    }
    let trace_id = ev.traceparent.as_deref().and_then(crate::obs::trace_id);
    Ok(Some(json!({
        "id": ev.id,
        "type": ev.event_type,
        "key": ev.key,
        "traceparent": ev.traceparent,
        "traceId": trace_id,
        "state": state,
        "from": {
            "topic": topic,
            "offset": offset,
            "source": ev.source,
            "time": ev.time,
            "attributes": ev.attributes,
        },
        "routes": routes.into_values().collect::<Vec<_>>(),
        "outputs": outputs,
        "deadLetters": dead_letters,
    })))
}

fn push(entry: &mut Value, key: &str, v: Value) {
    if let Some(a) = entry[key].as_array_mut() {
        a.push(v);
    }
}
