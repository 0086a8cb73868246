//! The trace index: input event id → what the input became (one entry per
//! writer: `0` direct delivery, `1` the pipeline).
//!
//! Producers' ids are mostly random (UUIDv4), so an index keyed by id alone
//! puts each new entry on a different B-tree leaf: a commit of 256 inputs
//! rewrote about 256 leaf pages, and the pipeline ran at half its speed
//! with such ids (BENCHMARKS.md, "Seventh round"). So entries reach the
//! id-keyed index in large sorted runs, the way a log-structured merge tree
//! does it:
//!
//! * each commit writes its entries as one `trace_recent` chunk, under the
//!   next sequence number: one insert at the right edge of the tree, in the
//!   same transaction as the records the entries name;
//! * once [`RUN_ENTRIES`] entries are waiting, a thread of its own reads and
//!   sorts them by id (the writer thread would hold up every queued write
//!   meanwhile) and packs them into blocks of about [`BLOCK_BYTES`], each
//!   keyed by its first id; the writer copies the blocks into
//!   `trace_blocks` under the run's key (from its first chunk with
//!   entries), a few per commit (at least [`SLICE`] entries), inserts at the
//!   right edge of the tree again, one per block rather than one per entry;
//!   the last slice deletes the chunks it copied, leaving the newest one
//!   empty so that sequence numbers go on from it. Until then the chunks
//!   answer lookups as well. If the router stops halfway, the next seal
//!   takes the same chunks, clears what the stop left under their key and
//!   writes the run again;
//! * a lookup reads the older layouts (the id-keyed `trace` table, then the
//!   entry-keyed runs of `trace_runs`), then in each run the one block
//!   whose first id is the last at or before the id, then the chunks:
//!   newer places win;
//! * runs are merged so that a lookup's reads stay few: once [`FAN_IN`]
//!   neighbouring runs are of one level (how many merges their entries went
//!   through), the writer copies the newest entry of each id among them
//!   into a new run keyed just after them, in id order and in blocks, a
//!   slice a commit, and then deletes them, a few blocks a commit. The runs
//!   grow by levels, so their number grows with the logarithm of the
//!   entries. Every state in between answers lookups as the runs before it
//!   did (see [`Task`]), so a stop at any point loses nothing: the next
//!   start deletes the runs a finished merge left and finishes a merge
//!   that was cut short.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};

/// `(input event id, writer)` → entry: the first layout. Read, never
/// written any more.
pub(super) const LEGACY: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("trace");
/// `(first chunk of the run, input event id, writer)` → entry: runs of the
/// second layout, an insert per entry. Read, never written any more.
pub(super) const RUNS: TableDefinition<(u64, &str, u8), &[u8]> = TableDefinition::new("trace_runs");
/// Sequence number → the entries of one commit (layout in [`put_entry`]).
pub(super) const RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("trace_recent");
/// `(run, first input id in the block)` → a block of entries sorted by id
/// and writer (layout in [`put_entry`]); an id's entries are never split
/// across blocks. A run sealed from the chunks from sequence number `n` on
/// (the first with entries) is keyed `n << 8`; a merge's run is keyed one
/// above the newest run it merges, so it sorts after its group and before
/// any newer run.
pub(super) const BLOCKS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("trace_blocks");
/// Run → its level: 0 when sealed, one more per merge, written with the
/// run's last block. A run without one is a seal's, cut short.
pub(super) const RUN_LEVELS: TableDefinition<u64, u8> = TableDefinition::new("trace_run_levels");
/// Key 0 → every run with blocks in `trace_blocks`, oldest first (each key
/// a big-endian `u64`), written in the commit that changes that set: a
/// lookup reads this one row instead of finding the runs a descent each.
/// Lookups find the runs in `trace_blocks` themselves when it is absent.
pub(super) const RUN_LIST: TableDefinition<u8, &[u8]> = TableDefinition::new("trace_run_list");
/// The level of a run whose entries a merge copied into a newer run: it
/// is being deleted.
const DEAD: u8 = u8::MAX;
/// Added to the level a merge's new run will have while it is written, so
/// that a start after a stop finishes that merge rather than taking the
/// part written for a run of its own.
const BUILDING: u8 = 0x80;

/// Entries waiting in chunks before they are sorted into a run. A lookup
/// reads at most about this many from the chunks; the runs are one block
/// read each.
pub(super) const RUN_ENTRIES: usize = 16_384;
/// Entries copied into a run per commit, at least (and at least twice what
/// the commit adds): small, so that a commit of one event is not held up.
pub(super) const SLICE: usize = 64;
/// Neighbouring runs of one level merged into one. A lookup reads one block
/// of each run, a few microseconds, so a wide fan-in costs lookups little;
/// each entry is copied once a level, and the levels are fewer the wider it
/// is. With 16, a billion entries (61,000 seals) make four levels of at
/// most 15 runs.
pub(super) const FAN_IN: usize = 16;
/// A block is closed once it holds this many bytes (at the end of an id):
/// a lookup parses one block per run; a seal or a merge writes one B-tree
/// entry per block.
pub(super) const BLOCK_BYTES: usize = 4096;

/// How the index sizes its runs and its work per commit.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// Entries waiting in chunks before they are sealed into a run.
    pub(super) run_entries: usize,
    /// Entries a seal or a merge writes per commit, at least.
    pub(super) slice: usize,
    /// Runs of one level merged into one (below 2: never).
    pub(super) fan_in: usize,
    /// Bytes at which a block is closed.
    pub(super) block_bytes: usize,
}

impl Shape {
    pub(super) const DEFAULT: Shape = Shape {
        run_entries: RUN_ENTRIES,
        slice: SLICE,
        fan_in: FAN_IN,
        block_bytes: BLOCK_BYTES,
    };
}

/// The key of a run sealed from chunks from `first_chunk` on.
fn seal_key(first_chunk: u64) -> u64 {
    first_chunk.saturating_mul(256)
}

/// Appends one entry to a chunk or a block: `len id | writer | len entry`.
pub(super) fn put_entry(chunk: &mut Vec<u8>, id: &str, writer: u8, entry: &[u8]) {
    super::codec::put_len(chunk, id.len() as u64);
    chunk.extend_from_slice(id.as_bytes());
    chunk.push(writer);
    super::codec::put_len(chunk, entry.len() as u64);
    chunk.extend_from_slice(entry);
}

/// One entry of a chunk: input id, writer, entry.
pub(super) type Entry<'a> = (&'a str, u8, &'a [u8]);

/// The entries of a chunk or a block, in the order they were written.
pub(super) fn entries(chunk: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let mut r = super::codec::Reader::new(chunk);
    let mut out = Vec::new();
    while !r.is_empty() {
        let id = r.str("trace id")?;
        let writer = r.byte("trace writer")?;
        let n = r.len("trace entry")?;
        let entry = r
            .take(n)
            .ok_or("trace entry runs past the end of the chunk")?;
        out.push((id, writer, entry));
    }
    Ok(out)
}

/// The entries of chunk `seq`, or of a block of run `seq`; none, with a
/// warning, if it is damaged. The index only helps to follow events: a
/// chunk or block that cannot be read must not stop the store from
/// opening, other lookups, or the seals and merges after it (the seal or
/// merge that takes it leaves it out).
fn readable<'a>(what: &str, seq: u64, bytes: &'a [u8]) -> Vec<Entry<'a>> {
    entries(bytes).unwrap_or_else(|e| {
        tracing::warn!(seq, error = %e, "a trace index {what} is damaged; its entries are skipped");
        Vec::new()
    })
}

/// An entry, owned: id, writer, entry.
type Owned = (String, u8, Vec<u8>);

/// Sorted entries packed as blocks.
#[derive(Debug)]
struct Block {
    first: String,
    last: String,
    bytes: Vec<u8>,
    entries: usize,
}

/// Packs entries sorted by id and writer into blocks closed at
/// `block_bytes`, never between two entries of one id.
fn pack<'a>(sorted: impl IntoIterator<Item = Entry<'a>>, block_bytes: usize) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for (id, writer, entry) in sorted {
        if blocks
            .last()
            .is_none_or(|b| b.bytes.len() >= block_bytes && b.last != id)
        {
            blocks.push(Block {
                first: id.to_owned(),
                last: String::new(),
                bytes: Vec::with_capacity(block_bytes + 256),
                entries: 0,
            });
        }
        let Some(open) = blocks.last_mut() else {
            continue;
        };
        put_entry(&mut open.bytes, id, writer, entry);
        open.entries += 1;
        if open.last != id {
            open.last = id.to_owned();
        }
    }
    blocks
}

