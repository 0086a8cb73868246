//! Peers on the same work: the domain-fanout transform as an Extism plugin
//! and as a Fluvio SmartModule (run in-process by `fluvio-smartengine`),
//! timed in one process with switchyard's plugin call and stage and the
//! native function. Prints a table and rewrites the peers section of
//! BENCHMARKS.md (between its `peers:begin`/`peers:end` markers).
//!
//! `benches/peers/run [--quick]` builds the guests and runs this.

#[path = "../../../switchyard/events.rs"]
#[allow(dead_code)]
mod events;
#[path = "../../../../plugins/domain-fanout/src/transform.rs"]
#[allow(dead_code)]
mod transform;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fluvio_smartengine::{
    DEFAULT_SMARTENGINE_VERSION, SmartEngine, SmartModuleChainBuilder, SmartModuleConfig,
};
use fluvio_smartmodule::Record;
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;
use switchyard::config::Capability;
use switchyard::pipeline::{BatchKv, StagePolicy, UnitKv, run_route};
use switchyard::plugin::{Limits, PluginHost, PluginSpec};
use switchyard::router::{Route, Stage};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

/// Best of `rounds` of `f` over every item, per item.
fn best<T>(items: &[T], rounds: usize, mut f: impl FnMut(&T) -> Result<()>) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for it in items {
            f(it)?;
        }
        best = best.min(start.elapsed() / items.len() as u32);
    }
    Ok(best)
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 5_000 } else { 50_000 };
    let rounds = if quick { 3 } else { 5 };
    let generated = events::generate(events::SEED, n);
    let evs: Vec<switchyard::Event> = generated.iter().map(|g| g.event.clone()).collect();
    let guests =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-unknown-unknown/release");

    // switchyard
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spec = PluginSpec {
        name: "domain-fanout".into(),
        path: root().join("plugins/dist/domain-fanout.wasm"),
        config_json: r#"{"topic_prefix":"domain."}"#.into(),
        limits: Limits {
            timeout: Duration::from_secs(5),
            memory_bytes: 128 << 20,
            instances: 4,
            max_outputs: 1000,
            max_output_bytes: 4 << 20,
        },
        grants: vec![Capability::Log],
        breaker: Default::default(),
        http: Default::default(),
    };
    let plugin = rt.block_on(async { PluginHost::new()?.load(spec).await })?;
    let route = Route {
        name: "domain-fanout".into(),
        patterns: vec![switchyard::router::Glob::new("*")],
        stages: vec![Stage {
            namespace: "domain-fanout".into(),
            plugin: plugin.clone(),
        }],
        direct: false,
        topics: None,
        on_poison: Default::default(),
    };
    let tmp = std::env::temp_dir().join(format!("switchyard-peers-{}", std::process::id()));
    let store = switchyard::Store::open(&tmp)?;
    let policy = StagePolicy {
        max_attempts: 1,
        retry_backoff: Duration::ZERO,
        ..StagePolicy::new("events", &switchyard::config::RouterConfig::default())
    };

    // Extism
    let wasm = std::fs::read(guests.join("extism_guest.wasm"))
        .context("extism guest: run benches/peers/run")?;
    let extism_size = wasm.len();
    let start = Instant::now();
    let mut extism =
        extism::Plugin::new(extism::Manifest::new([extism::Wasm::data(wasm)]), [], false)?;
    let extism_load = start.elapsed();

    // Fluvio
    let wasm = std::fs::read(guests.join("fluvio_guest.wasm"))
        .context("fluvio guest: run benches/peers/run")?;
    let fluvio_size = wasm.len();
    let start = Instant::now();
    let engine = SmartEngine::new();
    let mut builder = SmartModuleChainBuilder::default();
    builder.add_smart_module(
        SmartModuleConfig::builder()
            .smartmodule_names(&["fanout".to_string()])
            .build()?,
        wasm,
    );
    let mut chain = builder.initialize(&engine)?;
    let fluvio_load = start.elapsed();

    // Same answers everywhere, or the timings compare different work.
    for ev in evs.iter().take(100) {
        let want: serde_json::Value = serde_json::from_str(
            &transform::fan_out("", &ev.data, "domain.")
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .data,
        )?;
        let e: serde_json::Value =
            serde_json::from_str(extism.call::<&str, &str>("handle", &ev.data)?)?;
        let out = chain.process(SmartModuleInput::try_from_records(
            vec![Record::new(ev.data.as_str())],
            DEFAULT_SMARTENGINE_VERSION,
        )?)?;
        let f: serde_json::Value = serde_json::from_slice(
            out.successes
                .first()
                .context("fluvio: no output")?
                .value
                .as_ref(),
        )?;
        let s = rt.block_on(plugin.handle(ev, None))?;
        let s: serde_json::Value =
            serde_json::from_str(&s.first().context("switchyard: no output")?.event.data)?;
        anyhow::ensure!(
            want == e && want == f && want == s,
            "outputs differ for {}",
            ev.id
        );
    }

    let mut rows: Vec<(String, Duration, String)> = Vec::new();
    for _ in 0..1 {
        let native = best(&evs, rounds, |ev| {
            std::hint::black_box(
                transform::fan_out("", &ev.data, "domain.")
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            );
            Ok(())
        })?;
        let call = best(&evs, rounds, |ev| {
            std::hint::black_box(rt.block_on(plugin.handle(ev, None))?);
            Ok(())
        })?;
        let stage = best(&evs, rounds, |ev| {
            let unit = UnitKv::new(BatchKv::new(store.clone()));
            std::hint::black_box(
                rt.block_on(run_route(&route, ev, &unit, &policy))
                    .map_err(|f| anyhow::anyhow!(f.error))?,
            );
            Ok(())
        })?;
        let ext = best(&evs, rounds, |ev| {
            std::hint::black_box(extism.call::<&str, &str>("handle", &ev.data)?);
            Ok(())
        })?;
        let flu1 = best(&evs, rounds, |ev| {
            let input = SmartModuleInput::try_from_records(
                vec![Record::new(ev.data.as_str())],
                DEFAULT_SMARTENGINE_VERSION,
            )?;
            std::hint::black_box(chain.process(input)?);
            Ok(())
        })?;
        let batches: Vec<&[switchyard::Event]> = evs.chunks(100).collect();
        let flu100 = best(&batches, rounds, |b| {
            let recs = b.iter().map(|e| Record::new(e.data.as_str())).collect();
            let out = chain.process(SmartModuleInput::try_from_records(
                recs,
                DEFAULT_SMARTENGINE_VERSION,
            )?)?;
            anyhow::ensure!(out.successes.len() == b.len(), "fluvio dropped records");
            Ok(())
        })? / 100;
        rows.push(("native function (in host)".into(), native, "–".into()));
        rows.push((
            "switchyard `Plugin::handle` (whole event record in and out)".into(),
            call,
            format!(
                "{} KB component",
                std::fs::metadata(root().join("plugins/dist/domain-fanout.wasm"))?.len() / 1000
            ),
        ));
        rows.push((
            "switchyard plugin stage (`run_route`: call + checks + defaults)".into(),
            stage,
            "".into(),
        ));
        rows.push((
            "Extism 1.30.0 (`extism-pdk` 1.4.1), payload in/out".into(),
            ext,
            format!(
                "{} KB module, load {:.1} ms",
                extism_size / 1000,
                extism_load.as_secs_f64() * 1e3
            ),
        ));
        rows.push((
            "Fluvio SmartModule `map` 0.50.1, batch of 1".into(),
            flu1,
            format!(
                "{} KB module, load {:.1} ms",
                fluvio_size / 1000,
                fluvio_load.as_secs_f64() * 1e3
            ),
        ));
        rows.push((
            "Fluvio SmartModule `map` 0.50.1, batch of 100 (per record)".into(),
            flu100,
            "".into(),
        ));
    }
    store.close();
    let _ = std::fs::remove_dir_all(&tmp);

    let native = rows[0].1.as_secs_f64();
    let stage = rows[2].1.as_secs_f64();
    let fastest_peer = rows[3..]
        .iter()
        .map(|r| r.1.as_secs_f64())
        .fold(f64::MAX, f64::min);
    let mut md = format!(
        "## 9. Peers on the same work\n\n`benches/peers/run{}` (a workspace of its own), {n} events, best of {rounds} rounds, one \
         process, one thread. The same `transform.rs` compiled natively, into switchyard's component, an Extism \
         plugin and a Fluvio SmartModule (`wasm32-unknown-unknown`; every guest opt-level 3 with LLVM's inline threshold at 4000). The peers get only the payload \
         bytes and return the payload; switchyard's call carries the whole event record both ways.\n\n\
         | path | µs per record | × native | notes |\n|---|---|---|---|\n",
        if quick { " --quick" } else { "" }
    );
    for (name, d, note) in &rows {
        md.push_str(&format!(
            "| {name} | {:.2} | {:.2}× | {note} |\n",
            d.as_secs_f64() * 1e6,
            d.as_secs_f64() / native
        ));
    }
    md.push_str(&format!(
        "\nswitchyard's stage is {:.2}× faster per record than the fastest peer (target ≥ 2.5×: {}).\n",
        fastest_peer / stage,
        if fastest_peer / stage >= 2.5 { "met" } else { "**missed**" }
    ));
    print!("{md}");
    let path = root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let block = format!("<!-- peers:begin -->\n{md}<!-- peers:end -->\n");
    let new = match (
        old.find("<!-- peers:begin -->"),
        old.find("<!-- peers:end -->\n"),
    ) {
        (Some(a), Some(b)) => format!(
            "{}{block}{}",
            &old[..a],
            &old[b + "<!-- peers:end -->\n".len()..]
        ),
        _ => format!("{old}\n{block}"),
    };
    std::fs::write(&path, new)?;
    eprintln!("updated {}", path.display());
    Ok(())
}
