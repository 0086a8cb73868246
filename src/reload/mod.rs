//! Hot reload: plugins, the config and the schemas swap live.
//!
//! Requests come from the file watcher (`watcher.rs`, which only signals),
//! the admin API and start-up. One controller task handles them one at a
//! time: it builds the new piece aside (compile — from the cache when the
//! version was seen before —, instantiate, `init`), and only when that worked
//! swaps it in whole; otherwise the old one keeps serving and the failure is
//! recorded. A projection's new version is rebuilt blue/green
//! (`projection.rs`) before it takes over.
//!
//! **Invariant:** a swap replaces the route table `Arc` whole, between two
//! batches of the pipeline: events of a batch all see one version, the next
//! batch the other, so no event is handled by neither or by both.

pub mod projection;
mod status;
mod watcher;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

pub use projection::PendingRebuild;
pub use status::{RebuildProgress, ReloadRecord, StatusView, Statuses};
pub use watcher::Watcher;

use crate::config::Config;
use crate::plugin::{Plugin, PluginSpec, samples};
use crate::router::Stage;
use crate::runtime::{Runtime, build_routes, load_schemas};
use crate::sync::write;

/// What to reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Request {
    /// A plugin's component file.
    Plugin(String),
    /// Rebuild a projection's current version into a fresh generation.
    Rebuild(String),
    /// The config file (plugins, routes, schemas it names).
    Config,
    /// The schema files.
    Schemas,
}

impl Request {
    fn target(&self) -> String {
        match self {
            Request::Plugin(n) => format!("plugin {n}"),
            Request::Rebuild(n) => format!("projection {n}"),
            Request::Config => "config".into(),
            Request::Schemas => "schemas".into(),
        }
    }
}

/// The result of one request, as the admin API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub target: String,
    /// `ok`, `unchanged`, `rebuilding` or `failed`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The generation a projection rebuild fills.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    pub millis: u64,
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        self.outcome == "failed"
    }
}

struct Job {
    request: Request,
    trigger: &'static str,
    reply: Option<oneshot::Sender<Outcome>>,
}

/// Sends reload requests to the controller.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::UnboundedSender<Job>,
}

impl ReloadHandle {
    /// Asks for a reload and waits for its outcome.
    pub async fn request(&self, request: Request, trigger: &'static str) -> Option<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                request,
                trigger,
                reply: Some(reply),
            })
            .ok()?;
        rx.await.ok()
    }

    /// Asks for a reload without waiting.
    pub fn signal(&self, request: Request, trigger: &'static str) {
        let _ = self.tx.send(Job {
            request,
            trigger,
            reply: None,
        });
    }
}

/// Starts the controller (and the file watcher when `watch` is set); the
/// controller stops when the router does.
pub fn start(rt: Arc<Runtime>, watch_files: bool) -> ReloadHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = ReloadHandle { tx };
    let watcher = if watch_files {
        match Watcher::spawn(&rt.live_config(), handle.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch files; reload only through the admin API");
                None
            }
        }
    } else {
        None
    };
    let controller = Controller {
        rt: rt.clone(),
        watcher,
        rebuilds: Mutex::new(HashMap::new()),
    };
    let pending = std::mem::take(&mut *crate::sync::lock(&rt.pending));
    tokio::spawn(controller.run(rx, pending));
    handle
}

struct Controller {
    rt: Arc<Runtime>,
    watcher: Option<Watcher>,
    /// Running rebuilds by projection: their generation and cancel switch.
    rebuilds: Mutex<HashMap<String, (u64, watch::Sender<bool>)>>,
}

