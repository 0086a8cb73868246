//! A sink: one SNS topic or SQS queue, the log topics it forwards, and the
//! delivery of a run of records to it with retries.
//!
//! Delivery is the same for the outbox (the sink's own loop, see `outbox.rs`)
//! and for direct delivery (inside an ingest request); they differ only in
//! what a broker that cannot be reached means. The outbox waits it out, for
//! as long as it takes, because the log holds the events; a direct delivery
//! gives up after the SDK's retries so the producer can be answered 503.
//!
//! Failures of single entries inside a batch call are retried with back-off
//! up to `aws.max_attempts`; an entry the broker refuses for its content
//! (sender fault) is not retried. A whole call refused for its content is
//! split into single-entry calls so one bad message cannot block the others.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;

use super::EntryOutcome;
use super::batch::{Encoding, Outgoing, chunks, encode};
use super::client::{AwsError, Backoff, FailureKind};
use super::sns::SnsTopic;
use super::sqs_sink::SqsQueue;
use crate::event::Event;

/// Where a sink's messages go.
pub enum Destination {
    Sns(SnsTopic),
    Sqs(SqsQueue),
}

impl Destination {
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Sns(_) => "sns",
            Destination::Sqs(_) => "sqs",
        }
    }

    pub fn target(&self) -> &str {
        match self {
            Destination::Sns(t) => t.target(),
            Destination::Sqs(q) => q.target(),
        }
    }

    pub fn is_fifo(&self) -> bool {
        match self {
            Destination::Sns(t) => t.is_fifo(),
            Destination::Sqs(q) => q.is_fifo(),
        }
    }

    async fn send(&self, msgs: &[&Outgoing]) -> Result<Vec<EntryOutcome>, AwsError> {
        match self {
            Destination::Sns(t) => t.publish(msgs).await,
            Destination::Sqs(q) => q.send(msgs).await,
        }
    }
}

/// Whether a broker outage is waited out (outbox) or reported (direct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Outbox,
    Direct,
}

/// Why one record was not delivered.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// `sink-rejected` (the broker refused its content), `sink-failed`
    /// (attempts exhausted) or `too-large`.
    pub reason: &'static str,
    /// The AWS error code, when there is one.
    pub code: String,
    pub error: String,
    pub attempts: u32,
}

/// What happened to each record of a delivery, by index into its input.
#[derive(Debug, Default)]
pub struct Report {
    /// Accepted by the broker, with the broker's message id.
    pub accepted: Vec<(usize, String)>,
    pub refused: Vec<(usize, Refusal)>,
}

/// A delivery that did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// Shutdown came first; nothing is acknowledged, the outbox resumes later.
    #[error("stopped")]
    Stopped,
    /// The broker could not be reached (direct delivery only).
    #[error(transparent)]
    Failed(AwsError),
}

/// Counters for `GET /v1/sinks`.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub delivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// The last call failed and is being retried.
    pub retrying: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

/// One configured sink.
pub struct Sink {
    pub name: String,
    pub dest: Destination,
    /// Log topics forwarded (globs).
    from: Vec<String>,
    encoding: Encoding,
    in_flight: usize,
    max_attempts: u32,
    backoff: Backoff,
    pub stats: SinkStats,
}

struct Pending {
    index: usize,
    msg: Outgoing,
    attempts: u32,
    /// Sent alone after a whole batch was refused for its content.
    solo: bool,
}

impl Sink {
    pub fn new(
        name: &str,
        dest: Destination,
        cfg: &crate::config::SinkConfig,
        aws: &crate::config::AwsConfig,
    ) -> Self {
        let encoding = Encoding {
            format: cfg.format,
            attributes: cfg.attributes.clone(),
            fifo: dest.is_fifo(),
        };
        // One call at a time keeps a FIFO message group in order.
        let in_flight = if dest.is_fifo() { 1 } else { cfg.in_flight };
        Self {
            name: name.to_string(),
            dest,
            from: cfg.from.iter().map(|p| p.get_ref().clone()).collect(),
            encoding,
            in_flight,
            max_attempts: aws.max_attempts,
            backoff: Backoff::from_config(aws),
            stats: SinkStats::default(),
        }
    }

    /// Whether this sink forwards log topic `topic`. Globs never match the
    /// `reserved` topics (ingest, dead-letter); exact names do.
    pub fn forwards(&self, topic: &str, reserved: &[&str]) -> bool {
        self.from
            .iter()
            .any(|p| p == topic || (!reserved.contains(&topic) && glob_match::glob_match(p, topic)))
    }

