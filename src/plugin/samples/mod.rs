//! Sample cases: events to feed a plugin and what it must do with them.
//!
//! `switchyard plugin test` runs them, and a new plugin version runs them
//! before it may replace the old one, so the same files serve both. A plugin
//! project keeps its cases in `samples/*.json`, one case per file:
//!
//! ```json
//! {
//!   "description": "a prisoner is received, then released",
//!   "config": { "topic": "prisoner-state" },
//!   "capabilities": ["log", "clock", "kv"],
//!   "state": { "prisoner/A1234BC": { "eventCount": 1 } },
//!   "events": [ { "eventType": "prison-offender-events.prisoner.received", ... } ],
//!   "expect": [ { "outputs": [ { "topic": "prisoner-state", "type": "prisoner.state.updated",
//!                               "key": "A1234BC", "data": { ... } } ] },
//!               { "error": { "kind": "bad-event", "message": "NOMS" } } ],
//!   "expect_state": { "prisoner/A1234BC": { ... } }
//! }
//! ```
//!
//! Only `events` is required. `events` are HMPPS domain events or structured
//! CloudEvents (told apart by `specversion`), decoded exactly as the HTTP
//! source does; an HMPPS event gets the id `<case>/<n>` so outputs are
//! reproducible. `config` is passed to `init` (default: the plugin's own),
//! `capabilities` are granted (default: the plugin's own), `state` seeds the plugin's kv
//! (values are JSON, stored as their JSON text). `expect`, when present, has
//! one entry per event: `{"outputs": [...]}` (or just the list) or
//! `{"error": KIND}` / `{"error": {"kind": KIND, "message": SUBSTRING}}` with
//! KIND one of `bad-event`, `transient`, `trap`, `timeout`, `memory-limit`,
//! `capability-denied`. An output is `topic`, `type`, `data` (JSON), and when
//! set `key`, `attributes` (object), `version` (when not "1"), `id`, `source`,
//! `time`, `contentType` (when not JSON), `traceparent` — what the plugin
//! wrote, before the router fills its defaults. `expect_state` is the whole kv
//! after the last event.

mod diff;
mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use diff::diff;
pub use run::{CaseRun, EventRun, VerifyError, run_case, verify};

use crate::config::Capability;
use crate::envelope::{self, IngestDefaults, KeyRule};
use crate::event::Event;

/// `source` of sample HMPPS events, which carry none.
pub const SAMPLE_SOURCE: &str = "urn:switchyard:sample";

/// One case, loaded and decoded.
#[derive(Debug, Clone)]
pub struct SampleCase {
    /// The file stem, e.g. `received-then-released`.
    pub name: String,
    /// The file it came from, for messages.
    pub file: PathBuf,
    pub description: Option<String>,
    /// JSON text for `init`; `None` keeps the plugin's own config.
    pub config: Option<String>,
    /// Grants for this case; `None` grants every capability.
    pub capabilities: Option<Vec<Capability>>,
    /// kv entries before the first event.
    pub state: BTreeMap<String, Value>,
    pub events: Vec<Event>,
    /// One per event, when the case states expectations.
    pub expect: Option<Vec<Expectation>>,
    /// The whole kv after the last event, when stated.
    pub expect_state: Option<BTreeMap<String, Value>>,
}

/// What one event must produce.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// Exactly these outputs (canonical form, see [`canonical_output`]).
    Outputs(Vec<Value>),
    /// A failure of this kind, whose message contains `message`.
    Error {
        kind: String,
        message: Option<String>,
    },
}

/// Why sample cases could not be loaded: always names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct SampleError {
    pub file: PathBuf,
    pub reason: String,
}

fn err(file: &Path, reason: impl Into<String>) -> SampleError {
    SampleError {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    capabilities: Option<Vec<Capability>>,
    #[serde(default)]
    state: Option<BTreeMap<String, Value>>,
    events: Vec<Box<RawValue>>,
    #[serde(default)]
    expect: Option<Vec<Value>>,
    #[serde(default)]
    expect_state: Option<BTreeMap<String, Value>>,
}

/// The cases of a file (one case) or a directory (`*.json`, in name order).
pub fn load_cases(path: &Path) -> Result<Vec<SampleCase>, SampleError> {
    json_files(path)?
        .iter()
        .map(|f| {
            load_case(
                f,
                &std::fs::read_to_string(f).map_err(|e| err(f, e.to_string()))?,
            )
        })
        .collect()
}

/// Whether `path` holds case files (objects with `events`) rather than bare
/// events; lets `plugin test --events` take either.
pub fn is_case_path(path: &Path) -> bool {
    let Ok(files) = json_files(path) else {
        return false;
    };
    files.first().is_some_and(|f| {
        std::fs::read_to_string(f)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| v.get("events").is_some_and(Value::is_array))
    })
}

