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
//!   meanwhile), and the writer copies them into `trace_runs` under the
//!   first chunk's sequence number, at least [`SLICE`] entries per commit,
//!   so that each commit's share is a run of inserts at the right edge too;
//!   the last slice deletes the chunks it copied, leaving the newest one
//!   empty so that sequence numbers go on from it. Until then the chunks
//!   answer lookups as well. If the router stops halfway, the next seal
//!   starts from the same first chunk and writes the same keys again;
//! * a lookup reads the old id-keyed `trace` table (entries written before
//!   this layout), each run, then the chunks: newer places win.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

/// `(input event id, writer)` → entry: the layout before runs. Read, never
/// written any more.
pub(super) const LEGACY: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("trace");
/// Sequence number → the entries of one commit (layout in [`put_entry`]).
pub(super) const RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("trace_recent");
/// `(first chunk of the run, input event id, writer)` → entry.
pub(super) const RUNS: TableDefinition<(u64, &str, u8), &[u8]> = TableDefinition::new("trace_runs");

/// Entries waiting in chunks before they are sorted into a run. A lookup
/// reads at most about this many from the chunks; the runs are one point
/// lookup each.
pub(super) const RUN_ENTRIES: usize = 16_384;
/// Entries copied into the run being sealed per commit, at least (and at
/// least twice what the commit adds): small, so that a commit of one event
/// is not held up by it.
pub(super) const SLICE: usize = 64;

/// Appends one entry to a chunk: `len id | writer | len entry`.
pub(super) fn put_entry(chunk: &mut Vec<u8>, id: &str, writer: u8, entry: &[u8]) {
    super::codec::put_len(chunk, id.len() as u64);
    chunk.extend_from_slice(id.as_bytes());
    chunk.push(writer);
    super::codec::put_len(chunk, entry.len() as u64);
    chunk.extend_from_slice(entry);
}

/// One entry of a chunk: input id, writer, entry.
pub(super) type Entry<'a> = (&'a str, u8, &'a [u8]);

/// The entries of a chunk, in the order they were written.
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

/// The entries of chunk `seq`; none, with a warning, if it is damaged. The
/// index only helps to follow events: a chunk that cannot be read must not
/// stop the store from opening, other lookups, or the seals after it (the
/// seal that takes it deletes it).
fn readable(seq: u64, chunk: &[u8]) -> Vec<Entry<'_>> {
    entries(chunk).unwrap_or_else(|e| {
        tracing::warn!(chunk = seq, error = %e, "a trace index chunk is damaged; its entries are skipped");
        Vec::new()
    })
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
    /// The newest run's key: a seal under it adds no run.
    newest_run: Option<u64>,
    run_entries: usize,
    slice: usize,
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

/// A run being copied into `trace_runs`.
#[derive(Debug)]
pub(super) struct Seal {
    /// Its chunks, `first..=last`; `first` is the run's key.
    first: u64,
    last: u64,
    /// Sorted by id and writer, one per pair (the newest).
    entries: Vec<(String, u8, Vec<u8>)>,
    /// Entries in its chunks, repeats included.
    in_chunks: usize,
    /// How many are in `trace_runs` already.
    copied: usize,
}

/// What a commit changed in the index, applied once it is durable
/// ([`Index::committed`]).
#[derive(Debug, Default)]
pub(super) struct Step {
    /// Entries in this commit's chunk (none: no chunk).
    added: usize,
    /// How many of the seal's entries are in `trace_runs` with this commit.
    copied: Option<usize>,
}

impl Index {
    /// The index as the store holds it (run once, when the store opens),
    /// with runs of `run_entries` copied at least `slice` a commit.
    pub(super) fn load(
        db: Arc<Database>,
        stats: Arc<Stats>,
        run_entries: usize,
        slice: usize,
    ) -> Result<Self, String> {
        let mut index = Index {
            db,
            stats,
            newest_run: None,
            run_entries: run_entries.max(1),
            slice: slice.max(1),
            next_seq: 0,
            pending: 0,
            in_chunks: 0,
            preparing: None,
            seal: None,
        };
        let txn = index.db.begin_read().map_err(|e| e.to_string())?;
        let recent = txn.open_table(RECENT).map_err(|e| e.to_string())?;
        for item in recent.iter().map_err(|e| e.to_string())? {
            let (k, v) = item.map_err(|e| e.to_string())?;
            index.next_seq = k.value() + 1;
            index.pending += readable(k.value(), v.value()).len();
        }
        let runs = run_keys(&txn).map_err(|e| e.to_string())?;
        index.newest_run = runs.last().copied();
        index.stats.runs.store(runs.len() as u64, Ordering::Relaxed);
        index.in_chunks = index.pending;
        index
            .stats
            .waiting
            .store(index.in_chunks as u64, Ordering::Relaxed);
        Ok(index)
    }

