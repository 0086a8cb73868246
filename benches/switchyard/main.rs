//! `scripts/bench` (`cargo bench --bench switchyard -- [--quick] [--only a,b]`):
//! runs the benchmark scenarios on loopback with a fixed seed, prints a table
//! per scenario and rewrites BENCHMARKS.md. Every headline figure is a ratio
//! or a figure measured in this one run: the machine is shared and noisy.
//!
//! Scenarios: `stage` (Wasm vs native), `languages`, `ingest`, `reload`,
//! `rebuild`, `aws`, `memory`, `scaling`.

mod aws;
mod events;
mod ingest;
mod load;
mod memory;
mod reload;
mod report;
mod stage;
mod trace;
mod util;

/// The transform the domain-fanout plugin runs, compiled into the host.
#[path = "../../plugins/domain-fanout/src/transform.rs"]
#[allow(dead_code)]
mod transform;

use std::time::Instant;

/// The same allocator as the `switchyard` binary: the router parts run in
/// this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context as _, Result};

use crate::report::Report;

const ALL: &[&str] = &[
    "stage",
    "languages",
    "ingest",
    "reload",
    "rebuild",
    "aws",
    "memory",
    "scaling",
    "trace",
];

struct Args {
    /// `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    /// and must not start a long benchmark run.
    bench: bool,
    quick: bool,
    /// `--profile N`: only the real pipeline over N events, for callgrind.
    profile: Option<usize>,
    /// `--profile-setup`: with `--profile`, stop before the pipeline runs
    /// (what generating and seeding the events cost, to subtract).
    profile_setup: bool,
    /// `--profile-calls N`: only N plugin-stage calls (`run_route`);
    /// `--profile-native-calls N`: the same with the native transform.
    profile_calls: Option<(usize, bool)>,
    /// `--plugin FILE`: the component `--profile-calls` runs (a name in
    /// plugins/dist, default `domain-fanout`).
    plugin: String,
    only: Vec<String>,
    write: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        bench: false,
        quick: false,
        profile: None,
        profile_setup: false,
        profile_calls: None,
        plugin: "domain-fanout".into(),
        only: Vec::new(),
        write: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--no-write" => a.write = false,
            "--profile" => a.profile = Some(it.next().unwrap_or_default().parse()?),
            "--profile-setup" => a.profile_setup = true,
            "--plugin" => a.plugin = it.next().unwrap_or_default(),
            "--profile-calls" => {
                a.profile_calls = Some((it.next().unwrap_or_default().parse()?, false))
            }
            "--profile-native-calls" => {
                a.profile_calls = Some((it.next().unwrap_or_default().parse()?, true))
            }
            "--only" => {
                let list = it.next().unwrap_or_default();
                for s in list.split(',').filter(|s| !s.is_empty()) {
                    anyhow::ensure!(
                        ALL.contains(&s),
                        "unknown scenario {s:?}; known: {}",
                        ALL.join(", ")
                    );
                    a.only.push(s.to_string());
                }
            }
            "--bench" => a.bench = true,
            other => anyhow::bail!(
                "unknown argument {other:?}: expected --quick, --only LIST, --no-write"
            ),
        }
    }
    Ok(a)
}

/// `n` events from the fixed seed, for the profile modes.
fn profile_events(n: usize) -> Vec<switchyard::Event> {
    events::generate(events::SEED, n)
        .into_iter()
        .map(|g| g.event)
        .collect()
}

