//! The router's configuration file: a TOML model, its defaults, and validation
//! whose errors name the file, the line and the key.
//!
//! Paths inside the file (plugins, schemas) are relative to the file itself, so
//! a config directory can be moved as a whole. `load` resolves them to absolute
//! paths and checks everything that can be checked without running anything:
//! plugin files exist, pipelines name known plugins, globs parse, topic names
//! are legal. Instantiating plugins and compiling schemas is the caller's next
//! step (`switchyard validate` does both).

mod aws;
mod locate;
mod resilience;
mod server;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::envelope::KeyRule;

pub use aws::{
    AwsConfig, Delivery, MAX_BATCH_ENTRIES, MessageFormat, SinkConfig, SinksConfig, SourcesConfig,
    SqsSourceConfig, SubscriptionConfig, check_resource_name, queue_name,
};
pub use resilience::{
    BreakerConfig, DEFAULT_BREAKER_BACKOFF_MS, DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_MAX_BACKOFF_MS, DEFAULT_HOLD_BACKOFF_MS, DEFAULT_HOLD_MAX_BACKOFF_MS,
    DEFAULT_HOLD_RETRIES, OnOpen, OnPoison,
};
pub use server::{
    ADMIN_TOKEN_ENV, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_REQUEST_TIMEOUT_MS, ExposureError, ServerConfig,
};

/// Log events a projection rebuild replays per commit (`router.rebuild_batch_size`).
/// Measured with the benchmark's rebuild of the prisoner projection: 256 a
/// commit replayed 52k log events/s, 4,096 132k, 16,384 145k. A rebuild's
/// commit shares the store's one writer with live traffic, so the default
/// stops where the gain flattens.
pub const DEFAULT_REBUILD_BATCH_SIZE: usize = 4096;

/// Default per-call deadline: a transform that takes longer than this on one
/// event is broken or hostile, and it holds an ordering key hostage meanwhile.
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
/// Default linear-memory cap per plugin instance. Rust guests need a few MiB;
/// JavaScript and Python runtimes need tens.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// Default pool size per plugin: one instance per event processed in parallel.
pub const DEFAULT_INSTANCES: usize = 4;
/// Default cap on outputs per call: fan-out past this is a runaway plugin,
/// and every output is a row committed with the input's batch.
pub const DEFAULT_MAX_OUTPUTS: usize = 1_000;
/// Default cap on the total data bytes of one call's outputs: what one input
/// may add to the log, so a plugin cannot flood the store.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Default timeout of one outbound HTTP call (`http` capability); the call
/// also gets no more than what is left of the plugin's own deadline.
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 1_000;
/// Default cap on one outbound HTTP response body: enrichment data is small,
/// and the body is held in the plugin's memory.
pub const DEFAULT_HTTP_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// A configuration error, rendered as `file:line: key: reason`.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// Dotted path of the key (`routes[1].pipeline[0]`), empty for the file.
    pub key: String,
    /// What is wrong, lower-case.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The whole file, after defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    pub schemas: SchemaConfig,
    #[serde(default)]
    pub router: RouterConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub store: StoreConfig,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Routes, tried in order; every matching route runs.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// How to reach AWS, when sources or sinks use it.
    #[serde(default)]
    pub aws: AwsConfig,
    /// Sources besides HTTP ingest (SQS queues).
    #[serde(default)]
    pub sources: SourcesConfig,
    /// External sinks the log's topics are forwarded to (SNS, SQS).
    #[serde(default)]
    pub sinks: SinksConfig,
    /// The file this was read from (absolute), for error messages and reload.
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Topic that accepted events are appended to.
    pub topic: String,
    /// `source` given to events that arrive as HMPPS domain events.
    pub source: String,
    /// How the ordering key is found in a payload, first match wins:
    /// `identifier:TYPE` (personReference identifier) or a JSON pointer.
    pub key: Vec<Spanned<String>>,
    /// Events the router may be behind on the ingest topic: past it, HTTP
    /// ingest answers 503 and SQS sources stop receiving until it catches
    /// up. 0: no bound (the log takes every burst).
    pub max_lag: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            topic: "events".into(),
            source: "urn:switchyard:http".into(),
            key: vec![
                Spanned::new(0..0, "identifier:NOMS".into()),
                Spanned::new(0..0, "identifier:CRN".into()),
            ],
            max_lag: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// The HMPPS domain event base schema.
    pub base: Spanned<PathBuf>,
    /// Directory of per-event-type schemas (`<type>[@<version>].schema.json`).
    #[serde(default)]
    pub types_dir: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Name of the router's durable cursor on the ingest topic.
    pub consumer: String,
    /// Where failed events go, with the reason.
    pub dead_letter_topic: String,
    /// Events read and committed together (one durable write per batch).
    pub batch_size: usize,
    /// Ordering keys processed in parallel.
    pub workers: usize,
    /// Log events a projection rebuild replays per commit of its state.
    /// Larger than `batch_size`: a rebuild is a catch-up job, and each
    /// commit costs a durable write whether it holds ten state writes or a
    /// thousand.
    pub rebuild_batch_size: usize,
    /// Attempts for an event whose plugin reports a transient failure before
    /// it is dead-lettered.
    pub max_attempts: u32,
    /// Back-off before the first retry; doubles each attempt.
    pub retry_backoff_ms: u64,
    /// Further attempts of an event whose key is held (see `on_poison`),
    /// after its in-batch attempts, before it is dead-lettered.
    pub hold_retries: u32,
    /// Wait before the first retry of a held event; doubles each time.
    pub hold_backoff_ms: u64,
    /// Cap on the wait between retries of a held event.
    pub hold_max_backoff_ms: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            consumer: "router".into(),
            dead_letter_topic: "dead-letter".into(),
            batch_size: 256,
            workers: 4,
            rebuild_batch_size: DEFAULT_REBUILD_BATCH_SIZE,
            max_attempts: 3,
            retry_backoff_ms: 50,
            hold_retries: DEFAULT_HOLD_RETRIES,
            hold_backoff_ms: DEFAULT_HOLD_BACKOFF_MS,
            hold_max_backoff_ms: DEFAULT_HOLD_MAX_BACKOFF_MS,
        }
    }
}

