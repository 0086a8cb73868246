//! What an SQS message holds, unwrapped: the SNS notification envelope (when
//! the subscription does not use raw delivery), its message attributes of
//! type String, Number or Binary, and the event inside, handed to the same
//! decoder HTTP ingest uses by presenting it as a request (`content-type`,
//! `ce-*` and `traceparent` headers plus the body).

use std::collections::BTreeMap;

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

const SNS_NOTIFICATION: &str = "Notification";

/// A message attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// `String`, `Number` (kept as its text) and custom `String.*` types.
    Text(String),
    Binary(Vec<u8>),
}

impl AttrValue {
    fn text(&self) -> Option<String> {
        match self {
            AttrValue::Text(t) => Some(t.clone()),
            AttrValue::Binary(b) => String::from_utf8(b.clone()).ok(),
        }
    }
}

/// Why a message cannot become an event: the message is bad, not the moment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct MessageError {
    /// `body`, `/Message`, an attribute name, or a field of the event.
    pub field: String,
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> MessageError {
    MessageError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// The message the producer sent, whichever way it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwrapped {
    pub body: String,
    pub attributes: BTreeMap<String, AttrValue>,
    /// The SNS `MessageId` when it came through SNS: the same for every copy
    /// SNS delivers of one publish, so it makes a stable event id.
    pub sns_message_id: Option<String>,
    pub topic_arn: Option<String>,
}

/// Unwraps an SNS notification envelope, or takes the message as it is
/// (raw delivery, or sent to the queue directly).
pub fn unwrap(
    body: &str,
    attributes: BTreeMap<String, AttrValue>,
) -> Result<Unwrapped, MessageError> {
    let raw = || Unwrapped {
        body: body.to_string(),
        attributes: attributes.clone(),
        sns_message_id: None,
        topic_arn: None,
    };
    let Ok(Value::Object(env)) = serde_json::from_str::<Value>(body) else {
        return Ok(raw());
    };
    let (Some(Value::String(kind)), Some(Value::String(arn))) =
        (env.get("Type"), env.get("TopicArn"))
    else {
        return Ok(raw());
    };
    if kind != SNS_NOTIFICATION {
        return Err(bad("/Type", format!("an sns {kind} message, not an event")));
    }
    let message = match env.get("Message") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(bad("/Message", "sns notification without a message string")),
    };
    let mut attrs = BTreeMap::new();
    if let Some(Value::Object(map)) = env.get("MessageAttributes") {
        for (name, a) in map {
            let ty = a.get("Type").and_then(Value::as_str).unwrap_or("String");
            let value = a.get("Value").and_then(Value::as_str).unwrap_or_default();
            let field = format!("/MessageAttributes/{name}");
            let v = if ty.starts_with("Binary") {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map_err(|e| bad(&field, format!("binary value is not base64: {e}")))?;
                AttrValue::Binary(bytes)
            } else {
                AttrValue::Text(value.to_string())
            };
            attrs.insert(name.clone(), v);
        }
    }
    Ok(Unwrapped {
        body: message,
        attributes: attrs,
        sns_message_id: env
            .get("MessageId")
            .and_then(Value::as_str)
            .map(str::to_string),
        topic_arn: Some(arn.clone()),
    })
}

/// The message as an HTTP request would carry it: CloudEvents binary mode
/// from `ce-*` / `ce_*` attributes, structured mode when the body is a
/// CloudEvent (or an array of them), otherwise an HMPPS domain event.
pub fn as_request(u: &Unwrapped) -> Result<HeaderMap, MessageError> {
    let mut headers = HeaderMap::new();
    let mut binary_mode = false;
    for (name, value) in &u.attributes {
        let lower = name.to_ascii_lowercase();
        let header = if let Some(attr) = lower.strip_prefix("ce-").or(lower.strip_prefix("ce_")) {
            binary_mode = true;
            format!("ce-{attr}")
        } else if lower == "traceparent" || lower == "tracestate" {
            lower
        } else {
            continue;
        };
        let text = value
            .text()
            .ok_or_else(|| bad(name, "binary value is not utf-8 text"))?;
        let hname = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| bad(name, "not usable as a cloudevents attribute name"))?;
        let hvalue = HeaderValue::from_str(&percent_encode(&text))
            .map_err(|_| bad(name, "value has control characters"))?;
        headers.insert(hname, hvalue);
    }
    let explicit = u
        .attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type") || k.as_str() == "contentType")
        .and_then(|(_, v)| v.text());
    let media = match explicit {
        Some(ct) => ct,
        None if binary_mode => "application/json".to_string(),
        None => match serde_json::from_str::<Value>(&u.body) {
            Ok(Value::Object(o)) if o.contains_key("specversion") => {
                "application/cloudevents+json".to_string()
            }
            Ok(Value::Array(items))
                if items
                    .first()
                    .is_some_and(|i| i.get("specversion").is_some()) =>
            {
                "application/cloudevents-batch+json".to_string()
            }
            _ => "application/json".to_string(),
        },
    };
    let ct = HeaderValue::from_str(&media).map_err(|_| bad("content-type", "not valid text"))?;
    headers.insert(http::header::CONTENT_TYPE, ct);
    Ok(headers)
}