fn main() -> Result<()> {
    let args = args()?;
    if !args.bench {
        eprintln!(
            "the benchmarks run through scripts/bench (cargo bench --bench switchyard); nothing to do here"
        );
        return Ok(());
    }
    let wanted = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    if let Some(n) = args.profile {
        // Instructions per event = (run with N - the same with
        // --profile-setup) / N under `valgrind --tool=callgrind`; see
        // BENCHMARKS.md.
        let (evs, rt) = (profile_events(n), util::current_thread()?);
        let extent = if args.profile_setup {
            stage::Extent::Setup
        } else {
            stage::Extent::Drain
        };
        let eps = rt
            .block_on(stage::pipeline_rate(&evs, 1, extent))?
            .events_per_sec;
        println!("{n} events through the pipeline: {eps:.0} events/s");
        return Ok(());
    }
    if let Some((n, native)) = args.profile_calls {
        // Instructions per call, as above, for the plugin stage alone.
        let (evs, rt) = (profile_events(10_000), util::current_thread()?);
        let per_call = rt.block_on(stage::stage_calls(&evs, n, native, &args.plugin))?;
        println!(
            "{n} plugin-stage calls: {:.2} µs per call",
            per_call.as_secs_f64() * 1e6
        );
        return Ok(());
    }
    let quick = args.quick;
    let n = if quick { 20_000 } else { 100_000 };
    let generated = events::generate(events::SEED, n);
    let evs: Vec<switchyard::Event> = generated.iter().map(|g| g.event.clone()).collect();
    let bodies: Vec<String> = generated.iter().map(|g| g.body.clone()).collect();
    let (min, median, max) = events::size_summary(&generated);
    let (types, keys) = events::mix_summary(&generated);
    println!(
        "events: {n}, {types} types, {keys} keys, payloads {min}–{max} bytes (median {median})"
    );
    let mut report = Report::default();
    let started = Instant::now();
    let run = |name: &str, report: &mut Report, f: &mut dyn FnMut(&mut Report) -> Result<()>| {
        if !wanted(name) {
            return;
        }
        eprintln!("==> {name}");
        let t = Instant::now();
        if let Err(e) = f(report) {
            eprintln!("!! {name}: {e:#}");
            report.failures.push((name.to_string(), format!("{e:#}")));
        }
        eprintln!("    {name}: {:.1} s", t.elapsed().as_secs_f64());
    };
    run("stage", &mut report, &mut |r| {
        stage::wasm_vs_native(r, &evs, quick)
    });
    run("languages", &mut report, &mut |r| {
        stage::languages(r, &evs, quick)
    });
    let mut saturation = 0.0;
    run("ingest", &mut report, &mut |r| {
        let event = evs.first().context("no events generated")?;
        saturation = ingest::ingest(r, &bodies, event, quick)?;
        Ok(())
    });
    if saturation == 0.0 {
        saturation = 4_000.0;
    }
    run("reload", &mut report, &mut |r| {
        reload::reload(r, &bodies, saturation, quick)
    });
    run("rebuild", &mut report, &mut |r| {
        let n = if quick { 50_000 } else { 1_000_000 };
        let many: Vec<switchyard::Event> = events::generate(events::SEED + 1, n)
            .into_iter()
            .map(|g| g.event)
            .collect();
        reload::rebuild(r, &many)
    });
    run("aws", &mut report, &mut |r| aws::aws(r, &evs, quick));
    run("memory", &mut report, &mut |r| {
        memory::memory(r, &bodies, quick)
    });
    run("scaling", &mut report, &mut |r| {
        stage::scaling(r, &evs, quick)
    });
    run("trace", &mut report, &mut |r| trace::trace_index(r, quick));

    report::print(&report);
    if args.write {
        let mut command = String::from("scripts/bench");
        if quick {
            command.push_str(" --quick");
        }
        if !args.only.is_empty() {
            command.push_str(&format!(" --only {}", args.only.join(",")));
        }
        let context = vec![
            ("Command".to_string(), format!("`{command}`")),
            (
                "Date".to_string(),
                chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            ),
            ("Git commit".to_string(), git_commit()),
            ("Machine".to_string(), machine()),
            (
                "Run time".to_string(),
                format!("{:.0} s", started.elapsed().as_secs_f64()),
            ),
        ];
        let preamble = format!(
            "Events: {n} HMPPS domain events from seed `{:#x}` (`benches/switchyard/events.rs`): {types} event \
             types, {keys} distinct keys (NOMS/CRN, a few busy people), payloads {min}–{max} bytes, median \
             {median}, random (version 4 UUID) ids as producers send them; events POSTed over HTTP get the \
             ids the router assigns (time-ordered UUIDv7). Everything runs on 127.0.0.1; the router parts run in the bench process unless a \
             scenario says otherwise. Figures are from one run on a shared machine: compare the ratios, which \
             were measured side by side, more than the absolute numbers.\n",
            events::SEED
        );
        let mut md = report::markdown(&report, &context, &preamble);
        let path = util::root().join("BENCHMARKS.md");
        // Sections written elsewhere (benches/peers/run; the hot-path
        // profile, written by hand from callgrind runs) are kept.
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        for name in ["profile", "peers"] {
            let (begin, end) = (
                format!("<!-- {name}:begin -->"),
                format!("<!-- {name}:end -->"),
            );
            if let (Some(a), Some(b)) = (old.find(&begin), old.find(&end)) {
                md.push('\n');
                md.push_str(&old[a..b]);
                md.push_str(&end);
                md.push('\n');
            }
        }
        std::fs::write(&path, md)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn git_commit() -> String {
    let out = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(util::root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = out(&["rev-parse", "--short=12", "HEAD"]);
    let dirty = !out(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!(
        "`{commit}`{}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    )
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| format!(", {:.0} GiB RAM", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores ({model}){mem}, shared with other work")
}