/// What `/metrics` shows of the index: its runs (a lookup reads each) and
/// the entries waiting in chunks (a lookup scans them).
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) runs: AtomicU64,
    pub(super) waiting: AtomicU64,
}

/// The writer thread's view of the index, carried from commit to commit.
pub(super) struct Index {
    db: Arc<Database>,
    stats: Arc<Stats>,
    /// Runs of the second layout: read by lookups, never changed.
    old_runs: usize,
    /// The finished runs, oldest first.
    runs: Vec<Run>,
    /// Every run with blocks, oldest first, as [`RUN_LIST`] holds it.
    listed: Vec<u64>,
    /// Merges and deletions under way, each a slice a commit.
    tasks: Vec<Task>,
    /// The key of the oldest chunk.
    oldest_chunk: Option<u64>,
    /// Its sizes, each at least 1 but the fan-in.
    shape: Shape,
    /// The key of the next chunk.
    next_seq: u64,
    /// Entries in chunks that no seal has taken yet.
    pending: usize,
    /// Entries in chunks, a seal's included until it ends (`stats.waiting`).
    in_chunks: usize,
    /// A seal being put together off the writer thread (reading and
    /// sorting thousands of entries would hold up every write queued).
    preparing: Option<Preparing>,
    /// The seal being copied, a slice a commit.
    seal: Option<Seal>,
}

/// A seal being put together: its thread, which holds the database open
/// (the writer waits for it before it lets go of the store), and its answer.
#[derive(Debug)]
struct Preparing {
    thread: std::thread::JoinHandle<()>,
    answer: mpsc::Receiver<Result<Seal, String>>,
}

impl Drop for Index {
    fn drop(&mut self) {
        if let Some(p) = self.preparing.take() {
            let _ = p.thread.join();
        }
    }
}

/// A run being copied into `trace_blocks`.
#[derive(Debug)]
pub(super) struct Seal {
    /// Its chunks, `from..=last`.
    from: u64,
    last: u64,
    /// The run's key, from its first chunk with entries: the chunk a seal
    /// leaves (empty) is where the next one starts reading, and a key of
    /// its own keeps the runs apart.
    key: u64,
    /// The newest entry per id and writer, sorted and packed.
    blocks: Vec<Block>,
    /// Entries in its chunks, repeats included.
    in_chunks: usize,
    /// How many blocks are in `trace_blocks` already.
    copied: usize,
}

/// A finished run as the writer sees it.
#[derive(Clone, Debug, PartialEq)]
struct Run {
    key: u64,
    /// [`DEAD`] once a merge has copied its entries into a newer run.
    level: u8,
    /// In a merge under way.
    busy: bool,
}

/// Work on the runs, done a slice a commit. Why lookups stay right in
/// every state in between (they read the runs oldest first, newer winning):
/// a merge writes a new run keyed one above the newest run of its group
/// (its target), which sorts after every run of the group and before any
/// newer run, so
///
/// * while the merge copies, the target holds, for the ids copied so far,
///   the newest entry of the group, and is read after the group;
/// * once the copy is done, it holds the newest entry of the group for
///   every id, so the group's runs can go, in any order.
#[derive(Clone, Debug, PartialEq)]
enum Task {
    /// Copying, for the ids after `after` in order, the newest entry in
    /// `group` (neighbouring runs of `level`, oldest first) into `into`.
    Merge {
        group: Vec<u64>,
        into: u64,
        level: u8,
        after: Option<String>,
    },
    /// Deleting runs a merge copied, one at a time.
    Delete(VecDeque<u64>),
}

/// What a commit changed in the index, applied once it is durable
/// ([`Index::committed`]).
#[derive(Debug, Default)]
pub(super) struct Step {
    /// Entries in this commit's chunk (none: no chunk).
    added: usize,
    /// How many of the seal's blocks are in `trace_blocks` with this commit.
    copied: Option<usize>,
    /// The runs and the tasks as this commit leaves them, if it worked on
    /// them.
    tasks: Option<(Vec<Run>, Vec<Task>)>,
    /// [`RUN_LIST`] as this commit wrote it, if it changed it.
    listed: Option<Vec<u64>>,
}

impl Index {
    /// The index as the store holds it (run once, when the store opens),
    /// sized by `shape`. Deletions a finished merge left are taken up
    /// again, and so are merges cut short; others are planned afresh.
    pub(super) fn load(db: Arc<Database>, stats: Arc<Stats>, shape: Shape) -> Result<Self, String> {
        let s = |e: &dyn std::fmt::Display| e.to_string();
        let mut index = Index {
            db,
            stats,
            old_runs: 0,
            runs: Vec::new(),
            listed: Vec::new(),
            tasks: Vec::new(),
            oldest_chunk: None,
            shape: Shape {
                run_entries: shape.run_entries.max(1),
                slice: shape.slice.max(1),
                fan_in: shape.fan_in,
                block_bytes: shape.block_bytes.max(1),
            },
            next_seq: 0,
            pending: 0,
            in_chunks: 0,
            preparing: None,
            seal: None,
        };
        let txn = index.db.begin_read().map_err(|e| s(&e))?;
        let recent = txn.open_table(RECENT).map_err(|e| s(&e))?;
        for item in recent.iter().map_err(|e| s(&e))? {
            let (k, v) = item.map_err(|e| s(&e))?;
            index.oldest_chunk.get_or_insert(k.value());
            index.next_seq = k.value() + 1;
            index.pending += readable("chunk", k.value(), v.value()).len();
        }
        index.old_runs = old_run_keys(&txn)?.len();
        let levels = txn.open_table(RUN_LEVELS).map_err(|e| s(&e))?;
        let mut building = Vec::new();
        index.listed = run_keys(&txn)?;
        let stored = listed_runs(&txn)?;
        for &key in &index.listed {
            let Some(level) = levels.get(key).map_err(|e| s(&e))?.map(|l| l.value()) else {
                // A seal's, cut short: that seal, done again, clears it.
                continue;
            };
            if level != DEAD && level & BUILDING != 0 {
                building.push((key, level & !BUILDING));
                continue;
            }
            index.runs.push(Run {
                key,
                level,
                busy: false,
            });
        }
        let mut dead: VecDeque<u64> = (index.runs.iter())
            .filter(|r| r.level == DEAD)
            .map(|r| r.key)
            .collect();
        for (into, level) in building {
            // Its group: the live runs just before it, as [`plan`] found
            // them.
            let at = index.runs.partition_point(|r| r.key < into);
            let group: Vec<usize> = (0..at)
                .rev()
                .filter(|&i| index.runs[i].level != DEAD)
                .take(index.shape.fan_in)
                .collect();
            let fan_in = index.shape.fan_in;
            let whole = fan_in >= 2 && group.len() == fan_in && level > 0;
            if whole
                && (group.iter()).all(|&i| !index.runs[i].busy && index.runs[i].level == level - 1)
            {
                for &i in &group {
                    index.runs[i].busy = true;
                }
                index.tasks.push(Task::Merge {
                    group: group.iter().rev().map(|&i| index.runs[i].key).collect(),
                    into,
                    level: level - 1,
                    after: None,
                });
            } else {
                // Not a merge this start would make: deleted, and in the
                // list until then, so that no merge takes its key.
                let run = Run {
                    key: into,
                    level: DEAD,
                    busy: false,
                };
                index.runs.insert(at, run);
                dead.push_back(into);
            }
        }
        if !dead.is_empty() {
            index.tasks.push(Task::Delete(dead));
        }
        if stored.as_ref() != Some(&index.listed) {
            // Written by a build that did not keep it, or never written.
            let txn = index.db.begin_write().map_err(|e| s(&e))?;
            put_list(&txn, &index.listed)?;
            txn.commit().map_err(|e| s(&e))?;
        }
        index.plan();
        index.in_chunks = index.pending;
        index.show();
        Ok(index)
    }

