//! The broker goes away: the emulator is killed mid-run and started again
//! empty (as after an outage, so the resources are re-created). The outbox
//! keeps every accepted event and forwards it when SNS is back; direct
//! delivery answers 503 with the AWS error meanwhile.

#[path = "common/aws.rs"]
mod aws;
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws::{Emulator, Relay};
use common::*;
use serde_json::{Value, json};

fn config(delivery: &str) -> String {
    config_with(&format!(
        r#"
[aws]
max_backoff_ms = 500

[plugins.chaos]
path = "{}"

[[routes]]
name = "echo"
match = ["*"]
pipeline = ["chaos"]
delivery = "{delivery}"

[sources.sqs.ingest]
queue = "switchyard-ingest"
wait_time_s = 1

[sinks.sns.events]
topic = "switchyard-events"
from = ["echo"]

[[aws.subscriptions]]
topic = "switchyard-events"
queue = "consumer"
raw = true
"#,
        plugin("chaos").display()
    ))
}

fn start(emu: &Emulator, dir: &std::path::Path, config: &str) -> (Router, std::path::PathBuf) {
    let cfg = dir.join("setup.toml");
    std::fs::write(&cfg, config).unwrap();
    emu.setup(&cfg);
    (Router::start_with(dir, config, |c| emu.env(c)), cfg)
}

fn event(noms: &str) -> Value {
    hmpps(RECEIVED, noms, "MDI", "2024-06-11T14:41:22Z")
}

