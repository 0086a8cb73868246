//! The SQS source: long-polls a queue and feeds its messages through the
//! same checks as HTTP ingest into the embedded log.
//!
//! Per received batch: every message is unwrapped and decoded; the good ones
//! are staged (schema, route, direct delivery), the bad ones become
//! dead-letter records with the reason; then one durable write appends both,
//! and only after it returned are those messages deleted. A message that
//! failed for a passing reason (store or broker unavailable) is not deleted:
//! SQS makes it visible again, and its redrive policy ends a message that
//! never succeeds in the queue's own dead-letter queue. While a batch is in
//! progress its visibility is extended, so a slow batch is not handed to
//! another consumer meanwhile.
//!
//! FIFO queues: the message group is the event's ordering key, and once a
//! message of a group is left for redelivery the later ones of that group in
//! the batch are left too, so a group's order survives the pipeline.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName,
};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::client::{AwsError, Backoff};
use super::message::{self, AttrValue, MessageError};
use super::sqs_sink::SqsQueue;
use crate::config::{Config, SqsSourceConfig};
use crate::envelope::{Incoming, IngestDefaults, decode_http};
use crate::event::Event;
use crate::pipeline::{DEAD_LETTER_TYPE, derive_id};
use crate::runtime::Runtime;
use crate::transport::{IngestError, Problem, Staged, commit, stage};

/// Counters for `GET /v1/sources`.
#[derive(Debug, Default)]
struct SourceStats {
    received: AtomicU64,
    accepted: AtomicU64,
    dead_lettered: AtomicU64,
    deleted: AtomicU64,
    /// Left for redelivery (transient failures).
    left: AtomicU64,
    /// Receive loops waiting for the router to get back within
    /// `ingest.max_lag`.
    paused: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// One configured SQS queue.
pub struct SqsSource {
    pub name: String,
    queue: SqsQueue,
    cfg: SqsSourceConfig,
    defaults: IngestDefaults,
    backoff: Backoff,
    stats: SourceStats,
}

/// What became of one message of a batch.
enum Fate {
    Staged(Staged),
    DeadLetter(Event),
    /// Transient failure: leave it for SQS to deliver again.
    Leave,
}

impl SqsSource {
    pub fn new(
        name: &str,
        client: aws_sdk_sqs::Client,
        cfg: &SqsSourceConfig,
        all: &Config,
    ) -> Self {
        let queue = SqsQueue::new(client, cfg.queue.get_ref());
        let source = cfg
            .source
            .clone()
            .unwrap_or_else(|| format!("urn:switchyard:sqs:{}", queue.name()));
        Self {
            name: name.to_string(),
            defaults: IngestDefaults {
                source,
                key_rules: all.key_rules(),
            },
            queue,
            cfg: cfg.clone(),
            backoff: Backoff::from_config(&all.aws),
            stats: SourceStats::default(),
        }
    }

    /// Starts `concurrency` receive loops.
    pub fn spawn(
        self: &Arc<Self>,
        rt: &Arc<Runtime>,
        shutdown: &watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) {
        for worker in 0..self.cfg.concurrency {
            let (me, rt, stop) = (self.clone(), rt.clone(), shutdown.clone());
            tasks.spawn(async move { me.poll(rt, stop, worker).await });
        }
    }

    pub fn status(&self) -> Value {
        let s = &self.stats;
        json!({
            "name": self.name,
            "kind": "sqs",
            "queue": self.queue.target(),
            "fifo": self.queue.is_fifo(),
            "received": s.received.load(Ordering::Relaxed),
            "accepted": s.accepted.load(Ordering::Relaxed),
            "deadLettered": s.dead_lettered.load(Ordering::Relaxed),
            "deleted": s.deleted.load(Ordering::Relaxed),
            "left": s.left.load(Ordering::Relaxed),
            "paused": s.paused.load(Ordering::Relaxed) > 0,
            "lastError": s.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
        })
    }

    fn note_error(&self, e: &str) {
        *crate::sync::lock(&self.stats.last_error) = Some(e.to_string());
    }

