//! The router's consumer: reads the ingest topic from its durable cursor,
//! runs each event through every matching route, and commits the outputs, the
//! dead-letter records, the plugins' state and the new cursor in one write.
//!
//! **Invariant:** the cursor passes an event only in the same transaction that
//! makes all of that event's outputs durable (at-least-once; a replay after a
//! crash reproduces the same output ids and sees the state from before).
//!
//! **Invariant:** events with the same key are handled in offset order; events
//! with different keys in the same batch run in parallel.

mod kv;
mod stage;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

pub use kv::{BatchKv, UnitKv};
pub(crate) use stage::call_with_retries;
pub use stage::{DEAD_LETTER_TYPE, StageFailure, StagePolicy, dead_letter, derive_id, run_route};

use crate::config::RouterConfig;
use crate::event::Event;
use crate::router::RouteTable;
use crate::store::{Record, Store, Trace, WriteBatch};

/// Back-off after a failed commit before the batch is tried again.
const COMMIT_RETRY: Duration = Duration::from_millis(500);

/// Shared, swappable route table (reload replaces the `Arc`).
pub type Routes = Arc<RwLock<Arc<RouteTable>>>;

/// The consumer of one input topic.
pub struct Pipeline {
    store: Store,
    routes: Routes,
    /// Held while a batch is processed and committed (see `Runtime::gate`).
    gate: Arc<tokio::sync::Mutex<()>>,
    input: String,
    consumer: String,
    dead_letter_topic: String,
    batch_size: usize,
    workers: usize,
    policy: StagePolicy,
}

/// What one batch produced, in input order.
struct Unit {
    index: usize,
    appends: Vec<(String, Event)>,
    /// Trace links: (index into `appends`, what the trace shows about it).
    links: Vec<(usize, Vec<u8>)>,
    /// Routes run: (route, range of `appends` it produced), for the metrics.
    ran: Vec<(String, std::ops::Range<usize>)>,
}

impl Pipeline {
    pub fn new(
        store: Store,
        routes: Routes,
        gate: Arc<tokio::sync::Mutex<()>>,
        input: &str,
        cfg: &RouterConfig,
    ) -> Self {
        Self {
            store,
            routes,
            gate,
            input: input.to_string(),
            consumer: cfg.consumer.clone(),
            dead_letter_topic: cfg.dead_letter_topic.clone(),
            batch_size: cfg.batch_size,
            workers: cfg.workers,
            policy: StagePolicy::new(input, cfg),
        }
    }

    /// Consumes until `shutdown` turns true; the batch in progress finishes
    /// and is committed first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut len = self.store.watch(&self.input);
        let mut cursor = loop {
            match self.store.cursor(&self.consumer) {
                Ok(c) => break c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the router cursor");
                    if wait_or_stop(&mut shutdown, COMMIT_RETRY).await {
                        return;
                    }
                }
            }
        };
        tracing::info!(topic = %self.input, cursor, "router consuming");
        while !*shutdown.borrow() {
            let records = match self.store.read(&self.input, cursor, self.batch_size) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, cursor, "cannot read the input topic");
                    if wait_or_stop(&mut shutdown, COMMIT_RETRY).await {
                        return;
                    }
                    continue;
                }
            };
            let Some(last) = records.last().map(|r| r.offset) else {
                // Caught up: sleep until the topic grows or we are told to stop.
                tokio::select! {
                    r = len.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => {}
                }
                continue;
            };
            let gate = self.gate.lock().await;
            loop {
                let written = match self.process(&records).await {
                    Ok((mut batch, tally)) => {
                        batch.cursors.push((self.consumer.clone(), last + 1));
                        let written = self.store.write(batch).await.map_err(|e| e.to_string());
                        if written.is_ok() {
                            tally.record();
                        }
                        written
                    }
                    Err(e) => Err(e),
                };
                match written {
                    Ok(_) => break,
                    Err(e) => {
                        // Nothing of the batch was written; its state view is
                        // gone with it. Run it again from the same state.
                        tracing::error!(error = %e, from = cursor, to = last, "batch commit failed, will retry");
                        if wait_or_stop(&mut shutdown, COMMIT_RETRY).await {
                            return;
                        }
                    }
                }
            }
            drop(gate);
            tracing::debug!(from = cursor, to = last, "batch committed");
            cursor = last + 1;
        }
        tracing::info!(cursor, "router stopped");
    }

    /// Runs a batch: one task per key (in order within it), at most `workers`
    /// at once. Returns what to commit, and what to count once it is.
    async fn process(&self, records: &[Record]) -> Result<(WriteBatch, crate::obs::Tally), String> {
        let routes = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let kv = BatchKv::new(self.store.clone());
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut order = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let key = r.event.key.as_deref().unwrap_or(r.event.id.as_str());
            groups
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push(i);
        }
        let limit = Arc::new(Semaphore::new(self.workers));
        // What the trace shows about each route's outputs: once per batch.
        let route_links: Arc<HashMap<String, Vec<u8>>> = Arc::new(
            routes
                .routes()
                .iter()
                .map(|r| (r.name.clone(), crate::obs::route_link(r)))
                .collect(),
        );
        let mut tasks = JoinSet::new();
        for key in order {
            let events: Vec<(usize, Event)> = groups[key]
                .iter()
                .map(|&i| (i, records[i].event.clone()))
                .collect();
            let (routes, kv, limit) = (routes.clone(), kv.clone(), limit.clone());
            let (policy, dlq) = (self.policy.clone(), self.dead_letter_topic.clone());
            let route_links = route_links.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let mut units = Vec::with_capacity(events.len());
                for (index, ev) in events {
                    let span = tracing::debug_span!("event", id = %ev.id, r#type = %ev.event_type, key = ev.key.as_deref().unwrap_or(""), traceparent = ev.traceparent.as_deref().unwrap_or(""));
                    let (appends, links, ran) =
                        handle_event(&routes, &route_links, &ev, &kv, &policy, &dlq)
                        .instrument(span)
                        .await;
                    units.push(Unit {
                        index,
                        appends,
                        links,
                        ran,
                    });
                }
                units
            });
        }
        let mut units = Vec::with_capacity(records.len());
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(u) => units.extend(u),
                // A panic in our own code: the batch cannot be trusted, so
                // commit nothing and let it be retried.
                Err(e) => return Err(format!("pipeline task failed: {e}")),
            }
        }
        units.sort_by_key(|u| u.index);
        let (mut appends, mut traces) = (Vec::new(), Vec::with_capacity(units.len()));
        let mut tally = crate::obs::Tally::default();
        for u in units {
            for (route, range) in &u.ran {
                tally.route(route, &u.appends[range.clone()]);
            }
            let base = appends.len();
            let input = &records[u.index];
            traces.push(Trace {
                id: input.event.id.clone(),
                writer: 1,
                input: None,
                from: Some((self.input.clone(), input.offset)),
                outputs: u
                    .links
                    .into_iter()
                    .map(|(i, info)| (base + i, info))
                    .collect(),
            });
            appends.extend(u.appends);
        }
        tally.add(&appends, &self.input, &self.dead_letter_topic);
        let batch = WriteBatch {
            appends,
            traces,
            kv: kv.take(),
            ..Default::default()
        };
        Ok((batch, tally))
    }
}

