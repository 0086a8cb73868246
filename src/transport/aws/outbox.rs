//! The outbox: each sink follows the log topics it forwards with a durable
//! cursor per topic (`sink/<sink>/<topic>`), and moves the cursor only in
//! the write that follows the broker's acceptance of every record before it.
//!
//! **Invariant:** a sink's cursor passes a record only once the broker
//! accepted it or it is on the dead-letter topic with the AWS error. A broker
//! outage stops the cursor, never the router; forwarding resumes from the
//! cursor when the broker is back. A crash between acceptance and the cursor
//! write sends the record again with the same deduplication id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::sink::{DeliverError, Mode, Refusal, Sink};
use crate::event::Event;
use crate::pipeline::{DEAD_LETTER_TYPE, derive_id};
use crate::store::{Store, WriteBatch};

/// Records read from one topic per delivery: bounds memory and how much a
/// crash makes the sink send again.
const READ_CHUNK: usize = 100;
/// Attribute on records a direct delivery already handed to sinks: the names
/// of those sinks, comma-separated. Their outboxes skip such records.
pub const ATTR_DELIVERED: &str = "delivered";
/// Wait after a store error before trying again.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// The durable cursor of `sink` on `topic`.
pub fn cursor_name(sink: &str, topic: &str) -> String {
    format!("sink/{sink}/{topic}")
}

/// Whether a direct delivery already gave `ev` to `sink`.
pub fn delivered_to(ev: &Event, sink: &str) -> bool {
    ev.attributes
        .get(ATTR_DELIVERED)
        .is_some_and(|list| list.split(',').any(|s| s == sink))
}

/// Where a sink reads and writes besides its destination.
pub struct Outbox {
    pub store: Store,
    /// Topics globs never match (ingest, dead-letter).
    pub reserved: Vec<String>,
    pub dead_letter_topic: String,
}

