//! The store's write-ahead log: what makes a commit durable.
//!
//! A durable redb commit cost about 210 µs of CPU and two to three times a
//! plain `fdatasync` of wall time here (its page allocator state and free
//! lists are written on every one), and the store's one writer thread paid
//! it for every group of writes. Instead, each commit's writes are appended
//! to this log as one frame and synced, then applied to redb with a
//! commit that is not synced ([`redb::Durability::None`]), which costs a
//! fifth of that. Every so often (a *checkpoint*: when the log has grown
//! past `[store] checkpoint_mb`, when the writer has been idle for a second,
//! and on close) redb commits durably, and the log starts over from its
//! beginning.
//!
//! A frame:
//!
//! ```text
//! len: u32 LE | crc32(body): u32 LE | body
//! body = seq: u64 LE | n | job * n
//! job  = cursor_at? | appends | cursors | drop_cursors | drop_namespaces
//!      | kv | meta | traces
//! ```
//!
//! (lengths and counts in the LEB128 of [`codec`], strings and byte strings
//! length-prefixed, `?` a `0`/`1` byte before the value). `seq` counts
//! commits; every commit also stores its `seq` in redb (the `META` key
//! [`SEQ_KEY`]), so whichever commit redb last made durable says where to
//! resume. On open, frames after that `seq` are applied again, in order,
//! through the same commit code, which makes the same decisions (offsets,
//! refused `cursor_at`s) on the same state. Reading stops at the first frame
//! that is torn (short or failing its checksum) or out of sequence: after a
//! checkpoint the log is written again from its start, over frames of
//! earlier `seq`s, which are skipped.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::codec::{self, Reader, put_bytes, put_len};
use super::{Trace, WriteBatch};

/// Where each commit records its `seq` in the `META` table (no router
/// record's name starts with a NUL).
pub(super) const SEQ_KEY: &str = "\0wal.seq";

/// Frame header: length and checksum.
const HEADER: usize = 8;

/// The file grows by this much at a time, written as zeros (which read as
/// the log's end): a frame then lands on blocks already allocated, and its
/// `fdatasync` has no file size to record, about a third of the time of a
/// sync that does here, except once per step.
const GROW: u64 = 1024 * 1024;

pub(super) struct Wal {
    file: File,
    path: PathBuf,
    /// Where the next frame goes.
    at: u64,
    /// The last `seq` written.
    seq: u64,
    /// The file's length.
    allocated: u64,
    buf: Vec<u8>,
    /// How long the last append's sync took.
    synced_in: Duration,
}

/// A job read back: a batch and its appends encoded (as
/// [`super::Store::queue`] makes them).
pub(super) type Job = (WriteBatch, Vec<Vec<u8>>);

/// A frame read back: its `seq` and its jobs.
pub(super) type Frame = (u64, Vec<Job>);

