//! The one internal event type every part of the router speaks.
//!
//! Sources decode their envelopes (HMPPS domain events, CloudEvents, SNS/SQS)
//! into [`Event`]; plugins see it through the WIT `event` record; sinks and the
//! read API encode it back out (as CloudEvents JSON). The payload stays JSON
//! *text* so the router hands plugins exactly the bytes it received, without
//! re-encoding on the hot path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Attribute naming the plugin that produced an output record.
pub const ATTR_PLUGIN: &str = "plugin";
/// Attribute naming the version (content hash) of that plugin.
pub const ATTR_PLUGIN_VERSION: &str = "pluginversion";
/// On an event re-injected from the dead-letter topic: how many times it was
/// (1 for the first replay). Reserved: ingest refuses events carrying it.
pub const ATTR_REPLAY_COUNT: &str = "replaycount";
/// On an event re-injected from the dead-letter topic: the one route to run
/// (absent when it had failed for want of a route: then every matching route).
/// Reserved like [`ATTR_REPLAY_COUNT`].
pub const ATTR_REPLAY_ROUTE: &str = "replayroute";

/// One event, as stored in a topic of the embedded log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Stable unique id: assigned at ingest, derived deterministically for
    /// plugin outputs so that a replay produces the same ids.
    pub id: String,
    /// The event type, e.g. `prison-offender-events.prisoner.released`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of the payload (HMPPS `version`), as text.
    pub version: String,
    /// Producer of the event (CloudEvents `source`).
    pub source: String,
    /// Ordering key: events with the same key are processed in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// When it happened, RFC 3339 with offset.
    pub time: String,
    /// Media type of `data` (`application/json`).
    pub content_type: String,
    /// The payload as JSON text.
    pub data: String,
    /// String attributes: CloudEvents extensions, message attributes, and the
    /// producing plugin's name and version on outputs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// W3C trace context, carried from input to outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// An event for unit tests: id `id`, type `a.b`, payload `{}`.
#[cfg(test)]
pub(crate) fn sample(id: &str) -> Event {
    Event {
        id: id.into(),
        event_type: "a.b".into(),
        version: "1".into(),
        source: "urn:x".into(),
        key: None,
        time: "2024-06-11T14:41:22Z".into(),
        content_type: "application/json".into(),
        data: "{}".into(),
        attributes: Default::default(),
        traceparent: None,
    }
}
