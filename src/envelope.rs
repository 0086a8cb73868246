//! Decoding HTTP request bodies into [`Event`]s, and encoding events back out
//! as CloudEvents JSON.
//!
//! Two envelopes arrive over HTTP: HMPPS domain events (plain JSON, one or a
//! batch) and CloudEvents 1.0 (structured, batched or binary mode). This module
//! only checks what it needs to build an [`Event`]; whether the payload is
//! *valid* is the schema registry's job, which is why [`Incoming`] keeps the
//! parsed payload and the envelope it came in.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::event::Event;

/// The media type every decoded event's `data` carries.
const JSON: &str = "application/json";
const CE_SINGLE: &str = "application/cloudevents+json";
const CE_BATCH: &str = "application/cloudevents-batch+json";
/// Core CloudEvents attributes, whose values must be strings.
#[rustfmt::skip]
const CE_CORE: &[&str] = &[
    "specversion", "id", "source", "type", "time", "subject", "dataschema", "datacontenttype",
];
/// CloudEvents attributes that map onto dedicated [`Event`] fields, so they
/// are neither copied into nor emitted from `attributes`.
#[rustfmt::skip]
const CE_MAPPED: &[&str] = &[
    "specversion", "id", "source", "type", "time", "datacontenttype", "data", "data_base64",
    "partitionkey", "dataversion", "traceparent",
];

/// How to derive an event's ordering key from its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRule {
    /// A JSON pointer into the payload, e.g. `/additionalInformation/nomsNumber`.
    Pointer(String),
    /// The value of the first `personReference.identifiers[]` entry of this
    /// type, e.g. `NOMS` — the usual key for HMPPS person events.
    Identifier(String),
}

/// A key rule in the configuration could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key rule `{0}`: expected a json pointer such as /a/b or identifier:TYPE")]
pub struct KeyRuleError(pub String);

impl FromStr for KeyRule {
    type Err = KeyRuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(kind) = s.strip_prefix("identifier:") {
            if !kind.is_empty() {
                return Ok(KeyRule::Identifier(kind.to_string()));
            }
        } else if s.starts_with('/') && valid_pointer_escapes(s) {
            return Ok(KeyRule::Pointer(s.to_string()));
        }
        Err(KeyRuleError(s.to_string()))
    }
}

impl fmt::Display for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Pointer(p) => f.write_str(p),
            KeyRule::Identifier(t) => write!(f, "identifier:{t}"),
        }
    }
}

/// RFC 6901 allows `~` only as `~0` or `~1`; catching a typo at config load
/// beats a key that silently never matches.
fn valid_pointer_escapes(p: &str) -> bool {
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

/// What the HTTP source fills in that the envelope itself may not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestDefaults {
    /// `source` of HMPPS events, which carry none, e.g. `urn:switchyard:http`.
    pub source: String,
    /// Tried in order; the first rule that yields a value gives the key.
    pub key_rules: Vec<KeyRule>,
}

impl Default for IngestDefaults {
    fn default() -> Self {
        Self {
            source: "urn:switchyard:http".to_string(),
            key_rules: Vec::new(),
        }
    }
}

/// The envelope an event arrived in: the HMPPS base schema applies only to
/// events that came as HMPPS domain events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    Hmpps,
    CloudEvent,
}

/// One decoded event plus what schema validation needs to check it.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub event: Event,
    pub envelope: Envelope,
    /// The parsed payload (the HMPPS event, or the CloudEvent's `data`).
    pub payload: Value,
    /// Position in the request's batch (0 for a single event), so that errors
    /// and responses can point at the right item.
    pub index: usize,
    /// Whether the event came in a batch.
    pub batch: bool,
}

/// Why a request body could not be decoded; carries enough to answer the
/// producer precisely: which item, which field, why, and the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {reason}", index.map(|i| format!("item {i}, ")).unwrap_or_default(),
    if field.is_empty() { "body" } else { field })]
pub struct EnvelopeError {
    pub kind: ErrorKind,
    /// The batch item at fault; `None` when the error is about the request.
    pub index: Option<usize>,
    /// A JSON pointer into the item (`""` for the whole body) or a header name.
    pub field: String,
    pub reason: String,
}

/// The two ways a request can be refused, which answer differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed, or lacking something required.
    Invalid,
    /// A media type (of the body or of a CloudEvent's data) we do not decode.
    Unsupported,
}

impl EnvelopeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::Invalid => 400,
            ErrorKind::Unsupported => 415,
        }
    }
}

