//! The one `bindgen!` of the project, the store state each instance carries,
//! and the host side of the plugin's imports (`log`, `clock`, `kv`, `http`).

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::Capability;

wasmtime::component::bindgen!({
    path: "wit",
    world: "processor",
    // `fetch` waits on the network off the async runtime's workers.
    imports: {
        "switchyard:plugin/http.fetch": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    // `handle` borrows the event it is given: the host lowers the router's
    // own strings into the guest instead of cloning them first.
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub(crate) use self::switchyard::plugin::types::{EventParam, EventResult as WitEvent};

use self::switchyard::plugin::{clock, http, kv, log, types};

use super::http::HttpPolicy;

/// A plugin's view of its durable state for the duration of one call: reads
/// see the call's own writes; writes become durable with the event's outputs.
pub trait KvAccess: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String>;
    fn delete(&self, key: &str) -> Result<(), String>;
    fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, String>;
}

/// Per-instance host state.
pub(crate) struct State {
    /// The plugin's name, for log lines.
    pub plugin: Arc<str>,
    /// Capabilities granted in the config; calls to others trap.
    pub grants: Vec<Capability>,
    pub limits: StoreLimits,
    /// WASI with nothing granted: no preopened directories, no environment,
    /// no arguments, no network; stdio goes nowhere.
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    /// The state view of the call in progress (none outside `handle`).
    pub kv: Option<Arc<dyn KvAccess>>,
    /// Set when a host import failed for a reason that is not the plugin's
    /// fault (the store could not be read), so the trap counts as transient.
    pub host_fault: Option<String>,
    /// Set when the plugin used a capability it was not granted.
    pub denied: Option<String>,
    /// When the call in progress must be interrupted.
    pub deadline: Option<std::time::Instant>,
    /// Where and how the plugin may call out (with the `http` capability).
    pub http: Arc<HttpPolicy>,
}

impl State {
    pub fn new(
        plugin: Arc<str>,
        grants: Vec<Capability>,
        limits: StoreLimits,
        http: Arc<HttpPolicy>,
    ) -> Self {
        Self {
            plugin,
            grants,
            limits,
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            kv: None,
            host_fault: None,
            denied: None,
            deadline: None,
            http,
        }
    }

    fn check(&mut self, cap: Capability) -> wasmtime::Result<()> {
        if self.grants.contains(&cap) {
            return Ok(());
        }
        let msg = format!(
            "capability {cap:?} is not granted to plugin {}",
            self.plugin
        )
        .to_lowercase();
        self.denied = Some(msg.clone());
        Err(wasmtime::Error::msg(msg))
    }

    fn kv(&mut self) -> wasmtime::Result<Arc<dyn KvAccess>> {
        self.check(Capability::Kv)?;
        self.kv
            .clone()
            .ok_or_else(|| wasmtime::Error::msg("kv is only available while handling an event"))
    }

    fn fault<T>(&mut self, r: Result<T, String>) -> wasmtime::Result<T> {
        r.map_err(|e| {
            self.host_fault = Some(e.clone());
            wasmtime::Error::msg(e)
        })
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl log::Host for State {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.check(Capability::Log)?;
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

impl clock::Host for State {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        self.check(Capability::Clock)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(now.as_millis() as u64)
    }
}

impl kv::Host for State {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let kv = self.kv()?;
        let r = kv.get(&key);
        self.fault(r)
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        let kv = self.kv()?;
        let r = kv.put(&key, value);
        self.fault(r)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        let kv = self.kv()?;
        let r = kv.delete(&key);
        self.fault(r)
    }

    fn scan_prefix(
        &mut self,
        prefix: String,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        let kv = self.kv()?;
        let r = kv.scan(&prefix, limit as usize);
        self.fault(r)
    }
}

impl http::Host for State {
    async fn fetch(
        &mut self,
        req: http::Request,
    ) -> wasmtime::Result<Result<http::Response, String>> {
        self.check(Capability::Http)?;
        let plugin = self.plugin.clone();
        let target = match self.http.admit(&req.url) {
            Ok(t) => t,
            // Not the plugin's to work around: the event fails as denied
            // (and is dead-lettered) before any connection is made.
            Err(super::http::Refusal::Denied(msg)) => {
                tracing::warn!(plugin = &*plugin, url = %req.url, "{msg}");
                let msg = format!("plugin {plugin}: {msg}");
                self.denied = Some(msg.clone());
                return Err(wasmtime::Error::msg(msg));
            }
            Err(super::http::Refusal::Invalid(msg)) => return Ok(Err(msg)),
        };
        // Epoch interruption cannot stop a host call, so the request gets
        // at most what is left of the plugin's deadline.
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let policy = self.http.clone();
        let outcome = tokio::task::spawn_blocking(move || policy.send(&target, req, left)).await;
        Ok(match outcome {
            Ok(Ok(resp)) => {
                tracing::debug!(
                    plugin = &*plugin,
                    status = resp.status,
                    "http fetch answered"
                );
                Ok(resp)
            }
            Ok(Err(e)) => {
                tracing::info!(plugin = &*plugin, error = %e, "http fetch failed");
                Err(e)
            }
            Err(e) => Err(format!("http fetch did not complete: {e}")),
        })
    }
}

/// The linker every plugin is instantiated with: our imports plus WASI p2
/// (with an empty context, so nothing is actually reachable through it).
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Processor::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
    Ok(linker)
}