    async fn poll(
        self: Arc<Self>,
        rt: Arc<Runtime>,
        mut shutdown: watch::Receiver<bool>,
        worker: usize,
    ) {
        tracing::info!(source = %self.name, queue = %self.queue.target(), worker, "sqs source polling");
        let mut failures = 0u32;
        let mut backlog = rt.backlog.clone();
        while !*shutdown.borrow() {
            // Past `ingest.max_lag`, messages wait in the queue until the
            // router catches up.
            if let Some(b) = backlog.as_mut()
                && let Some(behind) = b.over()
            {
                self.stats.paused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(source = %self.name, worker, behind, max_lag = b.max(), "router behind its bound; sqs source paused");
                b.wait(&mut shutdown).await;
                self.stats.paused.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(source = %self.name, worker, "sqs source resumed");
                continue;
            }
            let received = tokio::select! {
                r = self.receive() => r,
                _ = shutdown.wait_for(|s| *s) => break,
            };
            match received {
                Ok((url, msgs)) => {
                    if failures > 0 {
                        tracing::info!(source = %self.name, "sqs source receiving again");
                    }
                    failures = 0;
                    if !msgs.is_empty() {
                        self.handle(&rt, &url, msgs).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.queue.on_error(&e);
                    self.note_error(&e.to_string());
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(source = %self.name, worker, failures, error = %e, "sqs receive failed, will retry");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(self.backoff.delay(failures)) => {}
                        _ = shutdown.wait_for(|s| *s) => break,
                    }
                }
            }
        }
        tracing::info!(source = %self.name, worker, "sqs source stopped");
    }

    async fn receive(&self) -> Result<(String, Vec<Message>), AwsError> {
        let url = self.queue.url().await?;
        let out = self
            .queue
            .client()
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(self.cfg.max_messages as i32)
            .wait_time_seconds(self.cfg.wait_time_s as i32)
            .visibility_timeout(self.cfg.visibility_timeout_s as i32)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ReceiveMessage", &e))?;
        Ok((url, out.messages.unwrap_or_default()))
    }

    /// Handles one received batch: decide each message's fate, write, delete.
    async fn handle(&self, rt: &Runtime, url: &str, msgs: Vec<Message>) {
        self.stats
            .received
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        let heartbeat = KeepInvisible::start(self, url, &msgs);
        // Let the heartbeat reach its first timer before this task takes the
        // worker for plugin work: a task just spawned sits in this worker's
        // LIFO slot, which no other worker may steal from.
        tokio::task::yield_now().await;
        let mut blocked_groups = HashSet::new();
        let (mut staged, mut dead, mut done) = (Vec::new(), Vec::new(), Vec::new());
        for m in &msgs {
            let group = system_attr(m, MessageSystemAttributeName::MessageGroupId);
            if let Some(g) = group.as_ref().filter(|g| blocked_groups.contains(*g)) {
                tracing::debug!(source = %self.name, group = %g, "earlier message of the group left; leaving this one too");
                self.stats.left.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match self.fate(rt, m).await {
                Fate::Staged(s) => {
                    staged.push(s);
                    done.push(m);
                }
                Fate::DeadLetter(d) => {
                    dead.push(d);
                    done.push(m);
                }
                Fate::Leave => {
                    self.stats.left.fetch_add(1, Ordering::Relaxed);
                    if let Some(g) = group {
                        blocked_groups.insert(g);
                    }
                }
            }
        }
        let (n_dead, n_events) = (
            dead.len(),
            staged.iter().map(|s| s.events().len()).sum::<usize>(),
        );
        let types: Vec<String> = staged
            .iter()
            .flat_map(|s| s.events().iter().map(|e| e.event_type.clone()))
            .collect();
        if !done.is_empty() {
            match commit(rt, staged, dead).await {
                Ok(_) => {
                    let source = format!("sqs:{}", self.name);
                    for t in &types {
                        crate::obs::metrics().events_in.inc([&source, t]);
                    }
                    self.stats
                        .accepted
                        .fetch_add(n_events as u64, Ordering::Relaxed);
                    self.stats
                        .dead_lettered
                        .fetch_add(n_dead as u64, Ordering::Relaxed);
                    self.delete(url, &done).await;
                }
                Err(e) => {
                    // Nothing was written: leave every message for redelivery.
                    tracing::error!(source = %self.name, messages = done.len(), error = %e, "cannot write received messages; leaving them in the queue");
                    self.note_error(&e.to_string());
                    self.stats
                        .left
                        .fetch_add(done.len() as u64, Ordering::Relaxed);
                }
            }
        }
        drop(heartbeat);
    }

    async fn fate(&self, rt: &Runtime, m: &Message) -> Fate {
        let incoming = match self.decode(m) {
            Ok(i) => i,
            Err(e) => {
                let problem = Problem {
                    index: None,
                    field: e.field.clone(),
                    reason: e.reason.clone(),
                };
                return Fate::DeadLetter(self.dead_letter(
                    m,
                    "bad-message",
                    &e.to_string(),
                    &[problem],
                    &[],
                ));
            }
        };
        let batch = incoming.first().is_some_and(|i| i.batch);
        let events: Vec<Event> = incoming.iter().map(|i| i.event.clone()).collect();
        let (reason, problems) = match stage(rt, incoming, batch).await {
            Ok(s) => return Fate::Staged(s),
            Err(IngestError::Invalid(p)) => ("invalid", p),
            Err(IngestError::Unrouted(p)) => ("no-route", p),
            Err(IngestError::Rejected(p)) => ("rejected", p),
            Err(e @ (IngestError::Undelivered(_) | IngestError::Unavailable(_))) => {
                let id = m.message_id().unwrap_or_default();
                tracing::warn!(source = %self.name, message_id = id, error = %e, "message left for redelivery");
                self.note_error(&e.to_string());
                return Fate::Leave;
            }
        };
        let summary = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.reason))
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!(source = %self.name, message_id = m.message_id().unwrap_or_default(), reason, error = %summary, "message dead-lettered");
        Fate::DeadLetter(self.dead_letter(m, reason, &summary, &problems, &events))
    }

