//! The dead-letter topic as a replayable log: listing its records with
//! filters, and re-injecting the pipeline's ones into the ingest topic (after
//! a fixed plugin was loaded, say).
//!
//! A re-injected event keeps its id, so its outputs get the ids they would
//! have had the first time (`derive_id` of the input id, route, stage, index).
//! It carries `replaycount` and, when it had failed on one route,
//! `replayroute`: the pipeline then runs that route alone, so routes that had
//! succeeded for the event are not run twice. A projection rebuild skips these
//! copies, since it replays the original at its place in the log.
//!
//! **Invariant:** a dead-letter record is re-injected at most once. The mark
//! (`dead-letter/replayed/<offset>` in `meta`) is committed in the same write as
//! the re-injected event, under the pipeline's gate and one replay at a time,
//! so a crash leaves both or neither, and a second replay finds the mark.
//! The same write releases the keys those events had parked. A record whose
//! route starts with a projection that was rebuilt since it failed is marked
//! `supersededBy` instead: the rebuild applied the original in place.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::hold;
use crate::event::{ATTR_REPLAY_COUNT, ATTR_REPLAY_ROUTE, Event};
use crate::router::RouteTable;
use crate::store::{Record, Store, StoreError, WriteBatch};

/// Prefix of the replay marks in the store's `meta` table.
pub const REPLAYED_PREFIX: &str = "dead-letter/replayed/";

/// Records read from the dead-letter topic at a time.
const SCAN_CHUNK: usize = 500;

/// Which dead-letter records a list or replay takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub plugin: Option<String>,
    pub reason: Option<String>,
    /// The original event's type.
    pub event_type: Option<String>,
    /// Only replayed (`Some(true)`) or not yet replayed (`Some(false)`) ones.
    pub replayed: Option<bool>,
}

impl Filter {
    /// Parses `plugin=X,reason=Y,type=Z` (any subset, in any order).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut f = Filter::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("filter {part:?} is not key=value"));
            };
            let v = Some(v.trim().to_string());
            match k.trim() {
                "plugin" => f.plugin = v,
                "reason" => f.reason = v,
                "type" => f.event_type = v,
                other => {
                    return Err(format!(
                        "unknown filter key {other:?} (expected plugin, reason or type)"
                    ));
                }
            }
        }
        Ok(f)
    }

    fn takes(&self, l: &Letter) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.plugin, &l.plugin)
            && eq(&self.reason, &l.reason)
            && eq(
                &self.event_type,
                l.event.as_ref().map_or("", |e| e.event_type.as_str()),
            )
            && self.replayed.is_none_or(|r| r == l.replayed.is_some())
    }
}

/// One dead-letter record, read back.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Letter {
    pub offset: u64,
    pub id: String,
    pub reason: String,
    pub error: String,
    pub route: Option<String>,
    pub stage: Option<u64>,
    pub plugin: String,
    pub plugin_version: String,
    pub attempts: u64,
    pub at: String,
    /// State namespaces of the route's stages when it failed.
    pub namespaces: Vec<String>,
    /// Whether the pipeline can re-inject it (not a source's or sink's record).
    pub replayable: bool,
    /// The replay mark, when it was re-injected.
    pub replayed: Option<Value>,
    pub event: Option<Event>,
}

impl Letter {
    fn read(store: &Store, r: &Record) -> Result<Self, StoreError> {
        let data: Value = serde_json::from_str(&r.event.data).unwrap_or(Value::Null);
        let s = |k: &str| data[k].as_str().unwrap_or_default().to_string();
        let event: Option<Event> = serde_json::from_value(data["event"].clone()).ok();
        let replayed = store
            .meta_get(&format!("{REPLAYED_PREFIX}{}", r.offset))?
            .and_then(|b| serde_json::from_slice(&b).ok());
        Ok(Letter {
            offset: r.offset,
            id: r.event.id.clone(),
            reason: s("reason"),
            error: s("error"),
            route: data["route"].as_str().map(str::to_string),
            stage: data["stage"].as_u64(),
            plugin: s("plugin"),
            plugin_version: s("pluginVersion"),
            attempts: data["attempts"].as_u64().unwrap_or(0),
            at: s("at"),
            namespaces: serde_json::from_value(data["namespaces"].clone()).unwrap_or_default(),
            // Pipeline records name their stage; sources' and sinks' do not.
            replayable: data.get("stage").is_some()
                && event.as_ref().is_some_and(|e| !e.id.is_empty()),
            replayed,
            event,
        })
    }
}

/// When a projection stage of the letter's route has changed generation
/// since it failed (a rebuild replayed the original event into the new one),
/// says so.
fn rebuilt_since(routes: &RouteTable, l: &Letter) -> Option<String> {
    let route = routes
        .routes()
        .iter()
        .find(|r| Some(&r.name) == l.route.as_ref())?;
    let projection = |ns: &str| ns.split_once('/').map(|(p, _)| p.to_string());
    l.namespaces
        .iter()
        .zip(&route.stages)
        .find(|(then, now)| {
            **then != now.namespace
                && projection(then).is_some()
                && projection(then) == projection(&now.namespace)
        })
        .map(|(then, now)| format!("projection rebuilt: state {then} is now {}", now.namespace))
}

