//! Sources and sinks.
//!
//! Every source (HTTP today; SQS and others later) decodes its envelope into
//! [`Incoming`] events and hands them to [`ingest`], which checks them whole
//! and appends them durably to the ingest topic. The embedded log is the sink
//! of record: the pipeline writes its outputs there in the same transaction as
//! its cursor, and external sinks (SNS, SQS) forward from it as outbox
//! consumers with their own cursors.
//!
//! **Invariant:** a source acknowledges an event only after [`ingest`] returned
//! its offset, i.e. after the event is durable.

pub mod http;

use serde::Serialize;

use crate::envelope::Incoming;
use crate::event::Event;
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
}

/// Validates every event (schema, route), assigns ids to those without one,
/// and appends them all to the ingest topic in one durable write; all or none.
pub async fn ingest(
    rt: &Runtime,
    incoming: Vec<Incoming>,
    batch: bool,
) -> Result<Vec<Accepted>, IngestError> {
    let schemas = rt.schemas();
    let routes = rt.routes();
    let index = |i: usize| batch.then_some(i);
    let mut invalid = Vec::new();
    let mut unrouted = Vec::new();
    for (i, inc) in incoming.iter().enumerate() {
        if let Err(violations) = schemas.validate(inc) {
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
                ev.id = uuid::Uuid::new_v4().to_string();
            }
            ev
        })
        .collect();
    let topic = &rt.config.ingest.topic;
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.id.clone(), e.event_type.clone()))
        .collect();
    let offsets = rt
        .store
        .write(WriteBatch {
            appends: events.into_iter().map(|e| (topic.clone(), e)).collect(),
            ..Default::default()
        })
        .await?;
    Ok(summary
        .into_iter()
        .zip(offsets)
        .map(|((id, event_type), offset)| Accepted {
            id,
            event_type,
            offset,
        })
        .collect())
}
