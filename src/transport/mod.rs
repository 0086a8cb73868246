//! Sources and sinks.
//!
//! Every source (HTTP, SQS) decodes its envelope into [`Incoming`] events and
//! hands them to [`ingest`] (or [`stage`] then [`commit`], to fold several
//! messages into one write), which checks them whole and appends them durably
//! to the ingest topic. The embedded log is the sink of record: the pipeline
//! writes its outputs there in the same transaction as its cursor, and
//! external sinks (SNS, SQS, in [`aws`]) forward from it as outbox consumers
//! with their own cursors.
//!
//! Routes with `delivery = "direct"` run here instead, inside the request:
//! their plugins produce the outputs, the sinks publish them, and only then
//! are the event and its outputs appended (marked as delivered, so that the
//! outboxes skip them). A broker that does not accept them fails the request.
//!
//! **Invariant:** a source acknowledges an event only after [`commit`]
//! returned its offset, i.e. after the event is durable.

pub mod aws;
pub mod backlog;
pub mod http;
mod limits;

use serde::Serialize;

use crate::envelope::Incoming;
use crate::event::{ATTR_REPLAY_COUNT, ATTR_REPLAY_ROUTE, Event};
use crate::pipeline::{BatchKv, StagePolicy, UnitKv, run_route};
use crate::runtime::Runtime;
use crate::store::{StoreError, WriteBatch};

/// One problem with one event of a request.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Position in a batch (absent for a single event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// JSON pointer or header name of the offending field.
    pub field: String,
    pub reason: String,
}

/// Why events were not accepted. Nothing of the request was appended.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("events failed schema validation")]
    Invalid(Vec<Problem>),
    #[error("no route for event type")]
    Unrouted(Vec<Problem>),
    /// A direct-delivery route's plugin refused the event.
    #[error("a direct-delivery route refused the event")]
    Rejected(Vec<Problem>),
    /// A direct-delivery route's outputs were not accepted by the broker (or
    /// its plugin failed transiently): try again later.
    #[error("the outputs of a direct-delivery route were not published")]
    Undelivered(Vec<Problem>),
    #[error("events could not be written durably: {0}")]
    Unavailable(#[from] StoreError),
}

/// An accepted event.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub offset: u64,
    /// Outputs published by direct delivery, before the answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<Published>,
}

/// One output a direct delivery handed to a sink.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub sink: String,
    pub topic: String,
    /// The output event's id (its deduplication id on FIFO destinations).
    pub id: String,
    /// The id the broker gave the message.
    #[serde(rename = "messageId")]
    pub message_id: String,
}

/// Events that passed every check (and whose direct routes delivered),
/// ready to be appended by [`commit`].
#[derive(Debug, Default)]
pub struct Staged {
    events: Vec<Event>,
    /// Outputs of direct routes: (topic, event).
    outputs: Vec<(String, Event)>,
    /// Per output, the id of the event it was made from (trace links).
    causes: Vec<String>,
    /// Per event, what direct delivery published for it.
    published: Vec<Vec<Published>>,
}

