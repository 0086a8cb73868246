//! `switchyard asyncapi --config FILE [-o out.yaml|out.json]`: an AsyncAPI
//! 3.0 document of what flows where, from the config alone.
//!
//! * Channels: the ingest topic, the dead-letter topic, each route's output
//!   topics, each SQS source queue and each SNS/SQS sink target.
//! * Messages: one per event type with a JSON Schema (the HMPPS base schema
//!   and the type's own, as `allOf`), a dead-letter record, and a generic
//!   CloudEvent for plugin outputs (their types are the plugin's to choose).
//! * Operations: the router receives on the ingest topic and the SQS
//!   queues; each route receives the types its globs match and sends to its
//!   output channels (`x-switchyard-pipeline` names the plugins in order);
//!   the router sends failures to the dead-letter topic; each sink sends to
//!   its target.
//!
//! A route's output topics are its `topics` allow-list when it has one;
//! otherwise the last stage's plugin config `topic` (a fixed topic) or
//! `topic_prefix` (a channel `PREFIX{name}` with a parameter), the
//! convention the example plugins follow; otherwise a channel `{topic}`.
//!
//! Schemas are embedded as AsyncAPI Schema objects (a JSON Schema superset)
//! without `$schema` and `$id`, which the router's own 2020-12 schemas use
//! only as labels.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};
use switchyard::Config;

/// A key usable in `channels`, `operations` and `components`.
fn ident(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn read_schema(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read schema {}", path.display()))?;
    let mut v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
        o.remove("$id");
    }
    Ok(v)
}

/// The output channels of a route: `(channel key, address, parameter?)`.
fn route_outputs(cfg: &Config, route: &switchyard::config::RouteConfig) -> Vec<(String, String)> {
    if let Some(topics) = &route.topics {
        return topics
            .iter()
            .map(|t| {
                let t = t.get_ref();
                if t.contains(['*', '?', '[']) {
                    (format!("{}-topics", route.name), "{topic}".to_string())
                } else {
                    (t.clone(), t.clone())
                }
            })
            .collect();
    }
    let last = route.pipeline.last().map(|p| p.get_ref().as_str());
    let plugin_cfg = last
        .and_then(|p| cfg.plugins.get(p))
        .and_then(|p| p.config.as_ref());
    let get = |k: &str| plugin_cfg.and_then(|c| c.get(k)).and_then(|v| v.as_str());
    if let Some(topic) = get("topic") {
        return vec![(topic.to_string(), topic.to_string())];
    }
    if let Some(prefix) = get("topic_prefix") {
        return vec![(format!("{prefix}name"), format!("{prefix}{{name}}"))];
    }
    vec![(format!("{}-outputs", route.name), "{topic}".to_string())]
}

/// A channel with `messages` (names of `components.messages`).
fn channel(address: &str, description: &str, messages: &[String]) -> Value {
    let mut msgs = Map::new();
    for m in messages {
        msgs.insert(
            m.clone(),
            json!({ "$ref": format!("#/components/messages/{m}") }),
        );
    }
    let mut ch = json!({ "address": address, "description": description, "messages": msgs });
    // Every `{param}` in an address must be declared.
    let params: Vec<&str> = address
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(p, _)| p))
        .collect();
    if !params.is_empty() {
        let mut p = Map::new();
        for name in params {
            p.insert(
                name.to_string(),
                json!({ "description": "Chosen by the plugin per output." }),
            );
        }
        ch["parameters"] = Value::Object(p);
    }
    ch
}

fn op(action: &str, channel: &str, messages: &[String], description: String) -> Value {
    let refs: Vec<Value> = messages
        .iter()
        .map(|m| json!({ "$ref": format!("#/channels/{channel}/messages/{m}") }))
        .collect();
    json!({
        "action": action,
        "channel": { "$ref": format!("#/channels/{channel}") },
        "messages": refs,
        "description": description,
    })
}

