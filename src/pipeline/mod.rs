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
//!
//! While one batch's write is in the store's writer thread, the next batch is
//! processed if the first changes no plugin state and no held key (so the
//! next reads the same state either way); its write is queued only once the
//! first has committed, and it is dropped if the first fails.

mod hold;
pub(crate) mod json_check;
mod kv;
pub mod replay;
mod stage;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use hold::{HELD_PREFIX, Held, load as held_keys};
pub use kv::{BatchKv, UnitKv};
pub(crate) use stage::call_with_retries;
pub use stage::{
    DEAD_LETTER_TYPE, StageFailure, StagePolicy, dead_letter, derive_id, replay_count, run_route,
};

use crate::config::RouterConfig;
use crate::event::{ATTR_REPLAY_ROUTE, Event};
use crate::router::RouteTable;
use crate::store::{Record, Store, Trace, WriteBatch};

/// Back-off after a failed commit before the batch is tried again.
const COMMIT_RETRY: Duration = Duration::from_millis(500);

/// Longest run of batches committed back to back under the gate before it
/// is let go: bounds how long a reload or a replay waits for it.
const CHAIN_FOR: Duration = Duration::from_millis(50);

/// Most batch writes of the pipeline queued at once while it processes the
/// next batch: the writer folds those queued together into one commit.
const WRITES_IN_FLIGHT: usize = 3;

/// A batch write queued and not yet answered.
struct InFlight {
    write: crate::store::Queued,
    /// The cursor it moves on from, and to.
    from: u64,
    to: u64,
    /// What to count once it is written.
    tally: crate::obs::Tally,
}

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

/// What every task of a batch or a retry shares.
#[derive(Clone)]
struct Ctx {
    routes: Arc<RouteTable>,
    kv: Arc<BatchKv>,
    policy: StagePolicy,
    dlq: String,
}

