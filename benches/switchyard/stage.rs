//! Scenarios 1, 2 and 8: the cost of a Wasm stage against the same transform
//! compiled into the host, the same transform in Rust, JavaScript and Python
//! plugins, and one against two worker threads through the real pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use switchyard::Event;
use switchyard::config::{
    Capability, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_OUTPUTS, DEFAULT_MEMORY_MB,
};
use switchyard::event::{ATTR_PLUGIN, ATTR_PLUGIN_VERSION};
use switchyard::pipeline::{BatchKv, Pipeline, StagePolicy, UnitKv, derive_id, run_route};
use switchyard::plugin::{Limits, Plugin, PluginHost, PluginSpec};
use switchyard::router::{Route, Stage};
use switchyard::store::{Store, WriteBatch};

use crate::report::{Report, Section};
use crate::transform;
use crate::util::{self, cpu_time, rate, ratio, us};

pub const PREFIX: &str = "domain.";
const ROUTE: &str = "domain-fanout";
const INPUT: &str = "events";
const BATCH: usize = 256;

pub fn spec(name: &str, file: &str) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        path: util::dist(file),
        config_json: format!(r#"{{"topic_prefix":"{PREFIX}"}}"#),
        limits: Limits {
            timeout: Duration::from_secs(5),
            memory_bytes: (DEFAULT_MEMORY_MB * 1024 * 1024) as usize,
            instances: 4,
            max_outputs: DEFAULT_MAX_OUTPUTS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        },
        grants: vec![Capability::Log],
        breaker: Default::default(),
        http: Default::default(),
    }
}

/// The transform compiled into the host, with the same defaults the
/// pipeline fills into a plugin's outputs.
pub fn native_stage(ev: &Event, version: &str) -> Result<Vec<(String, Event)>, String> {
    let out = transform::fan_out(&ev.event_type, &ev.data, PREFIX).map_err(|e| format!("{e:?}"))?;
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert("domain".to_string(), out.domain);
    attributes.insert(ATTR_PLUGIN.into(), ROUTE.into());
    attributes.insert(ATTR_PLUGIN_VERSION.into(), version.into());
    let event = Event {
        id: derive_id(&ev.id, ROUTE, 0, 0),
        event_type: out.event_type,
        version: "1".into(),
        source: format!("urn:switchyard:plugin:{ROUTE}"),
        key: ev.key.clone(),
        time: ev.time.clone(),
        content_type: "application/json".into(),
        data: out.data,
        attributes,
        traceparent: ev.traceparent.clone(),
    };
    Ok(vec![(out.topic, event)])
}

pub fn route(plugin: Arc<Plugin>) -> Route {
    Route {
        name: ROUTE.into(),
        patterns: vec![switchyard::router::Glob::new("*")],
        stages: vec![Stage {
            namespace: plugin.name().to_string(),
            plugin,
        }],
        direct: false,
        topics: None,
        on_poison: Default::default(),
    }
}

/// The pipeline's policy with the default router settings (built once: the
/// pipeline does not build it per event either).
static POLICY: std::sync::LazyLock<StagePolicy> = std::sync::LazyLock::new(|| {
    StagePolicy::new(INPUT, &switchyard::config::RouterConfig::default())
});

/// How one event becomes its outputs.
pub enum Transform<'a> {
    Native,
    /// The pipeline's stage: plugin call, host-side encoding and decoding,
    /// output checks and defaults.
    Wasm(&'a Route),
}

impl Transform<'_> {
    pub async fn apply(&self, store: &Store, ev: &Event) -> Result<Vec<(String, Event)>> {
        match self {
            Transform::Native => native_stage(ev, "native").map_err(anyhow::Error::msg),
            Transform::Wasm(route) => {
                let unit = UnitKv::new(BatchKv::new(store.clone()));
                run_route(route, ev, &unit, &POLICY)
                    .await
                    .map_err(|f| anyhow::anyhow!("{}: {}", f.kind, f.error))
            }
        }
    }
}

