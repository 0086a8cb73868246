//! The web page at `/ui` in headless Chromium (Debian `chromium`, driven by
//! `playwright-core` from `tests/ui`): it loads offline, shows the default
//! config's routes in the graph, and the follow-one-event view finds an
//! event this test posted. The screenshot goes to
//! `target/test-artifacts/ui.png`.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn the_page_shows_the_routes_and_follows_an_event() {
    let script = root().join("tests/ui/page-test.mjs");
    let driver = root().join("tests/ui/node_modules/playwright-core");
    assert!(
        driver.is_dir(),
        "{} is missing: run scripts/setup (npm ci in tests/ui)",
        driver.display()
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run scripts/setup (apt-get install chromium)"
    );
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &default_config());
    let (status, posted) = router.post_json(&hmpps(
        RECEIVED,
        "A1234BC",
        "MDI",
        "2024-06-11T14:41:22+01:00",
    ));
    assert_eq!(status, 202, "{posted}");
    let id = posted["id"].as_str().unwrap().to_string();
    router.wait_for("prisoner-state", 1);

    let artifacts = root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("ui.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node")
        .arg(&script)
        .current_dir(root().join("tests/ui"))
        .env("BASE", &router.base)
        .env("ROUTES", "prisoner-state,domain-fanout")
        .env("EVENT_ID", &id)
        .env("OUTPUT_TOPIC", "prisoner-state")
        .env("SCREENSHOT", &shot)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "page test failed:\n{stdout}\n{stderr}\nrouter log:\n{}",
        router.log.lock().unwrap().join("\n")
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(seen["ok"], true, "{seen}");
    let routes = seen["seen"]["routes"].as_array().unwrap();
    assert!(routes.iter().any(|r| r == "prisoner-state"), "{seen}");
    assert!(routes.iter().any(|r| r == "domain-fanout"), "{seen}");
    let plugins = seen["seen"]["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 2, "{seen}");
    let trace = seen["seen"]["trace"].as_str().unwrap();
    assert!(
        trace.contains(&id) && trace.contains("prisoner-projection@"),
        "{trace}"
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a screenshot"
    );
    router.stop();
}
