//! The wasmtime host: one shared engine, components compiled once, a pool of
//! reusable instances per plugin, and every call under a deadline and a
//! memory cap.
//!
//! **Invariant:** only this module knows about wasmtime. The rest of the router
//! sees [`Plugin::handle`] taking an [`Event`] and giving [`Output`]s or a
//! [`CallError`].

mod breaker;
mod cache;
mod host;
mod http;
mod inspect;
mod limits;
pub mod samples;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::{Store, UpdateDeadline};

pub use breaker::{Admit, Breaker, BreakerView, CircuitState, Verdict};
pub use cache::CompileCache;
pub use host::KvAccess;
use host::{EventParam, Failure, Processor, ProcessorPre, State, WitEvent};
pub use http::{AllowedHost, HttpPolicy};
pub use inspect::{
    ACCEPTED_CONTRACTS, CONTRACT_PACKAGE, CONTRACT_VERSION, ComponentInfo, InspectError,
    accepted_contracts, contract_accepted,
};
pub use limits::{EPOCH_TICK, Limits, SharedEngine};

use crate::config::{BreakerConfig, Capability, PluginConfig};
use crate::event::Event;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {name}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "plugin {name}: {path} is not a valid switchyard:plugin@{CONTRACT_VERSION} component: {reason}"
    )]
    Compile {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {name}: {path}: {source}")]
    Inspect {
        name: String,
        path: PathBuf,
        #[source]
        source: InspectError,
    },
    #[error(
        "plugin {name}: {path} was built against {CONTRACT_PACKAGE}@{found}, but this host \
         (contract {CONTRACT_PACKAGE}@{CONTRACT_VERSION}) accepts {accepted}; rebuild it with \
         a matching SDK (`switchyard plugin build`)"
    )]
    Contract {
        name: String,
        path: PathBuf,
        found: String,
        accepted: String,
    },
    #[error(
        "plugin {name}: {path} is not a switchyard plugin: it does not use the \
         {CONTRACT_PACKAGE} contract (expected imports of {CONTRACT_PACKAGE}/types@{CONTRACT_VERSION} \
         and exports `init` and `handle`)"
    )]
    NotAPlugin { name: String, path: PathBuf },
    #[error("plugin {name}: cannot instantiate: {reason}")]
    Instantiate { name: String, reason: String },
    #[error("plugin {name}: init refused its config: {reason}")]
    Init { name: String, reason: String },
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// Why one call of `handle` produced no outputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin says the event is bad: dead-letter it.
    #[error("plugin rejected the event: {0}")]
    BadEvent(String),
    /// The plugin says the failure is passing: retry.
    #[error("plugin reported a transient failure: {0}")]
    Transient(String),
    /// The plugin trapped (panic, unreachable, stack overflow...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline and was interrupted.
    #[error("plugin exceeded its deadline of {0:?}")]
    Timeout(Duration),
    /// The plugin tried to grow its memory past the cap.
    #[error("plugin exceeded its memory limit: {0}")]
    MemoryLimit(String),
    /// The plugin used a capability it was not granted.
    #[error("plugin used a capability it was not granted: {0}")]
    Denied(String),
    /// The host failed under the plugin (state store unavailable).
    #[error("host failure during the call: {0}")]
    Host(String),
}

impl CallError {
    /// Whether retrying the same event may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Transient(_) | CallError::Host(_))
    }

    /// A short machine-readable kind, for dead-letter records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::BadEvent(_) => "bad-event",
            CallError::Transient(_) => "transient",
            CallError::Trap(_) => "trap",
            CallError::Timeout(_) => "timeout",
            CallError::MemoryLimit(_) => "memory-limit",
            CallError::Denied(_) => "capability-denied",
            CallError::Host(_) => "host-failure",
        }
    }
}

/// One output of a call, as the plugin wrote it (the pipeline fills defaults).
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: String,
    pub event: Event,
}

/// Everything needed to load one plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    /// JSON passed to `init`.
    pub config_json: String,
    pub limits: Limits,
    pub grants: Vec<Capability>,
    /// When to stop calling the plugin after failures in a row.
    pub breaker: BreakerConfig,
    /// Outbound HTTP settings (used with the `http` grant).
    pub http: Arc<HttpPolicy>,
}