fn noms_of(msgs: &[aws::Received]) -> BTreeSet<String> {
    msgs.iter()
        .map(|m| {
            let ce = m.json();
            ce["data"]["personReference"]["identifiers"][0]["value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn wait_for_sink(router: &Router, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, body) = router.get("/v1/sinks");
        let sink = body["sinks"][0].clone();
        if cond(&sink) {
            return sink;
        }
        assert!(start.elapsed() < DEADLINE, "sink never {what}: {sink}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_outage_loses_no_accepted_event_and_forwarding_resumes() {
    let mut emu = Emulator::start();
    // The router reaches the broker through a relay, cut for the whole outage
    // including the rebuild, as a real broker comes back with its resources.
    let relay = Relay::to(&emu);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("setup.toml");
    std::fs::write(&cfg, config("outbox")).unwrap();
    emu.setup(&cfg);
    let router = Router::start_with(dir.path(), &config("outbox"), |c| relay.env(c));
    let aws = emu.client();

    let before: Vec<String> = (0..5).map(|i| format!("B{i:04}")).collect();
    for n in &before {
        assert_eq!(router.post_json(&event(n)).0, 202);
    }
    assert_eq!(
        noms_of(&aws.receive_n("consumer", 5)),
        before.iter().cloned().collect()
    );

    relay.cut();
    emu.stop();
    let during: Vec<String> = (0..5).map(|i| format!("D{i:04}")).collect();
    for n in &during {
        // The log is the outbox: accepted while SNS is unreachable.
        let (status, body) = router.post_json(&event(n));
        assert_eq!(status, 202, "{body}");
    }
    let failing = wait_for_sink(&router, "noticed the outage", |s| s["retrying"] == true);
    assert!(
        failing["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("PublishBatch") || e.contains("ListTopics")),
        "{failing}"
    );
    // The pipeline keeps running during the outage.
    assert_eq!(router.wait_for("echo", 10).len(), 10);

    // Back, empty: re-create the topic, queues and subscription, then let
    // the router reach it again.
    emu.restart();
    emu.setup(&cfg);
    relay.restore(&emu);
    let aws = emu.client();
    // The SQS source recovers too: messages sent now flow as well.
    let after: Vec<String> = (0..3).map(|i| format!("A{i:04}")).collect();
    for n in &after {
        aws.send("switchyard-ingest", &event(n).to_string(), &[], None);
    }
    let expected: BTreeSet<String> = during.iter().chain(&after).cloned().collect();
    let got = aws.receive_n("consumer", expected.len());
    assert_eq!(noms_of(&got), expected);
    wait_for_sink(&router, "recovered", |s| {
        s["retrying"] == false && s["delivered"] == 13
    });
    assert_eq!(
        router.topic_len("dead-letter"),
        0,
        "nothing was dead-lettered for an outage"
    );
}

#[test]
fn direct_delivery_answers_after_sns_accepted_and_503_while_it_is_down() {
    let mut emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let (router, cfg) = start(&emu, dir.path(), &config("direct"));
    let aws = emu.client();

    let (status, body) = router.post_json(&event("A0000AA"));
    assert_eq!(status, 202, "{body}");
    let published = &body["published"][0];
    assert_eq!(published["sink"], "events", "{body}");
    assert_eq!(published["topic"], "echo");
    assert!(
        published["messageId"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let got = aws.receive_n("consumer", 1);
    assert_eq!(got.len(), 1, "published once: {got:?}");
    assert_eq!(got[0].json()["id"], published["id"]);
    // Recorded in the log, marked as delivered, and not sent again by the outbox.
    let echo = router.wait_for("echo", 1);
    assert_eq!(echo[0]["delivered"], "events");
    wait_for_sink(&router, "caught up", |s| s["topics"][0]["cursor"] == 1);
    assert!(
        aws.receive_once("consumer", 1).is_empty(),
        "the outbox sent a direct output again"
    );

    // A plugin refusing the event: 422 with the plugin's reason.
    let mut bad = event("B0000BB");
    bad["chaos"] = json!("bad");
    let (status, body) = router.post_json(&bad);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["details"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("chaos asked for bad-event"),
        "{body}"
    );

    emu.stop();
    let events_before = router.topic_len("events");
    let (status, body) = router.post_json(&event("C0000CC"));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["details"][0]["field"], "sink:events", "{body}");
    let reason = body["details"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("unreachable"),
        "the AWS error is in the answer: {reason}"
    );
    assert_eq!(
        router.topic_len("events"),
        events_before,
        "a 503 accepts nothing"
    );

    emu.restart();
    emu.setup(&cfg);
    let aws = emu.client();
    let (status, body) = router.post_json(&event("C0000CC"));
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        noms_of(&aws.receive_n("consumer", 1)),
        BTreeSet::from(["C0000CC".to_string()])
    );
}

#[test]
fn a_slow_message_stays_invisible_until_it_is_done() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // The direct route makes the source do the plugin's work before the
    // delete: a spin that the 3 s deadline stops, longer than the 2 s
    // visibility timeout. Without extension the message would be received
    // again, and with max_receive_count = 1 redriven to the DLQ.
    let config = config_with(&format!(
        r#"
[plugins.chaos]
path = "{}"
timeout_ms = 3000

[[routes]]
name = "echo"
match = ["*"]
pipeline = ["chaos"]
delivery = "direct"

[sources.sqs.ingest]
queue = "slow-in"
wait_time_s = 1
concurrency = 2
visibility_timeout_s = 2
dead_letter_queue = "slow-in-dlq"
max_receive_count = 1

[sinks.sns.events]
topic = "switchyard-events"
from = ["echo"]
"#,
        plugin("chaos").display()
    ));
    let (router, _) = start(&emu, dir.path(), &config);
    let aws = emu.client();
    let mut spin = event("S0000SS");
    spin["chaos"] = json!("spin");
    aws.send("slow-in", &spin.to_string(), &[], None);
    let dead = router.wait_for("dead-letter", 1);
    assert_eq!(dead[0]["data"]["reason"], "rejected", "{}", dead[0]);
    assert!(
        dead[0]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("timeout"),
        "{}",
        dead[0]
    );
    assert_eq!(
        dead[0]["data"]["receiveCount"], 1,
        "received once: {}",
        dead[0]
    );
    let start = Instant::now();
    while aws.depth("slow-in") != 0 {
        assert!(start.elapsed() < DEADLINE, "the message was not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        aws.depth("slow-in-dlq"),
        0,
        "the message was redriven while in progress"
    );
    assert_eq!(router.topic_len("dead-letter"), 1);
}