/// Runs one event through all its routes; a failed route becomes a
/// dead-letter record and does not stop the others. Returns the records with
/// their trace links.
async fn handle_event(
    routes: &RouteTable,
    route_links: &HashMap<String, Vec<u8>>,
    ev: &Event,
    kv: &Arc<BatchKv>,
    policy: &StagePolicy,
    dead_letter_topic: &str,
) -> Handled {
    let mut appends = Vec::new();
    let mut links = Vec::new();
    let mut ran = Vec::new();
    let mut routed = false;
    for route in routes.matching(&ev.event_type) {
        routed = true;
        if route.direct {
            // Ran inside the ingest request; its outputs are already in the log.
            continue;
        }
        let unit = UnitKv::new(kv.clone());
        let start = appends.len();
        match stage::run_route(route, ev, &unit, policy).await {
            Ok(outs) => {
                unit.commit();
                if !outs.is_empty() {
                    let info = route_links.get(&route.name).cloned().unwrap_or_default();
                    links.extend(
                        (appends.len()..appends.len() + outs.len()).map(|i| (i, info.clone())),
                    );
                }
                appends.extend(outs);
            }
            Err(f) => {
                links.push((
                    appends.len(),
                    crate::obs::dead_letter_link(Some(&route.name)),
                ));
                tracing::warn!(event = %ev.id, route = %route.name, plugin = %f.plugin, reason = %f.kind, error = %f.error, "event dead-lettered");
                appends.push((
                    dead_letter_topic.to_string(),
                    dead_letter(ev, Some(&route.name), &f),
                ));
            }
        }
        ran.push((route.name.clone(), start..appends.len()));
    }
    if !routed {
        let f = StageFailure {
            kind: "no-route".into(),
            error: format!("no route matches event type {:?}", ev.event_type),
            stage: 0,
            plugin: String::new(),
            plugin_version: String::new(),
            attempts: 0,
        };
        tracing::warn!(event = %ev.id, r#type = %ev.event_type, "event has no route");
        links.push((appends.len(), crate::obs::dead_letter_link(None)));
        appends.push((dead_letter_topic.to_string(), dead_letter(ev, None, &f)));
    }
    (appends, links, ran)
}

/// What one event produced: records, their trace links, routes run.
type Handled = (
    Vec<(String, Event)>,
    Vec<(usize, Vec<u8>)>,
    Vec<(String, std::ops::Range<usize>)>,
);

/// Waits `d` or until shutdown; true if shutting down.
async fn wait_or_stop(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
    *shutdown.borrow()
}