impl PluginSpec {
    pub fn from_config(name: &str, cfg: &PluginConfig) -> Self {
        Self {
            name: name.to_string(),
            path: cfg.path.get_ref().clone(),
            config_json: cfg.config_json(),
            limits: Limits {
                timeout: Duration::from_millis(cfg.timeout_ms),
                memory_bytes: usize::try_from(cfg.memory_mb.saturating_mul(1024 * 1024))
                    .unwrap_or(usize::MAX),
                instances: cfg.instances,
                max_outputs: cfg.max_outputs,
                max_output_bytes: cfg.max_output_bytes,
            },
            grants: cfg.capabilities.clone(),
            breaker: cfg.breaker.clone(),
            http: Arc::new(HttpPolicy::new(
                // Validation refuses entries that do not parse.
                cfg.http_allow
                    .iter()
                    .filter_map(|e| AllowedHost::parse(e.get_ref()).ok())
                    .collect(),
                Duration::from_millis(cfg.http_timeout_ms),
                cfg.http_max_response_bytes,
            )),
        }
    }
}

/// Loads plugins into the shared engine.
#[derive(Clone)]
pub struct PluginHost {
    engine: SharedEngine,
    linker: Arc<wasmtime::component::Linker<State>>,
    cache: Option<CompileCache>,
}

impl PluginHost {
    /// A host without a compile cache (every load compiles).
    pub fn new() -> Result<Self, LoadError> {
        Self::build(None)
    }

    /// A host that keeps precompiled components in `dir`.
    pub fn with_cache(dir: PathBuf) -> Result<Self, LoadError> {
        Self::build(Some(CompileCache::new(dir)))
    }

    fn build(cache: Option<CompileCache>) -> Result<Self, LoadError> {
        let engine = SharedEngine::new().map_err(|e| LoadError::Engine(e.to_string()))?;
        let linker = host::linker(&engine.engine).map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache,
        })
    }

    /// Whether the compile cache holds the version with this digest.
    pub fn cached(&self, digest: &str) -> bool {
        self.cache.as_ref().is_some_and(|c| c.contains(digest))
    }

    /// Reads, compiles and links the plugin, then instantiates one instance and
    /// calls `init`, so a plugin that cannot serve is refused here.
    pub async fn load(&self, spec: PluginSpec) -> Result<Arc<Plugin>, LoadError> {
        let bytes = tokio::fs::read(&spec.path)
            .await
            .map_err(|source| LoadError::Read {
                name: spec.name.clone(),
                path: spec.path.clone(),
                source,
            })?;
        check_contract(&spec, &bytes)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        self.load_version(spec, digest, Some(bytes)).await
    }

    /// Loads the version with `digest` from the compile cache (for a version
    /// whose file has since been replaced, like a projection's live version
    /// while its successor is rebuilt).
    pub async fn load_cached(
        &self,
        spec: PluginSpec,
        digest: &str,
    ) -> Result<Arc<Plugin>, LoadError> {
        self.load_version(spec, digest.to_string(), None).await
    }

    async fn load_version(
        &self,
        spec: PluginSpec,
        digest: String,
        bytes: Option<Vec<u8>>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let engine = self.engine.engine.clone();
        let compile_err = |reason: String| LoadError::Compile {
            name: spec.name.clone(),
            path: spec.path.clone(),
            reason,
        };
        let cache = self.cache.clone();
        let d = digest.clone();
        // Compiling is CPU-bound (milliseconds for Rust, seconds for JS/Python).
        let (component, from_cache) = tokio::task::spawn_blocking(move || match cache {
            Some(cache) => cache.component(&engine, &d, bytes.as_deref()),
            None => {
                let bytes = bytes.ok_or_else(|| "no compile cache configured".to_string())?;
                let artefact = cache::compile(&bytes)?;
                cache::load(&engine, &artefact).map(|c| (c, false))
            }
        })
        .await
        .map_err(|e| compile_err(e.to_string()))?
        .map_err(compile_err)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| compile_err(format!("{e:#}")))?;
        let pre = ProcessorPre::new(pre).map_err(|e| compile_err(format!("{e:#}")))?;
        Plugin::start(spec, digest, from_cache, pre, self.engine.clone()).await
    }
}

/// Refuses, before the (slow) compilation, a component built against a
/// contract version this host does not link, naming both versions.
fn check_contract(spec: &PluginSpec, bytes: &[u8]) -> Result<ComponentInfo, LoadError> {
    let info = ComponentInfo::read(bytes).map_err(|source| LoadError::Inspect {
        name: spec.name.clone(),
        path: spec.path.clone(),
        source,
    })?;
    match info.contract.as_deref() {
        None => Err(LoadError::NotAPlugin {
            name: spec.name.clone(),
            path: spec.path.clone(),
        }),
        Some(found) if !contract_accepted(found) => Err(LoadError::Contract {
            name: spec.name.clone(),
            path: spec.path.clone(),
            found: found.to_string(),
            accepted: accepted_contracts(),
        }),
        Some(_) => Ok(info),
    }
}

struct Instance {
    store: Store<State>,
    proc: Processor,
}

