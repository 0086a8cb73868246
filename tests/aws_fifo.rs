//! FIFO end to end (order per message group from an SQS FIFO queue through a
//! plugin to an SNS FIFO topic, and deduplication when outputs are sent
//! again), and two routers competing for one queue.

#[path = "common/aws.rs"]
mod aws;
mod common;

use std::collections::{BTreeMap, BTreeSet};

use aws::Emulator;
use common::*;
use serde_json::{Value, json};

fn echo_config(extra: &str) -> String {
    config_with(&format!(
        r#"
[plugins.chaos]
path = "{}"
instances = 4

[[routes]]
name = "echo"
match = ["*"]
pipeline = ["chaos"]
{extra}
"#,
        plugin("chaos").display()
    ))
}

fn sink_status(router: &Router, name: &str) -> Value {
    let (_, body) = router.get("/v1/sinks");
    body["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no sink {name}: {body}"))
}

/// Waits until the sink's cursors reached the end of its topics and it has
/// delivered at least `n` messages.
fn wait_sink_delivered(router: &Router, name: &str, n: u64) -> Value {
    let start = std::time::Instant::now();
    loop {
        let s = sink_status(router, name);
        let caught_up = s["topics"]
            .as_array()
            .is_some_and(|ts| !ts.is_empty() && ts.iter().all(|t| t["cursor"] == t["length"]));
        if caught_up && s["delivered"].as_u64() >= Some(n) {
            return s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "sink {name} did not deliver {n}: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn seq_event(group: &str, seq: usize) -> Value {
    let mut ev = hmpps(
        RECEIVED,
        &format!("N{group}"),
        "MDI",
        "2024-06-11T14:41:22Z",
    );
    ev["additionalInformation"]["seq"] = json!(seq);
    ev["additionalInformation"]["group"] = json!(group);
    ev
}

#[test]
fn fifo_order_per_group_holds_end_to_end_and_replayed_outputs_are_dropped() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = |sink: &str| {
        echo_config(&format!(
            r#"
[sources.sqs.ingest]
queue = "ingest.fifo"
wait_time_s = 1
concurrency = 2

[sinks.sns.{sink}]
topic = "out.fifo"
from = ["echo"]
format = "data"

[[aws.subscriptions]]
topic = "out.fifo"
queue = "out-q.fifo"
raw = true
"#
        ))
    };
    let cfg = dir.path().join("setup.toml");
    std::fs::write(&cfg, fifo("out")).unwrap();
    emu.setup(&cfg);
    let router = Router::start_with(dir.path(), &fifo("out"), |c| emu.env(c));
    let aws = emu.client();
    let groups = ["g1", "g2", "g3"];
    let per_group = 6;
    for seq in 0..per_group {
        for g in groups {
            let dedup = format!("{g}-{seq}");
            aws.send(
                "ingest.fifo",
                &seq_event(g, seq).to_string(),
                &[],
                Some((g, &dedup)),
            );
        }
    }
    let n = groups.len() * per_group;
    let got = aws.receive_n("out-q.fifo", n);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in &got {
        let data = m.json();
        let group = data["additionalInformation"]["group"]
            .as_str()
            .unwrap()
            .to_string();
        // The queue's message group is the input's group, carried as the key.
        assert_eq!(m.group.as_deref(), Some(group.as_str()), "{m:?}");
        seen.entry(group)
            .or_default()
            .push(data["additionalInformation"]["seq"].as_u64().unwrap());
    }
    for g in groups {
        assert_eq!(
            seen[g],
            (0..per_group as u64).collect::<Vec<_>>(),
            "group {g} out of order"
        );
    }
    wait_sink_delivered(&router, "out", n as u64);
    router.stop();

    // Replay: a new sink on the same topic starts from offset 0 and sends
    // every output again, with the same deduplication ids.
    let router = Router::start_with(dir.path(), &fifo("replay"), |c| emu.env(c));
    let replay = wait_sink_delivered(&router, "replay", n as u64);
    assert_eq!(replay["deadLettered"], 0, "{replay}");
    assert!(
        aws.receive_once("out-q.fifo", 2).is_empty(),
        "replayed outputs must be deduplicated"
    );
}

#[test]
fn two_routers_on_one_queue_deliver_exactly_once_to_fifo_and_at_least_once_to_standard() {
    let emu = Emulator::start();
    let config = echo_config(
        r#"
[sources.sqs.shared]
queue = "shared-in"
wait_time_s = 1
concurrency = 2

[sinks.sns.fifo]
topic = "fanout.fifo"
from = ["echo"]

[sinks.sns.standard]
topic = "fanout"
from = ["echo"]

[[aws.subscriptions]]
topic = "fanout.fifo"
queue = "fifo-out.fifo"
raw = true

[[aws.subscriptions]]
topic = "fanout"
queue = "std-out"
raw = true
"#,
    );
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = d1.path().join("setup.toml");
    std::fs::write(&cfg, &config).unwrap();
    emu.setup(&cfg);
    let r1 = Router::start_with(d1.path(), &config, |c| emu.env(c));
    let r2 = Router::start_with(d2.path(), &config, |c| emu.env(c));
    let aws = emu.client();

    // Every event twice, as producers retrying after a timeout do: the same
    // CloudEvent id, two SQS messages, which either router may take.
    let n = 20;
    for copy in 0..2 {
        for i in 0..n {
            let ce = json!({"specversion": "1.0", "id": format!("ev-{i}"), "source": "urn:test",
                            "type": RECEIVED, "time": "2024-06-11T14:41:22Z",
                            "data": hmpps(RECEIVED, &format!("P{i:04}"), "MDI", "2024-06-11T14:41:22Z")});
            aws.send(
                "shared-in",
                &ce.to_string(),
                &[("copy", &copy.to_string())],
                None,
            );
        }
    }
    // Wait until all 2n messages were consumed and forwarded by the two routers.
    let start = std::time::Instant::now();
    loop {
        let delivered = |sink: &str| {
            [&r1, &r2]
                .iter()
                .map(|r| sink_status(r, sink)["delivered"].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        if delivered("fifo") >= 2 * n as u64 && delivered("standard") >= 2 * n as u64 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "not everything was forwarded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Every message consumed once, by one router or the other.
    let start = std::time::Instant::now();
    loop {
        let accepted: u64 = [&r1, &r2]
            .iter()
            .map(|r| {
                r.get("/v1/sources").1["sources"][0]["accepted"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        if accepted == 2 * n as u64 {
            break;
        }
        assert!(
            accepted < 2 * n as u64,
            "a message was consumed twice: {accepted}"
        );
        assert!(
            start.elapsed() < DEADLINE,
            "accepted {accepted} of {}",
            2 * n
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let ids = |msgs: &[aws::Received]| -> Vec<String> {
        msgs.iter()
            .map(|m| m.json()["id"].as_str().unwrap().to_string())
            .collect()
    };
    // FIFO topic: one message per output id, duplicates dropped by SNS.
    let fifo = aws.receive_n("fifo-out.fifo", n);
    let unique: BTreeSet<String> = ids(&fifo).into_iter().collect();
    assert_eq!((fifo.len(), unique.len()), (n, n));
    assert!(
        aws.receive_once("fifo-out.fifo", 2).is_empty(),
        "a duplicate reached the fifo queue"
    );
    // Standard topic: every output at least once (here: both copies).
    let std_out = aws.receive_n("std-out", 2 * n);
    let std_ids: BTreeSet<String> = ids(&std_out).into_iter().collect();
    assert_eq!(std_ids, unique);
}