impl Wal {
    /// Opens (or creates) the log at `path` and reads the frames after
    /// `applied` (the `seq` of redb's last durable commit).
    pub(super) fn open(path: &Path, applied: u64) -> std::io::Result<(Wal, Vec<Frame>)> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut frames = Vec::new();
        let mut next = applied + 1;
        let (mut rest, mut end) = (&bytes[..], 0);
        while let Some((seq, body, after)) = frame(rest) {
            if seq == next {
                match jobs(body) {
                    Ok(jobs) => {
                        frames.push((seq, jobs));
                        end = bytes.len() - after.len();
                    }
                    Err(e) => {
                        // A frame whose checksum holds was written whole by
                        // this code: it reads back unless the code changed.
                        tracing::error!(seq, error = %e, path = %path.display(),
                            "write-ahead log frame is unreadable; replay stops there");
                        break;
                    }
                }
                next += 1;
            } else if seq > next {
                // Frames are written in sequence, and a rewind comes only
                // after a durable checkpoint: a gap means the database is
                // older than the log says it should be.
                tracing::warn!(seq, expected = next, path = %path.display(),
                    "write-ahead log frame out of sequence; the log ends before it");
                break;
            }
            rest = after;
        }
        // The next frame follows the last one read; with none read, every
        // frame in the file is durable in redb and may be overwritten.
        let wal = Wal {
            file,
            path: path.to_path_buf(),
            at: end as u64,
            seq: next - 1,
            allocated: bytes.len() as u64,
            buf: Vec::new(),
            synced_in: Duration::ZERO,
        };
        Ok((wal, frames))
    }

    /// Appends one frame holding `jobs` and syncs it; returns its `seq`.
    pub(super) fn append(&mut self, jobs: &[(&WriteBatch, &[Vec<u8>])]) -> Result<u64, Failed> {
        let seq = self.seq + 1;
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(&[0; HEADER]);
        b.extend_from_slice(&seq.to_le_bytes());
        put_len(b, jobs.len() as u64);
        for (batch, encoded) in jobs {
            put_job(b, batch, encoded);
        }
        let body_len = u32::try_from(b.len() - HEADER).map_err(|_| {
            Failed::Write(std::io::Error::other(format!(
                "a commit of {} bytes is over 4 GiB",
                b.len()
            )))
        })?;
        let crc = crc32fast::hash(&b[HEADER..]);
        b[..4].copy_from_slice(&body_len.to_le_bytes());
        b[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        // A failed write leaves at most a torn frame where the next one
        // goes: it is overwritten, and reads as the log's end until then.
        let end = self.at + b.len() as u64;
        if end > self.allocated {
            let grown = end.div_ceil(GROW) * GROW;
            let zeros = vec![0; (grown - self.allocated) as usize];
            self.file
                .write_all_at(&zeros, self.allocated)
                .map_err(Failed::Write)?;
            self.allocated = grown;
        }
        self.file.write_all_at(b, self.at).map_err(Failed::Write)?;
        let syncing = Instant::now();
        let synced = self.file.sync_data();
        self.synced_in = syncing.elapsed();
        synced.map_err(Failed::Sync)?;
        self.at += b.len() as u64;
        self.seq = seq;
        if b.capacity() > 4 * 1024 * 1024 {
            // One large commit should not pin its buffer for good.
            *b = Vec::new();
        }
        Ok(seq)
    }

    /// Takes back the last frame (its commit to redb failed): the log ends
    /// where it began, and its `seq` is free again.
    pub(super) fn take_back(&mut self, frame_at: u64) -> std::io::Result<()> {
        self.file.set_len(frame_at)?;
        self.file.sync_all()?;
        (self.at, self.allocated) = (frame_at, frame_at);
        self.seq -= 1;
        Ok(())
    }

    /// Where the next frame goes: the bytes written since the last
    /// checkpoint.
    pub(super) fn len(&self) -> u64 {
        self.at
    }

    /// How long the last append's sync took (the disk's part of a commit).
    pub(super) fn synced_in(&self) -> Duration {
        self.synced_in
    }

    /// The last `seq` written.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// After a checkpoint: the next frame goes at the start, over frames
    /// redb now holds durably. The file keeps its size, so appends there
    /// overwrite blocks already allocated and a sync has no size to record.
    pub(super) fn rewind(&mut self) {
        self.at = 0;
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// Why [`Wal::append`] failed.
#[derive(Debug)]
pub(super) enum Failed {
    /// Writing the frame: nothing of it counts, and the log can go on.
    Write(std::io::Error),
    /// Syncing it: whether the frame (or any unsynced write) is on disk is
    /// unknown, and a later sync may succeed without writing it, so the
    /// log cannot be trusted with another commit before a restart.
    Sync(std::io::Error),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Write(e) => write!(f, "write failed: {e}"),
            Failed::Sync(e) => write!(f, "fdatasync failed: {e}"),
        }
    }
}

/// The frame at the start of `b`: its `seq`, its body after the `seq`, and
/// the bytes after it. `None` if it is torn.
fn frame(b: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.get(4..HEADER)?.try_into().ok()?);
    let body = b.get(HEADER..HEADER.checked_add(len)?)?;
    if len < 8 || crc32fast::hash(body) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(body[..8].try_into().ok()?);
    Some((seq, &body[8..], &b[HEADER + len..]))
}

fn put_job(b: &mut Vec<u8>, batch: &WriteBatch, encoded: &[Vec<u8>]) {
    match &batch.cursor_at {
        None => b.push(0),
        Some((consumer, at)) => {
            b.push(1);
            put_bytes(b, consumer.as_bytes());
            put_len(b, *at);
        }
    }
    put_len(b, batch.appends.len() as u64);
    for ((topic, _), bytes) in batch.appends.iter().zip(encoded) {
        put_bytes(b, topic.as_bytes());
        put_bytes(b, bytes);
    }
    put_len(b, batch.cursors.len() as u64);
    for (consumer, at) in &batch.cursors {
        put_bytes(b, consumer.as_bytes());
        put_len(b, *at);
    }
    put_len(b, batch.drop_cursors.len() as u64);
    for consumer in &batch.drop_cursors {
        put_bytes(b, consumer.as_bytes());
    }
    put_len(b, batch.drop_namespaces.len() as u64);
    for ns in &batch.drop_namespaces {
        put_bytes(b, ns.as_bytes());
    }
    put_len(b, batch.kv.len() as u64);
    for (ns, key, value) in &batch.kv {
        put_bytes(b, ns.as_bytes());
        put_bytes(b, key.as_bytes());
        put_opt_bytes(b, value.as_deref());
    }
    put_len(b, batch.meta.len() as u64);
    for (key, value) in &batch.meta {
        put_bytes(b, key.as_bytes());
        put_opt_bytes(b, value.as_deref());
    }
    put_len(b, batch.traces.len() as u64);
    for t in &batch.traces {
        put_bytes(b, t.id.as_bytes());
        b.push(t.writer);
        match t.input {
            None => b.push(0),
            Some(i) => {
                b.push(1);
                put_len(b, i as u64);
            }
        }
        match &t.from {
            None => b.push(0),
            Some((topic, offset)) => {
                b.push(1);
                put_bytes(b, topic.as_bytes());
                put_len(b, *offset);
            }
        }
        put_len(b, t.outputs.len() as u64);
        for (i, info) in &t.outputs {
            put_len(b, *i as u64);
            put_bytes(b, info);
        }
    }
}