/// Percent-encodes what a header value cannot hold (the CloudEvents HTTP
/// binding's rule, which the decoder reverses): `%`, controls, non-ASCII.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'%' || !(b == b' ' || b.is_ascii_graphic()) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(pairs: &[(&str, &str)]) -> BTreeMap<String, AttrValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttrValue::Text(v.to_string())))
            .collect()
    }

    fn envelope(message: &str) -> String {
        json!({
            "Type": "Notification", "MessageId": "sns-1",
            "TopicArn": "arn:aws:sns:eu-west-2:000000000000:hmpps-domain-events",
            "Message": message, "Timestamp": "2024-06-11T13:41:22.000Z",
            "MessageAttributes": {
                "eventType": {"Type": "String", "Value": "a.b"},
                "n": {"Type": "Number", "Value": "42"},
                "ce_id": {"Type": "Binary", "Value": "Y2UtMQ=="}
            }
        })
        .to_string()
    }

    #[test]
    fn sns_envelopes_are_unwrapped_with_all_attribute_types() {
        let u = unwrap(
            &envelope(r#"{"eventType":"a.b"}"#),
            text(&[("ignored", "x")]),
        )
        .unwrap();
        assert_eq!(u.body, r#"{"eventType":"a.b"}"#);
        assert_eq!(u.sns_message_id.as_deref(), Some("sns-1"));
        assert_eq!(u.attributes["n"], AttrValue::Text("42".into()));
        assert_eq!(u.attributes["ce_id"], AttrValue::Binary(b"ce-1".to_vec()));
        assert!(!u.attributes.contains_key("ignored"));
    }

    #[test]
    fn raw_messages_and_odd_envelopes() {
        let u = unwrap(r#"{"eventType":"a.b"}"#, text(&[("eventType", "a.b")])).unwrap();
        assert_eq!((u.sns_message_id, u.attributes.len()), (None, 1));
        let u = unwrap("not json", BTreeMap::new()).unwrap();
        assert_eq!(u.body, "not json");
        let confirm = json!({"Type": "SubscriptionConfirmation", "TopicArn": "arn:x"}).to_string();
        let e = unwrap(&confirm, BTreeMap::new()).unwrap_err();
        assert_eq!(e.field, "/Type");
        let bad_b64 = envelope("{}").replace("Y2UtMQ==", "***");
        assert!(
            unwrap(&bad_b64, BTreeMap::new())
                .unwrap_err()
                .field
                .contains("ce_id")
        );
    }

    #[test]
    fn requests_choose_the_cloudevents_mode() {
        let ct = |u: &Unwrapped| as_request(u).unwrap()[http::header::CONTENT_TYPE].clone();
        let mut u = unwrap(r#"{"specversion":"1.0"}"#, BTreeMap::new()).unwrap();
        assert_eq!(ct(&u), "application/cloudevents+json");
        u.body = r#"[{"specversion":"1.0"}]"#.into();
        assert_eq!(ct(&u), "application/cloudevents-batch+json");
        u.body = r#"{"eventType":"a"}"#.into();
        assert_eq!(ct(&u), "application/json");
        u.attributes = text(&[
            ("ce_specversion", "1.0"),
            ("ce-subject", "café 100%"),
            ("traceparent", "00-t"),
        ]);
        let h = as_request(&u).unwrap();
        assert_eq!(h[http::header::CONTENT_TYPE], "application/json");
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-subject"], "caf%C3%A9 100%25");
        assert_eq!(h["traceparent"], "00-t");
        u.attributes
            .insert("ce-id".into(), AttrValue::Binary(vec![0xff]));
        assert_eq!(as_request(&u).unwrap_err().field, "ce-id");
    }
}
