//! `kill -9` while events are being posted: every event that got a 202 is in
//! `events` after a restart, and its outputs appear exactly once with the ids
//! derived from the input id.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use switchyard::pipeline::derive_id;

#[test]
fn accepted_events_survive_kill_9_and_their_outputs_appear_once() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &default_config());
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut posters = Vec::new();
    for t in 0..4 {
        let (url, accepted, stop) = (router.url("/v1/events"), accepted.clone(), stop.clone());
        posters.push(std::thread::spawn(move || {
            let agent = agent();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 5000 {
                let noms = format!("K{t}{:03}", i % 50);
                let kind = if i % 2 == 0 { RECEIVED } else { RELEASED };
                let body = hmpps(kind, &noms, "MDI", "2024-06-11T14:41:22Z").to_string();
                // Errors after the kill are expected: the server is gone.
                if let Ok(mut r) = agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(body.as_bytes())
                    && r.status() == 202
                {
                    let v: serde_json::Value =
                        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                    accepted
                        .lock()
                        .unwrap()
                        .push(v["id"].as_str().unwrap().to_string());
                }
                i += 1;
            }
        }));
    }
    // Kill once a good number of events is in flight and accepted.
    let start = Instant::now();
    while accepted.lock().unwrap().len() < 300 {
        assert!(start.elapsed() < DEADLINE, "posting is stuck");
        std::thread::sleep(Duration::from_millis(5));
    }
    router.kill9();
    stop.store(true, Ordering::Relaxed);
    for p in posters {
        p.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();

    let router = Router::start(dir.path(), &default_config());
    // The kill came under load, so the last commits were only in the
    // store's write-ahead log: the restart applied them again.
    let replayed = router.log_lines("write-ahead log");
    assert!(
        replayed.iter().any(|l| l.contains("applied the commits")),
        "the restart did not replay the write-ahead log: {replayed:?}"
    );
    let events = router.topic("events");
    let stored: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    for id in &accepted {
        assert!(
            stored.contains(id.as_str()),
            "accepted event {id} lost by kill -9"
        );
    }
    // Every stored event (accepted or not yet answered) produces its outputs
    // exactly once, with deterministic ids.
    let fanned = router.wait_for("domain.prison-offender-events", events.len());
    let got: Vec<&str> = fanned.iter().filter_map(|e| e["id"].as_str()).collect();
    let unique: HashSet<&str> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "an output was written twice");
    let expected: HashSet<String> = stored
        .iter()
        .map(|id| derive_id(id, "domain-fanout", 0, 0))
        .collect();
    let got: HashSet<String> = got.into_iter().map(str::to_string).collect();
    assert_eq!(got, expected);
    // The projection counted every event exactly once per prisoner.
    let states = router.wait_for("prisoner-state", events.len());
    assert_eq!(states.len(), events.len());
    let mut last = std::collections::HashMap::new();
    for s in &states {
        last.insert(
            s["data"]["nomsNumber"].as_str().unwrap().to_string(),
            s["data"]["eventCount"].as_u64().unwrap(),
        );
    }
    let mut per_key = std::collections::HashMap::new();
    for e in &events {
        *per_key
            .entry(e["partitionkey"].as_str().unwrap_or_default().to_string())
            .or_insert(0u64) += 1;
    }
    assert_eq!(
        last, per_key,
        "eventCount must equal the events seen per prisoner"
    );
}
