//! `GET /v1/events/{id}/trace`: where one event went.
//!
//! How it is recorded, cheaply: the store indexes every record by event id
//! (`ids`: id → topic, offset), and the pipeline writes, in the same
//! transaction as an input's outputs and dead-letter records, one trace link
//! per record (`trace`: input id, topic, offset → route and the plugin
//! version of each stage). So the trace is two index reads plus one read per
//! record, and it can never name an output that was not committed. Outputs
//! also carry `plugin` / `pluginversion` attributes and ids derived from the
//! input id, which the trace shows as they are.

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
            json!([{ "field": "id", "reason": format!("no record has id {id:?}") }]),
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

/// The trace of event `id`, or `None` when no record has that id.
pub fn build(rt: &Runtime, id: &str) -> Result<Option<Value>, StoreError> {
    let Some((topic, offset)) = rt.store.locate(id)? else {
        return Ok(None);
    };
    let Some(ev) = record(rt, &topic, offset)? else {
        return Ok(None);
    };
    let ingest = &rt.config.ingest.topic;
    let dlq = &rt.config.router.dead_letter_topic;
    let state = if &topic != ingest {
        "output"
    } else if rt.store.cursor(&rt.config.router.consumer)? > offset {
        "processed"
    } else {
        "pending"
    };
    let mut routes: BTreeMap<String, Value> = BTreeMap::new();
    let (mut outputs, mut dead_letters) = (Vec::new(), Vec::new());
    for (t, o, info) in rt.store.caused_by(id)? {
        let info: Value = serde_json::from_slice(&info).unwrap_or(Value::Null);
        let route = info["route"].as_str().unwrap_or("").to_string();
        let Some(out) = record(rt, &t, o)? else {
            continue;
        };
        let entry = routes.entry(route.clone()).or_insert_with(|| {
            json!({ "route": info["route"], "stages": info.get("stages").cloned().unwrap_or(json!([])), "outputs": [], "deadLetters": [] })
        });
        if &t == dlq {
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
