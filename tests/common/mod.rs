//! Shared helpers for the integration tests: start the real `switchyard`
//! binary on an ephemeral port with a temp data dir and the real plugins, talk
//! to it over HTTP, and wait on conditions with deadlines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How long the router may take to start: it compiles every plugin first,
/// and a JavaScript or Python component takes seconds to compile even on an
/// idle machine (many more on a busy one).
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(240);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A built plugin component from `plugins/dist`. Fails (never skips) when
/// missing: the test command builds them first.
pub fn plugin(name: &str) -> PathBuf {
    let p = root().join("plugins/dist").join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: build the plugins first (plugins/build.sh, run by scripts/test)",
        p.display()
    );
    p
}

/// A config with the repository's schemas and the given plugins/routes TOML.
pub fn config_with(extra: &str) -> String {
    config_with_router("", extra)
}

/// Like `config_with`, with more `[router]` keys.
pub fn config_with_router(router: &str, extra: &str) -> String {
    let schemas = root().join("config/schemas");
    format!(
        r#"
[schemas]
base = "{base}"
types_dir = "{types}"

[router]
retry_backoff_ms = 1
{router}

{extra}
"#,
        base = schemas.join("hmpps-domain-event.schema.json").display(),
        types = schemas.join("types").display(),
    )
}

/// The default pipelines (projection + fanout) with absolute plugin paths.
pub fn default_config() -> String {
    let text = std::fs::read_to_string(root().join("config/switchyard.toml"))
        .expect("read default config");
    let dist = root().join("plugins/dist");
    plugin("prisoner-projection");
    plugin("domain-fanout");
    text.replace("../plugins/dist", &dist.display().to_string())
        .replace(
            "schemas/",
            &format!("{}/", root().join("config/schemas").display()),
        )
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// POSTs `event` as JSON to the router at `base`: the status, the
/// `Retry-After` header (empty when absent) and the body.
pub fn post_event(agent: &ureq::Agent, base: &str, event: &Value) -> (u16, String, Value) {
    let mut resp = agent
        .post(&format!("{base}/v1/events"))
        .header("content-type", "application/json")
        .send(event.to_string().as_bytes())
        .expect("POST");
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (resp.status().as_u16(), retry, body)
}

/// A running router process.
pub struct Router {
    child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
}

impl Router {
    /// Writes `config` into `dir/switchyard.toml` and starts the router with
    /// its data in `dir/data`.
    pub fn start(dir: &Path, config: &str) -> Router {
        Self::start_with(dir, config, |_| {})
    }

    /// Like `start`, with a hook to adjust the command (limits, env).
    pub fn start_with(dir: &Path, config: &str, adjust: impl FnOnce(&mut Command)) -> Router {
        let cfg = dir.join("switchyard.toml");
        std::fs::write(&cfg, config).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("start switchyard");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "router did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Router {
            child: Some(child),
            base: format!("http://{addr}"),
            dir: dir.to_path_buf(),
            config: cfg,
            log,
            agent: agent(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs `body` with `content_type`; returns status and JSON body.
    pub fn post(&self, content_type: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self
            .agent
            .post(self.url("/v1/events"))
            .header("content-type", content_type);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body).expect("POST /v1/events");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn post_json(&self, body: &Value) -> (u16, Value) {
        self.post("application/json", body.to_string().as_bytes(), &[])
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut resp = self.agent.get(self.url(path)).call().expect("GET");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The value of the first `/metrics` line that starts with `series` (a
    /// metric's name and space, or its name and labels, or the start of
    /// them); `None` when there is none or the scrape fails.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .agent
            .get(self.url("/metrics"))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
    }

    /// Every record of `topic`, following `next` pages.
    pub fn topic(&self, topic: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let (status, body) =
                self.get(&format!("/v1/topics/{topic}/events?from={from}&limit=1000"));
            assert_eq!(status, 200, "{body}");
            let events = body["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return out;
            }
            from = body["next"].as_u64().expect("next");
            out.extend(events);
        }
    }

    /// Waits until `topic` has at least `n` records; returns them.
    pub fn wait_for(&self, topic: &str, n: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let records = self.topic(topic);
            if records.len() >= n {
                return records;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "topic {topic} has {} records, expected {n}; log:\n{}",
                    records.len(),
                    self.log.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Length of a topic per `GET /v1/topics` (0 when absent).
    pub fn topic_len(&self, topic: &str) -> u64 {
        let (_, body) = self.get("/v1/topics");
        body["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == topic)
            .and_then(|t| t["length"].as_u64())
            .unwrap_or(0)
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let start = Instant::now();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "router exited with {status}");
                    return;
                }
                assert!(start.elapsed() < DEADLINE, "router did not stop on SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HMPPS domain event for one prisoner.
pub fn hmpps(event_type: &str, noms: &str, prison: &str, occurred_at: &str) -> Value {
    json!({
        "eventType": event_type,
        "version": 1,
        "occurredAt": occurred_at,
        "description": "A prisoner movement",
        "detailUrl": format!("https://prisoner-search.example/prisoner/{noms}"),
        "additionalInformation": { "prisonId": prison, "reason": "ADMISSION" },
        "personReference": { "identifiers": [ { "type": "NOMS", "value": noms } ] }
    })
}

pub const RECEIVED: &str = "prison-offender-events.prisoner.received";
pub const RELEASED: &str = "prison-offender-events.prisoner.released";

/// The version the router gives a component file: 12 hex digits of SHA-256.
pub fn version_of(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).expect("read component");
    hex::encode(Sha256::digest(&bytes))[..12].to_string()
}

/// Replaces `dst` with `src` the way a deploy tool does: write aside, rename.
pub fn install_atomically(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("wasm.partial");
    std::fs::copy(src, &tmp).expect("copy component");
    std::fs::rename(&tmp, dst).expect("rename component");
}

impl Router {
    /// `GET /v1/plugins` entry of one plugin.
    pub fn plugin_status(&self, name: &str) -> Value {
        let (_, body) = self.get("/v1/plugins");
        body["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until `cond` holds for the plugin's status; returns it.
    pub fn wait_plugin(&self, name: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let status = self.plugin_status(name);
            if cond(&status) {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "plugin {name}: timed out waiting for {what}; status: {status:#}\nlog:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Number of reload records the plugin has.
    pub fn reload_count(&self, name: &str) -> usize {
        self.plugin_status(name)["reloads"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Waits until the router has consumed everything in `events`.
    pub fn wait_idle(&self, topic: &str, n: usize) -> Vec<Value> {
        self.wait_for(topic, n)
    }
}

impl Router {
    /// POSTs JSON `body` to an admin `path`; returns status and JSON body.
    pub fn post_admin(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut resp = self
            .agent
            .post(self.url(path))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .expect("POST");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until `cond` holds, re-evaluating it; `what` names it on failure.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads one raw HTTP/1.1 answer from `stream`: its head, lower-cased, and
/// its `content-length` body.
pub fn read_answer(stream: &mut std::net::TcpStream) -> (String, String) {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).to_string();
                return (head, body);
            }
        }
        let n = std::io::Read::read(stream, &mut buf).expect("an answer");
        assert!(n > 0, "closed before a whole answer: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}