/// Builds the document.
pub fn document(cfg: &Config) -> Result<Value> {
    let registry = switchyard::runtime::load_schemas(cfg)?;
    let base = read_schema(cfg.schemas.base.get_ref())?;
    let mut messages = Map::new();
    let mut types: Vec<(String, String)> = Vec::new(); // (event type, message key)
    for (event_type, version, path) in registry.describe() {
        let key = ident(&match &version {
            Some(v) => format!("{event_type}-v{v}"),
            None => event_type.clone(),
        });
        let payload = json!({ "allOf": [base.clone(), read_schema(&path)?] });
        messages.insert(
            key.clone(),
            json!({
                "name": event_type,
                "title": event_type,
                "summary": format!("HMPPS domain event {event_type}{}", version.as_ref().map(|v| format!(" (version {v})")).unwrap_or_default()),
                "contentType": "application/json",
                "payload": payload,
            }),
        );
        types.push((event_type, key));
    }
    messages.insert(
        "domainEvent".into(),
        json!({
            "name": "domainEvent",
            "title": "Any HMPPS domain event",
            "summary": "An event of a type without its own schema: the HMPPS envelope.",
            "contentType": "application/json",
            "payload": base,
        }),
    );
    messages.insert("deadLetter".into(), json!({
        "name": "switchyard.dead-letter",
        "title": "Dead-letter record",
        "summary": "An event a route or source could not handle, whole, with why.",
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "required": ["reason", "error"],
            "properties": {
                "reason": { "type": "string", "description": "no-route, trap, timeout, bad-event, bad-output, ..." },
                "error": { "type": "string" },
                "route": { "type": ["string", "null"] },
                "stage": { "type": "integer" },
                "plugin": { "type": "string" },
                "pluginVersion": { "type": "string" },
                "attempts": { "type": "integer" },
                "at": { "type": "string", "format": "date-time" },
                "event": { "type": "object", "description": "The original event, to inspect and replay." }
            }
        }
    }));
    messages.insert("pluginOutput".into(), json!({
        "name": "pluginOutput",
        "title": "Plugin output (CloudEvent)",
        "summary": "A record a route's last stage emitted; its type and data are the plugin's. Attributes plugin and pluginversion name its producer.",
        "contentType": "application/cloudevents+json",
        "payload": {
            "type": "object",
            "required": ["specversion", "id", "source", "type"],
            "properties": {
                "specversion": { "const": "1.0" },
                "id": { "type": "string" },
                "source": { "type": "string" },
                "type": { "type": "string" },
                "time": { "type": "string" },
                "traceparent": { "type": "string" },
                "plugin": { "type": "string" },
                "pluginversion": { "type": "string" },
                "data": {}
            }
        }
    }));

    let mut in_msgs: Vec<String> = types.iter().map(|(_, k)| k.clone()).collect();
    in_msgs.push("domainEvent".into());
    let out_msgs = vec!["pluginOutput".to_string()];
    let mut channels = Map::new();
    let mut operations = Map::new();
    let ingest = ident(&cfg.ingest.topic);
    channels.insert(
        ingest.clone(),
        channel(
            &cfg.ingest.topic,
            "The ingest topic: every accepted event (POST /v1/events, SQS sources), checked against its schema.",
            &in_msgs,
        ),
    );
    operations.insert(
        "ingestHttp".into(),
        op(
            "receive",
            &ingest,
            &in_msgs,
            "POST /v1/events: HMPPS JSON or CloudEvents, answered 202 once durable.".into(),
        ),
    );
    let dlq = ident(&cfg.router.dead_letter_topic);
    channels.insert(
        dlq.clone(),
        channel(
            &cfg.router.dead_letter_topic,
            "Failed events with reason, route, stage, plugin and version.",
            &["deadLetter".into()],
        ),
    );
    operations.insert(
        "deadLetter".into(),
        op(
            "send",
            &dlq,
            &["deadLetter".into()],
            "The router records every event it could not handle.".into(),
        ),
    );
    for (name, s) in &cfg.sources.sqs {
        let key = ident(&format!("sqs-{name}"));
        let queue = s.queue.get_ref();
        channels.insert(
            key.clone(),
            channel(
                queue,
                &format!("SQS queue read by source {name}."),
                &in_msgs,
            ),
        );
        operations.insert(
            ident(&format!("receive-sqs-{name}")),
            op(
                "receive",
                &key,
                &in_msgs,
                format!(
                    "Source {name} long-polls the queue and appends its events to the ingest topic."
                ),
            ),
        );
    }
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    for route in &cfg.routes {
        let pipeline: Vec<&str> = route
            .pipeline
            .iter()
            .map(|p| p.get_ref().as_str())
            .collect();
        let patterns: Vec<&str> = route
            .patterns
            .iter()
            .map(|p| p.get_ref().as_str())
            .collect();
        let matched: Vec<String> = types
            .iter()
            .filter(|(t, _)| patterns.iter().any(|p| glob_match::glob_match(p, t)))
            .map(|(_, k)| k.clone())
            .chain(
                patterns
                    .iter()
                    .any(|p| p.contains(['*', '?', '[']))
                    .then(|| "domainEvent".to_string()),
            )
            .collect();
        let mut consume = op(
            "receive",
            &ingest,
            &matched,
            format!(
                "Route {}: events matching {} run through {}.",
                route.name,
                patterns.join(", "),
                pipeline.join(" → ")
            ),
        );
        consume["x-switchyard-pipeline"] = json!(pipeline);
        operations.insert(ident(&format!("route-{}", route.name)), consume);
        for (key, address) in route_outputs(cfg, route) {
            let key = ident(&key);
            outputs.insert(key.clone(), address.clone());
            let last = pipeline.last().copied().unwrap_or_default();
            let mut send = op(
                "send",
                &key,
                &out_msgs,
                format!(
                    "Route {} publishes the outputs of plugin {last} (stage {} of {}).",
                    route.name,
                    pipeline.len(),
                    pipeline.len()
                ),
            );
            send["x-switchyard-pipeline"] = json!(pipeline);
            send["x-switchyard-plugin"] = json!(last);
            operations.insert(ident(&format!("route-{}-to-{key}", route.name)), send);
        }
    }
    for (key, address) in &outputs {
        channels.insert(
            key.clone(),
            channel(
                address,
                "A topic of the embedded log written by routes.",
                &out_msgs,
            ),
        );
    }
    let sinks = cfg
        .sinks
        .sns
        .iter()
        .map(|s| ("sns", s))
        .chain(cfg.sinks.sqs.iter().map(|s| ("sqs", s)));
    for (kind, (name, s)) in sinks {
        let key = ident(&format!("{kind}-{name}"));
        let from: Vec<&str> = s.from.iter().map(|f| f.get_ref().as_str()).collect();
        channels.insert(
            key.clone(),
            channel(
                s.target(),
                &format!(
                    "{} {} fed by sink {name}.",
                    kind.to_uppercase(),
                    if kind == "sns" { "topic" } else { "queue" }
                ),
                &out_msgs,
            ),
        );
        operations.insert(
            ident(&format!("sink-{name}")),
            op(
                "send",
                &key,
                &out_msgs,
                format!("Sink {name} forwards topics {} (outbox).", from.join(", ")),
            ),
        );
    }
    Ok(json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "switchyard event router",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Channels, messages and routes of {}.", cfg.file.display()),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages },
    }))
}

