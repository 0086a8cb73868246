//! Back-pressure: with every ingest slot taken the router answers `503` with
//! `Retry-After` instead of queueing; a flood of clients that retry as told
//! loses nothing: every event answered `202` is in the log, once.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const SLOTS: usize = 2;

/// A request whose body is held back: it keeps an ingest slot until sent.
struct Held {
    stream: TcpStream,
    rest: Vec<u8>,
}

fn hold(addr: &str, event: &Value) -> Held {
    let body = event.to_string().into_bytes();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..10]).unwrap();
    stream.flush().unwrap();
    Held {
        stream,
        rest: body[10..].to_vec(),
    }
}

impl Held {
    /// Whether the router already answered (it refused the request because
    /// the slots were taken when its headers arrived).
    fn answered(&self) -> bool {
        self.stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let answered = matches!(self.stream.peek(&mut buf), Ok(n) if n > 0);
        self.stream.set_nonblocking(false).unwrap();
        answered
    }

    /// Sends the rest of the body; returns the raw answer.
    fn finish(mut self) -> String {
        self.stream.write_all(&self.rest).unwrap();
        self.stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut answer = String::new();
        let mut buf = [0u8; 4096];
        while !answer.contains("\"topic\"") && !answer.contains("\"error\"") {
            let n = self.stream.read(&mut buf).expect("an answer");
            assert!(n > 0, "closed without an answer: {answer}");
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        answer
    }
}

/// Posts `event`; `Ok(id)` on 202, `Err(retry-after)` on 503.
fn post(agent: &ureq::Agent, base: &str, event: &Value) -> Result<String, String> {
    let (status, retry, body) = post_event(agent, base, event);
    match status {
        202 => Ok(body["id"].as_str().unwrap().to_string()),
        503 => {
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("too many requests in flight"),
                "{body}"
            );
            Err(retry)
        }
        other => panic!("unexpected {other}: {body}"),
    }
}

/// Takes every ingest slot with requests whose bodies do not arrive (the
/// `i`-th holding `held_event(i)`), then calls `probe` until it reports a
/// refusal. A held request that arrived while a probe had a slot was itself
/// refused: another is held in its place, or the probes would never meet a
/// full router.
fn saturate<T>(
    addr: &str,
    held_event: impl Fn(usize) -> Value,
    mut probe: impl FnMut() -> Option<T>,
) -> (Vec<Held>, T) {
    let mut held: Vec<Held> = (0..SLOTS).map(|i| hold(addr, &held_event(i))).collect();
    let mut next = SLOTS;
    let start = Instant::now();
    loop {
        if let Some(refused) = probe() {
            return (held, refused);
        }
        for h in held.iter_mut() {
            if h.answered() {
                *h = hold(addr, &held_event(next));
                next += 1;
            }
        }
        assert!(start.elapsed() < DEADLINE, "never saturated");
    }
}

/// A router with [`SLOTS`] ingest slots, and its `host:port`.
fn start_with_slots(dir: &std::path::Path) -> (Router, String) {
    let config = default_config().replace(
        "max_body_bytes = 1048576",
        &format!("max_body_bytes = 1048576\nmax_in_flight = {SLOTS}"),
    );
    let router = Router::start(dir, &config);
    let addr = router.base.trim_start_matches("http://").to_string();
    (router, addr)
}

#[test]
fn a_saturated_router_answers_503_with_retry_after_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (router, addr) = start_with_slots(dir.path());
    let agent = agent();
    let event = |n: usize| {
        let mut ev = hmpps(
            RECEIVED,
            &format!("A{n:04}AA"),
            "MDI",
            "2024-06-11T14:41:22Z",
        );
        ev["additionalInformation"]["n"] = json!(n);
        ev
    };

    // Take every slot with bodies that do not arrive; then a request is
    // refused, not queued. Requests accepted before the slots were all
    // taken count as accepted.
    let mut accepted: BTreeSet<String> = BTreeSet::new();
    let (held, retry_after) = saturate(
        &addr,
        |i| event(90_000 + i),
        || match post(&agent, &router.base, &event(accepted.len())) {
            Ok(id) => {
                accepted.insert(id);
                None
            }
            Err(retry) => Some(retry),
        },
    );
    assert_eq!(retry_after, "1", "a 503 must say when to retry");

    // The held requests complete normally once their bodies arrive.
    for h in held {
        let answer = h.finish();
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let body = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
        let v: Value = serde_json::from_str(body).unwrap();
        accepted.insert(v["id"].as_str().unwrap().to_string());
    }

    // A flood: 8 clients, 25 events each, retrying 503s after Retry-After.
    let refused = std::sync::atomic::AtomicUsize::new(0);
    let flood: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|c| {
                let agent = agent.clone();
                let base = router.base.clone();
                let refused = &refused;
                s.spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0..25 {
                        let ev = event(1_000 + c * 100 + i);
                        let started = Instant::now();
                        loop {
                            match post(&agent, &base, &ev) {
                                Ok(id) => {
                                    ids.push(id);
                                    break;
                                }
                                Err(retry) => {
                                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    assert!(started.elapsed() < DEADLINE, "never admitted");
                                    // What a client does with Retry-After, shortened.
                                    let secs: u64 = retry.parse().unwrap();
                                    std::thread::sleep(Duration::from_millis(secs * 10));
                                }
                            }
                        }
                    }
                    ids
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(flood.len(), 200);
    accepted.extend(flood);
    println!(
        "flood: 200 events from 8 clients through {SLOTS} slots, {} refusals",
        refused.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Every accepted event is in the log exactly once.
    let logged: Vec<String> = router
        .topic("events")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<String> = logged.iter().cloned().collect();
    assert_eq!(unique.len(), logged.len(), "an event was appended twice");
    assert_eq!(
        unique, accepted,
        "the log holds exactly the accepted events"
    );
}

#[test]
fn a_refusal_sent_before_the_body_is_read_closes_the_connection_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_router, addr) = start_with_slots(dir.path());
    let ev = hmpps(RECEIVED, "A1234AA", "MDI", "2024-06-11T14:41:22Z");

    // One keep-alive connection, whole requests on it, until one is refused.
    let body = ev.to_string();
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(&addr).unwrap();
    let (held, head) = saturate(
        &addr,
        |_| ev.clone(),
        || {
            stream.write_all(request.as_bytes()).unwrap();
            let (head, answer) = read_answer(&mut stream);
            if head.starts_with("http/1.1 503") {
                assert!(answer.contains("too many requests in flight"), "{answer}");
                return Some(head);
            }
            assert!(head.starts_with("http/1.1 202"), "{head}\n{answer}");
            assert!(
                !head.contains("connection: close"),
                "an accepted request keeps its connection: {head}"
            );
            None
        },
    );
    assert!(
        head.lines().any(|l| l.trim() == "connection: close"),
        "a refusal that leaves the body unread must say the connection closes: {head}"
    );
    // And the router does close it: the next read is the end of the stream.
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).expect("end of stream, not a timeout");
    assert_eq!(
        n,
        0,
        "the connection stays open after a refusal: {:?}",
        &buf[..n]
    );

    // The held requests are not disturbed.
    for h in held {
        let answer = h.finish();
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    }
}
