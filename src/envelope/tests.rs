//! Unit tests of envelope decoding and encoding.
fn decode_vec(
    h: &HeaderMap,
    body: &[u8],
    d: &IngestDefaults,
) -> Result<Vec<Incoming>, EnvelopeError> {
    decode_http(h, body, d).map(|d| d.events)
}

use super::*;
use serde_json::json;

const TP: &str = "00-tp";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        h.append(name, v.parse().unwrap());
    }
    h
}

fn defaults() -> IngestDefaults {
    let key_rules = vec!["identifier:NOMS".parse().unwrap()];
    IngestDefaults {
        key_rules,
        ..Default::default()
    }
}

fn decode(ct: &str, body: &str) -> Result<Vec<Incoming>, EnvelopeError> {
    let h = headers(&[("content-type", ct)]);
    decode_vec(&h, body.as_bytes(), &defaults())
}

fn decode_one(ct: &str, body: &Value) -> Event {
    decode(ct, &body.to_string()).unwrap().remove(0).event
}

/// Asserts the error's status, batch index and field; returns its message.
fn fails(ct: &str, body: &str, status: u16, index: Option<usize>, field: &str) -> String {
    let e = decode(ct, body).unwrap_err();
    let got = (e.status(), e.index, e.field.as_str());
    assert_eq!(got, (status, index, field), "{e}");
    e.to_string()
}

/// One line per event, so a test states every field at a glance.
fn brief(ev: &Event) -> String {
    let attrs: Vec<_> = ev
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let (key, tp) = (ev.key.as_deref(), ev.traceparent.as_deref());
    let (id, ty, v, src) = (&ev.id, &ev.event_type, &ev.version, &ev.source);
    let (key, tp, attrs) = (key.unwrap_or("-"), tp.unwrap_or("-"), attrs.join(","));
    format!("{id}|{ty}|{v}|{src}|key={key}|{}|tp={tp}|{attrs}", ev.time)
}

fn hmpps(ty: &str) -> Value {
    json!({"eventType": ty, "version": 2, "occurredAt": "2024-06-11T14:41:22+01:00",
           "personReference": {"identifiers": [{"type": "CRN", "value": "X1"},
                                               {"type": "NOMS", "value": "A1234BC"}]}})
}

fn cloudevent() -> Value {
    json!({"specversion": "1.0", "id": "e-1", "source": "urn:prisons", "type": "a.b",
           "time": "2024-06-11T14:41:22+01:00", "datacontenttype": "application/x+json",
           "subject": "subj", "tenant": "north", "priority": 3, "urgent": true,
           "data": hmpps("a.b")})
}

#[test]
fn hmpps_single_event_keeps_body_bytes() {
    let body = "{ \"eventType\": \"a.b\", \"version\": 1, \"occurredAt\": \"2024-06-11Z\",
        \"personReference\": {\"identifiers\": [{\"type\": \"NOMS\", \"value\": \"A1\"}]} }";
    let ct = "Application/JSON; charset=utf-8";
    let h = headers(&[("content-type", ct), ("traceparent", TP)]);
    let out = decode_vec(&h, body.as_bytes(), &defaults()).unwrap();
    assert_eq!(
        (out.len(), out[0].envelope, out[0].index),
        (1, Envelope::Hmpps, 0)
    );
    let ev = &out[0].event;
    let expected = "|a.b|1|urn:switchyard:http|key=A1|2024-06-11Z|tp=00-tp|eventType=a.b";
    assert_eq!(brief(ev), expected);
    assert_eq!((ev.data.as_str(), ev.content_type.as_str()), (body, JSON));
    assert_eq!(out[0].payload["version"], 1);
}

#[test]
fn hmpps_batches_as_array_or_events_object() {
    let items = json!([hmpps("a"), hmpps("b")]);
    for body in [items.clone(), json!({"events": items})] {
        let out = decode(JSON, &body.to_string()).unwrap();
        assert_eq!(out.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1]);
        let ev = &out[1].event;
        assert!(brief(ev).starts_with("|b|2|urn:switchyard:http|key=A1234BC|"));
        assert_eq!(serde_json::from_str::<Value>(&ev.data).unwrap(), hmpps("b"));
    }
    let mut ev = hmpps("a");
    ev["version"] = json!(3.0);
    assert_eq!(decode_one(JSON, &ev).version, "3");
}

