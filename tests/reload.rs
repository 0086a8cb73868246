//! Hot reload under load: a plugin's `.wasm` replaced again and again while
//! events pour in — two real versions, a corrupt file, a version that traps in
//! `init` — loses and duplicates nothing, never serves a broken version, and
//! reports every outcome. And the config reloads whole or not at all.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{Value, json};
use switchyard::pipeline::derive_id;

const TOTAL: usize = 20_000;
const BATCH: usize = 25;

fn versioned_config(path: &std::path::Path) -> String {
    config_with(&format!(
        "[plugins.versioned]\npath = \"{}\"\ninstances = 2\n\n[[routes]]\nname = \"all\"\nmatch = [\"*\"]\npipeline = [\"versioned\"]\n",
        path.display()
    ))
}

/// Posts batches from 4 threads until `TOTAL` events are in and `swapped` is
/// set, so the load lasts through every swap; returns the accepted ids.
fn load(router: &Router, swapped: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    let next = Arc::new(Mutex::new(0usize));
    (0..4)
        .map(|_| {
            let (url, next, swapped) = (router.url("/v1/events"), next.clone(), swapped.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut accepted = Vec::new();
                loop {
                    let start = {
                        let mut n = next.lock().unwrap();
                        if *n >= TOTAL && swapped.load(Ordering::Relaxed) {
                            break;
                        }
                        *n += BATCH;
                        *n - BATCH
                    };
                    let batch: Vec<Value> = (start..start + BATCH)
                        .map(|i| {
                            hmpps(
                                RECEIVED,
                                &format!("K{:03}", i % 200),
                                "MDI",
                                "2024-06-11T14:41:22Z",
                            )
                        })
                        .collect();
                    let mut resp = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(json!(batch).to_string().as_bytes())
                        .expect("post batch");
                    assert_eq!(resp.status(), 202);
                    let body: Value =
                        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
                    accepted.extend(
                        body["accepted"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|a| a["id"].as_str().unwrap().to_string()),
                    );
                }
                accepted
            })
        })
        .collect()
}

#[test]
fn plugin_swaps_under_load_lose_nothing_and_never_serve_a_broken_version() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("versioned.wasm");
    let (v1, v2) = (plugin("versioned"), plugin("versioned-v2"));
    let trap_init = plugin("versioned-trap-init");
    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x0d\0\x01\0 this is not a component").unwrap();
    std::fs::copy(&v1, &live).unwrap();
    let router = Router::start(dir.path(), &versioned_config(&live));
    let (ver1, ver2) = (version_of(&v1), version_of(&v2));
    assert_eq!(router.plugin_status("versioned")["version"], ver1);

    let swapped = Arc::new(AtomicBool::new(false));
    let posters = load(&router, swapped.clone());

    // (file, expected outcome) in order; the router must end on v2.
    let steps: [(&std::path::Path, &str); 7] = [
        (&v2, "ok"),
        (&v1, "ok"),
        (&corrupt, "failed"),
        (&v2, "ok"),
        (&trap_init, "failed"),
        (&v1, "ok"),
        (&v2, "ok"),
    ];
    let mut swaps = vec![ver1.clone()];
    for (i, (file, expected)) in steps.iter().enumerate() {
        let before = router.reload_count("versioned");
        if i % 2 == 0 {
            install_atomically(file, &live);
        } else {
            // In place: truncate and write, as a plain `cp` does.
            std::fs::write(&live, std::fs::read(file).unwrap()).unwrap();
        }
        let status = router.wait_plugin("versioned", "the reload outcome", |s| {
            s["reloads"]
                .as_array()
                .is_some_and(|r| r.len() > before && r.last().unwrap()["outcome"] == *expected)
        });
        if *expected == "ok" {
            swaps.push(status["version"].as_str().unwrap().to_string());
            assert_eq!(status["version"], version_of(file).as_str());
        } else {
            // The previous version keeps serving.
            assert_eq!(status["version"], swaps.last().unwrap().as_str());
        }
    }
    swapped.store(true, Ordering::Relaxed);
    let accepted: Vec<String> = posters
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    let total = accepted.len();
    assert!(total >= TOTAL, "{total} events posted");

    let outputs = router.wait_for("versioned", total);
    assert_eq!(
        outputs.len(),
        total,
        "one output per accepted event, no more"
    );
    let ids: HashSet<&str> = outputs.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), total, "no output written twice");
    let expected: HashSet<String> = accepted
        .iter()
        .map(|id| derive_id(id, "all", 0, 0))
        .collect();
    assert_eq!(
        ids.iter().map(|s| s.to_string()).collect::<HashSet<_>>(),
        expected
    );

    // Only the two good versions ever produced outputs, each its own data.
    let by_version = HashMap::from([(ver1.as_str(), 1), (ver2.as_str(), 2)]);
    for o in &outputs {
        let v = o["pluginversion"].as_str().unwrap();
        let generation = by_version
            .get(v)
            .unwrap_or_else(|| panic!("output from unexpected version {v}"));
        assert_eq!(o["data"]["generation"], *generation);
    }
    // In log order, versions change only along the sequence of swaps.
    let mut seen: Vec<&str> = Vec::new();
    for o in &outputs {
        let v = o["pluginversion"].as_str().unwrap();
        if seen.last() != Some(&v) {
            seen.push(v);
        }
    }
    assert!(
        seen.len() >= 2,
        "the load spanned no swap: outputs show only {seen:?}"
    );
    let mut swap_iter = swaps.iter();
    for v in &seen {
        assert!(
            swap_iter.any(|s| s == v),
            "versions went backwards: outputs show {seen:?}, swaps were {swaps:?}"
        );
    }

    // The failed reloads are reported with their reasons.
    let status = router.plugin_status("versioned");
    let failures: Vec<&Value> = status["reloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "failed")
        .collect();
    assert_eq!(failures.len(), 2, "{status:#}");
    assert!(
        failures[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a webassembly component"),
        "{status:#}"
    );
    assert!(
        failures[1]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot instantiate"),
        "{status:#}"
    );
    assert_eq!(status["version"], ver2);
    assert!(status["calls"].as_u64().unwrap() > 0);

    // Going back to a version seen before is served from the compile cache.
    let before = router.reload_count("versioned");
    install_atomically(&v1, &live);
    let status = router.wait_plugin("versioned", "the cached reload", |s| {
        s["reloads"].as_array().is_some_and(|r| r.len() > before)
    });
    assert_eq!(status["lastReload"]["outcome"], "ok");
    assert_eq!(status["lastReload"]["fromCache"], true, "{status:#}");
}

#[test]
fn forced_reload_through_the_api_reports_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("versioned.wasm");
    std::fs::copy(plugin("versioned"), &live).unwrap();
    let router = Router::start(dir.path(), &versioned_config(&live));
    let resp = agent()
        .post(router.url("/v1/plugins/versioned/reload"))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = agent()
        .post(router.url("/v1/plugins/nope/reload"))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status(), 404);
    std::fs::write(dir.path().join("junk.wasm"), b"junk").unwrap();
    // A file outside the config is not a plugin: nothing happens for it.
    assert_eq!(router.reload_count("versioned"), 1);
}

