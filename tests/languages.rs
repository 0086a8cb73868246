//! The example plugins written in JavaScript and in Python publish the same
//! bytes as the Rust ones: one router runs the Rust and the other language's
//! projection and fan-out side by side over the same events
//! (tests/fixtures/language-events.json), and the stored records are compared
//! byte for byte (data) and field by field (type, key, time, attributes).

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;
use switchyard::Event;

fn events() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("tests/fixtures/language-events.json"))
        .expect("read the event set");
    serde_json::from_str(&text).expect("event set is JSON")
}

fn config(lang: &str) -> String {
    let mut extra = String::new();
    for l in ["rust", lang] {
        let suffix = if l == "rust" {
            String::new()
        } else {
            format!("-{l}")
        };
        let projection = plugin(&format!("prisoner-projection{suffix}"));
        let fanout = plugin(&format!("domain-fanout{suffix}"));
        extra.push_str(&format!(
            r#"
[plugins.projection-{l}]
path = "{projection}"
capabilities = ["log", "clock", "kv"]
timeout_ms = 2000
config = {{ topic = "state-{l}" }}

[plugins.fanout-{l}]
path = "{fanout}"
timeout_ms = 2000
config = {{ topic_prefix = "{l}.domain." }}

[[routes]]
name = "projection-{l}"
match = ["{RECEIVED}", "{RELEASED}"]
pipeline = ["projection-{l}"]

[[routes]]
name = "fanout-{l}"
match = ["*"]
pipeline = ["fanout-{l}"]
"#,
            projection = projection.display(),
            fanout = fanout.display(),
        ));
    }
    config_with(&extra)
}

/// What must be identical: the record minus its id (derived from the route
/// name) and the producing plugin's name and version.
fn comparable(
    ev: &Event,
) -> (
    Option<String>,
    String,
    String,
    String,
    BTreeMap<String, String>,
) {
    let mut attrs = ev.attributes.clone();
    attrs.remove("plugin");
    attrs.remove("pluginversion");
    (
        ev.key.clone(),
        ev.time.clone(),
        ev.event_type.clone(),
        ev.data.clone(),
        attrs,
    )
}

fn read_all(store: &switchyard::Store, topic: &str) -> Vec<Event> {
    store
        .read(topic, 0, 10_000)
        .expect("read topic")
        .into_iter()
        .map(|r| r.event)
        .collect()
}

/// Records of `rust_topic` and `other_topic`, as sorted comparable tuples
/// (records of different keys may interleave differently; per key, order is
/// part of the data through `eventCount`).
fn same_records(store: &switchyard::Store, rust_topic: &str, other_topic: &str) -> usize {
    let mut rust: Vec<_> = read_all(store, rust_topic).iter().map(comparable).collect();
    let mut other: Vec<_> = read_all(store, other_topic)
        .iter()
        .map(comparable)
        .collect();
    assert!(!rust.is_empty(), "{rust_topic} is empty");
    rust.sort();
    other.sort();
    assert_eq!(
        rust.len(),
        other.len(),
        "{rust_topic} vs {other_topic}: record counts differ"
    );
    for (r, o) in rust.iter().zip(&other) {
        assert_eq!(
            r.3, o.3,
            "data bytes differ between {rust_topic} and {other_topic}"
        );
        assert_eq!(
            r, o,
            "records differ between {rust_topic} and {other_topic}"
        );
    }
    rust.len()
}

fn compare_with_rust(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &config(lang));
    let events = events();
    for ev in &events {
        let (status, body) = if ev.get("specversion").is_some() {
            router.post(
                "application/cloudevents+json",
                ev.to_string().as_bytes(),
                &[],
            )
        } else {
            router.post_json(ev)
        };
        assert_eq!(status, 202, "{body}");
    }
    let projected = events
        .iter()
        .filter(|e| e["eventType"] == RECEIVED || e["eventType"] == RELEASED)
        .count();
    for l in ["rust", lang] {
        router.wait_for(&format!("state-{l}"), projected);
    }
    // Every event reaches the fan-out; wait until all are out in both.
    let fanned = |l: &str| -> u64 {
        let (_, body) = router.get("/v1/topics");
        body["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{l}.domain.")))
            })
            .filter_map(|t| t["length"].as_u64())
            .sum()
    };
    let start = std::time::Instant::now();
    while fanned("rust") < events.len() as u64 || fanned(lang) < events.len() as u64 {
        assert!(
            start.elapsed() < DEADLINE,
            "fan-out incomplete: rust {}, {lang} {} of {}",
            fanned("rust"),
            fanned(lang),
            events.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        router.topic_len("dead-letter"),
        0,
        "{:?}",
        router.topic("dead-letter")
    );
    router.stop();

    let store = switchyard::Store::open(&dir.path().join("data")).expect("open the store");
    let n = same_records(&store, "state-rust", &format!("state-{lang}"));
    assert_eq!(n, projected);
    let mut fanned_out = 0;
    for (topic, _) in store.topics().unwrap() {
        if let Some(domain) = topic.strip_prefix("rust.domain.") {
            fanned_out += same_records(&store, &topic, &format!("{lang}.domain.{domain}"));
        }
    }
    assert_eq!(fanned_out, events.len());
    // The projection's final state agrees too (the values are JSON with the
    // same content; the Rust SDK writes struct order, the others sorted keys).
    for noms in ["A1234BC", "B9876ZZ"] {
        let key = format!("prisoner/{noms}");
        let get = |ns: &str| -> Value {
            let bytes = store.kv_get(ns, &key).unwrap().expect("state present");
            serde_json::from_slice(&bytes).unwrap()
        };
        assert_eq!(get("projection-rust"), get(&format!("projection-{lang}")));
    }
}

// One after the other: each router compiles two 12-18 MB components, and
// doing both at once on a small machine only makes each slower.
#[test]
fn javascript_and_python_examples_publish_the_same_bytes_as_rust() {
    compare_with_rust("js");
    compare_with_rust("python");
}
