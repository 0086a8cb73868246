//! The SQS sink (`SendMessageBatch`) on a standard and a FIFO queue: every
//! output delivered with its `eventType` attribute, FIFO groups from the
//! event key in order, and outputs SQS cannot take dead-lettered with the
//! reason while the rest flow.

#[path = "common/aws.rs"]
mod aws;
mod common;

use std::collections::BTreeMap;

use aws::Emulator;
use common::*;
use serde_json::json;

#[test]
fn sqs_sinks_deliver_in_batches_and_dead_letter_what_sqs_refuses() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&format!(
        r#"
[plugins.chaos]
path = "{}"

[[routes]]
name = "echo"
match = ["*"]
pipeline = ["chaos"]

[sinks.sqs.audit]
queue = "audit"
from = ["echo"]
attributes = {{ producer = "switchyard", env = "test" }}

[sinks.sqs.ordered]
queue = "audit.fifo"
from = ["echo"]
format = "data"
"#,
        plugin("chaos").display()
    ));
    let cfg = dir.path().join("setup.toml");
    std::fs::write(&cfg, &config).unwrap();
    let report = emu.setup(&cfg);
    assert!(report.contains("queue audit.fifo: http"), "{report}");
    let router = Router::start_with(dir.path(), &config, |c| emu.env(c));
    let aws = emu.client();

    let keys = ["K0000AA", "K1111BB", "K2222CC"];
    let mut sent = Vec::new();
    for i in 0..24 {
        let key = keys[i % keys.len()];
        let mut ev = hmpps(RECEIVED, key, "MDI", "2024-06-11T14:41:22Z");
        ev["additionalInformation"]["seq"] = json!(i);
        match i {
            // U+FFFF is outside the characters SQS accepts in a body.
            7 => ev["description"] = json!("not for sqs \u{ffff}"),
            // Over the 256 KiB message limit (but within the HTTP body limit).
            13 => ev["description"] = json!("x".repeat(300 * 1024)),
            _ => {}
        }
        let (status, body) = router.post_json(&ev);
        assert_eq!(status, 202, "{body}");
        if i != 7 && i != 13 {
            sent.push((key, i as u64));
        }
    }

    let std_out = aws.receive_n("audit", sent.len());
    assert_eq!(std_out.len(), sent.len());
    for m in &std_out {
        assert_eq!(m.attributes["eventType"], RECEIVED);
        assert_eq!(
            (
                m.attributes["producer"].as_str(),
                m.attributes["env"].as_str()
            ),
            ("switchyard", "test")
        );
        assert_eq!(m.json()["specversion"], "1.0");
    }

    let fifo_out = aws.receive_n("audit.fifo", sent.len());
    let mut by_group: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in &fifo_out {
        let data = m.json(); // format = "data": the HMPPS event itself
        let key = data["personReference"]["identifiers"][0]["value"]
            .as_str()
            .unwrap();
        assert_eq!(
            m.group.as_deref(),
            Some(key),
            "the event key is the message group"
        );
        by_group
            .entry(key.to_string())
            .or_default()
            .push(data["additionalInformation"]["seq"].as_u64().unwrap());
    }
    for key in keys {
        let expected: Vec<u64> = sent
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(
            by_group[key], expected,
            "group {key} in order, without the refused ones"
        );
    }

    // Each sink dead-letters the two outputs it could not send, and moves on.
    let dead = router.wait_for("dead-letter", 4);
    let mut seen: Vec<(String, String, u64)> = dead
        .iter()
        .map(|d| {
            let data = &d["data"];
            let seq = data["event"]["data"]
                .as_str()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
            let seq = seq
                .and_then(|v| v["additionalInformation"]["seq"].as_u64())
                .unwrap();
            (
                data["sink"].as_str().unwrap().to_string(),
                data["reason"].as_str().unwrap().to_string(),
                seq,
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("audit".into(), "sink-rejected".into(), 7),
            ("audit".into(), "too-large".into(), 13),
            ("ordered".into(), "sink-rejected".into(), 7),
            ("ordered".into(), "too-large".into(), 13),
        ]
    );
    let rejected = dead
        .iter()
        .find(|d| d["data"]["reason"] == "sink-rejected")
        .unwrap();
    assert_eq!(
        rejected["data"]["code"], "InvalidMessageContents",
        "the AWS error: {rejected}"
    );
    assert_eq!(rejected["data"]["topic"], "echo");
    let start = std::time::Instant::now();
    loop {
        let (_, sinks) = router.get("/v1/sinks");
        let counts: Vec<_> = sinks["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["delivered"].as_u64(),
                    s["deadLettered"].as_u64(),
                    s["topics"][0]["cursor"].as_u64(),
                )
            })
            .collect();
        if counts == [(Some(22), Some(2), Some(24)); 2] {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "sinks did not finish: {sinks}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
