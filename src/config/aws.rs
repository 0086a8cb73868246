//! The AWS part of the configuration file: how to reach AWS (`[aws]`), SQS
//! queues to consume (`[sources.sqs.NAME]`), SNS topics and SQS queues to
//! forward log topics to (`[sinks.sns.NAME]`, `[sinks.sqs.NAME]`), and the
//! subscriptions `switchyard aws setup` creates for local work.
//!
//! Everything here is optional: a file without these sections runs on the
//! embedded log alone and never touches AWS.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

mod validate;

pub(super) use validate::{validate, validate_routes};

/// SQS long-poll ceiling (an AWS limit).
pub const MAX_WAIT_TIME_S: u32 = 20;
/// Most messages one `ReceiveMessage` returns, and most entries in one batch
/// call (`PublishBatch`, `SendMessageBatch`): an AWS limit.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Longest SQS visibility timeout (12 hours, an AWS limit).
pub const MAX_VISIBILITY_TIMEOUT_S: u32 = 43_200;
/// SNS and SQS allow 10 message attributes; the sinks use up to two
/// (`eventType`, `traceparent`), which leaves this many for the config.
pub const MAX_CONFIGURED_ATTRIBUTES: usize = 8;

/// How to reach AWS. Region and credentials come from the standard chain
/// (environment, profile, container or instance role) unless set here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Region override, e.g. `eu-west-2`; otherwise `AWS_REGION` / the profile.
    pub region: Option<String>,
    /// Endpoint override for every AWS call, e.g. a local emulator. The
    /// standard `AWS_ENDPOINT_URL` does the same without a config change.
    pub endpoint_url: Option<Spanned<String>>,
    /// Attempts for one output that SNS/SQS refused inside a batch before it
    /// is dead-lettered with the AWS error; also the attempts of a direct
    /// delivery before the request is answered 503.
    pub max_attempts: u32,
    /// First back-off after a failed call, doubled per attempt.
    pub backoff_ms: u64,
    /// Ceiling of that back-off: how long a broker outage can delay the first
    /// delivery after it ends.
    pub max_backoff_ms: u64,
    /// TCP connect timeout; a broker that does not answer fails fast.
    pub connect_timeout_ms: u64,
    /// Deadline of one HTTP call attempt; above the 20 s long poll.
    pub call_timeout_ms: u64,
    /// Subscriptions for `switchyard aws setup` (not used by `run`).
    pub subscriptions: Vec<SubscriptionConfig>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            max_attempts: 5,
            backoff_ms: 100,
            max_backoff_ms: 5_000,
            connect_timeout_ms: 3_000,
            call_timeout_ms: 30_000,
            subscriptions: Vec::new(),
        }
    }
}

/// A topic → queue subscription that `switchyard aws setup` creates (with
/// the queue policy that lets the topic send to the queue).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// SNS topic name (created if absent).
    pub topic: String,
    /// SQS queue name (created if absent).
    pub queue: String,
    /// Raw message delivery: the queue gets the message body itself rather
    /// than the SNS notification envelope.
    #[serde(default)]
    pub raw: bool,
    /// SNS filter policy on message attributes, e.g. `{ eventType = ["a.b"] }`.
    #[serde(default)]
    pub filter_policy: Option<toml::Value>,
    /// Dead-letter queue for the subscribed queue (created, with a redrive policy).
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
    /// Receives before SQS moves a message to the dead-letter queue.
    #[serde(default = "default_max_receive_count")]
    pub max_receive_count: u32,
}

fn default_max_receive_count() -> u32 {
    5
}

impl SubscriptionConfig {
    /// The filter policy as the JSON text SNS expects.
    pub fn filter_policy_json(&self) -> Option<String> {
        self.filter_policy
            .as_ref()
            .and_then(|v| serde_json::to_string(v).ok())
    }
}

/// `[sources]`: where events come from besides HTTP.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// SQS queues by name.
    pub sqs: BTreeMap<String, SqsSourceConfig>,
}

