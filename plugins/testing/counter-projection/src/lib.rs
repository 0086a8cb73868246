//! Counter projection: per ordering key, the number of events seen, kept in
//! `kv` at `count/<key>` and emitted on topic `counter-state`. The `v2` build
//! also keeps the last event type and a running checksum of event ids, so its
//! state differs from v1's and a rebuild has something to change. v1 traps on
//! an event whose data has `"poison": true` and fails transiently on one with
//! `"flaky": true`; v2 counts both: bugs fixed by a new version.

use serde_json::{Value, json};
use switchyard_plugin::{Event, Failure, Output, Plugin, kv};

struct Counter;

impl Plugin for Counter {
    fn handle(ev: Event) -> Result<Vec<Output>, Failure> {
        let key = ev
            .key
            .clone()
            .ok_or_else(|| Failure::bad_event("event has no key"))?;
        let data = serde_json::from_str::<Value>(&ev.data).unwrap_or(Value::Null);
        let flag = |name: &str| data.get(name) == Some(&Value::Bool(true));
        if flag("poison") && !cfg!(feature = "v2") {
            panic!("counter v1 cannot count poison event {}", ev.id);
        }
        if flag("flaky") && !cfg!(feature = "v2") {
            return Err(Failure::transient(
                "counter v1 cannot count flaky events yet",
            ));
        }
        let slot = format!("count/{key}");
        let mut state: Value =
            kv::get_json(&slot)?.unwrap_or_else(|| json!({ "key": key, "count": 0 }));
        let count = state["count"].as_u64().unwrap_or(0) + 1;
        state["count"] = json!(count);
        if cfg!(feature = "v2") {
            let sum = state["checksum"].as_u64().unwrap_or(0);
            let add: u64 = ev.id.bytes().map(u64::from).sum();
            state["checksum"] = json!(sum.wrapping_mul(31).wrapping_add(add) % 1_000_000_007);
            state["lastType"] = json!(ev.type_);
            state["schema"] = json!(2);
        }
        kv::put_json(&slot, &state);
        Ok(vec![Output::new(
            "counter-state",
            "counter.updated",
            &state,
        )])
    }
}

switchyard_plugin::export!(Counter);
