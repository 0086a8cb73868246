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
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::event::Event;

mod cloudevents;

pub use cloudevents::to_cloudevent_json;
use cloudevents::{binary, structured};

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
        let raw = if batch {
            serde_json::from_slice::<Vec<RawData>>(body).ok()
        } else {
            serde_json::from_slice::<RawData>(body)
                .ok()
                .map(|d| vec![d])
        };
        let raw = raw.filter(|r| r.len() == items.len());
        let items = items.into_iter().enumerate();
        items
            .map(|(i, v)| {
                let data = raw.as_ref().and_then(|r| r[i].data).map(RawValue::get);
                structured(v, data, batch.then_some(i), trace.clone(), defaults)
            })
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

/// `v` as compact JSON text, the same bytes as `v.to_string()`: serde_json
/// writes straight into the buffer, where `Value`'s `Display` goes through
/// `core::fmt` piece by piece at several times the cost, and this runs for
/// every event of a batch and every CloudEvents message a sink sends.
pub(crate) fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
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

/// The `data` member of a CloudEvent as the producer wrote it (other members
/// are read from the parsed value).
#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// The items of an HMPPS batch sent as `{"events": [...]}`, as written.
#[derive(Deserialize)]
struct RawEvents<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Every event's `data` is the producer's own text of it, in a batch as when
/// sent alone: writing the parsed value out again would sort its keys and
/// drop its spacing. The items' text is found by a second, borrowing read of
/// the body; where that read fails (a member given twice, which the parsed
/// value resolves to the last) the parsed value is written out instead.
fn hmpps(
    body: &[u8],
    trace: Option<String>,
    defaults: &IngestDefaults,
) -> Result<Vec<Incoming>, EnvelopeError> {
    let (items, raw) = match parse_json(body)? {
        Value::Array(items) => (
            non_empty(items)?,
            serde_json::from_slice::<Vec<&RawValue>>(body).ok(),
        ),
        Value::Object(mut obj) if obj.contains_key("events") && !obj.contains_key("eventType") => {
            match obj.remove("events") {
                Some(Value::Array(items)) => (
                    non_empty(items)?,
                    serde_json::from_slice::<RawEvents>(body)
                        .ok()
                        .map(|r| r.events),
                ),
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
    let raw = raw.filter(|r| r.len() == items.len());
    let mut out = Vec::with_capacity(items.len());
    for (index, payload) in items.into_iter().enumerate() {
        if !payload.is_object() {
            return Err(bad(Some(index), "", "expected a json object"));
        }
        let data = data_text(raw.as_ref().map(|r| r[index].get()), &payload);
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

/// An event's `data`: the producer's own text when it is known, else the
/// parsed value written out.
fn data_text(raw: Option<&str>, payload: &Value) -> String {
    match raw {
        Some(text) => text.to_string(),
        None => json_text(payload),
    }
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

#[cfg(test)]
mod tests;
