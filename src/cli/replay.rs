//! `switchyard replay --projection NAME`: asks a running router to rebuild a
//! projection from its event log, and optionally follows the progress.
//! `switchyard replay --dead-letter [--filter ..] [--dry-run]`: asks it to
//! re-inject dead-letter records into its pipeline.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How long `--wait` follows a rebuild before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(6 * 3600);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Re-injects the dead-letter records `filter` (`plugin=X,reason=Y,type=Z`)
/// takes; prints what was (or, with `dry_run`, would be) replayed.
pub fn dead_letters(url: &str, filter: &str, dry_run: bool, token: Option<&str>) -> Result<()> {
    let f = switchyard::pipeline::replay::Filter::parse(filter)
        .map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
    let body = serde_json::json!({
        "plugin": f.plugin,
        "reason": f.reason,
        "type": f.event_type,
        "dryRun": dry_run,
    });
    let base = url.trim_end_matches('/');
    let mut req = agent()
        .post(&format!("{base}/v1/dead-letter/replay"))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut resp = req
        .send(body.to_string().as_bytes())
        .with_context(|| format!("cannot reach the router at {base}"))?;
    let text = resp.body_mut().read_to_string()?;
    let report: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !resp.status().is_success() {
        bail!("dead-letter replay refused ({}): {report}", resp.status());
    }
    for r in report["records"].as_array().into_iter().flatten() {
        println!(
            "{} dead-letter@{} event {} route {} ({})",
            if dry_run { "would replay" } else { "replayed" },
            r["offset"],
            r["eventId"].as_str().unwrap_or("?"),
            r["route"].as_str().unwrap_or("-"),
            r["reason"].as_str().unwrap_or("?"),
        );
    }
    for s in report["skipped"].as_array().into_iter().flatten() {
        println!(
            "skipped dead-letter@{}: {}",
            s["offset"],
            s["reason"].as_str().unwrap_or("?")
        );
    }
    if report["superseded"].as_u64() > Some(0) {
        println!(
            "{} record(s) not replayed: their projection was rebuilt since and holds them",
            report["superseded"]
        );
    }
    println!(
        "{} {} record(s); {} replayed before; {} key(s) released",
        if dry_run { "would replay" } else { "replayed" },
        if dry_run {
            &report["matched"]
        } else {
            &report["replayed"]
        },
        report["alreadyReplayed"],
        report["releasedKeys"],
    );
    Ok(())
}

pub fn replay(url: &str, projection: &str, wait: bool, token: Option<&str>) -> Result<()> {
    let agent = agent();
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
