//! `switchyard aws setup` and the shipped `config/aws-local.toml`: setup is
//! idempotent and creates what the README's local loop needs, and that loop
//! works — an HMPPS event published to the shared topic comes out of the
//! router's SNS topic to a filtered and an unfiltered consumer.

#[path = "common/aws.rs"]
mod aws;
mod common;

use std::process::Command;

use aws::Emulator;
use aws_sdk_sqs::types::QueueAttributeName;
use common::*;

/// `config/aws-local.toml` with absolute plugin and schema paths.
fn aws_local() -> String {
    plugin("prisoner-projection");
    plugin("domain-fanout");
    let text = std::fs::read_to_string(root().join("config/aws-local.toml")).unwrap();
    text.replace(
        "../plugins/dist",
        &root().join("plugins/dist").display().to_string(),
    )
    .replace(
        "schemas/",
        &format!("{}/", root().join("config/schemas").display()),
    )
}

#[test]
fn setup_is_idempotent_and_the_local_loop_works() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("aws-local.toml");
    std::fs::write(&cfg, aws_local()).unwrap();
    let first = emu.setup(&cfg);
    let second = emu.setup(&cfg);
    assert_eq!(
        first, second,
        "a second run finds everything as the first left it"
    );
    for line in [
        "topic hmpps-domain-events: arn:",
        "topic switchyard-events: arn:",
        "queue switchyard-ingest-dlq: arn:",
        "subscription switchyard-events -> prisoner-state-consumer: arn:",
    ] {
        assert!(first.contains(line), "missing {line:?} in:\n{first}");
    }
    let aws = emu.client();
    let subs = aws
        .block(
            aws.sns
                .list_subscriptions_by_topic()
                .topic_arn(aws.topic_arn("switchyard-events"))
                .send(),
        )
        .unwrap();
    assert_eq!(subs.subscriptions().len(), 2, "no duplicate subscriptions");
    let attrs = aws
        .block(
            aws.sqs
                .get_queue_attributes()
                .queue_url(aws.queue_url("switchyard-ingest"))
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .send(),
        )
        .unwrap();
    let redrive = attrs.attributes().unwrap()[&QueueAttributeName::RedrivePolicy].clone();
    assert!(redrive.contains("switchyard-ingest-dlq"), "{redrive}");

    let router = Router::start_with(dir.path(), &aws_local(), |c| emu.env(c));
    let ev = hmpps(RECEIVED, "A1234BC", "MDI", "2024-06-11T14:41:22+01:00");
    aws.publish(
        "hmpps-domain-events",
        &ev.to_string(),
        &[("eventType", RECEIVED)],
    );

    let state = aws.receive_n("prisoner-state-consumer", 1);
    assert_eq!(state.len(), 1, "{state:?}");
    let ce = state[0].json();
    assert_eq!(ce["type"], "prisoner.state.updated");
    assert_eq!(ce["data"]["nomsNumber"], "A1234BC");
    assert_eq!(ce["data"]["status"], "IN");
    assert_eq!(state[0].attributes["producer"], "switchyard");
    let mut all: Vec<String> = aws
        .receive_n("switchyard-events-all", 2)
        .iter()
        .map(|m| m.attributes["eventType"].clone())
        .collect();
    all.sort();
    assert_eq!(all, [RECEIVED, "prisoner.state.updated"]);
    router.stop();
}

#[test]
fn setup_refuses_configs_without_aws_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["aws", "setup", "--config"])
            .arg(&cfg)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&default_config());
    assert!(
        err.contains("names no sqs source, sink or subscription"),
        "{err}"
    );
    let bad = format!(
        "{}\n[sinks.sns.out]\nqueue = \"q\"\nfrom = [\"*\"]\n",
        default_config()
    );
    let err = run(&bad);
    let line = bad
        .lines()
        .position(|l| l.starts_with("queue = \"q\""))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(
            "c.toml:{line}: sinks.sns.out.queue: an sns sink takes `topic`, not `queue`"
        )),
        "{err}"
    );
    // No region anywhere: refused up front, not at the first call.
    let err = run(&aws_local());
    assert!(
        err.contains("no AWS region: set aws.region in the config, or AWS_REGION"),
        "{err}"
    );
}
