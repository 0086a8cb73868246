//! Running a sample case through a loaded plugin, in the router's sandbox and
//! limits, with kv in memory under the router's rules (a failed event's
//! writes are discarded), and comparing with the case's expectations.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{Expectation, SampleCase, canonical_output, diff};
use crate::config::Capability;
use crate::event::Event;
use crate::plugin::{CallError, KvAccess, Plugin};
use crate::sync::lock;

/// What happened to one event.
#[derive(Debug, Clone)]
pub struct EventRun {
    pub input: Event,
    /// Outputs in canonical form, or the failure.
    pub outcome: Result<Vec<Value>, CallError>,
    /// kv writes the event made, in key order (`None` = deleted).
    pub kv_changes: Vec<(String, Option<Value>)>,
    /// Differences from the expectation (empty when none was stated).
    pub diff: Vec<String>,
}

/// What happened to one case.
#[derive(Debug, Clone)]
pub struct CaseRun {
    pub name: String,
    pub file: std::path::PathBuf,
    /// The plugin could not be set up for the case (`init` refused its config).
    pub setup_error: Option<String>,
    pub events: Vec<EventRun>,
    pub final_state: BTreeMap<String, Value>,
    /// Differences of the final kv from `expect_state`.
    pub state_diff: Vec<String>,
    /// Whether the case stated any expectation.
    pub checked: bool,
}

impl CaseRun {
    pub fn passed(&self) -> bool {
        self.setup_error.is_none()
            && self.state_diff.is_empty()
            && self.events.iter().all(|e| e.diff.is_empty())
    }

    /// The differences alone, one per line, each prefixed with where.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.setup_error {
            out.push(format!("case {}: {e}", self.name));
        }
        for (i, ev) in self.events.iter().enumerate() {
            for d in &ev.diff {
                out.push(format!("case {}: event {}: {d}", self.name, i + 1));
            }
        }
        for d in &self.state_diff {
            out.push(format!("case {}: {d}", self.name));
        }
        out
    }

    /// A readable report: each event, its outputs and kv changes, and every
    /// difference from the expectations.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "case {} ({})", self.name, self.file.display());
        if let Some(e) = &self.setup_error {
            let _ = writeln!(s, "  FAILED to set up: {e}");
            return s;
        }
        for (i, ev) in self.events.iter().enumerate() {
            let key = ev.input.key.as_deref().unwrap_or("-");
            let _ = writeln!(
                s,
                "  event {}: {} (id {}, key {key})",
                i + 1,
                ev.input.event_type,
                ev.input.id
            );
            match &ev.outcome {
                Ok(outs) if outs.is_empty() => {
                    let _ = writeln!(s, "    no outputs");
                }
                Ok(outs) => {
                    for o in outs {
                        let _ = writeln!(s, "    output {o}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "    error {}: {e}", e.kind());
                }
            }
            for (k, v) in &ev.kv_changes {
                match v {
                    Some(v) => {
                        let _ = writeln!(s, "    kv put {k} = {v}");
                    }
                    None => {
                        let _ = writeln!(s, "    kv delete {k}");
                    }
                }
            }
            if !ev.diff.is_empty() {
                let _ = writeln!(s, "    MISMATCH (expected vs got):");
                for d in &ev.diff {
                    let _ = writeln!(s, "      {d}");
                }
            }
        }
        if !self.state_diff.is_empty() {
            let _ = writeln!(s, "  MISMATCH in the final state (expected vs got):");
            for d in &self.state_diff {
                let _ = writeln!(s, "    {d}");
            }
        }
        let verdict = match (self.passed(), self.checked) {
            (false, _) => "FAIL",
            (true, true) => "ok",
            (true, false) => "ran (no expectations stated)",
        };
        let _ = writeln!(s, "  {verdict}");
        s
    }
}

/// Why a plugin version did not pass its sample cases.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Load(#[from] super::SampleError),
    #[error("plugin {plugin}: {failed} of {total} sample case(s) failed: {}", failures.join("; "))]
    Failed {
        plugin: String,
        failed: usize,
        total: usize,
        failures: Vec<String>,
    },
}

/// Runs the cases at `path` (a case file or a directory of them) on
/// `plugin`: what a new version must pass before it replaces a serving one.
/// Returns how many cases passed.
pub async fn verify(plugin: &Plugin, path: &std::path::Path) -> Result<usize, VerifyError> {
    let cases = super::load_cases(path)?;
    let mut failures = Vec::new();
    let mut failed = 0;
    for case in &cases {
        let run = run_case(plugin, case).await;
        if !run.passed() {
            failed += 1;
            failures.extend(run.failures());
        }
    }
    if failed > 0 {
        return Err(VerifyError::Failed {
            plugin: plugin.name().to_string(),
            failed,
            total: cases.len(),
            failures,
        });
    }
    Ok(cases.len())
}

