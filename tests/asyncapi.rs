//! `switchyard asyncapi` writes AsyncAPI 3.0 documents that the AsyncAPI
//! CLI (`@asyncapi/cli` from npm, installed into `tests/ui` by
//! `scripts/setup`) validates, for the default and the AWS config.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// The locked AsyncAPI CLI. Fails (never skips) when missing.
fn asyncapi_cli() -> std::path::PathBuf {
    let p = root().join("tests/ui/node_modules/.bin/asyncapi");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup (npm ci in tests/ui)",
        p.display()
    );
    p
}

fn generate(config: &str, out: &std::path::Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["asyncapi", "--config"])
        .arg(root().join(config))
        .arg("-o")
        .arg(out)
        .status()
        .expect("run switchyard asyncapi");
    assert!(
        status.success(),
        "switchyard asyncapi --config {config} failed"
    );
}

fn validate(file: &std::path::Path) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(asyncapi_cli())
        .arg("validate")
        .arg(file)
        // No telemetry or update checks: the test runs offline.
        .env("ASYNCAPI_METRICS", "false")
        .env("HOME", home.path())
        .output()
        .expect("run asyncapi validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "asyncapi validate {}:\n{text}",
        file.display()
    );
    assert!(text.contains("is valid"), "{text}");
}

#[test]
fn the_default_config_documents_validate() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("switchyard.yaml");
    generate("config/switchyard.toml", &yaml);
    validate(&yaml);
    let json = dir.path().join("switchyard.json");
    generate("config/switchyard.toml", &json);
    validate(&json);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["channels"]["events"]["address"], "events");
    assert_eq!(
        doc["channels"]["prisoner-state"]["address"],
        "prisoner-state"
    );
    assert_eq!(doc["channels"]["domain_name"]["address"], "domain.{name}");
    // Each event type with a schema is a message with its JSON Schema.
    let received = &doc["components"]["messages"]["prison-offender-events_prisoner_received"];
    assert_eq!(received["name"], RECEIVED);
    assert_eq!(
        received["payload"]["allOf"][1]["required"],
        serde_json::json!(["personReference", "additionalInformation"])
    );
    // Which route and plugin publishes where.
    let op = &doc["operations"]["route-prisoner-state-to-prisoner-state"];
    assert_eq!(op["action"], "send");
    assert_eq!(op["x-switchyard-plugin"], "prisoner-projection");
    assert_eq!(op["channel"]["$ref"], "#/channels/prisoner-state");
}

#[test]
fn the_aws_config_documents_queues_and_topics() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("aws.yaml");
    generate("config/aws-local.toml", &yaml);
    validate(&yaml);
    let json = dir.path().join("aws.json");
    generate("config/aws-local.toml", &json);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let channels = doc["channels"].as_object().unwrap();
    assert!(
        channels.keys().any(|k| k.starts_with("sqs-")),
        "no SQS source channel: {:?}",
        channels.keys()
    );
    assert!(
        channels
            .values()
            .any(|c| c["address"] == "switchyard-events"),
        "no SNS sink channel: {:?}",
        channels.keys()
    );
}

#[test]
fn a_bad_config_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[router]\nbatch_size = \"many\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["asyncapi", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
}
