//! Plugins that attack the sandbox (the `hostile` test plugin, a real Wasm
//! component): an infinite loop, a 1 GiB allocation, stack overflow, a
//! panic on every 10th event, 100,000 outputs
//! for one input, output to a topic its route does not allow, opening files
//! and a socket. For each: the event is dead-lettered with the right reason,
//! good events posted alongside still flow, and `GET /v1/plugins` shows the
//! failure.

mod common;

use std::net::TcpListener;

use common::*;
use serde_json::{Value, json};

fn hostile_config() -> String {
    let p = plugin("hostile");
    let mut text = String::new();
    // One plugin entry (own instances and counters) and route per attack.
    for mode in [
        "spin",
        "alloc",
        "recurse",
        "every-10th",
        "flood",
        "forbidden",
        "open-file",
        "open-socket",
    ] {
        let name = format!("h-{mode}");
        text.push_str(&format!(
            r#"
[plugins.{name}]
path = "{p}"
timeout_ms = {timeout}
memory_mb = 64
instances = 1

[[routes]]
name = "{name}"
match = ["hostile.{mode}"]
pipeline = ["{name}"]
topics = ["echo", "leak"]
"#,
            p = p.display(),
            // The loop must be stopped soon; the others get time to fail
            // on their own even on a busy machine.
            timeout = if mode == "spin" { 200 } else { 5000 },
        ));
    }
    text.push_str(&format!(
        r#"
[plugins.good]
path = "{}"

[[routes]]
name = "good"
match = ["prison-offender-events.*"]
pipeline = ["good"]
topics = ["echo"]
"#,
        p.display()
    ));
    config_with(&text)
}

fn event(event_type: &str, n: usize) -> Value {
    let mut ev = hmpps(
        event_type,
        &format!("A{n:04}BC"),
        "MDI",
        "2024-06-11T14:41:22Z",
    );
    ev["additionalInformation"]["n"] = json!(n);
    ev
}

/// The dead-letter record of the event `id`.
fn dead_letter_of<'a>(dead: &'a [Value], id: &str) -> &'a Value {
    &dead
        .iter()
        .find(|d| d["data"]["event"]["id"] == id)
        .unwrap_or_else(|| panic!("{id} not dead-lettered: {dead:#?}"))["data"]
}

#[test]
fn hostile_plugins_are_contained_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &hostile_config());
    // Something to connect to, to show the sandbox connects nowhere.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let mut good = 0;
    let post = |ev: &Value| {
        let (status, body) = router.post_json(ev);
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_string()
    };
    let mut ids = std::collections::BTreeMap::new();
    for mode in [
        "spin",
        "alloc",
        "recurse",
        "flood",
        "forbidden",
        "open-file",
    ] {
        ids.insert(mode, post(&event(&format!("hostile.{mode}"), 0)));
        post(&event(RECEIVED, good));
        good += 1;
    }
    let mut sock = event("hostile.open-socket", 0);
    sock["port"] = json!(port);
    ids.insert("open-socket", post(&sock));
    // 20 events through the plugin that panics on every 10th; one key, so
    // they reach it in order.
    let tenth: Vec<String> = (1..=20)
        .map(|n| {
            let mut ev = event("hostile.every-10th", 0);
            ev["additionalInformation"]["n"] = json!(n);
            post(&ev)
        })
        .collect();
    post(&event(RECEIVED, good));
    good += 1;

    // Every good event got through; 18 of the every-10th ones too.
    let echoed = router.wait_for("echo", good + 18);
    let good_echoed = echoed.iter().filter(|e| e["type"] == RECEIVED).count();
    assert_eq!(
        good_echoed, good,
        "good events must flow beside hostile ones"
    );

    let dead = router.wait_for("dead-letter", 7 + 2);
    assert_eq!(dead.len(), 9, "{dead:#?}");
    let reason = |mode: &str| {
        let d = dead_letter_of(&dead, &ids[mode]);
        assert_eq!(d["plugin"], format!("h-{mode}"));
        (
            d["reason"].as_str().unwrap().to_string(),
            d["error"].as_str().unwrap().to_string(),
        )
    };

    let (r, e) = reason("spin");
    assert_eq!(r, "timeout", "{e}");
    assert!(e.contains("deadline of 200ms"), "{e}");

    let (r, e) = reason("alloc");
    assert_eq!(r, "memory-limit", "{e}");

    let (r, e) = reason("recurse");
    assert_eq!(r, "trap", "{e}");
    // A Rust guest keeps its frames' data on a shadow stack at the bottom of
    // linear memory: overflowing it leaves memory (out of bounds); frames
    // without data exhaust wasmtime's own call-stack limit. Both are traps.
    assert!(
        e.contains("out of bounds memory access") || e.contains("call stack exhausted"),
        "{e}"
    );

    let (r, e) = reason("flood");
    assert_eq!(r, "bad-output", "{e}");
    assert!(
        e.contains("100000") && e.contains("max_outputs = 1000"),
        "{e}"
    );

    let (r, e) = reason("forbidden");
    assert_eq!(r, "bad-output", "{e}");
    assert!(e.contains("\"forbidden\""), "{e}");

    let (r, e) = reason("open-file");
    assert_eq!(r, "bad-event", "{e}");
    assert!(e.contains("sandbox held: open /etc/passwd"), "{e}");

    let (r, e) = reason("open-socket");
    assert_eq!(r, "bad-event", "{e}");
    assert!(
        e.contains(&format!("sandbox held: connect 127.0.0.1:{port}")),
        "{e}"
    );
    assert!(
        listener.accept().is_err(),
        "the plugin must not reach the socket"
    );
    assert_eq!(router.topic_len("leak"), 0, "nothing may leak out");
    assert_eq!(router.topic_len("forbidden"), 0);

    // The 10th and 20th of the every-10th events trapped; the rest flowed.
    for (i, id) in tenth.iter().enumerate() {
        let n = i + 1;
        let dl = dead.iter().any(|d| d["data"]["event"]["id"] == id.as_str());
        let which: Vec<usize> = tenth
            .iter()
            .enumerate()
            .filter(|(_, id)| dead.iter().any(|d| d["data"]["event"]["id"] == id.as_str()))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(
            dl,
            n % 10 == 0,
            "event {n} of every-10th; dead-lettered: {which:?}"
        );
    }
    let d = dead_letter_of(&dead, &tenth[9]);
    assert_eq!(d["reason"], "trap");
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("wasm `unreachable` instruction executed"),
        "{d}"
    );

    // `GET /v1/plugins` shows each failure: errors counted, the last one.
    for (mode, reason, errors) in [
        ("spin", "timeout", 1),
        ("alloc", "memory-limit", 1),
        ("recurse", "trap", 1),
        ("flood", "bad-output", 1),
        ("forbidden", "bad-output", 1),
        ("open-file", "bad-event", 1),
        ("open-socket", "bad-event", 1),
        ("every-10th", "trap", 2),
    ] {
        let s = router.plugin_status(&format!("h-{mode}"));
        assert_eq!(s["errors"], errors, "{mode}: {s:#}");
        assert_eq!(s["lastError"]["reason"], reason, "{mode}: {s:#}");
        assert!(s["lastError"]["at"].is_string(), "{mode}: {s:#}");
    }
    let s = router.plugin_status("h-every-10th");
    assert_eq!(s["calls"], 20, "{s:#}");
    assert_eq!(router.plugin_status("good")["errors"], 0);
}
