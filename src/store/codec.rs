//! How an event is laid out in the log table: a compact binary record.
//!
//! The payload is JSON text, and storing the event as JSON escaped every
//! quote of it on each append and unescaped it on each read (serialising was
//! 7 % of the writer thread's time in the ingest profile). This layout copies
//! the bytes as they are, with LEB128 lengths:
//!
//! ```text
//! 0x01 | id | type | version | source | time | content_type | data
//!      | key? | traceparent? | n | (name value) * n
//! ```
//!
//! A string is `len bytes`; an optional string is `0` for none or `len + 1`
//! then the bytes. Records written before this layout are JSON objects
//! (first byte `{`) and are still read.
//!
//! One log entry may hold several consecutive records of a topic, a
//! *chunk*, stored under the offset of its first:
//!
//! ```text
//! 0x02 | n | (len record) * n
//! ```
//!
//! A commit writes each topic's appends as chunks, so a batch of 256 outputs
//! costs a few B-tree inserts instead of 256 (each of which copied its leaf
//! page). An entry that is one record is that record, in either layout.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::event::Event;

/// First byte of a record in this layout (a JSON record starts with `{`).
const TAG: u8 = 0x01;
/// First byte of a chunk of records.
const CHUNK: u8 = 0x02;
/// A chunk holds at most this many bytes of records (or one larger record):
/// small enough that reading one record of it stays cheap, large enough
/// that a batch of outputs is a handful of entries.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The log entry for consecutive `records` (each from [`encode`]): the
/// record itself (borrowed, not copied) if there is one, else a chunk.
pub fn entry<'r>(records: &[&'r [u8]]) -> Cow<'r, [u8]> {
    if let [one] = records {
        return Cow::Borrowed(one);
    }
    let len: usize = records.iter().map(|r| r.len() + 4).sum();
    let mut b = Vec::with_capacity(8 + len);
    b.push(CHUNK);
    put_len(&mut b, records.len() as u64);
    for r in records {
        put_len(&mut b, r.len() as u64);
        b.extend_from_slice(r);
    }
    Cow::Owned(b)
}

/// The records of a log entry, in order, as their encoded bytes (for
/// [`decode`]).
pub fn records(entry: &[u8]) -> Result<Vec<&[u8]>, String> {
    let Some((&CHUNK, rest)) = entry.split_first() else {
        return Ok(vec![entry]);
    };
    let mut r = Reader { b: rest };
    let n = r.len("the chunk's record count")?;
    // Each record takes at least its length byte: `n` cannot claim more
    // records than there are bytes (a cap on the allocation).
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(rest.len()));
    for i in 0..n {
        let len = r.len("a chunk record's length")?;
        let rec = r
            .take(len)
            .ok_or_else(|| format!("record {i} of the chunk runs past its end"))?;
        out.push(rec);
    }
    if !r.b.is_empty() {
        return Err(format!("{} bytes after the chunk's records", r.b.len()));
    }
    if out.is_empty() {
        return Err("empty chunk".into());
    }
    Ok(out)
}

/// The bytes stored for `ev`.
pub fn encode(ev: &Event) -> Vec<u8> {
    let attrs: usize = ev
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    let mut b = Vec::with_capacity(
        32 + ev.id.len()
            + ev.event_type.len()
            + ev.version.len()
            + ev.source.len()
            + ev.time.len()
            + ev.content_type.len()
            + ev.data.len()
            + ev.key.as_ref().map_or(0, String::len)
            + ev.traceparent.as_ref().map_or(0, String::len)
            + attrs,
    );
    b.push(TAG);
    for s in [
        &ev.id,
        &ev.event_type,
        &ev.version,
        &ev.source,
        &ev.time,
        &ev.content_type,
        &ev.data,
    ] {
        put_str(&mut b, s);
    }
    put_opt(&mut b, ev.key.as_deref());
    put_opt(&mut b, ev.traceparent.as_deref());
    put_len(&mut b, ev.attributes.len() as u64);
    for (k, v) in &ev.attributes {
        put_str(&mut b, k);
        put_str(&mut b, v);
    }
    b
}

/// The event in `bytes`, in this layout or the older JSON one.
pub fn decode(bytes: &[u8]) -> Result<Event, String> {
    match bytes.first() {
        Some(&TAG) => Reader { b: &bytes[1..] }.event(),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Some(b) => Err(format!("unknown record layout (first byte {b:#04x})")),
        None => Err("empty record".into()),
    }
}

/// The event type of the stored record `bytes`, read without decoding the
/// rest; `None` for a record of the older JSON layout.
pub fn event_type(bytes: &[u8]) -> Result<Option<&str>, String> {
    match bytes.first() {
        Some(&TAG) => {
            let mut r = Reader { b: &bytes[1..] };
            let id = r.len("id")?;
            r.take(id).ok_or("the id runs past the record's end")?;
            r.str("type").map(Some)
        }
        Some(b'{') => Ok(None),
        Some(b) => Err(format!("unknown record layout (first byte {b:#04x})")),
        None => Err("empty record".into()),
    }
}

pub(super) fn put_len(b: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            b.push(byte);
            return;
        }
        b.push(byte | 0x80);
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_bytes(b, s.as_bytes());
}

/// `bytes`, length-prefixed.
pub(super) fn put_bytes(b: &mut Vec<u8>, bytes: &[u8]) {
    put_len(b, bytes.len() as u64);
    b.extend_from_slice(bytes);
}

fn put_opt(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_len(b, 0),
        Some(s) => {
            put_len(b, s.len() as u64 + 1);
            b.extend_from_slice(s.as_bytes());
        }
    }
}