/// A loaded plugin version with its instance pool.
pub struct Plugin {
    name: Arc<str>,
    /// First 12 hex digits of `digest`: short enough for records and logs.
    version: String,
    /// SHA-256 of the component file: the compile cache key.
    digest: String,
    /// Whether the compiled code came from the compile cache.
    from_cache: bool,
    spec: PluginSpec,
    pre: ProcessorPre<State>,
    /// Keeps the engine (and its epoch ticker) alive as long as the plugin.
    _engine: SharedEngine,
    /// Instances ready for a call; a trapped instance is never put back.
    idle: Mutex<Vec<Instance>>,
    /// Bounds the instances in use (and so in memory) at once.
    permits: Semaphore,
    calls: AtomicU64,
    failures: AtomicU64,
    /// The most recent failure, so an operator sees why without reading
    /// the dead-letter topic.
    last_error: Mutex<Option<LastError>>,
    /// This version's circuit breaker: a reload starts with a closed one.
    breaker: Breaker,
    /// This version's latency and trap series in the metrics.
    metrics: crate::obs::PluginSeries,
}

/// A plugin's most recent failure, as `GET /v1/plugins` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastError {
    /// The dead-letter reason (`trap`, `timeout`, `bad-output`, ...).
    pub reason: String,
    pub error: String,
    /// RFC 3339.
    pub at: String,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// First 12 hex digits of the SHA-256 of the component file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// SHA-256 (hex) of the component file.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether this version was loaded from the compile cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// The circuit breaker the pipeline consults before each call.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Calls made and calls that failed, since load.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// The most recent failure since load, if any.
    pub fn last_error(&self) -> Option<LastError> {
        crate::sync::lock(&self.last_error).clone()
    }

    /// Records a failure the host found in what the call returned (an output
    /// past a cap or to a topic the route does not allow): it counts as a
    /// failed call like a trap does.
    pub fn note_bad_output(&self, error: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.remember("bad-output", error);
    }

    fn remember(&self, reason: &str, error: &str) {
        let last = LastError {
            reason: reason.to_string(),
            error: error.to_string(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        *crate::sync::lock(&self.last_error) = Some(last);
    }

    /// The same compiled component with another `init` config and grants:
    /// a new plugin with its own instances (so no memory is shared with this
    /// one), without compiling again. Its first instance is `init`ed here.
    pub async fn reconfigured(
        &self,
        config_json: String,
        grants: Vec<Capability>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let spec = PluginSpec {
            config_json,
            grants,
            ..self.spec.clone()
        };
        Plugin::start(
            spec,
            self.digest.clone(),
            self.from_cache,
            self.pre.clone(),
            self._engine.clone(),
        )
        .await
    }

    /// A plugin with a fresh pool, its first instance instantiated and
    /// `init`ed, so a version that cannot serve is refused here.
    async fn start(
        spec: PluginSpec,
        digest: String,
        from_cache: bool,
        pre: ProcessorPre<State>,
        engine: SharedEngine,
    ) -> Result<Arc<Plugin>, LoadError> {
        let version = digest[..12.min(digest.len())].to_string();
        let spec_name = spec.name.clone();
        let plugin = Arc::new(Plugin {
            name: spec.name.as_str().into(),
            version: version.clone(),
            digest,
            from_cache,
            permits: Semaphore::new(spec.limits.instances),
            breaker: Breaker::new(&spec.name, spec.breaker.clone()),
            spec,
            pre,
            _engine: engine,
            idle: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            metrics: crate::obs::PluginSeries::new(&spec_name, &version),
        });
        let first = plugin.instantiate().await?;
        plugin.release(first);
        Ok(plugin)
    }

    async fn instantiate(&self) -> Result<Instance, LoadError> {
        let state = State::new(
            self.name.clone(),
            self.spec.grants.clone(),
            self.spec.limits.store_limits(),
            self.spec.http.clone(),
        );
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        // At every epoch tick a running call yields to the async runtime (so
        // a long call never holds a worker thread), and past its deadline it
        // is interrupted.
        store.epoch_deadline_callback(|ctx| {
            Ok(match ctx.data().deadline {
                Some(d) if Instant::now() >= d => UpdateDeadline::Interrupt,
                _ => UpdateDeadline::Yield(1),
            })
        });
        store.data_mut().deadline = Some(Instant::now() + self.spec.limits.init_timeout());
        store.set_epoch_deadline(1);
        let inst_err = |e: wasmtime::Error| LoadError::Instantiate {
            name: self.name.to_string(),
            reason: error_reason(&e),
        };
        let proc = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(inst_err)?;
        store.data_mut().deadline = Some(Instant::now() + self.spec.limits.init_timeout());
        store.set_epoch_deadline(1);
        proc.call_init(&mut store, &self.spec.config_json)
            .await
            .map_err(inst_err)?
            .map_err(|reason| LoadError::Init {
                name: self.name.to_string(),
                reason,
            })?;
        Ok(Instance { store, proc })
    }

    fn release(&self, inst: Instance) {
        crate::sync::lock(&self.idle).push(inst);
    }

    /// Runs `handle` on one event. `kv` is the event's view of the plugin's
    /// state (required when the plugin is granted `kv`).
    pub async fn handle(
        &self,
        ev: &Event,
        kv: Option<Arc<dyn KvAccess>>,
    ) -> Result<Vec<Output>, CallError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let r = self.call(ev, kv).await;
        let fault = match &r {
            Err(
                e @ (CallError::Trap(_)
                | CallError::Timeout(_)
                | CallError::MemoryLimit(_)
                | CallError::Denied(_)),
            ) => Some(e.kind()),
            _ => None,
        };
        self.metrics.observe(started.elapsed(), fault);
        if let Err(e) = &r {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.remember(e.kind(), &e.to_string());
        }
        r
    }

    async fn call(
        &self,
        ev: &Event,
        kv: Option<Arc<dyn KvAccess>>,
    ) -> Result<Vec<Output>, CallError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| CallError::Host("plugin is shutting down".into()))?;
        let pooled = crate::sync::lock(&self.idle).pop();
        let mut inst = match pooled {
            Some(i) => i,
            // A fresh instance can fail only for resource reasons (memory):
            // the event is not at fault, so it is worth a retry.
            None => self
                .instantiate()
                .await
                .map_err(|e| CallError::Host(e.to_string()))?,
        };
        let state = inst.store.data_mut();
        state.kv = kv;
        state.host_fault = None;
        state.denied = None;
        state.deadline = Some(Instant::now() + self.spec.limits.timeout);
        inst.store.set_epoch_deadline(1);
        let attributes: Vec<(&str, &str)> = ev
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let result = inst
            .proc
            .call_handle(&mut inst.store, to_wit(ev, &attributes))
            .await;
        inst.store.data_mut().kv = None;
        match result {
            Ok(Ok(outputs)) => {
                self.release(inst);
                Ok(outputs
                    .into_iter()
                    .map(|o| Output {
                        topic: o.topic,
                        event: from_wit(o.event),
                    })
                    .collect())
            }
            Ok(Err(failure)) => {
                self.release(inst);
                Err(match failure {
                    Failure::BadEvent(r) => CallError::BadEvent(r),
                    Failure::Transient(r) => CallError::Transient(r),
                })
            }
            // After a trap the instance cannot be entered again: drop it.
            Err(e) => Err(self.classify(inst.store.data(), e)),
        }
    }

    fn classify(&self, state: &State, e: wasmtime::Error) -> CallError {
        if let Some(d) = &state.denied {
            return CallError::Denied(d.clone());
        }
        if let Some(f) = &state.host_fault {
            return CallError::Host(f.clone());
        }
        if matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            return CallError::Timeout(self.spec.limits.timeout);
        }
        let text = format!("{e:#}");
        if text.contains("forcing trap when growing memory") {
            return CallError::MemoryLimit(format!(
                "cap is {} bytes: {}",
                self.spec.limits.memory_bytes,
                first_line(&text)
            ));
        }
        CallError::Trap(error_reason(&e))
    }
}

/// One readable line for an error from wasmtime: the trap itself rather than
/// the wasm backtrace that wraps it.
fn error_reason(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => first_line(&format!("{e:#}")).to_string(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// `ev` as the guest's `handle` parameter, borrowing the router's strings:
/// they are lowered straight into the guest's memory. `attributes` is the
/// list of pairs the WIT type needs, built by the caller.
fn to_wit<'a>(ev: &'a Event, attributes: &'a [(&'a str, &'a str)]) -> EventParam<'a> {
    EventParam {
        id: &ev.id,
        type_: &ev.event_type,
        version: &ev.version,
        source: &ev.source,
        key: ev.key.as_deref(),
        time: &ev.time,
        content_type: &ev.content_type,
        data: &ev.data,
        attributes,
        traceparent: ev.traceparent.as_deref(),
    }
}

fn from_wit(ev: WitEvent) -> Event {
    Event {
        id: ev.id,
        event_type: ev.type_,
        version: ev.version,
        source: ev.source,
        key: ev.key,
        time: ev.time,
        content_type: ev.content_type,
        data: ev.data,
        attributes: ev.attributes.into_iter().collect(),
        traceparent: ev.traceparent,
    }
}
