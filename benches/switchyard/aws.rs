//! Scenario 6: SQS → domain-fanout → SNS through `switchyard run` against
//! the ministack emulator, and a bare aws-sdk loop doing the same work
//! (receive, the native transform, publish batch, delete batch), same run.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_sdk_sns::types::PublishBatchRequestEntry;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, QueueAttributeName, SendMessageBatchRequestEntry,
};
use switchyard::Event;

use crate::report::{Report, Section};
use crate::stage::PREFIX;
use crate::transform;
use crate::util::{self, rate, ratio};

const REGION: &str = "eu-west-2";

struct Emulator {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn emulator() -> Result<Emulator> {
    let bin = util::root().join(".venv/bin/ministack");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: run scripts/setup",
        bin.display()
    );
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let child = Command::new(bin)
        .env("BIND_HOST", "127.0.0.1")
        .env("GATEWAY_PORT", port.to_string())
        .env("SERVICES", "sns,sqs")
        .env("LOG_LEVEL", "WARNING")
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let e = Emulator {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let addr = format!("127.0.0.1:{port}").parse()?;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut c) = crate::load::Conn::open(addr).await
            && let Ok((200, _)) = c
                .request("GET", "/_ministack/health", b"")
                .await
                .map(|(s, b)| (s, b.len()))
        {
            return Ok(e);
        }
        anyhow::ensure!(Instant::now() < end, "the emulator did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Clients {
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
}

async fn clients(url: &str) -> Clients {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    Clients {
        sqs: aws_sdk_sqs::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
    }
}

/// A queue with `events` in it, and a topic delivering raw into a counting queue.
struct Resources {
    input: String,
    topic_arn: String,
    sink: String,
}

async fn resources(c: &Clients, tag: &str, events: &[Event]) -> Result<Resources> {
    let input = c
        .sqs
        .create_queue()
        .queue_name(format!("in-{tag}"))
        .send()
        .await?
        .queue_url
        .context("queue url")?;
    let sink = c
        .sqs
        .create_queue()
        .queue_name(format!("sink-{tag}"))
        .send()
        .await?
        .queue_url
        .context("queue url")?;
    let sink_arn = c
        .sqs
        .get_queue_attributes()
        .queue_url(&sink)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .context("queue arn")?;
    let topic_arn = c
        .sns
        .create_topic()
        .name(format!("out-{tag}"))
        .send()
        .await?
        .topic_arn
        .context("topic arn")?;
    c.sns
        .subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(sink_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await?;
    for chunk in events.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, e)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&e.data)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        c.sqs
            .send_message_batch()
            .queue_url(&input)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(Resources {
        input,
        topic_arn,
        sink,
    })
}

async fn queued(c: &Clients, url: &str) -> Result<u64> {
    let a = c
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?
        .attributes
        .unwrap_or_default();
    Ok(a.get(&QueueAttributeName::ApproximateNumberOfMessages)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

async fn wait_delivered(c: &Clients, sink: &str, n: u64) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(600);
    while queued(c, sink).await? < n {
        anyhow::ensure!(Instant::now() < end, "outputs did not all arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One receive → transform → publish → delete loop until `left` is empty.
async fn bare_loop(c: &Clients, r: &Resources, left: &std::sync::atomic::AtomicI64) -> Result<()> {
    use std::sync::atomic::Ordering;
    while left.load(Ordering::Relaxed) > 0 {
        let got = c
            .sqs
            .receive_message()
            .queue_url(&r.input)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let msgs = got.messages.unwrap_or_default();
        if msgs.is_empty() {
            continue;
        }
        let mut publish = Vec::new();
        let mut delete = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let body = m.body.as_deref().unwrap_or_default();
            let out = transform::fan_out("", body, PREFIX).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            publish.push(
                PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(out.data)
                    .build()?,
            );
            delete.push(
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .build()?,
            );
        }
        c.sns
            .publish_batch()
            .topic_arn(&r.topic_arn)
            .set_publish_batch_request_entries(Some(publish))
            .send()
            .await?;
        c.sqs
            .delete_message_batch()
            .queue_url(&r.input)
            .set_entries(Some(delete))
            .send()
            .await?;
        left.fetch_sub(msgs.len() as i64, Ordering::Relaxed);
    }
    Ok(())
}

pub fn aws(report: &mut Report, events: &[Event], quick: bool) -> Result<()> {
    let rt = util::threads(2)?;
    rt.block_on(async {
        let n = if quick { 500 } else { 3_000 }.min(events.len());
        let events = &events[..n];
        let emu = emulator().await?;
        let c = clients(&emu.url).await;

        // The bare loop: two loops, as the router's source runs two.
        let bare = resources(&c, "bare", events).await?;
        let left = std::sync::atomic::AtomicI64::new(n as i64);
        let start = Instant::now();
        let (a, b) = tokio::join!(bare_loop(&c, &bare, &left), bare_loop(&c, &bare, &left));
        a?;
        b?;
        wait_delivered(&c, &bare.sink, n as u64).await?;
        let bare_eps = n as f64 / start.elapsed().as_secs_f64();

        // The router.
        let r = resources(&c, "router", events).await?;
        let tmp = tempfile::tempdir()?;
        let text = util::config_text(&format!(
            r#"[reload]
watch = false

[aws]
endpoint_url = "{url}"
region = "{REGION}"

[sources.sqs.in]
queue = "{input}"
wait_time_s = 1
max_messages = 10
concurrency = 2

[sinks.sns.out]
topic = "{topic}"
from = ["domain.*"]
format = "data"

[plugins.domain-fanout]
path = "{plugin}"
capabilities = ["log"]
config = {{ topic_prefix = "{PREFIX}" }}

[[routes]]
name = "domain-fanout"
match = ["*"]
pipeline = ["domain-fanout"]
"#,
            url = emu.url,
            input = r.input,
            topic = r.topic_arn,
            plugin = util::dist("domain-fanout").display(),
        ));
        let (file, _) = util::write_config(tmp.path(), &text)?;
        let env = [
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_CONFIG_FILE", "/nonexistent".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".to_string()),
        ];
        // Timed from when it listens (its plugins are compiled by then).
        let router = crate::memory::start_with_env(&file, &tmp.path().join("data"), &env)?;
        let start = Instant::now();
        wait_delivered(&c, &r.sink, n as u64).await?;
        let router_eps = n as f64 / start.elapsed().as_secs_f64();
        drop(router);

        let mut s = Section::new(
            "6. AWS path (ministack emulator)",
            &format!(
                "{n} HMPPS events waiting in an SQS queue; done when all {n} fan-out outputs reached an SQS queue \
                 subscribed (raw) to the SNS topic (polled every 100 ms). Router: `switchyard run` with an SQS \
                 source (2 receive loops, 10 per receive), the domain-fanout plugin, durable log, an SNS sink \
                 (outbox, PublishBatch); timed from when it listens. Bare: two aws-sdk loops of receive (10) → \
                 native transform → PublishBatch → DeleteMessageBatch, no durability. The emulator, a Python \
                 process on the same cores, is most of the cost of both."
            ),
            &["path", "events/s", "× bare"],
        );
        s.row(vec!["bare aws-sdk loop".into(), rate(bare_eps), ratio(1.0)]);
        s.row(vec!["switchyard SQS → plugin → SNS".into(), rate(router_eps), ratio(router_eps / bare_eps)]);
        report.headline("AWS path, router events/s vs bare aws-sdk loop", ratio(router_eps / bare_eps), "–", None);
        report.sections.push(s);
        Ok(())
    })
}
