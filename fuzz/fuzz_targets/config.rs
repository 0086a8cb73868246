#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

/// One fixture directory shared by every process (fork mode starts many);
/// writing it again is harmless, since only the files' existence matters.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("switchyard-fuzz-config");
        switchyard::fuzzing::config_fixture(&dir).expect("config fixture")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::config(dir(), data));