#[test]
fn batch_items_and_cloudevent_data_keep_the_producers_bytes() {
    // Keys out of sorted order, spacing, an escape: none of it may change.
    let a = r#"{ "version": 2, "eventType": "a", "occurredAt": "2024-06-11Z",
        "note": "caf\u00e9", "personReference": {"identifiers": [{"value": "A1", "type": "NOMS"}]} }"#;
    let b = r#"{"occurredAt":"2024-06-12Z","eventType":"b","version":1}"#;
    for body in [
        format!("[ {a} ,\n {b} ]"),
        format!(r#"{{ "producer": "x", "events": [{a}, {b}] }}"#),
    ] {
        let out = decode(JSON, &body).unwrap();
        assert_eq!(out[0].event.data, a);
        assert_eq!(out[1].event.data, b);
        assert_eq!(out[0].event.key.as_deref(), Some("A1"));
    }
    // "events" given twice: the parsed value's reading (the last) holds, and
    // the data is written out from it.
    let twice = format!(r#"{{"events": [{a}], "events": [{b}, {b}]}}"#);
    let out = decode(JSON, &twice).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[1].event.data,
        json!({"occurredAt":"2024-06-12Z","eventType":"b","version":1}).to_string()
    );

    let ce = |data: &str| {
        format!(r#"{{"specversion":"1.0","id":"e-1","source":"s","type":"t", "data" : {data} }}"#)
    };
    let ev = &decode(CE_SINGLE, &ce(a)).unwrap()[0].event;
    assert_eq!(ev.data, a);
    let batch = format!("[{}, {}]", ce(b), ce("[1, 2.50, \"x\"]"));
    let out = decode(CE_BATCH, &batch).unwrap();
    assert_eq!(out[0].event.data, b);
    assert_eq!(out[1].event.data, "[1, 2.50, \"x\"]");
    // No data, or null: the text "null", as before.
    let none = r#"{"specversion":"1.0","id":"e-1","source":"s","type":"t"}"#;
    assert_eq!(decode(CE_SINGLE, none).unwrap()[0].event.data, "null");
    assert_eq!(
        decode(CE_SINGLE, &ce("null")).unwrap()[0].event.data,
        "null"
    );
}

#[test]
fn hmpps_bad_bodies_name_the_item_and_field() {
    for body in ["[]", r#"{"events": []}"#] {
        assert_eq!(fails(JSON, body, 400, None, ""), "body: batch is empty");
    }
    fails(JSON, r#"{"events": 1}"#, 400, None, "/events");
    fails(JSON, "\"x\"", 400, None, "");
    fails(JSON, &json!([hmpps("a"), 3]).to_string(), 400, Some(1), "");
    for (name, value) in [
        ("eventType", json!(null)),
        ("eventType", json!("")),
        ("version", json!("1")),
        ("version", json!(1.5)),
        ("occurredAt", json!(17)),
    ] {
        let mut ev = hmpps("a");
        ev[name] = value;
        let body = json!([hmpps("a"), ev]).to_string();
        fails(JSON, &body, 400, Some(1), &format!("/{name}"));
    }
    let mut ev = hmpps("a");
    ev.as_object_mut().unwrap().remove("occurredAt");
    let msg = fails(JSON, &ev.to_string(), 400, None, "/occurredAt");
    assert_eq!(msg, "/occurredAt: must be a string");
}

#[test]
fn bad_json_reports_line_and_column() {
    for ct in [JSON, CE_SINGLE, CE_BATCH] {
        let msg = fails(ct, "{\n  \"eventType\": }", 400, None, "");
        assert_eq!(
            msg,
            "body: invalid json: expected value at line 2 column 16"
        );
    }
}

#[test]
fn unsupported_content_types_are_415() {
    let e = decode_vec(&HeaderMap::new(), b"{}", &defaults()).unwrap_err();
    assert_eq!(e.to_string(), "content-type: content-type header required");
    assert_eq!(e.status(), 415);
    let msg = fails("text/plain", "{}", 415, None, "content-type");
    assert!(
        msg.contains("`text/plain`") && msg.contains(CE_BATCH),
        "{msg}"
    );
    let h = headers(&[("content-type", "text/plain"), ("ce-specversion", "1.0")]);
    let e = decode_vec(&h, b"hi", &defaults()).unwrap_err();
    assert!(e.status() == 415 && e.reason.contains("binary-mode"), "{e}");
    let mut xml = cloudevent();
    xml["datacontenttype"] = json!("text/xml");
    fails(CE_SINGLE, &xml.to_string(), 415, None, "/datacontenttype");
    let mut b64 = cloudevent();
    b64["data_base64"] = json!("aGk=");
    let body = json!([cloudevent(), b64]).to_string();
    fails(CE_BATCH, &body, 415, Some(1), "/data_base64");
}

#[test]
fn cloudevent_structured_maps_all_attributes() {
    let h = headers(&[("content-type", CE_SINGLE), ("traceparent", TP)]);
    let out = decode_vec(&h, cloudevent().to_string().as_bytes(), &defaults()).unwrap();
    assert_eq!(
        (out[0].envelope, &out[0].payload),
        (Envelope::CloudEvent, &hmpps("a.b"))
    );
    let ev = &out[0].event;
    let expected = "e-1|a.b|2|urn:prisons|key=A1234BC|2024-06-11T14:41:22+01:00|tp=00-tp|\
                    priority=3,subject=subj,tenant=north,urgent=true";
    assert_eq!(brief(ev), expected);
    assert_eq!(
        serde_json::from_str::<Value>(&ev.data).unwrap(),
        hmpps("a.b")
    );
}

#[test]
fn cloudevent_key_version_and_trace_precedence() {
    let mut ce = cloudevent();
    ce["partitionkey"] = json!("pk");
    ce["dataversion"] = json!(7);
    ce["traceparent"] = json!("00-ext");
    let h = headers(&[("content-type", CE_SINGLE), ("traceparent", TP)]);
    let ev = &decode_vec(&h, ce.to_string().as_bytes(), &defaults()).unwrap()[0].event;
    assert!(
        brief(ev).starts_with("e-1|a.b|7|urn:prisons|key=pk|"),
        "{}",
        brief(ev)
    );
    assert!(
        brief(ev).contains("|tp=00-ext|priority=3,"),
        "{}",
        brief(ev)
    );
    let ce = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "subject": "x"});
    let ev = decode_one(CE_SINGLE, &ce);
    assert!(brief(&ev).starts_with("1|t|1|s|key=x|"), "{}", brief(&ev));
    assert_eq!(ev.data, "null");
    assert!(chrono::DateTime::parse_from_rfc3339(&ev.time).is_ok());
}

