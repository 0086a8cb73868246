//! SQS sources and SNS/SQS sinks.
//!
//! * `client.rs` — SDK configuration (standard chain + `[aws]` overrides),
//!   error classification, back-off: shared by everything below.
//! * `batch.rs` — log records → messages (body, `eventType` attribute, FIFO
//!   group and deduplication ids) packed into batch calls within AWS limits.
//! * `sink.rs` — one sink and the delivery of records to it with retries.
//! * `sns.rs`, `sqs_sink.rs` — `PublishBatch` and `SendMessageBatch`.
//! * `outbox.rs` — each sink follows its log topics with durable cursors.
//! * `message.rs`, `sqs_source.rs` — SQS messages (SNS envelopes or raw) into
//!   the ingest path; delete after durable, dead-letter the bad ones.
//! * `setup.rs` — `switchyard aws setup`: create what a config names.
//!
//! Nothing here runs unless the config has `[sources.sqs.*]` or `[sinks.*]`.

mod batch;
mod client;
pub(crate) mod message;
mod outbox;
mod setup;
mod sink;
mod sns;
mod sqs_sink;
mod sqs_source;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use batch::{ATTR_EVENT_TYPE, MAX_MESSAGE_BYTES};
pub use client::{AwsError, FailureKind};
pub use outbox::{ATTR_DELIVERED, cursor_name};
pub use setup::{SetupError, setup};
pub use sink::{Destination, Mode, Sink};
pub use sqs_source::SqsSource;

use super::{IngestError, Problem, Published};
use crate::config::Config;
use crate::event::Event;
use crate::runtime::Runtime;

/// What a batch call said about one of its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryOutcome {
    Accepted {
        message_id: String,
    },
    Failed {
        code: String,
        message: String,
        /// The broker blames the message, so retrying it cannot help.
        sender_fault: bool,
    },
}

impl EntryOutcome {
    /// An entry the response did not mention: treated as a transient failure.
    fn missing() -> Self {
        EntryOutcome::Failed {
            code: "NoResult".into(),
            message: "the response did not mention this entry".into(),
            sender_fault: false,
        }
    }

    fn is_accepted(&self) -> bool {
        matches!(self, EntryOutcome::Accepted { .. })
    }

    /// The outcome of each of a batch call's `n` entries (sent with ids
    /// `m0`, `m1`, ...), from the response's successful entries (entry id,
    /// message id) and failed ones (entry id, code, message, sender fault).
    /// An entry the response does not mention is [`missing`](Self::missing).
    fn collect<'a>(
        n: usize,
        accepted: impl IntoIterator<Item = (Option<&'a str>, &'a str)>,
        failed: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>, bool)>,
    ) -> Vec<EntryOutcome> {
        let mut outcomes = vec![EntryOutcome::missing(); n];
        let mut set = |id: Option<&str>, outcome| {
            if let Some(slot) = entry_index(id).and_then(|i| outcomes.get_mut(i)) {
                *slot = outcome;
            }
        };
        for (id, message_id) in accepted {
            let message_id = message_id.to_string();
            set(id, EntryOutcome::Accepted { message_id });
        }
        for (id, code, message, sender_fault) in failed {
            set(
                Some(id),
                EntryOutcome::Failed {
                    code: code.to_string(),
                    message: message.unwrap_or_default().to_string(),
                    sender_fault,
                },
            );
        }
        outcomes
    }
}

/// The index of a batch entry from its id (`m<index>`).
fn entry_index(id: Option<&str>) -> Option<usize> {
    id?.strip_prefix('m')?.parse().ok()
}

/// A request the SDK's builders refused to build.
fn build_error(op: &'static str, e: impl std::fmt::Display) -> AwsError {
    AwsError::new(FailureKind::Rejected, op, "BuildError", e.to_string())
}

/// The AWS side of a running router: its sinks and sources.
pub struct Aws {
    pub sinks: Vec<Arc<Sink>>,
    pub sources: Vec<Arc<SqsSource>>,
}

impl Aws {
    /// Builds clients and the configured sinks and sources. Nothing is called
    /// yet: topics and queues are resolved on first use, so a router starts
    /// (and accepts events into its outbox) while AWS is unreachable.
    pub async fn new(cfg: &Config) -> Result<Self, AwsError> {
        let sdk = client::sdk_config(&cfg.aws).await?;
        let sns = aws_sdk_sns::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let mut sinks = Vec::new();
        for (name, s) in &cfg.sinks.sns {
            let dest = Destination::Sns(sns::SnsTopic::new(sns.clone(), s.target()));
            sinks.push(Arc::new(Sink::new(name, dest, s, &cfg.aws)));
        }
        for (name, s) in &cfg.sinks.sqs {
            let dest = Destination::Sqs(sqs_sink::SqsQueue::new(sqs.clone(), s.target()));
            sinks.push(Arc::new(Sink::new(name, dest, s, &cfg.aws)));
        }
        let sources = cfg
            .sources
            .sqs
            .iter()
            .map(|(name, s)| Arc::new(SqsSource::new(name, sqs.clone(), s, cfg)))
            .collect();
        Ok(Self { sinks, sources })
    }

    /// Starts every sink's outbox loop and every source's receive loops.
    pub fn spawn(&self, rt: &Arc<Runtime>, shutdown: &watch::Receiver<bool>) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        let reserved = vec![
            rt.config.ingest.topic.clone(),
            rt.config.router.dead_letter_topic.clone(),
        ];
        for sink in &self.sinks {
            let outbox = outbox::Outbox {
                store: rt.store.clone(),
                reserved: reserved.clone(),
                dead_letter_topic: rt.config.router.dead_letter_topic.clone(),
            };
            let (sink, stop) = (sink.clone(), shutdown.clone());
            tasks.spawn(async move { outbox.run(sink, stop).await });
        }
        for source in &self.sources {
            source.spawn(rt, shutdown, &mut tasks);
        }
        tasks
    }
}

