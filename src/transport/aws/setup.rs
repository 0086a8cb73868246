//! `switchyard aws setup`: creates, idempotently, the queues, topics,
//! subscriptions and dead-letter queues a config names — for local work
//! against an emulator and for tests; production accounts are usually
//! provisioned by infrastructure code instead.
//!
//! Running it twice changes nothing; running it against an emulator that
//! restarted empty re-creates everything with the same names (and, since
//! ARNs are made of region, account and name, the same ARNs).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use super::client::{AwsError, sdk_config};
use crate::config::{Config, queue_name};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{what}: {source}")]
    Aws {
        what: String,
        #[source]
        source: AwsError,
    },
}

fn at(what: impl Into<String>) -> impl FnOnce(AwsError) -> SetupError {
    let what = what.into();
    move |source| SetupError::Aws { what, source }
}

/// A queue to create, with what `setup` sets on it.
#[derive(Debug, Default)]
struct QueueSpec {
    dead_letter: Option<(String, u32)>,
    /// Topics allowed to send to it (queue policy).
    topics: BTreeSet<String>,
}

/// Creates everything `cfg` names; returns one line per resource.
pub async fn setup(cfg: &Config) -> Result<Vec<String>, SetupError> {
    let sdk = sdk_config(&cfg.aws).await.map_err(at("configuration"))?;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let mut report = Vec::new();

    let mut queues: BTreeMap<String, QueueSpec> = BTreeMap::new();
    let mut topics: BTreeSet<String> = BTreeSet::new();
    for s in cfg.sources.sqs.values() {
        let spec = queues
            .entry(queue_name(s.queue.get_ref()).to_string())
            .or_default();
        if let Some(dlq) = &s.dead_letter_queue {
            spec.dead_letter = Some((dlq.clone(), s.max_receive_count));
        }
    }
    for s in cfg.sinks.sqs.values() {
        queues
            .entry(queue_name(s.target()).to_string())
            .or_default();
    }
    for s in cfg.sinks.sns.values() {
        topics.insert(topic_name(s.target()).to_string());
    }
    for sub in &cfg.aws.subscriptions {
        topics.insert(sub.topic.clone());
        let spec = queues.entry(sub.queue.clone()).or_default();
        spec.topics.insert(sub.topic.clone());
        if let Some(dlq) = &sub.dead_letter_queue {
            spec.dead_letter = Some((dlq.clone(), sub.max_receive_count));
        }
    }

    let mut topic_arns = BTreeMap::new();
    for name in &topics {
        let arn = create_topic(&sns, name).await?;
        report.push(format!("topic {name}: {arn}"));
        topic_arns.insert(name.clone(), arn);
    }
    let mut queue_arns = BTreeMap::new();
    for (name, spec) in &queues {
        let mut attrs = BTreeMap::new();
        if let Some((dlq, max)) = &spec.dead_letter {
            let (_, dlq_arn) = create_queue(&sqs, dlq, BTreeMap::new()).await?;
            report.push(format!(
                "queue {dlq}: {dlq_arn} (dead-letter queue of {name})"
            ));
            let redrive =
                json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max.to_string() });
            attrs.insert(QueueAttributeName::RedrivePolicy, redrive.to_string());
        }
        let (url, arn) = create_queue(&sqs, name, BTreeMap::new()).await?;
        if !spec.topics.is_empty() {
            let sources: Vec<&String> = spec
                .topics
                .iter()
                .filter_map(|t| topic_arns.get(t))
                .collect();
            attrs.insert(QueueAttributeName::Policy, queue_policy(&arn, &sources));
        }
        if !attrs.is_empty() {
            sqs.set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attrs.into_iter().collect()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("SetQueueAttributes", &e))
                .map_err(at(format!("queue {name}")))?;
        }
        report.push(format!("queue {name}: {url}"));
        queue_arns.insert(name.clone(), arn);
    }
    for sub in &cfg.aws.subscriptions {
        let (Some(topic_arn), Some(queue_arn)) =
            (topic_arns.get(&sub.topic), queue_arns.get(&sub.queue))
        else {
            continue;
        };
        let what = format!("subscription {} -> {}", sub.topic, sub.queue);
        let mut attrs = vec![("RawMessageDelivery", sub.raw.to_string())];
        if let Some(policy) = sub.filter_policy_json() {
            attrs.push(("FilterPolicy", policy));
        }
        let arn = subscribe(&sns, topic_arn, queue_arn, &attrs)
            .await
            .map_err(at(what.clone()))?;
        let filter = sub.filter_policy_json().unwrap_or_else(|| "none".into());
        report.push(format!("{what}: {arn} (raw {}, filter {filter})", sub.raw));
    }
    Ok(report)
}

