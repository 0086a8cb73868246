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
    counter_config_with(path, "")
}

/// `counter_config` with more `[router]` keys.
fn counter_config_with(path: &std::path::Path, router: &str) -> String {
    config_with_router(
        router,
        &format!(
            "[plugins.counter]\npath = \"{}\"\nprojection = true\ncapabilities = [\"kv\"]\n\n[[routes]]\nname = \"count\"\nmatch = [\"*\"]\npipeline = [\"counter\"]\n",
            path.display()
        ),
    )
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

/// The store's successful commits so far, from `/metrics`.
fn store_commits(router: &Router) -> f64 {
    router
        .metric("switchyard_store_commit_duration_seconds_count{outcome=\"ok\"} ")
        .expect("commit count in /metrics")
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

/// A router in `dir` running counter-projection v1 (installed at the
/// returned path), with `batches` batches of `size` events already accepted.
fn counter_router(
    dir: &std::path::Path,
    batches: usize,
    size: usize,
) -> (Router, std::path::PathBuf) {
    let live = dir.join("counter.wasm");
    std::fs::copy(plugin("counter-projection"), &live).unwrap();
    let router = Router::start(dir, &counter_config(&live));
    for b in 0..batches {
        post_batch(&router, b * size, size);
    }
    (router, live)
}

/// Posts single events from a thread until stopped, keeping the ids the
/// router accepted. `strict`: every post must be accepted, and at least
/// `min` are sent; otherwise refused posts (after a kill) are expected.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Feeder {
    fn start(router: &Router, strict: bool, min: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, url) = (stop.clone(), router.url("/v1/events"));
        let thread = std::thread::spawn(move || {
            let agent = agent();
            let mut accepted = Vec::new();
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) || n < min {
                let ev = hmpps(
                    RECEIVED,
                    &format!("P{:02}", n % 40),
                    "LEI",
                    "2024-06-12T10:00:00Z",
                );
                n += 1;
                let resp = agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(ev.to_string().as_bytes());
                match resp {
                    Ok(mut r) if r.status() == 202 => {
                        let v: Value =
                            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                        accepted.push(v["id"].as_str().unwrap().to_string());
                    }
                    other => assert!(!strict, "post {n} was not accepted: {other:?}"),
                }
            }
            accepted
        });
        Feeder { stop, thread }
    }

    /// Stops it; the ids the router accepted.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn a_projection_changed_under_load_is_rebuilt_and_swapped_without_missing_events() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (
        plugin("counter-projection"),
        plugin("counter-projection-v2"),
    );
    let (router, live) = counter_router(dir.path(), 40, 50);
    let mut posted = 40 * 50;

    // Change the code while events keep coming.
    let feeder = Feeder::start(&router, true, 1000);
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
    posted += feeder.stop().len();

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
    // Replayed 7 log events a commit: many batches, the last one short.
    let router = Router::start(
        dir.path(),
        &counter_config_with(&live, "rebuild_batch_size = 7"),
    );
    post_batch(&router, 0, 300);
    router.wait_for("counter-state", 300);
    let before = state(&router);
    let commits_before = store_commits(&router);

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
    // Until the last 256 (`batch_size`, replayed while the live consumer
    // waits), one commit per 7 events: 44 of the 300 in 7 commits, then the
    // catch-up, and the rebuild's start and switch-over. Replayed in one
    // batch it would be 3 or 4.
    let commits = store_commits(&router) - commits_before;
    assert!(commits >= 9.0, "{commits} commits during the rebuild");

    // Not a projection, or no such plugin: refused with the reason.
    let resp = agent()
        .post(router.url("/v1/plugins/missing/rebuild"))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[test]
fn a_rebuild_killed_with_sigkill_resumes_after_restart_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let v2 = plugin("counter-projection-v2");
    let (router, live) = counter_router(dir.path(), 100, 100);
    let posted = 100 * 100;

    // Events keep coming while the rebuild runs and when the process dies.
    let feeder = Feeder::start(&router, false, 0);
    install_atomically(&v2, &live);
    let status = router.wait_plugin("counter", "the rebuild to be under way", |s| {
        let r = &s["rebuild"];
        r["state"] == "running"
            && r["offset"].as_u64() > Some(0)
            && r["offset"].as_u64() < r["total"].as_u64()
    });
    let reached = status["rebuild"]["offset"].as_u64().unwrap();
    router.kill9();
    let accepted = feeder.stop();

    // The store opens cleanly, the rebuild resumes from its own cursor and
    // finishes, and v2 takes over.
    let router = Router::start(dir.path(), &counter_config(&live));
    let ver2 = version_of(&v2);
    let status = router.wait_plugin("counter", "the resumed rebuild to finish", |s| {
        s["rebuild"]["state"] == "done" && s["version"] == ver2.as_str()
    });
    assert_eq!(
        status["namespace"], "counter/g2",
        "the same generation, resumed"
    );
    let started = router.log_lines("projection rebuild started");
    let from: u64 = started[0]
        .split("from=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no from= in {started:?}"));
    assert!(from >= reached, "resumed at {from}, had reached {reached}");

    // No accepted event is missing, each has one output, and the state is
    // v2's over the whole log.
    let events = router.topic("events");
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "accepted but missing: {missing:?}");
    assert!(events.len() >= posted + accepted.len());
    let outputs = router.wait_for("counter-state", events.len());
    assert_eq!(outputs.len(), events.len(), "one output per event");
    let rebuilt = state(&router);
    assert_eq!(counts(&rebuilt), events.len() as u64);
    assert_eq!(rebuilt, state_from_scratch(&router, &v2));
}

