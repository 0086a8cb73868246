//! Scenario 7: resident memory of the real `switchyard run` process: idle
//! with the default config, with ten plugins loaded, and under saturation.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::load::{self, Conn};
use crate::report::{Report, Section};
use crate::util::{self, mib, rate, rss_kib};

/// A `switchyard run` child; killed on drop.
pub struct Router {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Router {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

fn start(config: &Path, data: &Path) -> Result<Router> {
    start_with_env(config, data, &[])
}

/// Starts `switchyard run` on `config` with extra environment variables.
pub fn start_with_env(config: &Path, data: &Path, env: &[(&str, String)]) -> Result<Router> {
    let bin = util::root().join("target/release/switchyard");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: `cargo build --release` first (scripts/bench does)",
        bin.display()
    );
    let mut child = Command::new(bin)
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "info,wasmtime=warn,cranelift=warn")
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                // The message, then the event's fields: the address is the first word.
                let rest = &line[i + "listening on http://".len()..];
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(240))
        .context("the router did not start listening")?
        .parse()?;
    Ok(Router { child, addr })
}

fn default_config() -> Result<String> {
    Ok(
        std::fs::read_to_string(util::root().join("config/switchyard.toml"))?
            .replace(
                "../plugins/dist",
                &util::root().join("plugins/dist").display().to_string(),
            )
            .replace(
                "schemas/",
                &format!("{}/", util::root().join("config/schemas").display()),
            ),
    )
}

/// Ten Rust plugins: six stateless fan-outs and four stateful projections.
fn ten_plugins() -> String {
    let mut extra = String::from("[reload]\nwatch = false\n\n");
    for i in 0..10 {
        let (file, caps, config) = if i < 6 {
            (
                "domain-fanout",
                r#"["log"]"#,
                format!(r#"{{ topic_prefix = "d{i}." }}"#),
            )
        } else {
            (
                "prisoner-projection",
                r#"["log", "clock", "kv"]"#,
                format!(r#"{{ topic = "state-{i}" }}"#),
            )
        };
        extra.push_str(&format!(
            "[plugins.p{i}]\npath = \"{}\"\ncapabilities = {caps}\nconfig = {config}\n\n[[routes]]\nname = \"r{i}\"\nmatch = [\"*\"]\npipeline = [\"p{i}\"]\n\n",
            util::dist(file).display()
        ));
    }
    util::config_text(&extra)
}

pub fn memory(report: &mut Report, bodies: &[String], quick: bool) -> Result<()> {
    let rt = util::threads(1)?;
    let tmp = tempfile::tempdir()?;
    let mut s = Section::new(
        "7. Memory (resident set of `switchyard run`)",
        "The release binary as a child process. Idle: a second after it answers `/healthz`. Ten plugins: six \
         domain-fanout and four prisoner-projection instances under their own names, each routed. Saturation: \
         the default config under closed-loop single-event load (32 in flight) from this process; the peak of \
         samples every 50 ms and the kernel's high-water mark. Per-instance memory of each language is in \
         table 2.",
        &["case", "RSS", "peak (VmHWM)", "note"],
    );
    let hwm = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let wait_healthy = |addr: SocketAddr| {
        rt.block_on(async {
            let end = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(mut c) = Conn::open(addr).await
                    && let Ok((200, _)) = c
                        .request("GET", "/healthz", b"")
                        .await
                        .map(|(s, b)| (s, b.len()))
                {
                    return Ok(());
                }
                anyhow::ensure!(Instant::now() < end, "router not healthy");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let idle = |name: &str, text: String, s: &mut Section| -> Result<u64> {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let (file, _) = util::write_config(&dir, &text)?;
        let child = start(&file, &dir.join("data"))?;
        wait_healthy(child.addr)?;
        std::thread::sleep(Duration::from_secs(1));
        let kib = rss_kib(&child.pid());
        s.row(vec![
            name.into(),
            mib(kib),
            mib(hwm(&child.pid())),
            "".into(),
        ]);
        Ok(kib)
    };
    let idle_default = idle(
        "idle, default config (2 plugins)",
        default_config()?,
        &mut s,
    )?;
    let ten = idle("idle, 10 plugins", ten_plugins(), &mut s)?;
    report.headline("RSS idle, default config", mib(idle_default), "–", None);
    report.headline("RSS idle, 10 plugins", mib(ten), "–", None);

    let dir = tmp.path().join("saturation");
    std::fs::create_dir_all(&dir)?;
    let (file, _) = util::write_config(
        &dir,
        &default_config()?.replace("watch = true", "watch = false"),
    )?;
    let child = start(&file, &dir.join("data"))?;
    wait_healthy(child.addr)?;
    let pid = child.pid();
    let secs = if quick { 3 } else { 10 };
    let reqs = Arc::new(load::bodies(bodies, 1));
    let addr = child.addr;
    let load_task = rt.spawn(load::closed_loop(addr, reqs, Duration::from_secs(secs), 32));
    let mut peak = 0;
    while !load_task.is_finished() {
        peak = peak.max(rss_kib(&pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let samples = rt.block_on(load_task)??;
    let eps = samples.len() as f64 / secs as f64;
    s.row(vec![
        "saturation, default config".into(),
        mib(peak),
        mib(hwm(&pid)),
        format!("{} events/s accepted", rate(eps)),
    ]);
    report.headline(
        "RSS under saturation (peak), default config",
        mib(peak),
        "–",
        None,
    );
    report.sections.push(s);
    Ok(())
}
