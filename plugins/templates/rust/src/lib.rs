//! {{name}}: counts the events it sees per ordering key (in `kv`) and
//! publishes the count to the topic `{{name}}`.
//!
//! Try: `switchyard plugin test` (runs samples/*.json), then edit `handle`.

use serde_json::json;
use switchyard_plugin::{Event, Failure, Output, Plugin, kv, log};

struct Counter;

impl Plugin for Counter {
    fn handle(ev: Event) -> Result<Vec<Output>, Failure> {
        let key = ev.key.clone().unwrap_or_default();
        let state_key = format!("seen/{key}");
        // Writes commit atomically with this event's outputs.
        let seen = kv::get_json::<u64>(&state_key)?.unwrap_or(0) + 1;
        kv::put_json(&state_key, &seen);
        log::info!("{} for {key}: seen {seen}", ev.type_);
        let data = json!({ "eventType": ev.type_, "seen": seen });
        Ok(vec![Output::new("{{name}}", "{{name}}.counted", &data).key(key)])
    }
}

switchyard_plugin::export!(Counter);
