//! `ingest.max_lag`: while the router is more events behind on the ingest
//! topic than the bound, HTTP ingest answers `503` with `Retry-After` and the
//! reason, and an SQS source stops receiving (its messages wait in the
//! queue); both take events again once the router has caught up. Nothing
//! answered `202` or received is lost.

#[path = "common/aws.rs"]
mod aws;
mod common;

use std::time::{Duration, Instant};

use aws::Emulator;
use common::*;
use serde_json::{Value, json};

const MAX_LAG: u64 = 3;

fn config() -> String {
    // The plugin spins until its 3 s deadline on a `spin` event: the
    // pipeline's batch, and so its cursor, waits that long.
    config_with_router(
        "max_attempts = 1",
        &format!(
            r#"
[ingest]
max_lag = {MAX_LAG}

[plugins.chaos]
path = "{path}"
timeout_ms = 3000
breaker = {{ failures = 0 }}

[[routes]]
name = "chaos"
match = ["*"]
pipeline = ["chaos"]
"#,
            path = plugin("chaos").display()
        ),
    )
}

fn event(chaos: &str, n: usize) -> Value {
    let mut ev = hmpps(
        RECEIVED,
        &format!("A{n:04}AA"),
        "MDI",
        "2024-06-11T14:41:22Z",
    );
    ev["chaos"] = json!(chaos);
    ev["n"] = json!(n);
    ev
}

#[test]
fn past_the_bound_ingest_is_refused_with_the_reason_and_accepted_again_once_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &config());
    let agent = agent();
    let accepted = |(status, _, body): &(u16, String, Value)| {
        assert_eq!(*status, 202, "{body}");
        body["id"].as_str().unwrap().to_string()
    };
    let mut ids = vec![accepted(&post_event(
        &agent,
        &router.base,
        &event("spin", 0),
    ))];
    // Wait until the pipeline holds the spinning event (its call counted),
    // so that the cursor cannot pass the events posted next.
    router.wait_until("the spin call to start", || {
        router.plugin_status("chaos")["calls"].as_u64() >= Some(1)
    });
    let mut refusal = None;
    for n in 1..=MAX_LAG as usize + 1 {
        let answer = post_event(&agent, &router.base, &event("none", n));
        if answer.0 == 503 {
            refusal = Some((n, answer));
            break;
        }
        ids.push(accepted(&answer));
    }
    let (n, (_, retry, body)) = refusal.expect("a refusal once past the bound");
    // Accepted while at most MAX_LAG behind: the spin event and MAX_LAG more.
    assert_eq!(n, MAX_LAG as usize + 1, "refused at event {n}: {body}");
    assert_eq!(retry, "1");
    assert!(
        body["error"].as_str().unwrap().contains("too far behind"),
        "{body}"
    );
    assert_eq!(body["details"][0]["field"], "ingest.max_lag", "{body}");
    let reason = body["details"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("4 events behind") && reason.contains("bound of 3"),
        "{reason}"
    );
    assert_eq!(
        router.metric("switchyard_rejected_total{source=\"http\",reason=\"behind\"}"),
        Some(1.0)
    );
    // Not ready meanwhile, and it says why.
    let (status, ready) = router.get("/readyz");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["failed"][0]["check"], "lag", "{ready}");

    // The spin times out and is dead-lettered; the router catches up and
    // ingest accepts again.
    router.wait_until("ingest to accept again", || {
        let answer = post_event(&agent, &router.base, &event("none", 100));
        match answer.0 {
            202 => {
                ids.push(accepted(&answer));
                true
            }
            503 => false,
            other => panic!("unexpected {other}: {}", answer.2),
        }
    });
    // Ready again once within the bound; the event just accepted may put
    // the router one past it until the pipeline takes it, so this waits.
    router.wait_until("readiness to pass again", || router.get("/readyz").0 == 200);
    // Every accepted event has its outcome: the spin dead-lettered, the
    // others echoed, each once.
    router.wait_until("every accepted event to be handled", || {
        router.topic("echo").len() + router.topic("dead-letter").len() >= ids.len()
    });
    let mut handled: Vec<String> = router
        .topic("echo")
        .iter()
        .map(|e| e["data"]["n"].to_string())
        .chain(router.topic("dead-letter").iter().map(|e| {
            let original: Value =
                serde_json::from_str(e["data"]["event"]["data"].as_str().unwrap()).unwrap();
            original["n"].to_string()
        }))
        .collect();
    handled.sort();
    let mut want: Vec<String> = (0..=MAX_LAG).chain([100]).map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(handled, want);
}