    /// Writes `chunk` (this commit's entries, `added` of them) and this
    /// commit's share of a seal, in `txn`. What was written counts only
    /// once the commit is durable ([`Index::committed`]).
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
        let Some(seal) = &self.seal else {
            return Ok(step);
        };
        // At least twice what this commit added, so that sealing always
        // outpaces arrivals and the chunks stay near `run_entries`.
        let slice = self.slice.max(added.saturating_mul(2));
        let end = (seal.copied + slice).min(seal.entries.len());
        let mut runs = txn.open_table(RUNS).map_err(|e| s(&e))?;
        for (id, writer, entry) in &seal.entries[seal.copied..end] {
            runs.insert((seal.first, id.as_str(), *writer), entry.as_slice())
                .map_err(|e| s(&e))?;
        }
        if end == seal.entries.len() {
            // The newest chunk stays, empty, so that sequence numbers go on
            // from it; the next seal starts at it.
            recent
                .retain_in(seal.first..seal.last, |_, _| false)
                .map_err(|e| s(&e))?;
            recent.insert(seal.last, &[][..]).map_err(|e| s(&e))?;
        }
        step.copied = Some(end);
        Ok(step)
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
                self.pending = self.run_entries;
                None
            }
        }
    }

    /// Applies a durable commit's [`Step`], and asks for the next seal when
    /// enough entries wait. (After a failed commit there is nothing to
    /// apply: its slice of the seal is copied again by the next.)
    pub(super) fn committed(&mut self, step: Step) {
        if step.added > 0 {
            self.next_seq += 1;
        }
        self.pending += step.added;
        self.in_chunks += step.added;
        if let (Some(seal), Some(copied)) = (&mut self.seal, step.copied) {
            seal.copied = copied;
            if copied == seal.entries.len() {
                if self.newest_run != Some(seal.first) {
                    self.newest_run = Some(seal.first);
                    self.stats.runs.fetch_add(1, Ordering::Relaxed);
                }
                self.in_chunks = self.in_chunks.saturating_sub(seal.in_chunks);
                self.seal = None;
            }
        }
        self.stats
            .waiting
            .store(self.in_chunks as u64, Ordering::Relaxed);
        if self.seal.is_none() && self.preparing.is_none() && self.pending >= self.run_entries {
            // Every chunk there is, up to the one just written.
            let (db, last) = (self.db.clone(), self.next_seq.saturating_sub(1));
            let (tx, rx) = mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("trace-seal".into())
                .spawn(move || {
                    let _ = tx.send(start(&db, last));
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

/// A seal of the chunks up to `last`, in sequence order: the newest entry
/// per id and writer, sorted.
fn start(db: &Database, last: u64) -> Result<Seal, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let txn = db.begin_read().map_err(|e| s(&e))?;
    let recent = txn.open_table(RECENT).map_err(|e| s(&e))?;
    let mut newest: BTreeMap<(String, u8), Vec<u8>> = BTreeMap::new();
    let (mut first, mut in_chunks) = (None, 0);
    for item in recent.range(..=last).map_err(|e| s(&e))? {
        let (k, v) = item.map_err(|e| s(&e))?;
        first.get_or_insert(k.value());
        for (id, writer, entry) in readable(k.value(), v.value()) {
            newest.insert((id.to_owned(), writer), entry.to_vec());
            in_chunks += 1;
        }
    }
    Ok(Seal {
        first: first.unwrap_or(last),
        last,
        entries: newest
            .into_iter()
            .map(|((id, writer), entry)| (id, writer, entry))
            .collect(),
        in_chunks,
        copied: 0,
    })
}

/// The key of every run, oldest first: each is the first key at or after
/// the end of the one before.
fn run_keys(txn: &ReadTransaction) -> Result<Vec<u64>, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let runs = txn.open_table(RUNS).map_err(|e| s(&e))?;
    let (mut keys, mut from) = (Vec::new(), 0u64);
    while let Some(item) = runs.range((from, "", 0)..).map_err(|e| s(&e))?.next() {
        let run = item.map_err(|e| s(&e))?.0.value().0;
        keys.push(run);
        match run.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(keys)
}

/// The entries of input `id`, one per writer in writer order: from the old
/// table, then each run, then the chunks, newer places winning.
pub(super) fn lookup(txn: &ReadTransaction, id: &str) -> Result<Vec<Vec<u8>>, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let mut found: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let legacy = txn.open_table(LEGACY).map_err(|e| s(&e))?;
    for item in legacy.range((id, 0)..=(id, u8::MAX)).map_err(|e| s(&e))? {
        let (k, v) = item.map_err(|e| s(&e))?;
        found.insert(k.value().1, v.value().to_vec());
    }
    let runs = txn.open_table(RUNS).map_err(|e| s(&e))?;
    for run in run_keys(txn)? {
        for item in runs
            .range((run, id, 0)..=(run, id, u8::MAX))
            .map_err(|e| s(&e))?
        {
            let (k, v) = item.map_err(|e| s(&e))?;
            found.insert(k.value().2, v.value().to_vec());
        }
    }
    let recent = txn.open_table(RECENT).map_err(|e| s(&e))?;
    for item in recent.iter().map_err(|e| s(&e))? {
        let (k, v) = item.map_err(|e| s(&e))?;
        for (entry_id, writer, entry) in readable(k.value(), v.value()) {
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

    /// A UUID-like id from `n`, so that sorted and written order differ.
    fn id(n: u64) -> String {
        format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// One write of an input on topic `in` with `traces` (id, writer).
    async fn write(store: &Store, traces: &[(String, u8)]) {
        let appends = vec![("in".to_string(), ev("x"))];
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
        let runs = txn.open_table(RUNS).unwrap().len().unwrap();
        (recent as usize, runs as usize)
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

    /// Each id's expected answer is the offsets in `want`.
    fn check(store: &Store, want: &HashMap<String, BTreeMap<u8, u64>>, when: &str) {
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
        let store = Store::open_with_runs(dir.path(), 6, 2).unwrap();
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
            // Nine chunks, and a run cut short: four of their entries
            // copied under the first chunk's number, as a stop halfway
            // through a seal leaves them.
            let store = Store::open_with_runs(dir.path(), 1000, 1).unwrap();
            for i in &ids[..9] {
                write(&store, &[(i.clone(), 1)]).await;
            }
            let txn = store.inner.db.begin_write().unwrap();
            {
                let recent = txn.open_table(RECENT).unwrap();
                let mut runs = txn.open_table(RUNS).unwrap();
                for item in recent.range(0..4).unwrap() {
                    let (_, v) = item.unwrap();
                    for (i, w, e) in entries(v.value()).unwrap() {
                        runs.insert((0, i, w), e).unwrap();
                    }
                }
            }
            txn.commit().unwrap();
            store.close();
        }
        let store = Store::open_with_runs(dir.path(), 8, 64).unwrap();
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
        // The partial run was written again under the same number, not
        // beside it: each id is in the runs at most once.
        let txn = store.inner.db.begin_read().unwrap();
        let runs = txn.open_table(RUNS).unwrap();
        let mut seen = std::collections::HashSet::new();
        for item in runs.iter().unwrap() {
            let (k, _) = item.unwrap();
            let (_, i, w) = k.value();
            assert!(seen.insert((i.to_owned(), w)), "{i} twice in the runs");
        }
        drop((runs, txn));
        store.close();
    }

    #[tokio::test]
    async fn sequence_numbers_go_on_after_a_seal_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..15).map(id).collect();
        {
            let store = Store::open_with_runs(dir.path(), 4, 100).unwrap();
            for i in &ids[..8] {
                write(&store, &[(i.clone(), 1)]).await;
            }
            // Both seals done: only the empty newest chunk is left.
            commit_until(&store, |(chunks, runs)| runs == 8 && chunks == 1).await;
            assert_eq!(store.trace_index(), (2, 0), "(runs, waiting)");
            store.close();
        }
        let store = Store::open_with_runs(dir.path(), 4, 100).unwrap();
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

    #[tokio::test]
    async fn entries_of_the_old_layout_are_still_found_and_newer_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_runs(dir.path(), 4, 4).unwrap();
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
            txn.commit().unwrap();
        }
        let old = ["old".to_string()];
        assert_eq!(answers(&store, &old)["old"], vec![7, 8]);
        write(&store, &[("old".into(), 1)]).await;
        assert_eq!(answers(&store, &old)["old"], vec![7, 0]);
        store.close();
    }

    #[tokio::test]
    async fn a_damaged_chunk_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..6).map(id).collect();
        {
            let store = Store::open_with_runs(dir.path(), 1000, 64).unwrap();
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
        let store = Store::open_with_runs(dir.path(), 4, 64).unwrap();
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
