//! The whole path on the default config: HMPPS events in over HTTP, the
//! prisoner projection's state out on `prisoner-state`, surviving a restart.

mod common;

use common::*;
use serde_json::Value;

fn latest_state(records: &[Value], noms: &str) -> Value {
    records
        .iter()
        .rev()
        .find(|r| r["data"]["nomsNumber"] == noms)
        .map(|r| r["data"].clone())
        .unwrap_or_else(|| panic!("no state for {noms} in {records:?}"))
}

#[test]
fn projection_keeps_state_per_prisoner_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &default_config());

    for (t, noms, prison, at) in [
        (RECEIVED, "A1234BC", "MDI", "2024-06-11T14:41:22+01:00"),
        (RELEASED, "A1234BC", "MDI", "2024-06-12T09:00:00+01:00"),
        (RECEIVED, "B9876ZZ", "LEI", "2024-06-12T10:30:00Z"),
    ] {
        let (status, body) = router.post_json(&hmpps(t, noms, prison, at));
        assert_eq!(status, 202, "{body}");
        assert!(body["id"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
        assert_eq!(body["topic"], "events");
    }

    let states = router.wait_for("prisoner-state", 3);
    assert_eq!(states.len(), 3);
    let first = latest_state(&states, "A1234BC");
    assert_eq!(first["status"], "OUT");
    assert_eq!(first["eventCount"], 2);
    assert_eq!(first["prisonId"], "MDI");
    assert_eq!(first["lastEventType"], RELEASED);
    assert_eq!(first["lastOccurredAt"], "2024-06-12T09:00:00+01:00");
    let second = latest_state(&states, "B9876ZZ");
    assert_eq!(second["status"], "IN");
    assert_eq!(second["eventCount"], 1);
    assert_eq!(second["prisonId"], "LEI");

    // Records are CloudEvents with offsets, typed and keyed by the projection.
    let rec = &states[0];
    assert_eq!(rec["specversion"], "1.0");
    assert_eq!(rec["type"], "prisoner.state.updated");
    assert_eq!(rec["offset"], 0);
    assert_eq!(rec["datacontenttype"], "application/json");
    assert!(rec["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(rec["plugin"], "prisoner-projection");
    assert!(rec["pluginversion"].as_str().is_some_and(|v| v.len() == 12));

    // The stateless transform chose a topic per domain for every event.
    let fanned = router.wait_for("domain.prison-offender-events", 3);
    assert_eq!(fanned[0]["data"]["identifiers"]["NOMS"], "A1234BC");

    router.stop();

    // Same data dir, new process: state and cursor were kept.
    let router = Router::start(dir.path(), &default_config());
    let (status, body) =
        router.post_json(&hmpps(RECEIVED, "A1234BC", "BXI", "2024-07-01T08:00:00Z"));
    assert_eq!(status, 202, "{body}");
    let states = router.wait_for("prisoner-state", 4);
    assert_eq!(states.len(), 4, "the restart must not reprocess old events");
    let first = latest_state(&states, "A1234BC");
    assert_eq!(first["eventCount"], 3);
    assert_eq!(first["status"], "IN");
    assert_eq!(first["prisonId"], "BXI");
    assert_eq!(router.topic_len("events"), 4);
}

#[test]
fn topics_list_and_live_stream() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &default_config());
    let (status, _) = router.post_json(&hmpps(RECEIVED, "C1111CC", "MDI", "2024-06-11T14:41:22Z"));
    assert_eq!(status, 202);
    router.wait_for("prisoner-state", 1);
    let (_, topics) = router.get("/v1/topics");
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for t in ["events", "prisoner-state", "domain.prison-offender-events"] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }
    let (status, health) = router.get("/healthz");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    // The SSE stream replays from `from` and then follows live appends.
    use std::io::{BufRead, BufReader};
    let mut resp = agent()
        .get(router.url("/v1/topics/prisoner-state/stream?from=0"))
        .call()
        .expect("stream");
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut lines = BufReader::new(resp.body_mut().as_reader()).lines();
    let mut next_data = || loop {
        let line = lines.next().expect("stream ended").expect("read stream");
        if let Some(d) = line.strip_prefix("data: ") {
            return serde_json::from_str::<Value>(d).unwrap();
        }
    };
    assert_eq!(next_data()["data"]["nomsNumber"], "C1111CC");
    let (status, _) = router.post_json(&hmpps(RELEASED, "C1111CC", "MDI", "2024-06-12T14:41:22Z"));
    assert_eq!(status, 202);
    let live = next_data();
    assert_eq!(live["offset"], 1);
    assert_eq!(live["data"]["status"], "OUT");
    // A clean shutdown ends open streams instead of waiting on them.
    router.stop();
    assert!(lines.all(|l| l.is_ok()), "the stream ends cleanly");
}