/// A page of matching records from offset `from`, and where the next page
/// starts (`None` at the end of the topic).
pub fn list(
    store: &Store,
    topic: &str,
    filter: &Filter,
    from: u64,
    limit: usize,
) -> Result<(Vec<Letter>, Option<u64>), StoreError> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let records = store.read(topic, at, SCAN_CHUNK)?;
        let Some(last) = records.last().map(|r| r.offset) else {
            return Ok((out, None));
        };
        for r in &records {
            let l = Letter::read(store, r)?;
            if filter.takes(&l) {
                out.push(l);
                if out.len() >= limit {
                    return Ok((out, Some(r.offset + 1)));
                }
            }
        }
        at = last + 1;
    }
}

/// One record a replay re-injected, or would.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    pub offset: u64,
    pub event_id: String,
    pub route: Option<String>,
    pub reason: String,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    pub dry_run: bool,
    /// Records the filter took that were not replayed before.
    pub matched: usize,
    /// Records re-injected (0 on a dry run).
    pub replayed: usize,
    /// Records already replayed earlier (left alone).
    pub already_replayed: usize,
    /// Records the pipeline cannot re-inject, with why.
    pub skipped: Vec<Value>,
    /// Records on a projection's route whose projection was rebuilt since:
    /// the rebuild applied the original event in place, so replaying it would
    /// apply it twice. Marked as replayed, not re-injected.
    pub superseded: usize,
    /// Keys released from parking.
    pub released_keys: usize,
    pub records: Vec<Replayed>,
}

/// Re-injects the dead-letter records `filter` takes into `input`, marks them
/// and releases the keys they parked, in one write. The caller holds the
/// pipeline's gate and allows one replay at a time.
pub async fn replay(
    store: &Store,
    routes: &RouteTable,
    input: &str,
    topic: &str,
    filter: &Filter,
    dry_run: bool,
) -> Result<ReplayReport, StoreError> {
    let mut report = ReplayReport {
        dry_run,
        ..Default::default()
    };
    let filter = Filter {
        replayed: None,
        ..filter.clone()
    };
    let (letters, _) = list(store, topic, &filter, 0, usize::MAX)?;
    let held = hold::load(store)?;
    let mut batch = WriteBatch::default();
    let mut released: HashMap<String, ()> = HashMap::new();
    let now = chrono::Utc::now().to_rfc3339();
    for l in letters {
        if l.replayed.is_some() {
            report.already_replayed += 1;
            continue;
        }
        let Some(original) = l.event.clone().filter(|_| l.replayable) else {
            report.skipped.push(json!({
                "offset": l.offset,
                "reason": "not a pipeline record (a source's or sink's dead letter): replay it at its source",
            }));
            continue;
        };
        if let Some(rebuilt) = rebuilt_since(routes, &l) {
            report.superseded += 1;
            let mark = json!({ "at": now, "eventId": original.id, "supersededBy": rebuilt });
            batch.meta.push((
                format!("{REPLAYED_PREFIX}{}", l.offset),
                Some(mark.to_string().into_bytes()),
            ));
            continue;
        }
        report.matched += 1;
        let count = super::replay_count(&original) + 1;
        let mut ev = original;
        ev.attributes
            .insert(ATTR_REPLAY_COUNT.into(), count.to_string());
        match &l.route {
            Some(route) => ev
                .attributes
                .insert(ATTR_REPLAY_ROUTE.into(), route.clone()),
            None => ev.attributes.remove(ATTR_REPLAY_ROUTE),
        };
        if let Some(route) = &l.route {
            let key = ev.key.clone().unwrap_or_else(|| ev.id.clone());
            if let Some(h) = held.get(&(route.clone(), key))
                && h.parked
                && released.insert(h.meta_key(), ()).is_none()
            {
                batch.meta.push((h.meta_key(), None));
            }
        }
        report.records.push(Replayed {
            offset: l.offset,
            event_id: ev.id.clone(),
            route: l.route.clone(),
            reason: l.reason.clone(),
        });
        let mark = json!({ "at": now, "eventId": ev.id, "replay": count });
        batch.meta.push((
            format!("{REPLAYED_PREFIX}{}", l.offset),
            Some(mark.to_string().into_bytes()),
        ));
        batch.appends.push((input.to_string(), ev));
    }
    report.released_keys = released.len();
    if !dry_run && !batch.is_empty() {
        store.write(batch).await?;
        report.replayed = report.matched;
        for (key, _) in released {
            tracing::info!(held = %key, "parked key released by a dead-letter replay");
        }
        tracing::info!(replayed = report.replayed, "dead letters re-injected");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_unknown_keys() {
        let f = Filter::parse("plugin=chaos, reason=trap,type=a.b").unwrap();
        assert_eq!(f.plugin.as_deref(), Some("chaos"));
        assert_eq!(f.reason.as_deref(), Some("trap"));
        assert_eq!(f.event_type.as_deref(), Some("a.b"));
        assert_eq!(Filter::parse("").unwrap(), Filter::default());
        assert!(Filter::parse("plugin").unwrap_err().contains("key=value"));
        assert!(Filter::parse("colour=red").unwrap_err().contains("colour"));
    }
}
