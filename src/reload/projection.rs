//! Projections rebuilt blue/green.
//!
//! A projection's state lives in a `kv` namespace per *generation*
//! (`<name>/g<N>`). When its code changes, the new version replays the input
//! topic from offset 0 into a fresh generation while the old version keeps
//! serving live events on the old one. When the replay has caught up, it takes
//! the pipeline's gate (so the live consumer is between batches), replays the
//! last few events up to the live cursor, and in one commit makes the new
//! generation active and drops the old namespace; then the route table swaps
//! to the new version. The generations are recorded in the store
//! (`projection/<name>`), so a rebuild interrupted by a restart resumes from
//! its own cursor.
//!
//! **Invariant:** the active generation's state is exactly the result of its
//! version applied to the input topic's events `[0, router cursor)`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::status::RebuildProgress;
use crate::event::ATTR_REPLAY_COUNT;
use crate::pipeline::{BatchKv, StagePolicy, UnitKv, call_with_retries, key_groups, on_workers};
use crate::plugin::{Plugin, PluginHost};
use crate::router::Stage;
use crate::runtime::{Runtime, StartError};
use crate::store::{Record, Store, StoreError, WriteBatch};

/// A projection generation: its number and the digest of the code that
/// built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub generation: u64,
    pub digest: String,
}

/// What the store records about one projection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProjectionMeta {
    /// The generation serving live events.
    pub active: Option<Generation>,
    /// A generation being rebuilt, if any.
    pub rebuild: Option<Generation>,
}

/// A rebuild to run: the new version and the generation it fills.
pub struct PendingRebuild {
    pub name: String,
    pub plugin: Arc<Plugin>,
    pub generation: u64,
}

/// How a rebuild ended.
#[derive(Debug)]
pub enum RebuildEnd {
    /// Caught up and swapped in.
    Done { events: u64 },
    /// Superseded by a newer version, or the router is stopping.
    Cancelled,
}

/// The `kv` namespace of a projection generation.
pub fn namespace(name: &str, generation: u64) -> String {
    format!("{name}/g{generation}")
}

fn meta_key(name: &str) -> String {
    format!("projection/{name}")
}

fn cursor_key(name: &str, generation: u64) -> String {
    format!("rebuild/{name}/g{generation}")
}

pub fn read_meta(store: &Store, name: &str) -> Result<ProjectionMeta, StoreError> {
    Ok(store
        .meta_get(&meta_key(name))?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default())
}

fn meta_write(name: &str, meta: &ProjectionMeta) -> (String, Option<Vec<u8>>) {
    (meta_key(name), serde_json::to_vec(meta).ok())
}

/// At start-up: which version and generation serve a projection whose file
/// holds `file_plugin`, and whether a rebuild must run (the file changed
/// while the router was down, or a rebuild was interrupted).
pub async fn resume(
    store: &Store,
    host: &PluginHost,
    file_plugin: Arc<Plugin>,
) -> Result<(Stage, Option<PendingRebuild>), StartError> {
    let name = file_plugin.name().to_string();
    let mut meta = read_meta(store, &name)?;
    let digest = file_plugin.digest().to_string();
    let Some(active) = meta.active.clone() else {
        meta.active = Some(Generation {
            generation: 1,
            digest,
        });
        store
            .write(WriteBatch {
                meta: vec![meta_write(&name, &meta)],
                ..Default::default()
            })
            .await?;
        let stage = Stage {
            namespace: namespace(&name, 1),
            plugin: file_plugin,
        };
        return Ok((stage, None));
    };
    if active.digest == digest {
        let mut batch = WriteBatch::default();
        if let Some(stale) = meta.rebuild.take() {
            batch
                .drop_namespaces
                .push(namespace(&name, stale.generation));
            batch.drop_cursors.push(cursor_key(&name, stale.generation));
            batch.meta.push(meta_write(&name, &meta));
            store.write(batch).await?;
        }
        let stage = Stage {
            namespace: namespace(&name, active.generation),
            plugin: file_plugin,
        };
        return Ok((stage, None));
    }
    // The live version is the one that built the active state; its code is
    // in the compile cache if this router ran it before.
    let live = if host.cached(&active.digest) {
        host.load_cached(file_plugin.spec().clone(), &active.digest)
            .await?
    } else {
        tracing::warn!(plugin = %name, version = %&active.digest[..12], "active projection version is not in the compile cache; the new version serves the old state until its rebuild completes");
        file_plugin.clone()
    };
    let mut batch = WriteBatch::default();
    let generation = match meta.rebuild.take() {
        Some(r) if r.digest == digest => r.generation,
        Some(r) => {
            batch.drop_namespaces.push(namespace(&name, r.generation));
            batch.drop_cursors.push(cursor_key(&name, r.generation));
            r.generation.max(active.generation) + 1
        }
        None => active.generation + 1,
    };
    meta.rebuild = Some(Generation { generation, digest });
    batch.meta.push(meta_write(&name, &meta));
    store.write(batch).await?;
    let stage = Stage {
        namespace: namespace(&name, active.generation),
        plugin: live,
    };
    Ok((
        stage,
        Some(PendingRebuild {
            name,
            plugin: file_plugin,
            generation,
        }),
    ))
}

