use std::path::Path;

use serde_json::json;

use super::*;

const CASE: &str = r#"{
  "description": "one received event",
  "config": {"topic": "t"},
  "events": [
    {"eventType": "prison-offender-events.prisoner.received", "version": 1,
     "occurredAt": "2024-06-11T14:41:22+01:00",
     "personReference": {"identifiers": [{"type": "NOMS", "value": "A1234BC"}]}},
    {"specversion": "1.0", "id": "ce-1", "source": "urn:x", "type": "a.b", "data": {"k": 1}}
  ],
  "expect": [
    {"outputs": [{"topic": "t", "type": "x", "version": "1", "key": "A1234BC", "data": {"a": 1}}]},
    {"error": {"kind": "bad-event", "message": "nope"}}
  ]
}"#;

#[test]
fn a_case_file_decodes_like_the_http_source() {
    let case = load_case(Path::new("samples/first.json"), CASE).unwrap();
    assert_eq!(case.name, "first");
    assert_eq!(case.config.as_deref(), Some(r#"{"topic":"t"}"#));
    assert_eq!(case.events.len(), 2);
    let hmpps = &case.events[0];
    assert_eq!(hmpps.id, "first/1", "sample HMPPS ids are reproducible");
    assert_eq!(hmpps.key.as_deref(), Some("A1234BC"));
    assert_eq!(hmpps.time, "2024-06-11T14:41:22+01:00");
    assert_eq!(hmpps.source, SAMPLE_SOURCE);
    assert!(hmpps.data.contains("\"eventType\""));
    let cloud = &case.events[1];
    assert_eq!(
        (cloud.id.as_str(), cloud.event_type.as_str()),
        ("ce-1", "a.b")
    );
    // "version": "1" is the default, so it is dropped like in actual outputs.
    assert_eq!(
        case.expect.as_ref().unwrap()[0],
        Expectation::Outputs(vec![
            json!({"topic": "t", "type": "x", "key": "A1234BC", "data": {"a": 1}})
        ])
    );
    assert_eq!(
        case.expect.as_ref().unwrap()[1],
        Expectation::Error {
            kind: "bad-event".into(),
            message: Some("nope".into())
        }
    );
}

#[test]
fn mistakes_in_case_files_name_the_file_and_the_place() {
    let f = Path::new("samples/bad.json");
    let e = load_case(f, r#"{"events": [], "expekt": []}"#).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("samples/bad.json: unknown field `expekt`"),
        "{e}"
    );
    let e = load_case(f, r#"{"events": [{"eventType": ""}]}"#).unwrap_err();
    assert!(e.to_string().contains("events[0]: /eventType"), "{e}");
    let two = r#"{"events": [{"specversion": "1.0", "id": "1", "source": "s", "type": "t"}],
                 "expect": [[], []]}"#;
    let e = load_case(f, two).unwrap_err();
    assert!(
        e.to_string().contains("expect has 2 entries for 1 events"),
        "{e}"
    );
    let bad_out = r#"{"events": [{"specversion": "1.0", "id": "1", "source": "s", "type": "t"}],
                 "expect": [[{"topic": "t", "data": 1}]]}"#;
    let e = load_case(f, bad_out).unwrap_err();
    assert!(
        e.to_string()
            .contains("expect[0]: outputs[0]: missing field `type`"),
        "{e}"
    );
}

#[test]
fn canonical_outputs_omit_router_defaults() {
    let ev = Event {
        id: String::new(),
        event_type: "x".into(),
        version: "2".into(),
        source: String::new(),
        key: None,
        time: String::new(),
        content_type: "application/json".into(),
        data: r#"{"b":1,"a":[true]}"#.into(),
        attributes: [("domain".to_string(), "d".to_string())].into(),
        traceparent: None,
    };
    assert_eq!(
        canonical_output("t", &ev),
        json!({"topic": "t", "type": "x", "version": "2", "attributes": {"domain": "d"},
               "data": {"a": [true], "b": 1}})
    );
    let text = Event {
        content_type: "text/plain".into(),
        data: "hi".into(),
        ..ev
    };
    assert_eq!(canonical_output("t", &text)["data"], json!("hi"));
    assert_eq!(
        canonical_output("t", &text)["contentType"],
        json!("text/plain")
    );
}

#[test]
fn loose_parts_make_a_case() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"specversion\": \"1.0\", \"id\": \"1\", \"source\": \"s\", \"type\": \"t\", \"data\": {}}\n\n\
         {\"eventType\": \"a.b\", \"version\": 1, \"occurredAt\": \"2024-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let expect = dir.path().join("expect.json");
    std::fs::write(
        &expect,
        r#"{"expect": [[], {"error": "trap"}], "expect_state": {"k": 1}}"#,
    )
    .unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, r#"{"k": {"n": 0}}"#).unwrap();
    let case = case_from_parts(&events, Some(&expect), Some(&state)).unwrap();
    assert_eq!(case.events.len(), 2);
    assert_eq!(case.events[1].id, "events/2");
    assert_eq!(case.state["k"], json!({"n": 0}));
    assert_eq!(case.expect_state.unwrap()["k"], json!(1));
    assert!(!is_case_path(&events));
    let case_file = dir.path().join("c.json");
    std::fs::write(&case_file, CASE).unwrap();
    assert!(is_case_path(&case_file));
}
