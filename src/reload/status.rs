//! What `GET /v1/plugins` shows about each plugin beyond the plugin itself:
//! when it was loaded, how its reloads went, and a projection's rebuild.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::plugin::Plugin;

/// Reload records kept per plugin: enough to see a flapping deploy, small
/// enough to keep in memory forever.
const HISTORY: usize = 32;

/// The outcome of one reload attempt.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadRecord {
    /// RFC 3339.
    pub at: String,
    /// `ok` (swapped), `unchanged`, `rebuilding` (a projection's new version
    /// is being rebuilt; the old one serves) or `failed`.
    pub outcome: String,
    /// What asked for it: `watch`, `api`, `config`, `startup`.
    pub trigger: String,
    /// The version it was about (absent when the file could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Time from the request to the outcome.
    pub millis: u64,
    /// Whether the compiled code came from the compile cache.
    pub from_cache: bool,
}

/// A projection rebuild in progress or just finished.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildProgress {
    pub version: String,
    pub generation: u64,
    /// `running`, `done`, `cancelled` or `failed`.
    pub state: String,
    /// Next offset of the input topic to replay, and the topic's length.
    pub offset: u64,
    pub total: u64,
    pub events_per_second: f64,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    loaded_at: String,
    history: VecDeque<ReloadRecord>,
    rebuild: Option<RebuildProgress>,
}

/// Per-plugin status, shared by the reloader and the admin API.
#[derive(Debug, Default)]
pub struct Statuses {
    inner: Mutex<BTreeMap<String, Entry>>,
    /// Reloads of the config file and the schemas.
    config: Mutex<VecDeque<ReloadRecord>>,
}

/// A snapshot of one plugin's status.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub loaded_at: String,
    pub history: Vec<ReloadRecord>,
    pub rebuild: Option<RebuildProgress>,
}

impl Statuses {
    fn with<R>(&self, name: &str, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut map = crate::sync::lock(&self.inner);
        f(map.entry(name.to_string()).or_default())
    }

    /// A version of `name` started serving now.
    pub fn loaded(&self, name: &str, _plugin: &Plugin) {
        self.with(name, |e| e.loaded_at = chrono::Utc::now().to_rfc3339());
    }

    pub fn record(&self, name: &str, record: ReloadRecord) {
        crate::obs::metrics()
            .reloads
            .inc(["plugin", &record.outcome]);
        self.with(name, |e| {
            if e.history.len() == HISTORY {
                e.history.pop_front();
            }
            e.history.push_back(record);
        });
    }

    pub fn set_rebuild(&self, name: &str, progress: RebuildProgress) {
        self.with(name, |e| e.rebuild = Some(progress));
    }

    /// Records a config or schema reload.
    pub fn record_config(&self, record: ReloadRecord) {
        crate::obs::metrics()
            .reloads
            .inc(["config", &record.outcome]);
        let mut h = crate::sync::lock(&self.config);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(record);
    }

    pub fn config_history(&self) -> Vec<ReloadRecord> {
        crate::sync::lock(&self.config).iter().cloned().collect()
    }

    pub fn forget(&self, name: &str) {
        crate::sync::lock(&self.inner).remove(name);
    }

    pub fn view(&self, name: &str) -> StatusView {
        self.with(name, |e| StatusView {
            loaded_at: e.loaded_at.clone(),
            history: e.history.iter().cloned().collect(),
            rebuild: e.rebuild.clone(),
        })
    }
}