#[test]
fn cloudevent_batch_and_missing_fields() {
    let out = decode(CE_BATCH, &json!([cloudevent(), cloudevent()]).to_string()).unwrap();
    assert_eq!(out.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1]);
    let mut bad = cloudevent();
    bad.as_object_mut().unwrap().remove("source");
    let body = json!([cloudevent(), bad]).to_string();
    let msg = fails(CE_BATCH, &body, 400, Some(1), "/source");
    assert_eq!(msg, "item 1, /source: required, a non-empty string");
    for (name, value) in [
        ("specversion", json!("0.3")),
        ("type", json!("")),
        ("id", json!(5)),
        ("time", json!("2024-06-11T14:41:22")),
        ("tenant", json!({"nested": 1})),
    ] {
        let mut ce = cloudevent();
        ce[name] = value;
        fails(CE_SINGLE, &ce.to_string(), 400, None, &format!("/{name}"));
    }
    fails(CE_BATCH, "[]", 400, None, "");
    fails(CE_BATCH, "{}", 400, None, "");
    fails(CE_SINGLE, "[]", 400, None, "");
}

#[test]
fn cloudevent_binary_mode_reads_headers() {
    let body = r#"{"version": 4, "additionalInformation": {"nomsNumber": "A9"}}"#;
    let mut pairs = vec![
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "b-1"),
        ("ce-source", "urn:src"),
        ("ce-type", "a.b"),
        ("ce-time", "2024-06-11T14:41:22Z"),
        ("ce-subject", "caf%C3%A9%zz"),
        ("ce-tenant", "north"),
        ("traceparent", TP),
    ];
    let rules = vec![KeyRule::Pointer("/additionalInformation/nomsNumber".into())];
    let d = IngestDefaults {
        key_rules: rules,
        ..defaults()
    };
    let decode = |pairs: &[_], body: &str| decode_vec(&headers(pairs), body.as_bytes(), &d);
    let out = decode(&pairs, body).unwrap();
    assert_eq!(out[0].envelope, Envelope::CloudEvent);
    let expected = "b-1|a.b|4|urn:src|key=A9|2024-06-11T14:41:22Z|tp=00-tp|\
                    subject=café%zz,tenant=north";
    assert_eq!(
        (brief(&out[0].event), out[0].event.data.as_str()),
        (expected.into(), body)
    );
    pairs.extend([("ce-partitionkey", "pk"), ("ce-traceparent", "00-ce")]);
    let ev = decode(&pairs, body).unwrap().remove(0).event;
    assert!(brief(&ev).contains("|key=pk|2024-06-11T14:41:22Z|tp=00-ce|"));
    let e = decode(&pairs, "{oops").unwrap_err();
    assert!(e.reason.contains("line 1 column 2"), "{e}");
    pairs.retain(|(k, _)| *k != "ce-type");
    let e = decode(&pairs, body).unwrap_err();
    assert_eq!((e.status(), e.field.as_str()), (400, "ce-type"));
    let pairs = [
        ("content-type", "application/json"),
        ("ce-specversion", "0.3"),
    ];
    assert_eq!(decode(&pairs, "{}").unwrap_err().field, "ce-specversion");
}

