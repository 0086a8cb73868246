//! Sandbox policy in one place: the engine's configuration, the epoch ticker
//! that enforces call deadlines, and the per-instance resource limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, StoreLimits, StoreLimitsBuilder};

/// How often the epoch advances: at each tick a running call yields to the
/// async runtime and its deadline is checked, so this is both the longest
/// stretch a plugin holds a worker thread and the resolution of `timeout_ms`.
/// 10 ms costs no measurable time per call.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Table elements per instance: generous for real guests (function tables of
/// JS/Python runtimes hold tens of thousands), small enough to bound memory.
pub const MAX_TABLE_ELEMENTS: usize = 200_000;

/// Component instances (core modules inside one component) per store: the
/// Python and JavaScript runtimes instantiate a handful; more is an attack.
pub const MAX_INSTANCES_PER_STORE: usize = 64;

/// The least time an instance gets to start and run `init`. The JavaScript
/// and Python runtimes do real work there (tens of milliseconds when idle,
/// seconds on a loaded machine), more than a per-event deadline allows; a
/// plugin stuck in `init` is still stopped, just later.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-plugin limits, from the plugin's config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock deadline for one call.
    pub timeout: Duration,
    /// Linear-memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Instances kept for parallel calls.
    pub instances: usize,
    /// Outputs one call may emit.
    pub max_outputs: usize,
    /// Total data bytes of one call's outputs.
    pub max_output_bytes: usize,
}

impl Limits {
    /// The deadline for instantiating and `init`: `timeout`, but at least
    /// [`INIT_TIMEOUT`].
    pub fn init_timeout(&self) -> Duration {
        self.timeout.max(INIT_TIMEOUT)
    }

    pub(crate) fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.memory_bytes)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(MAX_INSTANCES_PER_STORE)
            .trap_on_grow_failure(true)
            .build()
    }
}

/// The one engine shared by every plugin, with the ticker thread that drives
/// epoch deadlines. Dropping the last clone stops the ticker.
#[derive(Clone)]
pub struct SharedEngine {
    pub(crate) engine: Engine,
    _ticker: Arc<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The configuration of every engine: the shared one, and the short-lived
/// ones cold compiles run on (see [`super::cache::compile`]), whose
/// artefacts the shared engine loads, so the two must agree.
pub(crate) fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Deadlines: a thread bumps the epoch; each call gets a budget of ticks.
    config.epoch_interruption(true);
    // Plugins are compiled once; spend the time to make calls fast.
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // `SWITCHYARD_WASM_PERFMAP=1` writes /tmp/perf-<pid>.map, so that
    // `perf report` names plugin functions instead of bare addresses.
    if std::env::var_os("SWITCHYARD_WASM_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

impl SharedEngine {
    pub fn new() -> Result<Self, wasmtime::Error> {
        let engine = Engine::new(&engine_config())?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match e.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(wasmtime::Error::from)?;
        Ok(Self {
            engine,
            _ticker: Arc::new(Ticker { stop }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_gets_at_least_its_own_deadline() {
        let limits = |ms| Limits {
            timeout: Duration::from_millis(ms),
            memory_bytes: 1,
            instances: 1,
            max_outputs: 1,
            max_output_bytes: 1,
        };
        assert_eq!(limits(500).init_timeout(), INIT_TIMEOUT);
        assert_eq!(limits(60_000).init_timeout(), Duration::from_secs(60));
    }
}