    /// Writes `chunk` (this commit's entries, `added` of them) and this
    /// commit's share of a seal and of the merges and deletions, in `txn`.
    /// What was written counts only once the commit is durable
    /// ([`Index::committed`]).
    pub(super) fn write(
        &mut self,
        txn: &WriteTransaction,
        chunk: &[u8],
        added: usize,
    ) -> Result<Step, String> {
        let s = |e: &dyn std::fmt::Display| e.to_string();
        let mut step = Step {
            added,
            ..Default::default()
        };
        if self.seal.is_none() {
            self.seal = self.prepared();
        }
        if added == 0 && self.seal.is_none() {
            // Opening a table costs redb work at commit: an ingest commit
            // without entries leaves these alone.
            return Ok(step);
        }
        let mut recent = txn.open_table(RECENT).map_err(|e| s(&e))?;
        if added > 0 {
            recent.insert(self.next_seq, chunk).map_err(|e| s(&e))?;
        }
        // At least twice what this commit added, so that sealing always
        // outpaces arrivals and the chunks stay near `run_entries`.
        let slice = self.shape.slice.max(added.saturating_mul(2));
        let mut listed = std::borrow::Cow::Borrowed(self.listed.as_slice());
        if let Some(seal) = &self.seal {
            let key = seal.key;
            let mut blocks = txn.open_table(BLOCKS).map_err(|e| s(&e))?;
            if seal.copied == 0 {
                // What a stop left of this seal: blocks cut at other ids
                // would hide entries from lookups.
                blocks
                    .retain_in(run_range(key, ""), |_, _| false)
                    .map_err(|e| s(&e))?;
                if !seal.blocks.is_empty() {
                    list_add(&mut listed, key);
                }
            }
            let (mut end, mut copied) = (seal.copied, 0);
            while end < seal.blocks.len() && (copied == 0 || copied < slice) {
                let block = &seal.blocks[end];
                blocks
                    .insert((key, block.first.as_str()), block.bytes.as_slice())
                    .map_err(|e| s(&e))?;
                copied += block.entries;
                end += 1;
            }
            if end == seal.blocks.len() {
                // The newest chunk stays, empty, so that sequence numbers go
                // on from it; the next seal starts at it.
                recent
                    .retain_in(seal.from..seal.last, |_, _| false)
                    .map_err(|e| s(&e))?;
                recent.insert(seal.last, &[][..]).map_err(|e| s(&e))?;
                if !seal.blocks.is_empty() {
                    let mut levels = txn.open_table(RUN_LEVELS).map_err(|e| s(&e))?;
                    levels.insert(key, 0).map_err(|e| s(&e))?;
                }
            }
            step.copied = Some(end);
        }
        if added > 0 && !self.tasks.is_empty() {
            // Twice what arrives, at least: each level's merges then
            // outpace the runs the level below makes.
            step.tasks = Some(self.work(txn, slice, &mut listed)?);
        }
        if let std::borrow::Cow::Owned(listed) = listed
            && listed != self.listed
        {
            put_list(txn, &listed)?;
            step.listed = Some(listed);
        }
        Ok(step)
    }

    /// One slice, of about `budget` entries, of each task: the runs and
    /// tasks as they are after it.
    /// `listed` gains the runs it starts to write and loses those it
    /// deletes.
    fn work(
        &self,
        txn: &WriteTransaction,
        budget: usize,
        listed: &mut std::borrow::Cow<'_, [u64]>,
    ) -> Result<(Vec<Run>, Vec<Task>), String> {
        let s = |e: &dyn std::fmt::Display| e.to_string();
        let mut blocks = txn.open_table(BLOCKS).map_err(|e| s(&e))?;
        let mut levels = txn.open_table(RUN_LEVELS).map_err(|e| s(&e))?;
        let mut list = self.runs.clone();
        let mut tasks = Vec::with_capacity(self.tasks.len());
        for task in &self.tasks {
            match task {
                Task::Merge {
                    group,
                    into,
                    level,
                    after,
                } => {
                    if after.is_none() {
                        levels
                            .insert(*into, (level + 1) | BUILDING)
                            .map_err(|e| s(&e))?;
                        // What a stop left of this merge: blocks cut at
                        // other ids would hide entries once the group goes.
                        blocks
                            .retain_in(run_range(*into, ""), |_, _| false)
                            .map_err(|e| s(&e))?;
                        list_add(listed, *into);
                    }
                    let slice = Slice {
                        group,
                        into: *into,
                        after: after.as_deref(),
                        budget,
                        block_bytes: self.shape.block_bytes,
                    };
                    if let Some(next) = slice.merge(&mut blocks)? {
                        tasks.push(Task::Merge {
                            group: group.clone(),
                            into: *into,
                            level: *level,
                            after: Some(next),
                        });
                        continue;
                    }
                    let merged = Run {
                        key: *into,
                        level: level + 1,
                        busy: false,
                    };
                    levels.insert(merged.key, merged.level).map_err(|e| s(&e))?;
                    for key in group {
                        levels.insert(*key, DEAD).map_err(|e| s(&e))?;
                    }
                    for run in list.iter_mut().filter(|r| group.contains(&r.key)) {
                        run.busy = false;
                        run.level = DEAD;
                    }
                    let at = list.partition_point(|r| r.key < merged.key);
                    list.insert(at, merged);
                    tasks.push(Task::Delete(group.iter().copied().collect()));
                }
                Task::Delete(queue) => {
                    let mut queue = queue.clone();
                    // Blocks hold a few dozen entries each: this outpaces
                    // the merges' writes.
                    let n = budget.div_ceil(8);
                    if let Some(&run) = queue.front()
                        && delete_blocks(&mut blocks, run, n)?
                    {
                        levels.remove(run).map_err(|e| s(&e))?;
                        list.retain(|r| r.key != run);
                        if listed.contains(&run) {
                            listed.to_mut().retain(|&k| k != run);
                        }
                        queue.pop_front();
                    }
                    if !queue.is_empty() {
                        tasks.push(Task::Delete(queue));
                    }
                }
            }
        }
        Ok((list, tasks))
    }

    /// Starts the merges [`plan`] finds.
    fn plan(&mut self) {
        // The next seal's run is keyed from a chunk after the oldest.
        let limit = self.oldest_chunk.map(|c| seal_key(c.saturating_add(1)));
        let merges = plan(&mut self.runs, self.shape.fan_in, limit);
        self.tasks.extend(merges);
    }

    /// Mirrors the runs and the waiting entries into the gauges.
    fn show(&self) {
        let runs = self.old_runs + self.runs.len();
        (self.stats.runs).store(runs as u64, Ordering::Relaxed);
        (self.stats.waiting).store(self.in_chunks as u64, Ordering::Relaxed);
    }

    /// A seal put together off the writer thread, once it is ready.
    fn prepared(&mut self) -> Option<Seal> {
        let result = match self.preparing.as_ref()?.answer.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return None,
            Err(mpsc::TryRecvError::Disconnected) => Err("the seal's thread died".into()),
        };
        if let Some(p) = self.preparing.take() {
            // It has answered: this returns at once.
            let _ = p.thread.join();
        }
        match result {
            Ok(seal) => Some(seal),
            Err(e) => {
                // Nothing was written; the next commit asks again.
                tracing::warn!(error = %e, "could not sort trace entries into a run");
                self.pending = self.shape.run_entries;
                None
            }
        }
    }

    /// Applies a durable commit's [`Step`], plans the merges it made
    /// possible, and asks for the next seal when enough entries wait.
    /// (After a failed commit there is nothing to apply: its slices are
    /// written again by the next.)
    pub(super) fn committed(&mut self, step: Step) {
        if step.added > 0 {
            self.oldest_chunk.get_or_insert(self.next_seq);
            self.next_seq += 1;
        }
        self.pending += step.added;
        self.in_chunks += step.added;
        let mut changed = false;
        if let Some(listed) = step.listed {
            self.listed = listed;
        }
        if let Some((runs, tasks)) = step.tasks {
            (self.runs, self.tasks, changed) = (runs, tasks, true);
        }
        if let (Some(seal), Some(copied)) = (&mut self.seal, step.copied) {
            seal.copied = copied;
            if copied == seal.blocks.len() {
                let key = seal.key;
                if !seal.blocks.is_empty() && self.runs.last().is_none_or(|r| r.key < key) {
                    self.runs.push(Run {
                        key,
                        level: 0,
                        busy: false,
                    });
                    changed = true;
                }
                self.in_chunks = self.in_chunks.saturating_sub(seal.in_chunks);
                self.oldest_chunk = Some(seal.last);
                self.seal = None;
            }
        }
        if changed {
            self.plan();
        }
        self.show();
        if self.seal.is_none() && self.preparing.is_none() && self.pending >= self.shape.run_entries
        {
            // Every chunk there is, up to the one just written.
            let (db, last) = (self.db.clone(), self.next_seq.saturating_sub(1));
            let block_bytes = self.shape.block_bytes;
            let (tx, rx) = mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("trace-seal".into())
                .spawn(move || {
                    let _ = tx.send(start(&db, last, block_bytes));
                });
            match spawned {
                Ok(thread) => {
                    self.preparing = Some(Preparing { thread, answer: rx });
                    self.pending = 0;
                }
                Err(e) => tracing::warn!(error = %e, "could not start sorting trace entries"),
            }
        }
    }
}

