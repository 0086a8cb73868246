//! `switchyard plugin test` and `switchyard plugin inspect`: thin shells over
//! the library's sample cases and component inspection (`plugin::samples`,
//! `plugin::ComponentInfo`), so the router, hot reload and these commands
//! share one sandbox and one definition of a passing case.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use switchyard::config::{Capability, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_MS};
use switchyard::plugin::samples::{self, SampleCase};
use switchyard::plugin::{
    ComponentInfo, Limits, PluginHost, PluginSpec, accepted_contracts, contract_accepted,
};

use super::plugin_build::{self, Project};

/// Options of `plugin test`.
pub struct TestArgs {
    pub plugin: PathBuf,
    pub events: Option<PathBuf>,
    pub expect: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub config: Option<String>,
    pub capabilities: Option<Vec<Capability>>,
    pub timeout_ms: u64,
    pub memory_mb: u64,
}

impl TestArgs {
    pub fn defaults(plugin: PathBuf) -> Self {
        Self {
            plugin,
            events: None,
            expect: None,
            state: None,
            config: None,
            capabilities: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_mb: DEFAULT_MEMORY_MB,
        }
    }
}

/// The component to load: the file itself, or a project's artefact (built
/// first when its sources changed).
fn component_of(path: &Path) -> Result<(PathBuf, Option<Project>)> {
    if path.is_dir() {
        let project = Project::detect(path)?;
        if project.is_stale() {
            plugin_build::build(&project.dir, None)?;
        }
        return Ok((project.artefact(), Some(project)));
    }
    if !path.is_file() {
        bail!("{}: no such component or plugin project", path.display());
    }
    Ok((path.to_path_buf(), None))
}

/// Runs the cases; `Ok(false)` when any failed (the caller exits non-zero).
pub async fn test(args: TestArgs) -> Result<bool> {
    let (wasm, project) = component_of(&args.plugin)?;
    let mut cases: Vec<SampleCase> = match (&args.events, &project) {
        (Some(events), _) if args.expect.is_none() && samples::is_case_path(events) => {
            samples::load_cases(events)?
        }
        (Some(events), _) => vec![samples::case_from_parts(
            events,
            args.expect.as_deref(),
            args.state.as_deref(),
        )?],
        (None, Some(p)) => {
            let dir = p.dir.join("samples");
            if !dir.is_dir() {
                bail!(
                    "{}: no samples/ directory; add sample cases there or pass --events",
                    p.dir.display()
                );
            }
            samples::load_cases(&dir)?
        }
        (None, None) => bail!(
            "no events to run: pass --events FILE|DIR, or give a plugin project directory \
             (its samples/*.json are run)"
        ),
    };
    if let Some(caps) = &args.capabilities {
        for c in cases.iter_mut().filter(|c| c.capabilities.is_none()) {
            c.capabilities = Some(caps.clone());
        }
    }
    let name = wasm
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let spec = PluginSpec {
        name,
        path: wasm.clone(),
        config_json: args.config.clone().unwrap_or_else(|| "{}".into()),
        limits: Limits {
            timeout: Duration::from_millis(args.timeout_ms),
            memory_bytes: usize::try_from(args.memory_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            instances: 1,
            max_outputs: switchyard::config::DEFAULT_MAX_OUTPUTS,
            max_output_bytes: switchyard::config::DEFAULT_MAX_OUTPUT_BYTES,
        },
        grants: args
            .capabilities
            .clone()
            .unwrap_or_else(|| vec![Capability::Log, Capability::Clock, Capability::Kv]),
        breaker: Default::default(),
        // Samples run offline: even with `http` granted, no host is allowed.
        http: Default::default(),
    };
    let host = PluginHost::new()?;
    let plugin = host.load(spec).await?;
    println!("plugin {} (version {})", wasm.display(), plugin.version());
    let mut failures = Vec::new();
    let mut failed_cases = 0;
    let total = cases.len();
    for case in &cases {
        let run = samples::run_case(&plugin, case).await;
        print!("{}", run.render());
        if !run.passed() {
            failed_cases += 1;
            failures.extend(run.failures());
        }
    }
    if failures.is_empty() {
        println!("all {total} sample case(s) passed");
        return Ok(true);
    }
    println!("\n{failed_cases} of {total} sample case(s) FAILED:");
    for f in &failures {
        println!("  {f}");
    }
    Ok(false)
}

/// Prints what a component is; `Ok(false)` when this host would refuse it.
pub fn inspect(path: &Path, json: bool) -> Result<bool> {
    let wasm = if path.is_dir() {
        let p = Project::detect(path)?;
        if !p.artefact().is_file() {
            bail!(
                "{}: not built yet; run `switchyard plugin build {}`",
                p.artefact().display(),
                path.display()
            );
        }
        p.artefact()
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let info = ComponentInfo::read(&bytes).with_context(|| format!("{}", wasm.display()))?;
    let accepted = info.contract.as_deref().is_some_and(contract_accepted);
    let caps: Vec<String> = info
        .capabilities
        .iter()
        .map(|c| format!("{c:?}").to_lowercase())
        .collect();
    if json {
        let v = serde_json::json!({
            "file": wasm.display().to_string(),
            "world": info.world(),
            "contract": info.contract,
            "accepted": accepted,
            "acceptedContracts": accepted_contracts(),
            "size": info.size,
            "capabilities": caps,
            "imports": info.imports,
            "exports": info.exports,
            "producers": info.producers,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(accepted);
    }
    println!("{}", wasm.display());
    let world = info
        .world()
        .unwrap_or_else(|| "none (does not export init and handle)".into());
    println!("  world:        {world}");
    let verdict = if accepted {
        format!("accepted by this host ({})", accepted_contracts())
    } else {
        format!("NOT accepted: this host accepts {}", accepted_contracts())
    };
    match &info.contract {
        Some(v) => println!("  contract:     switchyard:plugin@{v} ({verdict})"),
        None => println!("  contract:     none (imports no switchyard:plugin interface)"),
    }
    let human = if info.size >= 1024 * 1024 {
        format!("{:.1} MiB", info.size as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", info.size as f64 / 1024.0)
    };
    println!("  size:         {} bytes ({human})", info.size);
    let caps = if caps.is_empty() {
        "none".to_string()
    } else {
        caps.join(", ")
    };
    println!("  capabilities: {caps} (grant them in the plugin's `capabilities`)");
    println!("  exports:      {}", info.exports.join(", "));
    println!("  imports:");
    for i in &info.imports {
        println!("    {i}");
    }
    if !info.producers.is_empty() {
        println!("  producers:    {}", info.producers.join(", "));
    }
    Ok(accepted)
}
