//! The SNS/SQS emulator for the AWS tests and a small blocking AWS client.
//!
//! The emulator is ministack, installed from PyPI into `.venv/` by
//! `scripts/setup`; each test starts its own on a free 127.0.0.1 port, so
//! tests share no state, and can stop and restart it (empty, as after an
//! outage) on the same port. Included with `#[path]` by the AWS test files
//! only, so that the other test binaries do not link the AWS SDK.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};

use crate::common::{DEADLINE, Router, root};

/// Region the tests and the router use; any region works with the emulator.
pub const REGION: &str = "eu-west-2";

/// A running emulator; killed on drop.
pub struct Emulator {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    /// Its TMPDIR (it writes a pid file there).
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn ministack() -> PathBuf {
    let bin = root().join(".venv/bin/ministack");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup (it installs the SNS/SQS emulator)",
        bin.display()
    );
    bin
}

impl Emulator {
    /// Starts a fresh emulator on a free port and waits until it answers.
    pub fn start() -> Emulator {
        let mut e = Emulator {
            child: None,
            port: free_port(),
            url: String::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        e.url = format!("http://127.0.0.1:{}", e.port);
        e.launch();
        e
    }

    fn launch(&mut self) {
        let child = Command::new(ministack())
            .env("BIND_HOST", "127.0.0.1")
            .env("GATEWAY_PORT", self.port.to_string())
            .env("SERVICES", "sns,sqs")
            .env("LOG_LEVEL", "WARNING")
            .env("TMPDIR", self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator");
        self.child = Some(child);
        let agent = crate::common::agent();
        let health = format!("{}/_ministack/health", self.url);
        let start = Instant::now();
        loop {
            if let Ok(r) = agent.get(&health).call()
                && r.status() == 200
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("the emulator exited with {status} before it was ready");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the emulator did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it: every call fails until `restart`, and its state is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Environment for a `switchyard` process talking to this emulator
    /// through the standard chain.
    pub fn env(&self, cmd: &mut Command) {
        aws_env(cmd, &self.url);
    }

    /// Runs `switchyard aws setup --config FILE`; returns its output.
    pub fn setup(&self, config: &std::path::Path) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["aws", "setup", "--config"]).arg(config);
        self.env(&mut cmd);
        let out = cmd.output().expect("run switchyard aws setup");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "aws setup failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    pub fn client(&self) -> Aws {
        Aws::new(&self.url)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay on 127.0.0.1 in front of the emulator: what the router sees
/// as "the broker". Cutting it makes the broker unreachable for the router
/// while the test restarts the emulator and re-creates its resources, so
/// the router cannot publish into a half-rebuilt broker (a topic with no
/// subscription yet drops messages, as real SNS does).
pub struct Relay {
    pub url: String,
    target: std::sync::Arc<std::sync::Mutex<Option<u16>>>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    pub fn to(emu: &Emulator) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = std::sync::Arc::new(std::sync::Mutex::new(Some(emu.port)));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (t, l) = (target.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Some(port) = *t.lock().unwrap() else {
                    drop(client); // refused: connection closed at once
                    continue;
                };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                let mut conns = l.lock().unwrap();
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        conns.push(c);
                    }
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay { url, target, live }
    }

    /// The broker becomes unreachable: open connections are cut, new ones closed.
    pub fn cut(&self) {
        *self.target.lock().unwrap() = None;
        for c in self.live.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The broker is reachable again, at `emu`.
    pub fn restore(&self, emu: &Emulator) {
        *self.target.lock().unwrap() = Some(emu.port);
    }

    /// Environment for a `switchyard` process reaching the emulator through this relay.
    pub fn env(&self, cmd: &mut Command) {
        aws_env(cmd, &self.url);
    }
}

fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

fn aws_env(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
}

/// A message received by a test.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    /// Attribute values as text (Binary ones decoded as UTF-8).
    pub attributes: HashMap<String, String>,
    pub group: Option<String>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.body))
    }
}