fn error(kind: ErrorKind, index: Option<usize>, field: &str, reason: String) -> EnvelopeError {
    EnvelopeError {
        kind,
        index,
        field: field.to_string(),
        reason,
    }
}

fn bad(index: Option<usize>, field: &str, reason: impl Into<String>) -> EnvelopeError {
    error(ErrorKind::Invalid, index, field, reason.into())
}

fn unsupported(index: Option<usize>, field: &str, reason: impl Into<String>) -> EnvelopeError {
    error(ErrorKind::Unsupported, index, field, reason.into())
}

fn incoming(event: Event, envelope: Envelope, payload: Value, index: Option<usize>) -> Incoming {
    Incoming {
        event,
        envelope,
        payload,
        index: index.unwrap_or(0),
        batch: index.is_some(),
    }
}

/// The events of one request, and whether it was a batch (answered with the
/// list of accepted events) or a single event.
#[derive(Debug)]
pub struct Decoded {
    pub events: Vec<Incoming>,
    pub batch: bool,
}

/// Decodes one HTTP request into events, choosing the envelope from the
/// `content-type` and `ce-specversion` headers.
pub fn decode_http(
    headers: &HeaderMap,
    body: &[u8],
    defaults: &IngestDefaults,
) -> Result<Decoded, EnvelopeError> {
    let events = decode_events(headers, body, defaults)?;
    let batch = events.first().is_some_and(|e| e.batch);
    Ok(Decoded { events, batch })
}

fn decode_events(
    headers: &HeaderMap,
    body: &[u8],
    defaults: &IngestDefaults,
) -> Result<Vec<Incoming>, EnvelopeError> {
    let media = media_type(headers.get(http::header::CONTENT_TYPE))?;
    let trace = match headers.get("traceparent").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.to_string()),
        Some(Err(_)) => return Err(bad(None, "traceparent", "header is not valid text")),
    };
    let binary_mode = headers.contains_key("ce-specversion");
    if media == CE_SINGLE || media == CE_BATCH {
        let batch = media == CE_BATCH;
        let items = match parse_json(body)? {
            Value::Array(items) if batch => non_empty(items)?,
            obj @ Value::Object(_) if !batch => vec![obj],
            _ if batch => return Err(bad(None, "", "expected a json array of cloudevents")),
            _ => return Err(bad(None, "", "expected a cloudevent json object")),
        };
        let items = items.into_iter().enumerate();
        items
            .map(|(i, v)| structured(v, batch.then_some(i), trace.clone(), defaults))
            .collect()
    } else if !is_json_media(&media) && binary_mode {
        let reason = format!("binary-mode cloudevents need a json content type, got `{media}`");
        Err(unsupported(None, "content-type", reason))
    } else if !is_json_media(&media) {
        let reason = format!(
            "unsupported content type `{media}`; accepted: {JSON}, {CE_SINGLE}, {CE_BATCH}, \
             or any json type with ce-* headers (binary mode)"
        );
        Err(unsupported(None, "content-type", reason))
    } else if binary_mode {
        Ok(vec![binary(headers, body, trace, defaults)?])
    } else {
        hmpps(body, trace, defaults)
    }
}

/// Derives the ordering key from the first rule that finds a non-empty
/// string or a number in the payload.
pub fn key_for(payload: &Value, rules: &[KeyRule]) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    rules.iter().find_map(|rule| match rule {
        KeyRule::Pointer(p) => scalar(payload.pointer(p)?),
        KeyRule::Identifier(kind) => payload
            .pointer("/personReference/identifiers")?
            .as_array()?
            .iter()
            .find(|id| id.get("type").and_then(Value::as_str) == Some(kind.as_str()))
            .and_then(|id| scalar(id.get("value")?)),
    })
}

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

/// The lower-cased media type without parameters; missing is refused rather
/// than guessed, since the envelope depends on it.
fn media_type(header: Option<&http::HeaderValue>) -> Result<String, EnvelopeError> {
    let err = |reason: &str| unsupported(None, "content-type", reason);
    let raw = header.ok_or_else(|| err("content-type header required"))?;
    let raw = raw
        .to_str()
        .map_err(|_| err("content-type header is not valid text"))?;
    let media = bare_media(raw);
    if media.is_empty() {
        return Err(err("content-type header required"));
    }
    Ok(media)
}