/// The held routes of one key, by route name.
type KeyHolds = HashMap<String, Held>;

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
            // Held keys whose retry is due go first; the wait for the next
            // one bounds the sleep when idle.
            let due = match hold::load(&self.store) {
                Ok(held) => hold::next_due(&held),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read held keys");
                    Some(COMMIT_RETRY)
                }
            };
            if due == Some(Duration::ZERO) {
                let gate = self.gate.lock().await;
                let written = match self.retry_held().await {
                    Ok(batch) if batch.is_empty() => Ok(()),
                    Ok(batch) => {
                        let mut tally = crate::obs::Tally::default();
                        tally.add(&batch.appends, &self.input, &self.dead_letter_topic);
                        let written = self
                            .store
                            .write(batch)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string());
                        if written.is_ok() {
                            tally.record();
                        }
                        written
                    }
                    Err(e) => Err(e),
                };
                drop(gate);
                if let Err(e) = written {
                    tracing::error!(error = %e, "retry of held keys failed, will retry");
                    if wait_or_stop(&mut shutdown, COMMIT_RETRY).await {
                        return;
                    }
                    continue;
                }
                // Go on to the next batch: held keys never starve the log.
            }
            let records = match self.store.read(&self.input, cursor, self.batch_size) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    tracing::error!(error = %e, cursor, "cannot read the input topic");
                    if wait_or_stop(&mut shutdown, COMMIT_RETRY).await {
                        return;
                    }
                    continue;
                }
            };
            if records.is_empty() {
                // Caught up: sleep until the topic grows or we are told to stop.
                let idle = match due {
                    // Retried just now: the next one is at least a tick away.
                    Some(d) => d.max(Duration::from_millis(10)),
                    None => Duration::from_secs(3600),
                };
                tokio::select! {
                    r = len.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
                continue;
            }
            let gate = self.gate.lock().await;
            let stopped = self.commit_chain(records, &mut cursor, &mut shutdown).await;
            drop(gate);
            if stopped {
                return;
            }
        }
        tracing::info!(cursor, "router stopped");
    }

    /// Processes and commits `first`, then the batches after it for up to
    /// [`CHAIN_FOR`]. A batch's write is queued as soon as it is processed,
    /// and the next batch is processed while up to [`WRITES_IN_FLIGHT`]
    /// writes are in the writer thread, when it cannot depend on them (a
    /// batch that changes no plugin state and no held key: the next one
    /// reads the same state from the store either way). Each write moves
    /// the cursor on only from where the one before it left it
    /// (`WriteBatch::cursor_at`), so if one fails, the ones queued after it
    /// write nothing, and the consumer starts again from the cursor in the
    /// store. Returns true when told to stop.
    async fn commit_chain(
        &self,
        first: Arc<Vec<Record>>,
        cursor: &mut u64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let started = std::time::Instant::now();
        let mut current = first;
        let mut queued: VecDeque<InFlight> = VecDeque::new();
        // Where the cursor will be once every queued write is in.
        let mut queued_to = *cursor;
        while let Some(last) = current.last().map(|r| r.offset) {
            let (mut batch, tally) = match self.process(&current).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, from = queued_to, to = last, "batch failed, will retry");
                    // Whatever was queued before it stands on its own.
                    self.settle(&mut queued, 0, cursor).await;
                    return wait_or_stop(shutdown, COMMIT_RETRY).await;
                }
            };
            let independent =
                batch.kv.is_empty() && batch.meta.is_empty() && batch.drop_namespaces.is_empty();
            batch.cursors.push((self.consumer.clone(), last + 1));
            batch.cursor_at = Some((self.consumer.clone(), queued_to));
            // Queued here, in order: writes queued from tasks of their own
            // could reach the writer in another.
            let write = match self.store.queue(batch) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, from = queued_to, to = last, "batch commit failed, will retry");
                    self.settle(&mut queued, 0, cursor).await;
                    return wait_or_stop(shutdown, COMMIT_RETRY).await;
                }
            };
            let from = queued_to;
            queued_to = last + 1;
            queued.push_back(InFlight {
                write,
                from,
                to: queued_to,
                tally,
            });
            let go_on = independent && started.elapsed() < CHAIN_FOR && !*shutdown.borrow();
            let keep = if go_on { WRITES_IN_FLIGHT - 1 } else { 0 };
            if !self.settle(&mut queued, keep, cursor).await {
                return wait_or_stop(shutdown, COMMIT_RETRY).await;
            }
            if !go_on {
                break;
            }
            match self
                .store
                .read(&self.input, queued_to, self.batch_size)
                .ok()
                .filter(|r| !r.is_empty())
            {
                Some(next) => current = Arc::new(next),
                None => break,
            }
        }
        if !self.settle(&mut queued, 0, cursor).await {
            return wait_or_stop(shutdown, COMMIT_RETRY).await;
        }
        false
    }

    /// Waits for the oldest queued writes until at most `keep` are left,
    /// moving `cursor` past each that is in. If one failed, waits for all
    /// the rest (which then write nothing), takes the cursor from the store
    /// and returns false.
    async fn settle(&self, queued: &mut VecDeque<InFlight>, keep: usize, cursor: &mut u64) -> bool {
        while queued.len() > keep {
            let Some(q) = queued.pop_front() else { break };
            let failure = q.write.written().await.err();
            if let Some(e) = failure {
                // Nothing of the batch was written; its state view is gone
                // with it, and the batches queued after it write nothing.
                tracing::error!(error = %e, from = q.from, to = q.to - 1, "batch commit failed, will retry");
                for rest in queued.drain(..) {
                    let _ = rest.write.written().await;
                }
                // The store's cursor, in case the failed write is in after
                // all (a commit can fail after its data is durable).
                if let Ok(c) = self.store.cursor(&self.consumer) {
                    *cursor = c;
                }
                return false;
            }
            q.tally.record();
            tracing::debug!(from = q.from, to = q.to - 1, "batch committed");
            *cursor = q.to;
        }
        true
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            routes: crate::sync::read(&self.routes).clone(),
            kv: BatchKv::new(self.store.clone()),
            policy: self.policy.clone(),
            dlq: self.dead_letter_topic.clone(),
        }
    }

    /// Runs a batch: each key's events in order, different keys on up to
    /// `workers` tasks that take the next waiting key when they finish one
    /// (a task per key cost more than the events of a small key). Returns
    /// what to commit: outputs, dead letters, state and the held keys it
    /// started or added to; and what to count once it is written.
    async fn process(
        &self,
        records: &Arc<Vec<Record>>,
    ) -> Result<(WriteBatch, crate::obs::Tally), String> {
        let ctx = self.ctx();
        let mut held = hold::load(&self.store).map_err(|e| e.to_string())?;
        let mut queue = VecDeque::new();
        for (key, indices) in key_groups(records, |_| true) {
            let mut holds: KeyHolds = KeyHolds::new();
            if !held.is_empty() {
                for route in ctx.routes.routes() {
                    if let Some(h) = held.remove(&(route.name.clone(), key.to_string())) {
                        holds.insert(route.name.clone(), h);
                    }
                }
            }
            queue.push_back((key.to_string(), indices, holds));
        }
        /// What every key's task reads.
        struct Shared {
            ctx: Ctx,
            /// What the trace shows about each route's outputs: once per batch.
            route_links: HashMap<String, Vec<u8>>,
            records: Arc<Vec<Record>>,
        }
        let shared = Arc::new(Shared {
            route_links: ctx
                .routes
                .routes()
                .iter()
                .map(|r| (r.name.clone(), crate::obs::route_link(r)))
                .collect(),
            ctx,
            records: records.clone(),
        });
        let keys = on_workers(
            shared.clone(),
            queue,
            self.workers,
            |b, (key, indices, mut holds): (String, Vec<usize>, KeyHolds)| async move {
                let before = holds.clone();
                let mut units = Vec::with_capacity(indices.len());
                for index in indices {
                    let (offset, ev) = (b.records[index].offset, &b.records[index].event);
                    let span = tracing::debug_span!("event", id = %ev.id, r#type = %ev.event_type, key = ev.key.as_deref().unwrap_or(""), traceparent = ev.traceparent.as_deref().unwrap_or(""));
                    let (appends, links, ran) =
                        handle_event(&b.ctx, &b.route_links, &key, offset, ev, &mut holds)
                            .instrument(span)
                            .await;
                    units.push(Unit {
                        index,
                        appends,
                        links,
                        ran,
                    });
                }
                let changed: Vec<(String, Option<Vec<u8>>)> = holds
                    .iter()
                    .filter(|(r, h)| before.get(*r) != Some(*h))
                    .map(|(_, h)| (h.meta_key(), Some(h.to_bytes())))
                    .collect();
                (units, changed)
            },
        )
        .await
        // A panic in our own code: the batch cannot be trusted, so commit
        // nothing and let it be retried.
        .map_err(|e| format!("pipeline task failed: {e}"))?;
        let mut units = Vec::with_capacity(records.len());
        let mut meta = Vec::new();
        for (u, m) in keys {
            units.extend(u);
            meta.extend(m);
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
            kv: shared.ctx.kv.take(),
            meta,
            ..Default::default()
        };
        Ok((batch, tally))
    }

    /// Retries the first event of every held key whose time has come, and
    /// the events waiting behind it while they succeed. Returns what to
    /// commit (no cursor: these events are behind it already).
    async fn retry_held(&self) -> Result<WriteBatch, String> {
        let mut ctx = self.ctx();
        ctx.policy.held_retry = true;
        let now = hold::now_ms();
        let due: Vec<Held> = hold::load(&self.store)
            .map_err(|e| e.to_string())?
            .into_values()
            .filter(|h| h.due(now))
            .collect();
        let shared = Arc::new((ctx, self.store.clone(), self.input.clone()));
        let mut results = on_workers(
            shared.clone(),
            due.into(),
            self.workers,
            |b, h| async move { retry_key(&b.0, &b.1, &b.2, h).await },
        )
        .await
        .map_err(|e| format!("retry task failed: {e}"))?
        .into_iter()
        .collect::<Result<Vec<_>, String>>()?;
        // Deterministic order of the dead-letter and output records.
        results.sort_by(|a, b| a.0.cmp(&b.0));
        let mut batch = WriteBatch::default();
        for (key, appends, after) in results {
            batch.appends.extend(appends);
            batch.meta.push((key, after.map(|h| h.to_bytes())));
        }
        batch.kv = shared.0.kv.take();
        Ok(batch)
    }
}

