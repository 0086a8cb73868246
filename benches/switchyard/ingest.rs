//! Scenario 3: HTTP ingest latency, request to durable, at fixed rates and
//! at saturation, single events and batches.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use switchyard::Store;

use crate::load::{self, Sample};
use crate::report::{Report, Section};
use crate::util::{self, ms, quantile, rate};

/// When the router cursor passed each value: a request's outputs are
/// durable once the cursor is past its largest offset (the pipeline commits
/// outputs and cursor in one write).
#[derive(Clone, Default)]
pub struct CursorLog(Arc<Mutex<Vec<(Instant, u64)>>>);

impl CursorLog {
    pub fn spawn(store: Store) -> (CursorLog, tokio::task::JoinHandle<()>) {
        let log = CursorLog::default();
        let l = log.clone();
        let task = tokio::spawn(async move {
            let mut appends = store.watch_appends();
            let mut last = 0;
            while appends.changed().await.is_ok() {
                let c = store.cursor("router").unwrap_or(0);
                if c > last {
                    last = c;
                    l.0.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((Instant::now(), c));
                }
            }
        });
        (log, task)
    }

    /// When the cursor first passed `offset`.
    pub fn passed(&self, offset: u64) -> Option<Instant> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let i = v.partition_point(|(_, c)| *c <= offset);
        v.get(i).map(|(t, _)| *t)
    }

    pub fn entries(&self) -> Vec<(Instant, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Waits until the pipeline has handled everything in the input topic.
pub async fn caught_up(store: &Store) -> Result<()> {
    util::wait_until(Duration::from_secs(300), || {
        let len = store.topic_len("events").unwrap_or(0);
        store.cursor("router").unwrap_or(0) >= len
    })
    .await
}

pub struct Latencies {
    pub ack: Vec<Duration>,
    pub durable_out: Vec<Duration>,
}

pub fn latencies(samples: &[Sample], cursor: &CursorLog) -> Latencies {
    let mut ack: Vec<Duration> = samples.iter().map(|s| s.acked - s.due).collect();
    let mut out: Vec<Duration> = samples
        .iter()
        .filter_map(|s| {
            cursor
                .passed(s.max_offset)
                .map(|t| t.saturating_duration_since(s.due))
        })
        .collect();
    ack.sort_unstable();
    out.sort_unstable();
    Latencies {
        ack,
        durable_out: out,
    }
}

fn pcts(v: &[Duration]) -> [String; 3] {
    [
        ms(quantile(v, 0.5)),
        ms(quantile(v, 0.99)),
        ms(quantile(v, 0.999)),
    ]
}

/// The rates each mode runs at; infinity is closed-loop saturation.
const RATES: [f64; 3] = [1_000.0, 10_000.0, f64::INFINITY];

/// What one rate measured.
struct Measured {
    achieved: f64,
    /// The router's CPU, in cores.
    cores: f64,
    commits_per_sec: f64,
    writes_per_commit: f64,
    /// The share of the time the store's writer thread spent committing.
    writer_busy: f64,
    latencies: Latencies,
}

/// One rate. With `direct`, the outputs are written with the input before
/// the 202, so "output durable" is the ack.
async fn measure(
    router: &util::Router,
    reqs: &Arc<Vec<Vec<u8>>>,
    batch: usize,
    offered: f64,
    secs: u64,
    cursor: &CursorLog,
    direct: bool,
) -> Result<Measured> {
    let start = Instant::now();
    let cpu = util::cpu_time();
    let counts = util::StoreCounts::now();
    let (addr, reqs) = (router.addr, reqs.clone());
    let (samples, generator_cpu) = load::apart(move || async move {
        if offered.is_finite() {
            load::open_loop(
                addr,
                reqs,
                offered / batch as f64,
                Duration::from_secs(secs),
                64,
            )
            .await
        } else {
            load::closed_loop(addr, reqs, Duration::from_secs(secs), 32).await
        }
    })
    .await?;
    let wall = start.elapsed().as_secs_f64();
    let achieved = (samples.len() * batch) as f64 / wall;
    let router_cores = (util::cpu_time() - cpu)
        .saturating_sub(generator_cpu)
        .as_secs_f64()
        / wall;
    // Until the pipeline caught up: its commits belong to this rate too.
    caught_up(&router.rt.store).await?;
    let wall_all = start.elapsed();
    let counts = counts.since();
    let (commits, writes) = (counts.commits as f64, counts.writes as f64);
    let mut l = latencies(&samples, cursor);
    if direct {
        l.durable_out = l.ack.clone();
    }
    Ok(Measured {
        achieved,
        cores: router_cores,
        commits_per_sec: commits / wall_all.as_secs_f64(),
        writes_per_commit: if commits > 0.0 { writes / commits } else { 0.0 },
        writer_busy: counts.committing.as_secs_f64() / wall_all.as_secs_f64(),
        latencies: l,
    })
}

/// The floor under every ingest latency on this machine, measured in the
/// same run: one 4 KiB `fdatasync`, and store writes of one event and of
/// 50 (a frame of the write-ahead log synced, then a redb commit without a
/// sync), each repeated `n` times in a row (`n / 4` for 50).
async fn commit_floor(
    dir: &std::path::Path,
    event: &switchyard::Event,
    n: usize,
) -> Result<Section> {
    use std::io::Write as _;
    let mut s = Section::new(
        "3b. What one durable commit costs here",
        "Each row repeats one operation back to back on the disk the benchmarks use, with no other load; \
         \"CPU µs each\" is the process's CPU time (user and system) per operation. \
         A store commit appends one frame to the store's write-ahead log and syncs it, then applies the \
         writes to redb without a sync; a checkpoint (every `[store] checkpoint_mb` of log, 1 MiB by default, and when the writer is idle) \
         makes redb durable (the last two rows: one each, of a log written by 50-event writes). Every ingest answer waits for at least one store commit (two for an output through the outbox), \
         so these tails bound the latencies above: the p99 targets cannot be met by a router on a disk \
         whose commit p99 is near them.",
        &[
            "operation",
            "count",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "CPU µs each",
        ],
    );
    let add = |s: &mut Section, what: &str, mut v: Vec<Duration>, cpu: Duration| {
        v.sort_unstable();
        let each = cpu.as_secs_f64() * 1e6 / v.len().max(1) as f64;
        s.row(vec![
            what.into(),
            rate(v.len() as f64),
            ms(quantile(&v, 0.5)),
            ms(quantile(&v, 0.99)),
            ms(quantile(&v, 0.999)),
            ms(v.last().copied().unwrap_or_default()),
            format!("{each:.0}"),
        ]);
    };
    let mut file = std::fs::File::create(dir.join("fsync-probe"))?;
    let page = [0x5a_u8; 4096];
    let mut times = Vec::with_capacity(n);
    let cpu = util::cpu_time();
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(&page)?;
        file.sync_data()?;
        times.push(t.elapsed());
    }
    add(
        &mut s,
        "write 4 KiB + fdatasync",
        times,
        util::cpu_time() - cpu,
    );
    let store = Store::open(&dir.join("commit-probe"))?;
    let fifty = vec![("events".to_string(), event.clone()); 50];
    for (events, count) in [(1, n), (50, n / 4)] {
        let mut times = Vec::with_capacity(count);
        let cpu = util::cpu_time();
        for _ in 0..count {
            let t = Instant::now();
            store
                .write(switchyard::store::WriteBatch {
                    appends: fifty[..events].to_vec(),
                    ..Default::default()
                })
                .await?;
            times.push(t.elapsed());
        }
        let what = match events {
            1 => "store write of one event (one commit)".to_string(),
            n => format!("store write of {n} events (one commit)"),
        };
        add(&mut s, &what, times, util::cpu_time() - cpu);
    }
    store.close();

    // A crash with `log_mib` of write-ahead log: its replay at the next
    // open, and the checkpoint a clean close makes of the same log.
    let log_mib: u64 = if n >= 2000 { 64 } else { 16 };
    let dir = dir.join("replay-probe");
    let store = Store::open_with(&dir, switchyard::store::DEFAULT_CACHE_MB, 256)?;
    while store.wal_bytes() < log_mib * 1024 * 1024 {
        store
            .write(switchyard::store::WriteBatch {
                appends: fifty.clone(),
                ..Default::default()
            })
            .await?;
    }
    let copy = dir.with_extension("crashed");
    std::fs::create_dir_all(&copy)?;
    for name in ["switchyard.redb", "switchyard.wal"] {
        std::fs::copy(dir.join(name), copy.join(name))?;
    }
    let m = switchyard::obs::metrics().store_checkpoints.series(["ok"]);
    let before = m.sum();
    let cpu = util::cpu_time();
    store.close();
    let took = m.sum() - before;
    add(
        &mut s,
        &format!("checkpoint of {log_mib} MiB of write-ahead log (clean close)"),
        vec![took],
        util::cpu_time() - cpu,
    );
    drop(store);
    let (t, cpu) = (Instant::now(), util::cpu_time());
    let reopened = Store::open(&copy)?;
    let took = t.elapsed();
    let replayed = reopened.replayed();
    anyhow::ensure!(replayed > 0, "the copy had nothing to replay");
    add(
        &mut s,
        &format!(
            "open after a crash: {replayed} commits ({log_mib} MiB) replayed and checkpointed"
        ),
        vec![took],
        util::cpu_time() - cpu,
    );
    reopened.close();
    Ok(s)
}