fn bare_media(raw: &str) -> String {
    raw.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media(media: &str) -> bool {
    media == JSON || (media.contains('/') && media.ends_with("+json"))
}

fn parse_json(body: &[u8]) -> Result<Value, EnvelopeError> {
    serde_json::from_slice(body).map_err(|e| bad(None, "", format!("invalid json: {e}")))
}

fn body_text(body: &[u8]) -> Result<String, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|_| bad(None, "", "body is not utf-8"))?;
    Ok(text.to_string())
}

fn non_empty(items: Vec<Value>) -> Result<Vec<Value>, EnvelopeError> {
    if items.is_empty() {
        return Err(bad(None, "", "batch is empty"));
    }
    Ok(items)
}

fn hmpps(
    body: &[u8],
    trace: Option<String>,
    defaults: &IngestDefaults,
) -> Result<Vec<Incoming>, EnvelopeError> {
    let items = match parse_json(body)? {
        Value::Array(items) => non_empty(items)?,
        Value::Object(mut obj) if obj.contains_key("events") && !obj.contains_key("eventType") => {
            match obj.remove("events") {
                Some(Value::Array(items)) => non_empty(items)?,
                _ => return Err(bad(None, "/events", "must be an array")),
            }
        }
        single @ Value::Object(_) => {
            // A single event keeps the producer's exact bytes as its data.
            let event = hmpps_event(&single, None, body_text(body)?, trace, defaults)?;
            return Ok(vec![incoming(event, Envelope::Hmpps, single, None)]);
        }
        _ => return Err(bad(None, "", "expected a json object or array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, payload) in items.into_iter().enumerate() {
        if !payload.is_object() {
            return Err(bad(Some(index), "", "expected a json object"));
        }
        let data = payload.to_string();
        let event = hmpps_event(&payload, Some(index), data, trace.clone(), defaults)?;
        out.push(incoming(event, Envelope::Hmpps, payload, Some(index)));
    }
    Ok(out)
}

fn hmpps_event(
    item: &Value,
    index: Option<usize>,
    data: String,
    traceparent: Option<String>,
    defaults: &IngestDefaults,
) -> Result<Event, EnvelopeError> {
    let event_type = match item.get("eventType").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => return Err(bad(index, "/eventType", "must be a non-empty string")),
    };
    let version = item.get("version").and_then(integer_text);
    let version = version.ok_or_else(|| bad(index, "/version", "must be an integer"))?;
    let time = item.get("occurredAt").and_then(Value::as_str);
    let time = time.ok_or_else(|| bad(index, "/occurredAt", "must be a string"))?;
    Ok(Event {
        id: String::new(),
        attributes: BTreeMap::from([("eventType".to_string(), event_type.clone())]),
        event_type,
        version,
        source: defaults.source.clone(),
        key: key_for(item, &defaults.key_rules),
        time: time.to_string(),
        content_type: JSON.to_string(),
        data,
        traceparent,
    })
}

/// JSON Schema counts `1.0` as an integer, so we do too.
fn integer_text(v: &Value) -> Option<String> {
    if v.is_i64() || v.is_u64() {
        return Some(v.to_string());
    }
    let f = v.as_f64()?;
    // Integral and exactly representable, so the cast is lossless.
    (f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0).then(|| format!("{}", f as i64))
}

fn structured(
    value: Value,
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
    let data = payload.to_string();
    ce_event(attrs, "/", (payload, data), index, trace, defaults)
}

fn binary(
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

#[cfg(test)]
mod tests {
    fn decode_vec(
        h: &HeaderMap,
        body: &[u8],
        d: &IngestDefaults,
    ) -> Result<Vec<Incoming>, EnvelopeError> {
        decode_http(h, body, d).map(|d| d.events)
    }

    use super::*;
    use serde_json::json;

    const TP: &str = "00-tp";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.append(name, v.parse().unwrap());
        }
        h
    }

    fn defaults() -> IngestDefaults {
        let key_rules = vec!["identifier:NOMS".parse().unwrap()];
        IngestDefaults {
            key_rules,
            ..Default::default()
        }
    }

    fn decode(ct: &str, body: &str) -> Result<Vec<Incoming>, EnvelopeError> {
        let h = headers(&[("content-type", ct)]);
        decode_vec(&h, body.as_bytes(), &defaults())
    }

    fn decode_one(ct: &str, body: &Value) -> Event {
        decode(ct, &body.to_string()).unwrap().remove(0).event
    }

    /// Asserts the error's status, batch index and field; returns its message.
    fn fails(ct: &str, body: &str, status: u16, index: Option<usize>, field: &str) -> String {
        let e = decode(ct, body).unwrap_err();
        let got = (e.status(), e.index, e.field.as_str());
        assert_eq!(got, (status, index, field), "{e}");
        e.to_string()
    }

    /// One line per event, so a test states every field at a glance.
    fn brief(ev: &Event) -> String {
        let attrs: Vec<_> = ev
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let (key, tp) = (ev.key.as_deref(), ev.traceparent.as_deref());
        let (id, ty, v, src) = (&ev.id, &ev.event_type, &ev.version, &ev.source);
        let (key, tp, attrs) = (key.unwrap_or("-"), tp.unwrap_or("-"), attrs.join(","));
        format!("{id}|{ty}|{v}|{src}|key={key}|{}|tp={tp}|{attrs}", ev.time)
    }

    fn hmpps(ty: &str) -> Value {
        json!({"eventType": ty, "version": 2, "occurredAt": "2024-06-11T14:41:22+01:00",
               "personReference": {"identifiers": [{"type": "CRN", "value": "X1"},
                                                   {"type": "NOMS", "value": "A1234BC"}]}})
    }

    fn cloudevent() -> Value {
        json!({"specversion": "1.0", "id": "e-1", "source": "urn:prisons", "type": "a.b",
               "time": "2024-06-11T14:41:22+01:00", "datacontenttype": "application/x+json",
               "subject": "subj", "tenant": "north", "priority": 3, "urgent": true,
               "data": hmpps("a.b")})
    }

    #[test]
    fn hmpps_single_event_keeps_body_bytes() {
        let body = "{ \"eventType\": \"a.b\", \"version\": 1, \"occurredAt\": \"2024-06-11Z\",
            \"personReference\": {\"identifiers\": [{\"type\": \"NOMS\", \"value\": \"A1\"}]} }";
        let ct = "Application/JSON; charset=utf-8";
        let h = headers(&[("content-type", ct), ("traceparent", TP)]);
        let out = decode_vec(&h, body.as_bytes(), &defaults()).unwrap();
        assert_eq!(
            (out.len(), out[0].envelope, out[0].index),
            (1, Envelope::Hmpps, 0)
        );
        let ev = &out[0].event;
        let expected = "|a.b|1|urn:switchyard:http|key=A1|2024-06-11Z|tp=00-tp|eventType=a.b";
        assert_eq!(brief(ev), expected);
        assert_eq!((ev.data.as_str(), ev.content_type.as_str()), (body, JSON));
        assert_eq!(out[0].payload["version"], 1);
    }

    #[test]
    fn hmpps_batches_as_array_or_events_object() {
        let items = json!([hmpps("a"), hmpps("b")]);
        for body in [items.clone(), json!({"events": items})] {
            let out = decode(JSON, &body.to_string()).unwrap();
            assert_eq!(out.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1]);
            let ev = &out[1].event;
            assert!(brief(ev).starts_with("|b|2|urn:switchyard:http|key=A1234BC|"));
            assert_eq!(serde_json::from_str::<Value>(&ev.data).unwrap(), hmpps("b"));
        }
        let mut ev = hmpps("a");
        ev["version"] = json!(3.0);
        assert_eq!(decode_one(JSON, &ev).version, "3");
    }

    #[test]
    fn hmpps_bad_bodies_name_the_item_and_field() {
        for body in ["[]", r#"{"events": []}"#] {
            assert_eq!(fails(JSON, body, 400, None, ""), "body: batch is empty");
        }
        fails(JSON, r#"{"events": 1}"#, 400, None, "/events");
        fails(JSON, "\"x\"", 400, None, "");
        fails(JSON, &json!([hmpps("a"), 3]).to_string(), 400, Some(1), "");
        for (name, value) in [
            ("eventType", json!(null)),
            ("eventType", json!("")),
            ("version", json!("1")),
            ("version", json!(1.5)),
            ("occurredAt", json!(17)),
        ] {
            let mut ev = hmpps("a");
            ev[name] = value;
            let body = json!([hmpps("a"), ev]).to_string();
            fails(JSON, &body, 400, Some(1), &format!("/{name}"));
        }
        let mut ev = hmpps("a");
        ev.as_object_mut().unwrap().remove("occurredAt");
        let msg = fails(JSON, &ev.to_string(), 400, None, "/occurredAt");
        assert_eq!(msg, "/occurredAt: must be a string");
    }

    #[test]
    fn bad_json_reports_line_and_column() {
        for ct in [JSON, CE_SINGLE, CE_BATCH] {
            let msg = fails(ct, "{\n  \"eventType\": }", 400, None, "");
            assert_eq!(
                msg,
                "body: invalid json: expected value at line 2 column 16"
            );
        }
    }

    #[test]
    fn unsupported_content_types_are_415() {
        let e = decode_vec(&HeaderMap::new(), b"{}", &defaults()).unwrap_err();
        assert_eq!(e.to_string(), "content-type: content-type header required");
        assert_eq!(e.status(), 415);
        let msg = fails("text/plain", "{}", 415, None, "content-type");
        assert!(
            msg.contains("`text/plain`") && msg.contains(CE_BATCH),
            "{msg}"
        );
        let h = headers(&[("content-type", "text/plain"), ("ce-specversion", "1.0")]);
        let e = decode_vec(&h, b"hi", &defaults()).unwrap_err();
        assert!(e.status() == 415 && e.reason.contains("binary-mode"), "{e}");
        let mut xml = cloudevent();
        xml["datacontenttype"] = json!("text/xml");
        fails(CE_SINGLE, &xml.to_string(), 415, None, "/datacontenttype");
        let mut b64 = cloudevent();
        b64["data_base64"] = json!("aGk=");
        let body = json!([cloudevent(), b64]).to_string();
        fails(CE_BATCH, &body, 415, Some(1), "/data_base64");
    }

    #[test]
    fn cloudevent_structured_maps_all_attributes() {
        let h = headers(&[("content-type", CE_SINGLE), ("traceparent", TP)]);
        let out = decode_vec(&h, cloudevent().to_string().as_bytes(), &defaults()).unwrap();
        assert_eq!(
            (out[0].envelope, &out[0].payload),
            (Envelope::CloudEvent, &hmpps("a.b"))
        );
        let ev = &out[0].event;
        let expected = "e-1|a.b|2|urn:prisons|key=A1234BC|2024-06-11T14:41:22+01:00|tp=00-tp|\
                        priority=3,subject=subj,tenant=north,urgent=true";
        assert_eq!(brief(ev), expected);
        assert_eq!(
            serde_json::from_str::<Value>(&ev.data).unwrap(),
            hmpps("a.b")
        );
    }

    #[test]
    fn cloudevent_key_version_and_trace_precedence() {
        let mut ce = cloudevent();
        ce["partitionkey"] = json!("pk");
        ce["dataversion"] = json!(7);
        ce["traceparent"] = json!("00-ext");
        let h = headers(&[("content-type", CE_SINGLE), ("traceparent", TP)]);
        let ev = &decode_vec(&h, ce.to_string().as_bytes(), &defaults()).unwrap()[0].event;
        assert!(
            brief(ev).starts_with("e-1|a.b|7|urn:prisons|key=pk|"),
            "{}",
            brief(ev)
        );
        assert!(
            brief(ev).contains("|tp=00-ext|priority=3,"),
            "{}",
            brief(ev)
        );
        let ce =
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "subject": "x"});
        let ev = decode_one(CE_SINGLE, &ce);
        assert!(brief(&ev).starts_with("1|t|1|s|key=x|"), "{}", brief(&ev));
        assert_eq!(ev.data, "null");
        assert!(chrono::DateTime::parse_from_rfc3339(&ev.time).is_ok());
    }

    #[test]
    fn cloudevent_batch_and_missing_fields() {
        let out = decode(CE_BATCH, &json!([cloudevent(), cloudevent()]).to_string()).unwrap();
        assert_eq!(out.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1]);
        let mut bad = cloudevent();
        bad.as_object_mut().unwrap().remove("source");
        let body = json!([cloudevent(), bad]).to_string();
        let msg = fails(CE_BATCH, &body, 400, Some(1), "/source");
        assert_eq!(msg, "item 1, /source: required, a non-empty string");
        for (name, value) in [
            ("specversion", json!("0.3")),
            ("type", json!("")),
            ("id", json!(5)),
            ("time", json!("2024-06-11T14:41:22")),
            ("tenant", json!({"nested": 1})),
        ] {
            let mut ce = cloudevent();
            ce[name] = value;
            fails(CE_SINGLE, &ce.to_string(), 400, None, &format!("/{name}"));
        }
        fails(CE_BATCH, "[]", 400, None, "");
        fails(CE_BATCH, "{}", 400, None, "");
        fails(CE_SINGLE, "[]", 400, None, "");
    }

    #[test]
    fn cloudevent_binary_mode_reads_headers() {
        let body = r#"{"version": 4, "additionalInformation": {"nomsNumber": "A9"}}"#;
        let mut pairs = vec![
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "urn:src"),
            ("ce-type", "a.b"),
            ("ce-time", "2024-06-11T14:41:22Z"),
            ("ce-subject", "caf%C3%A9%zz"),
            ("ce-tenant", "north"),
            ("traceparent", TP),
        ];
        let rules = vec![KeyRule::Pointer("/additionalInformation/nomsNumber".into())];
        let d = IngestDefaults {
            key_rules: rules,
            ..defaults()
        };
        let decode = |pairs: &[_], body: &str| decode_vec(&headers(pairs), body.as_bytes(), &d);
        let out = decode(&pairs, body).unwrap();
        assert_eq!(out[0].envelope, Envelope::CloudEvent);
        let expected = "b-1|a.b|4|urn:src|key=A9|2024-06-11T14:41:22Z|tp=00-tp|\
                        subject=café%zz,tenant=north";
        assert_eq!(
            (brief(&out[0].event), out[0].event.data.as_str()),
            (expected.into(), body)
        );
        pairs.extend([("ce-partitionkey", "pk"), ("ce-traceparent", "00-ce")]);
        let ev = decode(&pairs, body).unwrap().remove(0).event;
        assert!(brief(&ev).contains("|key=pk|2024-06-11T14:41:22Z|tp=00-ce|"));
        let e = decode(&pairs, "{oops").unwrap_err();
        assert!(e.reason.contains("line 1 column 2"), "{e}");
        pairs.retain(|(k, _)| *k != "ce-type");
        let e = decode(&pairs, body).unwrap_err();
        assert_eq!((e.status(), e.field.as_str()), (400, "ce-type"));
        let pairs = [
            ("content-type", "application/json"),
            ("ce-specversion", "0.3"),
        ];
        assert_eq!(decode(&pairs, "{}").unwrap_err().field, "ce-specversion");
    }

    #[test]
    fn key_rules_parse_and_apply_in_order() {
        let rule = |s: &str| s.parse::<KeyRule>();
        assert_eq!(rule("/a/b"), Ok(KeyRule::Pointer("/a/b".into())));
        assert_eq!(
            rule("identifier:CRN"),
            Ok(KeyRule::Identifier("CRN".into()))
        );
        for bad in ["a/b", "", "identifier:", "/a~2", "crn"] {
            let e = rule(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        for text in ["/a~1b", "identifier:NOMS"] {
            assert_eq!(rule(text).unwrap().to_string(), text);
        }
        let payload = json!({"n": 42, "e": "", "a/b": "slash",
                             "personReference": {"identifiers": [{"type": "NOMS", "value": "A1"}]}});
        let key = |texts: &[&str]| {
            let rules: Vec<KeyRule> = texts.iter().map(|t| rule(t).unwrap()).collect();
            key_for(&payload, &rules)
        };
        assert_eq!(key(&["/missing", "/n"]).as_deref(), Some("42"));
        assert_eq!(key(&["/e", "identifier:NOMS"]).as_deref(), Some("A1"));
        assert_eq!(key(&["/a~1b"]).as_deref(), Some("slash"));
        assert_eq!(key(&["identifier:CRN", "/personReference"]), None);
        assert_eq!(key(&[]), None);
    }

    #[test]
    fn cloudevent_json_round_trips() {
        let mut ce = cloudevent();
        ce["partitionkey"] = json!("pk");
        ce["traceparent"] = json!(TP);
        let first = decode_one(CE_SINGLE, &ce);
        let encoded = to_cloudevent_json(&first);
        assert_eq!(
            [&encoded["subject"], &encoded["partitionkey"]],
            ["subj", "pk"]
        );
        assert_eq!(encoded["data"], hmpps("a.b"));
        assert_eq!(decode_one(CE_SINGLE, &encoded), first);
    }

    #[test]
    fn hmpps_event_encodes_as_cloudevent() {
        let mut ev = decode_one(JSON, &hmpps("a.b"));
        ev.id = "id-1".into();
        ev.attributes.insert("id".into(), "clash".into());
        let out = to_cloudevent_json(&ev);
        assert_eq!(
            [&out["id"], &out["dataversion"], &out["eventType"]],
            ["id-1", "2", "a.b"]
        );
        assert_eq!(
            [&out["partitionkey"], &out["subject"]],
            ["A1234BC", "A1234BC"]
        );
        assert_eq!(
            (&out["data"], out.get("traceparent")),
            (&hmpps("a.b"), None)
        );
        ev.data = "not json".into();
        assert_eq!(to_cloudevent_json(&ev)["data"], "not json");
    }
}
