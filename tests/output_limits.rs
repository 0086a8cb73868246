//! The host's caps on what a plugin may emit: output count and bytes per
//! call, and the topics its route allows. Each violation dead-letters the
//! event as `bad-output` with the reason; other routes keep flowing.

mod common;

use common::*;
use serde_json::json;

/// The chaos plugin echoes to topic `echo`; four plugin entries share its
/// component with different caps, each on its own route taking every event.
fn limits_config() -> String {
    let path = plugin("chaos");
    config_with(&format!(
        r#"
[plugins.open]
path = "{p}"

[plugins.none]
path = "{p}"
max_outputs = 0

[plugins.small]
path = "{p}"
max_output_bytes = 16

[plugins.fenced]
path = "{p}"

[[routes]]
name = "open"
match = ["*"]
pipeline = ["open"]
topics = ["ec*"]

[[routes]]
name = "none"
match = ["*"]
pipeline = ["none"]

[[routes]]
name = "small"
match = ["*"]
pipeline = ["small"]

[[routes]]
name = "fenced"
match = ["*"]
pipeline = ["fenced"]
topics = ["audit.*", "moves"]
"#,
        p = path.display()
    ))
}

#[test]
fn outputs_past_the_caps_or_to_disallowed_topics_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &limits_config());
    let mut ev = hmpps(RECEIVED, "A1234BC", "MDI", "2024-06-11T14:41:22Z");
    ev["chaos"] = json!("none");
    let (status, body) = router.post_json(&ev);
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();

    // The route whose allow-list matches `echo` delivers.
    let echoed = router.wait_for("echo", 1);
    assert_eq!(echoed[0]["data"]["chaos"], "none");
    assert_eq!(echoed[0]["plugin"], "open", "{echoed:?}");

    let dead = router.wait_for("dead-letter", 3);
    assert_eq!(dead.len(), 3, "{dead:?}");
    let by_route = |route: &str| {
        let rec = dead
            .iter()
            .find(|d| d["data"]["route"] == route)
            .unwrap_or_else(|| panic!("route {route} not dead-lettered: {dead:?}"));
        assert_eq!(rec["data"]["event"]["id"], id.as_str());
        assert_eq!(rec["data"]["reason"], "bad-output", "{rec}");
        assert_eq!(rec["data"]["plugin"], route);
        rec["data"]["error"].as_str().unwrap().to_string()
    };
    let err = by_route("none");
    assert!(err.contains("more than max_outputs = 0"), "{err}");
    let err = by_route("small");
    assert!(err.contains("more than max_output_bytes = 16"), "{err}");
    let err = by_route("fenced");
    assert!(
        err.contains("does not allow output to topic \"echo\""),
        "{err}"
    );
    assert!(
        router
            .topic("dead-letter")
            .iter()
            .all(|d| d["data"]["route"] != "open"),
        "the allowed route must not dead-letter"
    );
    assert_eq!(
        router.topic_len("echo"),
        1,
        "refused outputs are not appended"
    );
}

#[test]
fn a_bad_topic_glob_in_the_allow_list_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&format!(
        r#"
[plugins.chaos]
path = "{}"

[[routes]]
name = "chaos"
match = ["*"]
pipeline = ["chaos"]
topics = ["audit.[x"]
"#,
        plugin("chaos").display()
    ));
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("validate")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[0].topics[0]"), "{stderr}");
    assert!(stderr.contains("unbalanced brackets"), "{stderr}");
}