impl Staged {
    /// The checked events, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

/// Validates every event (schema, route), assigns ids to those without one,
/// and appends them all to the ingest topic in one durable write; all or none.
pub async fn ingest(
    rt: &Runtime,
    incoming: Vec<Incoming>,
    batch: bool,
) -> Result<Vec<Accepted>, IngestError> {
    let staged = stage(rt, incoming, batch).await?;
    let mut accepted = commit(rt, vec![staged], Vec::new()).await?;
    Ok(accepted.pop().unwrap_or_default())
}

/// Checks every event (schema, route), assigns ids to those without one and
/// runs their direct-delivery routes; all or none. Appends nothing.
pub async fn stage(
    rt: &Runtime,
    incoming: Vec<Incoming>,
    batch: bool,
) -> Result<Staged, IngestError> {
    let schemas = rt.schemas();
    let routes = rt.routes();
    let index = |i: usize| batch.then_some(i);
    let mut invalid = Vec::new();
    let mut unrouted = Vec::new();
    for (i, inc) in incoming.iter().enumerate() {
        // Only a dead-letter replay may mark an event as replayed.
        if let Some(attr) = [ATTR_REPLAY_COUNT, ATTR_REPLAY_ROUTE]
            .into_iter()
            .find(|a| inc.event.attributes.contains_key(*a))
        {
            invalid.push(Problem {
                index: index(i),
                field: attr.to_string(),
                reason: format!("attribute {attr:?} is reserved for dead-letter replays"),
            });
        } else if let Err(violations) = schemas.validate(inc) {
            invalid.extend(violations.into_iter().map(|v| Problem {
                index: index(i),
                field: v.pointer,
                reason: format!("{} (schema {})", v.reason, v.schema),
            }));
        } else if !routes.is_routed(&inc.event.event_type) {
            unrouted.push(Problem {
                index: index(i),
                field: "/eventType".into(),
                reason: format!("no route matches event type {:?}", inc.event.event_type),
            });
        }
    }
    if !invalid.is_empty() {
        return Err(IngestError::Invalid(invalid));
    }
    if !unrouted.is_empty() {
        return Err(IngestError::Unrouted(unrouted));
    }
    let events: Vec<Event> = incoming
        .into_iter()
        .map(|inc| {
            let mut ev = inc.event;
            if ev.id.is_empty() {
                // Time-ordered (v7): the trace table is keyed by input id,
                // and random ids made nearly every insert dirty a page of
                // its own (a sixth of the store writer's time).
                ev.id = uuid::Uuid::now_v7().to_string();
            }
            ev
        })
        .collect();
    let mut published = vec![Vec::new(); events.len()];
    let mut outputs = Vec::new();
    let direct = routes.routes().iter().any(|r| r.direct);
    if direct {
        outputs = run_direct(rt, &routes, &events, batch).await?;
        published = aws::publish_direct(rt, &mut outputs, events.len()).await?;
    }
    let causes = outputs
        .iter()
        .map(|(i, _, _)| events[*i].id.clone())
        .collect();
    Ok(Staged {
        outputs: outputs
            .into_iter()
            .map(|(_, topic, ev)| (topic, ev))
            .collect(),
        causes,
        events,
        published,
    })
}

/// Runs the direct-delivery routes of `events`; their outputs as (event
/// index, topic, output). Plugins of these routes keep no state (checked at
/// config load), so the kv view is never written.
async fn run_direct(
    rt: &Runtime,
    routes: &crate::router::RouteTable,
    events: &[Event],
    batch: bool,
) -> Result<Vec<(usize, String, Event)>, IngestError> {
    let policy = StagePolicy::new(&rt.config.ingest.topic, &rt.config.router);
    let (mut outputs, mut rejected, mut transient) = (Vec::new(), Vec::new(), Vec::new());
    for (i, ev) in events.iter().enumerate() {
        for route in routes.matching(&ev.event_type).filter(|r| r.direct) {
            let kv = UnitKv::new(BatchKv::new(rt.store.clone()));
            match run_route(route, ev, &kv, &policy).await {
                Ok(outs) => outputs.extend(outs.into_iter().map(|(t, o)| (i, t, o))),
                Err(f) => {
                    let problem = Problem {
                        index: batch.then_some(i),
                        field: format!("route:{}", route.name),
                        reason: format!(
                            "{} in plugin {} (version {}), stage {}: {}",
                            f.kind, f.plugin, f.plugin_version, f.stage, f.error
                        ),
                    };
                    tracing::warn!(event = %ev.id, route = %route.name, reason = %f.kind, error = %f.error, "direct route failed");
                    if f.transient || f.kind == "circuit-open" {
                        transient.push(problem);
                    } else {
                        rejected.push(problem);
                    }
                }
            }
        }
    }
    if !rejected.is_empty() {
        return Err(IngestError::Rejected(rejected));
    }
    if !transient.is_empty() {
        return Err(IngestError::Undelivered(transient));
    }
    Ok(outputs)
}

/// Appends staged events (then their direct outputs) and `dead_letters` to
/// the log in one durable write; the accepted events per `Staged`, in order.
pub async fn commit(
    rt: &Runtime,
    staged: Vec<Staged>,
    dead_letters: Vec<Event>,
) -> Result<Vec<Vec<Accepted>>, StoreError> {
    let topic = &rt.config.ingest.topic;
    let dlq = &rt.config.router.dead_letter_topic;
    // The events move into the write (no copy of their data); what the
    // answer needs of them is kept aside.
    let mut appends = Vec::new();
    let mut summaries: Vec<Vec<(String, String)>> = Vec::with_capacity(staged.len());
    let mut rest = Vec::with_capacity(staged.len());
    for s in staged {
        summaries.push(
            s.events
                .iter()
                .map(|e| (e.id.clone(), e.event_type.clone()))
                .collect(),
        );
        appends.extend(s.events.into_iter().map(|e| (topic.clone(), e)));
        rest.push((s.outputs, s.causes, s.published));
    }
    // Inputs with direct outputs start their trace entry here.
    let mut traces: Vec<crate::store::Trace> = Vec::new();
    let mut input_at = 0;
    let mut published = Vec::with_capacity(rest.len());
    for ((outputs, causes, pubs), summary) in rest.into_iter().zip(&summaries) {
        let first = input_at;
        input_at += summary.len();
        for (out, cause) in outputs.into_iter().zip(causes) {
            let i = summary.iter().position(|(id, _)| id == &cause).unwrap_or(0);
            if !traces.iter().any(|t| t.id == cause) {
                traces.push(crate::store::Trace {
                    id: cause.clone(),
                    writer: 0,
                    input: Some(first + i),
                    ..Default::default()
                });
            }
            if let Some(t) = traces.iter_mut().find(|t| t.id == cause) {
                t.outputs
                    .push((appends.len(), crate::obs::direct_link(&out.1)));
            }
            appends.push(out);
        }
        published.push(pubs);
    }
    appends.extend(dead_letters.into_iter().map(|d| (dlq.clone(), d)));
    let tally = crate::obs::Tally::of(&appends, topic, dlq);
    let offsets = rt
        .store
        .write(WriteBatch {
            appends,
            traces,
            ..Default::default()
        })
        .await?;
    tally.record();
    let mut offsets = offsets.into_iter();
    let mut out = Vec::with_capacity(summaries.len());
    for (summary, published) in summaries.into_iter().zip(published) {
        let accepted = summary
            .into_iter()
            .zip(published)
            .map(|((id, event_type), published)| Accepted {
                id,
                event_type,
                offset: offsets.next().unwrap_or_default(),
                published,
            })
            .collect();
        out.push(accepted);
    }
    Ok(out)
}
