//! The dead-letter topic as a replayable log: records list with filters and
//! paging; after the fixed plugin is loaded, `switchyard replay --dead-letter`
//! re-injects them, the outputs appear exactly once with the ids they would
//! have had, routes that had succeeded are not run again, and a second replay
//! (even after a restart) does nothing.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};
use switchyard::pipeline::derive_id;

fn config(mode: &str) -> String {
    config_with(&format!(
        r#"
[plugins.chaos]
path = "{chaos}"
config = {{ mode = "{mode}" }}
breaker = {{ failures = 0 }}

[plugins.fanout]
path = "{fanout}"

[[routes]]
name = "chaos"
match = ["*"]
pipeline = ["chaos"]

[[routes]]
name = "fanout"
match = ["*"]
pipeline = ["fanout"]
"#,
        chaos = plugin("chaos").display(),
        fanout = plugin("domain-fanout").display(),
    ))
}

fn cli(router: &Router, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("replay")
        .args(args)
        .arg("--url")
        .arg(&router.base)
        .output()
        .expect("run switchyard replay");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn list(router: &Router, query: &str) -> Value {
    let (status, body) = router.get(&format!("/v1/dead-letter{query}"));
    assert_eq!(status, 200, "{body}");
    body
}

const FANOUT: &str = "domain.prison-offender-events";

#[test]
fn dead_letters_are_listed_and_replayed_exactly_once_after_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &config("trap"));
    let mut ids = Vec::new();
    for i in 0..4 {
        let ev = hmpps(
            RECEIVED,
            &format!("A000{i}AA"),
            "MDI",
            "2024-06-11T14:41:22Z",
        );
        let (status, body) = router.post_json(&ev);
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    router.wait_for("dead-letter", 4);
    router.wait_for(FANOUT, 4);

    // Listing: every field a replay and a reader need, filters and paging.
    let all = list(&router, "?plugin=chaos&reason=trap");
    let records = all["records"].as_array().unwrap();
    assert_eq!(records.len(), 4, "{all:#}");
    assert!(all["next"].is_null());
    let r = &records[0];
    assert_eq!(r["route"], "chaos");
    assert_eq!(r["stage"], 0);
    assert_eq!(r["plugin"], "chaos");
    assert_eq!(r["pluginVersion"], version_of(&plugin("chaos")));
    assert!(r["error"].as_str().unwrap().contains("trap"), "{r}");
    assert_eq!(r["attempts"], 1);
    assert!(r["at"].as_str().unwrap().contains('T'));
    assert_eq!(r["replayable"], true);
    assert!(r["replayed"].is_null());
    assert_eq!(r["event"]["id"], ids[0].as_str());
    assert_eq!(r["event"]["type"], RECEIVED);
    let page = list(&router, "?limit=3");
    assert_eq!(page["records"].as_array().unwrap().len(), 3);
    let next = page["next"].as_u64().unwrap();
    let rest = list(&router, &format!("?from={next}&limit=3"));
    assert_eq!(rest["records"].as_array().unwrap().len(), 1);
    assert_eq!(rest["records"][0]["event"]["id"], ids[3].as_str());
    assert_eq!(list(&router, "?type=nope")["records"], json!([]));
    assert_eq!(list(&router, "?reason=timeout")["records"], json!([]));
    let (status, _) = router.get("/v1/dead-letter?colour=red");
    assert_eq!(status, 400);

    // A dry run says what it would do and appends nothing.
    let (ok, out) = cli(
        &router,
        &["--dead-letter", "--filter", "plugin=chaos", "--dry-run"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("would replay 4 record(s)"), "{out}");
    assert_eq!(router.topic_len("events"), 4);
    let (ok, out) = cli(&router, &["--dead-letter", "--filter", "colour=red"]);
    assert!(
        !ok && out.contains("unknown filter key \"colour\""),
        "{out}"
    );

    // Load the fixed plugin, then replay.
    std::fs::write(&router.config, config("heal")).unwrap();
    let (status, body) = router.post_admin("/v1/config/reload", &json!({}));
    assert_eq!(status, 200, "{body}");
    let (ok, out) = cli(
        &router,
        &["--dead-letter", "--filter", "plugin=chaos,reason=trap"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("replayed 4 record(s)"), "{out}");

    let echo = router.wait_for("echo", 4);
    let mut got: Vec<String> = echo
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = ids.iter().map(|id| derive_id(id, "chaos", 0, 0)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "outputs have the ids of a first-time success");
    // Re-injected with their ids; the route that had succeeded did not run again.
    let events = router.topic("events");
    assert_eq!(events.len(), 8);
    assert_eq!(events[4]["id"], ids[0].as_str());
    assert_eq!(events[4]["replayroute"], "chaos");
    assert_eq!(events[4]["replaycount"], "1");
    router.wait_until("the pipeline to consume the replayed events", || {
        router.topic_len("echo") == 4
    });
    assert_eq!(router.topic_len(FANOUT), 4);
    assert_eq!(router.topic_len("dead-letter"), 4);
    assert_eq!(
        list(&router, "?replayed=true")["records"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(list(&router, "?replayed=false")["records"], json!([]));

    // A second replay does nothing, over HTTP or the CLI.
    let (status, report) = router.post_admin("/v1/dead-letter/replay", &json!({}));
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["replayed"].as_u64(),
            report["alreadyReplayed"].as_u64()
        ),
        (Some(0), Some(4))
    );
    assert_eq!(router.topic_len("events"), 8);

    // Nor after a restart: the marks are in the store.
    router.stop();
    let router = Router::start(dir.path(), &config("heal"));
    let (ok, out) = cli(&router, &["--dead-letter"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("replayed 0 record(s); 4 replayed before"),
        "{out}"
    );
    assert_eq!(router.topic_len("events"), 8);
    assert_eq!(router.topic_len("echo"), 4);
}

#[test]
fn ingest_refuses_events_that_claim_to_be_replays() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &config("heal"));
    let ce = json!({
        "specversion": "1.0", "id": "e-1", "source": "urn:test", "type": RECEIVED,
        "replayroute": "chaos",
        "data": hmpps(RECEIVED, "A1234BC", "MDI", "2024-06-11T14:41:22Z"),
    });
    let (status, body) = router.post(
        "application/cloudevents+json",
        ce.to_string().as_bytes(),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["field"], "replayroute", "{body}");
    assert_eq!(router.topic_len("events"), 0);
}