/// The topic name in a name or an ARN (its last segment).
fn topic_name(target: &str) -> &str {
    target.rsplit(':').next().unwrap_or(target)
}

async fn create_topic(sns: &aws_sdk_sns::Client, name: &str) -> Result<String, SetupError> {
    let mut req = sns.create_topic().name(name);
    if name.ends_with(".fifo") {
        req = req
            .attributes("FifoTopic", "true")
            .attributes("ContentBasedDeduplication", "true");
    }
    let out = req
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("CreateTopic", &e))
        .map_err(at(format!("topic {name}")))?;
    Ok(out.topic_arn().unwrap_or_default().to_string())
}

/// Creates the queue (or finds it); its URL and ARN.
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    mut attrs: BTreeMap<QueueAttributeName, String>,
) -> Result<(String, String), SetupError> {
    if name.ends_with(".fifo") {
        attrs.insert(QueueAttributeName::FifoQueue, "true".into());
        // Producers that send without a deduplication id get one from the body.
        attrs.insert(QueueAttributeName::ContentBasedDeduplication, "true".into());
    }
    let out = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attrs.into_iter().collect()))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("CreateQueue", &e))
        .map_err(at(format!("queue {name}")))?;
    let url = out.queue_url().unwrap_or_default().to_string();
    let got = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("GetQueueAttributes", &e))
        .map_err(at(format!("queue {name}")))?;
    let arn = got
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    Ok((url, arn))
}

/// Lets the given topics send to the queue (real SNS needs this; emulators
/// ignore it).
fn queue_policy(queue_arn: &str, topic_arns: &[&String]) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "switchyard-sns-to-sqs",
            "Effect": "Allow",
            "Principal": { "Service": "sns.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": topic_arns } }
        }]
    })
    .to_string()
}

/// Subscribes the queue to the topic, or brings an existing subscription's
/// attributes in line; the subscription ARN.
async fn subscribe(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    queue_arn: &str,
    attrs: &[(&str, String)],
) -> Result<String, AwsError> {
    let mut token = None;
    loop {
        let page = sns
            .list_subscriptions_by_topic()
            .topic_arn(topic_arn)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ListSubscriptionsByTopic", &e))?;
        let existing = page
            .subscriptions()
            .iter()
            .find(|s| s.protocol() == Some("sqs") && s.endpoint() == Some(queue_arn))
            .and_then(|s| s.subscription_arn().map(str::to_string))
            .filter(|arn| arn.starts_with("arn:"));
        if let Some(arn) = existing {
            for (name, value) in attrs {
                sns.set_subscription_attributes()
                    .subscription_arn(&arn)
                    .attribute_name(*name)
                    .attribute_value(value)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("SetSubscriptionAttributes", &e))?;
            }
            return Ok(arn);
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut req = sns
        .subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .return_subscription_arn(true);
    for (name, value) in attrs {
        req = req.attributes(*name, value);
    }
    let out = req
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("Subscribe", &e))?;
    Ok(out.subscription_arn().unwrap_or_default().to_string())
}
