//! The circuit breaker per plugin: after `failures` failed events in a row the
//! plugin's events are dead-lettered as `circuit-open`; after a back-off one
//! probe is let through, which re-opens it (with a longer back-off) or closes
//! it; a reload of the plugin starts with a closed breaker. `GET /v1/plugins`
//! shows the state and each transition is logged once.

mod common;

use common::*;
use serde_json::{Value, json};

fn config(mode: Option<&str>, failures: u32, backoff_ms: u64) -> String {
    let mode = mode.map_or(String::new(), |m| format!("config = {{ mode = \"{m}\" }}"));
    config_with(&format!(
        r#"
[plugins.chaos]
path = "{path}"
{mode}

[plugins.chaos.breaker]
failures = {failures}
backoff_ms = {backoff_ms}
max_backoff_ms = 60000

[[routes]]
name = "chaos"
match = ["*"]
pipeline = ["chaos"]
"#,
        path = plugin("chaos").display()
    ))
}

fn event(chaos: &str, noms: &str, n: usize) -> Value {
    let mut ev = hmpps(RECEIVED, noms, "MDI", "2024-06-11T14:41:22Z");
    ev["chaos"] = json!(chaos);
    ev["n"] = json!(n);
    ev
}

fn reasons(dead: &[Value]) -> Vec<String> {
    dead.iter()
        .map(|d| d["data"]["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_breaker_opens_after_n_failures_probes_and_closes_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &config(None, 3, 1000));
    let closed = router.plugin_status("chaos");
    assert_eq!(closed["breaker"]["state"], "closed", "{closed:#}");
    assert_eq!(closed["breaker"]["threshold"], 3);

    // One request, one key: three traps in a row, then three good events
    // handled right after the third trap, long before the first probe.
    let batch: Vec<Value> = (0..6)
        .map(|i| event(if i < 3 { "trap" } else { "none" }, "A0000AA", i))
        .collect();
    let (status, body) = router.post_json(&json!(batch));
    assert_eq!(status, 202, "{body}");
    let dead = router.wait_for("dead-letter", 6);
    assert_eq!(
        reasons(&dead),
        [
            "trap",
            "trap",
            "trap",
            "circuit-open",
            "circuit-open",
            "circuit-open"
        ]
    );
    let open = &dead[3]["data"];
    assert_eq!(open["plugin"], "chaos");
    assert_eq!(open["route"], "chaos");
    assert_eq!(open["event"]["data"], json!(batch[3]).to_string());
    assert!(
        open["error"].as_str().unwrap().contains("is open"),
        "{open}"
    );
    assert_eq!(router.topic_len("echo"), 0);

    let status = router.plugin_status("chaos");
    let b = &status["breaker"];
    assert_eq!(b["state"], "open", "{status:#}");
    assert_eq!(b["opens"], 1);
    assert_eq!(b["consecutiveFailures"], 3);
    assert_eq!(b["backoffMs"], 1000);
    assert!(
        b["openedAt"].is_string() && b["nextProbeAt"].is_string(),
        "{b}"
    );
    assert_eq!(router.log_lines("circuit opened").len(), 1);

    // A failing probe re-opens it with the back-off doubled.
    let mut n = 10;
    router.wait_until("a failed probe to re-open the circuit", || {
        n += 1;
        router.post_json(&event("trap", "B0000BB", n));
        router.plugin_status("chaos")["breaker"]["opens"] == 2
    });
    let b = router.plugin_status("chaos")["breaker"].clone();
    assert_eq!(
        (b["state"].as_str(), b["backoffMs"].as_u64()),
        (Some("open"), Some(2000))
    );
    assert_eq!(router.log_lines("circuit half-open").len(), 1);
    assert_eq!(router.log_lines("circuit opened").len(), 2);

    // The plugin works again for good events: the next probe closes it.
    router.wait_until("a good probe to close the circuit", || {
        n += 1;
        router.post_json(&event("none", "C0000CC", n));
        router.plugin_status("chaos")["breaker"]["state"] == "closed"
    });
    router.wait_for("echo", 1);
    assert_eq!(router.log_lines("circuit closed").len(), 1);
    let b = router.plugin_status("chaos")["breaker"].clone();
    assert_eq!(b["consecutiveFailures"], 0);
    assert!(b["nextProbeAt"].is_null(), "{b}");

    // Closed: events flow without probing.
    router.post_json(&event("none", "C0000CC", 1000));
    router.post_json(&event("none", "D0000DD", 1001));
    router.wait_until("both events echoed", || {
        let echo = router.topic("echo");
        [1000, 1001]
            .iter()
            .all(|n| echo.iter().any(|e| e["data"]["n"] == *n))
    });
    let b = router.plugin_status("chaos")["breaker"].clone();
    assert_eq!(
        (b["state"].as_str(), b["opens"].as_u64()),
        (Some("closed"), Some(2))
    );
}

#[test]
fn a_reload_of_the_fixed_plugin_closes_its_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &config(Some("trap"), 2, 60_000));
    for i in 0..4 {
        let (status, body) = router.post_json(&event("none", "A0000AA", i));
        assert_eq!(status, 202, "{body}");
    }
    let dead = router.wait_for("dead-letter", 4);
    assert_eq!(
        reasons(&dead),
        ["trap", "trap", "circuit-open", "circuit-open"]
    );
    assert_eq!(router.plugin_status("chaos")["breaker"]["state"], "open");

    // Deploy the fix: the plugin's config changes, a new version is loaded.
    std::fs::write(&router.config, config(Some("heal"), 2, 60_000)).unwrap();
    let (status, body) = router.post_admin("/v1/config/reload", &json!({}));
    assert_eq!(status, 200, "{body}");
    let b = router.plugin_status("chaos")["breaker"].clone();
    assert_eq!(
        (b["state"].as_str(), b["opens"].as_u64()),
        (Some("closed"), Some(0)),
        "{b}"
    );
    let (status, _) = router.post_json(&event("trap", "A0000AA", 10));
    assert_eq!(status, 202);
    let echo = router.wait_for("echo", 1);
    assert_eq!(echo.len(), 1);
}

