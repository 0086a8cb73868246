//! Bad requests get a clear status and a reason naming the field, and nothing
//! of them is appended.

mod common;

use common::*;
use serde_json::{Value, json};

fn detail(body: &Value) -> (String, String) {
    let d = &body["details"][0];
    (
        d["field"].as_str().unwrap_or_default().to_string(),
        d["reason"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn each_bad_input_gets_its_status_and_reason_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let config = default_config().replace("max_body_bytes = 1048576", "max_body_bytes = 4096");
    let router = Router::start(dir.path(), &config);
    let good = hmpps(RECEIVED, "A1234BC", "MDI", "2024-06-11T14:41:22+01:00");

    // Invalid JSON.
    let (status, body) = router.post("application/json", b"{\"eventType\": ", &[]);
    assert_eq!(status, 400, "{body}");
    assert!(detail(&body).1.contains("line"), "{body}");

    // occurredAt without an offset violates the schema's date-time format.
    let mut ev = good.clone();
    ev["occurredAt"] = json!("2024-06-11T14:41:22");
    let (status, body) = router.post_json(&ev);
    assert_eq!(status, 400, "{body}");
    assert_eq!(detail(&body).0, "/occurredAt", "{body}");

    // detailUrl must not be null.
    let mut ev = good.clone();
    ev["detailUrl"] = Value::Null;
    let (status, body) = router.post_json(&ev);
    assert_eq!(status, 400, "{body}");
    assert_eq!(detail(&body).0, "/detailUrl", "{body}");

    // Missing eventType.
    let mut ev = good.clone();
    ev.as_object_mut().unwrap().remove("eventType");
    let (status, body) = router.post_json(&ev);
    assert_eq!(status, 400, "{body}");
    assert!(detail(&body).0.contains("eventType"), "{body}");

    // The per-type schema: a received event needs a NOMS identifier.
    let mut ev = good.clone();
    ev["personReference"]["identifiers"] = json!([{ "type": "CRN", "value": "X123456" }]);
    let (status, body) = router.post_json(&ev);
    assert_eq!(status, 400, "{body}");

    // A batch with one bad item is refused whole, naming the item.
    let mut bad = good.clone();
    bad["version"] = json!("one");
    let (status, body) = router.post_json(&json!([good.clone(), bad]));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["index"], 1, "{body}");

    // Unknown content type.
    let (status, body) = router.post("text/plain", b"hello", &[]);
    assert_eq!(status, 415, "{body}");
    assert!(detail(&body).1.contains("text/plain"), "{body}");

    // CloudEvent missing its source.
    let ce = json!({ "specversion": "1.0", "id": "x1", "type": RECEIVED, "data": good.clone() });
    let (status, body) = router.post(
        "application/cloudevents+json",
        ce.to_string().as_bytes(),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert!(detail(&body).0.contains("source"), "{body}");

    // Over the body limit.
    let big = vec![b' '; 8192];
    let (status, body) = router.post("application/json", &big, &[]);
    assert_eq!(status, 413, "{body}");
    assert!(detail(&body).1.contains("4096"), "{body}");

    assert_eq!(router.topic_len("events"), 0, "nothing bad may be appended");

    // And a good one still goes through.
    let (status, body) = router.post_json(&good);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["offset"], 0);
}

#[test]
fn an_event_type_without_a_route_is_refused_with_422() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        default_config().replace("match = [\"*\"]", "match = [\"prison-offender-events.*\"]");
    let router = Router::start(dir.path(), &config);
    let ev = hmpps(
        "probation-case.engagement.created",
        "A1234BC",
        "MDI",
        "2024-06-11T14:41:22Z",
    );
    let (status, body) = router.post_json(&ev);
    assert_eq!(status, 422, "{body}");
    assert!(
        detail(&body)
            .1
            .contains("probation-case.engagement.created"),
        "{body}"
    );
    assert_eq!(router.topic_len("events"), 0);
}

#[test]
fn cloudevents_structured_binary_and_batch_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &default_config());
    let data = hmpps(RECEIVED, "D2222DD", "MDI", "2024-06-11T14:41:22Z");
    let ce = json!({
        "specversion": "1.0", "id": "ce-1", "source": "urn:test", "type": RECEIVED,
        "time": "2024-06-11T14:41:22Z", "datacontenttype": "application/json", "data": data.clone(),
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    });
    let (status, body) = router.post(
        "application/cloudevents+json",
        ce.to_string().as_bytes(),
        &[],
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], "ce-1");

    let (status, body) = router.post(
        "application/json",
        data.to_string().as_bytes(),
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "ce-2"),
            ("ce-source", "urn:test"),
            ("ce-type", RELEASED),
        ],
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], "ce-2");

    let batch = json!([
        hmpps(RECEIVED, "E1", "MDI", "2024-06-11T14:41:22Z"),
        hmpps(RECEIVED, "E2", "MDI", "2024-06-11T14:41:22Z")
    ]);
    let (status, body) = router.post_json(&batch);
    assert_eq!(status, 202, "{body}");
    let accepted = body["accepted"]
        .as_array()
        .expect("batch answer lists events");
    assert_eq!(accepted.len(), 2);
    assert_eq!(
        (
            accepted[0]["offset"].as_u64(),
            accepted[1]["offset"].as_u64()
        ),
        (Some(2), Some(3))
    );

    let states = router.wait_for("prisoner-state", 4);
    let d = states
        .iter()
        .find(|s| s["data"]["nomsNumber"] == "D2222DD" && s["data"]["eventCount"] == 2)
        .expect("D2222DD released");
    assert_eq!(d["data"]["status"], "OUT");
    // The trace context of the CloudEvent is carried onto its outputs.
    assert!(
        states.iter().any(|s| s["traceparent"] == ce["traceparent"]),
        "{states:?}"
    );
}
