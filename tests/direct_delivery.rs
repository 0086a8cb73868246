//! Direct delivery with no sink: the route runs inside the request and its
//! outputs are written with the input in one commit, so they are durable
//! (and readable) when the 202 comes back; the pipeline does not run the
//! route again, and a refused event appends nothing.

mod common;

use common::*;
use serde_json::{Value, json};

fn config() -> String {
    config_with(&format!(
        r#"
[plugins.chaos]
path = "{}"

[[routes]]
name = "echo"
match = ["*"]
pipeline = ["chaos"]
delivery = "direct"
"#,
        plugin("chaos").display()
    ))
}

fn event(noms: &str) -> Value {
    hmpps(RECEIVED, noms, "MDI", "2024-06-11T14:41:22Z")
}

/// How far the pipeline's cursor is behind the ingest topic, per `/metrics`.
fn router_lag(router: &Router) -> Option<f64> {
    router.metric("switchyard_consumer_lag{consumer=\"router\"")
}

#[test]
fn outputs_are_durable_at_the_answer_and_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &config());

    for (i, noms) in ["A0000AA", "B0000BB", "C0000CC"].iter().enumerate() {
        let (status, body) = router.post_json(&event(noms));
        assert_eq!(status, 202, "{body}");
        assert!(
            body.get("published").is_none(),
            "no sink, nothing published: {body}"
        );
        // Read at once, with no waiting: the output was in the same write.
        let echo = router.topic("echo");
        assert_eq!(echo.len(), i + 1, "{echo:?}");
        let last = &echo[i];
        assert_eq!(last["partitionkey"], *noms, "{last}");
        assert_eq!(
            last["data"]["personReference"]["identifiers"][0]["value"],
            *noms
        );
    }

    // The pipeline passes the inputs without running the route again.
    router.wait_until("the router cursor to catch up", || {
        router_lag(&router) == Some(0.0)
    });
    assert_eq!(router.topic_len("events"), 3);
    assert_eq!(
        router.topic_len("echo"),
        3,
        "the pipeline ran a direct route again"
    );

    // A refused event: 422 with the plugin's reason, nothing appended.
    let mut bad = event("D0000DD");
    bad["chaos"] = json!("bad");
    let (status, body) = router.post_json(&bad);
    assert_eq!(status, 422, "{body}");
    let reason = body["details"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("chaos asked for bad-event"), "{body}");
    assert_eq!(router.topic_len("events"), 3, "a 422 accepts nothing");
    assert_eq!(router.topic_len("echo"), 3);
    router.stop();
}
