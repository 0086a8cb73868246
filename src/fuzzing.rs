//! Harnesses for the fuzz targets in `fuzz/` and for the corpus smoke test
//! (`tests/fuzz_corpus.rs`), kept here so both drive exactly the same code.
//!
//! Each harness takes raw bytes, runs one decoding path the way the router
//! does, and panics only when an invariant breaks: a panic inside the decoder
//! itself, an error without a reason, an accepted event whose CloudEvents
//! form does not decode back to itself, a config error without its place.
//! Nothing else in the crate calls these; they are not part of the API.
//!
//! Inputs that need headers or message attributes use a small text form so
//! corpus files stay readable: `name: value` lines, a blank line, the body.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Config;
use crate::envelope::{
    Decoded, Envelope, EnvelopeError, Incoming, IngestDefaults, KeyRule, decode_http,
    to_cloudevent_json,
};
use crate::transport::aws::message::{self, AttrValue};

const JSON: &str = "application/json";
const CE_SINGLE: &str = "application/cloudevents+json";
const CE_BATCH: &str = "application/cloudevents-batch+json";
/// The id the log would assign on append; HMPPS events arrive without one.
const APPENDED_ID: &str = "fuzz-appended-id";

/// The ingest defaults of the shipped config, so key rules are exercised.
fn defaults() -> IngestDefaults {
    IngestDefaults {
        source: "urn:switchyard:http".into(),
        key_rules: vec![
            KeyRule::Identifier("NOMS".into()),
            KeyRule::Identifier("CRN".into()),
            KeyRule::Pointer("/additionalInformation/nomsNumber".into()),
        ],
    }
}

fn headers_with(content_type: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    h
}

/// An HMPPS domain event (or batch) as an `application/json` body.
pub fn hmpps(body: &[u8]) {
    check_decode(&headers_with(JSON), body);
}

/// A structured-mode CloudEvent body, decoded both as a single event and as
/// a batch (each answers the other shape with an error).
pub fn cloudevents_structured(body: &[u8]) {
    check_decode(&headers_with(CE_SINGLE), body);
    check_decode(&headers_with(CE_BATCH), body);
}

/// A request in the header-lines form: `ce-*`, `content-type` and
/// `traceparent` headers choose binary mode, or any other envelope.
pub fn cloudevents_binary(input: &[u8]) {
    let (lines, body) = split_head(input);
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(name, value);
    }
    check_decode(&headers, body);
}

/// An SQS message in the header-lines form: `name: value` lines are String
/// attributes, `!name: value` lines Binary ones, the rest is the body (an SNS
/// notification envelope or the raw message). Runs the SQS source's path:
/// unwrap, present as a request, decode.
pub fn sns_sqs(input: &[u8]) {
    let (lines, body) = split_head(input);
    let mut attributes = BTreeMap::new();
    for (name, value) in lines {
        let (name, value) = match name.strip_prefix(b"!") {
            Some(n) => (n, AttrValue::Binary(value.to_vec())),
            None => (name, AttrValue::Text(lossy(value))),
        };
        attributes.insert(lossy(name), value);
    }
    let body = lossy(body);
    let unwrapped = match message::unwrap(&body, attributes.clone()) {
        Ok(u) => u,
        Err(e) => {
            assert!(!e.reason.is_empty(), "unwrap error without a reason: {e:?}");
            return;
        }
    };
    if unwrapped.topic_arn.is_none() {
        // Not an SNS notification: the message passes through untouched.
        assert_eq!(unwrapped.body, body);
        assert_eq!(unwrapped.attributes, attributes);
    }
    let headers = match message::as_request(&unwrapped) {
        Ok(h) => h,
        Err(e) => {
            assert!(
                !e.reason.is_empty(),
                "request error without a reason: {e:?}"
            );
            return;
        }
    };
    assert!(headers.contains_key(http::header::CONTENT_TYPE));
    let Some(decoded) = check_decode(&headers, unwrapped.body.as_bytes()) else {
        return;
    };
    if is_binary_mode(&headers) {
        check_binary_attributes(&unwrapped.attributes, &decoded.events[0]);
    }
}

fn is_binary_mode(headers: &HeaderMap) -> bool {
    let media = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    headers.contains_key("ce-specversion")
        && !matches!(media.as_deref(), Some(CE_SINGLE | CE_BATCH))
}

/// Every `ce-*` / `ce_*` message attribute reaches the event unchanged,
/// through the percent-encoding of header values and back.
fn check_binary_attributes(attrs: &BTreeMap<String, AttrValue>, inc: &Incoming) {
    // Header names are case-insensitive and `ce_x` means `ce-x`: the last
    // attribute (in name order) of each header wins, as in `as_request`.
    let mut expected = BTreeMap::new();
    for (name, value) in attrs {
        let lower = name.to_ascii_lowercase();
        let Some(attr) = lower.strip_prefix("ce-").or(lower.strip_prefix("ce_")) else {
            continue;
        };
        let text = match value {
            AttrValue::Text(t) => t.clone(),
            AttrValue::Binary(b) => String::from_utf8(b.clone()).unwrap_or_default(),
        };
        expected.insert(attr.to_string(), text);
    }
    let ev = &inc.event;
    for (attr, text) in expected {
        let got = match attr.as_str() {
            "id" => Some(&ev.id),
            "source" => Some(&ev.source),
            "type" => Some(&ev.event_type),
            "specversion" | "time" | "datacontenttype" | "data" | "data_base64"
            | "partitionkey" | "dataversion" | "traceparent" => continue,
            other => ev.attributes.get(other),
        };
        assert_eq!(got, Some(&text), "attribute {attr:?} changed on the way");
    }
}