/// The embedded log's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Memory for the store's page cache, in MiB: what bounds the router's
    /// resident set as the log grows (the pipeline reads what was just
    /// written, which is still cached).
    pub cache_mb: usize,
    /// Write-ahead log size, in MiB, at which the store checkpoints. Each
    /// checkpoint pauses writes while the database is synced, for a time
    /// that grows with this size; larger makes them rarer.
    pub checkpoint_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_mb: crate::store::DEFAULT_CACHE_MB,
            checkpoint_mb: crate::store::DEFAULT_CHECKPOINT_MB,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch plugin, config and schema files and reload them on change.
    pub watch: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch: true }
    }
}

/// Host capabilities a plugin may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Log,
    Clock,
    Kv,
    /// Outbound HTTP to the hosts on the plugin's `http_allow` list.
    Http,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The component file (`.wasm`).
    pub path: Spanned<PathBuf>,
    /// Passed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: Option<toml::Value>,
    /// Wall-clock deadline for one call, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Linear-memory cap per instance, in MiB.
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    /// Instances kept for parallel calls.
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// Outputs one call may emit; more dead-letters the event (`bad-output`).
    #[serde(default = "default_max_outputs")]
    pub max_outputs: usize,
    /// Total data bytes of one call's outputs; more dead-letters the event.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: usize,
    /// Granted host capabilities.
    #[serde(default = "default_caps")]
    pub capabilities: Vec<Capability>,
    /// With the `http` capability: the hosts the plugin may call, each
    /// `host[:port]` matched exactly (no port: the URL scheme's default).
    #[serde(default)]
    pub http_allow: Vec<Spanned<String>>,
    /// Timeout of one outbound HTTP call, in milliseconds.
    #[serde(default = "default_http_timeout")]
    pub http_timeout_ms: u64,
    /// Cap on one outbound HTTP response body, in bytes.
    #[serde(default = "default_http_max_response")]
    pub http_max_response_bytes: u64,
    /// A projection keeps derived state in `kv`; a new version of its code is
    /// rebuilt from the event log into fresh state before it takes over.
    #[serde(default)]
    pub projection: bool,
    /// Sample cases (a case file or a directory of them, see
    /// `plugin::samples`) a version of this plugin must pass before it
    /// serves: `switchyard validate` runs them, and so does a reload.
    #[serde(default)]
    pub samples: Option<Spanned<PathBuf>>,
    /// The plugin's circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_memory() -> u64 {
    DEFAULT_MEMORY_MB
}
fn default_instances() -> usize {
    DEFAULT_INSTANCES
}
fn default_max_outputs() -> usize {
    DEFAULT_MAX_OUTPUTS
}
fn default_max_output_bytes() -> usize {
    DEFAULT_MAX_OUTPUT_BYTES
}
fn default_http_timeout() -> u64 {
    DEFAULT_HTTP_TIMEOUT_MS
}
fn default_http_max_response() -> u64 {
    DEFAULT_HTTP_MAX_RESPONSE_BYTES
}
fn default_caps() -> Vec<Capability> {
    vec![Capability::Log, Capability::Clock]
}