    /// Delivers `items` (log topic, event) in order. Every item ends in the
    /// report as accepted or refused, unless the delivery stops early.
    pub async fn deliver(
        &self,
        items: &[(&str, &Event)],
        mode: Mode,
        mut shutdown: Option<&mut watch::Receiver<bool>>,
    ) -> Result<Report, DeliverError> {
        let mut report = Report::default();
        let mut pending = Vec::with_capacity(items.len());
        for (index, (topic, ev)) in items.iter().enumerate() {
            match encode(ev, topic, &self.encoding) {
                Ok(msg) => pending.push(Pending {
                    index,
                    msg,
                    attempts: 0,
                    solo: false,
                }),
                Err(error) => report.refused.push((
                    index,
                    Refusal {
                        reason: "too-large",
                        code: String::new(),
                        error,
                        attempts: 0,
                    },
                )),
            }
        }
        let mut outage_rounds = 0;
        while !pending.is_empty() {
            let (next, call_error) = self.round(pending, mode, &mut report).await?;
            pending = next;
            if pending.is_empty() {
                break;
            }
            let delay = match &call_error {
                Some(e) => {
                    outage_rounds += 1;
                    self.note_error(e, outage_rounds);
                    self.backoff.delay(outage_rounds)
                }
                None => {
                    let worst = pending.iter().map(|p| p.attempts).max().unwrap_or(1);
                    self.backoff.delay(worst.max(1))
                }
            };
            match shutdown.as_deref_mut() {
                Some(stop) => {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => return Err(DeliverError::Stopped),
                    }
                }
                None => tokio::time::sleep(delay).await,
            }
        }
        if self.stats.retrying.swap(false, Ordering::Relaxed) {
            tracing::info!(sink = %self.name, "sink delivering again");
        }
        report.accepted.sort_by_key(|(i, _)| *i);
        report.refused.sort_by_key(|(i, _)| *i);
        Ok(report)
    }

    /// One round of batch calls over `pending`; returns what is left to
    /// retry and the whole-call error that left it, if any.
    async fn round(
        &self,
        pending: Vec<Pending>,
        mode: Mode,
        report: &mut Report,
    ) -> Result<(Vec<Pending>, Option<AwsError>), DeliverError> {
        let msgs: Vec<&Outgoing> = pending.iter().map(|p| &p.msg).collect();
        let mut plan = Vec::new();
        let mut start = 0;
        // Solo entries go alone; runs of the others are packed into batches.
        for (i, p) in pending.iter().enumerate() {
            if p.solo {
                plan.extend(
                    chunks(&msgs[start..i])
                        .into_iter()
                        .map(|r| r.start + start..r.end + start),
                );
                plan.push(i..i + 1);
                start = i + 1;
            }
        }
        plan.extend(
            chunks(&msgs[start..])
                .into_iter()
                .map(|r| r.start + start..r.end + start),
        );

        let fifo = self.dest.is_fifo();
        let mut results = Vec::with_capacity(plan.len());
        if fifo {
            // In order, stopping at the first batch not wholly accepted, so a
            // later message of a group never overtakes an earlier one.
            for range in &plan {
                let r = self.dest.send(&msgs[range.clone()]).await;
                let whole = matches!(&r, Ok(o) if o.iter().all(EntryOutcome::is_accepted));
                results.push(r);
                if !whole {
                    break;
                }
            }
        } else {
            // Collected first: a lazy `map` closure in the stream trips the
            // compiler's Send check for the spawned task (rust#100013).
            let mut calls = Vec::with_capacity(plan.len());
            for range in &plan {
                calls.push(self.dest.send(&msgs[range.clone()]));
            }
            results = futures::stream::iter(calls)
                .buffered(self.in_flight)
                .collect()
                .await;
        }

        let mut slots: Vec<Option<Pending>> = pending.into_iter().map(Some).collect();
        let mut next = Vec::new();
        let mut call_error = None;
        for (range, result) in plan.iter().zip(results) {
            match result {
                Ok(outcomes) => {
                    for (pos, outcome) in range.clone().zip(outcomes) {
                        let Some(mut p) = slots[pos].take() else {
                            continue;
                        };
                        match outcome {
                            EntryOutcome::Accepted { message_id } => {
                                report.accepted.push((p.index, message_id));
                            }
                            EntryOutcome::Failed {
                                code,
                                message,
                                sender_fault,
                            } => {
                                p.attempts += 1;
                                let error = format!("{code}: {message}");
                                if sender_fault || p.attempts >= self.max_attempts {
                                    let reason = if sender_fault {
                                        "sink-rejected"
                                    } else {
                                        "sink-failed"
                                    };
                                    let refusal = Refusal {
                                        reason,
                                        code,
                                        error,
                                        attempts: p.attempts,
                                    };
                                    report.refused.push((p.index, refusal));
                                } else {
                                    tracing::warn!(sink = %self.name, event = %p.msg.event_id, attempt = p.attempts, error = %error, "entry refused, will retry");
                                    next.push(p);
                                }
                            }
                        }
                    }
                }
                Err(e) if e.kind == FailureKind::Rejected && range.len() > 1 => {
                    tracing::warn!(sink = %self.name, error = %e, "batch refused, sending its entries one by one");
                    for pos in range.clone() {
                        if let Some(mut p) = slots[pos].take() {
                            p.solo = true;
                            next.push(p);
                        }
                    }
                }
                Err(e) if e.kind == FailureKind::Rejected => {
                    if let Some(p) = slots[range.start].take() {
                        let refusal = Refusal {
                            reason: "sink-rejected",
                            code: e.code.clone(),
                            error: e.to_string(),
                            attempts: p.attempts + 1,
                        };
                        report.refused.push((p.index, refusal));
                    }
                }
                Err(e) if mode == Mode::Direct => return Err(DeliverError::Failed(e)),
                Err(e) => {
                    for pos in range.clone() {
                        if let Some(p) = slots[pos].take() {
                            next.push(p);
                        }
                    }
                    call_error = Some(e);
                }
            }
        }
        // Batches never sent (a FIFO round stopped early) go again, in order.
        next.extend(slots.into_iter().flatten());
        next.sort_by_key(|p| p.index);
        Ok((next, call_error))
    }

    fn note_error(&self, e: &AwsError, rounds: u32) {
        let first = !self.stats.retrying.swap(true, Ordering::Relaxed);
        *crate::sync::lock(&self.stats.last_error) = Some(e.to_string());
        // Loud at the start of an outage and then every tenth round.
        if first || rounds.is_multiple_of(10) {
            match e.kind {
                FailureKind::Denied | FailureKind::Missing => {
                    tracing::error!(sink = %self.name, target = %self.dest.target(), rounds, error = %e, "sink delivery failed, will retry");
                }
                _ => {
                    tracing::warn!(sink = %self.name, target = %self.dest.target(), rounds, error = %e, "sink delivery failed, will retry");
                }
            }
        }
    }
}
