//! Observability of a running router: exact metric counts after a known set
//! of events, `traceparent` from the request onto every output, and the
//! trace of one event through a two-stage route and of a dead-lettered one.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{Value, json};

const DOMAIN_TOPIC: &str = "domain.prison-offender-events";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `chaos` (echoes, or fails as the event asks) then `domain-fanout`.
fn two_stage_config() -> String {
    config_with(&format!(
        r#"
[plugins.chaos]
path = "{chaos}"
capabilities = ["log"]
timeout_ms = 500

[plugins.domain-fanout]
path = "{fanout}"
capabilities = ["log"]
config = {{ topic_prefix = "domain." }}

[[routes]]
name = "two-stage"
match = ["*"]
pipeline = ["chaos", "domain-fanout"]
"#,
        chaos = plugin("chaos").display(),
        fanout = plugin("domain-fanout").display(),
    ))
}

fn event(event_type: &str, chaos: &str, noms: &str) -> Value {
    let mut ev = hmpps(event_type, noms, "MDI", "2024-06-11T14:41:22Z");
    ev["chaos"] = json!(chaos);
    ev
}

/// `GET /metrics` as `series → value` (series written as in the text).
fn scrape(router: &Router) -> (String, HashMap<String, f64>) {
    let mut resp = agent()
        .get(router.url("/metrics"))
        .call()
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.body_mut().read_to_string().expect("metrics body");
    let mut map = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("series value");
        map.insert(series.to_string(), value.parse().expect("number"));
    }
    (text, map)
}