/// A merge of each `fan_in` neighbouring runs of one level that no task
/// holds, oldest first, into a run keyed one above the newest of them;
/// their runs are marked busy. Keys from `limit` on are a seal's.
///
/// Dead runs (being deleted) do not part neighbours: a dead run's entries
/// are older than its merge's run, which comes after it, so a merge across
/// it is as right as one beside it, and waiting for its deletion could
/// leave older runs of a level behind, never to be merged, while newer
/// ones are.
fn plan(runs: &mut [Run], fan_in: usize, limit: Option<u64>) -> Vec<Task> {
    let mut merges = Vec::new();
    if fan_in < 2 {
        return merges;
    }
    let live: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].level != DEAD).collect();
    let mut w = 0;
    while w + fan_in <= live.len() {
        let window = &live[w..w + fan_in];
        let level = runs[window[0]].level;
        let newest = window[fan_in - 1];
        let next = runs.get(newest + 1).map(|r| r.key).or(limit);
        // There is room unless a chunk's runs were merged 255 times.
        let into = (runs[newest].key.checked_add(1)).filter(|k| next.is_none_or(|n| *k < n));
        let mergeable = level < BUILDING - 1
            && window
                .iter()
                .all(|&i| !runs[i].busy && runs[i].level == level);
        let Some(into) = into.filter(|_| mergeable) else {
            w += 1;
            continue;
        };
        for &i in window {
            runs[i].busy = true;
        }
        merges.push(Task::Merge {
            group: window.iter().map(|&i| runs[i].key).collect(),
            into,
            level,
            after: None,
        });
        w += fan_in;
    }
    merges
}

/// Both ends of a range of `trace_blocks` keys.
type BlockRange<'a> = (Bound<(u64, &'a str)>, Bound<(u64, &'a str)>);

/// The keys of run `run`'s blocks from `from` on.
fn run_range(run: u64, from: &str) -> BlockRange<'_> {
    let upper = match run.checked_add(1) {
        Some(next) => Bound::Excluded((next, "")),
        None => Bound::Unbounded,
    };
    (Bound::Included((run, from)), upper)
}

/// The first id of run `run`'s block that holds `id`'s entries, if any.
fn block_of(
    blocks: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    run: u64,
    id: &str,
) -> Result<Option<String>, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let mut range = blocks.range((run, "")..=(run, id)).map_err(|e| s(&e))?;
    match range.next_back() {
        Some(item) => Ok(Some(item.map_err(|e| s(&e))?.0.value().1.to_owned())),
        None => Ok(None),
    }
}

/// One slice of a merge: the newest entry in `group` of each id after
/// `after`, into run `into`, reading about `budget` entries.
struct Slice<'a> {
    group: &'a [u64],
    into: u64,
    after: Option<&'a str>,
    budget: usize,
    block_bytes: usize,
}

impl Slice<'_> {
    /// Writes the slice: where the next one starts (the last id it wrote),
    /// or none once the merge is done.
    fn merge(&self, blocks: &mut Table<(u64, &str), &[u8]>) -> Result<Option<String>, String> {
        let per_run = (self.budget / self.group.len()).max(1);
        let mut read = Vec::with_capacity(self.group.len());
        // A run read up to its limit holds more after what was read: the
        // slice ends at the first such end, so that no id past it is
        // merged without all of its entries.
        let mut end: Option<String> = None;
        for &run in self.group {
            let (entries, more) = self.read(blocks, run, per_run)?;
            if more
                && let Some((id, _, _)) = entries.last()
                && end.as_ref().is_none_or(|e| id < e)
            {
                end = Some(id.clone());
            }
            read.push(entries);
        }
        let mut newest: BTreeMap<(String, u8), Vec<u8>> = BTreeMap::new();
        for entries in read {
            for (id, writer, entry) in entries {
                if end.as_ref().is_some_and(|e| id > *e) {
                    break;
                }
                // Newer runs come later and win.
                newest.insert((id, writer), entry);
            }
        }
        let packed = pack(
            (newest.iter()).map(|((id, w), e)| (id.as_str(), *w, e.as_slice())),
            self.block_bytes,
        );
        // Before the end, whole blocks only (the rest is read again by the
        // next slice), but at least one.
        let n = match end {
            None => packed.len(),
            Some(_) => (packed.iter())
                .take_while(|b| b.bytes.len() >= self.block_bytes)
                .count()
                .max(1),
        };
        for block in &packed[..n.min(packed.len())] {
            blocks
                .insert((self.into, block.first.as_str()), block.bytes.as_slice())
                .map_err(|e| e.to_string())?;
        }
        match end {
            None => Ok(None),
            Some(_) => Ok(packed.get(n - 1).map(|b| b.last.clone())),
        }
    }

    /// At least `n` entries of run `run` after `self.after` (whole blocks),
    /// and whether it has more.
    fn read(
        &self,
        blocks: &Table<(u64, &str), &[u8]>,
        run: u64,
        n: usize,
    ) -> Result<(Vec<Owned>, bool), String> {
        let s = |e: &dyn std::fmt::Display| e.to_string();
        let from = match self.after {
            Some(after) => block_of(blocks, run, after)?.unwrap_or_default(),
            None => String::new(),
        };
        let mut out: Vec<Owned> = Vec::new();
        let mut range = blocks.range(run_range(run, &from)).map_err(|e| s(&e))?;
        for item in range.by_ref() {
            let (_, v) = item.map_err(|e| s(&e))?;
            for (id, writer, entry) in readable("block", run, v.value()) {
                if self.after.is_none_or(|a| id > a) {
                    out.push((id.to_owned(), writer, entry.to_vec()));
                }
            }
            if out.len() >= n {
                break;
            }
        }
        let more = range.next().is_some();
        Ok((out, more))
    }
}

/// Deletes up to `n` of run `run`'s blocks, from its start: whether it is
/// gone.
fn delete_blocks(
    blocks: &mut Table<(u64, &str), &[u8]>,
    run: u64,
    n: usize,
) -> Result<bool, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let n = n.max(1);
    let mut keys = Vec::with_capacity(n + 1);
    for item in blocks
        .range(run_range(run, ""))
        .map_err(|e| s(&e))?
        .take(n + 1)
    {
        let (k, _) = item.map_err(|e| s(&e))?;
        keys.push(k.value().1.to_owned());
    }
    if keys.len() <= n {
        blocks
            .retain_in(run_range(run, ""), |_, _| false)
            .map_err(|e| s(&e))?;
        return Ok(true);
    }
    let (lower, _) = run_range(run, "");
    let upper = Bound::Excluded((run, keys[n].as_str()));
    blocks
        .retain_in((lower, upper), |_, _| false)
        .map_err(|e| s(&e))?;
    Ok(false)
}

