//! Outbound HTTP for enrichment (the `http` capability), with the real
//! `hostile` plugin in `http` mode (`GET data.url`, the JSON answer to topic
//! `enriched`) and a real HTTP server on an ephemeral 127.0.0.1 port:
//! an allowed host's answer reaches the output; a host not on the plugin's
//! list, and a plugin without the capability, fail the event with
//! `capability-denied` naming the reason, and no connection is made.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::{Value, json};

/// A tiny HTTP server answering every request with a JSON body naming the
/// path it was asked for; counts the connections it accepted.
struct Enrichment {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Enrichment {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || answer(stream));
            }
        });
        Self { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Read the headers to their end (a GET has no body).
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
    let body = json!({"prison": "Moorland", "path": path}).to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn config(allowed_port: u16) -> String {
    let p = plugin("hostile");
    config_with(&format!(
        r#"
[plugins.enricher]
path = "{p}"
timeout_ms = 5000
capabilities = ["log", "http"]
http_allow = ["127.0.0.1:{allowed_port}"]
http_timeout_ms = 3000

[[routes]]
name = "enricher"
match = ["hostile.http"]
pipeline = ["enricher"]
topics = ["enriched"]

[plugins.no-http]
path = "{p}"
timeout_ms = 5000

[[routes]]
name = "no-http"
match = ["nohttp.hostile.http"]
pipeline = ["no-http"]
topics = ["enriched"]
"#,
        p = p.display()
    ))
}

fn event(event_type: &str, noms: &str, url: &str) -> Value {
    let mut ev = hmpps(event_type, noms, "MDI", "2024-06-11T14:41:22Z");
    ev["url"] = json!(url);
    ev
}

#[test]
fn enrichment_reaches_allowed_hosts_only() {
    let allowed = Enrichment::start();
    // Not on the list: must never see a connection.
    let other = Enrichment::start();
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start(dir.path(), &config(allowed.port));
    let post = |ev: &Value| {
        let (status, body) = router.post_json(ev);
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_string()
    };

    let ok_url = format!("http://127.0.0.1:{}/prisons/MDI", allowed.port);
    let ok = post(&event("hostile.http", "A0001BC", &ok_url));
    // Another port on the same address, and the same server by another
    // name: the list matches host and port exactly.
    let other_port = post(&event(
        "hostile.http",
        "A0002BC",
        &format!("http://127.0.0.1:{}/prisons/MDI", other.port),
    ));
    let by_name = post(&event(
        "hostile.http",
        "A0003BC",
        &format!("http://localhost:{}/prisons/MDI", allowed.port),
    ));
    // Granted no `http`: the allowed server is still out of reach.
    let no_cap = post(&event("nohttp.hostile.http", "A0004BC", &ok_url));

    let enriched = router.wait_for("enriched", 1);
    let dead = router.wait_for("dead-letter", 3);

    assert_eq!(enriched.len(), 1, "{enriched:#?}");
    assert_eq!(
        enriched[0]["data"]["answer"],
        json!({"prison": "Moorland", "path": "/prisons/MDI"}),
        "{enriched:#?}"
    );
    assert_eq!(enriched[0]["data"]["url"], ok_url.as_str());

    let of = |id: &str| {
        dead.iter()
            .find(|d| d["data"]["event"]["id"] == id)
            .unwrap_or_else(|| panic!("{id} not dead-lettered: {dead:#?}"))["data"]
            .clone()
    };
    assert!(dead.iter().all(|d| d["data"]["event"]["id"] != ok.as_str()));
    for (id, host) in [
        (&other_port, format!("host 127.0.0.1:{}", other.port)),
        (&by_name, format!("host localhost:{}", allowed.port)),
    ] {
        let d = of(id);
        assert_eq!(d["plugin"], "enricher", "{d:#}");
        assert_eq!(d["reason"], "capability-denied", "{d:#}");
        let e = d["error"].as_str().unwrap();
        assert!(
            e.contains(&host) && e.contains("http_allow"),
            "{host} in {e}"
        );
    }
    let d = of(&no_cap);
    assert_eq!(d["plugin"], "no-http", "{d:#}");
    assert_eq!(d["reason"], "capability-denied", "{d:#}");
    let e = d["error"].as_str().unwrap();
    assert!(e.contains("capability http is not granted"), "{e}");

    // Only the allowed call connected anywhere.
    assert_eq!(allowed.connections(), 1);
    assert_eq!(other.connections(), 0);

    let s = router.plugin_status("enricher");
    assert_eq!(s["calls"], 3, "{s:#}");
    assert_eq!(s["errors"], 2, "{s:#}");
    assert_eq!(s["lastError"]["reason"], "capability-denied", "{s:#}");
    let s = router.plugin_status("no-http");
    assert_eq!(s["lastError"]["reason"], "capability-denied", "{s:#}");
}
