//! `switchyard tap`: follows a topic over the router's SSE stream, from the
//! start or live from its end, filtered by event type.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use serde_json::Value;

fn tap(router: &Router, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.arg("tap").args(args).args(["--url", &router.base]);
    cmd
}

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
        .collect()
}

#[test]
fn tap_shows_a_topic_from_the_start_and_live_filtered_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &default_config());
    let (s, a) = router.post_json(&hmpps(
        RECEIVED,
        "A1234BC",
        "MDI",
        "2024-06-11T14:41:22+01:00",
    ));
    assert_eq!(s, 202, "{a}");
    let (s, b) = router.post_json(&hmpps(
        RELEASED,
        "A1234BC",
        "MDI",
        "2024-06-12T09:00:00+01:00",
    ));
    assert_eq!(s, 202, "{b}");

    // From the start, only released events.
    let out = tap(
        &router,
        &[
            "events",
            "--from-start",
            "--type",
            "*.released",
            "--count",
            "1",
            "--json",
        ],
    )
    .output()
    .expect("run tap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = lines(&out.stdout);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["id"], b["id"]);
    assert_eq!(recs[0]["offset"], 1);

    // The projection's outputs, in order, as summary lines.
    router.wait_for("prisoner-state", 2);
    let out = tap(&router, &["prisoner-state", "--from-start", "--count", "2"])
        .output()
        .expect("run tap");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].trim_start().starts_with("0  ") && rows[0].contains("prisoner.state.updated"),
        "{text}"
    );
    assert!(rows[1].contains("\"eventCount\":2"), "{text}");

    // Live: starts at the end, so only what is posted after it started.
    let mut child = tap(
        &router,
        &["events", "--type", RECEIVED, "--count", "1", "--json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start tap");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.starts_with("tapping events from offset 2"), "{first}");
    // A released event the filter hides, then the received one it shows.
    router.post_json(&hmpps(
        RELEASED,
        "A7777AA",
        "MDI",
        "2024-06-13T09:00:00+01:00",
    ));
    let (_, c) = router.post_json(&hmpps(
        RECEIVED,
        "A7777AA",
        "LEI",
        "2024-06-14T09:00:00+01:00",
    ));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "tap did not see the live event");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success());
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let recs = lines(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["id"], c["id"]);
    assert_eq!(recs[0]["offset"], 3);

    let out = tap(&router, &["no such topic"]).output().unwrap();
    assert!(!out.status.success());
    router.stop();
}
