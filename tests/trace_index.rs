//! The trace index with ids as producers send them (random UUIDs), past the
//! point where its entries are sorted into a run (16,384), and across a
//! `kill -9`: every input's trace names its one output.

mod common;

use common::*;
use serde_json::{Value, json};
use switchyard::pipeline::derive_id;

/// Enough inputs that one sorted run of the index (16,384) fills and is
/// copied well before the end: the copy takes at least twice each commit's
/// new entries, so about 8,200 more.
const EVENTS: usize = 26_000;

/// A version 4 UUID drawn from `i` (splitmix64), so ids arrive in no order.
fn uuid(i: u64) -> String {
    let mut bytes = [0u8; 16];
    for (n, half) in (0u64..).zip(bytes.chunks_exact_mut(8)) {
        let mut x = (2 * i + n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        half.copy_from_slice(&(x ^ (x >> 31)).to_le_bytes());
    }
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Every 61st input's trace: processed, with the outputs its routes made
/// (domain-fanout's with the id derived from the input's).
fn check_traces(router: &Router, ids: &[String], when: &str) {
    for id in ids.iter().step_by(61) {
        let (status, t) = router.get(&format!("/v1/events/{id}/trace"));
        assert_eq!(status, 200, "{id} {when}: {t}");
        assert_eq!(t["state"], "processed", "{id} {when}: {t:#}");
        // The default routes: domain-fanout and the prisoner projection.
        let outputs = t["outputs"].as_array().cloned().unwrap_or_default();
        let fanout: Vec<&Value> = outputs
            .iter()
            .filter(|o| o["plugin"] == "domain-fanout")
            .collect();
        assert_eq!(fanout.len(), 1, "{id} {when}: {t:#}");
        assert_eq!(
            fanout[0]["id"],
            derive_id(id, "domain-fanout", 0, 0),
            "{id} {when}"
        );
        assert_eq!(outputs.len(), 2, "{id} {when}: {t:#}");
    }
}

/// `switchyard_trace_index_runs` from `/metrics`.
fn trace_runs(router: &Router) -> f64 {
    router
        .metric("switchyard_trace_index_runs ")
        .expect("switchyard_trace_index_runs in /metrics")
}

#[test]
fn random_ids_are_traced_past_a_sorted_run_and_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &default_config());
    let ids: Vec<String> = (0..EVENTS as u64).map(uuid).collect();
    for (b, chunk) in ids.chunks(500).enumerate() {
        let batch: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let noms = format!("T{:05}", (b * 500 + i) % 5000);
                json!({
                    "specversion": "1.0", "id": id, "source": "urn:test",
                    "type": RECEIVED,
                    "data": hmpps(RECEIVED, &noms, "MDI", "2024-06-11T14:41:22Z"),
                })
            })
            .collect();
        let body = serde_json::to_vec(&batch).unwrap();
        let (status, answer) = router.post("application/cloudevents-batch+json", &body, &[]);
        assert_eq!(status, 202, "batch {b}: {answer}");
    }
    router.wait_for("domain.prison-offender-events", EVENTS);
    check_traces(&router, &ids, "after the pipeline");
    let runs = trace_runs(&router);
    assert!(runs >= 1.0, "no sorted run after {EVENTS} inputs");
    // kill -9 with the index wherever it is (chunks, runs, a seal under
    // way): the restarted router answers the same.
    router.kill9();
    let router = Router::start(dir.path(), &default_config());
    check_traces(&router, &ids, "after kill -9");
    assert!(trace_runs(&router) >= runs, "runs lost by the restart");
    let (status, body) = router.get(&format!("/v1/events/{}/trace", uuid(EVENTS as u64)));
    assert_eq!(status, 404, "{body}");
    router.stop();
}