impl Outbox {
    /// Forwards until `shutdown`; the delivery in progress is abandoned
    /// unacknowledged (it is sent again on the next start).
    pub async fn run(&self, sink: Arc<Sink>, mut shutdown: watch::Receiver<bool>) {
        let mut appended = self.store.watch_appends();
        let mut cursors: HashMap<String, u64> = HashMap::new();
        let reserved: Vec<&str> = self.reserved.iter().map(String::as_str).collect();
        tracing::info!(sink = %sink.name, kind = sink.dest.kind(), target = %sink.dest.target(), "sink forwarding");
        while !*shutdown.borrow() {
            appended.borrow_and_update();
            let topics = match self.store.topics() {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(sink = %sink.name, error = %e, "cannot list topics");
                    if stop_after(&mut shutdown, STORE_RETRY).await {
                        break;
                    }
                    continue;
                }
            };
            let mut progressed = false;
            for (topic, len) in topics {
                if !sink.forwards(&topic, &reserved) {
                    continue;
                }
                let name = cursor_name(&sink.name, &topic);
                let cursor = match cursors.get(&name) {
                    Some(c) => *c,
                    None => match self.store.cursor(&name) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(sink = %sink.name, error = %e, "cannot read cursor");
                            continue;
                        }
                    },
                };
                if cursor >= len {
                    cursors.insert(name, cursor);
                    continue;
                }
                match self.step(&sink, &topic, cursor, &mut shutdown).await {
                    Ok(next) => {
                        cursors.insert(name, next);
                        progressed = true;
                    }
                    Err(DeliverError::Stopped) => break,
                    Err(DeliverError::Failed(e)) => {
                        // Outbox deliveries wait out outages; only the store can fail here.
                        tracing::error!(sink = %sink.name, error = %e, "sink step failed");
                        if stop_after(&mut shutdown, STORE_RETRY).await {
                            break;
                        }
                    }
                }
            }
            if !progressed && !*shutdown.borrow() {
                tokio::select! {
                    r = appended.changed() => if r.is_err() { break },
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!(sink = %sink.name, "sink stopped");
    }

    /// Delivers the next records of `topic` from `cursor` and commits the
    /// new cursor with the dead-letter records; returns the new cursor.
    async fn step(
        &self,
        sink: &Sink,
        topic: &str,
        cursor: u64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<u64, DeliverError> {
        let store_failed = |e: crate::store::StoreError| {
            DeliverError::Failed(super::client::AwsError::new(
                super::client::FailureKind::Unreachable,
                "store",
                "StoreError",
                e.to_string(),
            ))
        };
        let records = self
            .store
            .read(topic, cursor, READ_CHUNK)
            .map_err(store_failed)?;
        let Some(last) = records.last().map(|r| r.offset) else {
            return Ok(cursor);
        };
        let todo: Vec<&crate::store::Record> = records
            .iter()
            .filter(|r| !delivered_to(&r.event, &sink.name))
            .collect();
        let items: Vec<(&str, &Event)> = todo.iter().map(|r| (topic, &r.event)).collect();
        let report = sink.deliver(&items, Mode::Outbox, Some(shutdown)).await?;
        // Records of the dead-letter topic itself are never dead-lettered
        // again (they are there already, and a bigger copy could loop).
        let dlq_itself = topic == self.dead_letter_topic;
        let dead: Vec<(String, Event)> = report
            .refused
            .iter()
            .filter(|(i, refusal)| {
                if dlq_itself {
                    let r = todo[*i];
                    tracing::error!(sink = %sink.name, offset = r.offset, reason = refusal.reason, error = %refusal.error, "dead-letter record not forwarded; it stays on the dead-letter topic");
                }
                !dlq_itself
            })
            .map(|(i, refusal)| {
                let r = todo[*i];
                tracing::warn!(sink = %sink.name, topic, offset = r.offset, event = %r.event.id, reason = refusal.reason, error = %refusal.error, "output dead-lettered by sink");
                let rec = sink_dead_letter(&sink.name, sink.dest.target(), topic, r.offset, &r.event, refusal);
                (self.dead_letter_topic.clone(), rec)
            })
            .collect();
        let batch = WriteBatch {
            appends: dead,
            cursors: vec![(cursor_name(&sink.name, topic), last + 1)],
            ..Default::default()
        };
        loop {
            match self.store.write(batch.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    // Delivered but not recorded: retrying the write is all we
                    // can do; a crash now resends with the same dedup ids.
                    tracing::error!(sink = %sink.name, topic, error = %e, "cannot commit sink cursor, will retry");
                    if stop_after(shutdown, STORE_RETRY).await {
                        return Err(DeliverError::Stopped);
                    }
                }
            }
        }
        let stats = &sink.stats;
        stats
            .delivered
            .fetch_add(report.accepted.len() as u64, Ordering::Relaxed);
        stats
            .dead_lettered
            .fetch_add(report.refused.len() as u64, Ordering::Relaxed);
        tracing::debug!(sink = %sink.name, topic, from = cursor, to = last, delivered = report.accepted.len(), "sink cursor committed");
        Ok(last + 1)
    }
}

/// The dead-letter record for an output a sink could not deliver: the
/// output whole (to replay it), where it was going and the AWS error.
pub fn sink_dead_letter(
    sink: &str,
    target: &str,
    topic: &str,
    offset: u64,
    ev: &Event,
    refusal: &Refusal,
) -> Event {
    let data = json!({
        "reason": refusal.reason,
        "error": refusal.error,
        "code": refusal.code,
        "sink": sink,
        "target": target,
        "topic": topic,
        "offset": offset,
        "attempts": refusal.attempts,
        "at": chrono::Utc::now().to_rfc3339(),
        "event": ev,
    });
    let attributes = [
        ("reason".to_string(), refusal.reason.to_string()),
        ("sink".to_string(), sink.to_string()),
    ];
    Event {
        id: derive_id(&ev.id, &format!("sink:{sink}"), usize::MAX, 0),
        event_type: DEAD_LETTER_TYPE.into(),
        version: "1".into(),
        source: "urn:switchyard:router".into(),
        key: ev.key.clone(),
        time: ev.time.clone(),
        content_type: "application/json".into(),
        data: data.to_string(),
        attributes: attributes.into_iter().collect(),
        traceparent: ev.traceparent.clone(),
    }
}

/// Waits `d` or until shutdown; true if shutting down.
async fn stop_after(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
    *shutdown.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_marks_name_sinks_exactly() {
        let mut ev = crate::event::sample("e1");
        assert!(!delivered_to(&ev, "events"));
        ev.attributes
            .insert(ATTR_DELIVERED.into(), "events,audit".into());
        assert!(delivered_to(&ev, "events") && delivered_to(&ev, "audit"));
        assert!(!delivered_to(&ev, "event"));
        assert_eq!(cursor_name("events", "domain.x"), "sink/events/domain.x");
    }
}