/// Decodes one request and checks the result; returns it when accepted.
fn check_decode(headers: &HeaderMap, body: &[u8]) -> Option<Decoded> {
    let defaults = defaults();
    let decoded = match decode_http(headers, body, &defaults) {
        Ok(d) => d,
        Err(e) => {
            check_error(&e);
            return None;
        }
    };
    assert!(
        !decoded.events.is_empty(),
        "accepted a request with no event"
    );
    if !decoded.batch {
        assert_eq!(decoded.events.len(), 1, "a single event decoded as many");
    }
    for (i, inc) in decoded.events.iter().enumerate() {
        assert_eq!((inc.index, inc.batch), (i, decoded.batch));
        assert!(!inc.event.event_type.is_empty() && !inc.event.source.is_empty());
        check_reencode(inc, &defaults);
    }
    Some(decoded)
}

fn check_error(e: &EnvelopeError) {
    assert!(!e.reason.is_empty(), "error without a reason: {e:?}");
    assert!(matches!(e.status(), 400 | 415));
    assert!(!e.to_string().is_empty());
}

/// An accepted event, encoded as the structured CloudEvent the read API and
/// sinks emit, decodes back to an event with the same encoding: nothing is
/// lost or changed by a hop through another switchyard.
fn check_reencode(inc: &Incoming, defaults: &IngestDefaults) {
    let mut ev = inc.event.clone();
    if ev.id.is_empty() {
        ev.id = APPENDED_ID.into();
    }
    if chrono::DateTime::parse_from_rfc3339(&ev.time).is_err() {
        // Only HMPPS `occurredAt` is left to the base schema's `date-time`
        // format, which refuses such events before they are appended.
        assert_eq!(
            inc.envelope,
            Envelope::Hmpps,
            "bad time {:?} accepted",
            ev.time
        );
        return;
    }
    let first = to_cloudevent_json(&ev);
    let body = first.to_string();
    let again = match decode_http(&headers_with(CE_SINGLE), body.as_bytes(), defaults) {
        Ok(d) => d,
        // Wrapping the payload adds a level, which can pass the JSON
        // parser's nesting limit; the original depth was within it.
        Err(e) if e.reason.contains("recursion limit") => return,
        Err(e) => panic!("re-encoded event does not decode: {e}\n{body}"),
    };
    assert_eq!(again.events.len(), 1);
    let second = to_cloudevent_json(&again.events[0].event);
    assert_eq!(first, second, "re-encoding changed the event");
}

/// Parses and validates `text` as the file `dir/switchyard.toml`, where `dir`
/// was prepared by [`config_fixture`] so that paths can resolve.
pub fn config(dir: &Path, text: &[u8]) {
    // `Config::load` refuses non-UTF-8 files before parsing.
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let file = dir.join("switchyard.toml");
    let cfg = match Config::parse(&file, text) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(!e.reason.is_empty(), "config error without a reason: {e:?}");
            assert_eq!(e.file, file);
            let lines = text.lines().count().max(1);
            if let Some(line) = e.line {
                assert!((1..=lines + 1).contains(&line), "line {line} of {lines}");
            }
            assert!(e.to_string().starts_with(&file.display().to_string()));
            return;
        }
    };
    assert_eq!(cfg.key_rules().len(), cfg.ingest.key.len());
    for route in &cfg.routes {
        for stage in &route.pipeline {
            assert!(cfg.plugins.contains_key(stage.get_ref()));
        }
    }
}

/// Files a fuzzed config can point at: a base schema, a types directory,
/// two plugin files and a samples directory (contents are never read).
pub fn config_fixture(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("schemas/types"))?;
    std::fs::create_dir_all(dir.join("samples"))?;
    std::fs::write(dir.join("schemas/base.json"), "{}")?;
    std::fs::write(dir.join("p.wasm"), "")?;
    std::fs::write(dir.join("q.wasm"), "")?;
    Ok(dir.to_path_buf())
}

/// One `name: value` line of the header-lines form.
type Line<'a> = (&'a [u8], &'a [u8]);

/// Splits `name: value` lines from the body at the first blank line; without
/// one the whole input is header lines.
fn split_head(input: &[u8]) -> (Vec<Line<'_>>, &[u8]) {
    let (head, body) = match input.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&input[..i], &input[i + 2..]),
        None => (input, &input[input.len()..]),
    };
    let lines = head
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let value = &line[colon + 1..];
            Some((&line[..colon], value.strip_prefix(b" ").unwrap_or(value)))
        })
        .collect();
    (lines, body)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The output-data check (`pipeline::json_check`) against serde_json: the
/// two must agree on every UTF-8 input (the stage checks `String`s).
pub fn json_check(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let reference = serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok();
        assert_eq!(
            crate::pipeline::json_check::is_json(s),
            reference,
            "the scanner and serde_json disagree on {s:?}"
        );
    }
}
