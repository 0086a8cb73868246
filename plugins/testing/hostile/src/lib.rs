//! Hostile: a plugin that attacks its sandbox, for the router's tests. The
//! event type's end (`[prefix.]hostile.<mode>`) picks the attack; anything
//! else is echoed to topic `echo`, so good events can flow beside the bad.
//!
//! | mode           | attack                                                      |
//! |----------------|-------------------------------------------------------------|
//! | `spin`         | loops forever (the host's deadline must stop it)            |
//! | `alloc`        | allocates and touches 1 GiB (the memory cap must stop it)   |
//! | `recurse`      | unbounded recursion: the guest's stack overflows (a trap)   |
//! | `every-10th`   | panics on every 10th event this instance handles            |
//! | `flood`        | returns 100,000 outputs for one input                       |
//! | `forbidden`    | emits to topic `forbidden`, which its route does not allow  |
//! | `open-file`    | opens files and lists `/`; the host grants no file system   |
//! | `open-socket`  | connects to `data.port` on 127.0.0.1; the host grants no network |
//! | `http`         | `GET data.url` through the host's `http` import; the JSON answer goes to topic `enriched` |
//!
//! For `open-file` and `open-socket` the plugin reports what the sandbox
//! answered as a bad event (`sandbox held: ...`); if the attempt succeeded
//! it emits what it got to topic `leak`, which a test must never see. For
//! `http`, the host decides: an allowed host's answer is emitted, a host not
//! on the plugin's `http_allow` list (or no `http` grant) fails the event.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use switchyard_plugin::{Event, Failure, Output, Plugin};

const FLOOD: usize = 100_000;
const GIB: usize = 1 << 30;
/// Grown step by step, the way a leaking plugin's memory grows.
const CHUNK: usize = 16 << 20;

/// Events this instance has handled (a fresh instance starts again at 0).
static SEEN: AtomicU64 = AtomicU64::new(0);

fn echo(ev: &Event) -> Output {
    let mut out = Output::new("echo", ev.type_.clone(), &Value::Null);
    out.event.data = ev.data.clone();
    out
}

/// Recurses until the stack is exhausted; the frame's buffer makes each
/// level use real stack so the overflow comes quickly.
#[allow(unconditional_recursion)] // the point: it never returns
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth as u8; 512]);
    recurse(black_box(depth + 1)) + frame[(depth % 512) as usize] as u64
}

/// Never returns; `black_box` keeps the optimiser from removing the loop.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates 1 GiB and writes to every page of it; under a memory cap the
/// allocator aborts (a trap) long before.
fn allocate_a_gib(ev: &Event) -> Result<Vec<Output>, Failure> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    while total < GIB {
        let mut chunk = vec![0u8; CHUNK];
        for page in chunk.chunks_mut(64 << 10) {
            page[0] = black_box(1);
        }
        total += chunk.len();
        chunks.push(black_box(chunk));
    }
    leak(ev, format!("allocated {total} bytes"))
}

fn leak(ev: &Event, what: String) -> Result<Vec<Output>, Failure> {
    Ok(vec![Output::new(
        "leak",
        ev.type_.clone(),
        &json!({ "leaked": what }),
    )])
}

fn open_file(ev: &Event) -> Result<Vec<Output>, Failure> {
    let mut held = Vec::new();
    for path in ["/etc/passwd", "switchyard.toml", "."] {
        match std::fs::read(path) {
            Ok(bytes) => return leak(ev, format!("read {path}: {} bytes", bytes.len())),
            Err(e) => held.push(format!("open {path}: {e}")),
        }
    }
    match std::fs::read_dir("/") {
        Ok(entries) => return leak(ev, format!("listed /: {} entries", entries.count())),
        Err(e) => held.push(format!("read_dir /: {e}")),
    }
    Err(Failure::bad_event(format!(
        "sandbox held: {}",
        held.join("; ")
    )))
}

fn open_socket(ev: &Event) -> Result<Vec<Output>, Failure> {
    let port = ev
        .json()?
        .get("port")
        .and_then(Value::as_u64)
        .ok_or_else(|| Failure::bad_event("open-socket needs data.port"))?;
    match std::net::TcpStream::connect(("127.0.0.1", port as u16)) {
        Ok(_) => leak(ev, format!("connected to 127.0.0.1:{port}")),
        Err(e) => Err(Failure::bad_event(format!(
            "sandbox held: connect 127.0.0.1:{port}: {e}"
        ))),
    }
}

fn fetch(ev: &Event) -> Result<Vec<Output>, Failure> {
    let data = ev.json()?;
    let url = data
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::bad_event("http needs data.url"))?;
    let answer: Value = switchyard_plugin::http::get_json(url)?;
    Ok(vec![Output::new(
        "enriched",
        ev.type_.clone(),
        &json!({ "url": url, "answer": answer }),
    )])
}

struct Hostile;

impl Plugin for Hostile {
    fn handle(ev: Event) -> Result<Vec<Output>, Failure> {
        let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        // `hostile.<mode>`, possibly behind a prefix that routes it elsewhere.
        let mode = ev.type_.rsplit_once("hostile.").map_or("", |(_, m)| m);
        match mode {
            "spin" => spin(),
            "alloc" => allocate_a_gib(&ev),
            "recurse" => {
                let n = recurse(0);
                Err(Failure::bad_event(format!("recursion returned {n}")))
            }
            "every-10th" if seen.is_multiple_of(10) => {
                panic!("hostile panics on every 10th event (this is number {seen})")
            }
            "flood" => Ok((0..FLOOD)
                .map(|i| Output::new("echo", "hostile.flood.item", &json!(i)))
                .collect()),
            "forbidden" => {
                let mut out = echo(&ev);
                out.topic = "forbidden".into();
                Ok(vec![out])
            }
            "open-file" => open_file(&ev),
            "open-socket" => open_socket(&ev),
            "http" => fetch(&ev),
            _ => Ok(vec![echo(&ev)]),
        }
    }
}

switchyard_plugin::export!(Hostile);
