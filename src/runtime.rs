//! The running router's parts, put together from a config: the store, the
//! schema registry, the loaded plugins and the route table. HTTP handlers,
//! the pipeline and reload all work through one `Runtime`.
//!
//! What reload may replace (plugins, routes, schemas, the live config) sits
//! behind `RwLock<Arc<..>>`: readers take a snapshot, a swap replaces the
//! `Arc` whole, so a reader never sees half of a change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::config::Config;
use crate::envelope::IngestDefaults;
use crate::pipeline::Routes;
use crate::plugin::{LoadError, PluginHost, PluginSpec};
use crate::reload::{PendingRebuild, ReloadHandle, Statuses, projection};
use crate::router::{Glob, Route, RouteTable, Stage};
use crate::schema::{SchemaError, SchemaRegistry};
use crate::store::{Store, StoreError};
use crate::sync::{read, write};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Plugin(#[from] LoadError),
    #[error("plugin {plugin}: sample cases failed: {reason}")]
    Samples { plugin: String, reason: String },
    #[error("aws: {0}")]
    Aws(#[from] crate::transport::aws::AwsError),
}

/// Everything a running router shares.
pub struct Runtime {
    /// The config the router started with: `server`, `ingest` and `router`
    /// settings come from here (changing them needs a restart).
    pub config: Arc<Config>,
    /// The config in force for plugins, routes and schemas (reloadable).
    pub live: RwLock<Arc<Config>>,
    pub store: Store,
    pub schemas: Arc<RwLock<Arc<SchemaRegistry>>>,
    pub routes: Routes,
    /// The stage serving each plugin (version + state namespace).
    pub plugins: RwLock<BTreeMap<String, Stage>>,
    pub host: PluginHost,
    pub ingest: IngestDefaults,
    /// SQS sources and SNS/SQS sinks, when the config has any.
    pub aws: Option<Arc<crate::transport::aws::Aws>>,
    /// Reload outcomes and rebuild progress, per plugin.
    pub statuses: Statuses,
    /// Held by the pipeline while it processes and commits a batch; a
    /// projection switch-over takes it to find the pipeline between batches.
    pub gate: Arc<tokio::sync::Mutex<()>>,
    /// Serialises changes to `plugins` and `routes` (a reload and a
    /// projection switch-over must not each swap a table built from the
    /// other's stale copy).
    pub swap_lock: Mutex<()>,
    /// Projection rebuilds found unfinished at start-up, for the reloader.
    pub pending: Mutex<Vec<PendingRebuild>>,
    pub data_dir: PathBuf,
    /// Sends reload requests; set when the router starts serving.
    pub reload: std::sync::OnceLock<ReloadHandle>,
    /// Turns true when the router is shutting down; long-lived responses
    /// (live streams) and background tasks end on it.
    pub stopping: watch::Sender<bool>,
    /// The bound on the router's lag that ingest holds to (`ingest.max_lag`).
    pub backlog: Option<crate::transport::backlog::Backlog>,
}

impl Runtime {
    /// Opens the store in `data_dir`, compiles the schemas and loads every
    /// plugin (each instantiated and `init`ed once). Fails on the first error.
    pub async fn start(config: Config, data_dir: &Path) -> Result<Arc<Self>, StartError> {
        let schemas = load_schemas(&config)?;
        let store = Store::open_with(data_dir, config.store.cache_mb, config.store.checkpoint_mb)?;
        let host = PluginHost::with_cache(data_dir.join("cache"))?;
        let mut plugins = BTreeMap::new();
        let mut pending = Vec::new();
        for (name, cfg) in &config.plugins {
            let plugin = host.load(PluginSpec::from_config(name, cfg)).await?;
            if let Some(samples) = &cfg.samples {
                crate::plugin::samples::verify(&plugin, samples.get_ref())
                    .await
                    .map_err(|e| StartError::Samples {
                        plugin: name.clone(),
                        reason: e.to_string(),
                    })?;
            }
            let stage = if cfg.projection {
                let (stage, rebuild) = projection::resume(&store, &host, plugin).await?;
                pending.extend(rebuild);
                stage
            } else {
                Stage {
                    namespace: name.clone(),
                    plugin,
                }
            };
            tracing::info!(plugin = %name, version = stage.plugin.version(), namespace = %stage.namespace, "plugin loaded");
            plugins.insert(name.clone(), stage);
        }
        let routes = build_routes(&config, &plugins);
        let ingest = IngestDefaults {
            source: config.ingest.source.clone(),
            key_rules: config.key_rules(),
        };
        let aws = if config.uses_aws() {
            Some(Arc::new(crate::transport::aws::Aws::new(&config).await?))
        } else {
            None
        };
        let statuses = Statuses::default();
        for (name, stage) in &plugins {
            statuses.loaded(name, &stage.plugin);
        }
        let config = Arc::new(config);
        let backlog = crate::transport::backlog::Backlog::new(
            &store,
            &config.ingest.topic,
            &config.router.consumer,
            config.ingest.max_lag,
        );
        Ok(Arc::new(Self {
            live: RwLock::new(config.clone()),
            config,
            store,
            schemas: Arc::new(RwLock::new(Arc::new(schemas))),
            routes: Arc::new(RwLock::new(Arc::new(routes))),
            plugins: RwLock::new(plugins),
            host,
            ingest,
            aws,
            statuses,
            gate: Arc::new(tokio::sync::Mutex::new(())),
            swap_lock: Mutex::new(()),
            pending: Mutex::new(pending),
            data_dir: data_dir.to_path_buf(),
            reload: std::sync::OnceLock::new(),
            stopping: watch::Sender::new(false),
            backlog,
        }))
    }

    pub fn schemas(&self) -> Arc<SchemaRegistry> {
        read(&self.schemas).clone()
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        read(&self.routes).clone()
    }

    pub fn live_config(&self) -> Arc<Config> {
        read(&self.live).clone()
    }

    /// The stage serving plugin `name`.
    pub fn stage(&self, name: &str) -> Option<Stage> {
        read(&self.plugins).get(name).cloned()
    }

    /// Makes `stage` serve plugin `name`: in the plugin map and in every
    /// route, as one new route table.
    pub fn swap_stage(&self, name: &str, stage: Stage) {
        let _swap = crate::sync::lock(&self.swap_lock);
        let table = self.routes().with_stage(name, &stage);
        write(&self.plugins).insert(name.to_string(), stage);
        *write(&self.routes) = Arc::new(table);
    }
}

/// Compiles the schema registry a config names.
pub fn load_schemas(config: &Config) -> Result<SchemaRegistry, SchemaError> {
    SchemaRegistry::load(
        config.schemas.base.get_ref(),
        config
            .schemas
            .types_dir
            .as_ref()
            .map(|d| d.get_ref().as_path()),
    )
}

/// The route table of a config over loaded stages. Pipelines name only
/// known plugins (checked when the config was loaded).
pub fn build_routes(config: &Config, stages: &BTreeMap<String, Stage>) -> RouteTable {
    let routes = config
        .routes
        .iter()
        .map(|r| Route {
            name: r.name.clone(),
            patterns: r.patterns.iter().map(|p| Glob::new(p.get_ref())).collect(),
            stages: r
                .pipeline
                .iter()
                .filter_map(|s| stages.get(s.get_ref()).cloned())
                .collect(),
            direct: r.delivery == crate::config::Delivery::Direct,
            topics: r
                .topics
                .as_ref()
                .map(|ts| ts.iter().map(|t| Glob::new(t.get_ref())).collect()),
            on_poison: r.on_poison,
        })
        .collect();
    RouteTable::new(routes)
}
