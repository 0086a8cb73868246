//! Shared pieces: configs, an in-process router on 127.0.0.1:0, CPU time,
//! resident memory, percentiles and number formatting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use switchyard::{Config, Runtime};
use tokio::sync::watch;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn dist(name: &str) -> PathBuf {
    root().join("plugins/dist").join(format!("{name}.wasm"))
}

/// The repository's schemas with `extra` (plugins, routes, router settings).
pub fn config_text(extra: &str) -> String {
    let schemas = root().join("config/schemas");
    // For trials of the store's settings against the defaults.
    let mut store = String::new();
    for (var, key) in [
        ("SWITCHYARD_BENCH_CHECKPOINT_MB", "checkpoint_mb"),
        ("SWITCHYARD_BENCH_CACHE_MB", "cache_mb"),
    ] {
        if let Ok(v) = std::env::var(var) {
            store.push_str(&format!("{key} = {v}\n"));
        }
    }
    if !store.is_empty() {
        store = format!("[store]\n{store}\n");
    }
    format!(
        "[schemas]\nbase = \"{}\"\ntypes_dir = \"{}\"\n\n{store}{extra}\n",
        schemas.join("hmpps-domain-event.schema.json").display(),
        schemas.join("types").display(),
    )
}

/// A stateless domain-fanout route over every event type.
pub fn fanout_config(plugin: &Path, workers: usize, watch: bool) -> String {
    config_text(&format!(
        r#"[router]
workers = {workers}
retry_backoff_ms = 1

[reload]
watch = {watch}

[plugins.domain-fanout]
path = "{}"
capabilities = ["log"]
config = {{ topic_prefix = "domain." }}

[[routes]]
name = "domain-fanout"
match = ["*"]
pipeline = ["domain-fanout"]
"#,
        plugin.display()
    ))
}

/// Writes `text` as `dir/switchyard.toml` and loads it.
pub fn write_config(dir: &Path, text: &str) -> Result<(PathBuf, Config)> {
    let file = dir.join("switchyard.toml");
    std::fs::write(&file, text)?;
    let cfg = Config::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((file, cfg))
}

/// A router running in this process, served on an ephemeral loopback port.
pub struct Router {
    pub rt: Arc<Runtime>,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Router {
    /// A router from config `text`, written as `dir/switchyard.toml`, with
    /// its data in `dir/data`.
    pub async fn in_dir(dir: &Path, text: &str) -> Result<Router> {
        let (_, cfg) = write_config(dir, text)?;
        Router::start(cfg, &dir.join("data")).await
    }

    pub async fn start(cfg: Config, data_dir: &Path) -> Result<Router> {
        let rt = Runtime::start(cfg, data_dir)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(switchyard::server::serve(rt.clone(), listener, rx));
        // `serve` starts the reload controller; scenarios ask it for reloads.
        let r = rt.clone();
        wait_until(Duration::from_secs(30), || r.reload.get().is_some()).await?;
        Ok(Router {
            rt,
            addr,
            stop,
            task,
        })
    }

    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("router task")??;
        Ok(())
    }
}

/// The store's successful commits, their total time and its writes (the
/// process's metrics registry).
#[derive(Clone, Copy)]
pub struct StoreCounts {
    pub commits: u64,
    /// The commits' and checkpoints' total time: over a wall time, how
    /// busy the writer was.
    pub committing: Duration,
    pub writes: u64,
}

impl StoreCounts {
    /// The counts so far.
    pub fn now() -> StoreCounts {
        let m = switchyard::obs::metrics();
        let commits = m.store_commits.series(["ok"]);
        StoreCounts {
            commits: commits.count(),
            committing: commits.sum() + m.store_checkpoints.series(["ok"]).sum(),
            writes: m.store_writes.series(["ok"]).count(),
        }
    }

    /// What was counted since `self` was taken.
    pub fn since(self) -> StoreCounts {
        let now = StoreCounts::now();
        StoreCounts {
            commits: now.commits - self.commits,
            committing: now.committing.saturating_sub(self.committing),
            writes: now.writes - self.writes,
        }
    }
}

/// Polls `f` every millisecond until it holds or `deadline` passes.
pub async fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + deadline;
    while !f() {
        anyhow::ensure!(
            Instant::now() < end,
            "condition not reached in {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time (user + system) the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Resident set size of `pid` (`self` for this process), in KiB.
pub fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The `q` quantile (0..=1) of sorted `v`.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

pub fn us(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// A rate with thousands separators.
pub fn rate(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

/// `x` as [`ratio`] does, with a third decimal when two would print the
/// target `line` itself (0.697 against 0.70 reads "0.697×", not a "0.70×"
/// that missed).
pub fn ratio_against(x: f64, line: f64) -> String {
    if format!("{x:.2}") == format!("{line:.2}") && x != line {
        format!("{x:.3}×")
    } else {
        ratio(x)
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A runtime on this thread only.
pub fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A runtime with `n` worker threads.
pub fn threads(n: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(n)
        .enable_all()
        .build()?)
}