impl PluginConfig {
    /// The plugin's `init` argument as JSON text.
    pub fn config_json(&self) -> String {
        match &self.config {
            Some(v) => serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
            None => "{}".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Event type globs, e.g. `prison-offender-events.prisoner.*`.
    #[serde(rename = "match")]
    pub patterns: Vec<Spanned<String>>,
    /// Plugin names, run in order; each stage's outputs feed the next.
    pub pipeline: Vec<Spanned<String>>,
    /// `outbox` (default): answered once durable, forwarded by the sinks;
    /// `direct`: run inside the request, answered once the sinks' brokers
    /// (if any forward the outputs' topics) accepted the outputs and the
    /// input and outputs are durable, in one commit.
    #[serde(default)]
    pub delivery: Delivery,
    /// Topic globs the route's plugins may emit to; absent, any topic but
    /// the reserved ones (ingest, dead-letter). Other outputs dead-letter the
    /// event as `bad-output`.
    #[serde(default)]
    pub topics: Option<Vec<Spanned<String>>>,
    /// What happens to a key whose event keeps failing transiently.
    #[serde(default)]
    pub on_poison: OnPoison,
}

impl Config {
    /// The topics only the router writes (ingest, dead-letter): a sink's
    /// glob never forwards them, only an exact name does.
    pub fn reserved_topics(&self) -> [&str; 2] {
        [
            self.ingest.topic.as_str(),
            self.router.dead_letter_topic.as_str(),
        ]
    }

    /// Reads, parses and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(file, &text)
    }

    /// Parses and validates `text` as if read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let at = Locator { file: &file, text };
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| at.line_of(s.start));
            let reason = e.message().trim().to_string();
            ConfigError {
                file: file.clone(),
                line,
                key: String::new(),
                reason,
            }
        })?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.file = file.clone();
        cfg.resolve_paths(&dir);
        cfg.validate(&at)?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut Spanned<PathBuf>| {
            if p.get_ref().is_relative() {
                let span = p.span();
                *p = Spanned::new(span, dir.join(p.get_ref()));
            }
        };
        fix(&mut self.schemas.base);
        if let Some(t) = self.schemas.types_dir.as_mut() {
            fix(t);
        }
        for p in self.plugins.values_mut() {
            fix(&mut p.path);
            if let Some(s) = p.samples.as_mut() {
                fix(s);
            }
        }
    }

    fn validate(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        let whole = |key: &str, reason: String| at.error(None, key, reason);
        if self.router.batch_size == 0 {
            return Err(whole("router.batch_size", "must be at least 1".into()));
        }
        if self.router.rebuild_batch_size == 0 {
            return Err(whole(
                "router.rebuild_batch_size",
                "must be at least 1".into(),
            ));
        }
        if self.router.workers == 0 {
            return Err(whole("router.workers", "must be at least 1".into()));
        }
        if self.store.cache_mb == 0 {
            return Err(whole("store.cache_mb", "must be at least 1".into()));
        }
        // An open reads the whole log into memory to replay it.
        if self.store.checkpoint_mb == 0 || self.store.checkpoint_mb > 256 {
            return Err(whole(
                "store.checkpoint_mb",
                "must be between 1 and 256".into(),
            ));
        }
        if self.router.max_attempts == 0 {
            return Err(whole("router.max_attempts", "must be at least 1".into()));
        }
        for (key, topic) in [
            ("ingest.topic", &self.ingest.topic),
            ("router.dead_letter_topic", &self.router.dead_letter_topic),
        ] {
            if let Err(reason) = check_topic_name(topic) {
                return Err(whole(key, reason));
            }
        }
        if self.ingest.topic == self.router.dead_letter_topic {
            return Err(whole(
                "router.dead_letter_topic",
                "must differ from ingest.topic".into(),
            ));
        }
        for (i, rule) in self.ingest.key.iter().enumerate() {
            if let Err(e) = rule.get_ref().parse::<KeyRule>() {
                return Err(at.error(
                    Some(rule.span()),
                    &format!("ingest.key[{i}]"),
                    e.to_string(),
                ));
            }
        }
        let base = &self.schemas.base;
        if !base.get_ref().is_file() {
            return Err(at.error(
                Some(base.span()),
                "schemas.base",
                format!("schema file {} does not exist", base.get_ref().display()),
            ));
        }
        if let Some(dir) = &self.schemas.types_dir
            && !dir.get_ref().is_dir()
        {
            return Err(at.error(
                Some(dir.span()),
                "schemas.types_dir",
                format!("directory {} does not exist", dir.get_ref().display()),
            ));
        }
        for (name, p) in &self.plugins {
            let key = format!("plugins.{name}");
            if let Err(reason) = check_topic_name(name) {
                return Err(whole(&key, format!("bad plugin name: {reason}")));
            }
            if !p.path.get_ref().is_file() {
                return Err(at.error(
                    Some(p.path.span()),
                    &format!("{key}.path"),
                    format!(
                        "plugin file {} does not exist (build the plugins first)",
                        p.path.get_ref().display()
                    ),
                ));
            }
            if p.projection && !p.capabilities.contains(&Capability::Kv) {
                return Err(whole(
                    &format!("{key}.capabilities"),
                    "a projection keeps its state in kv: grant \"kv\"".into(),
                ));
            }
            if !p.http_allow.is_empty() && !p.capabilities.contains(&Capability::Http) {
                return Err(whole(
                    &format!("{key}.http_allow"),
                    "an allow-list without the capability: grant \"http\"".into(),
                ));
            }
            for (j, entry) in p.http_allow.iter().enumerate() {
                if let Err(reason) = crate::plugin::AllowedHost::parse(entry.get_ref()) {
                    return Err(at.error(
                        Some(entry.span()),
                        &format!("{key}.http_allow[{j}]"),
                        reason,
                    ));
                }
            }
            if let Some(samples) = &p.samples
                && !samples.get_ref().exists()
            {
                return Err(at.error(
                    Some(samples.span()),
                    &format!("{key}.samples"),
                    format!("{} does not exist", samples.get_ref().display()),
                ));
            }
            for (field, value) in [
                ("timeout_ms", p.timeout_ms),
                ("memory_mb", p.memory_mb),
                ("instances", p.instances as u64),
                ("breaker.backoff_ms", p.breaker.backoff_ms),
                ("breaker.max_backoff_ms", p.breaker.max_backoff_ms),
                ("http_timeout_ms", p.http_timeout_ms),
            ] {
                if value == 0 {
                    return Err(whole(
                        &format!("{key}.{field}"),
                        "must be at least 1".into(),
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if !names.insert(r.name.as_str()) {
                return Err(whole(
                    &format!("{key}.name"),
                    format!("duplicate route name {:?}", r.name),
                ));
            }
            if r.patterns.is_empty() {
                return Err(whole(
                    &format!("{key}.match"),
                    "needs at least one event type pattern".into(),
                ));
            }
            for (j, pat) in r.patterns.iter().enumerate() {
                if let Err(reason) = crate::router::check_pattern(pat.get_ref()) {
                    return Err(at.error(Some(pat.span()), &format!("{key}.match[{j}]"), reason));
                }
            }
            for (j, pat) in r.topics.iter().flatten().enumerate() {
                if let Err(reason) = crate::router::check_pattern(pat.get_ref()) {
                    return Err(at.error(Some(pat.span()), &format!("{key}.topics[{j}]"), reason));
                }
            }
            if r.pipeline.is_empty() {
                return Err(whole(
                    &format!("{key}.pipeline"),
                    "needs at least one plugin".into(),
                ));
            }
            for (j, stage) in r.pipeline.iter().enumerate() {
                let Some(plugin) = self.plugins.get(stage.get_ref()) else {
                    return Err(at.error(
                        Some(stage.span()),
                        &format!("{key}.pipeline[{j}]"),
                        format!("unknown plugin {:?} (not under [plugins])", stage.get_ref()),
                    ));
                };
                // A rebuild replays the log into the projection directly, so
                // nothing may stand between the log and it.
                if plugin.projection && j > 0 {
                    return Err(at.error(
                        Some(stage.span()),
                        &format!("{key}.pipeline[{j}]"),
                        format!(
                            "projection {:?} must be the first stage of its routes",
                            stage.get_ref()
                        ),
                    ));
                }
            }
        }
        server::validate(self, at)?;
        aws::validate(self, at)?;
        aws::validate_routes(self, at)?;
        Ok(())
    }

    /// Whether anything in the file uses AWS (sources, sinks).
    pub fn uses_aws(&self) -> bool {
        !self.sources.sqs.is_empty() || !self.sinks.sns.is_empty() || !self.sinks.sqs.is_empty()
    }

    /// The ingest key rules, parsed (validated at load).
    pub fn key_rules(&self) -> Vec<KeyRule> {
        self.ingest
            .key
            .iter()
            .filter_map(|r| r.get_ref().parse().ok())
            .collect()
    }
}

/// Topic (and plugin) names: 1–128 characters of `[A-Za-z0-9._-]`, so they are
/// safe in URLs, metric labels and AWS resource names.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("name {name:?} must be 1 to 128 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} has character {c:?}; use letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// Turns byte offsets into line numbers for error messages.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn error(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        reason: String,
    ) -> ConfigError {
        // Spans of defaults are 0..0 and point nowhere in the file; then the
        // key itself (or the table it belongs in) is looked up in the text.
        let line = match span.filter(|s| s.end > 0) {
            Some(s) => Some(self.line_of(s.start)),
            None => locate::offset_of_key(self.text, key).map(|o| self.line_of(o)),
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "{}").unwrap();
        }
        dir
    }

    const GOOD: &str = r#"
[schemas]
base = "schemas/base.json"

[plugins.proj]
path = "p.wasm"
config = { topic = "prisoner-state" }

[[routes]]
name = "r"
match = ["prison-offender-events.prisoner.*"]
pipeline = ["proj"]
"#;

    #[test]
    fn good_config_resolves_paths_and_defaults() {
        let dir = dir_with(&["schemas/base.json", "p.wasm"]);
        let cfg = Config::parse(&dir.path().join("c.toml"), GOOD).unwrap();
        assert_eq!(
            cfg.plugins["proj"].path.get_ref(),
            &dir.path().join("p.wasm")
        );
        assert_eq!(
            cfg.plugins["proj"].config_json(),
            r#"{"topic":"prisoner-state"}"#
        );
        assert_eq!(cfg.ingest.topic, "events");
        assert_eq!(cfg.key_rules().len(), 2);
        assert_eq!(cfg.server.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn unknown_plugin_names_file_line_and_key() {
        let dir = dir_with(&["schemas/base.json", "p.wasm"]);
        let text = GOOD.replace(r#"pipeline = ["proj"]"#, r#"pipeline = ["proj", "nope"]"#);
        let err = Config::parse(&dir.path().join("c.toml"), &text).unwrap_err();
        assert_eq!(err.key, "routes[0].pipeline[1]");
        assert_eq!(err.line, Some(12));
        let shown = err.to_string();
        assert!(
            shown.contains("c.toml:12: routes[0].pipeline[1]: unknown plugin \"nope\""),
            "{shown}"
        );
    }

    #[test]
    fn missing_plugin_file_is_named() {
        let dir = dir_with(&["schemas/base.json"]);
        let err = Config::parse(&dir.path().join("c.toml"), GOOD).unwrap_err();
        assert_eq!(err.key, "plugins.proj.path");
        assert_eq!(err.line, Some(6));
        assert!(err.reason.contains("does not exist"));
    }

    #[test]
    fn unknown_key_is_a_syntax_error_with_line() {
        let dir = dir_with(&["schemas/base.json", "p.wasm"]);
        let text = GOOD.replace("[plugins.proj]\n", "[plugins.proj]\ntimeout = 5\n");
        let err = Config::parse(&dir.path().join("c.toml"), &text).unwrap_err();
        assert_eq!(err.line, Some(6));
        assert!(
            err.reason.contains("unknown field `timeout`"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn bad_key_rule_and_glob_are_refused() {
        let dir = dir_with(&["schemas/base.json", "p.wasm"]);
        let text = format!("[ingest]\nkey = [\"nomsNumber\"]\n{GOOD}");
        let err = Config::parse(&dir.path().join("c.toml"), &text).unwrap_err();
        assert_eq!((err.key.as_str(), err.line), ("ingest.key[0]", Some(2)));
        let text = GOOD.replace("prisoner.*", "prisoner.[");
        let err = Config::parse(&dir.path().join("c.toml"), &text).unwrap_err();
        assert_eq!(err.key, "routes[0].match[0]");
    }

    #[test]
    fn http_allow_is_checked() {
        let dir = dir_with(&["schemas/base.json", "p.wasm"]);
        let path = dir.path().join("c.toml");
        let with =
            |extra: &str| GOOD.replace("[plugins.proj]\n", &format!("[plugins.proj]\n{extra}"));
        let cfg = Config::parse(
            &path,
            &with("capabilities = [\"http\"]\nhttp_allow = [\"api.example.org\", \"127.0.0.1:8080\"]\n"),
        )
        .unwrap();
        assert_eq!(cfg.plugins["proj"].http_timeout_ms, DEFAULT_HTTP_TIMEOUT_MS);
        let err = Config::parse(&path, &with("http_allow = [\"api.example.org\"]\n")).unwrap_err();
        assert_eq!(err.key, "plugins.proj.http_allow");
        assert!(err.reason.contains("grant \"http\""), "{}", err.reason);
        let err = Config::parse(
            &path,
            &with("capabilities = [\"http\"]\nhttp_allow = [\"ok.org\", \"http://x.org\"]\n"),
        )
        .unwrap_err();
        assert_eq!(
            (err.key.as_str(), err.line),
            ("plugins.proj.http_allow[1]", Some(7))
        );
        assert!(err.reason.contains("not host[:port]"), "{}", err.reason);
    }

    #[test]
    fn errors_about_plain_values_still_name_the_line() {
        let dir = dir_with(&["schemas/base.json", "p.wasm"]);
        let parse = |text: &str| Config::parse(&dir.path().join("c.toml"), text).unwrap_err();
        let err = parse(&format!("{GOOD}\n[router]\nworkers = 0\n"));
        assert_eq!((err.key.as_str(), err.line), ("router.workers", Some(15)));
        let err = parse(&format!(
            "{GOOD}\n[router]\nworkers = 2\nrebuild_batch_size = 0\n"
        ));
        assert_eq!(
            (err.key.as_str(), err.line),
            ("router.rebuild_batch_size", Some(16))
        );
        let err = parse(&format!("{GOOD}\n[store]\ncache_mb = 0\n"));
        assert_eq!((err.key.as_str(), err.line), ("store.cache_mb", Some(15)));
        for bad in [0, 257] {
            let err = parse(&format!("{GOOD}\n[store]\ncheckpoint_mb = {bad}\n"));
            assert_eq!(
                (err.key.as_str(), err.line),
                ("store.checkpoint_mb", Some(15))
            );
        }
        let err = parse(&GOOD.replace("path = \"p.wasm\"", "path = \"p.wasm\"\ninstances = 0"));
        assert_eq!(
            (err.key.as_str(), err.line),
            ("plugins.proj.instances", Some(7))
        );
        let err = parse(&format!(
            "{GOOD}\n[[routes]]\nname = \"r\"\nmatch = [\"a\"]\npipeline = [\"proj\"]\n"
        ));
        assert_eq!((err.key.as_str(), err.line), ("routes[1].name", Some(15)));
        // A value left at its default points at the table it would go in.
        let text = format!("[ingest]\ntopic = \"dead-letter\"\n[router]\nworkers = 2\n{GOOD}");
        let err = parse(&text);
        assert_eq!(
            (err.key.as_str(), err.line),
            ("router.dead_letter_topic", Some(3))
        );
        assert!(
            err.to_string()
                .contains("c.toml:3: router.dead_letter_topic"),
            "{err}"
        );
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(check_topic_name("prisoner-state").is_ok());
        assert!(check_topic_name("domain.prison_offender-events").is_ok());
        assert!(check_topic_name("").is_err());
        assert!(check_topic_name("a/b").is_err());
        assert!(check_topic_name(&"x".repeat(129)).is_err());
    }
}
