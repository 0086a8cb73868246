//! Projections rebuilt blue/green: when a projection's code changes while
//! events flow, the new version replays the log into fresh state and takes
//! over when caught up. Its state then equals that of the new version run
//! over the whole history from scratch, and no live event is missed. The same
//! holds when the code changed while the router was down.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use serde_json::{Value, json};

fn counter_config(path: &std::path::Path) -> String {
    config_with(&format!(
        "[plugins.counter]\npath = \"{}\"\nprojection = true\ncapabilities = [\"kv\"]\n\n[[routes]]\nname = \"count\"\nmatch = [\"*\"]\npipeline = [\"counter\"]\n",
        path.display()
    ))
}

fn post_batch(router: &Router, start: usize, n: usize) {
    let batch: Vec<Value> = (start..start + n)
        .map(|i| {
            let kind = if i % 3 == 0 { RELEASED } else { RECEIVED };
            hmpps(
                kind,
                &format!("P{:02}", i % 40),
                "MDI",
                "2024-06-11T14:41:22Z",
            )
        })
        .collect();
    let (status, body) = router.post_json(&json!(batch));
    assert_eq!(status, 202, "{body}");
}

fn state(router: &Router) -> Value {
    let (status, body) = router.get("/v1/plugins/counter/state?limit=10000");
    assert_eq!(status, 200, "{body}");
    body["entries"].clone()
}

/// The state of `version` run over every event of `router`'s log from
/// scratch, in a fresh router fed the same events (same ids and keys).
fn state_from_scratch(router: &Router, version: &std::path::Path) -> Value {
    let events: Vec<Value> = router
        .topic("events")
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("offset");
            e
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let scratch = Router::start(dir.path(), &counter_config(version));
    for chunk in events.chunks(500) {
        let (status, body) = scratch.post(
            "application/cloudevents-batch+json",
            json!(chunk).to_string().as_bytes(),
            &[],
        );
        assert_eq!(status, 202, "{body}");
    }
    scratch.wait_for("counter-state", events.len());
    state(&scratch)
}

fn counts(entries: &Value) -> u64 {
    entries
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_projection_changed_under_load_is_rebuilt_and_swapped_without_missing_events() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("counter.wasm");
    let (v1, v2) = (
        plugin("counter-projection"),
        plugin("counter-projection-v2"),
    );
    std::fs::copy(&v1, &live).unwrap();
    let router = Router::start(dir.path(), &counter_config(&live));
    let mut posted = 0;
    for _ in 0..40 {
        post_batch(&router, posted, 50);
        posted += 50;
    }

    // Change the code while events keep coming.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (stop, url) = (stop.clone(), router.url("/v1/events"));
        std::thread::spawn(move || {
            let agent = agent();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 1000 {
                let ev = hmpps(
                    RECEIVED,
                    &format!("P{:02}", n % 40),
                    "LEI",
                    "2024-06-12T10:00:00Z",
                );
                let resp = agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(ev.to_string().as_bytes())
                    .unwrap();
                assert_eq!(resp.status(), 202);
                n += 1;
            }
            n
        })
    };
    install_atomically(&v2, &live);
    let ver2 = version_of(&v2);
    let status = router.wait_plugin("counter", "the rebuild to finish", |s| {
        s["rebuild"]["state"] == "done" && s["version"] == ver2.as_str()
    });
    assert_eq!(status["namespace"], "counter/g2");
    assert_eq!(status["lastReload"]["outcome"], "rebuilding");
    assert!(
        status["rebuild"]["total"].as_u64().unwrap() >= 2000,
        "{status:#}"
    );
    stop.store(true, Ordering::Relaxed);
    posted += feeder.join().unwrap();

    let outputs = router.wait_for("counter-state", posted);
    assert_eq!(outputs.len(), posted, "every event has exactly one output");
    let rebuilt = state(&router);
    assert_eq!(
        counts(&rebuilt),
        posted as u64,
        "every event is counted once: {rebuilt}"
    );
    assert!(
        rebuilt
            .as_object()
            .unwrap()
            .values()
            .all(|v| v["schema"] == 2),
        "all state is v2's"
    );
    assert_eq!(rebuilt, state_from_scratch(&router, &v2));
    // The old generation's state is gone.
    router.stop();

    // Changed while the router was down: v2 (from the compile cache) serves
    // its state while v1 is rebuilt, then v1 takes over.
    install_atomically(&v1, &live);
    let router = Router::start(dir.path(), &counter_config(&live));
    let ver1 = version_of(&v1);
    let status = router.wait_plugin("counter", "the rebuild after restart", |s| {
        s["rebuild"]["state"] == "done" && s["version"] == ver1.as_str()
    });
    assert_eq!(status["namespace"], "counter/g3");
    let rebuilt = state(&router);
    assert_eq!(counts(&rebuilt), posted as u64);
    assert_eq!(rebuilt, state_from_scratch(&router, &v1));
    router.stop();

    // Finished rebuilds leave no cursor behind.
    let store = switchyard::Store::open(&dir.path().join("data")).unwrap();
    let cursors = store.cursors().unwrap();
    assert!(
        cursors.iter().all(|(c, _)| !c.starts_with("rebuild/")),
        "{cursors:?}"
    );
    assert!(!cursors.is_empty(), "the live consumer's cursor is kept");
}

#[test]
fn a_rebuild_on_demand_gives_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("counter.wasm");
    std::fs::copy(plugin("counter-projection-v2"), &live).unwrap();
    let router = Router::start(dir.path(), &counter_config(&live));
    post_batch(&router, 0, 300);
    router.wait_for("counter-state", 300);
    let before = state(&router);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "replay",
            "--projection",
            "counter",
            "--wait",
            "--url",
            &router.base,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    let status = router.plugin_status("counter");
    assert_eq!(status["namespace"], "counter/g2");
    assert_eq!(state(&router), before);

    // Not a projection, or no such plugin: refused with the reason.
    let resp = agent()
        .post(router.url("/v1/plugins/missing/rebuild"))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status(), 404);
}
