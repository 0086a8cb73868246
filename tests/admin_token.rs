//! The admin token: a router listening beyond loopback refuses to start
//! without one, naming the setting; with one set, mutating admin endpoints
//! answer 401 without it or with a wrong one, and work with it, while reads
//! and ingest stay open. `switchyard replay` sends it from the environment.

mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;

const TOKEN: &str = "s3cret-admin-token-for-tests";

#[test]
fn an_exposed_router_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(&cfg, default_config()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--listen", "0.0.0.0:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the router started on 0.0.0.0 without an admin token");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("server.admin_token"), "{stderr}");
    assert!(stderr.contains("SWITCHYARD_ADMIN_TOKEN"), "{stderr}");
    assert!(stderr.contains("0.0.0.0"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "refused before opening the store"
    );
}

#[test]
fn a_short_token_in_the_config_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    let text = default_config().replace(
        "max_body_bytes = 1048576",
        "max_body_bytes = 1048576\nadmin_token = \"short\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("server.admin_token: must be at least 16 characters"),
        "{stderr}"
    );
}

fn post_admin(path: &str, router: &Router, auth: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = agent().post(router.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let mut resp = req.send_empty().unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

#[test]
fn with_a_token_mutating_admin_requests_need_it_even_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start_with(dir.path(), &default_config(), |cmd| {
        cmd.env("SWITCHYARD_ADMIN_TOKEN", TOKEN);
    });
    let bearer = format!("Bearer {TOKEN}");
    for path in [
        "/v1/config/reload",
        "/v1/plugins/domain-fanout/reload",
        "/v1/plugins/prisoner-projection/rebuild",
    ] {
        let (status, body) = post_admin(path, &router, None);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            body["details"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer"),
            "{body}"
        );
        let (status, body) = post_admin(path, &router, Some("Bearer wrong-token-0123456789"));
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            body["details"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("does not match"),
            "{body}"
        );
        let (status, body) = post_admin(path, &router, Some(&format!("Basic {TOKEN}")));
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, body) = post_admin("/v1/config/reload", &router, Some(&bearer));
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_admin("/v1/plugins/domain-fanout/reload", &router, Some(&bearer));
    assert_eq!(status, 200, "{body}");

    // Reads and ingest need no token.
    let (status, _) = router.get("/v1/plugins");
    assert_eq!(status, 200);
    let (status, body) =
        router.post_json(&hmpps(RECEIVED, "A1234BC", "MDI", "2024-06-11T14:41:22Z"));
    assert_eq!(status, 202, "{body}");
    router.wait_for("prisoner-state", 1);

    // The CLI sends the token from the environment; without it, it is refused.
    let replay = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["replay", "--projection", "prisoner-projection", "--url"])
            .arg(&router.base)
            .env_remove("SWITCHYARD_ADMIN_TOKEN");
        if let Some(t) = token {
            cmd.env("SWITCHYARD_ADMIN_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let out = replay(None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    let out = replay(Some(TOKEN));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rebuilding prisoner-projection"),
        "{stdout}"
    );
}

/// Answers sent before a request's body arrived (the admin `401`, a `404`)
/// say `Connection: close`, and the router closes the connection after them,
/// so a client that pools connections does not send its next request on a
/// closed one. An answer to a request without a body keeps the connection.
#[test]
fn early_answers_to_requests_with_bodies_close_the_connection_and_say_so() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start_with(dir.path(), &default_config(), |cmd| {
        cmd.env("SWITCHYARD_ADMIN_TOKEN", TOKEN);
    });
    let addr = router.base.trim_start_matches("http://").to_string();
    let bearer = format!("authorization: Bearer {TOKEN}\r\n");
    for (path, auth, status) in [
        ("/v1/config/reload", "", "401"),
        ("/v1/no-such-endpoint", bearer.as_str(), "404"),
    ] {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        // A request without a body first: answered, connection kept.
        write!(stream, "GET /v1/plugins HTTP/1.1\r\nhost: {addr}\r\n\r\n").unwrap();
        let (head, _) = read_answer(&mut stream);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        // Then one whose body is held back: answered before it arrives.
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"a\":"
        )
        .unwrap();
        let (head, body) = read_answer(&mut stream);
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{head}\n{body}"
        );
        assert!(
            head.lines().any(|l| l.trim() == "connection: close"),
            "{path}: an answer sent with the body unread must say the connection closes: {head}"
        );
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).expect("end of stream, not a timeout");
        assert_eq!(n, 0, "{path}: the connection stays open: {:?}", &buf[..n]);
    }
}