fn put_opt_bytes(b: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => b.push(0),
        Some(v) => {
            b.push(1);
            put_bytes(b, v);
        }
    }
}

/// The jobs of a frame's body (after its `seq`).
fn jobs(body: &[u8]) -> Result<Vec<Job>, String> {
    let mut r = Reader::new(body);
    let n = r.len("jobs")?;
    let mut jobs = Vec::new();
    for _ in 0..n {
        jobs.push(job(&mut r)?);
    }
    if !r.is_empty() {
        return Err("bytes after the last job".into());
    }
    Ok(jobs)
}

fn job(r: &mut Reader<'_>) -> Result<Job, String> {
    let mut b = WriteBatch::default();
    if flag(r, "cursor_at")? {
        b.cursor_at = Some((string(r, "cursor_at")?, r.len("cursor_at offset")?));
    }
    let mut encoded = Vec::new();
    for _ in 0..r.len("appends")? {
        let topic = string(r, "topic")?;
        let bytes = bytes(r, "record")?;
        b.appends.push((topic, codec::decode(bytes)?));
        encoded.push(bytes.to_vec());
    }
    for _ in 0..r.len("cursors")? {
        b.cursors
            .push((string(r, "cursor")?, r.len("cursor offset")?));
    }
    for _ in 0..r.len("dropped cursors")? {
        b.drop_cursors.push(string(r, "dropped cursor")?);
    }
    for _ in 0..r.len("dropped namespaces")? {
        b.drop_namespaces.push(string(r, "dropped namespace")?);
    }
    for _ in 0..r.len("kv")? {
        let (ns, key) = (string(r, "kv namespace")?, string(r, "kv key")?);
        b.kv.push((ns, key, opt_bytes(r, "kv value")?));
    }
    for _ in 0..r.len("meta")? {
        b.meta
            .push((string(r, "meta key")?, opt_bytes(r, "meta value")?));
    }
    for _ in 0..r.len("traces")? {
        let mut t = Trace {
            id: string(r, "trace id")?,
            writer: r.byte("trace writer")?,
            ..Default::default()
        };
        if flag(r, "trace input")? {
            t.input = Some(index(r, "trace input")?);
        }
        if flag(r, "trace from")? {
            t.from = Some((string(r, "trace from")?, r.len("trace from offset")?));
        }
        for _ in 0..r.len("trace outputs")? {
            let i = index(r, "trace output")?;
            t.outputs.push((i, bytes(r, "trace output")?.to_vec()));
        }
        b.traces.push(t);
    }
    Ok((b, encoded))
}

fn flag(r: &mut Reader<'_>, what: &str) -> Result<bool, String> {
    match r.byte(what)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(format!("{what}: flag {other}")),
    }
}

fn bytes<'a>(r: &mut Reader<'a>, what: &str) -> Result<&'a [u8], String> {
    let n = r.len(what)?;
    r.take(n).ok_or_else(|| format!("{what} runs past the end"))
}

fn string(r: &mut Reader<'_>, what: &str) -> Result<String, String> {
    r.str(what).map(str::to_owned)
}

fn opt_bytes(r: &mut Reader<'_>, what: &str) -> Result<Option<Vec<u8>>, String> {
    Ok(if flag(r, what)? {
        Some(bytes(r, what)?.to_vec())
    } else {
        None
    })
}

