//! Chaos: a misbehaving plugin for the router's integration tests. The
//! event's JSON `data.chaos` picks the failure to exercise:
//!
//! | `chaos`       | behaviour                                                |
//! |---------------|----------------------------------------------------------|
//! | `"trap"`      | panics, which traps the instance                         |
//! | `"bad"`       | `Failure::BadEvent("chaos asked for bad-event")`         |
//! | `"transient"` | `Failure::Transient("chaos asked for transient")`        |
//! | `"spin"`      | loops forever (the host's deadline must stop it)         |
//! | `"alloc"`     | allocates and touches ~1 GiB (the memory cap must stop it)|
//! | `"kv"`        | writes `chaos/<event id>` = data to kv, then echoes      |
//! | anything else | echoes: one output to topic `echo`, same type and data   |
//!
//! Data that is not JSON, or has no `chaos` string, is echoed unchanged.
//!
//! The plugin's `config` table can override the event's choice, so a test can
//! break and then fix a plugin with a config reload (a new version of the
//! plugin, as a deploy of fixed code would be):
//!
//! | `mode`        | behaviour                                                |
//! |---------------|----------------------------------------------------------|
//! | `"trap"`      | every event traps                                        |
//! | `"transient"` | every event fails with `Failure::Transient`              |
//! | `"heal"`      | `trap`, `transient`, `bad` events are echoed instead     |
//! | absent        | the event's `chaos` decides                              |

use std::hint::black_box;
use std::sync::OnceLock;

use serde_json::Value;
use switchyard_plugin::{Event, Failure, Output, Plugin, kv};

const ECHO_TOPIC: &str = "echo";
const GIB: usize = 1 << 30;
/// Allocated in chunks so that memory grows step by step, the way a leaking
/// plugin's would, rather than in one request an allocator might refuse.
const CHUNK: usize = 16 << 20;
const WASM_PAGE: usize = 64 << 10;

fn echo(ev: &Event) -> Output {
    let mut out = Output::new(ECHO_TOPIC, ev.type_.clone(), &Value::Null);
    // Byte-for-byte the input's payload, whatever it is.
    out.event.data = ev.data.clone();
    out.event.content_type = ev.content_type.clone();
    out
}

/// Never returns. `black_box` hides the counter from the optimiser, which
/// could otherwise reduce the loop to nothing it has to execute.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates ~1 GiB and writes to every wasm page of it, so the memory is
/// really committed. Under a memory cap the allocation fails and the
/// allocator aborts (a trap). If it somehow succeeds, say so loudly.
fn allocate_a_gib() -> Failure {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    while total < GIB {
        let mut chunk = vec![0u8; CHUNK];
        for page in chunk.chunks_mut(WASM_PAGE) {
            page[0] = black_box(1);
        }
        total += chunk.len();
        chunks.push(black_box(chunk));
    }
    black_box(&chunks);
    Failure::bad_event(format!(
        "chaos allocated {total} bytes: no memory cap stopped it"
    ))
}

/// The `mode` of the plugin's config, set once per instance by `init`.
static MODE: OnceLock<Option<String>> = OnceLock::new();

struct Chaos;

impl Plugin for Chaos {
    fn init(config: Value) -> Result<(), String> {
        let mode = config
            .get("mode")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match mode.as_deref() {
            None | Some("trap" | "transient" | "heal") => {
                let _ = MODE.set(mode);
                Ok(())
            }
            Some(other) => Err(format!("unknown mode {other:?}")),
        }
    }

    fn handle(ev: Event) -> Result<Vec<Output>, Failure> {
        let chaos = serde_json::from_str::<Value>(&ev.data)
            .ok()
            .and_then(|data| data.get("chaos").and_then(Value::as_str).map(str::to_owned));
        let chaos = match (MODE.get().cloned().flatten().as_deref(), chaos.as_deref()) {
            (Some("trap"), _) => Some("trap".to_string()),
            (Some("transient"), _) => Some("transient".to_string()),
            (Some("heal"), Some("trap" | "transient" | "bad")) => None,
            (_, c) => c.map(str::to_owned),
        };

        match chaos.as_deref() {
            Some("trap") => panic!("chaos asked for a trap (event {})", ev.id),
            Some("bad") => Err(Failure::bad_event("chaos asked for bad-event")),
            Some("transient") => Err(Failure::transient("chaos asked for transient")),
            Some("spin") => spin(),
            Some("alloc") => Err(allocate_a_gib()),
            Some("kv") => {
                kv::put(&format!("chaos/{}", ev.id), ev.data.as_bytes());
                Ok(vec![echo(&ev)])
            }
            _ => Ok(vec![echo(&ev)]),
        }
    }
}

switchyard_plugin::export!(Chaos);
