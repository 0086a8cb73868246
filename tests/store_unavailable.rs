//! When the store cannot write, ingest answers 503 with details and accepts
//! nothing; every event answered 202 before is still there after a restart.
//!
//! The fault is real: the router runs under a file-size limit (RLIMIT_FSIZE,
//! with SIGXFSZ ignored), so once the database file has to grow past it the
//! store's writes fail with EFBIG, exactly as on a full disk. Readiness and
//! a gauge report it until the restart.

mod common;

use std::collections::HashSet;
use std::os::unix::process::CommandExt;

use common::*;
use serde_json::json;

/// Large enough for the empty database, small enough to fill in a few requests.
const FILE_LIMIT: u64 = 4 * 1024 * 1024;

#[test]
fn a_store_that_cannot_write_answers_503_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start_with(dir.path(), &default_config(), |cmd| {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: FILE_LIMIT,
                    rlim_max: FILE_LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    });
    let padding = "x".repeat(2000);
    let mut accepted = Vec::new();
    let mut refusal = None;
    for round in 0..400 {
        let batch: Vec<_> = (0..50)
            .map(|i| {
                let mut ev = hmpps(
                    RECEIVED,
                    &format!("F{round:03}{i:02}"),
                    "MDI",
                    "2024-06-11T14:41:22Z",
                );
                ev["description"] = json!(padding);
                ev
            })
            .collect();
        let (status, body) = router.post_json(&json!(batch));
        match status {
            202 => accepted.extend(
                body["accepted"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["id"].as_str().unwrap().to_string()),
            ),
            503 => {
                refusal = Some(body);
                break;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    let body = refusal.expect("the store never failed: is the file-size limit in force?");
    assert_eq!(body["details"][0]["field"], "store", "{body}");
    let reason = body["details"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("store write failed"), "{reason}");
    assert!(
        !accepted.is_empty(),
        "some requests must have succeeded before the limit"
    );
    // Readiness says so too, with the store's own reason, so traffic can be
    // sent elsewhere; the gauge is for alerts.
    let (status, ready) = router.get("/readyz");
    assert_eq!(status, 503, "{ready}");
    let store = ready["failed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "store")
        .unwrap_or_else(|| panic!("no failed store check: {ready}"));
    let why = store["reason"].as_str().unwrap();
    assert!(why.starts_with("store writes are failing: "), "{why}");
    assert_eq!(router.metric("switchyard_store_write_failing"), Some(1.0));
    router.kill9();

    let router = Router::start(dir.path(), &default_config());
    router.wait_until("ready after the restart", || router.get("/readyz").0 == 200);
    assert_eq!(router.metric("switchyard_store_write_failing"), Some(0.0));
    let stored: HashSet<String> = router
        .topic("events")
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    for id in &accepted {
        assert!(
            stored.contains(id),
            "event {id} was answered 202 but is missing"
        );
    }
    assert_eq!(
        stored.len(),
        accepted.len(),
        "the refused request must not have been appended"
    );
}