/// The `n`s of the events echoed and of the events dead-lettered, sorted.
fn outcomes(router: &Router) -> (Vec<u64>, Vec<u64>) {
    let mut echoed: Vec<u64> = router
        .topic("echo")
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect();
    let mut dead: Vec<u64> = router
        .topic("dead-letter")
        .iter()
        .map(|e| {
            let original: Value =
                serde_json::from_str(e["data"]["event"]["data"].as_str().unwrap()).unwrap();
            original["n"].as_u64().unwrap()
        })
        .collect();
    echoed.sort();
    dead.sort();
    (echoed, dead)
}

#[test]
fn past_the_bound_an_sqs_source_stops_receiving_until_the_router_catches_up() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // A longer spin than above: the pause is watched for a while below.
    let config = config().replace("timeout_ms = 3000", "timeout_ms = 10000")
        + r#"
[sources.sqs.ingest]
queue = "lag-in"
wait_time_s = 1
concurrency = 1
"#;
    let setup = dir.path().join("setup.toml");
    std::fs::write(&setup, &config).unwrap();
    emu.setup(&setup);
    let router = Router::start_with(dir.path(), &config, |c| emu.env(c));
    let aws = emu.client();
    let send = |chaos: &str, n: usize| aws.send("lag-in", &event(chaos, n).to_string(), &[], None);

    send("spin", 0);
    router.wait_until("the spin call to start", || {
        router.plugin_status("chaos")["calls"].as_u64() >= Some(1)
    });
    for n in 1..=MAX_LAG as usize + 1 {
        send("none", n);
    }
    router.wait_until("the source to pause", || {
        router
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("sqs source paused"))
    });
    let source = |router: &Router| router.get("/v1/sources").1["sources"][0].clone();
    assert_eq!(source(&router)["paused"], true, "{}", source(&router));
    let ingested = router.topic_len("events");
    // Paused once past the bound (the cursor is still at 0); the rest of
    // the first messages may be waiting in the queue too.
    assert!(ingested > MAX_LAG, "paused at {ingested} events");
    let late = 3;
    for n in 0..late {
        send("none", 100 + n);
    }
    // For a while the source takes nothing more. The events are counted
    // before the dead letters: while the spin's batch (dead letter and
    // cursor, one commit) is not written, the router has not caught up.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(1500) {
        let events = router.topic_len("events");
        if router.topic_len("dead-letter") > 0 {
            break;
        }
        assert_eq!(events, ingested, "the source received while paused");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The spin times out and is dead-lettered, the router catches up and
    // the source takes the rest: every message once.
    let total = 1 + (MAX_LAG + 1) + late as u64;
    router.wait_until("every message to be ingested", || {
        router.topic_len("events") == total
    });
    router.wait_until("every event to be handled", || {
        let (echoed, dead) = outcomes(&router);
        (echoed.len() + dead.len()) as u64 == total
    });
    let (echoed, dead) = outcomes(&router);
    assert_eq!(dead, vec![0]);
    let want: Vec<u64> = (1..=MAX_LAG + 1).chain(100..100 + late as u64).collect();
    assert_eq!(echoed, want);
    assert_eq!(aws.depth("lag-in"), 0);
    assert_eq!(source(&router)["paused"], false, "{}", source(&router));
    assert!(
        router
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("sqs source resumed"))
    );
}
