//! `switchyard tap TOPIC [--type GLOB]... [--from-start]`: a live view of a
//! topic's records in the terminal, read from the router's SSE stream
//! (`GET /v1/topics/{topic}/stream`), one line per record.
//!
//! Without `--from-start` it begins at the topic's current end, like
//! `tail -f`. The stream resumes after a dropped connection from the last
//! offset seen (the SSE `id`), so no record is shown twice or skipped.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// What to show.
pub struct TapArgs {
    pub url: String,
    pub topic: String,
    /// Event type globs; empty shows every record.
    pub types: Vec<String>,
    pub from_start: bool,
    /// Stop after this many shown records.
    pub count: Option<usize>,
    /// Print each record as one JSON line instead of a summary.
    pub json: bool,
}

/// Pause before reconnecting after the stream dropped.
const RECONNECT: Duration = Duration::from_millis(500);
/// Characters of `data` shown on a summary line.
const DATA_PREVIEW: usize = 120;

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .into()
}

/// The topic's current length, from `GET /v1/topics`.
fn length(url: &str, topic: &str) -> Result<u64> {
    let mut resp = agent(Some(Duration::from_secs(10)))
        .get(format!("{url}/v1/topics"))
        .call()
        .with_context(|| format!("cannot reach the router at {url}"))?;
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string()?)
        .context("GET /v1/topics did not answer JSON")?;
    Ok(body["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == topic)
        .and_then(|t| t["length"].as_u64())
        .unwrap_or(0))
}

/// One summary line: offset, time, type, id, key, then the data.
pub fn summary(rec: &Value) -> String {
    let s = |k: &str| rec[k].as_str().unwrap_or("-").to_string();
    let mut data = rec["data"].to_string();
    if data.chars().count() > DATA_PREVIEW {
        data = data.chars().take(DATA_PREVIEW).collect::<String>() + "…";
    }
    format!(
        "{:>6}  {}  {}  id={}  key={}  {}",
        rec["offset"],
        s("time"),
        s("type"),
        s("id"),
        s("partitionkey"),
        data
    )
}

pub fn run(args: TapArgs) -> Result<()> {
    let url = args.url.trim_end_matches('/');
    let mut next = if args.from_start {
        0
    } else {
        length(url, &args.topic)?
    };
    let mut shown = 0;
    let stdout = std::io::stdout();
    eprintln!(
        "tapping {} from offset {next}{}",
        args.topic,
        if args.types.is_empty() {
            String::new()
        } else {
            format!(", types {}", args.types.join(", "))
        }
    );
    loop {
        let resp = agent(None)
            .get(format!("{url}/v1/topics/{}/stream?from={next}", args.topic))
            .header("accept", "text/event-stream")
            .call()
            .with_context(|| format!("cannot reach the router at {url}"))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let mut resp = resp;
            bail!(
                "the router answered {status}: {}",
                resp.body_mut().read_to_string().unwrap_or_default()
            );
        }
        let reader = BufReader::new(resp.into_body().into_reader());
        let mut event = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                if event == "error" {
                    eprintln!("stream error: {}", data.trim());
                    continue;
                }
                let Ok(rec) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                if let Some(o) = rec["offset"].as_u64() {
                    next = o + 1;
                }
                let t = rec["type"].as_str().unwrap_or_default();
                if !args.types.is_empty()
                    && !args.types.iter().any(|g| glob_match::glob_match(g, t))
                {
                    continue;
                }
                let text = if args.json {
                    rec.to_string()
                } else {
                    summary(&rec)
                };
                let mut out = stdout.lock();
                writeln!(out, "{text}")?;
                out.flush()?;
                shown += 1;
                if args.count.is_some_and(|c| shown >= c) {
                    return Ok(());
                }
            } else if line.is_empty() {
                event.clear();
            }
        }
        // The router closed the stream (it is stopping, or a read failed):
        // come back where we left off.
        std::thread::sleep(RECONNECT);
        if length(url, &args.topic).is_err() {
            bail!("the router at {url} went away");
        }
    }
}