/// Min over rounds of the time per call of `f` over `events`.
async fn per_call(
    events: &[Event],
    rounds: usize,
    t: &Transform<'_>,
    store: &Store,
) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for ev in events {
            std::hint::black_box(t.apply(store, ev).await?);
        }
        best = best.min(start.elapsed() / events.len() as u32);
    }
    Ok(best)
}

/// A fresh store holding `events` in the input topic.
pub async fn seeded_store(dir: &std::path::Path, events: &[Event]) -> Result<Store> {
    let store = Store::open(dir)?;
    seed(&store, events).await?;
    Ok(store)
}

/// Appends `events` to the input topic, a thousand to a write.
pub async fn seed(store: &Store, events: &[Event]) -> Result<()> {
    for chunk in events.chunks(1000) {
        store
            .write(WriteBatch {
                appends: chunk
                    .iter()
                    .map(|e| (INPUT.to_string(), e.clone()))
                    .collect(),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Drains the input topic as the pipeline does (batches of 256, outputs and
/// cursor committed in one durable write): (events/s, events per CPU-second).
pub async fn drain(store: &Store, n: u64, t: &Transform<'_>, consumer: &str) -> Result<(f64, f64)> {
    let (start, cpu) = (Instant::now(), cpu_time());
    let mut cursor = 0;
    while cursor < n {
        let records = store.read(INPUT, cursor, BATCH)?;
        let Some(last) = records.last().map(|r| r.offset) else {
            break;
        };
        let mut batch = WriteBatch::default();
        for r in &records {
            batch.appends.extend(t.apply(store, &r.event).await?);
        }
        cursor = last + 1;
        batch.cursors.push((consumer.to_string(), cursor));
        store.write(batch).await?;
    }
    anyhow::ensure!(cursor == n, "drained {cursor} of {n}");
    let (wall, cpu) = (start.elapsed(), cpu_time().saturating_sub(cpu));
    Ok((
        n as f64 / wall.as_secs_f64(),
        n as f64 / cpu.as_secs_f64().max(1e-9),
    ))
}

/// `n` calls of the Wasm plugin stage (or the native transform) over
/// `events` (cycled), for a profiler: the time per call (the plugin is
/// loaded first, outside it).
pub async fn stage_calls(events: &[Event], n: usize, native: bool, file: &str) -> Result<Duration> {
    let host = PluginHost::new()?;
    let plugin = host.load(spec("domain-fanout", file)).await?;
    let wasm = route(plugin);
    let tmp = tempfile::tempdir()?;
    let scratch = Store::open(&tmp.path().join("scratch"))?;
    let t = if native {
        Transform::Native
    } else {
        Transform::Wasm(&wasm)
    };
    let start = Instant::now();
    for ev in events.iter().cycle().take(n) {
        std::hint::black_box(t.apply(&scratch, ev).await?);
    }
    Ok(start.elapsed() / n.max(1) as u32)
}

/// Scenario 1: per-call and end-to-end, Wasm against native.
pub fn wasm_vs_native(report: &mut Report, events: &[Event], quick: bool) -> Result<()> {
    let rt = util::current_thread()?;
    rt.block_on(async {
        let host = PluginHost::new()?;
        let plugin = host.load(spec("domain-fanout", "domain-fanout")).await?;
        let wasm = route(plugin.clone());
        let tmp = tempfile::tempdir()?;
        let scratch = Store::open(&tmp.path().join("scratch"))?;
        // Same outputs from both, or the comparison means nothing.
        for ev in events.iter().take(200) {
            let a = Transform::Native.apply(&scratch, ev).await?;
            let b = Transform::Wasm(&wasm).apply(&scratch, ev).await?;
            anyhow::ensure!(a.len() == b.len() && a[0].0 == b[0].0, "outputs differ for {}", ev.id);
            let (x, y): (serde_json::Value, serde_json::Value) =
                (serde_json::from_str(&a[0].1.data)?, serde_json::from_str(&b[0].1.data)?);
            anyhow::ensure!(x == y && a[0].1.id == b[0].1.id, "output data differs for {}", ev.id);
        }
        let calls = if quick { 5_000 } else { 50_000 };
        let e2e_rounds = if quick { 1 } else { 5 };
        let sample = &events[..calls.min(events.len())];
        let rounds = if quick { 3 } else { 5 };
        // Interleaved rounds: both see the same machine load.
        let (mut native, mut stage) = (Duration::MAX, Duration::MAX);
        for _ in 0..rounds {
            native = native.min(per_call(sample, 1, &Transform::Native, &scratch).await?);
            stage = stage.min(per_call(sample, 1, &Transform::Wasm(&wasm), &scratch).await?);
        }
        let mut raw = Duration::MAX;
        for _ in 0..rounds {
            let start = Instant::now();
            for ev in sample {
                std::hint::black_box(plugin.handle(ev, None).await?);
            }
            raw = raw.min(start.elapsed() / sample.len() as u32);
        }
        let call_ratio = stage.as_secs_f64() / native.as_secs_f64();
        let mut s = Section::new(
            "1. Wasm stage cost (domain-fanout, Rust)",
            &format!(
                "Per call: the best of {rounds} interleaved rounds of {calls} events. \"native\" is the transform \
                 (`plugins/domain-fanout/src/transform.rs`) compiled into the host plus the defaults the pipeline \
                 fills in; \"plugin call\" is `Plugin::handle` (host-side encoding, the call, decoding); \"plugin \
                 stage\" is the pipeline's `run_route` (call + output checks + defaults). End to end (best of {e2e_rounds} \
                 interleaved rounds): the input topic drained in batches of {BATCH}, outputs and cursor committed \
                 durably per batch, on one thread; \
                 per CPU-second counts the process's user+system time (store writer thread included). Each round \
                 runs native then Wasm back to back; the headline share is the median over rounds of that \
                 round's Wasm / native."
            ),
            &["path", "per call µs", "events/s (wall)", "events per CPU-s", "× native"],
        );
        s.row(vec!["native".into(), us(native), "".into(), "".into(), ratio(1.0)]);
        s.row(vec![
            "plugin call (`Plugin::handle`)".into(),
            us(raw),
            "".into(),
            "".into(),
            ratio(raw.as_secs_f64() / native.as_secs_f64()),
        ]);
        s.row(vec!["plugin stage (`run_route`)".into(), us(stage), "".into(), "".into(), ratio(call_ratio)]);

        let n = if quick { 20_000 } else { 100_000 }.min(events.len());
        let mut best_native = (0.0f64, 0.0f64);
        let mut best_wasm = (0.0f64, 0.0f64);
        // Each round runs native then Wasm back to back; their ratio in the
        // same round is what the headline takes (the median over rounds), so
        // one disturbed round, or a lucky native in one round and a lucky
        // Wasm in another, does not decide it.
        let mut paired = Vec::with_capacity(e2e_rounds);
        for round in 0..e2e_rounds {
            let mut this = [0.0f64; 2];
            for (i, t) in [Transform::Native, Transform::Wasm(&wasm)].iter().enumerate() {
                let store = seeded_store(&tmp.path().join(format!("e2e-{round}-{i}")), &events[..n]).await?;
                let got = drain(&store, n as u64, t, "bench").await?;
                store.close();
                let best = if i == 0 { &mut best_native } else { &mut best_wasm };
                *best = (best.0.max(got.0), best.1.max(got.1));
                this[i] = got.0;
            }
            paired.push(this[1] / this[0]);
        }
        paired.sort_by(f64::total_cmp);
        let e2e = paired[paired.len() / 2];
        s.row(vec![
            format!("end to end, native ({n} events)"),
            "".into(),
            rate(best_native.0),
            rate(best_native.1),
            ratio(1.0),
        ]);
        s.row(vec![
            format!("end to end, Wasm ({n} events)"),
            "".into(),
            rate(best_wasm.0),
            rate(best_wasm.1),
            format!("{} of native", ratio(best_wasm.0 / best_native.0)),
        ]);
        s.row(vec![
            "end to end, Wasm / native in the same round".into(),
            "".into(),
            "".into(),
            "".into(),
            format!(
                "median {} (rounds {}–{})",
                ratio(e2e),
                ratio(paired[0]),
                ratio(paired[paired.len() - 1])
            ),
        ]);
        report.sections.push(s);
        report.headline(
            "Wasm end to end, events/s as a share of native (median of rounds)",
            util::ratio_against(e2e, 0.7),
            "≥ 0.70×",
            Some(e2e >= 0.7),
        );
        report.headline(
            "Wasm end to end, events/s on one thread (durable, batched)",
            rate(best_wasm.0),
            "≥ 150,000",
            Some(best_wasm.0 >= 150_000.0),
        );
        report.headline(
            "plugin stage per call vs native",
            util::ratio_against(call_ratio, 1.4),
            "≤ 1.40×",
            Some(call_ratio <= 1.4),
        );
        Ok(())
    })
}

/// Scenario 2: the same transform in each guest language.
pub fn languages(report: &mut Report, events: &[Event], quick: bool) -> Result<()> {
    let rt = util::current_thread()?;
    rt.block_on(async {
        let tmp = tempfile::tempdir()?;
        let scratch = Store::open(&tmp.path().join("scratch"))?;
        let mut s = Section::new(
            "2. Plugin languages (domain-fanout)",
            "Compile: load without a cache (Cranelift compile, instantiate, `init`). Cache hit: load from the \
             compile cache by a fresh host. Instantiate: a new instance plus `init` from the compiled component \
             (best of 3). Per call: `Plugin::handle`, best of 3 rounds after a warm-up. Events/s: the input topic \
             drained through the plugin stage with durable batched commits, one thread. Memory per instance: \
             resident memory added by 8 more instances (each its own store), divided by 8.",
            &["plugin", "size", "compile ms", "cache hit ms", "instantiate ms", "per call µs", "events/s", "× native (per call)", "memory / instance"],
        );
        let calls_native = 5_000.min(events.len());
        let native = per_call(&events[..calls_native], 3, &Transform::Native, &scratch).await?;
        s.row(vec![
            "native (in host)".into(), "–".into(), "–".into(), "–".into(), "–".into(),
            us(native), format!("{} (calls only)", rate(1.0 / native.as_secs_f64())), ratio(1.0), "–".into(),
        ]);
        for (label, file, calls) in [
            ("Rust", "domain-fanout", if quick { 2_000 } else { 20_000 }),
            ("JavaScript", "domain-fanout-js", if quick { 300 } else { 3_000 }),
            ("Python", "domain-fanout-python", if quick { 300 } else { 3_000 }),
        ] {
            let row = language(tmp.path(), label, file, &events[..calls.min(events.len())], native, &scratch).await;
            match row {
                Ok(r) => s.row(r),
                Err(e) => report.failures.push((format!("language {label}"), format!("{e:#}"))),
            }
        }
        report.sections.push(s);
        Ok(())
    })
}

async fn language(
    dir: &std::path::Path,
    label: &str,
    file: &str,
    events: &[Event],
    native: Duration,
    scratch: &Store,
) -> Result<Vec<String>> {
    let size = std::fs::metadata(util::dist(file))
        .with_context(|| format!("{file}.wasm"))?
        .len();
    let start = Instant::now();
    let plugin = PluginHost::new()?.load(spec("domain-fanout", file)).await?;
    let compile = start.elapsed();
    let cache = dir.join(format!("cache-{file}"));
    PluginHost::with_cache(cache.clone())?
        .load(spec("domain-fanout", file))
        .await?;
    let start = Instant::now();
    let hit = PluginHost::with_cache(cache)?
        .load(spec("domain-fanout", file))
        .await?;
    let cache_hit = start.elapsed();
    anyhow::ensure!(
        hit.from_cache(),
        "{file}: second load did not hit the cache"
    );
    drop(hit);
    let mut inst = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let p = plugin
            .reconfigured(plugin.spec().config_json.clone(), vec![Capability::Log])
            .await?;
        inst = inst.min(start.elapsed());
        drop(p);
    }
    let before = util::rss_kib("self");
    let mut extra = Vec::new();
    for _ in 0..8 {
        extra.push(
            plugin
                .reconfigured(plugin.spec().config_json.clone(), vec![Capability::Log])
                .await?,
        );
    }
    let per_instance = util::rss_kib("self").saturating_sub(before) / 8;
    drop(extra);
    let wasm = route(plugin.clone());
    let t = Transform::Wasm(&wasm);
    per_call(&events[..events.len().min(100)], 1, &t, scratch).await?;
    let call = per_call(events, 3, &t, scratch).await?;
    let store = seeded_store(&dir.join(format!("lang-{file}")), events).await?;
    let (eps, _) = drain(&store, events.len() as u64, &t, "bench").await?;
    store.close();
    Ok(vec![
        label.into(),
        if size > 1 << 20 {
            format!("{:.1} MB", size as f64 / 1e6)
        } else {
            format!("{} KB", size / 1000)
        },
        util::ms(compile),
        util::ms(cache_hit),
        util::ms(inst),
        us(call),
        rate(eps),
        ratio(call.as_secs_f64() / native.as_secs_f64()),
        format!("{:.2} MiB", per_instance as f64 / 1024.0),
    ])
}

/// Scenario 8: the real pipeline (`Pipeline::run`) draining the input topic
/// with one worker thread and `router.workers = 1`, then two and two.
pub fn scaling(report: &mut Report, events: &[Event], quick: bool) -> Result<()> {
    let n = if quick { 20_000 } else { 100_000 }.min(events.len());
    let mut s = Section::new(
        "8. Scaling: worker threads (real pipeline)",
        &format!(
            "`Pipeline::run` of a router with the domain-fanout route draining {n} events already in the input \
             topic; the async runtime's worker threads and `router.workers` set alike. The machine has {} cores \
             shared with other work. \"CPU\" is the process's (user and system) over the wall time; \"writer busy\" is \
             the share of the wall time the store's one writer thread spent in commits and checkpoints (from \
             the router's metrics), which all workers' batches go through. \"trace lookup\" times `Store::trace` (what \
             `GET /v1/events/{{id}}/trace` reads) for 1,000 of the inputs spread over the run, once it is \
             done: the index then holds its entries in sorted runs and in the chunks not sealed yet. \"on disk\" is \
             the store's files (database and write-ahead log) after the drain and a clean close, per input event: \
             the input, its domain-fanout output and the trace index entry linking them.",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        ),
        &[
            "threads",
            "events/s",
            "× 1 thread",
            "CPU (cores)",
            "commits",
            "writer busy",
            "trace lookup p50 ms",
            "trace lookup max ms",
            "on disk, bytes per input",
        ],
    );
    let mut base = 0.0;
    for threads in [1usize, 2] {
        let rt = util::threads(threads)?;
        let r = rt.block_on(pipeline_rate(&events[..n], threads, Extent::WithLookups))?;
        if threads == 1 {
            base = r.events_per_sec;
        }
        s.row(vec![
            threads.to_string(),
            rate(r.events_per_sec),
            ratio(r.events_per_sec / base),
            format!("{:.2}", r.cores),
            r.commits.to_string(),
            format!("{:.0} %", r.writer_busy * 100.0),
            format!("{:.2}", r.trace_lookup.0.as_secs_f64() * 1e3),
            format!("{:.2}", r.trace_lookup.1.as_secs_f64() * 1e3),
            format!("{:.0}", r.disk_bytes as f64 / n as f64),
        ]);
        if threads == 2 {
            report.headline(
                "pipeline events/s, 2 threads vs 1",
                ratio(r.events_per_sec / base),
                "–",
                None,
            );
        }
    }
    report.sections.push(s);
    Ok(())
}

/// How much of [`pipeline_rate`] runs.
#[derive(Clone, Copy, PartialEq)]
pub enum Extent {
    /// Only the router's start and the seeded log (`--profile-setup`).
    Setup,
    /// The drain too (`--profile`: its instructions less `Setup`'s are the
    /// pipeline's alone).
    Drain,
    /// The drain, then the trace lookups section 8 times.
    WithLookups,
}

/// What one drain of the real pipeline measured.
pub struct PipelineRun {
    pub events_per_sec: f64,
    /// The process's CPU over the wall time.
    pub cores: f64,
    /// Store commits during the drain.
    pub commits: u64,
    /// The share of the wall time the store's writer spent committing.
    pub writer_busy: f64,
    /// `Store::trace` afterwards: p50 and max (zero unless
    /// [`Extent::WithLookups`]).
    pub trace_lookup: (Duration, Duration),
    /// The disk space of the store's files after the drain and a clean
    /// close.
    pub disk_bytes: u64,
}

/// Events/s of the real pipeline over `events`, with `workers` keys at once.
pub async fn pipeline_rate(
    events: &[Event],
    workers: usize,
    extent: Extent,
) -> Result<PipelineRun> {
    let tmp = tempfile::tempdir()?;
    let (_, cfg) = util::write_config(
        tmp.path(),
        &util::fanout_config(&util::dist("domain-fanout"), workers, false),
    )?;
    let rt = switchyard::Runtime::start(cfg, &tmp.path().join("data"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    seed(&rt.store, events).await?;
    if extent == Extent::Setup {
        rt.store.close();
        return Ok(PipelineRun {
            events_per_sec: 0.0,
            cores: 0.0,
            commits: 0,
            writer_busy: 0.0,
            trace_lookup: Default::default(),
            disk_bytes: 0,
        });
    }
    let pipeline = Pipeline::new(
        rt.store.clone(),
        rt.routes.clone(),
        rt.gate.clone(),
        INPUT,
        &rt.config.router,
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    let counts = util::StoreCounts::now();
    let (start, cpu) = (Instant::now(), cpu_time());
    let task = tokio::spawn(pipeline.run(rx));
    let n = events.len() as u64;
    let store = rt.store.clone();
    util::wait_until(Duration::from_secs(600), || {
        store.cursor("router").unwrap_or(0) >= n
    })
    .await?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu).as_secs_f64();
    let counts = counts.since();
    let _ = stop.send(true);
    task.await?;
    let trace_lookup = match extent {
        Extent::WithLookups => trace_lookups(&rt.store, events)?,
        _ => Default::default(),
    };
    rt.store.close();
    let disk_bytes = std::fs::read_dir(rt.store.dir())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum();
    Ok(PipelineRun {
        events_per_sec: n as f64 / wall,
        cores: cpu / wall,
        commits: counts.commits,
        writer_busy: counts.committing.as_secs_f64() / wall,
        trace_lookup,
        disk_bytes,
    })
}

/// Times `Store::trace` for 1,000 of `events` spread over them (p50, max);
/// each must have its pipeline entry.
fn trace_lookups(store: &Store, events: &[Event]) -> Result<(Duration, Duration)> {
    let step = (events.len() / 1000).max(1);
    let mut times = Vec::new();
    for ev in events.iter().step_by(step) {
        let started = Instant::now();
        let entries = store.trace(&ev.id)?;
        times.push(started.elapsed());
        anyhow::ensure!(!entries.is_empty(), "no trace entry for {}", ev.id);
    }
    times.sort();
    Ok((
        times.get(times.len() / 2).copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
    ))
}