impl Controller {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Job>, pending: Vec<PendingRebuild>) {
        let this = Arc::new(self);
        for job in pending {
            this.start_rebuild(job, "startup");
        }
        let mut stopping = this.rt.stopping.subscribe();
        loop {
            let job = tokio::select! {
                j = rx.recv() => match j { Some(j) => j, None => break },
                _ = stopping.wait_for(|s| *s) => break,
            };
            let started = Instant::now();
            let mut outcome = this.handle(&job.request, job.trigger).await;
            outcome.millis = started.elapsed().as_millis() as u64;
            if matches!(job.request, Request::Config | Request::Schemas) {
                this.rt.statuses.record_config(ReloadRecord {
                    at: chrono::Utc::now().to_rfc3339(),
                    outcome: outcome.outcome.clone(),
                    trigger: format!("{} ({})", job.trigger, outcome.target),
                    version: None,
                    reason: outcome.reason.clone(),
                    millis: outcome.millis,
                    from_cache: false,
                });
            }
            let reason = outcome.reason.as_deref().unwrap_or("");
            if outcome.is_failure() {
                tracing::warn!(target_ = %outcome.target, trigger = job.trigger, reason, millis = outcome.millis, "reload failed; the previous version keeps serving");
            } else {
                tracing::info!(target_ = %outcome.target, trigger = job.trigger, outcome = %outcome.outcome, version = outcome.version.as_deref().unwrap_or(""), millis = outcome.millis, "reload {}", outcome.outcome);
            }
            if let Some(reply) = job.reply {
                let _ = reply.send(outcome);
            }
        }
        for (_, (_, cancel)) in crate::sync::lock(&this.rebuilds).drain() {
            cancel.send_replace(true);
        }
    }

    async fn handle(self: &Arc<Self>, request: &Request, trigger: &'static str) -> Outcome {
        let outcome = |outcome: &str, version: Option<String>, reason: Option<String>| Outcome {
            target: request.target(),
            outcome: outcome.into(),
            version,
            reason,
            generation: None,
            millis: 0,
        };
        match request {
            Request::Plugin(name) => self.reload_plugin(name, trigger).await,
            Request::Rebuild(name) => match self.rt.stage(name) {
                Some(stage) if self.is_projection(name) => {
                    match projection::next_generation(&self.rt.store, name) {
                        Ok(generation) => {
                            let version = stage.plugin.version().to_string();
                            let job = PendingRebuild {
                                name: name.clone(),
                                plugin: stage.plugin,
                                generation,
                            };
                            self.start_rebuild(job, trigger);
                            Outcome {
                                generation: Some(generation),
                                ..outcome("rebuilding", Some(version), None)
                            }
                        }
                        Err(e) => outcome("failed", None, Some(e.to_string())),
                    }
                }
                Some(_) => outcome(
                    "failed",
                    None,
                    Some(format!("plugin {name:?} is not a projection")),
                ),
                None => outcome("failed", None, Some(format!("no plugin named {name:?}"))),
            },
            Request::Schemas => match load_schemas(&self.rt.live_config()) {
                Ok(reg) => {
                    *write(&self.rt.schemas) = Arc::new(reg);
                    outcome("ok", None, None)
                }
                Err(e) => outcome("failed", None, Some(e.to_string())),
            },
            Request::Config => match self.reload_config(trigger).await {
                Ok(note) => outcome("ok", None, note),
                Err(e) => outcome("failed", None, Some(e)),
            },
        }
    }

    fn is_projection(&self, name: &str) -> bool {
        self.rt
            .live_config()
            .plugins
            .get(name)
            .is_some_and(|p| p.projection)
    }

    /// Loads the plugin's file aside and swaps it in (or starts its rebuild).
    async fn reload_plugin(self: &Arc<Self>, name: &str, trigger: &'static str) -> Outcome {
        let started = Instant::now();
        let mut out = Outcome {
            target: format!("plugin {name}"),
            outcome: "failed".into(),
            version: None,
            reason: None,
            generation: None,
            millis: 0,
        };
        let config = self.rt.live_config();
        let (Some(cfg), Some(current)) = (config.plugins.get(name), self.rt.stage(name)) else {
            out.reason = Some(format!("no plugin named {name:?}"));
            return out;
        };
        let plugin = match self.rt.host.load(PluginSpec::from_config(name, cfg)).await {
            Ok(p) => p,
            Err(e) => {
                out.reason = Some(e.to_string());
                self.record(name, &out, started, false, trigger);
                return out;
            }
        };
        out.version = Some(plugin.version().to_string());
        if let Some(samples) = &cfg.samples
            && let Err(e) = samples::verify(&plugin, samples.get_ref()).await
        {
            out.reason = Some(format!("sample cases failed: {e}"));
            self.record(name, &out, started, plugin.from_cache(), trigger);
            return out;
        }
        let rebuilding = crate::sync::lock(&self.rebuilds).contains_key(name);
        if plugin.digest() == current.plugin.digest() && !(trigger == "api" || rebuilding) {
            out.outcome = "unchanged".into();
        } else if cfg.projection {
            if plugin.digest() == current.plugin.digest() {
                // Back to the live version: a rebuild of it is not needed.
                self.cancel_rebuild(name);
                out.outcome = "unchanged".into();
            } else {
                match projection::next_generation(&self.rt.store, name) {
                    Ok(generation) => {
                        self.start_rebuild(
                            PendingRebuild {
                                name: name.to_string(),
                                plugin: plugin.clone(),
                                generation,
                            },
                            trigger,
                        );
                        out.outcome = "rebuilding".into();
                        out.generation = Some(generation);
                    }
                    Err(e) => out.reason = Some(e.to_string()),
                }
            }
        } else {
            self.rt.swap_stage(
                name,
                Stage {
                    plugin: plugin.clone(),
                    namespace: current.namespace,
                },
            );
            self.rt.statuses.loaded(name, &plugin);
            out.outcome = "ok".into();
        }
        self.record(name, &out, started, plugin.from_cache(), trigger);
        out
    }

    fn record(&self, name: &str, out: &Outcome, started: Instant, from_cache: bool, trigger: &str) {
        self.rt.statuses.record(
            name,
            ReloadRecord {
                at: chrono::Utc::now().to_rfc3339(),
                outcome: out.outcome.clone(),
                trigger: trigger.to_string(),
                version: out.version.clone(),
                reason: out.reason.clone(),
                millis: started.elapsed().as_millis() as u64,
                from_cache,
            },
        );
    }

    fn cancel_rebuild(&self, name: &str) {
        if let Some((_, cancel)) = crate::sync::lock(&self.rebuilds).remove(name) {
            cancel.send_replace(true);
        }
    }

    /// Starts a rebuild, cancelling one already running for the projection.
    fn start_rebuild(self: &Arc<Self>, job: PendingRebuild, trigger: &'static str) {
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let name = job.name.clone();
        let generation = job.generation;
        if let Some((_, old)) =
            crate::sync::lock(&self.rebuilds).insert(name.clone(), (generation, cancel_tx))
        {
            old.send_replace(true);
        }
        tracing::info!(plugin = %name, generation, trigger, "projection rebuild scheduled");
        let this = self.clone();
        tokio::spawn(async move {
            let result = projection::run(this.rt.clone(), job, cancel_rx).await;
            let mut rebuilds = crate::sync::lock(&this.rebuilds);
            if rebuilds.get(&name).is_some_and(|(g, _)| *g == generation) {
                rebuilds.remove(&name);
            }
            match result {
                Ok(end) => tracing::debug!(plugin = %name, generation, ?end, "rebuild ended"),
                Err(e) => {
                    tracing::error!(plugin = %name, generation, error = %e, "projection rebuild failed; the previous version keeps serving")
                }
            }
        });
    }

    /// Loads the config file again and swaps plugins, routes and schemas
    /// whole; any error leaves everything as it was.
    async fn reload_config(
        self: &Arc<Self>,
        trigger: &'static str,
    ) -> Result<Option<String>, String> {
        let old = self.rt.live_config();
        let new = Config::load(&old.file).map_err(|e| e.to_string())?;
        let schemas = load_schemas(&new).map_err(|e| e.to_string())?;
        // Build every new or changed plugin aside first.
        let mut fresh: BTreeMap<String, Arc<Plugin>> = BTreeMap::new();
        let mut added: BTreeMap<String, Stage> = BTreeMap::new();
        let mut rebuild = Vec::new();
        for (name, cfg) in &new.plugins {
            let current = self.rt.stage(name);
            if old.plugins.get(name) == Some(cfg) && current.is_some() {
                continue;
            }
            let plugin = self
                .rt
                .host
                .load(PluginSpec::from_config(name, cfg))
                .await
                .map_err(|e| e.to_string())?;
            if let Some(samples) = &cfg.samples {
                samples::verify(&plugin, samples.get_ref())
                    .await
                    .map_err(|e| format!("plugin {name}: sample cases failed: {e}"))?;
            }
            if cfg.projection && current.is_none() {
                // A projection new to this router: its generations may be in
                // the store from an earlier run.
                let (stage, pending) = projection::resume(&self.rt.store, &self.rt.host, plugin)
                    .await
                    .map_err(|e| e.to_string())?;
                added.insert(name.clone(), stage);
                rebuild.extend(pending);
            } else {
                fresh.insert(name.clone(), plugin);
            }
        }
        let mut note = Vec::new();
        let started = &self.rt.config;
        if new.server != started.server
            || new.ingest != started.ingest
            || new.router != started.router
            || new.aws != started.aws
            || new.sources != started.sources
            || new.sinks != started.sinks
        {
            note.push(
                "changes to [server], [ingest], [router], [aws], [sources] or [sinks] take effect after a restart"
                    .to_string(),
            );
        }
        {
            let _swap = crate::sync::lock(&self.rt.swap_lock);
            let current = crate::sync::read(&self.rt.plugins).clone();
            let mut stages = BTreeMap::new();
            for name in new.plugins.keys() {
                if let Some(stage) = added.remove(name) {
                    stages.insert(name.clone(), stage);
                    continue;
                }
                let stage = match (fresh.remove(name), current.get(name)) {
                    (None, Some(s)) => s.clone(),
                    // A projection that changed code keeps serving its state
                    // until the new version is rebuilt.
                    (Some(p), Some(s))
                        if new.plugins[name].projection && s.plugin.digest() != p.digest() =>
                    {
                        match projection::next_generation(&self.rt.store, name) {
                            Ok(generation) => rebuild.push(PendingRebuild {
                                name: name.clone(),
                                plugin: p,
                                generation,
                            }),
                            Err(e) => note.push(format!("projection {name} not rebuilt: {e}")),
                        }
                        s.clone()
                    }
                    (Some(p), Some(s)) => Stage {
                        plugin: p,
                        namespace: s.namespace.clone(),
                    },
                    (Some(p), None) => Stage {
                        plugin: p,
                        namespace: name.clone(),
                    },
                    (None, None) => continue,
                };
                stages.insert(name.clone(), stage);
            }
            let table = build_routes(&new, &stages);
            for name in current.keys().filter(|n| !stages.contains_key(*n)) {
                self.rt.statuses.forget(name);
                note.push(format!("plugin {name} removed"));
            }
            for (name, stage) in &stages {
                if current
                    .get(name)
                    .is_none_or(|s| !Arc::ptr_eq(&s.plugin, &stage.plugin))
                {
                    self.rt.statuses.loaded(name, &stage.plugin);
                }
            }
            *write(&self.rt.plugins) = stages;
            *write(&self.rt.routes) = Arc::new(table);
            *write(&self.rt.schemas) = Arc::new(schemas);
            *write(&self.rt.live) = Arc::new(new.clone());
        }
        for name in current_removed(&old, &new) {
            self.cancel_rebuild(&name);
        }
        for job in rebuild {
            self.start_rebuild(job, trigger);
        }
        if let Some(w) = &self.watcher {
            w.update(&new);
        }
        Ok((!note.is_empty()).then(|| note.join("; ")))
    }
}

fn current_removed(old: &Config, new: &Config) -> Vec<String> {
    old.plugins
        .keys()
        .filter(|n| !new.plugins.contains_key(*n))
        .cloned()
        .collect()
}
