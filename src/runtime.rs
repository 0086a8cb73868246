//! The running router's parts, put together from a config: the store, the
//! schema registry, the loaded plugins and the route table. HTTP handlers,
//! the pipeline and (later) reload all work through one `Runtime`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::envelope::IngestDefaults;
use crate::pipeline::Routes;
use crate::plugin::{LoadError, Plugin, PluginHost, PluginSpec};
use crate::router::{Route, RouteTable};
use crate::schema::{SchemaError, SchemaRegistry};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Plugin(#[from] LoadError),
    #[error("aws: {0}")]
    Aws(#[from] crate::transport::aws::AwsError),
}

/// Everything a running router shares.
pub struct Runtime {
    pub config: Arc<Config>,
    pub store: Store,
    pub schemas: Arc<RwLock<Arc<SchemaRegistry>>>,
    pub routes: Routes,
    pub plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    pub host: PluginHost,
    pub ingest: IngestDefaults,
    /// SQS sources and SNS/SQS sinks, when the config has any.
    pub aws: Option<Arc<crate::transport::aws::Aws>>,
}

impl Runtime {
    /// Opens the store in `data_dir`, compiles the schemas and loads every
    /// plugin (each instantiated and `init`ed once). Fails on the first error.
    pub async fn start(config: Config, data_dir: &Path) -> Result<Arc<Self>, StartError> {
        let schemas = load_schemas(&config)?;
        let host = PluginHost::new()?;
        let plugins = load_plugins(&host, &config).await?;
        let routes = build_routes(&config, &plugins);
        let store = Store::open(data_dir)?;
        let ingest = IngestDefaults {
            source: config.ingest.source.clone(),
            key_rules: config.key_rules(),
        };
        let aws = if config.uses_aws() {
            Some(Arc::new(crate::transport::aws::Aws::new(&config).await?))
        } else {
            None
        };
        Ok(Arc::new(Self {
            config: Arc::new(config),
            store,
            schemas: Arc::new(RwLock::new(Arc::new(schemas))),
            routes: Arc::new(RwLock::new(Arc::new(routes))),
            plugins: RwLock::new(plugins),
            host,
            ingest,
            aws,
        }))
    }

    pub fn schemas(&self) -> Arc<SchemaRegistry> {
        self.schemas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

/// Loads every plugin of a config, in name order.
pub async fn load_plugins(
    host: &PluginHost,
    config: &Config,
) -> Result<BTreeMap<String, Arc<Plugin>>, LoadError> {
    let mut out = BTreeMap::new();
    for (name, cfg) in &config.plugins {
        let plugin = host.load(PluginSpec::from_config(name, cfg)).await?;
        tracing::info!(plugin = %name, version = plugin.version(), "plugin loaded");
        out.insert(name.clone(), plugin);
    }
    Ok(out)
}

/// The route table of a config over loaded plugins. Pipelines name only
/// known plugins (checked when the config was loaded).
pub fn build_routes(config: &Config, plugins: &BTreeMap<String, Arc<Plugin>>) -> RouteTable {
    let routes = config
        .routes
        .iter()
        .map(|r| Route {
            name: r.name.clone(),
            patterns: r.patterns.iter().map(|p| p.get_ref().clone()).collect(),
            stages: r
                .pipeline
                .iter()
                .filter_map(|s| plugins.get(s.get_ref()).cloned())
                .collect(),
            direct: r.delivery == crate::config::Delivery::Direct,
        })
        .collect();
    RouteTable::new(routes)
}
