//! SNS and SQS against a real emulator (ministack from `.venv/`): SNS fan-out
//! with a filter policy on `eventType`, the SQS source feeding plugins whose
//! outputs reach SNS (through SNS envelopes and raw messages), and poison
//! messages dead-lettered while the rest flow.

#[path = "common/aws.rs"]
mod aws;
mod common;

use aws::Emulator;
use common::*;
use serde_json::{Value, json};

/// The default pipelines, with an SNS sink for every output topic.
fn default_with_aws(extra: &str) -> String {
    format!(
        r#"{}
[sinks.sns.events]
topic = "switchyard-events"
from = ["*"]
attributes = {{ producer = "switchyard" }}

{extra}
"#,
        default_config().replace("127.0.0.1:8080", "127.0.0.1:0")
    )
}

fn start(emu: &Emulator, dir: &std::path::Path, config: &str) -> Router {
    let cfg = dir.join("switchyard.toml");
    std::fs::write(&cfg, config).unwrap();
    emu.setup(&cfg);
    Router::start_with(dir, config, |cmd| emu.env(cmd))
}

#[test]
fn sns_fan_out_with_a_filter_policy_delivers_exactly_the_subscribed_types() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let config = default_with_aws(
        r#"
[[aws.subscriptions]]
topic = "switchyard-events"
queue = "all-events"
raw = true

[[aws.subscriptions]]
topic = "switchyard-events"
queue = "released-only"
raw = true
filter_policy = { eventType = ["prison-offender-events.prisoner.released"] }

[[aws.subscriptions]]
topic = "switchyard-events"
queue = "state-only"
filter_policy = { eventType = ["prisoner.state.updated"] }
"#,
    );
    let router = start(&emu, dir.path(), &config);
    let t = "2024-06-11T14:41:22+01:00";
    for ev in [
        hmpps(RECEIVED, "A1111AA", "MDI", t),
        hmpps(RELEASED, "A1111AA", "MDI", t),
        hmpps(RECEIVED, "B2222BB", "LEI", t),
        hmpps("probation-case.engagement.created", "C3333CC", "-", t),
    ] {
        let (status, body) = router.post_json(&ev);
        assert_eq!(status, 202, "{body}");
    }
    // 3 projection outputs (received, released, received) + 4 fan-out outputs.
    let aws = emu.client();
    let all = aws.receive_n("all-events", 7);
    assert!(
        aws.receive_once("all-events", 1).is_empty(),
        "more than 7 messages"
    );
    let mut types: Vec<String> = all
        .iter()
        .map(|m| m.attributes["eventType"].clone())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "prison-offender-events.prisoner.received",
            "prison-offender-events.prisoner.received",
            "prison-offender-events.prisoner.released",
            "prisoner.state.updated",
            "prisoner.state.updated",
            "prisoner.state.updated",
            "probation-case.engagement.created",
        ]
    );
    for m in &all {
        let ce = m.json();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(
            ce["type"].as_str(),
            Some(m.attributes["eventType"].as_str())
        );
        assert_eq!(m.attributes["producer"], "switchyard");
    }

    // Everything was published, so the filtered queues hold all they will get.
    let released = aws.receive_n("released-only", 1);
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0].attributes["eventType"], RELEASED);
    assert_eq!(released[0].json()["data"]["identifiers"]["NOMS"], "A1111AA");
    assert!(
        aws.receive_once("released-only", 1).is_empty(),
        "only released events pass the filter"
    );

    let state = aws.receive_n("state-only", 3);
    assert_eq!(state.len(), 3, "{state:?}");
    for m in &state {
        // No raw delivery: the SNS envelope, with the attribute inside it.
        let env = m.json();
        assert_eq!(env["Type"], "Notification");
        assert_eq!(
            env["MessageAttributes"]["eventType"]["Value"],
            "prisoner.state.updated"
        );
        let inner: Value = serde_json::from_str(env["Message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["type"], "prisoner.state.updated");
    }
    assert!(aws.receive_once("state-only", 1).is_empty());

    // The sink's cursors reached the end of every topic it forwards.
    aws::wait_get(&router, "/v1/sinks", |b| {
        let sink = &b["sinks"][0];
        sink["delivered"] == 7
            && sink["topics"]
                .as_array()
                .is_some_and(|ts| ts.iter().all(|t| t["cursor"] == t["length"]))
    });
}

/// An SQS source on `switchyard-ingest` (subscribed to `hmpps-domain-events`
/// without raw delivery) and a raw consumer of `switchyard-events`.
fn source_config(extra: &str) -> String {
    default_with_aws(&format!(
        r#"
[sources.sqs.ingest]
queue = "switchyard-ingest"
wait_time_s = 1
visibility_timeout_s = 30
dead_letter_queue = "switchyard-ingest-dlq"
max_receive_count = 3

[[aws.subscriptions]]
topic = "hmpps-domain-events"
queue = "switchyard-ingest"

[[aws.subscriptions]]
topic = "switchyard-events"
queue = "consumer"
raw = true
{extra}
"#
    ))
}

#[test]
fn sqs_source_through_plugins_to_sns_with_envelopes_and_raw_messages() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let router = start(&emu, dir.path(), &source_config(""));
    let aws = emu.client();
    let t = "2024-06-11T14:41:22+01:00";

    // 1. An HMPPS event published to SNS: arrives in an SNS envelope.
    let released = hmpps(RELEASED, "A1111AA", "MDI", t);
    aws.publish(
        "hmpps-domain-events",
        &released.to_string(),
        &[("eventType", RELEASED)],
    );
    // 2. An HMPPS event sent to the queue directly (a raw message).
    let received = hmpps(RECEIVED, "B2222BB", "LEI", t);
    aws.send(
        "switchyard-ingest",
        &received.to_string(),
        &[("eventType", RECEIVED)],
        None,
    );
    // 3. A structured CloudEvent, raw.
    let ce = json!({"specversion": "1.0", "id": "ce-structured", "source": "urn:prisons",
                    "type": "probation-case.engagement.created", "time": t,
                    "data": hmpps("probation-case.engagement.created", "C3333CC", "-", t)});
    aws.send("switchyard-ingest", &ce.to_string(), &[], None);
    // 4. A binary-mode CloudEvent through SNS: attributes in the envelope.
    let data = hmpps("probation-case.engagement.created", "D4444DD", "-", t);
    aws.publish(
        "hmpps-domain-events",
        &data.to_string(),
        &[
            ("ce_specversion", "1.0"),
            ("ce_id", "ce-binary"),
            ("ce_source", "urn:probation"),
            ("ce_type", "probation-case.engagement.created"),
            ("ce_time", t),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ],
    );

    // 5. A binary-mode CloudEvent sent raw, with String, Number and Binary attributes.
    let data = hmpps("probation-case.engagement.created", "E5555EE", "-", t);
    aws.send_typed(
        "switchyard-ingest",
        &data.to_string(),
        &[
            ("ce-specversion", "String", "1.0"),
            ("ce-id", "Binary", "ce-typed"),
            ("ce-source", "String", "urn:probation"),
            ("ce-type", "String", "probation-case.engagement.created"),
            ("ce-dataversion", "Number", "3"),
        ],
    );

    // Each input gives one fan-out output; the two prisoner events one state each.
    let out = aws.receive_n("consumer", 7);
    assert_eq!(out.len(), 7, "{out:?}");
    let by_type = |ty: &str| -> Vec<Value> {
        out.iter()
            .filter(|m| m.attributes["eventType"] == ty)
            .map(|m| m.json())
            .collect()
    };
    let states = by_type("prisoner.state.updated");
    let mut nomis: Vec<&str> = states
        .iter()
        .map(|s| s["data"]["nomsNumber"].as_str().unwrap())
        .collect();
    nomis.sort();
    assert_eq!(nomis, ["A1111AA", "B2222BB"]);
    assert_eq!(
        by_type(RELEASED)[0]["data"]["identifiers"]["NOMS"],
        "A1111AA"
    );
    assert_eq!(
        by_type(RECEIVED)[0]["data"]["identifiers"]["NOMS"],
        "B2222BB"
    );
    let engagements = by_type("probation-case.engagement.created");
    assert_eq!(engagements.len(), 3);
    let binary = engagements
        .iter()
        .find(|e| e["data"]["identifiers"]["NOMS"] == "D4444DD")
        .expect("the binary-mode event came through");
    assert_eq!(
        binary["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    let traced = out
        .iter()
        .find(|m| m.json()["data"]["identifiers"]["NOMS"] == "D4444DD")
        .unwrap();
    assert_eq!(
        traced.attributes["traceparent"],
        binary["traceparent"].as_str().unwrap()
    );

    // The ingest topic shows how each arrived: ids, sources and keys.
    let events = router.wait_for("events", 5);
    let find = |noms: &str| {
        events
            .iter()
            .find(|e| e["data"]["personReference"]["identifiers"][0]["value"] == noms)
            .unwrap_or_else(|| panic!("{noms} not ingested: {events:?}"))
            .clone()
    };
    assert_eq!(
        find("A1111AA")["source"],
        "urn:switchyard:sqs:switchyard-ingest"
    );
    assert_eq!(find("A1111AA")["partitionkey"], "A1111AA");
    assert_eq!(find("C3333CC")["id"], "ce-structured");
    assert_eq!(find("D4444DD")["id"], "ce-binary");
    assert_eq!(find("D4444DD")["source"], "urn:probation");
    assert_eq!(find("E5555EE")["id"], "ce-typed");
    assert_eq!(find("E5555EE")["dataversion"], "3");

    // Every message was deleted after it was durable; none was redriven.
    wait_until("the ingest queue drains", || {
        aws.depth("switchyard-ingest") == 0
    });
    assert_eq!(aws.depth("switchyard-ingest-dlq"), 0);
    aws::wait_get(&router, "/v1/sources", |b| {
        let src = &b["sources"][0];
        src["accepted"] == 5 && src["deleted"] == 5 && src["deadLettered"] == 0
    });
}

#[test]
fn poison_messages_are_dead_lettered_with_the_reason_and_the_rest_flow() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&format!(
        r#"
[plugins.chaos]
path = "{}"
timeout_ms = 500

[[routes]]
name = "prisoners"
match = ["prison-offender-events.*"]
pipeline = ["chaos"]

[sources.sqs.ingest]
queue = "switchyard-ingest"
wait_time_s = 1
dead_letter_queue = "switchyard-ingest-dlq"
max_receive_count = 3

[sinks.sns.events]
topic = "switchyard-events"
from = ["echo"]

[[aws.subscriptions]]
topic = "switchyard-events"
queue = "consumer"
raw = true
"#,
        plugin("chaos").display()
    ));
    let router = start(&emu, dir.path(), &config);
    let aws = emu.client();
    let t = "2024-06-11T14:41:22Z";
    let good = |noms: &str| hmpps(RECEIVED, noms, "MDI", t).to_string();
    let mut bad_time = hmpps(RECEIVED, "X1", "MDI", t);
    bad_time["occurredAt"] = json!("yesterday");
    let mut trap = hmpps(RECEIVED, "X2", "MDI", t);
    trap["chaos"] = json!("trap");
    let confirm = json!({"Type": "SubscriptionConfirmation", "TopicArn": "arn:aws:sns:x:1:t",
                         "Token": "t", "SubscribeURL": "https://example.invalid/"});
    let messages = [
        ("good", good("G0000AA")),
        ("bad-message", "this is not json".to_string()),
        ("invalid", bad_time.to_string()),
        (
            "no-route",
            hmpps("some-other.domain.event", "X3", "-", t).to_string(),
        ),
        ("trap", trap.to_string()),
        ("bad-message", confirm.to_string()),
        ("good", good("G1111BB")),
    ];
    for (_, body) in &messages {
        aws.send("switchyard-ingest", body, &[], None);
    }

    let echoed = aws.receive_n("consumer", 2);
    let mut echoed_noms: Vec<String> = echoed
        .iter()
        .map(|m| {
            m.json()["data"]["personReference"]["identifiers"][0]["value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    echoed_noms.sort();
    assert_eq!(echoed_noms, ["G0000AA", "G1111BB"]);

    let dead = router.wait_for("dead-letter", 5);
    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|d| d["data"]["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["bad-message", "bad-message", "invalid", "no-route", "trap"]
    );
    for d in &dead {
        let data = &d["data"];
        match data["reason"].as_str().unwrap() {
            "trap" => assert_eq!(data["plugin"], "chaos"),
            reason => {
                // Source-side dead letters keep the message whole, for replay.
                assert_eq!(data["source"], "sqs:ingest", "{d}");
                assert!(
                    data["messageId"].as_str().is_some_and(|m| !m.is_empty()),
                    "{d}"
                );
                let body = data["message"]["body"].as_str().unwrap();
                assert!(
                    messages.iter().any(|(r, b)| *r == reason && b == body),
                    "{d}"
                );
                assert!(!data["error"].as_str().unwrap().is_empty(), "{d}");
            }
        }
    }
    let invalid = dead
        .iter()
        .find(|d| d["data"]["reason"] == "invalid")
        .unwrap();
    assert_eq!(
        invalid["data"]["details"][0]["field"], "/occurredAt",
        "{invalid}"
    );
    let unrouted = dead
        .iter()
        .find(|d| d["data"]["reason"] == "no-route")
        .unwrap();
    assert_eq!(unrouted["data"]["event"]["type"], "some-other.domain.event");

    // Poison messages are deleted, not retried until SQS redrives them.
    wait_until("the ingest queue drains", || {
        aws.depth("switchyard-ingest") == 0
    });
    assert_eq!(aws.depth("switchyard-ingest-dlq"), 0);
}

/// Waits for `cond` with the common deadline.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