#[test]
fn a_dead_letter_of_a_projection_rebuilt_since_is_not_replayed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let v2 = plugin("counter-projection-v2");
    let (router, live) = counter_router(dir.path(), 1, 10);
    let mut poison = hmpps(RECEIVED, "P00", "MDI", "2024-06-11T14:41:22Z");
    poison["poison"] = json!(true);
    let (status, body) = router.post_json(&poison);
    assert_eq!(status, 202, "{body}");
    router.wait_for("counter-state", 10);
    let dead = router.wait_for("dead-letter", 1);
    assert_eq!(dead[0]["data"]["reason"], "trap");
    assert_eq!(dead[0]["data"]["namespaces"], json!(["counter/g1"]));

    // The fix is a new version: its rebuild counts the poison event in place.
    install_atomically(&v2, &live);
    let ver2 = version_of(&v2);
    router.wait_plugin("counter", "the rebuild to finish", |s| {
        s["rebuild"]["state"] == "done" && s["version"] == ver2.as_str()
    });
    assert_eq!(counts(&state(&router)), 11);

    // Replaying its dead letter would count it twice: it is marked instead.
    let (status, report) = router.post_admin("/v1/dead-letter/replay", &json!({}));
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["superseded"].as_u64(), report["replayed"].as_u64()),
        (Some(1), Some(0)),
        "{report}"
    );
    assert_eq!(router.topic_len("events"), 11);
    let (_, list) = router.get("/v1/dead-letter?replayed=true");
    let mark = &list["records"][0]["replayed"];
    assert!(
        mark["supersededBy"]
            .as_str()
            .unwrap()
            .contains("counter/g2"),
        "{mark}"
    );
    assert_eq!(counts(&state(&router)), 11);
    let (_, report) = router.post_admin("/v1/dead-letter/replay", &json!({}));
    assert_eq!(report["alreadyReplayed"], 1, "{report}");
}

#[test]
fn events_held_during_a_rebuild_are_counted_once_after_the_switch_over() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("counter.wasm");
    let (v1, v2) = (
        plugin("counter-projection"),
        plugin("counter-projection-v2"),
    );
    std::fs::copy(&v1, &live).unwrap();
    let config = config_with_router(
        "hold_retries = 1000000\nhold_backoff_ms = 50\nhold_max_backoff_ms = 200",
        &format!(
            "[plugins.counter]\npath = \"{}\"\nprojection = true\ncapabilities = [\"kv\"]\n\n[[routes]]\nname = \"count\"\nmatch = [\"*\"]\npipeline = [\"counter\"]\n",
            live.display()
        ),
    );
    let router = Router::start(dir.path(), &config);
    post_batch(&router, 0, 200);
    // v1 fails this one transiently: key P00 is held, its next events wait.
    let mut flaky = hmpps(RECEIVED, "P00", "MDI", "2024-06-11T14:41:22Z");
    flaky["flaky"] = json!(true);
    for ev in [
        flaky,
        hmpps(RELEASED, "P00", "MDI", "2024-06-12T10:00:00Z"),
        hmpps(RECEIVED, "P00", "LEI", "2024-06-13T10:00:00Z"),
    ] {
        let (status, body) = router.post_json(&ev);
        assert_eq!(status, 202, "{body}");
    }
    router.wait_for("counter-state", 200);
    router.wait_until("P00's three events to be held", || {
        let (_, body) = router.get("/v1/dead-letter");
        body["held"][0]["offsets"]
            .as_array()
            .is_some_and(|o| o.len() == 3)
    });

    // The rebuild skips the held events; after the switch-over v2 counts
    // them, once, in order.
    install_atomically(&v2, &live);
    let ver2 = version_of(&v2);
    router.wait_plugin("counter", "the rebuild to finish", |s| {
        s["rebuild"]["state"] == "done" && s["version"] == ver2.as_str()
    });
    router.wait_until("the held key to be released", || {
        let (_, body) = router.get("/v1/dead-letter");
        body["held"] == json!([])
    });
    let outputs = router.wait_for("counter-state", 203);
    assert_eq!(outputs.len(), 203, "one output per event");
    let rebuilt = state(&router);
    assert_eq!(counts(&rebuilt), 203, "{rebuilt}");
    assert_eq!(router.topic_len("dead-letter"), 0);
    assert_eq!(rebuilt, state_from_scratch(&router, &v2));
}