#[test]
fn key_rules_parse_and_apply_in_order() {
    let rule = |s: &str| s.parse::<KeyRule>();
    assert_eq!(rule("/a/b"), Ok(KeyRule::Pointer("/a/b".into())));
    assert_eq!(
        rule("identifier:CRN"),
        Ok(KeyRule::Identifier("CRN".into()))
    );
    for bad in ["a/b", "", "identifier:", "/a~2", "crn"] {
        let e = rule(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("`{bad}`")), "{e}");
    }
    for text in ["/a~1b", "identifier:NOMS"] {
        assert_eq!(rule(text).unwrap().to_string(), text);
    }
    let payload = json!({"n": 42, "e": "", "a/b": "slash",
                         "personReference": {"identifiers": [{"type": "NOMS", "value": "A1"}]}});
    let key = |texts: &[&str]| {
        let rules: Vec<KeyRule> = texts.iter().map(|t| rule(t).unwrap()).collect();
        key_for(&payload, &rules)
    };
    assert_eq!(key(&["/missing", "/n"]).as_deref(), Some("42"));
    assert_eq!(key(&["/e", "identifier:NOMS"]).as_deref(), Some("A1"));
    assert_eq!(key(&["/a~1b"]).as_deref(), Some("slash"));
    assert_eq!(key(&["identifier:CRN", "/personReference"]), None);
    assert_eq!(key(&[]), None);
}

#[test]
fn cloudevent_json_round_trips() {
    let mut ce = cloudevent();
    ce["partitionkey"] = json!("pk");
    ce["traceparent"] = json!(TP);
    let first = decode_one(CE_SINGLE, &ce);
    let encoded = to_cloudevent_json(&first);
    assert_eq!(
        [&encoded["subject"], &encoded["partitionkey"]],
        ["subj", "pk"]
    );
    assert_eq!(encoded["data"], hmpps("a.b"));
    assert_eq!(decode_one(CE_SINGLE, &encoded), first);
}

#[test]
fn hmpps_event_encodes_as_cloudevent() {
    let mut ev = decode_one(JSON, &hmpps("a.b"));
    ev.id = "id-1".into();
    ev.attributes.insert("id".into(), "clash".into());
    let out = to_cloudevent_json(&ev);
    assert_eq!(
        [&out["id"], &out["dataversion"], &out["eventType"]],
        ["id-1", "2", "a.b"]
    );
    assert_eq!(
        [&out["partitionkey"], &out["subject"]],
        ["A1234BC", "A1234BC"]
    );
    assert_eq!(
        (&out["data"], out.get("traceparent")),
        (&hmpps("a.b"), None)
    );
    ev.data = "not json".into();
    assert_eq!(to_cloudevent_json(&ev)["data"], "not json");
}

/// The stored text of a batch item is byte for byte what `Display` wrote
/// before: escapes, non-ASCII, numbers and nesting alike.
#[test]
fn json_text_writes_the_same_bytes_as_display() {
    let v: Value = serde_json::from_str(
        r#"{"b":"quote \" backslash \\ tab \t nl \n ctl \u0001 é 😀 </x>","a":[1,-2,3.5,1e300,true,null,{}],"n":{"m":[[]],"k":""}}"#,
    )
    .unwrap();
    assert_eq!(super::json_text(&v), v.to_string());
    for item in v.as_object().unwrap().values() {
        assert_eq!(super::json_text(item), item.to_string());
    }
}