/// One SQS queue the router consumes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSourceConfig {
    /// Queue name (resolved with `GetQueueUrl`) or queue URL.
    pub queue: Spanned<String>,
    /// Long-poll wait per receive, 0–20 s.
    #[serde(default = "default_wait")]
    pub wait_time_s: u32,
    /// Messages per receive, 1–10.
    #[serde(default = "default_max_messages")]
    pub max_messages: u32,
    /// Receive loops running at once (each handles its batch in order).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Visibility timeout asked for on receive; a batch still in progress
    /// after half of it gets it extended.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_s: u32,
    /// `source` of HMPPS events read from this queue (default
    /// `urn:switchyard:sqs:<queue>`).
    #[serde(default)]
    pub source: Option<String>,
    /// Dead-letter queue `aws setup` creates and redrives to.
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
    /// Receives before SQS redrives a message to the dead-letter queue.
    #[serde(default = "default_max_receive_count")]
    pub max_receive_count: u32,
}

fn default_wait() -> u32 {
    MAX_WAIT_TIME_S
}
fn default_max_messages() -> u32 {
    MAX_BATCH_ENTRIES as u32
}
fn default_concurrency() -> usize {
    2
}
fn default_visibility() -> u32 {
    30
}

/// `[sinks]`: external destinations the log's topics are forwarded to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// SNS topics by sink name.
    pub sns: BTreeMap<String, SinkConfig>,
    /// SQS queues by sink name.
    pub sqs: BTreeMap<String, SinkConfig>,
}

/// What a message body holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageFormat {
    /// A structured-mode CloudEvent: id, source, time, key, trace and data.
    #[default]
    Cloudevent,
    /// The event's data alone (an HMPPS domain event stays one).
    Data,
}

/// One sink: an SNS topic (`topic`) or an SQS queue (`queue`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// SNS topic name or ARN (SNS sinks).
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// SQS queue name or URL (SQS sinks).
    #[serde(default)]
    pub queue: Option<Spanned<String>>,
    /// Log topics forwarded, as globs. A glob never matches the ingest or
    /// dead-letter topic; name those exactly to forward them.
    pub from: Vec<Spanned<String>>,
    /// Message body format.
    #[serde(default)]
    pub format: MessageFormat,
    /// Extra String message attributes on every message.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Batch calls in flight at once (standard destinations; FIFO ones send
    /// one at a time so that order within a message group holds).
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
}

fn default_in_flight() -> usize {
    4
}

/// How a route's outputs reach the sinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// The request is answered once the event is durable in the log; the
    /// pipeline and the sinks (outbox consumers) take it from there.
    #[default]
    Outbox,
    /// The route runs during the request and its outputs are published
    /// before the answer: 202 once the broker accepted, else 503.
    Direct,
}

impl SinkConfig {
    /// The topic or queue this sink sends to.
    pub fn target(&self) -> &str {
        self.topic
            .as_ref()
            .or(self.queue.as_ref())
            .map(|t| t.get_ref().as_str())
            .unwrap_or_default()
    }
}

/// Message attribute names: what SNS and SQS accept (`[A-Za-z0-9_.-]`, at
/// most 256, no `AWS.`/`Amazon.` prefix, no leading/trailing/double dot).
pub fn check_attribute_name(name: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    let bad = name.is_empty()
        || name.len() > 256
        || name.starts_with('.')
        || name.ends_with('.')
        || name.contains("..")
        || lower.starts_with("aws.")
        || lower.starts_with("amazon.")
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if bad {
        return Err(format!(
            "attribute name {name:?} is not allowed by SNS/SQS: 1-256 of [A-Za-z0-9_.-], \
             no leading/trailing/double dot, no AWS. or Amazon. prefix"
        ));
    }
    if matches!(name, "eventType" | "traceparent") {
        return Err(format!("attribute {name:?} is set by the sink itself"));
    }
    Ok(())
}
/// The queue name in a name or a queue URL (its last path segment).
pub fn queue_name(queue: &str) -> &str {
    queue.rsplit('/').next().unwrap_or(queue)
}

/// SNS topic and SQS queue names: 1–80 of `[A-Za-z0-9_-]`, `.fifo` allowed at the end.
pub fn check_resource_name(name: &str) -> Result<(), String> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    let ok = !base.is_empty()
        && name.len() <= 80
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} is not a valid SNS topic / SQS queue name: 1-80 of [A-Za-z0-9_-], \
             optionally ending in .fifo"
        ))
    }
}
