//! `switchyard run | validate | replay | plugin new | plugin build | plugin test |
//! plugin inspect | aws setup | asyncapi | tap`.

mod asyncapi;
mod plugin_build;
mod plugin_new;
mod plugin_test;
mod replay;
mod tap;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use switchyard::{Config, Runtime};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An event router that runs sandboxed WebAssembly plugins"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SWITCHYARD_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router: HTTP ingest, pipelines, read API.
    Run {
        /// The configuration file.
        #[arg(
            long,
            default_value = "config/switchyard.toml",
            env = "SWITCHYARD_CONFIG"
        )]
        config: PathBuf,
        /// Where the embedded store keeps its data.
        #[arg(long, default_value = "./data", env = "SWITCHYARD_DATA_DIR")]
        data_dir: PathBuf,
        /// Address to listen on (overrides `server.listen`); port 0 picks a free one.
        #[arg(long, env = "SWITCHYARD_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check a configuration: the file, its schemas, and that every plugin loads.
    Validate {
        #[arg(long, default_value = "config/switchyard.toml")]
        config: PathBuf,
    },
    /// On a running router: rebuild a projection's state from the event log
    /// (blue/green: the current state serves until the rebuild caught up), or
    /// re-inject the dead-letter topic's records into the pipeline.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["projection", "dead_letter"])))]
    Replay {
        /// The projection plugin to rebuild.
        #[arg(long)]
        projection: Option<String>,
        /// Re-inject dead-letter records (each at most once) into the pipeline.
        #[arg(long)]
        dead_letter: bool,
        /// With --dead-letter: only records matching `plugin=X,reason=Y,type=Z`.
        #[arg(long, requires = "dead_letter")]
        filter: Option<String>,
        /// With --dead-letter: say what would be replayed, replay nothing.
        #[arg(long, requires = "dead_letter")]
        dry_run: bool,
        /// The router's address.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "SWITCHYARD_URL")]
        url: String,
        /// Wait until the rebuild has finished, printing progress.
        #[arg(long)]
        wait: bool,
        /// The router's admin token (`server.admin_token`), sent as a bearer token.
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Plugin development.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Write an AsyncAPI 3.0 document of the config's channels, messages and routes.
    Asyncapi {
        #[arg(long, default_value = "config/switchyard.toml")]
        config: PathBuf,
        /// Output file (JSON if it ends in .json, YAML otherwise); stdout (YAML) without it.
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
    },
    /// Follow a topic's records live in the terminal.
    Tap {
        /// The topic to follow.
        topic: String,
        /// Only records of these event types (globs; repeat for several).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Start at the topic's first record instead of its end.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<usize>,
        /// Print each record as one line of JSON (a CloudEvent with its offset).
        #[arg(long)]
        json: bool,
        /// The router's address.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "SWITCHYARD_URL")]
        url: String,
    },
    /// AWS resources for local work and tests.
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
}