/// A batch's records grouped by ordering key (the event id where there is
/// none): keys in the order they first appear, each with the indices of its
/// records in log order. Records `keep` refuses are left out.
pub(crate) fn key_groups(
    records: &[Record],
    mut keep: impl FnMut(&Record) -> bool,
) -> Vec<(&str, Vec<usize>)> {
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if !keep(r) {
            continue;
        }
        let key = r.event.key.as_deref().unwrap_or(r.event.id.as_str());
        let slot = *slot_of.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(i);
    }
    groups
}

/// Runs `work` on every item of `items` (a key's events, say) on up to
/// `workers` tasks, each taking the next waiting item when it finishes one:
/// an item's own work stays in order while items run side by side, and a
/// small item does not pay for a task of its own. `shared` is what every
/// task reads. The results come back in no particular order; a panic in
/// `work` is an error (and the other tasks are stopped).
pub(crate) async fn on_workers<S, I, R, F, Fut>(
    shared: Arc<S>,
    items: VecDeque<I>,
    workers: usize,
    work: F,
) -> Result<Vec<R>, tokio::task::JoinError>
where
    S: Send + Sync + 'static,
    I: Send + 'static,
    R: Send + 'static,
    F: Fn(Arc<S>, I) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = R> + Send,
{
    let tasks_n = workers.min(items.len()).max(1);
    let queue = Arc::new(std::sync::Mutex::new(items));
    let mut tasks = JoinSet::new();
    for _ in 0..tasks_n {
        let (queue, shared) = (queue.clone(), shared.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let next = crate::sync::lock(&queue).pop_front();
                let Some(item) = next else { break };
                done.push(work(shared.clone(), item).await);
            }
            done
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done?);
    }
    Ok(all)
}

