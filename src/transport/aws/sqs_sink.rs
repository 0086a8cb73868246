//! The SQS sink's service side, `SendMessageBatch`, and the queue lookup the
//! SQS source shares.

use std::sync::Mutex;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use super::batch::Outgoing;
use super::client::{AwsError, FailureKind};
use super::{EntryOutcome, build_error};
use crate::config::queue_name;
use crate::sync::lock;

/// An SQS queue given by URL or by name (resolved with `GetQueueUrl` once,
/// forgotten again if SQS says it does not exist).
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    target: String,
    url: Mutex<Option<String>>,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, target: &str) -> Self {
        let is_url = target.starts_with("http://") || target.starts_with("https://");
        Self {
            client,
            target: target.to_string(),
            url: Mutex::new(is_url.then(|| target.to_string())),
        }
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    /// FIFO queues are named `*.fifo`.
    pub fn is_fifo(&self) -> bool {
        self.name().ends_with(".fifo")
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// The queue's name (the last segment of a URL).
    pub fn name(&self) -> &str {
        queue_name(&self.target)
    }

    pub async fn url(&self) -> Result<String, AwsError> {
        if let Some(url) = lock(&self.url).clone() {
            return Ok(url);
        }
        let out = self
            .client
            .get_queue_url()
            .queue_name(self.name())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetQueueUrl", &e))?;
        let url = out.queue_url().unwrap_or_default().to_string();
        if url.is_empty() {
            let msg = format!("no url for queue {:?}", self.target);
            return Err(AwsError::new(
                FailureKind::Missing,
                "GetQueueUrl",
                "NoUrl",
                msg,
            ));
        }
        *lock(&self.url) = Some(url.clone());
        Ok(url)
    }

    /// Forgets a looked-up URL after SQS said the queue does not exist, so
    /// that a re-created queue is found again.
    pub fn on_error(&self, err: &AwsError) {
        let is_url = self.target.starts_with("http");
        if err.kind == FailureKind::Missing && !is_url {
            *lock(&self.url) = None;
        }
    }

    /// One `SendMessageBatch` call (≤ 10 entries, ≤ 256 KiB); the outcome per entry.
    pub async fn send(&self, msgs: &[&Outgoing]) -> Result<Vec<EntryOutcome>, AwsError> {
        let url = self.url().await?;
        let mut entries = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            let mut e = SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message_body(m.body.clone())
                .set_message_group_id(m.group_id.clone())
                .set_message_deduplication_id(m.dedup_id.clone());
            for (k, v) in &m.attributes {
                let value = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(v.clone())
                    .build()
                    .map_err(|e| build_error("SendMessageBatch", e))?;
                e = e.message_attributes(k.clone(), value);
            }
            entries.push(e.build().map_err(|e| build_error("SendMessageBatch", e))?);
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                let err = AwsError::from_sdk("SendMessageBatch", &e);
                self.on_error(&err);
                err
            })?;
        Ok(EntryOutcome::collect(
            msgs.len(),
            out.successful()
                .iter()
                .map(|ok| (Some(ok.id()), ok.message_id())),
            out.failed()
                .iter()
                .map(|f| (f.id(), f.code(), f.message(), f.sender_fault())),
        ))
    }
}
