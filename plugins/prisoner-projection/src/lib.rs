//! Prisoner projection: folds HMPPS `prisoner.received` / `prisoner.released`
//! domain events into the current state of each prisoner and publishes that
//! whole state (event-carried state transfer), so consumers of the output
//! topic never have to call back to the source system or replay history.
//!
//! State lives in `kv` under `prisoner/<NOMS number>`; each applied event
//! emits one `prisoner.state.updated` event keyed by the NOMS number.
//!
//! Config (optional): `{"topic": "prisoner-state"}` overrides the output topic.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_plugin::{Event, Failure, Output, Plugin, kv, log, parse_config};

const RECEIVED: &str = "prison-offender-events.prisoner.received";
const RELEASED: &str = "prison-offender-events.prisoner.released";
const OUTPUT_TYPE: &str = "prisoner.state.updated";
const DEFAULT_TOPIC: &str = "prisoner-state";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)] // a misspelt key should refuse the plugin, not be ignored
struct Config {
    topic: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            topic: DEFAULT_TOPIC.to_owned(),
        }
    }
}

/// Set by `init`; the host calls `init` before any `handle` on an instance.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

fn output_topic() -> String {
    let config = CONFIG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    config
        .as_ref()
        .map_or(DEFAULT_TOPIC, |c| c.topic.as_str())
        .to_owned()
}

/// The slice of the HMPPS domain event envelope this projection reads.
/// Unknown fields are ignored: the envelope carries more than we need.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DomainEvent {
    event_type: Option<String>,
    occurred_at: Option<String>,
    additional_information: Option<AdditionalInformation>,
    person_reference: Option<PersonReference>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct AdditionalInformation {
    prison_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PersonReference {
    identifiers: Vec<Identifier>,
}

#[derive(Debug, Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Status {
    #[serde(rename = "IN")]
    In,
    #[serde(rename = "OUT")]
    Out,
}

/// What is stored in `kv` and published: the prisoner as of the last event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrisonerState {
    noms_number: String,
    status: Status,
    /// `null` until an event says which prison.
    prison_id: Option<String>,
    last_event_type: String,
    last_occurred_at: String,
    /// Events applied for this prisoner, this one included.
    event_count: u64,
}

/// One event, validated and reduced to what the projection applies.
#[derive(Debug, PartialEq)]
struct Change {
    noms_number: String,
    status: Status,
    prison_id: Option<String>,
    event_type: String,
    occurred_at: String,
}

/// Validates the event and extracts the change it describes. Every problem
/// here is `BadEvent`: the event will never become valid by retrying it.
fn change_from(ev: &Event) -> Result<Change, Failure> {
    let payload: DomainEvent = ev.json_as()?;

    // The envelope's type is authoritative; the payload's is the fallback
    // for sources that do not set one.
    let event_type = Some(ev.type_.clone())
        .filter(|t| !t.is_empty())
        .or(payload.event_type.filter(|t| !t.is_empty()))
        .ok_or_else(|| {
            Failure::bad_event(
                "event has no type (neither the event type nor data.eventType is set)",
            )
        })?;

    let status = match event_type.as_str() {
        RECEIVED => Status::In,
        RELEASED => Status::Out,
        other => {
            return Err(Failure::bad_event(format!(
                "unsupported event type {other:?}: expected {RECEIVED} or {RELEASED}"
            )));
        }
    };

    let noms_number = payload
        .person_reference
        .into_iter()
        .flat_map(|p| p.identifiers)
        .find(|id| id.kind == "NOMS" && !id.value.is_empty())
        .map(|id| id.value)
        .ok_or_else(|| {
            Failure::bad_event("no NOMS identifier in data.personReference.identifiers: cannot tell which prisoner this is")
        })?;

    let occurred_at = payload
        .occurred_at
        .filter(|t| !t.is_empty())
        .or_else(|| Some(ev.time.clone()).filter(|t| !t.is_empty()))
        .ok_or_else(|| {
            Failure::bad_event(
                "event has no time (neither data.occurredAt nor the event time is set)",
            )
        })?;

    let prison_id = payload
        .additional_information
        .and_then(|a| a.prison_id)
        .filter(|p| !p.is_empty());

    Ok(Change {
        noms_number,
        status,
        prison_id,
        event_type,
        occurred_at,
    })
}

