//! Turning log records into SNS/SQS messages, and packing them into batch
//! calls within the AWS limits (10 entries, 256 KiB per call and per message).

use std::collections::BTreeMap;
use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::config::{MAX_BATCH_ENTRIES, MessageFormat};
use crate::envelope::to_cloudevent_json;
use crate::event::Event;

/// Largest message and largest batch call SNS and SQS accept: 256 KiB,
/// counting the body and every attribute's name, type and value.
pub const MAX_MESSAGE_BYTES: usize = 262_144;
/// Longest `MessageGroupId` (an AWS limit).
const MAX_GROUP_ID: usize = 128;
/// The message attribute subscribers filter on.
pub const ATTR_EVENT_TYPE: &str = "eventType";
/// W3C trace context, when the event carries one.
pub const ATTR_TRACEPARENT: &str = "traceparent";

/// How a sink encodes its messages.
#[derive(Debug, Clone)]
pub struct Encoding {
    pub format: MessageFormat,
    /// Static String attributes added to every message.
    pub attributes: BTreeMap<String, String>,
    /// FIFO destination: every message gets a group id and a deduplication id.
    pub fifo: bool,
}

/// One message, ready for `PublishBatch` / `SendMessageBatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The output event's id: stable across replays, so it is the
    /// deduplication id on FIFO destinations.
    pub event_id: String,
    pub body: String,
    /// String message attributes.
    pub attributes: Vec<(String, String)>,
    /// FIFO only: the event's key (ordering), made a valid group id.
    pub group_id: Option<String>,
    /// FIFO only: derived from the event id.
    pub dedup_id: Option<String>,
}

impl Outgoing {
    /// Size as SNS/SQS count it against the 256 KiB limits.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + "String".len() + v.len())
                .sum::<usize>()
    }
}

/// Encodes one log record; `Err` with the reason when it cannot be sent at
/// all (too large), which the caller dead-letters.
pub fn encode(ev: &Event, log_topic: &str, enc: &Encoding) -> Result<Outgoing, String> {
    let body = match enc.format {
        MessageFormat::Cloudevent => crate::envelope::json_text(&to_cloudevent_json(ev)),
        MessageFormat::Data => ev.data.clone(),
    };
    let mut attributes = vec![(ATTR_EVENT_TYPE.to_string(), ev.event_type.clone())];
    if let Some(tp) = ev.traceparent.as_ref().filter(|t| !t.is_empty()) {
        attributes.push((ATTR_TRACEPARENT.to_string(), tp.clone()));
    }
    attributes.extend(enc.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (group_id, dedup_id) = if enc.fifo {
        let group = ev.key.as_deref().unwrap_or(log_topic);
        (Some(group_id(group)), Some(dedup_id(&ev.id)))
    } else {
        (None, None)
    };
    let out = Outgoing {
        event_id: ev.id.clone(),
        body,
        attributes,
        group_id,
        dedup_id,
    };
    if out.size() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "message of {} bytes is over the {MAX_MESSAGE_BYTES}-byte SNS/SQS limit",
            out.size()
        ));
    }
    Ok(out)
}

/// A valid `MessageGroupId`: the key itself when SNS/SQS accept it (1–128
/// printable ASCII characters), else a stable hash of it.
pub fn group_id(key: &str) -> String {
    let ok =
        !key.is_empty() && key.len() <= MAX_GROUP_ID && key.chars().all(|c| c.is_ascii_graphic());
    if ok {
        key.to_string()
    } else {
        format!("sha256-{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

/// A valid `MessageDeduplicationId` (≤ 128 printable ASCII) from an event id.
fn dedup_id(id: &str) -> String {
    group_id(id)
}

/// Splits `msgs` into consecutive runs that each fit one batch call.
pub fn chunks(msgs: &[&Outgoing]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in msgs.iter().enumerate() {
        let size = m.size();
        if i > start && (i - start == MAX_BATCH_ENTRIES || bytes + size > MAX_MESSAGE_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < msgs.len() {
        out.push(start..msgs.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, key: Option<&str>, data: &str) -> Event {
        Event {
            id: id.into(),
            event_type: "prisoner.state.updated".into(),
            version: "1".into(),
            source: "urn:x".into(),
            key: key.map(str::to_string),
            time: "2024-06-11T14:41:22Z".into(),
            content_type: "application/json".into(),
            data: data.into(),
            attributes: Default::default(),
            traceparent: Some("00-abc-def-01".into()),
        }
    }

    fn enc(format: MessageFormat, fifo: bool) -> Encoding {
        Encoding {
            format,
            attributes: BTreeMap::from([("producer".into(), "switchyard".into())]),
            fifo,
        }
    }

    #[test]
    fn messages_carry_event_type_trace_and_configured_attributes() {
        let e = ev("id-1", Some("A1234BC"), r#"{"a":1}"#);
        let m = encode(&e, "t", &enc(MessageFormat::Data, false)).unwrap();
        assert_eq!(m.body, r#"{"a":1}"#);
        let names: Vec<_> = m
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            names,
            [
                "eventType=prisoner.state.updated",
                "traceparent=00-abc-def-01",
                "producer=switchyard"
            ]
        );
        assert_eq!((m.group_id, m.dedup_id), (None, None));
        let m = encode(&e, "t", &enc(MessageFormat::Cloudevent, true)).unwrap();
        let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(
            (body["id"].as_str(), body["data"]["a"].as_i64()),
            (Some("id-1"), Some(1))
        );
        assert_eq!(m.group_id.as_deref(), Some("A1234BC"));
        assert_eq!(m.dedup_id.as_deref(), Some("id-1"));
    }

    #[test]
    fn fifo_group_falls_back_to_topic_and_hashes_bad_keys() {
        let m = encode(
            &ev("i", None, "{}"),
            "log-topic",
            &enc(MessageFormat::Data, true),
        )
        .unwrap();
        assert_eq!(m.group_id.as_deref(), Some("log-topic"));
        let g = group_id("has space é");
        assert!(g.starts_with("sha256-") && g.len() == 71, "{g}");
        assert_eq!(g, group_id("has space é"));
        assert_eq!(group_id(&"x".repeat(128)), "x".repeat(128));
        assert!(group_id(&"x".repeat(129)).starts_with("sha256-"));
    }

    #[test]
    fn oversized_messages_are_refused() {
        let big = format!("\"{}\"", "x".repeat(MAX_MESSAGE_BYTES));
        let err = encode(&ev("i", None, &big), "t", &enc(MessageFormat::Data, false)).unwrap_err();
        assert!(err.contains("over the 262144-byte"), "{err}");
    }

    #[test]
    fn chunks_respect_entry_and_byte_limits() {
        let small = encode(&ev("i", None, "{}"), "t", &enc(MessageFormat::Data, false)).unwrap();
        let msgs: Vec<&Outgoing> = std::iter::repeat_n(&small, 23).collect();
        assert_eq!(chunks(&msgs), vec![0..10, 10..20, 20..23]);
        let data = format!("\"{}\"", "x".repeat(100_000));
        let big = encode(&ev("i", None, &data), "t", &enc(MessageFormat::Data, false)).unwrap();
        let msgs = vec![&big, &big, &big, &small];
        assert_eq!(chunks(&msgs), vec![0..2, 2..4]);
        assert!(chunks(&[]).is_empty());
    }
}
