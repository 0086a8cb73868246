#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

/// One fixture directory per process; the fuzzer reuses it for every input.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("switchyard-fuzz-config-{}", std::process::id()));
        switchyard::fuzzing::config_fixture(&dir).expect("config fixture")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::config(dir(), data));