fn json_files(path: &Path) -> Result<Vec<PathBuf>, SampleError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| err(path, e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x == "json" || x == "jsonl" || x == "ndjson")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err(path, "no .json files"));
    }
    Ok(files)
}

fn case_name(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "case".into())
}

/// Parses one case file's text.
pub fn load_case(file: &Path, text: &str) -> Result<SampleCase, SampleError> {
    let raw: CaseFile = serde_json::from_str(text).map_err(|e| err(file, e.to_string()))?;
    let name = case_name(file);
    let events = decode_events(file, &name, &raw.events)?;
    let expect = raw
        .expect
        .map(|list| parse_expectations(file, &list, events.len()))
        .transpose()?;
    Ok(SampleCase {
        name,
        file: file.to_path_buf(),
        description: raw.description,
        config: raw.config.map(|c| c.to_string()),
        capabilities: raw.capabilities,
        state: raw.state.unwrap_or_default(),
        events,
        expect,
        expect_state: raw.expect_state,
    })
}

/// A case from loose parts: `plugin test --events FILE|DIR [--expect FILE]
/// [--state FILE]`. Events files hold one event, a JSON array of events, or
/// JSON Lines (`.jsonl`, `.ndjson`).
pub fn case_from_parts(
    events: &Path,
    expect: Option<&Path>,
    state: Option<&Path>,
) -> Result<SampleCase, SampleError> {
    let name = case_name(events);
    let mut raw = Vec::new();
    for f in json_files(events)? {
        let text = std::fs::read_to_string(&f).map_err(|e| err(&f, e.to_string()))?;
        let lines = f.extension().is_some_and(|x| x == "jsonl" || x == "ndjson");
        if lines {
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                raw.push(
                    RawValue::from_string(line.to_string())
                        .map_err(|e| err(&f, format!("line {}: {e}", i + 1)))?,
                );
            }
        } else if text.trim_start().starts_with('[') {
            let list: Vec<Box<RawValue>> =
                serde_json::from_str(&text).map_err(|e| err(&f, e.to_string()))?;
            raw.extend(list);
        } else {
            raw.push(RawValue::from_string(text).map_err(|e| err(&f, e.to_string()))?);
        }
    }
    let events_list = decode_events(events, &name, &raw)?;
    let (expect, expect_state) = match expect {
        None => (None, None),
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| err(f, e.to_string()))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| err(f, e.to_string()))?;
            let (list, st) = match v {
                Value::Array(list) => (list, None),
                Value::Object(mut o) => {
                    let list = match o.remove("expect") {
                        Some(Value::Array(l)) => l,
                        _ => return Err(err(f, "expected an array, or an object with `expect`")),
                    };
                    let st = o
                        .remove("expect_state")
                        .map(serde_json::from_value)
                        .transpose()
                        .map_err(|e| err(f, format!("expect_state: {e}")))?;
                    (list, st)
                }
                _ => return Err(err(f, "expected an array of expectations")),
            };
            (Some(parse_expectations(f, &list, events_list.len())?), st)
        }
    };
    let state = match state {
        None => BTreeMap::new(),
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| err(f, e.to_string()))?;
            serde_json::from_str(&text)
                .map_err(|e| err(f, format!("expected an object of key → JSON value: {e}")))?
        }
    };
    Ok(SampleCase {
        name,
        file: events.to_path_buf(),
        description: None,
        config: None,
        capabilities: None,
        state,
        events: events_list,
        expect,
        expect_state,
    })
}

/// The ordering-key rules of the default configuration, so sample events get
/// the key the router would give them.
fn default_key_rules() -> Vec<KeyRule> {
    [
        "identifier:NOMS",
        "identifier:CRN",
        "/additionalInformation/nomsNumber",
    ]
    .iter()
    .filter_map(|r| r.parse().ok())
    .collect()
}

fn decode_events(
    file: &Path,
    case: &str,
    raw: &[Box<RawValue>],
) -> Result<Vec<Event>, SampleError> {
    let defaults = IngestDefaults {
        source: SAMPLE_SOURCE.to_string(),
        key_rules: default_key_rules(),
    };
    let mut out = Vec::new();
    for (i, item) in raw.iter().enumerate() {
        let at = |reason: String| err(file, format!("events[{i}]: {reason}"));
        let value: Value = serde_json::from_str(item.get()).map_err(|e| at(e.to_string()))?;
        let cloud = value.get("specversion").is_some();
        let media = if cloud {
            "application/cloudevents+json"
        } else {
            "application/json"
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(media),
        );
        let decoded = envelope::decode_http(&headers, item.get().as_bytes(), &defaults)
            .map_err(|e| at(e.to_string()))?;
        for incoming in decoded.events {
            let mut ev = incoming.event;
            if !cloud {
                ev.id = format!("{case}/{}", out.len() + 1);
            }
            out.push(ev);
        }
    }
    if out.is_empty() {
        return Err(err(file, "no events"));
    }
    Ok(out)
}