/// Runs `case` on a fresh copy of `plugin` (its own instance, the case's
/// config and grants, else the plugin's), so cases cannot see each other's
/// memory or state.
pub async fn run_case(plugin: &Plugin, case: &SampleCase) -> CaseRun {
    let mut run = CaseRun {
        name: case.name.clone(),
        file: case.file.clone(),
        setup_error: None,
        events: Vec::new(),
        final_state: BTreeMap::new(),
        state_diff: Vec::new(),
        checked: case.expect.is_some() || case.expect_state.is_some(),
    };
    let grants = case
        .capabilities
        .clone()
        .unwrap_or_else(|| plugin.spec().grants.clone());
    let config = case
        .config
        .clone()
        .unwrap_or_else(|| plugin.spec().config_json.clone());
    let granted_kv = grants.contains(&Capability::Kv);
    let copy = match plugin.reconfigured(config, grants).await {
        Ok(p) => p,
        Err(e) => {
            run.setup_error = Some(e.to_string());
            return run;
        }
    };
    let kv = Arc::new(MemoryKv::new(&case.state));
    for (i, ev) in case.events.iter().enumerate() {
        let view = granted_kv.then(|| kv.clone() as Arc<dyn KvAccess>);
        let result = copy.handle(ev, view).await;
        let kv_changes = if result.is_ok() {
            kv.commit()
        } else {
            kv.discard();
            Vec::new()
        };
        let outcome = result.map(|outs| {
            outs.iter()
                .map(|o| canonical_output(&o.topic, &o.event))
                .collect::<Vec<_>>()
        });
        let diff = match case.expect.as_ref().and_then(|e| e.get(i)) {
            Some(expected) => compare(expected, &outcome),
            None => Vec::new(),
        };
        run.events.push(EventRun {
            input: ev.clone(),
            outcome,
            kv_changes,
            diff,
        });
    }
    run.final_state = kv.snapshot();
    if let Some(expected) = &case.expect_state {
        let e = Value::Object(expected.clone().into_iter().collect());
        let a = Value::Object(run.final_state.clone().into_iter().collect());
        run.state_diff = diff("state", &e, &a);
    }
    run
}

fn compare(expected: &Expectation, outcome: &Result<Vec<Value>, CallError>) -> Vec<String> {
    match (expected, outcome) {
        (Expectation::Outputs(e), Ok(a)) => diff(
            "outputs",
            &Value::Array(e.clone()),
            &Value::Array(a.clone()),
        ),
        (Expectation::Outputs(e), Err(err)) => vec![format!(
            "expected {} output(s), got error {}: {err}",
            e.len(),
            err.kind()
        )],
        (Expectation::Error { kind, .. }, Ok(a)) => vec![format!(
            "expected error {kind}, got {} output(s): {}",
            a.len(),
            Value::Array(a.clone())
        )],
        (Expectation::Error { kind, message }, Err(err)) => {
            let mut out = Vec::new();
            if err.kind() != kind {
                out.push(format!(
                    "error kind: expected {kind}, got {} ({err})",
                    err.kind()
                ));
            }
            if let Some(m) = message
                && !err.to_string().contains(m.as_str())
            {
                out.push(format!(
                    "error message: expected it to contain {m:?}, got {:?}",
                    err.to_string()
                ));
            }
            out
        }
    }
}

type Writes = BTreeMap<String, Option<Vec<u8>>>;

/// kv in memory with the router's transaction rule: an event's writes are
/// kept only if the event succeeds.
struct MemoryKv {
    committed: Mutex<BTreeMap<String, Vec<u8>>>,
    pending: Mutex<Writes>,
}

/// Stored bytes shown as JSON when they are JSON, else as text, else hex.
fn show(bytes: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return v;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => Value::String(format!("0x{}", hex::encode(bytes))),
    }
}

impl MemoryKv {
    fn new(seed: &BTreeMap<String, Value>) -> Self {
        let committed = seed
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string().into_bytes()))
            .collect();
        Self {
            committed: Mutex::new(committed),
            pending: Mutex::new(Writes::new()),
        }
    }

    fn commit(&self) -> Vec<(String, Option<Value>)> {
        let writes = std::mem::take(&mut *lock(&self.pending));
        let mut committed = lock(&self.committed);
        writes
            .into_iter()
            .map(|(k, v)| {
                let shown = v.as_deref().map(show);
                match v {
                    Some(v) => committed.insert(k.clone(), v),
                    None => committed.remove(&k),
                };
                (k, shown)
            })
            .collect()
    }

    fn discard(&self) {
        lock(&self.pending).clear();
    }

    fn snapshot(&self) -> BTreeMap<String, Value> {
        lock(&self.committed)
            .iter()
            .map(|(k, v)| (k.clone(), show(v)))
            .collect()
    }
}

impl KvAccess for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        if let Some(v) = lock(&self.pending).get(key) {
            return Ok(v.clone());
        }
        Ok(lock(&self.committed).get(key).cloned())
    }

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        lock(&self.pending).insert(key.to_string(), Some(value));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        lock(&self.pending).insert(key.to_string(), None);
        Ok(())
    }

    fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut merged: BTreeMap<String, Vec<u8>> = lock(&self.committed)
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in lock(&self.pending).iter() {
            if k.starts_with(prefix) {
                match v {
                    Some(v) => merged.insert(k.clone(), v.clone()),
                    None => merged.remove(k),
                };
            }
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}
