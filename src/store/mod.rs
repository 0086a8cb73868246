//! The embedded durable store: append-only topics with offsets from 0,
//! consumer cursors, and plugin key-value state, on `redb`.
//!
//! All writes go through one writer thread that coalesces whatever is queued
//! into a single commit (group commit): many concurrent ingest requests cost
//! one fsync, and every caller learns its outcome only after the commit
//! returned. A commit is one synced frame of the write-ahead log ([`wal`])
//! plus a `redb` transaction committed without a sync, which checkpoints make
//! durable. A write that was acknowledged is on disk; a `kill -9` cannot take
//! it back (the next open applies the log's frames again).
//!
//! **Invariant:** a topic's offsets are dense and start at 0; a record, once
//! written, never changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, watch};

use crate::event::Event;
use crate::sync::lock;

mod codec;
mod trace;
mod wal;

/// `(topic, offset)` → the event (layout in [`codec`]).
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log");
/// topic → next offset (the topic's length).
const TOPICS: TableDefinition<&str, u64> = TableDefinition::new("topics");
/// consumer name → next offset to read.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// `(namespace, key)` → value: plugin state.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// Small named records the router keeps about itself (projection generations).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
// The trace index (what each input became) is in [`trace`]: its entries are
// JSON `{"from":[topic, offset], "links":[[topic, offset, info], ...]}`,
// one per input and writer, written in the same transaction as the records
// they name.

/// Default page cache (MiB). redb's own default is 1 GiB, which the
/// resident set grew towards under sustained load.
pub const DEFAULT_CACHE_MB: usize = 64;

/// Default write-ahead log size at which the writer checkpoints (see
/// [`wal`]): bounds the log's size and the replay after a crash.
pub const DEFAULT_CHECKPOINT_MB: u64 = 1;

/// Most jobs folded into one transaction: bounds the latency a large queue
/// adds to the first caller in it.
const MAX_JOBS_PER_COMMIT: usize = 1024;

/// When the writer checkpoints (see [`wal`]).
#[derive(Debug, Clone, Copy)]
struct Checkpoints {
    /// Once the write-ahead log holds this many bytes.
    bytes: u64,
    /// Once the writer has been idle this long with commits in the log, so
    /// that a quiet router restarts without replaying.
    idle: Duration,
}

impl Checkpoints {
    const DEFAULT: Checkpoints = Checkpoints {
        bytes: DEFAULT_CHECKPOINT_MB * 1024 * 1024,
        idle: Duration::from_secs(1),
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("store write failed: {0}")]
    Write(String),
    /// A write's `cursor_at` did not hold: nothing of it was written.
    #[error("store write refused: {0}")]
    Conflict(String),
    #[error("store read failed: {0}")]
    Read(String),
    #[error("record {topic}@{offset} is corrupt: {reason}")]
    Corrupt {
        topic: String,
        offset: u64,
        reason: String,
    },
    #[error("store is closed")]
    Closed,
}

/// A record of `topic` at `offset` that cannot be read back.
fn corrupt(topic: &str, offset: u64, reason: String) -> StoreError {
    StoreError::Corrupt {
        topic: topic.to_string(),
        offset,
        reason,
    }
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

/// One record of a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: u64,
    pub event: Event,
}

/// Everything one caller wants written atomically.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Events to append, in order.
    pub appends: Vec<(String, Event)>,
    /// Consumer cursors to set (next offset to read).
    pub cursors: Vec<(String, u64)>,
    /// Consumer cursors to delete (a consumer that will never run again).
    pub drop_cursors: Vec<String>,
    /// Plugin state changes: `(namespace, key, Some(value) | None = delete)`.
    pub kv: Vec<(String, String, Option<Vec<u8>>)>,
    /// Plugin state namespaces to delete whole (applied before `kv`).
    pub drop_namespaces: Vec<String>,
    /// Router records to set (`Some`) or remove (`None`).
    pub meta: Vec<(String, Option<Vec<u8>>)>,
    /// Trace entries: what each input of this batch became (see [`Trace`]).
    pub traces: Vec<Trace>,
    /// Write this batch only if the consumer's cursor is at this offset
    /// when its turn comes (an absent cursor is at 0); otherwise nothing of
    /// it is written and the write fails with [`StoreError::Conflict`]. A
    /// consumer can then queue its next batch (which moves the cursor on
    /// from where this one leaves it) before this one is answered: if this
    /// one fails, the next one cannot skip over it.
    pub cursor_at: Option<(String, u64)>,
}

/// What an input event became in one write: its `trace` entry.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The input's event id.
    pub id: String,
    /// Which writer: `0` direct delivery, `1` the pipeline.
    pub writer: u8,
    /// Where the input is: an index into this batch's `appends`...
    pub input: Option<usize>,
    /// ...or a record written before.
    pub from: Option<(String, u64)>,
    /// Records made from it: (index into `appends`, what the trace shows,
    /// as JSON text, serialised by the caller off the writer thread).
    pub outputs: Vec<(usize, Vec<u8>)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.cursors.is_empty()
            && self.drop_cursors.is_empty()
            && self.kv.is_empty()
            && self.drop_namespaces.is_empty()
            && self.meta.is_empty()
    }
}

struct Job {
    batch: WriteBatch,
    /// `batch.appends` encoded by the caller, off the writer thread.
    encoded: Vec<Vec<u8>>,
    reply: oneshot::Sender<Reply>,
    /// When it was queued (for `switchyard_store_write_duration_seconds`).
    queued: Instant,
}

/// The outcome of a job, with the job's buffers: the caller frees them on
/// its own thread. Freed on the writer thread, every block was a
/// cross-thread free (slower in the allocator, and the allocating thread
/// pays again to collect it), on the one thread every write waits for.
type Reply = (Result<Vec<u64>, StoreError>, Spent);
type Spent = (WriteBatch, Vec<Vec<u8>>);

/// A write in the writer's queue (see [`Store::queue`]).
#[derive(Debug)]
pub struct Queued(oneshot::Receiver<Reply>);

impl Queued {
    /// Waits until the write is durable: the offsets assigned to its
    /// appends, in order.
    pub async fn written(self) -> Result<Vec<u64>, StoreError> {
        let (result, spent) = self.0.await.map_err(|_| StoreError::Closed)?;
        drop(spent);
        result
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// topic → its length, published after each commit (live readers wait on it).
    watchers: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// consumer → its durable cursor, published after each commit that
    /// moves it (ingest's back-pressure watches the router's).
    cursor_watchers: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Counts commits that appended anything: consumers of many topics (the
    /// sinks) wait on it, since a plugin may create a topic at any time.
    appended: watch::Sender<u64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The trace index's runs and waiting entries, kept by the writer.
    trace_stats: Arc<trace::Stats>,
    /// Bytes in the write-ahead log since the last checkpoint, kept by the
    /// writer.
    wal_bytes: Arc<AtomicU64>,
    /// Commits the open applied from the write-ahead log.
    replayed: u64,
    /// Why the last commit (or checkpoint) failed and when (`None`: writes
    /// are refused until a restart), until one succeeds; kept by the writer.
    /// See [`Store::write_failure`].
    failing: Arc<Mutex<Failing>>,
}

/// The last failed commit's error and when it failed; no time when the
/// store refuses every write until a restart.
type Failing = Option<(String, Option<Instant>)>;

/// How long a failed commit is reported ([`Store::write_failure`]) when no
/// commit comes after it: readiness then lets traffic back, and the next
/// write tells again. A router taken out of traffic might otherwise never
/// write again to show it can.
const FAILURE_SHOWN: Duration = Duration::from_secs(10);

impl Store {
    /// Opens (or creates) the store in `dir` with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_inner(
            dir,
            DEFAULT_CACHE_MB,
            trace::Shape::DEFAULT,
            Checkpoints::DEFAULT,
        )
    }

