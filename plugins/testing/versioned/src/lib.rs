//! Versioned: a tiny transform built in several versions for the hot-reload
//! tests. Every event yields one output on topic `versioned` whose data says
//! which build made it (`{"generation": 1}` or `2` with the `v2` feature). The
//! `trap-init` build traps in `init`, so it must never be swapped in.

use serde_json::{Value, json};
use switchyard_plugin::{Event, Failure, Output, Plugin};

const GENERATION: u32 = if cfg!(feature = "v2") { 2 } else { 1 };

struct Versioned;

impl Plugin for Versioned {
    fn init(_config: Value) -> Result<(), String> {
        if cfg!(feature = "trap-init") {
            panic!("this build traps in init");
        }
        Ok(())
    }

    fn handle(ev: Event) -> Result<Vec<Output>, Failure> {
        let data = json!({ "generation": GENERATION, "input": ev.id, "key": ev.key });
        Ok(vec![Output::new("versioned", "versioned.seen", &data)])
    }
}

switchyard_plugin::export!(Versioned);