#[test]
fn with_on_open_wait_the_events_of_an_open_circuit_wait_for_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |mode: &str| {
        config(Some(mode), 2, 100).replace(
            "max_backoff_ms = 60000",
            "max_backoff_ms = 200\non_open = \"wait\"",
        )
    };
    let router = Router::start(dir.path(), &cfg("trap"));
    let batch: Vec<Value> = (0..5).map(|i| event("none", "A0000AA", i)).collect();
    let (status, body) = router.post_json(&json!(batch));
    assert_eq!(status, 202, "{body}");
    // Two traps open it; the rest wait, held on their key, instead of being
    // dead-lettered. (A probe that traps again dead-letters its own event.)
    router.wait_until("the circuit to open and the key to be held", || {
        let (_, body) = router.get("/v1/dead-letter");
        router.plugin_status("chaos")["breaker"]["opens"].as_u64() >= Some(1)
            && body["held"].as_array().is_some_and(|h| h.len() == 1)
    });
    assert_eq!(router.topic_len("echo"), 0);
    assert!(
        router
            .topic("dead-letter")
            .iter()
            .all(|d| d["data"]["reason"] == "trap"),
        "nothing dead-lettered as circuit-open"
    );

    std::fs::write(&router.config, cfg("heal")).unwrap();
    let (status, body) = router.post_admin("/v1/config/reload", &json!({}));
    assert_eq!(status, 200, "{body}");
    router.wait_until(
        "every event echoed or (a failed probe's) dead-lettered",
        || {
            let (_, body) = router.get("/v1/dead-letter");
            router.topic_len("echo") + router.topic_len("dead-letter") == 5
                && body["held"] == json!([])
        },
    );
    let echo = router.topic("echo");
    let ns: Vec<u64> = echo
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect();
    let mut sorted = ns.clone();
    sorted.sort();
    assert_eq!(ns, sorted, "the key's order is kept");
    assert_eq!(*ns.last().unwrap(), 4);
}