/// Blocking SNS/SQS calls with fixed test credentials.
pub struct Aws {
    rt: tokio::runtime::Runtime,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Aws {
    pub fn new(endpoint: &str) -> Aws {
        let creds = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests");
        let region = aws_sdk_sqs::config::Region::new(REGION);
        let sqs = aws_sdk_sqs::Config::builder()
            .behavior_version_latest()
            .region(region.clone())
            .endpoint_url(endpoint)
            .credentials_provider(creds.clone())
            .build();
        let sns = aws_sdk_sns::Config::builder()
            .behavior_version_latest()
            .region(region)
            .endpoint_url(endpoint)
            .credentials_provider(creds)
            .build();
        Aws {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            sns: aws_sdk_sns::Client::from_conf(sns),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
        }
    }

    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn queue_url(&self, name: &str) -> String {
        let out = self
            .block(self.sqs.get_queue_url().queue_name(name).send())
            .unwrap_or_else(|e| panic!("queue {name}: {e:?}"));
        out.queue_url().unwrap().to_string()
    }

    pub fn topic_arn(&self, name: &str) -> String {
        let out = self
            .block(self.sns.list_topics().send())
            .expect("list topics");
        out.topics()
            .iter()
            .filter_map(|t| t.topic_arn())
            .find(|a| a.ends_with(&format!(":{name}")))
            .unwrap_or_else(|| panic!("no topic {name}"))
            .to_string()
    }

    /// Sends one message with String attributes (and FIFO ids when given).
    pub fn send(
        &self,
        queue: &str,
        body: &str,
        attrs: &[(&str, &str)],
        fifo: Option<(&str, &str)>,
    ) {
        let mut req = self
            .sqs
            .send_message()
            .queue_url(self.queue_url(queue))
            .message_body(body);
        for (k, v) in attrs {
            let value = MessageAttributeValue::builder()
                .data_type(if v.parse::<f64>().is_ok() {
                    "Number"
                } else {
                    "String"
                })
                .string_value(*v)
                .build()
                .unwrap();
            req = req.message_attributes(*k, value);
        }
        if let Some((group, dedup)) = fifo {
            req = req.message_group_id(group).message_deduplication_id(dedup);
        }
        self.block(req.send())
            .unwrap_or_else(|e| panic!("send to {queue}: {e:?}"));
    }

    /// Sends one message with typed attributes: `(name, type, value)`, the
    /// value of a `Binary` attribute given as text.
    pub fn send_typed(&self, queue: &str, body: &str, attrs: &[(&str, &str, &str)]) {
        let mut req = self
            .sqs
            .send_message()
            .queue_url(self.queue_url(queue))
            .message_body(body);
        for (k, ty, v) in attrs {
            let value = MessageAttributeValue::builder().data_type(*ty);
            let value = if ty.starts_with("Binary") {
                value.binary_value(aws_sdk_sqs::primitives::Blob::new(v.as_bytes()))
            } else {
                value.string_value(*v)
            };
            req = req.message_attributes(*k, value.build().unwrap());
        }
        self.block(req.send())
            .unwrap_or_else(|e| panic!("send to {queue}: {e:?}"));
    }

    /// Publishes one message to a topic with String attributes.
    pub fn publish(&self, topic: &str, body: &str, attrs: &[(&str, &str)]) {
        let mut req = self
            .sns
            .publish()
            .topic_arn(self.topic_arn(topic))
            .message(body);
        for (k, v) in attrs {
            let value = aws_sdk_sns::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*v)
                .build()
                .unwrap();
            req = req.message_attributes(*k, value);
        }
        self.block(req.send())
            .unwrap_or_else(|e| panic!("publish to {topic}: {e:?}"));
    }

    /// One receive (long poll of `wait_s`), deleting what it got.
    pub fn receive_once(&self, queue: &str, wait_s: i32) -> Vec<Received> {
        let url = self.queue_url(queue);
        let out = self
            .block(
                self.sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(wait_s)
                    .message_attribute_names("All")
                    .message_system_attribute_names(MessageSystemAttributeName::All)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("receive from {queue}: {e:?}"));
        let mut got = Vec::new();
        for m in out.messages() {
            let attributes = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let text = v.string_value().map(str::to_string).unwrap_or_else(|| {
                        String::from_utf8_lossy(
                            v.binary_value().map(|b| b.as_ref()).unwrap_or_default(),
                        )
                        .to_string()
                    });
                    (k.clone(), text)
                })
                .collect();
            let group = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned();
            got.push(Received {
                body: m.body().unwrap_or_default().to_string(),
                attributes,
                group,
            });
            self.block(
                self.sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send(),
            )
            .expect("delete");
        }
        got
    }

    /// Receives until `n` messages arrived (or the deadline passes, failing).
    pub fn receive_n(&self, queue: &str, n: usize) -> Vec<Received> {
        let start = Instant::now();
        let mut got = Vec::new();
        while got.len() < n {
            assert!(
                start.elapsed() < DEADLINE,
                "queue {queue}: got {} of {n} messages: {got:#?}",
                got.len()
            );
            got.extend(self.receive_once(queue, 1));
        }
        got
    }

    /// Visible plus in-flight messages of a queue.
    pub fn depth(&self, queue: &str) -> u64 {
        let out = self
            .block(
                self.sqs
                    .get_queue_attributes()
                    .queue_url(self.queue_url(queue))
                    .attribute_names(QueueAttributeName::All)
                    .send(),
            )
            .expect("queue attributes");
        let attrs = out.attributes().cloned().unwrap_or_default();
        let n = |k: QueueAttributeName| {
            attrs
                .get(&k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        n(QueueAttributeName::ApproximateNumberOfMessages)
            + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }
}

/// Polls `GET path` on the router until `cond` holds; returns that answer.
/// (Counters move just after the broker answered, so they are waited on.)
pub fn wait_get(
    router: &Router,
    path: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (_, body) = router.get(path);
        if cond(&body) {
            return body;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "GET {path} never met the condition: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