/// Runs the scenario; returns the saturation rate of single events.
pub fn ingest(
    report: &mut Report,
    bodies: &[String],
    event: &switchyard::Event,
    quick: bool,
) -> Result<f64> {
    let rt = util::threads(2)?;
    rt.block_on(async {
        let outbox = util::fanout_config(&util::dist("domain-fanout"), 4, false);
        let tmp = tempfile::tempdir()?;
        let router = util::Router::in_dir(tmp.path(), &outbox).await?;
        let store = router.rt.store.clone();
        let (cursor, watcher) = CursorLog::spawn(store.clone());
        let secs = if quick { 2 } else { 8 };
        let mut s = Section::new(
            "3. HTTP ingest latency",
            &format!(
                "The router and an in-process load generator share the machine (loopback, keep-alive HTTP/1.1); \
                 the generator runs on a thread and runtime of its own, as a separate client would. \
                 \"router CPU\" is the process's CPU time less the generator thread's, over the wall time. \
                 Fixed rates run open loop for {secs} s over 64 connections, latency counted from when each \
                 request was due; saturation runs closed loop with 32 requests in flight. \"ack\" is request to \
                 the 202, which the router sends once the events are durable in the ingest topic; \"output\" is \
                 request to the domain-fanout output being durable (the router cursor passed the event). \
                 Batches carry 50 events; their latency is per request. \"direct route\" is the same route with \
                 `delivery = \"direct\"`: the plugin runs inside the request and the input and its outputs are \
                 written in one commit before the 202, so the output is durable at the ack (one commit per \
                 request group instead of two). \"commits/s\" and \"writes per commit\" are the store's \
                 (from the router's metrics, until the pipeline caught up): every ingest request and every pipeline \
                 batch is one write, and a commit folds in every write queued while the one before it ran; \"writer busy\" \
                 is the share of the time the store's one writer thread spent in commits (durable write included) and checkpoints."
            ),
            &["mode", "offered events/s", "achieved events/s", "router CPU (cores)", "commits/s", "writes per commit", "writer busy", "ack p50 ms", "ack p99 ms", "ack p99.9 ms", "output p50 ms", "output p99 ms", "output p99.9 ms"],
        );
        let mut saturation_single = 0.0;
        // When the router could not keep up with the offered rate, its
        // latencies count the backlog: the headline says so.
        let p99_target = |report: &mut Report, figure: &str, l: &[Duration], m: &Measured| {
            let p99 = quantile(l, 0.99);
            let mut value = format!("{} ms", ms(p99));
            if m.achieved < 0.97 * 10_000.0 {
                value.push_str(&format!(" (behind: {} of 10,000 events/s)", rate(m.achieved)));
            }
            report.headline(figure, value, "≤ 2 ms", Some(p99 <= Duration::from_millis(2)));
        };
        let row = |s: &mut Section, mode: &str, offered: f64, m: &Measured| {
            let [a50, a99, a999] = pcts(&m.latencies.ack);
            let [o50, o99, o999] = pcts(&m.latencies.durable_out);
            s.row(vec![
                mode.into(),
                if offered.is_finite() { rate(offered) } else { "saturation".into() },
                rate(m.achieved),
                format!("{:.2}", m.cores),
                rate(m.commits_per_sec),
                format!("{:.1}", m.writes_per_commit),
                format!("{:.0} %", m.writer_busy * 100.0),
                a50, a99, a999, o50, o99, o999,
            ]);
        };
        for (mode, batch) in [("single", 1usize), ("batch of 50", 50)] {
            let reqs = Arc::new(load::bodies(bodies, batch));
            // Warm up connections, allocator and plugin instances.
            load::closed_loop(router.addr, reqs.clone(), Duration::from_millis(300), 8).await?;
            caught_up(&store).await?;
            for offered in RATES {
                let m = measure(&router, &reqs, batch, offered, secs, &cursor, false).await?;
                if offered.is_infinite() && batch == 1 {
                    saturation_single = m.achieved;
                }
                if offered == 10_000.0 && batch == 1 {
                    p99_target(report, "ingest p99, request → durable (202), 10k events/s single", &m.latencies.ack, &m);
                    p99_target(report, "ingest p99, request → output durable, 10k events/s single", &m.latencies.durable_out, &m);
                }
                row(&mut s, mode, offered, &m);
            }
        }
        watcher.abort();
        router.stop().await?;

        // The same route with direct delivery, on a fresh router and store.
        let tmp = tempfile::tempdir()?;
        let router = util::Router::in_dir(tmp.path(), &format!("{outbox}delivery = \"direct\"\n")).await?;
        let (cursor, watcher) = CursorLog::spawn(router.rt.store.clone());
        let reqs = Arc::new(load::bodies(bodies, 1));
        load::closed_loop(router.addr, reqs.clone(), Duration::from_millis(300), 8).await?;
        for offered in RATES {
            let m = measure(&router, &reqs, 1, offered, secs, &cursor, true).await?;
            if offered == 10_000.0 {
                p99_target(report, "ingest p99, request → output durable, 10k events/s single, direct route", &m.latencies.durable_out, &m);
            }
            row(&mut s, "single, direct route", offered, &m);
        }
        // Every accepted event has its output: the outputs were written
        // with the inputs, not by the pipeline.
        let store = &router.rt.store;
        let inputs = store.topic_len("events")?;
        let outputs: u64 = store.topics()?.iter().filter(|(t, _)| t.starts_with("domain.")).map(|(_, n)| n).sum();
        anyhow::ensure!(outputs == inputs, "direct route: {inputs} inputs but {outputs} outputs");
        watcher.abort();
        router.stop().await?;

        report.headline("ingest saturation, single events (events/s)", rate(saturation_single), "–", None);
        report.sections.push(s);
        let probe = tempfile::tempdir()?;
        report.sections.push(commit_floor(probe.path(), event, if quick { 500 } else { 2000 }).await?);
        Ok(saturation_single)
    })
}
