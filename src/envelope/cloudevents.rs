//! CloudEvents 1.0: structured mode (single and batch), binary mode (`ce-*`
//! headers), and the structured JSON the read API shows records as.

use std::collections::BTreeMap;

use http::HeaderMap;
use serde_json::{Map, Value};

use super::*;
use crate::event::Event;

/// Encodes an event as a structured-mode CloudEvent for the read API and
/// sinks, so consumers see one standard shape whatever the event came in as.
pub fn to_cloudevent_json(ev: &Event) -> Value {
    let mut out = Map::new();
    let mut put = |k: &str, v: &str| out.insert(k.to_string(), Value::String(v.to_string()));
    put("specversion", "1.0");
    put("id", &ev.id);
    put("type", &ev.event_type);
    put("source", &ev.source);
    put("time", &ev.time);
    put("datacontenttype", &ev.content_type);
    put("dataversion", &ev.version);
    if let Some(key) = &ev.key {
        put("partitionkey", key);
    }
    if let Some(tp) = &ev.traceparent {
        put("traceparent", tp);
    }
    // A subject that came in as a CloudEvents attribute wins over the key.
    if let Some(subject) = ev.attributes.get("subject").or(ev.key.as_ref()) {
        put("subject", subject);
    }
    for (name, value) in &ev.attributes {
        if !CE_MAPPED.contains(&name.as_str()) && name != "subject" {
            put(name, value);
        }
    }
    let data = serde_json::from_str(&ev.data).unwrap_or_else(|_| Value::String(ev.data.clone()));
    out.insert("data".to_string(), data);
    Value::Object(out)
}

/// One structured-mode CloudEvent; `raw_data` is its `data` member as the
/// producer wrote it, when known.
pub(super) fn structured(
    value: Value,
    raw_data: Option<&str>,
    index: Option<usize>,
    trace: Option<String>,
    defaults: &IngestDefaults,
) -> Result<Incoming, EnvelopeError> {
    let Value::Object(mut obj) = value else {
        return Err(bad(index, "", "expected a cloudevent json object"));
    };
    if obj.contains_key("data_base64") {
        let reason = "binary data is not supported; send json in `data`";
        return Err(unsupported(index, "/data_base64", reason));
    }
    let payload = obj.remove("data").unwrap_or(Value::Null);
    let mut attrs = BTreeMap::new();
    for (name, value) in obj {
        // Extensions may be numbers or booleans; core attributes are strings.
        let core = CE_CORE.contains(&name.as_str());
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Number(_) | Value::Bool(_) if !core => value.to_string(),
            _ if core => return Err(bad(index, &format!("/{name}"), "must be a string")),
            _ => {
                let reason = "must be a string, number or boolean";
                return Err(bad(index, &format!("/{name}"), reason));
            }
        };
        attrs.insert(name, text);
    }
    if attrs
        .get("datacontenttype")
        .is_some_and(|ct| !is_json_media(&bare_media(ct)))
    {
        let reason = "only json data is supported (application/json or */*+json)";
        return Err(unsupported(index, "/datacontenttype", reason));
    }
    let data = data_text(raw_data, &payload);
    ce_event(attrs, "/", (payload, data), index, trace, defaults)
}

pub(super) fn binary(
    headers: &HeaderMap,
    body: &[u8],
    trace: Option<String>,
    defaults: &IngestDefaults,
) -> Result<Incoming, EnvelopeError> {
    let mut attrs = BTreeMap::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let raw = value
            .to_str()
            .map_err(|_| bad(None, name.as_str(), "header is not valid text"))?;
        let text = percent_decode(raw)
            .ok_or_else(|| bad(None, name.as_str(), "percent-encoding is not utf-8"))?;
        attrs.entry(attr.to_string()).or_insert(text);
    }
    let payload = (parse_json(body)?, body_text(body)?);
    ce_event(attrs, "ce-", payload, None, trace, defaults)
}

/// Builds the event from CloudEvents attributes; shared by structured mode
/// (fields named `/name`) and binary mode (headers named `ce-name`).
fn ce_event(
    mut attrs: BTreeMap<String, String>,
    prefix: &str,
    (payload, data): (Value, String),
    index: Option<usize>,
    trace: Option<String>,
    defaults: &IngestDefaults,
) -> Result<Incoming, EnvelopeError> {
    let field = |name: &str| format!("{prefix}{name}");
    if attrs.get("specversion").map(String::as_str) != Some("1.0") {
        return Err(bad(index, &field("specversion"), "must be \"1.0\""));
    }
    let mut required = |name: &str| match attrs.remove(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(bad(index, &field(name), "required, a non-empty string")),
    };
    let (id, source, event_type) = (required("id")?, required("source")?, required("type")?);
    // An `Event` always has a valid time, and nothing downstream re-checks it.
    let time = match attrs.get("time") {
        None => chrono::Utc::now().to_rfc3339(),
        Some(t) if chrono::DateTime::parse_from_rfc3339(t).is_ok() => t.clone(),
        Some(_) => {
            let reason = "must be an rfc 3339 timestamp with offset";
            return Err(bad(index, &field("time"), reason));
        }
    };
    let version = attrs.get("dataversion").cloned();
    let version = version.or_else(|| payload.get("version").and_then(integer_text));
    let key = attrs.get("partitionkey").cloned();
    let key = key.or_else(|| key_for(&payload, &defaults.key_rules));
    let key = key.or_else(|| attrs.get("subject").cloned());
    let traceparent = attrs.get("traceparent").cloned().or(trace);
    attrs.retain(|k, _| !CE_MAPPED.contains(&k.as_str()));
    let event = Event {
        id,
        event_type,
        version: version.unwrap_or_else(|| "1".to_string()),
        source,
        key,
        time,
        content_type: JSON.to_string(),
        data,
        attributes: attrs,
        traceparent,
    };
    Ok(incoming(event, Envelope::CloudEvent, payload, index))
}

/// The CloudEvents HTTP binding percent-encodes header values that are not
/// printable ASCII; malformed escapes are kept as they are.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        let hex = hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => (out.push(decoded), i += 3),
            _ => (out.push(b), i += 1),
        };
    }
    String::from_utf8(out).ok()
}