#[derive(Subcommand)]
enum AwsCommand {
    /// Create (idempotently) the queues, topics, subscriptions and
    /// dead-letter queues the config names. Honours AWS_ENDPOINT_URL.
    Setup {
        #[arg(long, default_value = "config/switchyard.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin project that builds and passes its own sample case.
    New {
        /// The plugin's name (lower-case letters, digits, `-`, `_`).
        name: String,
        /// The language of the plugin.
        #[arg(long, value_enum, default_value = "rust")]
        lang: plugin_new::Lang,
        /// Where to create the project directory NAME.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build a plugin project (Rust, JavaScript, Python or C, detected) into a component.
    Build {
        /// The plugin project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component (default: DIR/dist/<name>.wasm).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a plugin on sample events in the router's sandbox; compare with expectations.
    Test {
        /// A component (.wasm) or a plugin project directory (built when its
        /// sources changed; its samples/*.json run when --events is not given).
        #[arg(default_value = ".")]
        plugin: PathBuf,
        /// Events to run: a file (one event, a JSON array, or JSON Lines) or a
        /// directory of them; or sample case files.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Expected results, one per event (see plugins/README.md).
        #[arg(long, requires = "events")]
        expect: Option<PathBuf>,
        /// Initial kv state: a JSON object of key -> JSON value.
        #[arg(long, requires = "events")]
        state: Option<PathBuf>,
        /// The plugin's config (JSON) passed to `init`, where a case sets none.
        #[arg(long)]
        config: Option<String>,
        /// Capabilities granted, comma-separated (default: log,clock,kv).
        #[arg(long, value_delimiter = ',', value_parser = parse_capability)]
        capabilities: Option<Vec<switchyard::config::Capability>>,
        /// Deadline of one call, as in the router's `timeout_ms`.
        #[arg(long, default_value_t = switchyard::config::DEFAULT_TIMEOUT_MS)]
        timeout_ms: u64,
        /// Memory cap of an instance, as in the router's `memory_mb`.
        #[arg(long, default_value_t = switchyard::config::DEFAULT_MEMORY_MB)]
        memory_mb: u64,
    },
    /// Show a component's world, contract version, size and imported capabilities.
    Inspect {
        /// A component (.wasm) or a plugin project directory (its built component).
        #[arg(default_value = ".")]
        plugin: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_capability(s: &str) -> Result<switchyard::config::Capability, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_lowercase()))
        .map_err(|_| format!("unknown capability {s:?}: expected log, clock, kv or http"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
    });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(command: Command) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ok = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    let pass = |passed: bool| {
        if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    match command {
        Command::Run {
            config,
            data_dir,
            listen,
        } => ok(rt.block_on(run_router(&config, &data_dir, listen))),
        Command::Validate { config } => ok(rt.block_on(validate(&config))),
        Command::Replay {
            projection,
            dead_letter,
            filter,
            dry_run,
            url,
            wait,
            token,
        } => ok(match (projection, dead_letter) {
            (Some(projection), false) => replay::replay(&url, &projection, wait, token.as_deref()),
            (None, true) => replay::dead_letters(
                &url,
                filter.as_deref().unwrap_or(""),
                dry_run,
                token.as_deref(),
            ),
            _ => Err(anyhow::anyhow!(
                "replay needs exactly one of --projection NAME or --dead-letter"
            )),
        }),
        Command::Aws {
            command: AwsCommand::Setup { config },
        } => ok(rt.block_on(aws_setup(&config))),
        Command::Asyncapi { config, out } => ok(asyncapi::run(&config, out.as_deref())),
        Command::Tap {
            topic,
            types,
            from_start,
            count,
            json,
            url,
        } => ok(tap::run(tap::TapArgs {
            url,
            topic,
            types,
            from_start,
            count,
            json,
        })),
        Command::Plugin { command } => match command {
            PluginCommand::New { name, lang, dir } => {
                ok(plugin_new::new(&name, lang, &dir).map(|_| ()))
            }
            PluginCommand::Build { dir, out } => {
                ok(plugin_build::build(&dir, out.as_deref()).map(|_| ()))
            }
            PluginCommand::Test {
                plugin,
                events,
                expect,
                state,
                config,
                capabilities,
                timeout_ms,
                memory_mb,
            } => {
                let args = plugin_test::TestArgs {
                    events,
                    expect,
                    state,
                    config,
                    capabilities,
                    timeout_ms,
                    memory_mb,
                    ..plugin_test::TestArgs::defaults(plugin)
                };
                rt.block_on(plugin_test::test(args)).map(pass)
            }
            PluginCommand::Inspect { plugin, json } => {
                plugin_test::inspect(&plugin, json).map(pass)
            }
        },
    }
}

async fn run_router(
    config: &Path,
    data_dir: &Path,
    listen: Option<std::net::SocketAddr>,
) -> Result<()> {
    let mut cfg = Config::load(config)?;
    if let Some(addr) = listen {
        cfg.server.listen = addr;
    }
    let env_token = std::env::var(switchyard::config::ADMIN_TOKEN_ENV).ok();
    cfg.server = cfg.server.with_env_token(env_token);
    // Before the slow start (plugins compile): an exposed router without a
    // token must not come up at all.
    cfg.server.check_exposure()?;
    let addr = cfg.server.listen;
    let rt: Arc<Runtime> = Runtime::start(cfg, data_dir).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to find an ephemeral port.
    tracing::info!(addr = %local, data_dir = %data_dir.display(), "listening on http://{local}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight events");
        let _ = stop_tx.send(true);
    });
    switchyard::server::serve(rt, listener, stop_rx).await?;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn aws_setup(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    if !cfg.uses_aws() && cfg.aws.subscriptions.is_empty() {
        anyhow::bail!(
            "{}: names no sqs source, sink or subscription; nothing to set up",
            cfg.file.display()
        );
    }
    for line in switchyard::transport::aws::setup(&cfg).await? {
        println!("{line}");
    }
    Ok(())
}

async fn validate(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let schemas = switchyard::runtime::load_schemas(&cfg)?;
    let host = switchyard::plugin::PluginHost::new()?;
    let mut plugins = Vec::new();
    for (name, pcfg) in &cfg.plugins {
        let spec = switchyard::plugin::PluginSpec::from_config(name, pcfg);
        plugins.push((name, host.load(spec).await?));
    }
    println!("{}: ok", cfg.file.display());
    println!("  schemas: base + {} per-type", schemas.describe().len());
    for (name, p) in &plugins {
        println!(
            "  plugin {name}: version {} ({})",
            p.version(),
            p.spec().path.display()
        );
        if let Some(samples) = cfg.plugins.get(*name).and_then(|c| c.samples.as_ref()) {
            let passed = switchyard::plugin::samples::verify(p, samples.get_ref()).await?;
            println!("    sample cases: {passed} passed");
        }
    }
    for r in &cfg.routes {
        let stages: Vec<_> = r.pipeline.iter().map(|s| s.get_ref().as_str()).collect();
        let pats: Vec<_> = r.patterns.iter().map(|s| s.get_ref().as_str()).collect();
        println!(
            "  route {}: {} -> {}",
            r.name,
            pats.join(", "),
            stages.join(" -> ")
        );
    }
    Ok(())
}