/// Publishes the outputs of direct-delivery routes to every sink that
/// forwards their topics, marking each output with the sinks that accepted
/// it. Returns, per input event, what was published; fails (nothing to be
/// appended) if any sink did not accept everything it was given.
pub async fn publish_direct(
    rt: &Runtime,
    outputs: &mut [(usize, String, Event)],
    events: usize,
) -> Result<Vec<Vec<Published>>, IngestError> {
    let mut published = vec![Vec::new(); events];
    if outputs.is_empty() {
        return Ok(published);
    }
    // No sinks: nothing to publish; the outputs are only written to the log
    // with their inputs.
    let Some(aws) = rt.aws.as_ref() else {
        return Ok(published);
    };
    let reserved = rt.config.reserved_topics();
    let deliveries = aws.sinks.iter().map(|sink| {
        let picked: Vec<usize> = (0..outputs.len())
            .filter(|&i| sink.forwards(&outputs[i].1, &reserved))
            .collect();
        let items: Vec<(&str, &Event)> = picked
            .iter()
            .map(|&i| (outputs[i].1.as_str(), &outputs[i].2))
            .collect();
        async move {
            let report = if items.is_empty() {
                Ok(Default::default())
            } else {
                sink.deliver(&items, Mode::Direct, None).await
            };
            (sink, picked, report)
        }
    });
    let results = futures::future::join_all(deliveries).await;
    let mut problems = Vec::new();
    let mut marks: Vec<Vec<String>> = vec![Vec::new(); outputs.len()];
    for (sink, picked, report) in results {
        let field = format!("sink:{}", sink.name);
        match report {
            Err(e) => {
                tracing::warn!(sink = %sink.name, error = %e, "direct delivery failed");
                problems.push(Problem {
                    index: None,
                    field,
                    reason: e.to_string(),
                });
            }
            Ok(report) => {
                for (i, refusal) in report.refused {
                    let out = &outputs[picked[i]];
                    problems.push(Problem {
                        index: None,
                        field: field.clone(),
                        reason: format!(
                            "output {} for topic {}: {} ({})",
                            out.2.id, out.1, refusal.error, refusal.reason
                        ),
                    });
                }
                for (i, message_id) in report.accepted {
                    let (event, topic, ev) = &outputs[picked[i]];
                    marks[picked[i]].push(sink.name.clone());
                    published[*event].push(Published {
                        sink: sink.name.clone(),
                        topic: topic.clone(),
                        id: ev.id.clone(),
                        message_id,
                    });
                    sink.stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(IngestError::Undelivered(problems));
    }
    for (out, sinks) in outputs.iter_mut().zip(marks) {
        if !sinks.is_empty() {
            out.2
                .attributes
                .insert(ATTR_DELIVERED.to_string(), sinks.join(","));
        }
    }
    Ok(published)
}

/// `GET /v1/sinks` and `GET /v1/sources`: what each sink and source is doing.
pub fn routes(rt: Arc<Runtime>) -> axum::Router {
    axum::Router::new()
        .route("/v1/sinks", get(sinks_status))
        .route("/v1/sources", get(sources_status))
        .with_state(rt)
}

async fn sinks_status(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    let topics = rt.store.topics().unwrap_or_default();
    let reserved = rt.config.reserved_topics();
    let sinks: Vec<Value> = rt
        .aws
        .iter()
        .flat_map(|a| a.sinks.iter())
        .map(|s| {
            let per_topic: Vec<Value> = topics
                .iter()
                .filter(|(t, _)| s.forwards(t, &reserved))
                .map(|(t, len)| {
                    let cursor = rt.store.cursor(&cursor_name(&s.name, t)).unwrap_or(0);
                    json!({ "topic": t, "cursor": cursor, "length": len })
                })
                .collect();
            let st = &s.stats;
            json!({
                "name": s.name,
                "kind": s.dest.kind(),
                "target": s.dest.target(),
                "fifo": s.dest.is_fifo(),
                "delivered": st.delivered.load(Ordering::Relaxed),
                "deadLettered": st.dead_lettered.load(Ordering::Relaxed),
                "retrying": st.retrying.load(Ordering::Relaxed),
                "lastError": st.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
                "topics": per_topic,
            })
        })
        .collect();
    Json(json!({ "sinks": sinks }))
}

async fn sources_status(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    let sources: Vec<Value> = rt
        .aws
        .iter()
        .flat_map(|a| a.sources.iter())
        .map(|s| s.status())
        .collect();
    Json(json!({ "sources": sources }))
}

#[cfg(test)]
mod outcome_tests {
    use super::EntryOutcome;

    /// Each entry gets what the response said of it; entries it does not
    /// mention are "missing" (retried); ids it should not have sent back,
    /// out of range or not ours, are ignored rather than trusted.
    #[test]
    fn outcomes_follow_entry_ids_and_ignore_strangers() {
        let got = EntryOutcome::collect(
            4,
            [
                (Some("m2"), "id-2"),
                (None, "no-entry"),
                (Some("m9"), "id-9"),
            ],
            [
                ("m0", "Throttled", Some("slow down"), false),
                ("x1", "Bad", None, true),
            ],
        );
        assert_eq!(
            got,
            vec![
                EntryOutcome::Failed {
                    code: "Throttled".into(),
                    message: "slow down".into(),
                    sender_fault: false
                },
                EntryOutcome::missing(),
                EntryOutcome::Accepted {
                    message_id: "id-2".into()
                },
                EntryOutcome::missing(),
            ]
        );
    }
}