/// Writes the document of `config` to `out` (YAML unless it ends in
/// `.json`) or, without `out`, as YAML to stdout.
pub fn run(config: &Path, out: Option<&Path>) -> Result<()> {
    let cfg = Config::load(config)?;
    let doc = document(&cfg)?;
    let json = out.is_some_and(|p| p.extension().is_some_and(|e| e == "json"));
    let text = if json {
        serde_json::to_string_pretty(&doc)? + "\n"
    } else {
        to_yaml(&doc)
    };
    match out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// YAML in block style with every string double-quoted (JSON escapes are
/// valid in YAML double-quoted scalars), so no value can be misread.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    yaml(v, 0, &mut out);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(o) if o.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        other => other.to_string(),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(o) if !o.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, val) in o {
                let key = Value::String(k.clone()).to_string();
                if is_block(val) {
                    out.push_str(&format!("{pad}{key}:\n"));
                    yaml(val, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}{key}: {}\n", scalar(val)));
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                if is_block(item) {
                    out.push_str(&format!("{pad}-\n"));
                    yaml(item, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let v = json!({ "a": { "b": [1, "x: y", {}], "c": [] }, "d": [{ "e": null }] });
        assert_eq!(
            to_yaml(&v),
            "\"a\":\n  \"b\":\n    - 1\n    - \"x: y\"\n    - {}\n  \"c\": []\n\"d\":\n  -\n    \"e\": null\n"
        );
    }
}