/// Retries held key `h`: its first event, then the next ones while they
/// succeed. Returns its meta key, the records to append and the record to
/// keep (`None`: the key is free again).
async fn retry_key(
    ctx: &Ctx,
    store: &Store,
    input: &str,
    mut h: Held,
) -> Result<(String, Vec<(String, Event)>, Option<Held>), String> {
    let meta_key = h.meta_key();
    let mut appends = Vec::new();
    let read = |offset: u64| -> Result<Event, String> {
        match store.read(input, offset, 1) {
            Ok(mut r) if r.first().is_some_and(|r| r.offset == offset) => Ok(r.remove(0).event),
            Ok(_) => Err(format!("held event {input}@{offset} is missing")),
            Err(e) => Err(e.to_string()),
        }
    };
    let Some(route) = ctx.routes.routes().iter().find(|r| r.name == h.route) else {
        // The route went away with a config reload while the key was held.
        for &offset in &h.offsets {
            let ev = read(offset)?;
            let f = StageFailure::router(
                "no-route",
                format!(
                    "route {:?} was removed while key {:?} was held",
                    h.route, h.key
                ),
            );
            appends.push((ctx.dlq.clone(), dead_letter(&ev, Some(&h.route), &f)));
        }
        return Ok((meta_key, appends, None));
    };
    if hold::rebuilding(store, route).map_err(|e| e.to_string())? {
        h.next_at_ms = hold::now_ms()
            + ctx
                .policy
                .hold_delay(h.retries)
                .max(Duration::from_millis(10))
                .as_millis() as u64;
        return Ok((meta_key, appends, Some(h)));
    }
    while let Some(&offset) = h.offsets.first() {
        let ev = read(offset)?;
        let unit = UnitKv::new(ctx.kv.clone());
        let fresh = h.attempts == 0 && h.retries == 0;
        match stage::run_route(route, &ev, &unit, &ctx.policy).await {
            Ok(outs) => {
                unit.commit();
                appends.extend(outs);
                h.offsets.remove(0);
                h.attempts = 0;
                h.retries = 0;
                tracing::info!(event = %ev.id, route = %route.name, key = %h.key, waiting = h.offsets.len(), "held event released");
            }
            // The key's next event failing in turn: it is held like a new one.
            Err(f) if fresh && hold::holds(route, &f, &ctx.policy) => {
                let offsets = std::mem::take(&mut h.offsets);
                h = hold::start(route, &h.key, offset, &f, &ctx.policy);
                h.offsets = offsets;
                return Ok((meta_key, appends, Some(h)));
            }
            Err(f) if fresh => {
                tracing::warn!(event = %ev.id, route = %route.name, reason = %f.kind, error = %f.error, "event dead-lettered");
                appends.push((ctx.dlq.clone(), dead_letter(&ev, Some(&route.name), &f)));
                h.offsets.remove(0);
            }
            Err(f) => match hold::failed_again(&mut h, route, &ev, &f, &ctx.policy) {
                hold::Retried::Later => return Ok((meta_key, appends, Some(h))),
                hold::Retried::DeadLettered(letter) => {
                    appends.push((ctx.dlq.clone(), *letter));
                    if h.parked {
                        for offset in std::mem::take(&mut h.offsets) {
                            appends.push((
                                ctx.dlq.clone(),
                                hold::parked_letter(&read(offset)?, &h, route),
                            ));
                        }
                        return Ok((meta_key, appends, Some(h)));
                    }
                }
            },
        }
    }
    Ok((meta_key, appends, (h.parked).then_some(h)))
}