/// Reads the length-prefixed layout (records, chunks, trace chunks).
pub(super) struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    pub(super) fn byte(&mut self, what: &str) -> Result<u8, String> {
        let (&byte, rest) = self
            .b
            .split_first()
            .ok_or_else(|| format!("{what} runs past the end"))?;
        self.b = rest;
        Ok(byte)
    }

    /// A length-prefixed UTF-8 string, borrowed.
    pub(super) fn str(&mut self, what: &str) -> Result<&'a str, String> {
        let n = self.len(what)?;
        self.utf8(n, what)
    }

    fn event(mut self) -> Result<Event, String> {
        let ev = Event {
            id: self.string("id")?,
            event_type: self.string("type")?,
            version: self.string("version")?,
            source: self.string("source")?,
            time: self.string("time")?,
            content_type: self.string("content_type")?,
            data: self.string("data")?,
            key: self.opt("key")?,
            traceparent: self.opt("traceparent")?,
            attributes: {
                let n = self.len("attributes")?;
                let mut m = BTreeMap::new();
                for _ in 0..n {
                    let k = self.string("attribute name")?;
                    let v = self.string("attribute value")?;
                    m.insert(k, v);
                }
                m
            },
        };
        if !self.b.is_empty() {
            return Err(format!("{} bytes after the record", self.b.len()));
        }
        Ok(ev)
    }

    pub(super) fn len(&mut self, what: &str) -> Result<u64, String> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .b
                .split_first()
                .ok_or_else(|| format!("record ends in the length of {what}"))?;
            self.b = rest;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(format!("length of {what} is too long"))
    }

    /// The next `n` bytes, or `None` if fewer are left.
    pub(super) fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok().filter(|&n| n <= self.b.len())?;
        let (s, rest) = self.b.split_at(n);
        self.b = rest;
        Some(s)
    }

    /// The next `n` bytes as UTF-8, borrowed.
    fn utf8(&mut self, n: u64, what: &str) -> Result<&'a str, String> {
        let s = self
            .take(n)
            .ok_or_else(|| format!("{what} runs past the end of the record"))?;
        std::str::from_utf8(s).map_err(|e| format!("{what} is not UTF-8: {e}"))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        self.str(what).map(str::to_owned)
    }

    fn opt(&mut self, what: &str) -> Result<Option<String>, String> {
        match self.len(what)? {
            0 => Ok(None),
            n => self.utf8(n - 1, what).map(|s| Some(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Event {
        Event {
            id: "e-1".into(),
            event_type: "prison-offender-events.prisoner.released".into(),
            version: "1".into(),
            source: "urn:test".into(),
            key: Some("A1234BC".into()),
            time: "2026-11-26T10:00:00Z".into(),
            content_type: "application/json".into(),
            data: r#"{"a":"quote \" and é","n":[1,2]}"#.into(),
            attributes: [
                ("plugin".to_string(), "x".to_string()),
                ("é".into(), String::new()),
            ]
            .into_iter()
            .collect(),
            traceparent: None,
        }
    }

    #[test]
    fn round_trips_every_field() {
        let mut e = ev();
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        e.key = None;
        e.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        e.attributes.clear();
        e.data = "x".repeat(300);
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        // An empty optional string is not the same as none.
        e.key = Some(String::new());
        assert_eq!(decode(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn reads_records_written_as_json() {
        let e = ev();
        assert_eq!(decode(&serde_json::to_vec(&e).unwrap()).unwrap(), e);
    }

    #[test]
    fn payload_bytes_are_stored_as_they_are() {
        let e = ev();
        let b = encode(&e);
        assert!(b.windows(e.data.len()).any(|w| w == e.data.as_bytes()));
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let good = encode(&ev());
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(decode(&extra).unwrap_err().contains("after the record"));
        assert!(decode(&[0x03, 0]).unwrap_err().contains("layout"));
        let mut bad_utf8 = vec![TAG, 2, 0xff, 0xfe];
        bad_utf8.extend_from_slice(&[0; 12]);
        assert!(decode(&bad_utf8).unwrap_err().contains("UTF-8"));
        assert!(
            decode(&[
                TAG, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
    }

    #[test]
    fn chunks_hold_records_in_order() {
        let mut a = ev();
        let one = encode(&a);
        // One record is stored as itself.
        assert_eq!(*entry(&[one.as_slice()]), *one);
        assert_eq!(records(&one).unwrap(), vec![one.as_slice()]);
        a.id = "e-2".into();
        let two = encode(&a);
        let json = serde_json::to_vec(&a).unwrap();
        let chunk = entry(&[one.as_slice(), two.as_slice(), json.as_slice()]);
        assert_eq!(chunk[0], CHUNK);
        let got = records(&chunk).unwrap();
        assert_eq!(got, vec![one.as_slice(), two.as_slice(), json.as_slice()]);
        assert_eq!(decode(got[1]).unwrap().id, "e-2");
        assert_eq!(decode(got[2]).unwrap(), a);
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let r = encode(&ev());
        let chunk = entry(&[r.as_slice(), r.as_slice()]);
        for cut in 1..chunk.len() {
            assert!(records(&chunk[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = chunk.to_vec();
        extra.push(0);
        assert!(records(&extra).unwrap_err().contains("after the chunk"));
        assert!(records(&[CHUNK, 0]).unwrap_err().contains("empty chunk"));
        // A count far beyond the bytes there are.
        assert!(records(&[CHUNK, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0]).is_err());
    }
}