#[test]
fn config_reload_adds_a_route_and_a_bad_config_leaves_the_old_one_running() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("versioned.wasm");
    std::fs::copy(plugin("versioned"), &live).unwrap();
    let base = versioned_config(&live)
        .replace("match = [\"*\"]", "match = [\"prison-offender-events.*\"]");
    let router = Router::start(dir.path(), &base);
    let probation = hmpps(
        "probation-case.engagement.created",
        "A1234BC",
        "MDI",
        "2024-06-11T14:41:22Z",
    );
    assert_eq!(router.post_json(&probation).0, 422);

    let reloads = |r: &Router| {
        r.get("/v1/config").1["reloads"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let wait_config = |r: &Router, n: usize| {
        let start = std::time::Instant::now();
        loop {
            let (_, cfg) = r.get("/v1/config");
            if cfg["reloads"].as_array().map_or(0, Vec::len) >= n {
                return cfg;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "config reload not reported: {cfg:#}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // Add a plugin and a route for probation events.
    let added = format!(
        "{base}\n[plugins.chaos]\npath = \"{}\"\n\n[[routes]]\nname = \"probation\"\nmatch = [\"probation-case.*\"]\npipeline = [\"chaos\"]\n",
        plugin("chaos").display()
    );
    std::fs::write(&router.config, &added).unwrap();
    let cfg = wait_config(&router, 1);
    assert_eq!(cfg["lastReload"]["outcome"], "ok", "{cfg:#}");
    let (status, body) = router.post_json(&probation);
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        router.wait_for("echo", 1)[0]["type"],
        "probation-case.engagement.created"
    );

    // A config with an error is refused whole; the routes in force keep working.
    let n = reloads(&router);
    std::fs::write(
        &router.config,
        added.replace("pipeline = [\"chaos\"]", "pipeline = [\"chaoss\"]"),
    )
    .unwrap();
    let cfg = wait_config(&router, n + 1);
    assert_eq!(cfg["lastReload"]["outcome"], "failed", "{cfg:#}");
    assert!(
        cfg["lastReload"]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown plugin \"chaoss\""),
        "{cfg:#}"
    );
    assert_eq!(router.post_json(&probation).0, 202);
    router.wait_for("echo", 2);
    assert_eq!(
        router
            .post_json(&hmpps(RECEIVED, "B1", "MDI", "2024-06-11T14:41:22Z"))
            .0,
        202
    );
    router.wait_for("versioned", 1);
}