fn parse_expectations(
    file: &Path,
    list: &[Value],
    events: usize,
) -> Result<Vec<Expectation>, SampleError> {
    if list.len() != events {
        return Err(err(
            file,
            format!(
                "expect has {} entries for {events} events (one per event)",
                list.len()
            ),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| parse_expectation(v).map_err(|r| err(file, format!("expect[{i}]: {r}"))))
        .collect()
}

fn parse_expectation(v: &Value) -> Result<Expectation, String> {
    let outputs = match v {
        Value::Array(list) => list,
        Value::Object(o) if o.len() == 1 && o.contains_key("outputs") => match &o["outputs"] {
            Value::Array(list) => list,
            _ => return Err("`outputs` must be an array".into()),
        },
        Value::Object(o) if o.len() == 1 && o.contains_key("error") => {
            return match &o["error"] {
                Value::String(kind) => Ok(Expectation::Error {
                    kind: kind.clone(),
                    message: None,
                }),
                Value::Object(e) => Ok(Expectation::Error {
                    kind: e
                        .get("kind")
                        .and_then(Value::as_str)
                        .ok_or("`error.kind` must be a string")?
                        .to_string(),
                    message: e.get("message").and_then(Value::as_str).map(str::to_string),
                }),
                _ => Err("`error` must be a kind or {\"kind\", \"message\"}".into()),
            };
        }
        _ => return Err("expected {\"outputs\": [...]} or {\"error\": ...}".into()),
    };
    outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            serde_json::from_value::<OutputSpec>(o.clone())
                .map(|s| s.canonical())
                .map_err(|e| format!("outputs[{i}]: {e}"))
        })
        .collect::<Result<_, _>>()
        .map(Expectation::Outputs)
}

/// An output as written in an expectation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OutputSpec {
    topic: String,
    #[serde(rename = "type")]
    event_type: String,
    data: Value,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    traceparent: Option<String>,
}

impl OutputSpec {
    fn canonical(self) -> Value {
        let content_type = self.content_type.unwrap_or_default();
        let data = if is_json(&content_type) {
            self.data
        } else {
            // Non-JSON payloads are compared as text.
            match self.data {
                Value::String(s) => Value::String(s),
                other => Value::String(other.to_string()),
            }
        };
        let ev = Event {
            id: self.id.unwrap_or_default(),
            event_type: self.event_type,
            version: self.version.unwrap_or_default(),
            source: self.source.unwrap_or_default(),
            key: self.key,
            time: self.time.unwrap_or_default(),
            content_type,
            data: String::new(),
            attributes: self.attributes,
            traceparent: self.traceparent,
        };
        canonical_fields(&self.topic, &ev, data)
    }
}

fn is_json(content_type: &str) -> bool {
    content_type.is_empty() || content_type.contains("json")
}

/// An output as the plugin wrote it, in the form expectations use: fields
/// left to the router's defaults are omitted, `data` is parsed JSON.
pub fn canonical_output(topic: &str, ev: &Event) -> Value {
    let data = if is_json(&ev.content_type) {
        serde_json::from_str(&ev.data).unwrap_or_else(|_| Value::String(ev.data.clone()))
    } else {
        Value::String(ev.data.clone())
    };
    canonical_fields(topic, ev, data)
}

fn canonical_fields(topic: &str, ev: &Event, data: Value) -> Value {
    let mut o = Map::new();
    let mut put = |k: &str, v: &str, default: &[&str]| {
        if !default.contains(&v) {
            o.insert(k.to_string(), Value::String(v.to_string()));
        }
    };
    put("topic", topic, &[]);
    put("type", &ev.event_type, &[]);
    put("version", &ev.version, &["", "1"]);
    put("id", &ev.id, &[""]);
    put("source", &ev.source, &[""]);
    put("time", &ev.time, &[""]);
    put("contentType", &ev.content_type, &["", "application/json"]);
    if let Some(k) = &ev.key {
        o.insert("key".into(), Value::String(k.clone()));
    }
    if let Some(t) = &ev.traceparent {
        o.insert("traceparent".into(), Value::String(t.clone()));
    }
    if !ev.attributes.is_empty() {
        let attrs = ev
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        o.insert("attributes".into(), Value::Object(attrs));
    }
    o.insert("data".into(), data);
    Value::Object(o)
}

#[cfg(test)]
mod tests;