/// The next unused generation number for a projection.
pub fn next_generation(store: &Store, name: &str) -> Result<u64, StoreError> {
    let meta = read_meta(store, name)?;
    let used = [meta.active, meta.rebuild]
        .into_iter()
        .flatten()
        .map(|g| g.generation)
        .max();
    Ok(used.unwrap_or(0) + 1)
}

/// Replays the input topic into the job's generation, then swaps it in.
pub async fn run(
    rt: Arc<Runtime>,
    job: PendingRebuild,
    mut cancel: watch::Receiver<bool>,
) -> Result<RebuildEnd, String> {
    let name = job.name.clone();
    let ns = namespace(&name, job.generation);
    let cursor = cursor_key(&name, job.generation);
    let input = rt.config.ingest.topic.clone();
    let consumer = rt.config.router.consumer.clone();
    // The live pipeline's batch bounds the catch-up done under the gate
    // (the live consumer waits meanwhile); the rest replays in larger ones.
    let batch_size = rt.config.router.batch_size;
    let rebuild_batch = rt.config.router.rebuild_batch_size;
    let policy = StagePolicy {
        reserved_topics: Vec::new(),
        ..StagePolicy::new(&input, &rt.config.router)
    };
    let e = |e: StoreError| e.to_string();
    let mut meta = read_meta(&rt.store, &name).map_err(e)?;
    meta.rebuild = Some(Generation {
        generation: job.generation,
        digest: job.plugin.digest().to_string(),
    });
    rt.store
        .write(WriteBatch {
            meta: vec![meta_write(&name, &meta)],
            ..Default::default()
        })
        .await
        .map_err(e)?;

    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let mut offset = rt.store.cursor(&cursor).map_err(e)?;
    let first = offset;
    let mut stopping = rt.stopping.subscribe();
    tracing::info!(plugin = %name, version = job.plugin.version(), generation = job.generation, from = offset, "projection rebuild started");
    let progress = |offset: u64, state: &str, error: Option<String>| {
        let total = rt.store.topic_len(&input).unwrap_or(offset);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        rt.statuses.set_rebuild(
            &name,
            RebuildProgress {
                version: job.plugin.version().to_string(),
                generation: job.generation,
                state: state.to_string(),
                offset,
                total,
                events_per_second: ((offset - first) as f64 / secs * 10.0).round() / 10.0,
                started_at: started_at.clone(),
                error,
            },
        );
    };
    let mut last_log = Instant::now();
    loop {
        if *stopping.borrow_and_update() {
            // Stopping: keep the generation and its cursor, to resume on restart.
            return Ok(RebuildEnd::Cancelled);
        }
        if *cancel.borrow_and_update() {
            // Superseded (a newer version, or back to the live one): this
            // generation will never serve, so its state goes. A newer rebuild
            // has already recorded itself in the meta record.
            let mut meta = read_meta(&rt.store, &name).map_err(e)?;
            let mut batch = WriteBatch {
                drop_namespaces: vec![ns.clone()],
                drop_cursors: vec![cursor.clone()],
                ..Default::default()
            };
            if meta
                .rebuild
                .as_ref()
                .is_some_and(|r| r.generation == job.generation)
            {
                meta.rebuild = None;
                batch.meta.push(meta_write(&name, &meta));
            }
            rt.store.write(batch).await.map_err(e)?;
            progress(offset, "cancelled", None);
            return Ok(RebuildEnd::Cancelled);
        }
        let live = rt.store.cursor(&consumer).map_err(e)?;
        if live.saturating_sub(offset) <= batch_size as u64 {
            // Close enough: stop the live consumer between two batches, finish
            // the last events up to its cursor, and switch over.
            let _gate = rt.gate.lock().await;
            let target = rt.store.cursor(&consumer).map_err(e)?;
            while offset < target {
                let n = batch_size.min((target - offset) as usize);
                offset = replay(&rt, &job, &ns, &cursor, offset, n, &policy).await?;
            }
            let mut meta = read_meta(&rt.store, &name).map_err(e)?;
            let old = meta.active.replace(Generation {
                generation: job.generation,
                digest: job.plugin.digest().to_string(),
            });
            meta.rebuild = None;
            // The new generation now follows the live consumer's cursor, so
            // its rebuild cursor is done with.
            let mut batch = WriteBatch {
                meta: vec![meta_write(&name, &meta)],
                drop_cursors: vec![cursor.clone()],
                ..Default::default()
            };
            if let Some(old) = old.filter(|o| o.generation != job.generation) {
                batch.drop_namespaces.push(namespace(&name, old.generation));
                batch.drop_cursors.push(cursor_key(&name, old.generation));
            }
            rt.store.write(batch).await.map_err(e)?;
            rt.swap_stage(
                &name,
                Stage {
                    plugin: job.plugin.clone(),
                    namespace: ns.clone(),
                },
            );
            rt.statuses.loaded(&name, &job.plugin);
            progress(offset, "done", None);
            tracing::info!(plugin = %name, version = job.plugin.version(), generation = job.generation, events = offset, "projection rebuilt and swapped in");
            return Ok(RebuildEnd::Done { events: offset });
        }
        offset = match replay(&rt, &job, &ns, &cursor, offset, rebuild_batch, &policy).await {
            Ok(o) => o,
            Err(err) => {
                progress(offset, "failed", Some(err.clone()));
                return Err(err);
            }
        };
        if last_log.elapsed() > Duration::from_secs(2) {
            last_log = Instant::now();
            tracing::info!(plugin = %name, generation = job.generation, offset, live, "projection rebuild progress");
        }
        progress(offset, "running", None);
        // Let the live consumer and requests run between replay batches.
        tokio::task::yield_now().await;
    }
}