fn index(r: &mut Reader<'_>, what: &str) -> Result<usize, String> {
    usize::try_from(r.len(what)?).map_err(|_| format!("{what}: index too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn batch(n: usize) -> (WriteBatch, Vec<Vec<u8>>) {
        let ev = |i: usize| Event {
            data: format!("{{\"n\":{i}}}"),
            key: i.is_multiple_of(2).then(|| format!("k{i}")),
            ..crate::event::sample(&format!("id-{i}"))
        };
        let b = WriteBatch {
            appends: (0..n).map(|i| ("events".to_string(), ev(i))).collect(),
            cursors: vec![("router".into(), 7)],
            drop_cursors: vec!["old".into()],
            kv: vec![
                ("ns".into(), "a".into(), Some(b"1".to_vec())),
                ("ns".into(), "b".into(), None),
            ],
            drop_namespaces: vec!["gone".into()],
            meta: vec![("m".into(), Some(vec![0, 1])), ("n".into(), None)],
            traces: vec![Trace {
                id: "id-0".into(),
                writer: 1,
                input: Some(0),
                from: Some(("events".into(), 3)),
                outputs: vec![(1, b"{\"x\":1}".to_vec())],
            }],
            cursor_at: Some(("router".into(), 5)),
        };
        let encoded = b.appends.iter().map(|(_, e)| codec::encode(e)).collect();
        (b, encoded)
    }

    fn append(wal: &mut Wal, jobs: &[(WriteBatch, Vec<Vec<u8>>)]) -> u64 {
        let parts: Vec<_> = jobs.iter().map(|(b, e)| (b, e.as_slice())).collect();
        wal.append(&parts).unwrap()
    }

    fn same(a: &[(WriteBatch, Vec<Vec<u8>>)], b: &[(WriteBatch, Vec<Vec<u8>>)]) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn frames_read_back_as_written_after_the_applied_seq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, none) = Wal::open(&path, 0).unwrap();
        assert!(none.is_empty());
        let one = vec![batch(3)];
        let two = vec![batch(0), batch(1)];
        assert_eq!(append(&mut wal, &one), 1);
        assert_eq!(append(&mut wal, &two), 2);
        let (_, frames) = Wal::open(&path, 0).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].0, 1);
        assert!(same(&frames[0].1, &one), "{:?}", frames[0].1);
        assert!(same(&frames[1].1, &two));
        let (wal, frames) = Wal::open(&path, 1).unwrap();
        assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), [2]);
        assert_eq!(wal.seq(), 2, "the next frame follows the last read");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            GROW,
            "the file grows a step at a time, its zeros ending the log"
        );
        let (wal, frames) = Wal::open(&path, 2).unwrap();
        assert!(frames.is_empty());
        assert_eq!(wal.seq(), 2);
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_log_and_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 0).unwrap();
        append(&mut wal, &[batch(2)]);
        let whole = wal.len();
        append(&mut wal, &[batch(2)]);
        let total = wal.len();
        let full = std::fs::read(&path).unwrap();
        for cut in [whole + 1, whole + 8, total - 1] {
            std::fs::write(&path, &full[..cut as usize]).unwrap();
            let (wal, frames) = Wal::open(&path, 0).unwrap();
            assert_eq!(frames.len(), 1, "cut at {cut}");
            assert_eq!(wal.seq(), 1);
        }
        let mut flipped = full.clone();
        let last = total as usize - 3;
        flipped[last] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let (mut wal, frames) = Wal::open(&path, 0).unwrap();
        assert_eq!(frames.len(), 1, "a flipped bit fails the checksum");
        // The next frame takes the torn one's place and seq.
        assert_eq!(wal.len(), whole);
        assert_eq!(append(&mut wal, &[batch(1)]), 2);
        let (_, frames) = Wal::open(&path, 0).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].1[0].0.appends.len(), 1);
    }

    #[test]
    fn after_a_rewind_older_frames_are_skipped_and_newer_ones_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 0).unwrap();
        for _ in 0..4 {
            append(&mut wal, &[batch(3)]);
        }
        // Checkpoint at seq 4: the next frames overwrite the start.
        wal.rewind();
        assert_eq!(append(&mut wal, &[batch(0)]), 5);
        let (_, frames) = Wal::open(&path, 4).unwrap();
        assert_eq!(
            frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            [5],
            "frames 2–4 left behind the new one are older than the checkpoint"
        );
        // Nothing written since the checkpoint: every frame is older.
        let (wal, frames) = Wal::open(&path, 5).unwrap();
        assert!(frames.is_empty());
        assert_eq!(wal.seq(), 5);
    }

    #[test]
    fn a_frame_taken_back_is_gone_and_its_seq_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 0).unwrap();
        append(&mut wal, &[batch(1)]);
        let at = wal.len();
        append(&mut wal, &[batch(2)]);
        wal.take_back(at).unwrap();
        assert_eq!(Wal::open(&path, 0).unwrap().1.len(), 1);
        assert_eq!(append(&mut wal, &[batch(3)]), 2);
        let (_, frames) = Wal::open(&path, 0).unwrap();
        assert_eq!(frames[1].1[0].0.appends.len(), 3);
    }
}