#[test]
fn metrics_count_exactly_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &two_stage_config());
    let chaos_v = version_of(&plugin("chaos"));
    let fanout_v = version_of(&plugin("domain-fanout"));
    let cases = [
        (RECEIVED, "none", "A1111AA"),
        (RECEIVED, "none", "A2222AA"),
        (RELEASED, "none", "A1111AA"),
        (RECEIVED, "trap", "A3333AA"),
        (RECEIVED, "bad", "A4444AA"),
    ];
    for (t, chaos, noms) in cases {
        let (status, body) = router.post_json(&event(t, chaos, noms));
        assert_eq!(status, 202, "{body}");
    }
    // Refused at the door: not JSON, and a schema violation.
    let (status, _) = router.post("application/json", b"{oops", &[]);
    assert_eq!(status, 400);
    // occurredAt without an offset violates the schema's date-time format.
    let invalid = hmpps(RECEIVED, "A5555AA", "MDI", "2024-06-11T14:41:22");
    let (status, body) = router.post_json(&invalid);
    assert_eq!(status, 400, "{body}");
    router.wait_for(DOMAIN_TOPIC, 3);
    router.wait_for("dead-letter", 2);
    // The cursor passes the batch in the same write as its outputs.
    let (_, m) = scrape(&router);
    let expect = [
        (
            format!("switchyard_events_in_total{{source=\"http\",type=\"{RECEIVED}\"}}"),
            4.0,
        ),
        (
            format!("switchyard_events_in_total{{source=\"http\",type=\"{RELEASED}\"}}"),
            1.0,
        ),
        (
            format!("switchyard_events_out_total{{topic=\"{DOMAIN_TOPIC}\"}}"),
            3.0,
        ),
        (
            "switchyard_rejected_total{source=\"http\",reason=\"malformed\"}".into(),
            1.0,
        ),
        (
            "switchyard_rejected_total{source=\"http\",reason=\"schema\"}".into(),
            1.0,
        ),
        (
            "switchyard_dead_lettered_total{plugin=\"chaos\",reason=\"trap\"}".into(),
            1.0,
        ),
        (
            "switchyard_dead_lettered_total{plugin=\"chaos\",reason=\"bad-event\"}".into(),
            1.0,
        ),
        (
            format!(
                "switchyard_plugin_traps_total{{plugin=\"chaos\",version=\"{chaos_v}\",kind=\"trap\"}}"
            ),
            1.0,
        ),
        (
            format!(
                "switchyard_plugin_call_duration_seconds_count{{plugin=\"chaos\",version=\"{chaos_v}\"}}"
            ),
            5.0,
        ),
        (
            format!(
                "switchyard_plugin_call_duration_seconds_count{{plugin=\"domain-fanout\",version=\"{fanout_v}\"}}"
            ),
            3.0,
        ),
        (
            format!(
                "switchyard_plugin_call_duration_seconds_bucket{{plugin=\"domain-fanout\",version=\"{fanout_v}\",le=\"+Inf\"}}"
            ),
            3.0,
        ),
        ("switchyard_topic_length{topic=\"events\"}".into(), 5.0),
        ("switchyard_topic_length{topic=\"dead-letter\"}".into(), 2.0),
        (
            "switchyard_consumer_lag{consumer=\"router\",topic=\"events\"}".into(),
            0.0,
        ),
        (
            "switchyard_route_events_total{route=\"two-stage\"}".into(),
            5.0,
        ),
        (
            format!(
                "switchyard_route_outputs_total{{route=\"two-stage\",topic=\"{DOMAIN_TOPIC}\"}}"
            ),
            3.0,
        ),
        (
            "switchyard_route_outputs_total{route=\"two-stage\",topic=\"dead-letter\"}".into(),
            2.0,
        ),
        // One trace entry per input the pipeline handled, none sorted yet.
        ("switchyard_trace_index_waiting".into(), 5.0),
        ("switchyard_trace_index_runs".into(), 0.0),
    ];
    let mut wrong = Vec::new();
    for (series, want) in &expect {
        if m.get(series) != Some(want) {
            wrong.push(format!("{series}: want {want}, got {:?}", m.get(series)));
        }
    }
    assert!(wrong.is_empty(), "{}\nall: {m:#?}", wrong.join("\n"));
    // Nothing else was counted in or out.
    let total = |prefix: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(total("switchyard_events_in_total"), 5.0);
    assert_eq!(total("switchyard_events_out_total"), 3.0);
    assert_eq!(total("switchyard_dead_lettered_total"), 2.0);
    // The store: each accepted request was a write of its own, the
    // pipeline's batches more; a commit folds in one write or more, and
    // none failed.
    let store = |name: &str, outcome: &str| {
        m.get(&format!(
            "switchyard_store_{name}_duration_seconds_count{{outcome=\"{outcome}\"}}"
        ))
        .copied()
    };
    let (writes, commits) = (store("write", "ok"), store("commit", "ok"));
    assert!(writes.is_some_and(|w| w >= 6.0), "{writes:?}");
    assert!(
        commits.is_some_and(|c| c >= 1.0 && Some(c) <= writes),
        "{commits:?}"
    );
    assert_eq!(
        (store("write", "error"), store("commit", "error")),
        (Some(0.0), Some(0.0))
    );

    // A reload is counted by outcome.
    let reloaded = "switchyard_reloads_total{kind=\"plugin\",outcome=\"ok\"}";
    let before = m.get(reloaded).copied().unwrap_or(0.0);
    let resp = agent()
        .post(router.url("/v1/plugins/chaos/reload"))
        .send_empty()
        .expect("POST reload");
    assert_eq!(resp.status().as_u16(), 200);
    let (_, m) = scrape(&router);
    assert_eq!(m.get(reloaded).copied(), Some(before + 1.0));

    let (status, ready) = router.get("/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["plugins"], 2);
    router.stop();
}