/// Runs one event through its routes (only the one named by a dead-letter
/// replay, if any); a failed route becomes a dead-letter record, or holds
/// the key on that route, and does not stop the others. A route on which
/// the key is held only queues the event.
async fn handle_event(
    ctx: &Ctx,
    route_links: &HashMap<String, Vec<u8>>,
    key: &str,
    offset: u64,
    ev: &Event,
    holds: &mut KeyHolds,
) -> Handled {
    let mut appends = Vec::new();
    let mut links = Vec::new();
    let mut ran = Vec::new();
    let mut routed = false;
    let only = ev.attributes.get(ATTR_REPLAY_ROUTE);
    for route in ctx.routes.matching(&ev.event_type) {
        if only.is_some_and(|name| *name != route.name) {
            continue;
        }
        routed = true;
        if route.direct {
            // Ran inside the ingest request; its outputs are already in the log.
            continue;
        }
        if let Some(h) = holds.get_mut(&route.name) {
            if h.parked {
                tracing::warn!(event = %ev.id, route = %route.name, key, "event of a parked key dead-lettered");
                links.push((
                    appends.len(),
                    crate::obs::dead_letter_link(Some(&route.name)),
                ));
                appends.push((ctx.dlq.clone(), hold::parked_letter(ev, h, route)));
            } else {
                tracing::debug!(event = %ev.id, route = %route.name, key, "event waits behind its held key");
                h.offsets.push(offset);
            }
            continue;
        }
        let unit = UnitKv::new(ctx.kv.clone());
        let start = appends.len();
        match stage::run_route(route, ev, &unit, &ctx.policy).await {
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
            Err(f) if hold::holds(route, &f, &ctx.policy) => {
                holds.insert(
                    route.name.clone(),
                    hold::start(route, key, offset, &f, &ctx.policy),
                );
            }
            Err(f) => {
                tracing::warn!(event = %ev.id, route = %route.name, plugin = %f.plugin, reason = %f.kind, error = %f.error, "event dead-lettered");
                links.push((
                    appends.len(),
                    crate::obs::dead_letter_link(Some(&route.name)),
                ));
                appends.push((ctx.dlq.clone(), dead_letter(ev, Some(&route.name), &f)));
            }
        }
        ran.push((route.name.clone(), start..appends.len()));
    }
    if !routed {
        let f = match only {
            Some(name) => StageFailure::router(
                "no-route",
                format!(
                    "replayed for route {name:?}, which no longer takes event type {:?}",
                    ev.event_type
                ),
            ),
            None => StageFailure::router(
                "no-route",
                format!("no route matches event type {:?}", ev.event_type),
            ),
        };
        tracing::warn!(event = %ev.id, r#type = %ev.event_type, "event has no route");
        links.push((appends.len(), crate::obs::dead_letter_link(None)));
        appends.push((ctx.dlq.clone(), dead_letter(ev, None, &f)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(store: &Store) -> Pipeline {
        Pipeline::new(
            store.clone(),
            Arc::new(RwLock::new(Arc::new(RouteTable::new(Vec::new())))),
            Arc::new(tokio::sync::Mutex::new(())),
            "events",
            &RouterConfig::default(),
        )
    }

    /// A batch write as `commit_chain` queues it: one output, and the
    /// router cursor moved from `from` to `to`.
    fn queue(store: &Store, from: u64, to: u64) -> InFlight {
        let batch = WriteBatch {
            appends: vec![("out".into(), crate::event::sample(&format!("o{to}")))],
            cursors: vec![("router".into(), to)],
            cursor_at: Some(("router".into(), from)),
            ..Default::default()
        };
        InFlight {
            write: store.queue(batch).unwrap(),
            from,
            to,
            tally: crate::obs::Tally::default(),
        }
    }

    /// Three writes queued as `commit_chain` queues them, from `from` to
    /// 30 (batches ending at 10, 20 and 30).
    fn chain(store: &Store, from: u64) -> VecDeque<InFlight> {
        [(from, 10), (10, 20), (20, 30)]
            .map(|(f, t)| queue(store, f, t))
            .into()
    }

    #[tokio::test]
    async fn queued_writes_move_the_cursor_in_order_down_to_what_may_stay_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let p = pipeline(&store);
        let (mut queued, mut cursor) = (chain(&store, 0), 0);
        assert!(p.settle(&mut queued, 1, &mut cursor).await);
        assert_eq!((queued.len(), cursor), (1, 20));
        assert!(p.settle(&mut queued, 0, &mut cursor).await);
        assert_eq!((queued.len(), cursor), (0, 30));
        assert_eq!(store.cursor("router").unwrap(), 30);
        assert_eq!(store.topic_len("out").unwrap(), 3);
    }

    /// Sets the stored router cursor, as another write would have.
    async fn set_cursor(store: &Store, at: u64) {
        store
            .write(WriteBatch {
                cursors: vec![("router".into(), at)],
                ..Default::default()
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_takes_the_writes_queued_after_it_and_the_cursor_comes_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let p = pipeline(&store);
        // The chain was queued from 5, but the store's cursor is at 3: its
        // first write fails (as a failed commit would leave it), and the
        // ones after it cannot skip over it.
        set_cursor(&store, 3).await;
        let (mut queued, mut cursor) = (chain(&store, 5), 5);
        assert!(!p.settle(&mut queued, 1, &mut cursor).await);
        assert!(queued.is_empty(), "the rest was waited for");
        assert_eq!(cursor, 3, "the cursor is the store's");
        assert_eq!(store.cursor("router").unwrap(), 3);
        assert_eq!(
            store.topic_len("out").unwrap(),
            0,
            "nothing of the chain was written"
        );

        // A first write that failed but is in after all (a commit can fail
        // after its data is durable): the rest go on from it, and the
        // consumer carries on from the store's cursor, past all of them.
        set_cursor(&store, 10).await;
        let (mut queued, mut cursor) = (chain(&store, 5), 5);
        assert!(!p.settle(&mut queued, 0, &mut cursor).await);
        assert_eq!(cursor, 30);
        assert_eq!(store.topic_len("out").unwrap(), 2);
    }

    fn record(offset: u64, id: &str, key: Option<&str>) -> Record {
        let mut event = crate::event::sample(id);
        event.key = key.map(str::to_owned);
        Record { offset, event }
    }

    #[test]
    fn key_groups_keep_first_appearance_and_log_order_and_fall_back_to_the_id() {
        let records = [
            record(0, "e0", Some("B")),
            record(1, "e1", Some("A")),
            record(2, "e2", None),
            record(3, "e3", Some("B")),
            record(4, "e4", Some("C")),
            record(5, "e5", Some("A")),
        ];
        assert_eq!(
            key_groups(&records, |_| true),
            vec![
                ("B", vec![0, 3]),
                ("A", vec![1, 5]),
                ("e2", vec![2]),
                ("C", vec![4])
            ]
        );
        // A left-out record takes no place, and a key with none left is gone.
        assert_eq!(
            key_groups(&records, |r| r.offset != 1 && r.offset != 4),
            vec![("B", vec![0, 3]), ("e2", vec![2]), ("A", vec![5])]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_workers_runs_every_item_once_in_its_own_order_on_at_most_workers_tasks() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Seen {
            running: AtomicUsize,
            most: AtomicUsize,
        }
        let seen = Arc::new(Seen {
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        let items: VecDeque<(usize, Vec<usize>)> =
            (0..40).map(|k| (k, (0..k % 5 + 1).collect())).collect();
        let mut done = on_workers(seen.clone(), items, 3, |seen, (k, steps)| async move {
            let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most.fetch_max(now, Ordering::SeqCst);
            let mut order = Vec::new();
            for step in steps {
                tokio::task::yield_now().await;
                order.push(step);
            }
            seen.running.fetch_sub(1, Ordering::SeqCst);
            (k, order)
        })
        .await
        .unwrap();
        done.sort();
        let want: Vec<(usize, Vec<usize>)> =
            (0..40).map(|k| (k, (0..k % 5 + 1).collect())).collect();
        assert_eq!(done, want);
        let most = seen.most.load(Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} items ran at once");
    }

    #[tokio::test]
    async fn a_panic_in_on_workers_is_an_error_not_a_partial_result() {
        let items: VecDeque<u32> = (0..8).collect();
        let r = on_workers(Arc::new(()), items, 2, |_, i| async move {
            assert_ne!(i, 5, "item 5 fails");
            i
        })
        .await;
        assert!(r.unwrap_err().is_panic());
    }
}
