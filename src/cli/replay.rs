//! `switchyard replay --projection NAME`: asks a running router to rebuild a
//! projection from its event log, and optionally follows the progress.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How long `--wait` follows a rebuild before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(6 * 3600);

pub fn replay(url: &str, projection: &str, wait: bool, token: Option<&str>) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = url.trim_end_matches('/');
    let mut req = agent.post(&format!("{base}/v1/plugins/{projection}/rebuild"));
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut resp = req
        .send_empty()
        .with_context(|| format!("cannot reach the router at {base}"))?;
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string()?).unwrap_or_default();
    if !resp.status().is_success() {
        bail!(
            "rebuild of {projection} refused ({}): {}",
            resp.status(),
            body["reason"]
                .as_str()
                .or(body["details"][0]["reason"].as_str())
                .unwrap_or("no reason given")
        );
    }
    let generation = body["generation"].as_u64();
    println!(
        "rebuilding {projection} version {} into generation {}",
        body["version"].as_str().unwrap_or("?"),
        generation.map_or_else(|| "?".to_string(), |g| g.to_string())
    );
    if !wait {
        return Ok(());
    }
    let started = Instant::now();
    while started.elapsed() < WAIT_LIMIT {
        std::thread::sleep(Duration::from_millis(500));
        let mut resp = agent.get(&format!("{base}/v1/plugins")).call()?;
        let list: Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
        let Some(p) = list["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == projection)
        else {
            bail!("plugin {projection} disappeared from the router");
        };
        let r = &p["rebuild"];
        if r["generation"].as_u64() != generation {
            // Not started yet (or an older rebuild's report).
            continue;
        }
        println!(
            "{}: offset {} of {} ({} events/s)",
            r["state"].as_str().unwrap_or("?"),
            r["offset"],
            r["total"],
            r["eventsPerSecond"]
        );
        match r["state"].as_str() {
            Some("done") => return Ok(()),
            Some("failed") => bail!(
                "rebuild failed: {}",
                r["error"].as_str().unwrap_or("unknown")
            ),
            Some("cancelled") => bail!("rebuild was cancelled (a newer version replaced it)"),
            _ => {}
        }
    }
    bail!("gave up waiting after {WAIT_LIMIT:?}")
}
