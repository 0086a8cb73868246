//! Contract versioning: a plugin built against a `switchyard:plugin` version
//! the host does not accept (plugins/testing/future-contract, built against a
//! copy of the WIT at 0.9.0) is refused at load, naming both versions.

mod common;

use std::process::Command;

use common::*;

fn future_config() -> String {
    config_with(&format!(
        r#"
[plugins.future]
path = "{}"

[[routes]]
name = "all"
match = ["*"]
pipeline = ["future"]
"#,
        plugin("future-contract").display()
    ))
}

#[test]
fn a_plugin_of_an_unsupported_contract_version_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(&cfg, future_config()).unwrap();
    for args in [
        vec!["validate", "--config"],
        vec![
            "run",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
            "--config",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&args)
            .arg(&cfg)
            .current_dir(dir.path())
            .output()
            .expect("run switchyard");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} must refuse the plugin: {stderr}"
        );
        assert!(
            stderr.contains("plugin future:")
                && stderr.contains("was built against switchyard:plugin@0.9.0")
                && stderr.contains("contract switchyard:plugin@0.1.0")
                && stderr.contains("accepts switchyard:plugin@0.1.x"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn inspect_tells_the_contract_version_and_whether_it_is_accepted() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["plugin", "inspect"])
        .arg(plugin("future-contract"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("switchyard:plugin/processor@0.9.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("NOT accepted: this host accepts switchyard:plugin@0.1.x"),
        "{stdout}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["plugin", "inspect", "--json"])
        .arg(plugin("prisoner-projection-python"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["world"], "switchyard:plugin/processor@0.1.0");
    assert_eq!(info["contract"], "0.1.0");
    assert_eq!(info["accepted"], true);
    // componentize-py imports every interface of the world, used or not;
    // the host checks the grant when a function is called.
    assert_eq!(
        info["capabilities"],
        serde_json::json!(["log", "clock", "kv", "http"])
    );
    assert!(info["size"].as_u64().unwrap() > 1_000_000, "{info}");
    assert!(
        info["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "switchyard:plugin/kv@0.1.0"),
        "{info}"
    );
    assert!(!info["producers"].as_array().unwrap().is_empty(), "{info}");
}
