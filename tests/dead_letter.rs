//! Plugins that fail: each failing event lands on `dead-letter` with the
//! reason, the plugin and its version; the events after it keep flowing.

mod common;

use common::*;
use serde_json::json;

fn chaos_config() -> String {
    config_with(&format!(
        r#"
[plugins.chaos]
path = "{}"
capabilities = ["log", "kv"]
timeout_ms = 200
memory_mb = 32
instances = 2

[[routes]]
name = "chaos"
match = ["*"]
pipeline = ["chaos"]
# Dead-letter a transient failure after its retries rather than hold the key
# (holding is tested in poison_key.rs).
on_poison = "dead-letter"
"#,
        plugin("chaos").display()
    ))
}

fn event(chaos: &str, noms: &str) -> serde_json::Value {
    let mut ev = hmpps(RECEIVED, noms, "MDI", "2024-06-11T14:41:22Z");
    ev["chaos"] = json!(chaos);
    ev
}

#[test]
fn failing_events_are_dead_lettered_and_the_rest_flow() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &chaos_config());
    let cases = [
        "none",
        "trap",
        "none",
        "bad",
        "spin",
        "alloc",
        "transient",
        "none",
    ];
    let mut ids = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        // One key for all: the failures must not block the key's later events.
        let (status, body) = router.post_json(&event(c, "A0000AA"));
        assert_eq!(status, 202, "case {i} {c}: {body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let echoed = router.wait_for("echo", 3);
    assert_eq!(echoed.len(), 3);
    let dead = router.wait_for("dead-letter", 5);
    assert_eq!(dead.len(), 5);

    let reason_of = |case: usize| {
        let rec = dead
            .iter()
            .find(|d| d["data"]["event"]["id"] == ids[case].as_str())
            .unwrap_or_else(|| panic!("case {} not dead-lettered: {dead:?}", cases[case]));
        assert_eq!(rec["type"], "switchyard.dead-letter");
        assert_eq!(rec["data"]["plugin"], "chaos");
        assert_eq!(
            rec["data"]["pluginVersion"].as_str().map(str::len),
            Some(12)
        );
        assert_eq!(rec["data"]["route"], "chaos");
        (
            rec["data"]["reason"].as_str().unwrap().to_string(),
            rec["data"]["error"].as_str().unwrap().to_string(),
            rec["data"]["attempts"].as_u64().unwrap(),
        )
    };
    let (reason, error, _) = reason_of(1);
    assert_eq!(reason, "trap");
    assert!(
        error.contains("wasm trap: wasm `unreachable` instruction executed"),
        "{error}"
    );
    assert_eq!(reason_of(3).0, "bad-event");
    assert!(reason_of(3).1.contains("chaos asked for bad-event"));
    assert_eq!(reason_of(4).0, "timeout");
    assert_eq!(reason_of(5).0, "memory-limit");
    let (reason, _, attempts) = reason_of(6);
    assert_eq!(reason, "transient");
    assert_eq!(
        attempts, 3,
        "transient failures are retried max_attempts times"
    );

    // The dead-letter record carries the original event whole, for replay.
    let rec = dead
        .iter()
        .find(|d| d["data"]["event"]["id"] == ids[1].as_str())
        .unwrap();
    let original: serde_json::Value =
        serde_json::from_str(rec["data"]["event"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(original["chaos"], "trap");

    // Echoed events are the three "none" ones, in order.
    let echoed_ids: Vec<_> = echoed
        .iter()
        .map(|e| e["data"]["chaos"].as_str().unwrap())
        .collect();
    assert_eq!(echoed_ids, vec!["none", "none", "none"]);

    // The router is still serving.
    let (status, _) = router.post_json(&event("none", "B0000BB"));
    assert_eq!(status, 202);
    router.wait_for("echo", 4);
}
