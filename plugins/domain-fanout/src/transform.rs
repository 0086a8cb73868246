//! The fan-out transform as a plain function over text, with nothing but
//! `serde_json`: the plugin calls it on each event, and the router's
//! benchmark (`benches/switchyard.rs`) compiles this same file natively, so
//! "Wasm vs native" compares one piece of code.

use serde_json::{Map, Value};

/// The one output of an event.
#[derive(Debug)]
pub struct FannedOut {
    /// `<prefix><domain>`.
    pub topic: String,
    pub event_type: String,
    pub domain: String,
    /// The enriched payload, as JSON text.
    pub data: String,
}

/// Why an event cannot be fanned out (the plugin dead-letters it).
#[derive(Debug)]
pub enum BadEvent {
    NotJson(serde_json::Error),
    NotObject,
    NoDomain(String),
}

/// The domain is the event type up to its first `.`:
/// `prison-offender-events.prisoner.received` → `prison-offender-events`.
fn domain_of(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

/// `personReference.identifiers` (`[{"type": "NOMS", "value": "A1234BC"}]`)
/// as a `{"NOMS": "A1234BC"}` map. Entries without a string `type` and
/// `value` are skipped; if a type repeats, the first value wins.
fn flatten_identifiers(data: &Map<String, Value>) -> Map<String, Value> {
    let mut flat = Map::new();
    let identifiers = data
        .get("personReference")
        .and_then(|p| p.get("identifiers"))
        .and_then(Value::as_array);
    for id in identifiers.into_iter().flatten() {
        if let (Some(Value::String(kind)), Some(value @ Value::String(_))) =
            (id.get("type"), id.get("value"))
        {
            flat.entry(kind.clone()).or_insert_with(|| value.clone());
        }
    }
    flat
}

/// Routes an event of type `event_type` (empty: take the payload's
/// `eventType`) with payload `data` to `<prefix><domain>`, adding the
/// flattened `identifiers` and the `domain` to the payload.
pub fn fan_out(event_type: &str, data: &str, prefix: &str) -> Result<FannedOut, BadEvent> {
    let Value::Object(mut data) = serde_json::from_str(data).map_err(BadEvent::NotJson)? else {
        return Err(BadEvent::NotObject);
    };

    // The envelope's type is authoritative; the payload's is the fallback.
    let event_type = match (event_type, data.get("eventType").and_then(Value::as_str)) {
        ("", Some(t)) => t.to_owned(),
        (t, _) => t.to_owned(),
    };
    let domain = domain_of(&event_type).to_owned();
    if domain.is_empty() {
        return Err(BadEvent::NoDomain(event_type));
    }

    // Added last so they replace any same-named fields of the original.
    let identifiers = flatten_identifiers(&data);
    data.insert("identifiers".to_owned(), Value::Object(identifiers));
    data.insert("domain".to_owned(), Value::String(domain.clone()));

    Ok(FannedOut {
        topic: format!("{prefix}{domain}"),
        event_type,
        domain,
        // `to_string(&value)`, not `value.to_string()`: see `json_text` in
        // the plugin SDK.
        data: serde_json::to_string(&Value::Object(data)).map_err(BadEvent::NotJson)?,
    })
}