/// Replays up to `n` events from `offset` into the generation's namespace and
/// commits the state with the rebuild cursor. Outputs are dropped: the live
/// version is the one publishing. Returns the next offset.
async fn replay(
    rt: &Runtime,
    job: &PendingRebuild,
    ns: &str,
    cursor: &str,
    offset: u64,
    n: usize,
    policy: &StagePolicy,
) -> Result<u64, String> {
    let routes = rt.routes();
    // The projection's routes: those whose first stage it is.
    let own: Vec<_> = routes
        .routes()
        .iter()
        .filter(|route| {
            route
                .stages
                .first()
                .is_some_and(|s| s.plugin.name() == job.name)
        })
        .collect();
    // Only the events of those routes are decoded.
    let (records, next) = rt
        .store
        .read_matching(&rt.config.ingest.topic, offset, n, |event_type| {
            own.iter().any(|route| route.matches(event_type))
        })
        .map_err(|e| e.to_string())?;
    if next == offset {
        return Ok(offset);
    }
    // Events held on the projection's routes have not been applied live;
    // they stay held until after the switch-over and are applied then.
    let held: std::collections::HashSet<u64> = crate::pipeline::held_keys(&rt.store)
        .map_err(|e| e.to_string())?
        .into_values()
        .filter(|h| own.iter().any(|route| route.name == h.route))
        .flat_map(|h| h.offsets)
        .collect();
    // Each key's events in order, different keys on up to `router.workers`
    // tasks, as the live pipeline runs them.
    let keys: VecDeque<Vec<usize>> = key_groups(&records, |r| {
        // A copy re-injected from the dead-letter topic: the rebuild already
        // gave the new version the original, at its place in the log.
        !(r.event.attributes.contains_key(ATTR_REPLAY_COUNT) || held.contains(&r.offset))
    })
    .into_iter()
    .map(|(_, indices)| indices)
    .collect();
    /// What every key's task reads.
    struct Shared {
        plugin: Arc<Plugin>,
        ns: String,
        policy: StagePolicy,
        kv: Arc<BatchKv>,
        records: Vec<Record>,
    }
    let shared = Arc::new(Shared {
        plugin: job.plugin.clone(),
        ns: ns.to_string(),
        policy: policy.clone(),
        kv: BatchKv::new(rt.store.clone()),
        records,
    });
    on_workers(
        shared.clone(),
        keys,
        rt.config.router.workers,
        |b, indices| async move {
            for i in indices {
                let ev = &b.records[i].event;
                let unit = UnitKv::new(b.kv.clone());
                match call_with_retries(&b.plugin, &b.ns, ev, &unit, &b.policy).await {
                    Ok(_) => unit.commit(),
                    // The live version dead-lettered or will dead-letter it;
                    // the new version's state simply does not include it, as
                    // it would not live.
                    Err((err, _)) => {
                        tracing::debug!(plugin = %b.plugin.name(), event = %ev.id, error = %err, "event failed during rebuild")
                    }
                }
            }
        },
    )
    .await
    // A panic in our own code: commit nothing; the rebuild fails and its
    // cursor stays where it was.
    .map_err(|e| format!("rebuild task failed: {e}"))?;
    rt.store
        .write(WriteBatch {
            kv: shared.kv.take(),
            cursors: vec![(cursor.to_string(), next)],
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(next)
}