    /// Opens (or creates) the store in `dir` with a page cache of
    /// `cache_mb` MiB, checkpointing every `checkpoint_mb` MiB of
    /// write-ahead log (see [`wal`]).
    pub fn open_with(dir: &Path, cache_mb: usize, checkpoint_mb: u64) -> Result<Self, StoreError> {
        let checkpoints = Checkpoints {
            bytes: checkpoint_mb.max(1).saturating_mul(1024 * 1024),
            ..Checkpoints::DEFAULT
        };
        Self::open_inner(dir, cache_mb, trace::Shape::DEFAULT, checkpoints)
    }

    /// With the trace index sized by `shape`.
    #[cfg(test)]
    fn open_with_runs(dir: &Path, shape: trace::Shape) -> Result<Self, StoreError> {
        Self::open_inner(dir, DEFAULT_CACHE_MB, shape, Checkpoints::DEFAULT)
    }

    /// Checkpointing as `checkpoints` says.
    #[cfg(test)]
    fn open_with_checkpoints(dir: &Path, checkpoints: Checkpoints) -> Result<Self, StoreError> {
        Self::open_inner(dir, DEFAULT_CACHE_MB, trace::Shape::DEFAULT, checkpoints)
    }

    fn open_inner(
        dir: &Path,
        cache_mb: usize,
        shape: trace::Shape,
        checkpoints: Checkpoints,
    ) -> Result<Self, StoreError> {
        let open_err = |e: redb::Error| StoreError::Open {
            path: dir.to_path_buf(),
            source: Box::new(e),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::StorageError::Io(e).into()))?;
        let path = dir.join("switchyard.redb");
        let db = Database::builder()
            .set_cache_size(cache_mb.max(1).saturating_mul(1024 * 1024))
            .create(&path)
            .map_err(|e| open_err(e.into()))?;
        // Create the tables so readers never see "table does not exist".
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        {
            txn.open_table(LOG).map_err(|e| open_err(e.into()))?;
            txn.open_table(TOPICS).map_err(|e| open_err(e.into()))?;
            txn.open_table(CURSORS).map_err(|e| open_err(e.into()))?;
            txn.open_table(KV).map_err(|e| open_err(e.into()))?;
            txn.open_table(META).map_err(|e| open_err(e.into()))?;
            txn.open_table(trace::LEGACY)
                .map_err(|e| open_err(e.into()))?;
            txn.open_table(trace::RECENT)
                .map_err(|e| open_err(e.into()))?;
            txn.open_table(trace::RUNS)
                .map_err(|e| open_err(e.into()))?;
            txn.open_table(trace::BLOCKS)
                .map_err(|e| open_err(e.into()))?;
            txn.open_table(trace::RUN_LEVELS)
                .map_err(|e| open_err(e.into()))?;
            txn.open_table(trace::RUN_LIST)
                .map_err(|e| open_err(e.into()))?;
        }
        txn.commit().map_err(|e| open_err(e.into()))?;
        let db = Arc::new(db);
        let trace_stats = Arc::new(trace::Stats::default());
        let mut index =
            trace::Index::load(db.clone(), trace_stats.clone(), shape).map_err(StoreError::Read)?;
        let (wal, replayed) = replay(&db, &mut index, &dir.join("switchyard.wal"))
            .map_err(|e| open_err(redb::StorageError::Io(std::io::Error::other(e)).into()))?;
        let wal_bytes = Arc::new(AtomicU64::new(0));
        let failing = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel::<Job>();
        let inner = Arc::new(Inner {
            db: db.clone(),
            path,
            jobs: Mutex::new(Some(tx)),
            watchers: Mutex::new(HashMap::new()),
            cursor_watchers: Mutex::new(HashMap::new()),
            appended: watch::channel(0).0,
            writer: Mutex::new(None),
            trace_stats,
            wal_bytes: wal_bytes.clone(),
            replayed,
            failing: failing.clone(),
        });
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let log = Log {
                    wal,
                    checkpoints,
                    bytes: wal_bytes,
                    failing,
                    slow_syncs: SlowSyncs::default(),
                };
                writer_loop(&db, index, log, rx, weak)
            })
            .map_err(|e| open_err(redb::StorageError::Io(e).into()))?;
        *lock(&inner.writer) = Some(handle);
        Ok(Self { inner })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writes `batch` atomically and durably; returns the offsets assigned to
    /// its appends, in order.
    pub async fn write(&self, batch: WriteBatch) -> Result<Vec<u64>, StoreError> {
        self.queue(batch)?.written().await
    }

    /// Queues `batch` for writing now, behind every write queued before
    /// it, and returns the wait for its outcome. Writes queued one after
    /// another by one caller are committed in that order (the writer folds
    /// those waiting together into one commit), which `write` from spawned
    /// tasks cannot promise.
    pub fn queue(&self, batch: WriteBatch) -> Result<Queued, StoreError> {
        let (reply, rx) = oneshot::channel();
        let encoded = batch
            .appends
            .iter()
            .map(|(_, e)| codec::encode(e))
            .collect();
        let jobs = lock(&self.inner.jobs);
        let tx = jobs.as_ref().ok_or(StoreError::Closed)?;
        tx.send(Job {
            batch,
            encoded,
            reply,
            queued: Instant::now(),
        })
        .map_err(|_| StoreError::Closed)?;
        Ok(Queued(rx))
    }

    /// Up to `limit` records of `topic` from offset `from`.
    pub fn read(&self, topic: &str, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        self.scan(topic, from, limit, |offset, bytes| {
            let event = codec::decode(bytes).map_err(|r| corrupt(topic, offset, r))?;
            out.push(Record { offset, event });
            Ok(())
        })?;
        Ok(out)
    }

    /// Like [`Store::read`], but decodes only the records whose event type
    /// `keep` accepts: the others cost reading their type. `limit` counts
    /// every record read. Returns the kept records and the offset after the
    /// last record read (`from` when there was none).
    pub fn read_matching(
        &self,
        topic: &str,
        from: u64,
        limit: usize,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<(Vec<Record>, u64), StoreError> {
        let mut out = Vec::new();
        let next = self.scan(topic, from, limit, |offset, bytes| {
            let corrupt = |r| corrupt(topic, offset, r);
            // `None`: a record of the older JSON layout, decoded to tell.
            let known = codec::event_type(bytes).map_err(corrupt)?;
            if known.is_some_and(|t| !keep(t)) {
                return Ok(());
            }
            let event = codec::decode(bytes).map_err(corrupt)?;
            if known.is_some() || keep(&event.event_type) {
                out.push(Record { offset, event });
            }
            Ok(())
        })?;
        Ok((out, next))
    }

    /// Calls `visit` with the offset and stored bytes of up to `limit`
    /// records of `topic` from offset `from`, in order. Returns the offset
    /// after the last one visited (`from` when none was).
    fn scan(
        &self,
        topic: &str,
        from: u64,
        limit: usize,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(from);
        }
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        // The entry holding `from` starts at or before it (a chunk).
        let start = match table
            .range((topic, 0)..=(topic, from))
            .map_err(read_err)?
            .next_back()
        {
            Some(item) => item.map_err(read_err)?.0.value().1,
            None => from,
        };
        let (mut next, mut visited) = (from, 0);
        for item in table
            .range((topic, start)..(topic, u64::MAX))
            .map_err(read_err)?
        {
            let (k, v) = item.map_err(read_err)?;
            let first = k.value().1;
            let records = codec::records(v.value()).map_err(|r| corrupt(topic, first, r))?;
            for (offset, bytes) in (first..).zip(records) {
                if offset < from {
                    continue;
                }
                visit(offset, bytes)?;
                next = offset + 1;
                visited += 1;
                if visited >= limit {
                    return Ok(next);
                }
            }
        }
        Ok(next)
    }

    /// Every topic with its length, by name.
    pub fn topics(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(TOPICS).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Number of records in `topic` (0 for a topic never written).
    pub fn topic_len(&self, topic: &str) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(TOPICS).map_err(read_err)?;
        Ok(table
            .get(topic)
            .map_err(read_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The consumer's next offset (0 if it never committed).
    pub fn cursor(&self, consumer: &str) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(CURSORS).map_err(read_err)?;
        Ok(table
            .get(consumer)
            .map_err(read_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Every consumer cursor, in name order.
    pub fn cursors(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(CURSORS).map_err(read_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(read_err)? {
            let (k, v) = entry.map_err(read_err)?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Entries waiting in the trace index's chunks at which they are
    /// sorted into a run.
    pub const TRACE_RUN_ENTRIES: usize = trace::RUN_ENTRIES;
    /// Runs of one size the trace index merges into one.
    pub const TRACE_FAN_IN: usize = trace::FAN_IN;

    /// Bytes of commits in the write-ahead log since the last checkpoint:
    /// what a restart would apply again (see [`wal`]).
    pub fn wal_bytes(&self) -> u64 {
        self.inner.wal_bytes.load(Ordering::Relaxed)
    }

    /// Why writes are failing: the error of the last commit when it failed
    /// (until one succeeds, and for at most ten seconds), or why the store
    /// refuses every write until a restart. `None` while writes succeed.
    pub fn write_failure(&self) -> Option<String> {
        match &*lock(&self.inner.failing) {
            Some((why, None)) => Some(why.clone()),
            Some((why, Some(at))) if at.elapsed() < FAILURE_SHOWN => Some(why.clone()),
            _ => None,
        }
    }

    /// How many commits the open applied from the write-ahead log: those the
    /// database had not made durable before the router stopped.
    pub fn replayed(&self) -> u64 {
        self.inner.replayed
    }

    /// The trace index's sorted runs and the entries waiting in chunks (see
    /// [`trace`]): a lookup reads one block of each run and scans the chunks.
    pub fn trace_index(&self) -> (u64, u64) {
        let s = &self.inner.trace_stats;
        (
            s.runs.load(Ordering::Relaxed),
            s.waiting.load(Ordering::Relaxed),
        )
    }

    /// The trace entries of input event `id`, one per writer (see [`trace`]).
    pub fn trace(&self, id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let entries = trace::lookup(&txn, id).map_err(StoreError::Read)?;
        Ok(entries
            .iter()
            .filter_map(|e| serde_json::from_slice(e).ok())
            .collect())
    }

    /// A plugin state value.
    pub fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(KV).map_err(read_err)?;
        Ok(table
            .get((namespace, key))
            .map_err(read_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Plugin state entries whose key starts with `prefix`, in key order.
    pub fn kv_scan(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(KV).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.range((namespace, prefix)..).map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let (ns, key) = k.value();
            if ns != namespace || !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((key.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// A router record.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        Ok(table
            .get(key)
            .map_err(read_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Router records whose key starts with `prefix`, in key order.
    pub fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The data directory's path for derived files (the plugin compile cache).
    pub fn dir(&self) -> &Path {
        self.inner.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// Watches the length of `topic`: changes after every commit that appends to it.
    pub fn watch(&self, topic: &str) -> watch::Receiver<u64> {
        subscribe(&self.inner.watchers, topic, || {
            self.topic_len(topic).unwrap_or(0)
        })
    }

    /// Watches the durable cursor of `consumer`: changes after every commit
    /// that writes it.
    pub fn watch_cursor(&self, consumer: &str) -> watch::Receiver<u64> {
        subscribe(&self.inner.cursor_watchers, consumer, || {
            self.cursor(consumer).unwrap_or(0)
        })
    }

    /// Changes after every commit that appended to any topic.
    pub fn watch_appends(&self) -> watch::Receiver<u64> {
        self.inner.appended.subscribe()
    }

    /// Stops the writer after the queued writes are committed. Later writes
    /// fail with [`StoreError::Closed`].
    pub fn close(&self) {
        lock(&self.inner.jobs).take();
        if let Some(h) = lock(&self.inner.writer).take() {
            let _ = h.join();
        }
    }
}

/// A receiver of `key`'s watch in `watchers`, made with the value `now`
/// reads when there is none yet. `now` reads the store under the lock, so a
/// commit the writer publishes meanwhile waits for the watch to exist.
fn subscribe(
    watchers: &Mutex<HashMap<String, watch::Sender<u64>>>,
    key: &str,
    now: impl FnOnce() -> u64,
) -> watch::Receiver<u64> {
    let mut map = lock(watchers);
    if let Some(tx) = map.get(key) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel(now());
    map.insert(key.to_string(), tx);
    rx
}

/// Opens the write-ahead log at `path` and applies the commits in it that
/// redb lost (those after its last durable one), then checkpoints them.
fn replay(db: &Database, index: &mut trace::Index, path: &Path) -> Result<(wal::Wal, u64), String> {
    let applied = {
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let seq = meta.get(wal::SEQ_KEY).map_err(|e| e.to_string())?;
        seq.and_then(|v| v.value().try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let where_ = || path.display();
    let (mut wal, frames) =
        wal::Wal::open(path, applied).map_err(|e| format!("write-ahead log {}: {e}", where_()))?;
    let Some(last) = frames.last().map(|f| f.0) else {
        return Ok((wal, 0));
    };
    let started = Instant::now();
    for (seq, jobs) in &frames {
        let parts: Vec<_> = jobs.iter().map(|(b, e)| (b, e.as_slice())).collect();
        let (txn, (_, _, step)) = stage(db, index, &parts, *seq)?;
        txn.commit().map_err(|e| e.to_string())?;
        index.committed(step);
    }
    checkpoint(db, &mut wal)?;
    tracing::info!(commits = frames.len(), first = frames[0].0, last,
        elapsed_ms = started.elapsed().as_millis() as u64, path = %where_(),
        "applied the commits of the write-ahead log that the database had not made durable");
    Ok((wal, frames.len() as u64))
}

/// Makes everything committed so far durable in redb, then starts the
/// write-ahead log over.
fn checkpoint(db: &Database, wal: &mut wal::Wal) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| format!("checkpoint failed: {e}");
    let txn = db.begin_write().map_err(|e| s(&e))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| s(&e))?;
        meta.insert(wal::SEQ_KEY, &wal.seq().to_le_bytes()[..])
            .map_err(|e| s(&e))?;
    }
    txn.commit().map_err(|e| s(&e))?;
    wal.rewind();
    Ok(())
}

/// Commits `jobs`: staged in a redb transaction, logged durably, then
/// committed to redb without a sync. Once the log cannot be trusted, or redb
/// failed a commit whose frame is logged, `broken` says why and every later
/// commit fails with it until a restart (which replays the log).
fn commit(
    db: &Database,
    index: &mut trace::Index,
    wal: &mut wal::Wal,
    jobs: &[Job],
    broken: &mut Option<String>,
) -> Result<Committed, String> {
    if let Some(why) = broken {
        return Err(why.clone());
    }
    let parts: Vec<_> = jobs
        .iter()
        .map(|j| (&j.batch, j.encoded.as_slice()))
        .collect();
    let (txn, committed) = stage(db, index, &parts, wal.seq() + 1)?;
    let frame_at = wal.len();
    let log = |wal: &wal::Wal| wal.path().display().to_string();
    match wal.append(&parts) {
        Ok(_) => {}
        Err(e @ wal::Failed::Write(_)) => return Err(format!("write-ahead log {}: {e}", log(wal))),
        Err(e @ wal::Failed::Sync(_)) => {
            let why = format!(
                "write-ahead log {}: {e}; no write is accepted until the router restarts",
                log(wal)
            );
            *broken = Some(why.clone());
            return Err(why);
        }
    }
    if let Err(e) = txn.commit() {
        let why = match wal.take_back(frame_at) {
            Ok(()) => format!("{e}; no write is accepted until the router restarts"),
            Err(back) => format!(
                "{e}, and its entry in the write-ahead log {} could not be taken back \
                 ({back}): it will be applied when the router restarts",
                log(wal)
            ),
        };
        *broken = Some(why.clone());
        return Err(why);
    }
    Ok(committed)
}

/// A sync of the write-ahead log this slow is logged: the disk is holding
/// up every write.
const SLOW_SYNC: Duration = Duration::from_millis(100);
/// Slow syncs are logged at most this often, counted in between.
const SLOW_SYNC_EVERY: Duration = Duration::from_secs(10);

/// Write-ahead log syncs slower than [`SLOW_SYNC`] not yet logged.
#[derive(Default)]
struct SlowSyncs {
    count: u64,
    longest: Duration,
    logged: Option<Instant>,
}

impl SlowSyncs {
    /// Notes a sync that took `took`; says how many slow syncs to log now
    /// and the longest: the first at once, then those of each
    /// [`SLOW_SYNC_EVERY`] together.
    fn note(&mut self, took: Duration, now: Instant) -> Option<(u64, Duration)> {
        if took >= SLOW_SYNC {
            self.count += 1;
            self.longest = self.longest.max(took);
        }
        let quiet = self
            .logged
            .is_none_or(|at| now.saturating_duration_since(at) >= SLOW_SYNC_EVERY);
        if self.count == 0 || !quiet {
            return None;
        }
        self.logged = Some(now);
        Some((
            std::mem::take(&mut self.count),
            std::mem::take(&mut self.longest),
        ))
    }
}

/// The writer's write-ahead log and when it checkpoints.
struct Log {
    wal: wal::Wal,
    checkpoints: Checkpoints,
    /// Where the log's size is shown ([`Store::wal_bytes`]).
    bytes: Arc<AtomicU64>,
    /// Where a failing commit is shown ([`Store::write_failure`]).
    failing: Arc<Mutex<Failing>>,
    slow_syncs: SlowSyncs,
}

impl Log {
    /// Shows the outcome of the last commit or checkpoint: a refusal until
    /// a restart stays shown whatever comes after it.
    fn show(&self, outcome: Result<(), &str>, broken: &Option<String>) {
        let now = match (broken, outcome) {
            (Some(why), _) => Some((why.clone(), None)),
            (None, Err(e)) => Some((e.to_string(), Some(Instant::now()))),
            (None, Ok(())) => None,
        };
        let mut failing = lock(&self.failing);
        if failing.is_some() || now.is_some() {
            *failing = now;
        }
    }
}

fn writer_loop(
    db: &Database,
    mut index: trace::Index,
    mut log: Log,
    rx: mpsc::Receiver<Job>,
    inner: std::sync::Weak<Inner>,
) {
    let m = crate::obs::metrics();
    let (commit_ok, commit_err) = (
        m.store_commits.series(["ok"]),
        m.store_commits.series(["error"]),
    );
    let (write_ok, write_err) = (
        m.store_writes.series(["ok"]),
        m.store_writes.series(["error"]),
    );
    let (checkpoint_ok, checkpoint_err) = (
        m.store_checkpoints.series(["ok"]),
        m.store_checkpoints.series(["error"]),
    );
    let wal_syncs = m.store_wal_syncs.series([]);
    let mut broken = None;
    let checkpoint_now = |log: &mut Log, broken: &mut Option<String>| {
        if broken.is_none() && log.wal.len() > 0 {
            let (started, bytes) = (Instant::now(), log.wal.len());
            let result = checkpoint(db, &mut log.wal);
            let took = started.elapsed();
            if let Err(e) = result {
                checkpoint_err.observe(took);
                tracing::error!(error = %e, "store checkpoint failed");
                *broken = Some(format!(
                    "{e}; no write is accepted until the router restarts"
                ));
                log.show(Err(&e), broken);
            } else {
                checkpoint_ok.observe(took);
                tracing::debug!(bytes, took_ms = took.as_millis() as u64, "store checkpoint");
            }
            log.bytes.store(log.wal.len(), Ordering::Relaxed);
        }
    };
    loop {
        let first = if log.wal.len() > 0 && broken.is_none() {
            match rx.recv_timeout(log.checkpoints.idle) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    checkpoint_now(&mut log, &mut broken);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let committed = commit(db, &mut index, &mut log.wal, &jobs, &mut broken);
        log.bytes.store(log.wal.len(), Ordering::Relaxed);
        log.show(
            committed.as_ref().map(|_| ()).map_err(String::as_str),
            &broken,
        );
        let done = Instant::now();
        // Each job's outcome: a failed commit fails them all.
        let (results, lengths): (Vec<Result<Vec<u64>, StoreError>>, _) = match committed {
            Ok((offsets, lengths, step)) => {
                index.committed(step);
                commit_ok.observe(done - started);
                let synced_in = log.wal.synced_in();
                wal_syncs.observe(synced_in);
                if let Some((slow, longest)) = log.slow_syncs.note(synced_in, done) {
                    tracing::warn!(
                        slow,
                        at_least_ms = SLOW_SYNC.as_millis() as u64,
                        longest_ms = longest.as_millis() as u64,
                        path = %log.wal.path().display(),
                        "syncs of the store's write-ahead log were slow: the disk is holding \
                         up writes, and every ingest answer and pipeline batch waits for it"
                    );
                }
                let results = offsets
                    .into_iter()
                    .map(|o| o.map_err(StoreError::Conflict))
                    .collect();
                (results, lengths)
            }
            Err(e) => {
                commit_err.observe(done - started);
                tracing::error!(error = %e, jobs = jobs.len(), "store commit failed");
                let results = jobs
                    .iter()
                    .map(|_| Err(StoreError::Write(e.clone())))
                    .collect();
                (results, Vec::new())
            }
        };
        // What the commit changed reaches the watchers before the writers
        // hear back, so a writer that then reads a watch sees its own write.
        if let Some(inner) = inner.upgrade() {
            let map = lock(&inner.cursor_watchers);
            if !map.is_empty() {
                for (job, result) in jobs.iter().zip(&results) {
                    for (consumer, at) in job.batch.cursors.iter().filter(|_| result.is_ok()) {
                        if let Some(tx) = map.get(consumer) {
                            tx.send_replace(*at);
                        }
                    }
                }
            }
            drop(map);
            if !lengths.is_empty() {
                inner.appended.send_modify(|n| *n += 1);
                let map = lock(&inner.watchers);
                for (topic, len) in lengths {
                    if let Some(tx) = map.get(&topic) {
                        tx.send_replace(len);
                    }
                }
            }
        }
        for (job, result) in jobs.into_iter().zip(results) {
            let writes = if result.is_ok() {
                &write_ok
            } else {
                &write_err
            };
            writes.observe(done.saturating_duration_since(job.queued));
            let _ = job.reply.send((result, (job.batch, job.encoded)));
        }
        if log.wal.len() >= log.checkpoints.bytes {
            checkpoint_now(&mut log, &mut broken);
        }
    }
    checkpoint_now(&mut log, &mut broken);
}

/// Each job's offsets (or why it was refused, see
/// [`WriteBatch::cursor_at`]), the new length of each topic appended to,
/// and what the commit changed in the trace index.
type Committed = (
    Vec<Result<Vec<u64>, String>>,
    Vec<(String, u64)>,
    trace::Step,
);

/// Puts `t`, the input's entry for its writer, into `b`: the JSON is put
/// together from pre-serialised parts, to keep the writer thread's work
/// small.
fn trace_entry(b: &mut Vec<u8>, t: &Trace, appends: &[(String, Event)], offs: &[u64]) {
    let loc = |i: usize| {
        appends
            .get(i)
            .zip(offs.get(i))
            .map(|((topic, _), o)| (topic.as_str(), *o))
    };
    b.clear();
    b.push(b'{');
    let from = t
        .input
        .and_then(loc)
        .or(t.from.as_ref().map(|(t, o)| (t.as_str(), *o)));
    if let Some((topic, offset)) = from {
        b.extend_from_slice(b"\"from\":[");
        push_json_str(b, topic);
        b.push(b',');
        push_u64(b, offset);
        b.extend_from_slice(b"],");
    }
    b.extend_from_slice(b"\"links\":[");
    let mut first = true;
    for (i, info) in &t.outputs {
        if let Some((topic, offset)) = loc(*i) {
            if !first {
                b.push(b',');
            }
            first = false;
            b.push(b'[');
            push_json_str(b, topic);
            b.push(b',');
            push_u64(b, offset);
            b.push(b',');
            b.extend_from_slice(info);
            b.push(b']');
        }
    }
    b.extend_from_slice(b"]}");
}

/// Appends `s` as a JSON string: between quotes as it is when nothing in
/// it needs escaping (topic names never do), through serde_json otherwise.
fn push_json_str(b: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *b, s);
    }
}

/// Appends `n` in decimal (without `core::fmt`, on the writer thread).
fn push_u64(b: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[i..]);
}

/// The table `def` of `txn`, opened on first use: a commit opens only the
/// tables its jobs touch (an ingest write, only the log and topic lengths),
/// and redb does per-commit work for every table opened.
fn table<'a, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'t redb::WriteTransaction,
    slot: &'a mut Option<redb::Table<'t, K, V>>,
    def: TableDefinition<K, V>,
) -> Result<&'a mut redb::Table<'t, K, V>, String> {
    match slot {
        Some(t) => Ok(t),
        None => Ok(slot.insert(txn.open_table(def).map_err(|e| e.to_string())?)),
    }
}

/// `records` cut into runs of at most [`codec::CHUNK_BYTES`] (and at least
/// one record each).
fn chunks<'r, 'b>(records: &'r [&'b [u8]]) -> impl Iterator<Item = &'r [&'b [u8]]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|r| {
                let fits = bytes == 0 || bytes + r.len() <= codec::CHUNK_BYTES;
                bytes += r.len();
                fits
            })
            .count();
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// `jobs` applied in a redb transaction that commits without a sync (the
/// write-ahead log makes it durable), recording `seq` as its place in the
/// log; not committed yet.
fn stage(
    db: &Database,
    index: &mut trace::Index,
    jobs: &[(&WriteBatch, &[Vec<u8>])],
    seq: u64,
) -> Result<(redb::WriteTransaction, Committed), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let mut txn = db.begin_write().map_err(|e| s(&e))?;
    txn.set_durability(Durability::None).map_err(|e| s(&e))?;
    let mut lengths: HashMap<&str, u64> = HashMap::new();
    let mut offsets = Vec::with_capacity(jobs.len());
    // Per topic, the offset of its first append in this commit and the
    // records from there on, written as chunks at the end.
    let mut appended: HashMap<&str, (u64, Vec<&[u8]>)> = HashMap::new();
    // This commit's trace entries, as one chunk (see [`trace`]).
    let (mut trace_buf, mut traces, mut traced) = (Vec::new(), Vec::new(), 0);
    let step = {
        let (mut log, mut topics, mut cursors) = (None, None, None);
        let (mut kv, mut meta) = (None, None);
        table(&txn, &mut meta, META)?
            .insert(wal::SEQ_KEY, &seq.to_le_bytes()[..])
            .map_err(|e| s(&e))?;
        for &(b, encoded) in jobs {
            if let Some((consumer, expected)) = &b.cursor_at {
                let at = table(&txn, &mut cursors, CURSORS)?
                    .get(consumer.as_str())
                    .map_err(|e| s(&e))?
                    .map_or(0, |v| v.value());
                if at != *expected {
                    offsets.push(Err(format!(
                        "cursor {consumer:?} is at {at}, not {expected}"
                    )));
                    continue;
                }
            }
            let mut offs = Vec::with_capacity(b.appends.len());
            for ((topic, _), bytes) in b.appends.iter().zip(encoded) {
                let next = match lengths.get(topic.as_str()) {
                    Some(n) => *n,
                    None => table(&txn, &mut topics, TOPICS)?
                        .get(topic.as_str())
                        .map_err(|e| s(&e))?
                        .map(|v| v.value())
                        .unwrap_or(0),
                };
                appended
                    .entry(topic.as_str())
                    .or_insert_with(|| (next, Vec::new()))
                    .1
                    .push(bytes.as_slice());
                lengths.insert(topic, next + 1);
                offs.push(next);
            }
            for t in &b.traces {
                trace_entry(&mut trace_buf, t, &b.appends, &offs);
                trace::put_entry(&mut traces, &t.id, t.writer, &trace_buf);
                traced += 1;
            }
            for (consumer, offset) in &b.cursors {
                table(&txn, &mut cursors, CURSORS)?
                    .insert(consumer.as_str(), *offset)
                    .map_err(|e| s(&e))?;
            }
            for consumer in &b.drop_cursors {
                table(&txn, &mut cursors, CURSORS)?
                    .remove(consumer.as_str())
                    .map_err(|e| s(&e))?;
            }
            for ns in &b.drop_namespaces {
                // Keys of a namespace sort between (ns, "") and (ns + NUL, ...).
                let end = format!("{ns}\0");
                table(&txn, &mut kv, KV)?
                    .retain_in((ns.as_str(), "")..(end.as_str(), ""), |_, _| false)
                    .map_err(|e| s(&e))?;
            }
            for (key, value) in &b.meta {
                let meta = table(&txn, &mut meta, META)?;
                match value {
                    Some(v) => meta.insert(key.as_str(), v.as_slice()).map(|_| ()),
                    None => meta.remove(key.as_str()).map(|_| ()),
                }
                .map_err(|e| s(&e))?;
            }
            for (ns, key, value) in &b.kv {
                let kv = table(&txn, &mut kv, KV)?;
                match value {
                    Some(v) => kv
                        .insert((ns.as_str(), key.as_str()), v.as_slice())
                        .map(|_| ()),
                    None => kv.remove((ns.as_str(), key.as_str())).map(|_| ()),
                }
                .map_err(|e| s(&e))?;
            }
            offsets.push(Ok(offs));
        }
        for (topic, (first, records)) in &appended {
            let log = table(&txn, &mut log, LOG)?;
            let mut offset = *first;
            for chunk in chunks(records) {
                log.insert((*topic, offset), &*codec::entry(chunk))
                    .map_err(|e| s(&e))?;
                offset += chunk.len() as u64;
            }
        }
        for (topic, len) in &lengths {
            table(&txn, &mut topics, TOPICS)?
                .insert(*topic, *len)
                .map_err(|e| s(&e))?;
        }
        index.write(&txn, &traces, traced)?
    };
    let lengths = lengths
        .into_iter()
        .map(|(topic, len)| (topic.to_owned(), len))
        .collect();
    Ok((txn, (offsets, lengths, step)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::event::sample as ev;

    #[tokio::test]
    async fn trace_entries_name_the_records_of_their_write_per_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(WriteBatch {
                appends: vec![("in".into(), ev("i1")), ("out".into(), ev("o1"))],
                traces: vec![Trace {
                    id: "i1".into(),
                    writer: 0,
                    input: Some(0),
                    from: None,
                    outputs: vec![(1, br#"{"route":null}"#.to_vec())],
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        store
            .write(WriteBatch {
                appends: vec![("out".into(), ev("o2")), ("dlq".into(), ev("d1"))],
                traces: vec![Trace {
                    id: "i1".into(),
                    writer: 1,
                    input: None,
                    from: Some(("in".into(), 0)),
                    outputs: vec![(0, br#"{"route":"r"}"#.to_vec()), (1, b"{}".to_vec())],
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        let entries = store.trace("i1").unwrap();
        assert_eq!(
            entries,
            vec![
                serde_json::json!({ "from": ["in", 0], "links": [["out", 0, { "route": null }]] }),
                serde_json::json!({ "from": ["in", 0], "links": [["out", 1, { "route": "r" }], ["dlq", 0, {}]] }),
            ]
        );
        assert!(store.trace("i").unwrap().is_empty());
        store.close();
    }

    #[tokio::test]
    async fn appends_are_dense_per_topic_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.watch("a");
        let offs = store
            .write(WriteBatch {
                appends: vec![
                    ("a".into(), ev("1")),
                    ("b".into(), ev("2")),
                    ("a".into(), ev("3")),
                ],
                cursors: vec![("c".into(), 7)],
                kv: vec![("ns".into(), "k1".into(), Some(b"v".to_vec()))],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(offs, vec![0, 0, 1]);
        w.changed().await.unwrap();
        assert_eq!(*w.borrow(), 2);
        let offs = store
            .write(WriteBatch {
                appends: vec![("a".into(), ev("4"))],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(offs, vec![2]);
        store.close();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let recs = store.read("a", 1, 10).unwrap();
        let ids: Vec<_> = recs
            .iter()
            .map(|r| (r.offset, r.event.id.as_str()))
            .collect();
        assert_eq!(ids, vec![(1, "3"), (2, "4")]);
        assert_eq!(
            store.topics().unwrap(),
            vec![("a".into(), 3), ("b".into(), 1)]
        );
        assert_eq!(store.cursor("c").unwrap(), 7);
        assert_eq!(store.cursor("other").unwrap(), 0);
        assert_eq!(store.kv_get("ns", "k1").unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.read("a", 0, 1).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn kv_scan_stays_in_namespace_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kv = ["p/1", "p/2", "q/1"]
            .iter()
            .map(|k| ("ns".to_string(), k.to_string(), Some(k.as_bytes().to_vec())))
            .chain([("nt".to_string(), "p/3".to_string(), Some(vec![1]))])
            .collect();
        store
            .write(WriteBatch {
                kv,
                ..Default::default()
            })
            .await
            .unwrap();
        let got: Vec<_> = store
            .kv_scan("ns", "p/", 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, vec!["p/1", "p/2"]);
        assert_eq!(store.kv_scan("ns", "p/", 1).unwrap().len(), 1);
        store
            .write(WriteBatch {
                kv: vec![("ns".into(), "p/1".into(), None)],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(store.kv_get("ns", "p/1").unwrap(), None);

        // Dropping a namespace removes all of it and nothing of its neighbours.
        store
            .write(WriteBatch {
                drop_namespaces: vec!["ns".into()],
                meta: vec![("m".into(), Some(b"1".to_vec()))],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(store.kv_scan("ns", "", 10).unwrap().is_empty());
        assert_eq!(store.kv_get("nt", "p/3").unwrap(), Some(vec![1]));
        assert_eq!(store.meta_get("m").unwrap(), Some(b"1".to_vec()));
        store
            .write(WriteBatch {
                meta: vec![
                    ("held/a".into(), Some(vec![1])),
                    ("held/b".into(), Some(vec![2])),
                    ("helt".into(), Some(vec![3])),
                ],
                ..Default::default()
            })
            .await
            .unwrap();
        let keys: Vec<_> = store
            .meta_scan("held/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["held/a", "held/b"]);
    }

    /// A batch that moves cursor `c` from `from` to `to`, appending one
    /// event to `t`, written only if the cursor is at `from`.
    /// What a crash leaves: the store's files as they are on disk now,
    /// copied while it is open (no checkpoint, no clean close).
    fn crash_copy(from: &Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().unwrap();
        for name in ["switchyard.redb", "switchyard.wal"] {
            std::fs::copy(from.join(name), to.path().join(name)).unwrap();
        }
        to
    }

    const NEVER: Checkpoints = Checkpoints {
        bytes: u64::MAX,
        idle: Duration::from_secs(3600),
    };

    /// Everything a store holds that these tests write.
    fn contents(store: &Store) -> String {
        let topics = store.topics().unwrap();
        let mut out = format!("{topics:?}\n{:?}\n", store.cursors().unwrap());
        for (topic, len) in &topics {
            let ids: Vec<_> = store
                .read(topic, 0, *len as usize)
                .unwrap()
                .into_iter()
                .map(|r| (r.offset, r.event.id))
                .collect();
            out += &format!("{topic}: {ids:?}\n");
        }
        out += &format!("{:?}\n", store.kv_scan("ns", "", 1000).unwrap());
        out += &format!("{:?}\n", store.meta_scan("m").unwrap());
        for i in 0..40 {
            out += &format!("{:?}\n", store.trace(&format!("in{i}")).unwrap());
        }
        out
    }

    /// The `i`th write of the crash tests: an input, its output, the
    /// consumer's cursor, state, a router record and a trace entry.
    fn logged(i: u64) -> WriteBatch {
        WriteBatch {
            appends: vec![
                ("in".into(), ev(&format!("in{i}"))),
                ("out".into(), ev(&format!("out{i}"))),
            ],
            cursors: vec![("c".into(), i + 1)],
            cursor_at: Some(("c".into(), i)),
            kv: vec![
                (
                    "ns".into(),
                    format!("k{}", i % 3),
                    Some(i.to_le_bytes().to_vec()),
                ),
                ("ns".into(), format!("k{}", (i + 1) % 3), None),
            ],
            meta: vec![(format!("m{}", i % 4), Some(vec![i as u8]))],
            traces: vec![Trace {
                id: format!("in{i}"),
                writer: 1,
                input: Some(0),
                from: None,
                outputs: vec![(1, b"{\"plugin\":\"p\"}".to_vec())],
            }],
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_outlive_a_crash_through_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_checkpoints(dir.path(), NEVER).unwrap();
        for i in 0..30 {
            store.write(logged(i)).await.unwrap();
            if i == 12 {
                // Refused (the cursor is at 13): it must stay refused when
                // the log is applied again.
                let stale = store.write(logged(5)).await;
                assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
            }
        }
        assert!(store.wal_bytes() > 0, "no checkpoint was due");
        let before = contents(&store);
        assert!(before.contains("out29"), "{before}");

        let crashed = crash_copy(dir.path());
        let reopened = Store::open(crashed.path()).unwrap();
        assert_eq!(
            reopened.replayed(),
            31,
            "every commit since the open is in the log, the refused one too"
        );
        assert_eq!(contents(&reopened), before);
        assert_eq!(
            reopened.wal_bytes(),
            0,
            "the open checkpoints what it applied"
        );
        // It goes on where the log left off...
        let offs = reopened.write(logged(30)).await.unwrap();
        assert_eq!(offs, vec![30, 30]);
        let after = contents(&reopened);
        // ...and a second crash applies only what came after the first.
        let again = crash_copy(crashed.path());
        let reopened2 = Store::open(again.path()).unwrap();
        assert_eq!(reopened2.replayed(), 1);
        assert_eq!(contents(&reopened2), after);
        store.close();
    }

    async fn emptied(store: &Store) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.wal_bytes() > 0 {
            assert!(Instant::now() < deadline, "no checkpoint");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A failed commit is reported until one succeeds or for ten seconds
    /// (readiness must not keep a router out of traffic for good after a
    /// passing failure); a refusal until restart, for as long as it lasts.
    /// (The failures themselves are real in tests/store_unavailable.rs.)
    #[tokio::test]
    async fn a_failed_commit_is_reported_until_one_succeeds_or_for_ten_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.write_failure(), None);
        let set = |v: Failing| *lock(&store.inner.failing) = v;
        let now = Instant::now();
        set(Some(("disk full".into(), Some(now))));
        assert_eq!(store.write_failure().as_deref(), Some("disk full"));
        set(Some(("disk full".into(), now.checked_sub(FAILURE_SHOWN))));
        assert_eq!(store.write_failure(), None);
        set(Some(("sync failed".into(), None)));
        assert_eq!(store.write_failure().as_deref(), Some("sync failed"));
        // A commit that succeeds clears a passing failure.
        set(Some(("disk full".into(), Some(now))));
        store.write(logged(0)).await.unwrap();
        assert_eq!(store.write_failure(), None);
    }

    /// The first slow sync of the write-ahead log is logged at once, later
    /// ones together once per [`SLOW_SYNC_EVERY`]; quick ones never.
    #[test]
    fn slow_syncs_are_logged_at_once_then_counted_per_ten_seconds() {
        let (quick, slow) = (Duration::from_millis(2), SLOW_SYNC);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = SlowSyncs::default();
        assert_eq!(s.note(quick, at(0)), None);
        assert_eq!(s.note(slow, at(1)), Some((1, slow)));
        let longer = slow * 3;
        assert_eq!(s.note(longer, at(2)), None);
        assert_eq!(s.note(slow, at(3)), None);
        assert_eq!(s.note(quick, at(9_000)), None, "within ten seconds");
        assert_eq!(s.note(quick, at(10_001)), Some((2, longer)));
        assert_eq!(s.note(quick, at(30_000)), None, "nothing slow since");
        assert_eq!(s.note(slow, at(30_001)), Some((1, slow)));
    }

    /// Each commit's sync of the write-ahead log is timed.
    #[tokio::test]
    async fn commits_time_the_sync_of_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let syncs = crate::obs::metrics().store_wal_syncs.series([]);
        let before = syncs.count();
        store.write(logged(0)).await.unwrap();
        assert!(syncs.count() > before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_empty_the_log_by_size_when_idle_and_on_close() {
        // By size: a checkpoint after every commit.
        let dir = tempfile::tempdir().unwrap();
        let by_size = Checkpoints { bytes: 1, ..NEVER };
        let store = Store::open_with_checkpoints(dir.path(), by_size).unwrap();
        for i in 0..5 {
            store.write(logged(i)).await.unwrap();
        }
        // The writer answers first, then checkpoints.
        emptied(&store).await;
        let crashed = crash_copy(dir.path());
        let reopened = Store::open(crashed.path()).unwrap();
        assert_eq!(reopened.replayed(), 0, "nothing was left to apply");
        assert_eq!(contents(&reopened), contents(&store));
        store.close();

        // When idle.
        let dir = tempfile::tempdir().unwrap();
        let idle = Checkpoints {
            idle: Duration::from_millis(20),
            ..NEVER
        };
        let store = Store::open_with_checkpoints(dir.path(), idle).unwrap();
        store.write(logged(0)).await.unwrap();
        emptied(&store).await;
        let crashed = crash_copy(dir.path());
        assert_eq!(Store::open(crashed.path()).unwrap().replayed(), 0);

        // On close.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_checkpoints(dir.path(), NEVER).unwrap();
        store.write(logged(0)).await.unwrap();
        assert!(store.wal_bytes() > 0);
        let before = contents(&store);
        store.close();
        assert_eq!(store.wal_bytes(), 0);
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.replayed(), 0);
        assert_eq!(contents(&reopened), before);
    }

    fn step(from: u64, to: u64) -> WriteBatch {
        WriteBatch {
            appends: vec![("t".into(), ev(&format!("e{to}")))],
            cursors: vec![("c".into(), to)],
            cursor_at: Some(("c".into(), from)),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_one_after_another_commit_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Batches of different sizes, each moving the cursor on from the
        // one before, all queued before the first is answered.
        let chain: Vec<_> = (0..200u64)
            .map(|i| {
                let mut b = step(i * 10, i * 10 + 10);
                b.appends
                    .extend((0..i % 7 * 20).map(|n| ("u".into(), ev(&n.to_string()))));
                store.queue(b).unwrap()
            })
            .collect();
        for q in chain {
            q.written().await.unwrap();
        }
        assert_eq!(store.cursor("c").unwrap(), 2000);
        assert_eq!(store.topic_len("t").unwrap(), 200);
    }

    #[tokio::test]
    async fn a_write_is_refused_whole_when_its_cursor_moved_and_so_is_the_chain_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (from, to) in [(0, 10), (10, 20), (20, 30)] {
            store.write(step(from, to)).await.unwrap();
        }
        assert_eq!(store.cursor("c").unwrap(), 30);
        assert_eq!(store.topic_len("t").unwrap(), 3);

        // The first of a chain expects the cursor somewhere it is not: it
        // and every write counting on it write nothing, queued together or
        // not, while a write of another caller in between goes through.
        let refused: Vec<_> = [(25, 40), (40, 50)]
            .into_iter()
            .map(|(from, to)| store.queue(step(from, to)).unwrap())
            .collect();
        store
            .write(WriteBatch {
                appends: vec![("other".into(), ev("o"))],
                ..Default::default()
            })
            .await
            .unwrap();
        let late = store.write(step(50, 60)).await;
        for q in refused {
            let e = q.written().await.unwrap_err();
            assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        }
        let e = late.unwrap_err();
        assert!(
            e.to_string().contains("cursor \"c\" is at 30, not 50"),
            "{e}"
        );
        assert_eq!(store.cursor("c").unwrap(), 30);
        assert_eq!(store.topic_len("t").unwrap(), 3);
        assert_eq!(store.topic_len("other").unwrap(), 1);
        // An absent cursor is at 0.
        store
            .write(WriteBatch {
                cursors: vec![("new".into(), 5)],
                cursor_at: Some(("new".into(), 0)),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(store.cursor("new").unwrap(), 5);
    }

    #[test]
    fn trace_parts_are_the_json_serde_json_writes() {
        for text in [
            "domain.x",
            "",
            "q\"uote",
            "back\\slash",
            "tab\tand\u{1}",
            "é ✓ 😀",
        ] {
            let mut b = Vec::new();
            push_json_str(&mut b, text);
            assert_eq!(b, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut b = Vec::new();
            push_u64(&mut b, n);
            assert_eq!(b, n.to_string().into_bytes());
        }
    }

    #[tokio::test]
    async fn commits_and_writes_are_timed() {
        let m = crate::obs::metrics();
        let count = |f: &crate::obs::Family<crate::obs::Histogram, 1>| f.series(["ok"]).count();
        let (commits, writes) = (count(&m.store_commits), count(&m.store_writes));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..3 {
            store
                .write(WriteBatch {
                    appends: vec![("t".into(), ev(&i.to_string()))],
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        // Other tests write at the same time: at least ours were counted.
        assert!(count(&m.store_commits) >= commits + 3);
        assert!(count(&m.store_writes) >= writes + 3);
    }

    #[tokio::test]
    async fn concurrent_writers_get_distinct_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.write(WriteBatch {
                    appends: vec![("t".into(), ev(&i.to_string()))],
                    ..Default::default()
                })
                .await
                .unwrap()[0]
            }));
        }
        let mut offs = Vec::new();
        for t in tasks {
            offs.push(t.await.unwrap());
        }
        offs.sort();
        assert_eq!(offs, (0..50).collect::<Vec<u64>>());
        assert_eq!(store.topic_len("t").unwrap(), 50);
    }

    /// Log entries of `topic`: (first offset, records in the entry).
    fn entries(store: &Store, topic: &str) -> Vec<(u64, usize)> {
        let txn = store.inner.db.begin_read().unwrap();
        let table = txn.open_table(LOG).unwrap();
        table
            .range((topic, 0)..(topic, u64::MAX))
            .unwrap()
            .map(|item| {
                let (k, v) = item.unwrap();
                (k.value().1, codec::records(v.value()).unwrap().len())
            })
            .collect()
    }

    #[tokio::test]
    async fn a_commit_writes_each_topic_as_chunks_read_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Of three types in turn, for `read_matching`.
        let big = |id: String, i: usize| Event {
            data: format!("{{\"pad\":\"{}\"}}", "x".repeat(1000)),
            event_type: format!("type.{}", i % 3),
            ..ev(&id)
        };
        // 300 records of about 1 KiB to `t` among others to `u`: more than
        // one chunk's worth in one write, then small writes after it.
        let mut appends = Vec::new();
        for i in 0..300 {
            appends.push(("t".to_string(), big(format!("t{i}"), i)));
            if i % 100 == 0 {
                appends.push(("u".to_string(), ev(&format!("u{i}"))));
            }
        }
        let offs = store
            .write(WriteBatch {
                appends,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(offs.iter().filter(|&&o| o == 0).count(), 2);
        for (i, topic) in [(300, "t"), (301, "t"), (302, "u")] {
            let offs = store
                .write(WriteBatch {
                    appends: vec![(topic.into(), big(format!("{topic}{i}"), i))],
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(offs.len(), 1);
        }
        let t = entries(&store, "t");
        assert!(t.len() < 12, "300 records in a few chunks: {t:?}");
        assert!(t.len() >= 5, "chunks are bounded in size: {t:?}");
        assert_eq!(t.iter().map(|e| e.1).sum::<usize>(), 302);
        assert_eq!(entries(&store, "u"), vec![(0, 3), (3, 1)]);

        for from in 0..=303u64 {
            for limit in [1, 7, 1000] {
                if limit == 1000 && from % 17 != 0 {
                    continue;
                }
                let got: Vec<(u64, String)> = store
                    .read("t", from, limit)
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.offset, r.event.id))
                    .collect();
                let want: Vec<(u64, String)> = (from..302.min(from + limit as u64))
                    .map(|o| (o, format!("t{o}")))
                    .collect();
                assert_eq!(got, want, "from {from} limit {limit}");
                // Only the records of one type, the limit counting all.
                let (kept, next) = store
                    .read_matching("t", from, limit, |t| t == "type.1")
                    .unwrap();
                let got: Vec<(u64, String)> =
                    kept.into_iter().map(|r| (r.offset, r.event.id)).collect();
                let want: Vec<(u64, String)> =
                    want.into_iter().filter(|(o, _)| o % 3 == 1).collect();
                assert_eq!(got, want, "matching, from {from} limit {limit}");
                assert_eq!(next, 302.min(from + limit as u64).max(from), "from {from}");
            }
        }
        assert!(store.read("t", 5, 0).unwrap().is_empty());
        assert_eq!(store.read_matching("t", 5, 0, |_| true).unwrap().1, 5);
        let u: Vec<String> = store
            .read("u", 1, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.event.id)
            .collect();
        assert_eq!(u, vec!["u100", "u200", "u302"]);
    }

    #[tokio::test]
    async fn entries_written_one_record_each_or_as_json_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A log as earlier versions wrote it: an entry per record, some of
        // them JSON, next to a chunk.
        let b = Event {
            event_type: "other.type".into(),
            ..ev("b")
        };
        let (a, c, d) = (ev("a"), ev("c"), ev("d"));
        let txn = store.inner.db.begin_write().unwrap();
        {
            let mut log = txn.open_table(LOG).unwrap();
            let json = serde_json::to_vec(&a).unwrap();
            log.insert(("old", 0), json.as_slice()).unwrap();
            let (eb, ec) = (codec::encode(&b), codec::encode(&c));
            log.insert(("old", 1), &*codec::entry(&[&eb, &ec])).unwrap();
            log.insert(("old", 3), codec::encode(&d).as_slice())
                .unwrap();
            txn.open_table(TOPICS).unwrap().insert("old", 4).unwrap();
        }
        txn.commit().unwrap();
        let ids = |from, limit| -> Vec<(u64, String)> {
            store
                .read("old", from, limit)
                .unwrap()
                .into_iter()
                .map(|r| (r.offset, r.event.id))
                .collect()
        };
        assert_eq!(
            ids(0, 10),
            vec![
                (0, "a".into()),
                (1, "b".into()),
                (2, "c".into()),
                (3, "d".into())
            ]
        );
        assert_eq!(ids(2, 1), vec![(2, "c".into())]);
        assert_eq!(ids(3, 5), vec![(3, "d".into())]);
        assert!(ids(4, 5).is_empty());
        let offs = store
            .write(WriteBatch {
                appends: vec![("old".into(), ev("e")), ("old".into(), ev("f"))],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(offs, vec![4, 5]);
        assert_eq!(ids(3, 2), vec![(3, "d".into()), (4, "e".into())]);
        // Picking by type reads the type of either layout.
        let picked = |want: &str, from, limit| {
            let (recs, next) = store
                .read_matching("old", from, limit, |t| t == want)
                .unwrap();
            let ids: Vec<(u64, String)> =
                recs.into_iter().map(|r| (r.offset, r.event.id)).collect();
            (ids, next)
        };
        let of = |ids: &[(u64, &str)]| -> Vec<(u64, String)> {
            ids.iter().map(|&(o, id)| (o, id.to_string())).collect()
        };
        assert_eq!(picked("other.type", 0, 10), (of(&[(1, "b")]), 6));
        // The JSON-layout record is decoded to tell its type.
        assert_eq!(
            picked(&a.event_type, 0, 10),
            (of(&[(0, "a"), (2, "c"), (3, "d"), (4, "e"), (5, "f")]), 6)
        );
        assert_eq!(picked(&a.event_type, 0, 2), (of(&[(0, "a")]), 2));
        assert_eq!(picked("no such type", 7, 10), (vec![], 7));
    }
}