/// A seal of the chunks up to `last`, in sequence order: the newest entry
/// per id and writer, sorted and packed into blocks of `block_bytes`.
/// (Entries are sorted where they lie in a copy of the chunks: no
/// allocation per entry.)
fn start(db: &Database, last: u64, block_bytes: usize) -> Result<Seal, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let (mut from, mut key) = (None, None);
    let mut chunks: Vec<(u64, Vec<u8>)> = Vec::new();
    {
        let txn = db.begin_read().map_err(|e| s(&e))?;
        let recent = txn.open_table(RECENT).map_err(|e| s(&e))?;
        for item in recent.range(..=last).map_err(|e| s(&e))? {
            let (k, v) = item.map_err(|e| s(&e))?;
            from.get_or_insert(k.value());
            if !v.value().is_empty() {
                key.get_or_insert(seal_key(k.value()));
                chunks.push((k.value(), v.value().to_vec()));
            }
        }
    }
    let mut all: Vec<Entry<'_>> = Vec::new();
    for (seq, bytes) in &chunks {
        all.extend(readable("chunk", *seq, bytes));
    }
    let in_chunks = all.len();
    // A stable sort keeps an id's entries in the order they were written:
    // the last of each (id, writer) is the newest.
    all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut newest: Vec<Entry<'_>> = Vec::with_capacity(all.len());
    for e in all {
        match newest.last_mut() {
            Some(n) if (n.0, n.1) == (e.0, e.1) => *n = e,
            _ => newest.push(e),
        }
    }
    Ok(Seal {
        from: from.unwrap_or(last),
        last,
        key: key.unwrap_or(seal_key(last)),
        blocks: pack(newest, block_bytes),
        in_chunks,
        copied: 0,
    })
}

/// The runs of a table keyed by run first, oldest first, found by
/// `first_at(from)`, the run of the first key at or after run `from`.
fn distinct_runs(
    mut first_at: impl FnMut(u64) -> Result<Option<u64>, String>,
) -> Result<Vec<u64>, String> {
    let (mut keys, mut from) = (Vec::new(), 0u64);
    while let Some(run) = first_at(from)? {
        keys.push(run);
        match run.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(keys)
}

/// Every run of `trace_blocks`, oldest first.
fn run_keys(txn: &ReadTransaction) -> Result<Vec<u64>, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let blocks = txn.open_table(BLOCKS).map_err(|e| s(&e))?;
    distinct_runs(
        |from| match blocks.range((from, "")..).map_err(|e| s(&e))?.next() {
            Some(item) => Ok(Some(item.map_err(|e| s(&e))?.0.value().0)),
            None => Ok(None),
        },
    )
}

/// `key` added to `listed` where it sorts, if it is not there.
fn list_add(listed: &mut std::borrow::Cow<'_, [u64]>, key: u64) {
    if let Err(at) = listed.binary_search(&key) {
        listed.to_mut().insert(at, key);
    }
}

/// Writes `listed` as [`RUN_LIST`].
fn put_list(txn: &WriteTransaction, listed: &[u64]) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let bytes: Vec<u8> = listed.iter().flat_map(|k| k.to_be_bytes()).collect();
    let mut table = txn.open_table(RUN_LIST).map_err(|e| s(&e))?;
    table.insert(0, bytes.as_slice()).map_err(|e| s(&e))?;
    Ok(())
}

/// [`RUN_LIST`], if it is there and whole (a row of another length is
/// left to [`run_keys`], with a warning).
fn listed_runs(txn: &ReadTransaction) -> Result<Option<Vec<u64>>, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let table = txn.open_table(RUN_LIST).map_err(|e| s(&e))?;
    let Some(row) = table.get(0).map_err(|e| s(&e))? else {
        return Ok(None);
    };
    let bytes = row.value();
    if bytes.len() % 8 != 0 {
        tracing::warn!(
            bytes = bytes.len(),
            "the trace index's list of runs is damaged; lookups find the runs themselves"
        );
        return Ok(None);
    }
    let keys = bytes.chunks_exact(8).map(|b| {
        let mut k = [0u8; 8];
        k.copy_from_slice(b);
        u64::from_be_bytes(k)
    });
    Ok(Some(keys.collect()))
}

/// Every run of the second layout (`trace_runs`), oldest first.
fn old_run_keys(txn: &ReadTransaction) -> Result<Vec<u64>, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let runs = txn.open_table(RUNS).map_err(|e| s(&e))?;
    distinct_runs(
        |from| match runs.range((from, "", 0)..).map_err(|e| s(&e))?.next() {
            Some(item) => Ok(Some(item.map_err(|e| s(&e))?.0.value().0)),
            None => Ok(None),
        },
    )
}

