//! Poison isolation per key: an event that keeps failing transiently holds
//! only its key; the key's later events wait in order while other keys flow.
//! With `on_poison = "park"` the key's events are dead-lettered as
//! `key-parked` once the poison one is, and a dead-letter replay after the
//! fix releases them in order, exactly once.

mod common;

use common::*;
use serde_json::{Value, json};

fn config(mode: Option<&str>, on_poison: &str, hold_retries: u32) -> String {
    let mode = mode.map_or(String::new(), |m| format!("config = {{ mode = \"{m}\" }}"));
    config_with_router(
        &format!("hold_retries = {hold_retries}\nhold_backoff_ms = 20\nhold_max_backoff_ms = 100"),
        &format!(
            r#"
[plugins.chaos]
path = "{path}"
{mode}
breaker = {{ failures = 0 }}

[[routes]]
name = "chaos"
match = ["*"]
pipeline = ["chaos"]
on_poison = "{on_poison}"
"#,
            path = plugin("chaos").display()
        ),
    )
}

fn event(chaos: &str, noms: &str, n: usize) -> Value {
    let mut ev = hmpps(RECEIVED, noms, "MDI", "2024-06-11T14:41:22Z");
    ev["chaos"] = json!(chaos);
    ev["n"] = json!(n);
    ev
}

fn post(router: &Router, ev: &Value) {
    let (status, body) = router.post_json(ev);
    assert_eq!(status, 202, "{body}");
}

/// The `n` of the echoed events of key `noms`, in topic order.
fn echoed(router: &Router, noms: &str) -> Vec<u64> {
    router
        .topic("echo")
        .iter()
        .filter(|e| e["data"]["personReference"]["identifiers"][0]["value"] == noms)
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect()
}

fn held(router: &Router) -> Vec<Value> {
    let (status, body) = router.get("/v1/dead-letter");
    assert_eq!(status, 200, "{body}");
    body["held"].as_array().cloned().unwrap_or_default()
}

fn heal(router: &Router, on_poison: &str, hold_retries: u32) {
    std::fs::write(
        &router.config,
        config(Some("heal"), on_poison, hold_retries),
    )
    .unwrap();
    let (status, body) = router.post_admin("/v1/config/reload", &json!({}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_poison_event_holds_only_its_key_and_the_key_resumes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Retries never run out during the test: the key waits until the fix.
    let router = Router::start(dir.path(), &config(None, "wait", 1_000_000));
    post(&router, &event("transient", "A0000AA", 1));
    post(&router, &event("none", "A0000AA", 2));
    for i in 0..5 {
        post(&router, &event("none", &format!("B000{i}BB"), 100 + i));
    }
    post(&router, &event("none", "A0000AA", 3));

    // Other keys flow past the held one.
    router.wait_for("echo", 5);
    router.wait_until("the key's three events to be held and retried", || {
        held(&router).first().is_some_and(|h| {
            h["offsets"].as_array().unwrap().len() == 3 && h["retries"].as_u64() >= Some(1)
        })
    });
    let h = &held(&router)[0];
    assert_eq!(
        (h["route"].as_str(), h["key"].as_str()),
        (Some("chaos"), Some("A0000AA"))
    );
    assert_eq!(h["parked"], false);
    assert_eq!(h["reason"], "transient");
    assert!(echoed(&router, "A0000AA").is_empty());
    assert_eq!(router.topic_len("dead-letter"), 0);
    // Still held while other keys keep flowing.
    post(&router, &event("none", "C0000CC", 200));
    router.wait_for("echo", 6);
    assert!(echoed(&router, "A0000AA").is_empty());

    // The fix: the held event succeeds and the key's events follow, in order.
    heal(&router, "wait", 1_000_000);
    router.wait_until("the held key to be released", || {
        echoed(&router, "A0000AA").len() == 3
    });
    assert_eq!(echoed(&router, "A0000AA"), [1, 2, 3]);
    assert!(held(&router).is_empty());
    post(&router, &event("none", "A0000AA", 4));
    router.wait_until("the key to flow again", || {
        echoed(&router, "A0000AA").len() == 4
    });
    assert_eq!(echoed(&router, "A0000AA"), [1, 2, 3, 4]);
    assert_eq!(router.topic_len("dead-letter"), 0);
    assert_eq!(router.topic_len("echo"), 10);
}

#[test]
fn a_parked_key_is_dead_lettered_and_released_in_order_by_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &config(None, "park", 2));
    post(&router, &event("transient", "A0000AA", 1));
    post(&router, &event("none", "A0000AA", 2));
    post(&router, &event("none", "B0000BB", 100));

    // The poison event is dead-lettered after its retries; the event waiting
    // behind it is dead-lettered as key-parked; the other key flowed.
    let dead = router.wait_for("dead-letter", 2);
    assert_eq!(dead[0]["data"]["reason"], "transient");
    assert_eq!(
        dead[0]["data"]["attempts"],
        3 * (1 + 2),
        "max_attempts in the batch, then in each of hold_retries rounds"
    );
    assert_eq!(dead[1]["data"]["reason"], "key-parked");
    assert_eq!(dead[1]["data"]["route"], "chaos");
    router.wait_until("the other key's event", || {
        echoed(&router, "B0000BB") == [100]
    });
    let h = held(&router);
    assert_eq!((h.len(), &h[0]["parked"]), (1, &json!(true)), "{h:?}");

    // Later events of the key are parked too; other keys still flow.
    post(&router, &event("none", "A0000AA", 3));
    post(&router, &event("none", "B0000BB", 101));
    let dead = router.wait_for("dead-letter", 3);
    assert_eq!(dead[2]["data"]["reason"], "key-parked");
    router.wait_until("B's second event", || echoed(&router, "B0000BB").len() == 2);
    assert!(echoed(&router, "A0000AA").is_empty());

    // Fix, replay: the key's events come out in order, exactly once, and
    // the key is free again.
    heal(&router, "park", 2);
    let (status, report) = router.post_admin("/v1/dead-letter/replay", &json!({}));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["replayed"], 3, "{report}");
    assert_eq!(report["releasedKeys"], 1, "{report}");
    router.wait_until("the parked events to be replayed", || {
        echoed(&router, "A0000AA").len() == 3
    });
    assert_eq!(echoed(&router, "A0000AA"), [1, 2, 3]);
    assert!(held(&router).is_empty());
    post(&router, &event("none", "A0000AA", 4));
    router.wait_until("the key to flow again", || {
        echoed(&router, "A0000AA").len() == 4
    });
    assert_eq!(router.topic_len("dead-letter"), 3);
    let (_, report) = router.post_admin("/v1/dead-letter/replay", &json!({}));
    assert_eq!(report["replayed"], 0, "{report}");
}
