//! The command line: `validate` accepts the default config and names the file,
//! line, key and reason of what is wrong; `plugin build` produces a component
//! the router loads.

mod common;

use std::process::Command;

use common::*;

fn switchyard(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run switchyard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn validate_accepts_the_default_config_and_loads_its_plugins() {
    plugin("prisoner-projection");
    let cfg = root().join("config/switchyard.toml");
    let (ok, out) = switchyard(&["validate", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("plugin prisoner-projection: version"), "{out}");
    assert!(out.contains("route domain-fanout"), "{out}");
}

#[test]
fn validate_names_file_line_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let text = default_config().replace(
        r#"pipeline = ["prisoner-projection"]"#,
        r#"pipeline = ["prisoner-projektion"]"#,
    );
    std::fs::write(&cfg, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("prisoner-projektion"))
        .unwrap()
        + 1;
    let (ok, out) = switchyard(&["validate", "--config", cfg.to_str().unwrap()]);
    assert!(!ok, "{out}");
    let expected = format!(
        "{}:{line}: routes[0].pipeline[0]: unknown plugin \"prisoner-projektion\"",
        cfg.display()
    );
    assert!(out.contains(&expected), "expected {expected:?} in {out}");

    // A syntax error names its line too.
    std::fs::write(&cfg, "[server]\nlisten = \n").unwrap();
    let (ok, out) = switchyard(&["validate", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("bad.toml:2"), "{out}");
}

#[test]
fn validate_refuses_a_file_that_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.wasm");
    std::fs::write(&fake, b"\0asm not really").unwrap();
    let text = default_config().replace(
        &plugin("domain-fanout").display().to_string(),
        &fake.display().to_string(),
    );
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = switchyard(&["validate", "--config", cfg.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("plugin domain-fanout"), "{out}");
    assert!(out.contains("fake.wasm"), "{out}");
}

#[test]
fn plugin_build_makes_a_component_the_router_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("built-chaos.wasm");
    let project = root().join("plugins/testing/chaos");
    let (ok, text) = switchyard(&[
        "plugin",
        "build",
        project.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(out.is_file(), "{text}");
    let config = config_with(&format!(
        "[plugins.chaos]\npath = \"{}\"\n\n[[routes]]\nname = \"all\"\nmatch = [\"*\"]\npipeline = [\"chaos\"]\n",
        out.display()
    ));
    let router = Router::start(dir.path(), &config);
    let (status, body) =
        router.post_json(&hmpps(RECEIVED, "A1234BC", "MDI", "2024-06-11T14:41:22Z"));
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        router.wait_for("echo", 1)[0]["data"]["personReference"]["identifiers"][0]["value"],
        "A1234BC"
    );
}
