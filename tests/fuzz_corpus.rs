//! The fuzz corpus as a regression suite: every input kept under
//! `fuzz/corpus/<target>/` (minimised by `cargo fuzz cmin`) and the hand-written
//! seeds under `fuzz/seeds/<target>/` go through the same harness the fuzz
//! target runs (`switchyard::fuzzing`), which panics when an invariant breaks.
//! Needs no fuzzer or sanitizer build, so it runs with the normal suite.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use switchyard::fuzzing;

/// The inputs of one target; fails when there are none, so a misplaced or
/// emptied corpus cannot pass silently.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.map(|e| e.expect("corpus entry").path()));
    }
    files.sort();
    assert!(
        files.len() >= 3,
        "fuzz/corpus/{target} and fuzz/seeds/{target} hold too few inputs"
    );
    files
}

/// Runs every input, and names each one that broke an invariant.
fn run(target: &str, harness: impl Fn(&[u8])) {
    let failed: Vec<String> = inputs(target)
        .into_iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("read corpus file");
            catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "inputs that broke an invariant: {failed:#?}"
    );
}

#[test]
fn hmpps_corpus() {
    run("hmpps", fuzzing::hmpps);
}

#[test]
fn cloudevents_structured_corpus() {
    run("cloudevents_structured", fuzzing::cloudevents_structured);
}

#[test]
fn cloudevents_binary_corpus() {
    run("cloudevents_binary", fuzzing::cloudevents_binary);
}

#[test]
fn sns_sqs_corpus() {
    run("sns_sqs", fuzzing::sns_sqs);
}

#[test]
fn config_corpus() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = fuzzing::config_fixture(dir.path()).expect("config fixture");
    run("config", |data| fuzzing::config(&dir, data));
}

#[test]
fn json_check_corpus() {
    run("json_check", fuzzing::json_check);
}