    /// The message's events, with stable ids and (FIFO) the group as key.
    fn decode(&self, m: &Message) -> Result<Vec<Incoming>, MessageError> {
        let mut attrs = BTreeMap::new();
        for (name, v) in m.message_attributes().into_iter().flatten() {
            let value = if v.data_type().starts_with("Binary") {
                AttrValue::Binary(
                    v.binary_value()
                        .map(|b| b.as_ref().to_vec())
                        .unwrap_or_default(),
                )
            } else {
                AttrValue::Text(v.string_value().unwrap_or_default().to_string())
            };
            attrs.insert(name.clone(), value);
        }
        let u = message::unwrap(m.body().unwrap_or_default(), attrs)?;
        let headers = message::as_request(&u)?;
        let decoded = decode_http(&headers, u.body.as_bytes(), &self.defaults).map_err(|e| {
            let at = e.index.map(|i| format!("item {i}, ")).unwrap_or_default();
            let field = if e.field.is_empty() {
                "body".to_string()
            } else {
                e.field.clone()
            };
            MessageError {
                field: format!("{at}{field}"),
                reason: e.reason,
            }
        })?;
        // Every copy of one message (and of one SNS publish) gets the same
        // ids, so a redelivery is recognisably the same event downstream.
        let origin = u
            .sns_message_id
            .map(|id| format!("sns:{id}"))
            .unwrap_or_else(|| {
                format!(
                    "sqs:{}:{}",
                    self.queue.name(),
                    m.message_id().unwrap_or_default()
                )
            });
        let group = system_attr(m, MessageSystemAttributeName::MessageGroupId);
        let mut events = decoded.events;
        for (i, inc) in events.iter_mut().enumerate() {
            if inc.event.id.is_empty() {
                inc.event.id = derive_id(&origin, "", 0, i);
            }
            if let Some(g) = &group {
                inc.event.key = Some(g.clone());
            }
        }
        Ok(events)
    }

