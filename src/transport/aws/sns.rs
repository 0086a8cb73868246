//! The SNS sink's service side: resolving the topic and `PublishBatch`.

use std::sync::Mutex;

use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};

use super::batch::Outgoing;
use super::client::{AwsError, FailureKind};
use super::{EntryOutcome, build_error};
use crate::sync::lock;

/// An SNS topic given by ARN or by name (resolved with `ListTopics` once and
/// remembered; forgotten again if SNS says it does not exist).
pub struct SnsTopic {
    client: aws_sdk_sns::Client,
    target: String,
    arn: Mutex<Option<String>>,
}

impl SnsTopic {
    pub fn new(client: aws_sdk_sns::Client, target: &str) -> Self {
        let arn = target.starts_with("arn:").then(|| target.to_string());
        Self {
            client,
            target: target.to_string(),
            arn: Mutex::new(arn),
        }
    }

    /// FIFO topics are named `*.fifo`.
    pub fn is_fifo(&self) -> bool {
        self.target.ends_with(".fifo")
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    async fn arn(&self) -> Result<String, AwsError> {
        if let Some(arn) = lock(&self.arn).clone() {
            return Ok(arn);
        }
        let arn = find_topic_arn(&self.client, &self.target)
            .await?
            .ok_or_else(|| {
                let msg = format!("no SNS topic named {:?}", self.target);
                AwsError::new(FailureKind::Missing, "ListTopics", "NotFound", msg)
            })?;
        *lock(&self.arn) = Some(arn.clone());
        Ok(arn)
    }

    /// One `PublishBatch` call (≤ 10 entries, ≤ 256 KiB); the outcome per entry.
    pub async fn publish(&self, msgs: &[&Outgoing]) -> Result<Vec<EntryOutcome>, AwsError> {
        let arn = self.arn().await?;
        let mut entries = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            let mut e = PublishBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message(m.body.clone())
                .set_message_group_id(m.group_id.clone())
                .set_message_deduplication_id(m.dedup_id.clone());
            for (k, v) in &m.attributes {
                let value = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(v.clone())
                    .build()
                    .map_err(|e| build_error("PublishBatch", e))?;
                e = e.message_attributes(k.clone(), value);
            }
            entries.push(e.build().map_err(|e| build_error("PublishBatch", e))?);
        }
        let out = self
            .client
            .publish_batch()
            .topic_arn(arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                let err = AwsError::from_sdk("PublishBatch", &e);
                if err.kind == FailureKind::Missing && !self.target.starts_with("arn:") {
                    *lock(&self.arn) = None;
                }
                err
            })?;
        Ok(EntryOutcome::collect(
            msgs.len(),
            out.successful()
                .iter()
                .map(|ok| (ok.id(), ok.message_id().unwrap_or_default())),
            out.failed()
                .iter()
                .map(|f| (f.id(), f.code(), f.message(), f.sender_fault())),
        ))
    }
}

/// The ARN of the topic named `name` (or `name` itself when it is an ARN),
/// paging through `ListTopics`.
pub async fn find_topic_arn(
    client: &aws_sdk_sns::Client,
    name: &str,
) -> Result<Option<String>, AwsError> {
    if name.starts_with("arn:") {
        return Ok(Some(name.to_string()));
    }
    let suffix = format!(":{name}");
    let mut token = None;
    loop {
        let page = client
            .list_topics()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ListTopics", &e))?;
        for t in page.topics() {
            if let Some(arn) = t.topic_arn().filter(|a| a.ends_with(&suffix)) {
                return Ok(Some(arn.to_string()));
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(None);
        }
    }
}