/// The entries of input `id`, one per writer in writer order: from the
/// older layouts, then each run, then the chunks, newer places winning.
pub(super) fn lookup(txn: &ReadTransaction, id: &str) -> Result<Vec<Vec<u8>>, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let mut found: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let legacy = txn.open_table(LEGACY).map_err(|e| s(&e))?;
    for item in legacy.range((id, 0)..=(id, u8::MAX)).map_err(|e| s(&e))? {
        let (k, v) = item.map_err(|e| s(&e))?;
        found.insert(k.value().1, v.value().to_vec());
    }
    let runs = txn.open_table(RUNS).map_err(|e| s(&e))?;
    for run in old_run_keys(txn)? {
        for item in runs
            .range((run, id, 0)..=(run, id, u8::MAX))
            .map_err(|e| s(&e))?
        {
            let (k, v) = item.map_err(|e| s(&e))?;
            found.insert(k.value().2, v.value().to_vec());
        }
    }
    // Most runs, and up to some 16,000 entries waiting in chunks, do not
    // hold the id: only blocks and chunks whose bytes contain it (as an
    // entry's id they do) are parsed.
    let finder = memchr::memmem::Finder::new(id.as_bytes());
    let blocks = txn.open_table(BLOCKS).map_err(|e| s(&e))?;
    let runs = match listed_runs(txn)? {
        Some(runs) => runs,
        None => run_keys(txn)?,
    };
    for run in runs {
        let Some(item) = (blocks.range((run, "")..=(run, id)))
            .map_err(|e| s(&e))?
            .next_back()
        else {
            continue;
        };
        let (_, v) = item.map_err(|e| s(&e))?;
        if finder.find(v.value()).is_none() {
            continue;
        }
        for (entry_id, writer, entry) in readable("block", run, v.value()) {
            if entry_id == id {
                found.insert(writer, entry.to_vec());
            }
        }
    }
    let recent = txn.open_table(RECENT).map_err(|e| s(&e))?;
    for item in recent.iter().map_err(|e| s(&e))? {
        let (k, v) = item.map_err(|e| s(&e))?;
        if finder.find(v.value()).is_none() {
            continue;
        }
        for (entry_id, writer, entry) in readable("chunk", k.value(), v.value()) {
            if entry_id == id {
                found.insert(writer, entry.to_vec());
            }
        }
    }
    Ok(found.into_values().collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use redb::{ReadableDatabase, ReadableTableMetadata};

    use super::*;
    use crate::event::sample as ev;
    use crate::store::{Store, Trace, WriteBatch};

    /// Runs of `run_entries`, copied `slice` a commit, never merged, in
    /// blocks of an entry or two (so that lookups and merges cross blocks).
    fn unmerged(run_entries: usize, slice: usize) -> Shape {
        Shape {
            run_entries,
            slice,
            fan_in: 0,
            block_bytes: 60,
        }
    }

    /// Every entry in `trace_blocks`: (run, id, writer), in key order.
    fn in_blocks(store: &Store) -> Vec<(u64, String, u8)> {
        let txn = store.inner.db.begin_read().unwrap();
        let blocks = txn.open_table(BLOCKS).unwrap();
        let mut out = Vec::new();
        for item in blocks.iter().unwrap() {
            let (k, v) = item.unwrap();
            let (run, first) = k.value();
            let entries = entries(v.value()).unwrap();
            assert_eq!(entries[0].0, first, "a block is keyed by its first id");
            for (id, writer, _) in entries {
                out.push((run, id.to_owned(), writer));
            }
        }
        out
    }

    /// A UUID-like id from `n`, so that sorted and written order differ.
    fn id(n: u64) -> String {
        format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// One write of an input on topic `in` with `traces` (id, writer).
    async fn write(store: &Store, traces: &[(String, u8)]) {
        write_to(store, "in", traces).await
    }

    /// One write of an input on `topic` with `traces` (id, writer).
    async fn write_to(store: &Store, topic: &str, traces: &[(String, u8)]) {
        let appends = vec![(topic.to_string(), ev("x"))];
        let traces = traces
            .iter()
            .map(|(id, writer)| Trace {
                id: id.clone(),
                writer: *writer,
                input: Some(0),
                ..Default::default()
            })
            .collect();
        store
            .write(WriteBatch {
                appends,
                traces,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// Every id's entries as the store answers them: the offset of the
    /// input each writer last wrote for it.
    fn answers(store: &Store, ids: &[String]) -> HashMap<String, Vec<u64>> {
        ids.iter()
            .map(|id| {
                let offsets = store
                    .trace(id)
                    .unwrap()
                    .iter()
                    .map(|e| e["from"][1].as_u64().unwrap())
                    .collect();
                (id.clone(), offsets)
            })
            .collect()
    }

    fn counts(store: &Store) -> (usize, usize) {
        let txn = store.inner.db.begin_read().unwrap();
        let recent = txn.open_table(RECENT).unwrap().len().unwrap();
        (recent as usize, in_blocks(store).len())
    }

    /// Commits writes without entries (to another topic) until `done`
    /// holds for (chunks, entries in runs): a seal is sorted off the writer
    /// thread and copied a slice a commit.
    async fn commit_until(store: &Store, done: impl Fn((usize, usize)) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done(counts(store)) {
            assert!(
                std::time::Instant::now() < deadline,
                "still {:?} (chunks, entries in runs)",
                counts(store)
            );
            store
                .write(WriteBatch {
                    appends: vec![("tick".into(), ev("t"))],
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }

    /// Each id's expected answer is the offsets in `want`; and the list of
    /// runs names every run with blocks (lookups read no other).
    fn check(store: &Store, want: &HashMap<String, BTreeMap<u8, u64>>, when: &str) {
        let txn = store.inner.db.begin_read().unwrap();
        let (listed, found) = (listed_runs(&txn).unwrap(), run_keys(&txn).unwrap());
        let listed = listed.unwrap_or_else(|| panic!("no list of runs {when}"));
        for run in &found {
            assert!(
                listed.contains(run),
                "run {run} not listed {when}: {listed:?}"
            );
        }
        let ids: Vec<String> = want.keys().cloned().collect();
        let got = answers(store, &ids);
        for (i, by_writer) in want {
            let expected: Vec<u64> = by_writer.values().copied().collect();
            assert_eq!(got[i], expected, "id {i} {when}");
        }
    }

    #[tokio::test]
    async fn entries_are_found_in_chunks_while_sealing_and_in_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_runs(dir.path(), unmerged(6, 2)).unwrap();
        // The model: id → per writer, the offset of the input it last wrote.
        let mut want: HashMap<String, BTreeMap<u8, u64>> = HashMap::new();
        for n in 0..60u64 {
            // Two new ids a write; every fifth write writes an older id
            // again (its newest entry must win) and one for the other writer.
            let mut traces = vec![(id(2 * n), 1), (id(2 * n + 1), 1)];
            if n % 5 == 4 {
                traces.push((id(n), 1));
                traces.push((id(n + 1), 0));
            }
            write(&store, &traces).await;
            for (i, w) in &traces {
                want.entry(i.clone()).or_default().insert(*w, n);
            }
            check(&store, &want, &format!("after write {n}"));
        }
        // Runs end up with nearly all of it, and the chunks with what no
        // seal has taken yet (fewer than 6 entries) and the empty newest.
        commit_until(&store, |(chunks, runs)| runs >= 120 && chunks <= 7).await;
        check(&store, &want, "once sealed");
        assert!(store.trace("no-such-id").unwrap().is_empty());
        store.close();
    }

    #[tokio::test]
    async fn a_seal_cut_short_starts_again_from_its_first_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..40).map(id).collect();
        {
            // Nine chunks, and a run cut short: the first blocks of their
            // entries copied under the first chunk's key, as a stop halfway
            // through a seal of the nine leaves them.
            let store = Store::open_with_runs(dir.path(), unmerged(1000, 1)).unwrap();
            for i in &ids[..9] {
                write(&store, &[(i.clone(), 1)]).await;
            }
            let txn = store.inner.db.begin_write().unwrap();
            {
                let recent = txn.open_table(RECENT).unwrap();
                let mut sorted = Vec::new();
                for item in recent.iter().unwrap() {
                    let (_, v) = item.unwrap();
                    for (i, w, e) in entries(v.value()).unwrap() {
                        sorted.push((i.to_owned(), w, e.to_vec()));
                    }
                }
                sorted.sort();
                let mut blocks = txn.open_table(BLOCKS).unwrap();
                // Cut at another id than the seal done again cuts its
                // blocks (in a router, because that seal takes more
                // entries): that one puts two entries in each.
                let stale = sorted[1..5]
                    .iter()
                    .map(|(i, w, e)| (i.as_str(), *w, e.as_slice()));
                for b in pack(stale, 1000) {
                    blocks
                        .insert((0, b.first.as_str()), b.bytes.as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
            assert_eq!(in_blocks(&store).len(), 4);
            store.close();
        }
        let store = Store::open_with_runs(dir.path(), unmerged(8, 64)).unwrap();
        for i in &ids[9..] {
            write(&store, &[(i.clone(), 1)]).await;
        }
        commit_until(&store, |(_, runs)| runs >= 32).await;
        let want = ids
            .iter()
            .enumerate()
            .map(|(n, i)| (i.clone(), BTreeMap::from([(1, n as u64)])))
            .collect();
        check(&store, &want, "after the reopen");
        // The partial run was cleared and written again under the same
        // key, not beside it: each id is in the runs once.
        let mut seen = std::collections::HashSet::new();
        for (run, i, w) in in_blocks(&store) {
            assert!(seen.insert((i.clone(), w)), "{i} twice in the runs");
            assert_eq!(run % 256, 0, "a seal's key");
        }
        assert!(seen.len() >= 32);
        store.close();
    }

    #[tokio::test]
    async fn sequence_numbers_go_on_after_a_seal_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..15).map(id).collect();
        {
            let store = Store::open_with_runs(dir.path(), unmerged(4, 100)).unwrap();
            for i in &ids[..8] {
                write(&store, &[(i.clone(), 1)]).await;
            }
            // Both seals done: only the empty newest chunk is left.
            commit_until(&store, |(chunks, runs)| runs == 8 && chunks == 1).await;
            assert_eq!(store.trace_index(), (2, 0), "(runs, waiting)");
            store.close();
        }
        let store = Store::open_with_runs(dir.path(), unmerged(4, 100)).unwrap();
        assert_eq!(store.trace_index(), (2, 0), "(runs, waiting) as loaded");
        let mut want: HashMap<String, BTreeMap<u8, u64>> = HashMap::new();
        for (n, i) in ids.iter().enumerate().take(12) {
            want.insert(i.clone(), BTreeMap::from([(1, n as u64)]));
        }
        for i in &ids[8..12] {
            write(&store, &[(i.clone(), 1)]).await;
        }
        // Written again after the reopen: its newer entry (offset 12) wins
        // over the one in the first run (offset 0), first from a chunk...
        write(&store, &[(ids[0].clone(), 1)]).await;
        want.insert(ids[0].clone(), BTreeMap::from([(1, 12)]));
        commit_until(&store, |(chunks, runs)| runs == 12 && chunks == 2).await;
        assert_eq!(store.trace_index(), (3, 1), "(runs, waiting)");
        check(&store, &want, "with the newer entry in a chunk");
        // ...then from a later run.
        for (n, i) in ids.iter().enumerate().skip(12) {
            write(&store, &[(i.clone(), 1)]).await;
            want.insert(i.clone(), BTreeMap::from([(1, n as u64 + 1)]));
        }
        commit_until(&store, |(chunks, runs)| runs == 16 && chunks == 1).await;
        assert_eq!(store.trace_index(), (4, 0), "(runs, waiting)");
        check(&store, &want, "with the newer entry in a later run");
        store.close();
    }

    /// Each run's level as stored, and its entries.
    fn runs_as_stored(store: &Store) -> BTreeMap<u64, (Option<u8>, usize)> {
        let txn = store.inner.db.begin_read().unwrap();
        let levels = txn.open_table(RUN_LEVELS).unwrap();
        let mut out: BTreeMap<u64, (Option<u8>, usize)> = BTreeMap::new();
        for (run, _, _) in in_blocks(store) {
            let level = levels.get(run).unwrap().map(|l| l.value());
            out.entry(run).or_insert((level, 0)).1 += 1;
        }
        for item in levels.iter().unwrap() {
            let (k, v) = item.unwrap();
            assert!(
                out.contains_key(&k.value()),
                "level {} of no run",
                v.value()
            );
        }
        out
    }

    /// Writes with one entry each (for ids `tick-…`, on another topic, so
    /// the inputs' offsets stay as they were) until `done` holds for the
    /// runs as stored: merges and deletions go a slice a commit.
    async fn tick_until(
        store: &Store,
        ticks: &mut u64,
        done: impl Fn(&BTreeMap<u64, (Option<u8>, usize)>) -> bool,
    ) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done(&runs_as_stored(store)) {
            assert!(
                std::time::Instant::now() < deadline,
                "still {:?}",
                runs_as_stored(store)
            );
            *ticks += 1;
            write_to(store, "tick", &[(format!("tick-{ticks}"), 1)]).await;
        }
    }

    #[tokio::test]
    async fn runs_are_merged_by_levels_and_every_answer_holds_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let shape = Shape {
            run_entries: 4,
            slice: 1,
            fan_in: 3,
            block_bytes: 100,
        };
        let store = Store::open_with_runs(dir.path(), shape).unwrap();
        let mut want: HashMap<String, BTreeMap<u8, u64>> = HashMap::new();
        for n in 0..240u64 {
            // A new id a write; every third write also writes an older id
            // again, for either writer, so that newer runs must win.
            let mut traces = vec![(id(n), 1)];
            if n % 3 == 2 {
                traces.push((id(n * 7 % (n + 1)), (n % 2) as u8));
            }
            // Now and then a run's worth of older ids in one write: its
            // seal takes one chunk, the next seal writes under the same
            // key, and a merge just before it has no room for a new run.
            if n % 7 == 0 {
                traces.extend((1..5).map(|k| (id(n * k / 5), 0)));
            }
            write(&store, &traces).await;
            for (i, w) in &traces {
                want.entry(i.clone()).or_default().insert(*w, n);
            }
            if n % 5 == 0 {
                check(&store, &want, &format!("after write {n}"));
            }
        }
        check(&store, &want, "after the writes");
        store.close();
        drop(store);
        // Reopened with seals out of reach, so that the ticks below make
        // no runs. Settled: nothing being deleted, and fewer than three
        // finished runs of any level. (A run without a level is a seal's
        // that the close cut short: it waits for that seal, out of reach.)
        let store = Store::open_with_runs(
            dir.path(),
            Shape {
                run_entries: 100_000,
                ..shape
            },
        )
        .unwrap();
        check(&store, &want, "reopened");
        let mut ticks = 0;
        tick_until(&store, &mut ticks, |runs| {
            let mut per_level: BTreeMap<u8, usize> = BTreeMap::new();
            for level in runs.values().filter_map(|(l, _)| *l) {
                *per_level.entry(level).or_default() += 1;
            }
            !per_level.contains_key(&DEAD) && per_level.values().all(|&n| n < 3)
        })
        .await;
        check(&store, &want, "once merged");
        let txn = store.inner.db.begin_read().unwrap();
        // The deleted runs have left the list too.
        assert_eq!(listed_runs(&txn).unwrap(), Some(run_keys(&txn).unwrap()));
        drop(txn);
        let runs = runs_as_stored(&store);
        let finished: Vec<u8> = runs.values().filter_map(|(l, _)| *l).collect();
        let top = finished.iter().copied().max().unwrap();
        assert!(top >= 2, "merges of merged runs: {runs:?}");
        // Far fewer runs than seals (one per four or so of the entries).
        assert!(finished.len() <= 2 * (top as usize + 1), "{runs:?}");
        assert!(runs.len() <= finished.len() + 1, "{runs:?}");
        assert_eq!(store.trace_index().0 as usize, finished.len());
        store.close();
        drop(store);
        // As loaded again.
        let store = Store::open_with_runs(dir.path(), shape).unwrap();
        check(&store, &want, "after a reopen");
        store.close();
    }

    #[tokio::test]
    async fn a_merge_or_its_deletions_cut_short_are_taken_up_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut want: HashMap<String, BTreeMap<u8, u64>> = HashMap::new();
        // Four runs, never merged; some ids written again in later runs,
        // and for the other writer.
        let before = {
            let store = Store::open_with_runs(dir.path(), unmerged(4, 64)).unwrap();
            for n in 0..4u64 {
                // A run's worth in one write, sealed before the next.
                let mut traces: Vec<(String, u8)> =
                    (4 * n..4 * n + 4).map(|k| (id(k), 1)).collect();
                if n > 0 {
                    traces.push((id(2 * n - 1), (n % 2) as u8));
                    traces.push((id(3 * n - 2), 1));
                }
                write(&store, &traces).await;
                for (i, w) in &traces {
                    want.entry(i.clone()).or_default().insert(*w, n);
                }
                commit_until(&store, |_| store.trace_index().1 == 0).await;
            }
            let before = runs_as_stored(&store);
            assert_eq!(before.len(), 4, "{before:?}");
            assert_eq!(store.trace_index(), (4, 0), "(runs, waiting)");
            store.close();
            before
        };
        // The first four merge into a new run after the fourth.
        let group: Vec<u64> = before.keys().take(4).copied().collect();
        let merged = group[3] + 1;
        assert!(before.keys().all(|k| *k != merged), "{before:?}");
        // Merged a slice of one entry per run a commit (seals never start:
        // the ticks stay in chunks). Stopped halfway through the copy...
        let merging = Shape {
            run_entries: 1000,
            slice: 4,
            fan_in: 4,
            block_bytes: 60,
        };
        let mut ticks = 0;
        {
            let store = Store::open_with_runs(dir.path(), merging).unwrap();
            tick_until(&store, &mut ticks, |runs| {
                runs.get(&merged).is_some_and(|(_, n)| *n >= 4)
            })
            .await;
            let runs = runs_as_stored(&store);
            assert_eq!(runs[&merged].0, Some(1 | BUILDING), "{runs:?}");
            assert!(!runs.values().any(|(l, _)| *l == Some(DEAD)));
            check(&store, &want, "halfway through the copy");
            store.close();
        }
        // ...then, taken up from the start into the same run, in blocks
        // cut at other ids (a merge done again may cut them elsewhere),
        // stopped halfway through deleting.
        {
            let wider = Shape {
                block_bytes: 400,
                slice: 64,
                ..merging
            };
            let store = Store::open_with_runs(dir.path(), wider).unwrap();
            check(&store, &want, "reopened halfway through the copy");
            tick_until(&store, &mut ticks, |runs| {
                runs.values().filter(|(l, _)| *l == Some(DEAD)).count() == 3
            })
            .await;
            let runs = runs_as_stored(&store);
            assert_eq!(runs[&merged].0, Some(1), "{runs:?}");
            // One of the group gone, the merged run added.
            assert_eq!(runs.len(), before.len(), "{runs:?}");
            check(&store, &want, "halfway through deleting");
            store.close();
        }
        let store = Store::open_with_runs(dir.path(), merging).unwrap();
        check(&store, &want, "reopened halfway through deleting");
        tick_until(&store, &mut ticks, |runs| runs.len() == before.len() - 3).await;
        let runs = runs_as_stored(&store);
        assert_eq!(runs.keys().next(), Some(&merged));
        assert_eq!(runs[&merged].0, Some(1));
        assert!(
            runs.values().skip(1).all(|(l, _)| *l == Some(0)),
            "{runs:?}"
        );
        let left = runs.len() as u64;
        assert_eq!(store.trace_index(), (left, ticks), "(runs, waiting)");
        check(&store, &want, "merged into one run");
        store.close();
    }

    #[tokio::test]
    async fn entries_of_the_old_layout_are_still_found_and_newer_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_runs(dir.path(), unmerged(4, 4)).unwrap();
        {
            let txn = store.inner.db.begin_write().unwrap();
            let mut legacy = txn.open_table(LEGACY).unwrap();
            legacy
                .insert(("old", 0), br#"{"from":["in",7],"links":[]}"#.as_slice())
                .unwrap();
            legacy
                .insert(("old", 1), br#"{"from":["in",8],"links":[]}"#.as_slice())
                .unwrap();
            drop(legacy);
            // The second layout: a run with an entry per row, newer than
            // the first layout.
            let mut runs = txn.open_table(RUNS).unwrap();
            runs.insert((3, "old", 1), br#"{"from":["in",9],"links":[]}"#.as_slice())
                .unwrap();
            runs.insert((3, "mid", 0), br#"{"from":["in",5],"links":[]}"#.as_slice())
                .unwrap();
            drop(runs);
            txn.commit().unwrap();
        }
        let old = ["old".to_string(), "mid".to_string()];
        assert_eq!(answers(&store, &old)["old"], vec![7, 9]);
        assert_eq!(answers(&store, &old)["mid"], vec![5]);
        write(&store, &[("old".into(), 1)]).await;
        write(&store, &[("mid".into(), 0)]).await;
        assert_eq!(answers(&store, &old)["old"], vec![7, 0]);
        assert_eq!(answers(&store, &old)["mid"], vec![1]);
        // Sealed into a run of blocks, the new entries still win.
        for n in 2..8 {
            write(&store, &[(id(n), 1)]).await;
        }
        commit_until(&store, |(chunks, in_runs)| chunks == 1 && in_runs == 8).await;
        assert_eq!(answers(&store, &old)["old"], vec![7, 0]);
        assert_eq!(answers(&store, &old)["mid"], vec![1]);
        // Two runs sealed here; the old layout's run was written after the
        // open, which is when runs of that layout are counted...
        assert_eq!(store.trace_index(), (2, 0), "(runs, waiting)");
        store.close();
        drop(store);
        // ...so the next open counts it too, and the answers hold.
        let store = Store::open_with_runs(dir.path(), unmerged(4, 4)).unwrap();
        assert_eq!(
            store.trace_index(),
            (3, 0),
            "(runs of both layouts, waiting)"
        );
        assert_eq!(answers(&store, &old)["old"], vec![7, 0]);
        assert_eq!(answers(&store, &old)["mid"], vec![1]);
        store.close();
    }

    #[tokio::test]
    async fn lookups_read_the_list_of_runs_which_an_open_writes_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_runs(dir.path(), unmerged(4, 4)).unwrap();
        let mut want: HashMap<String, BTreeMap<u8, u64>> = HashMap::new();
        for n in 0..8u64 {
            write(&store, &[(id(n), 1)]).await;
            want.entry(id(n)).or_default().insert(1, n);
        }
        commit_until(&store, |(chunks, in_runs)| chunks == 1 && in_runs == 8).await;
        check(&store, &want, "sealed");
        let ids: Vec<String> = (0..8).map(id).collect();
        let all: HashMap<String, Vec<u64>> = (0..8).map(|n| (id(n), vec![n])).collect();
        let set_list = |row: Option<&[u8]>| {
            let txn = store.inner.db.begin_write().unwrap();
            let mut table = txn.open_table(RUN_LIST).unwrap();
            match row {
                Some(row) => table.insert(0, row).map(|_| ()),
                None => table.remove(0).map(|_| ()),
            }
            .unwrap();
            drop(table);
            txn.commit().unwrap();
        };
        let runs = run_keys(&store.inner.db.begin_read().unwrap()).unwrap();
        assert_eq!(runs.len(), 2, "{runs:?}");
        // Without it (a store an older build wrote), or damaged, lookups
        // find the runs themselves.
        set_list(None);
        assert_eq!(answers(&store, &ids), all);
        set_list(Some(&[1, 2, 3]));
        assert_eq!(answers(&store, &ids), all);
        // Out of date (naming the first run only), it is what lookups go
        // by: the second run's ids are not found...
        set_list(Some(&runs[0].to_be_bytes()));
        let got = answers(&store, &ids);
        assert_eq!(got.values().filter(|v| v.is_empty()).count(), 4, "{got:?}");
        store.close();
        drop(store);
        // ...until the next open writes it again.
        let store = Store::open_with_runs(dir.path(), unmerged(4, 4)).unwrap();
        check(&store, &want, "reopened");
        store.close();
    }

    #[tokio::test]
    async fn a_damaged_chunk_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..6).map(id).collect();
        {
            let store = Store::open_with_runs(dir.path(), unmerged(1000, 64)).unwrap();
            for i in &ids[..3] {
                write(&store, &[(i.clone(), 1)]).await;
            }
            // Chunk 1 (the second id's) damaged on disk.
            let txn = store.inner.db.begin_write().unwrap();
            txn.open_table(RECENT)
                .unwrap()
                .insert(1, [0x05, b'a'].as_slice())
                .unwrap();
            txn.commit().unwrap();
            store.close();
        }
        // The store opens, the other entries are found, and a seal over
        // the damaged chunk goes through (dropping it).
        let store = Store::open_with_runs(dir.path(), unmerged(4, 64)).unwrap();
        for i in &ids[3..] {
            write(&store, &[(i.clone(), 1)]).await;
        }
        let mut want: HashMap<String, BTreeMap<u8, u64>> = HashMap::new();
        for (n, i) in ids.iter().enumerate().filter(|(n, _)| *n != 1) {
            want.insert(i.clone(), BTreeMap::from([(1, n as u64)]));
        }
        check(&store, &want, "with a damaged chunk");
        assert!(store.trace(&ids[1]).unwrap().is_empty());
        // The seal after the fifth id takes ids 0, 2, 3 and 4; the sixth waits.
        commit_until(&store, |(chunks, runs)| runs == 4 && chunks == 2).await;
        check(&store, &want, "after the seal that dropped it");
        store.close();
    }

    #[test]
    fn merges_take_free_neighbours_of_one_level_into_a_key_after_them() {
        let run = |key, level| Run {
            key,
            level,
            busy: false,
        };
        let merge = |group: Vec<u64>, into, level| Task::Merge {
            group,
            into,
            level,
            after: None,
        };
        // Oldest first; a window of three is never split or reused. The
        // new run goes just after the newest of its group.
        let mut runs = vec![
            run(0, 1),
            run(10, 1),
            run(20, 1),
            run(30, 1),
            run(40, 0),
            run(50, 0),
            run(60, 0),
        ];
        assert_eq!(
            plan(&mut runs, 3, Some(70)),
            vec![
                merge(vec![0, 10, 20], 21, 1),
                merge(vec![40, 50, 60], 61, 0)
            ]
        );
        assert!(
            runs.iter()
                .filter(|r| r.busy)
                .map(|r| r.key)
                .eq([0, 10, 20, 40, 50, 60])
        );
        assert_eq!(
            plan(&mut runs, 3, Some(70)),
            vec![],
            "busy runs are not merged twice"
        );
        // No room after the newest (before the next run, or the next
        // seal's): not merged.
        let mut runs = vec![run(0, 0), run(1, 0), run(2, 0), run(256, 0), run(257, 0)];
        assert_eq!(plan(&mut runs, 2, Some(258)), vec![merge(vec![1, 2], 3, 0)]);
        let mut runs = vec![run(u64::MAX - 1, 0), run(u64::MAX, 0)];
        assert_eq!(plan(&mut runs, 2, None), vec![]);
        // Dead runs are never merged, and do not part neighbours.
        let mut runs = vec![run(0, 0), run(5, DEAD), run(10, 0), run(15, 0)];
        assert_eq!(plan(&mut runs, 2, None), vec![merge(vec![0, 10], 11, 0)]);
        let mut runs = vec![run(0, 0), run(1, 0), run(2, DEAD), run(3, DEAD)];
        assert_eq!(plan(&mut runs, 2, None), vec![], "no room before the dead");
        let mut runs = vec![run(0, 0), run(1, 0)];
        assert_eq!(plan(&mut runs, 0, None), vec![], "fan-in 0: never");
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let mut chunk = Vec::new();
        put_entry(&mut chunk, "id-1", 1, b"{}");
        put_entry(&mut chunk, "id-2", 0, br#"{"a":1}"#);
        assert_eq!(
            entries(&chunk).unwrap(),
            vec![("id-1", 1, &b"{}"[..]), ("id-2", 0, &br#"{"a":1}"#[..])]
        );
        for cut in 0..chunk.len() {
            // Every proper prefix that ends inside an entry is refused.
            let r = entries(&chunk[..cut]);
            if cut != 0 && cut != 9 {
                assert!(r.is_err(), "prefix of {cut} bytes");
            }
        }
        assert!(entries(&[0x05, b'a', 0xff]).is_err());
        assert!(entries(&[0x02, 0xff, 0xfe, 0, 0]).is_err());
    }
}