    fn dead_letter(
        &self,
        m: &Message,
        reason: &str,
        error: &str,
        details: &[Problem],
        events: &[Event],
    ) -> Event {
        let id = m.message_id().unwrap_or_default();
        let attributes: BTreeMap<String, Value> = m
            .message_attributes()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!({"type": v.data_type(), "value": v.string_value()}),
                )
            })
            .collect();
        let receives = system_attr(m, MessageSystemAttributeName::ApproximateReceiveCount);
        let data = json!({
            "reason": reason,
            "error": error,
            "details": details,
            "source": format!("sqs:{}", self.name),
            "queue": self.queue.target(),
            "messageId": id,
            "receiveCount": receives.and_then(|r| r.parse::<u64>().ok()),
            "at": chrono::Utc::now().to_rfc3339(),
            "message": { "body": m.body().unwrap_or_default(), "attributes": attributes },
            "event": events.first(),
            "events": if events.len() > 1 { json!(events) } else { Value::Null },
        });
        Event {
            id: derive_id(
                &format!("sqs:{}:{id}", self.queue.name()),
                "dead-letter",
                usize::MAX,
                0,
            ),
            event_type: DEAD_LETTER_TYPE.into(),
            version: "1".into(),
            source: "urn:switchyard:router".into(),
            key: events.first().and_then(|e| e.key.clone()),
            time: chrono::Utc::now().to_rfc3339(),
            content_type: "application/json".into(),
            data: data.to_string(),
            attributes: BTreeMap::from([("reason".to_string(), reason.to_string())]),
            traceparent: events.first().and_then(|e| e.traceparent.clone()),
        }
    }

    async fn delete(&self, url: &str, msgs: &[&Message]) {
        for chunk in msgs.chunks(crate::config::MAX_BATCH_ENTRIES) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .ok()
                })
                .collect();
            let sent = self
                .queue
                .client()
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await;
            match sent {
                Ok(out) => {
                    self.stats
                        .deleted
                        .fetch_add(out.successful().len() as u64, Ordering::Relaxed);
                    for f in out.failed() {
                        // Written already: a redelivery appends the same ids again.
                        tracing::warn!(source = %self.name, code = f.code(), error = f.message().unwrap_or_default(), "message not deleted; it will be delivered again");
                    }
                }
                Err(e) => {
                    let e = AwsError::from_sdk("DeleteMessageBatch", &e);
                    tracing::warn!(source = %self.name, error = %e, "messages not deleted; they will be delivered again");
                    self.note_error(&e.to_string());
                }
            }
        }
    }
}

fn system_attr(m: &Message, name: MessageSystemAttributeName) -> Option<String> {
    m.attributes().and_then(|a| a.get(&name)).cloned()
}

/// Extends the visibility of a batch in progress every half timeout, until dropped.
struct KeepInvisible(tokio::task::JoinHandle<()>);

impl KeepInvisible {
    fn start(source: &SqsSource, url: &str, msgs: &[Message]) -> Self {
        let client = source.queue.client().clone();
        let (url, name) = (url.to_string(), source.name.clone());
        let timeout = source.cfg.visibility_timeout_s;
        let handles: Vec<String> = msgs
            .iter()
            .filter_map(|m| m.receipt_handle().map(str::to_string))
            .collect();
        Self(tokio::spawn(async move {
            let period = Duration::from_secs(u64::from(timeout)) / 2;
            loop {
                tokio::time::sleep(period).await;
                let entries: Vec<_> = handles
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| {
                        ChangeMessageVisibilityBatchRequestEntry::builder()
                            .id(format!("m{i}"))
                            .receipt_handle(h)
                            .visibility_timeout(timeout as i32)
                            .build()
                            .ok()
                    })
                    .collect();
                let r = client
                    .change_message_visibility_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await;
                match r {
                    Ok(_) => {
                        tracing::debug!(source = %name, messages = handles.len(), "visibility extended")
                    }
                    Err(e) => {
                        let e = AwsError::from_sdk("ChangeMessageVisibilityBatch", &e);
                        tracing::warn!(source = %name, error = %e, "cannot extend visibility");
                    }
                }
            }
        }))
    }
}

impl Drop for KeepInvisible {
    fn drop(&mut self) {
        self.0.abort();
    }
}