#[test]
fn a_traceparent_sent_in_is_on_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &two_stage_config());
    // The HTTP header...
    let body = event(RECEIVED, "none", "A1111AA").to_string();
    let (status, a) = router.post("application/json", body.as_bytes(), &[("traceparent", TP)]);
    assert_eq!(status, 202, "{a}");
    // ...and the CloudEvents extension.
    let tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let ce = json!({
        "specversion": "1.0", "id": "ce-trace-1", "source": "urn:test",
        "type": RELEASED, "traceparent": tp2,
        "data": event(RELEASED, "none", "A2222AA"),
    });
    let (status, b) = router.post(
        "application/cloudevents+json",
        ce.to_string().as_bytes(),
        &[],
    );
    assert_eq!(status, 202, "{b}");
    let outs = router.wait_for(DOMAIN_TOPIC, 2);
    let by_trace = |tp: &str| outs.iter().filter(|o| o["traceparent"] == tp).count();
    assert_eq!(by_trace(TP), 1, "{outs:#?}");
    assert_eq!(by_trace(tp2), 1, "{outs:#?}");
    let (_, trace) = router.get(&format!("/v1/events/{}/trace", a["id"].as_str().unwrap()));
    assert_eq!(trace["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(trace["outputs"][0]["traceparent"], TP);
    router.stop();
}

#[test]
fn the_trace_of_an_event_shows_its_stages_outputs_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &two_stage_config());
    let chaos_v = version_of(&plugin("chaos"));
    let fanout_v = version_of(&plugin("domain-fanout"));
    let (_, ok) = router.post_json(&event(RECEIVED, "none", "A1111AA"));
    let (_, bad) = router.post_json(&event(RECEIVED, "trap", "A2222AA"));
    let (ok_id, bad_id) = (ok["id"].as_str().unwrap(), bad["id"].as_str().unwrap());
    let outs = router.wait_for(DOMAIN_TOPIC, 1);
    let dead = router.wait_for("dead-letter", 1);

    let (status, t) = router.get(&format!("/v1/events/{ok_id}/trace"));
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["id"], ok_id);
    assert_eq!(t["state"], "processed");
    assert_eq!(t["from"]["topic"], "events");
    assert_eq!(t["from"]["offset"], ok["offset"]);
    assert_eq!(t["from"]["source"], "urn:switchyard:http");
    let routes = t["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{t:#}");
    assert_eq!(routes[0]["route"], "two-stage");
    assert_eq!(
        routes[0]["stages"],
        json!([
            { "stage": 0, "plugin": "chaos", "version": chaos_v },
            { "stage": 1, "plugin": "domain-fanout", "version": fanout_v },
        ])
    );
    let o = &t["outputs"].as_array().unwrap()[..];
    assert_eq!(o.len(), 1, "{t:#}");
    assert_eq!(o[0]["topic"], DOMAIN_TOPIC);
    assert_eq!(o[0]["offset"], 0);
    assert_eq!(o[0]["id"], outs[0]["id"]);
    assert_eq!(o[0]["plugin"], "domain-fanout");
    assert_eq!(o[0]["pluginVersion"], fanout_v);
    assert_eq!(t["deadLetters"], json!([]));

    let (status, t) = router.get(&format!("/v1/events/{bad_id}/trace"));
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["outputs"], json!([]));
    let d = &t["deadLetters"].as_array().unwrap()[..];
    assert_eq!(d.len(), 1, "{t:#}");
    assert_eq!(d[0]["topic"], "dead-letter");
    assert_eq!(d[0]["offset"], 0);
    assert_eq!(d[0]["id"], dead[0]["id"]);
    assert_eq!(d[0]["reason"], "trap");
    assert_eq!(d[0]["plugin"], "chaos");
    assert_eq!(d[0]["pluginVersion"], chaos_v);
    assert_eq!(d[0]["stage"], 0);
    assert_eq!(t["routes"][0]["route"], "two-stage");

    // Outputs are traced from their input, not on their own.
    let (status, body) = router.get(&format!(
        "/v1/events/{}/trace",
        outs[0]["id"].as_str().unwrap()
    ));
    assert_eq!(status, 404, "{body}");
    let (status, body) = router.get("/v1/events/no-such-id/trace");
    assert_eq!(status, 404, "{body}");
    router.stop();
}

#[test]
fn readyz_names_a_sink_that_cannot_reach_its_broker() {
    // A port nothing listens on: the SNS sink's broker is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = format!(
        "{}\n[aws]\nregion = \"eu-west-2\"\nmax_attempts = 1\n\n[sinks.sns.out]\ntopic = \"switchyard-events\"\nfrom = [\"domain.*\"]\n",
        two_stage_config()
    );
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start_with(dir.path(), &config, |cmd| {
        cmd.env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "eu-west-2")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    });
    let (status, body) = router.get("/readyz");
    assert_eq!(status, 200, "nothing to deliver yet: {body}");
    let (status, body) = router.post_json(&event(RECEIVED, "none", "A1111AA"));
    assert_eq!(status, 202, "{body}");
    let start = std::time::Instant::now();
    let body = loop {
        let (status, body) = router.get("/readyz");
        if status == 503 {
            break body;
        }
        assert!(start.elapsed() < DEADLINE, "never unready: {body}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(body["status"], "not ready");
    let failed = body["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{body}");
    assert_eq!(failed[0]["check"], "sinks");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("sink out"),
        "{body}"
    );
    let (_, m) = scrape(&router);
    assert_eq!(m.get("switchyard_sink_retrying{sink=\"out\"}"), Some(&1.0));
    router.stop();
}