/// Folds one change into the previous state (none for a new prisoner).
fn apply(previous: Option<PrisonerState>, change: Change) -> PrisonerState {
    let (previous_prison, previous_count) =
        previous.map_or((None, 0), |p| (p.prison_id, p.event_count));
    PrisonerState {
        noms_number: change.noms_number,
        status: change.status,
        prison_id: change.prison_id.or(previous_prison),
        last_event_type: change.event_type,
        last_occurred_at: change.occurred_at,
        event_count: previous_count + 1,
    }
}

fn state_key(noms_number: &str) -> String {
    format!("prisoner/{noms_number}")
}

struct PrisonerProjection;

impl Plugin for PrisonerProjection {
    fn init(config: Value) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        if config.topic.is_empty() {
            return Err("invalid plugin config: topic must not be empty".to_owned());
        }
        *CONFIG
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(config);
        Ok(())
    }

    fn handle(ev: Event) -> Result<Vec<Output>, Failure> {
        let change = change_from(&ev)?;
        let key = state_key(&change.noms_number);
        // Read-modify-write is safe: events of one key are handled in order,
        // and the put commits atomically with the output below.
        let state = apply(kv::get_json(&key)?, change);
        kv::put_json(&key, &state);
        log::debug!(
            "prisoner {} is {:?} (event {} of {})",
            state.noms_number,
            state.status,
            ev.id,
            state.event_count
        );

        let data = serde_json::to_value(&state).expect("prisoner state always serializes");
        Ok(vec![
            Output::new(output_topic(), OUTPUT_TYPE, &data).key(state.noms_number),
        ])
    }
}

switchyard_plugin::export!(PrisonerProjection);

// Pure logic only (no host imports), so these run on the build machine:
// `cargo test -p prisoner-projection --target x86_64-unknown-linux-gnu`.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(type_: &str, data: Value) -> Event {
        let mut ev = Output::new("in", type_, &data).event;
        ev.id = "ev-1".into();
        ev
    }

    fn hmpps(event_type: &str, extra: Value) -> Value {
        let mut data = json!({
            "eventType": event_type,
            "version": 1,
            "occurredAt": "2024-06-11T14:41:22+01:00",
            "personReference": {"identifiers": [{"type": "CRN", "value": "X1"}, {"type": "NOMS", "value": "A1234BC"}]},
        });
        data.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        data
    }

    fn bad_reason(r: Result<Change, Failure>) -> String {
        match r {
            Err(Failure::BadEvent(reason)) => reason,
            other => panic!("expected BadEvent, got {other:?}"),
        }
    }

    #[test]
    fn received_then_released() {
        let rx = hmpps(
            RECEIVED,
            json!({"additionalInformation": {"prisonId": "MDI", "reason": "ADMISSION"}}),
        );
        let s1 = apply(None, change_from(&event(RECEIVED, rx)).unwrap());
        assert_eq!(
            serde_json::to_value(&s1).unwrap(),
            json!({"nomsNumber": "A1234BC", "status": "IN", "prisonId": "MDI",
                   "lastEventType": RECEIVED, "lastOccurredAt": "2024-06-11T14:41:22+01:00", "eventCount": 1})
        );
        // No prisonId on the release: the previous one is kept.
        let s2 = apply(
            Some(s1),
            change_from(&event(RELEASED, hmpps(RELEASED, json!({})))).unwrap(),
        );
        assert_eq!(
            (s2.status, s2.prison_id.as_deref(), s2.event_count),
            (Status::Out, Some("MDI"), 2)
        );
        assert_eq!(s2.last_event_type, RELEASED);
    }

    #[test]
    fn prison_unknown_is_null_and_type_falls_back_to_payload() {
        let s = apply(
            None,
            change_from(&event("", hmpps(RELEASED, json!({})))).unwrap(),
        );
        assert_eq!(serde_json::to_value(&s).unwrap()["prisonId"], Value::Null);
        assert_eq!(s.status, Status::Out);
    }

    #[test]
    fn rejects_bad_events() {
        let no_noms = json!({"eventType": RECEIVED, "occurredAt": "t", "personReference": {"identifiers": [{"type": "CRN", "value": "X1"}]}});
        assert!(bad_reason(change_from(&event(RECEIVED, no_noms))).contains("NOMS"));
        let other = hmpps("prison-offender-events.prisoner.merged", json!({}));
        assert!(bad_reason(change_from(&event("", other))).contains("unsupported event type"));
        assert!(bad_reason(change_from(&event(RECEIVED, json!([1])))).contains("expected shape"));
    }
}
