//! Hostile requests: malformed, truncated, oversized, deeply nested, not
//! UTF-8, the wrong content type, schema violations, broken CloudEvents,
//! unknown types, and a body that never finishes arriving. Each gets its
//! status and a reason, and no topic moves.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use serde_json::{Value, json};

fn reason(body: &Value) -> String {
    body["details"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn field(body: &Value) -> String {
    body["details"][0]["field"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The length of every topic, to show that none moved.
fn offsets(router: &Router) -> Vec<(String, u64)> {
    let (_, body) = router.get("/v1/topics");
    body["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                t["length"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// A change that makes an event violate its schema.
type Change = Box<dyn Fn(&mut Value)>;

fn ce(good: &Value) -> Value {
    json!({
        "specversion": "1.0", "id": "ce-1", "source": "urn:test",
        "type": RECEIVED, "time": "2024-06-11T14:41:22Z", "data": good,
    })
}

#[test]
fn hostile_requests_get_their_status_and_reason_and_nothing_moves() {
    let dir = tempfile::tempdir().unwrap();
    let config = default_config()
        .replace("match = [\"*\"]", "match = [\"prison-offender-events.*\"]")
        .replace(
            "max_body_bytes = 1048576",
            "max_body_bytes = 1048576\nmax_json_depth = 32\nrequest_timeout_ms = 500",
        );
    let router = Router::start(dir.path(), &config);
    let good = hmpps(RECEIVED, "A1234BC", "MDI", "2024-06-11T14:41:22+01:00");
    // One good event first, so that offsets are non-trivial.
    let (status, body) = router.post_json(&good);
    assert_eq!(status, 202, "{body}");
    router.wait_for("prisoner-state", 1);
    let before = offsets(&router);
    assert!(before.iter().any(|(t, n)| t == "events" && *n == 1));

    let json_ct = "application/json";
    let ce_ct = "application/cloudevents+json";
    let mut cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed json",
            json_ct,
            b"{\"eventType\" 1}".to_vec(),
            400,
            "invalid json",
        ),
        (
            "truncated json",
            json_ct,
            good.to_string().as_bytes()[..40].to_vec(),
            400,
            "eof",
        ),
        ("empty body", json_ct, Vec::new(), 400, "invalid json"),
        ("10 MiB body", json_ct, vec![b' '; 10 << 20], 413, "1048576"),
        (
            "nesting bomb",
            json_ct,
            "[".repeat(1 << 20).into_bytes(),
            400,
            "max_json_depth",
        ),
        (
            "nesting bomb in a cloudevent",
            ce_ct,
            format!("{{\"data\":{}}}", "{\"a\":".repeat(100)).into_bytes(),
            400,
            "deeper than 32",
        ),
        (
            "wrong content type",
            "text/plain",
            good.to_string().into_bytes(),
            415,
            "text/plain",
        ),
        (
            "no content type",
            "",
            good.to_string().into_bytes(),
            415,
            "content-type header required",
        ),
    ];
    // Invalid UTF-8 inside a string value.
    let mut not_utf8 = good.to_string().into_bytes();
    let at = not_utf8.windows(3).position(|w| w == b"MDI").unwrap();
    not_utf8[at] = 0xff;
    cases.push(("invalid utf-8", json_ct, not_utf8, 400, "json"));

    for (what, ct, body, want, says) in &cases {
        let (status, answer) = router.post(ct, body, &[]);
        assert_eq!(status, *want, "{what}: {answer}");
        assert!(
            reason(&answer)
                .to_lowercase()
                .contains(&says.to_lowercase()),
            "{what}: reason should mention {says:?}: {answer}"
        );
    }

    // Each schema violation, named by its JSON pointer.
    let violations: Vec<(&str, Change, &str)> = vec![
        (
            "version not an integer",
            Box::new(|e| e["version"] = json!("one")),
            "/version",
        ),
        (
            "occurredAt without offset",
            Box::new(|e| e["occurredAt"] = json!("2024-06-11T14:41:22")),
            "/occurredAt",
        ),
        (
            "occurredAt not a date",
            Box::new(|e| e["occurredAt"] = json!("yesterday")),
            "/occurredAt",
        ),
        (
            "detailUrl null",
            Box::new(|e| e["detailUrl"] = Value::Null),
            "/detailUrl",
        ),
        (
            "eventType missing",
            Box::new(|e| {
                e.as_object_mut().unwrap().remove("eventType");
            }),
            "eventType",
        ),
        (
            "identifiers not a list",
            Box::new(|e| e["personReference"]["identifiers"] = json!("A1")),
            "/personReference/identifiers",
        ),
        (
            "received without NOMS",
            Box::new(|e| {
                e["personReference"]["identifiers"] = json!([{"type": "CRN", "value": "X1"}])
            }),
            "/personReference",
        ),
    ];
    for (what, change, pointer) in &violations {
        let mut ev = good.clone();
        change(&mut ev);
        let (status, answer) = router.post_json(&ev);
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(field(&answer).contains(pointer), "{what}: {answer}");
    }

    // Invalid CloudEvents.
    let mut no_spec = ce(&good);
    no_spec.as_object_mut().unwrap().remove("specversion");
    let mut bad_time = ce(&good);
    bad_time["time"] = json!("11 June 2024");
    let mut old_spec = ce(&good);
    old_spec["specversion"] = json!("0.3");
    for (what, ev, f) in [
        ("missing specversion", no_spec, "specversion"),
        ("bad time", bad_time, "time"),
        ("specversion 0.3", old_spec, "specversion"),
    ] {
        let (status, answer) = router.post(ce_ct, ev.to_string().as_bytes(), &[]);
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(field(&answer).contains(f), "{what}: {answer}");
    }
    // Binary mode with a bad time header.
    let (status, answer) = router.post(
        json_ct,
        good.to_string().as_bytes(),
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "urn:test"),
            ("ce-type", RECEIVED),
            ("ce-time", "not-a-time"),
        ],
    );
    assert_eq!(status, 400, "{answer}");
    assert!(field(&answer).contains("time"), "{answer}");

    // An event type no route takes.
    let unknown = hmpps(
        "probation-case.engagement.created",
        "A1234BC",
        "MDI",
        "2024-06-11T14:41:22Z",
    );
    let (status, answer) = router.post_json(&unknown);
    assert_eq!(status, 422, "{answer}");
    assert!(reason(&answer).contains("probation-case.engagement.created"));

    // A body that never finishes arriving: 408 once request_timeout_ms passed.
    let addr = router.base.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"eventType\":"
    )
    .unwrap();
    slow.flush().unwrap();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    while !answer.contains("}]") {
        let n = slow.read(&mut buf).expect("an answer before the deadline");
        assert!(n > 0, "connection closed without an answer: {answer}");
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout_ms"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "the rest of the body is never read, so the connection closes: {answer}"
    );

    // Headers trickled in and never finished: after request_timeout_ms the
    // router closes the connection rather than holding it open.
    let mut trickle = TcpStream::connect(&addr).unwrap();
    write!(
        trickle,
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-"
    )
    .unwrap();
    trickle.flush().unwrap();
    trickle.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut rest = Vec::new();
    let closed = trickle.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the router must close a connection whose headers never finish: {closed:?}"
    );

    assert_eq!(offsets(&router), before, "no topic may move");
    // And the router still serves.
    let mut next = good.clone();
    next["additionalInformation"]["prisonId"] = json!("LEI");
    let (status, body) = router.post_json(&next);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["offset"], 1);
}
