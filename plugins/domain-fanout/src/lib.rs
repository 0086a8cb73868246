//! Domain fan-out: a stateless transform that routes each HMPPS domain event
//! to a per-domain topic chosen by the plugin itself (`<prefix><domain>`,
//! e.g. `domain.prison-offender-events`), enriched so that consumers can
//! filter on identifiers without digging through `personReference`.
//!
//! Config (optional): `{"topic_prefix": "domain."}`.

use std::sync::Mutex;

mod transform;

use serde::Deserialize;
use serde_json::Value;
use switchyard_plugin::{Event, Failure, Output, Plugin, parse_config};
use transform::BadEvent;

const DEFAULT_PREFIX: &str = "domain.";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)] // a misspelt key should refuse the plugin, not be ignored
struct Config {
    topic_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            topic_prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// Set by `init`; the host calls `init` before any `handle` on an instance.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

fn topic_prefix() -> String {
    let config = CONFIG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    config
        .as_ref()
        .map_or(DEFAULT_PREFIX, |c| c.topic_prefix.as_str())
        .to_owned()
}

/// Builds the single output for `ev` with the plain [`transform::fan_out`].
fn fan_out(ev: &Event, prefix: &str) -> Result<Output, Failure> {
    let out = transform::fan_out(&ev.type_, &ev.data, prefix).map_err(|e| {
        Failure::bad_event(match e {
            BadEvent::NotJson(e) => format!("event {} data is not valid JSON: {e}", ev.id),
            BadEvent::NotObject => format!("event {} data is not a JSON object", ev.id),
            BadEvent::NoDomain(t) => format!("cannot tell the domain of event type {t:?}"),
        })
    })?;
    // No `.key(..)`: the output keeps the input's ordering key.
    let mut output =
        Output::new(out.topic, out.event_type, &Value::Null).attribute("domain", out.domain);
    output.event.data = out.data;
    Ok(output)
}

struct DomainFanout;

impl Plugin for DomainFanout {
    fn init(config: Value) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        *CONFIG
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(config);
        Ok(())
    }

    fn handle(ev: Event) -> Result<Vec<Output>, Failure> {
        Ok(vec![fan_out(&ev, &topic_prefix())?])
    }
}

switchyard_plugin::export!(DomainFanout);

// `cargo test -p domain-fanout --target x86_64-unknown-linux-gnu`
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(type_: &str, data: &str) -> Event {
        let mut ev = Output::new("in", type_, &Value::Null).event;
        ev.id = "ev-1".into();
        ev.data = data.into();
        ev
    }

    #[test]
    fn routes_and_enriches() {
        let data = json!({
            "eventType": "prison-offender-events.prisoner.received",
            "personReference": {"identifiers": [
                {"type": "NOMS", "value": "A1234BC"}, {"type": "CRN", "value": "X123456"},
                {"type": "NOMS", "value": "IGNORED"}, {"type": 7}
            ]}
        });
        let out = fan_out(&event("", &data.to_string()), "domain.").unwrap();
        assert_eq!(out.topic, "domain.prison-offender-events");
        assert_eq!(out.event.type_, "prison-offender-events.prisoner.received");
        assert_eq!(
            out.event.attributes,
            vec![("domain".to_owned(), "prison-offender-events".to_owned())]
        );
        let got: Value = serde_json::from_str(&out.event.data).unwrap();
        assert_eq!(
            got["identifiers"],
            json!({"NOMS": "A1234BC", "CRN": "X123456"})
        );
        assert_eq!(got["domain"], "prison-offender-events");
        assert_eq!(got["personReference"], data["personReference"]);
    }

    #[test]
    fn no_identifiers_and_no_dot() {
        let out = fan_out(&event("probation-case", "{}"), "d/").unwrap();
        assert_eq!(out.topic, "d/probation-case");
        let got: Value = serde_json::from_str(&out.event.data).unwrap();
        assert_eq!(got, json!({"identifiers": {}, "domain": "probation-case"}));
    }

    #[test]
    fn rejects_non_objects() {
        for data in ["[1]", "\"x\"", "not json"] {
            assert!(
                matches!(
                    fan_out(&event("a.b", data), "domain."),
                    Err(Failure::BadEvent(_))
                ),
                "{data}"
            );
        }
        assert!(matches!(
            fan_out(&event("", "{}"), "domain."),
            Err(Failure::BadEvent(_))
        ));
    }
}
