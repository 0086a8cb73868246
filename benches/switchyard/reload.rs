//! Scenarios 4 and 5: hot reload of a plugin file (cold compile and compile
//! cache hit, the output pause during a swap under load, events lost) and a
//! projection rebuild replaying the log into fresh state.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use switchyard::reload::Request;
use switchyard::store::WriteBatch;

use crate::ingest::{CursorLog, caught_up};
use crate::load;
use crate::report::{Report, Section};
use crate::util::{self, ms, rate};

/// The component with a custom section naming `nonce` appended: the same
/// code, but new bytes, so a new digest (the compile cache misses).
fn variant(base: &[u8], nonce: u64) -> Vec<u8> {
    let name = b"bench-nonce";
    let payload = nonce.to_le_bytes();
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    let mut out = base.to_vec();
    out.push(0); // custom section
    out.push(body.len() as u8); // LEB128 of a size < 128
    out.extend(body);
    out
}

fn version_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..12].to_string()
}

/// Writes `bytes` over `path` the way a build tool does (temp file, rename).
fn put(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn serving(rt: &switchyard::Runtime) -> String {
    rt.stage("domain-fanout")
        .map(|s| s.plugin.version().to_string())
        .unwrap_or_default()
}

/// Longest time between two advances of the router cursor inside [from, to].
fn longest_gap(log: &CursorLog, from: Instant, to: Instant) -> Duration {
    let e: Vec<Instant> = log
        .entries()
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| *t >= from && *t <= to)
        .collect();
    e.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

pub fn reload(report: &mut Report, bodies: &[String], saturation: f64, quick: bool) -> Result<()> {
    let rt = util::threads(2)?;
    rt.block_on(async {
        let tmp = tempfile::tempdir()?;
        let file = tmp.path().join("domain-fanout.wasm");
        let base = std::fs::read(util::dist("domain-fanout"))?;
        std::fs::write(&file, &base)?;
        let router = util::Router::in_dir(tmp.path(), &util::fanout_config(&file, 4, true)).await?;
        let r = router.rt.clone();
        let mut s = Section::new(
            "4. Hot reload (domain-fanout)",
            "File write → serving: the component is written (temp file + rename) and the time runs until the \
             route table serves the new version; it includes the watcher's 200 ms debounce. Admin reload: \
             `Request::Plugin` through the reload controller (load, instantiate, `init`, swap), no debounce. \
             Cold: new bytes (a custom section with a nonce), so Cranelift compiles; cache hit: bytes compiled \
             before. Under load: single events open loop at half the single-event saturation rate; the pause is \
             the longest time between two advances of the router cursor from the file write until 1 s after the \
             new version serves, against the longest such gap in a second of the same load before it. Lost: \
             every accepted event must have exactly its one output (ids derived from the input ids).",
            &["case", "file write → serving ms", "admin reload ms"],
        );
        let handle = r.reload.get().context("reload controller not started")?.clone();
        for case in ["cold compile", "cache hit"] {
            // Cold: never-seen bytes. Hit: bytes compiled earlier (the start-up
            // version, and the first admin variant).
            let (watched_bytes, admin_bytes) = if case == "cold compile" {
                (variant(&base, 1), variant(&base, 2))
            } else {
                (base.clone(), variant(&base, 2))
            };
            let want = version_of(&watched_bytes);
            let start = Instant::now();
            put(&file, &watched_bytes)?;
            util::wait_until(Duration::from_secs(120), || serving(&r) == want).await?;
            let watched = start.elapsed();
            tokio::time::sleep(Duration::from_millis(400)).await;
            // The admin path: the request goes in at once, so the watcher's
            // own (debounced) request for the same bytes finds them unchanged.
            put(&file, &admin_bytes)?;
            let start = Instant::now();
            let outcome = handle.request(Request::Plugin("domain-fanout".into()), "bench").await;
            let admin = start.elapsed();
            anyhow::ensure!(outcome.as_ref().is_some_and(|o| !o.is_failure()), "admin reload failed: {outcome:?}");
            anyhow::ensure!(serving(&r) == version_of(&admin_bytes), "admin reload did not swap");
            tokio::time::sleep(Duration::from_millis(400)).await;
            s.row(vec![case.into(), ms(watched), ms(admin)]);
            report.headline(&format!("hot reload, file write → serving, {case}"), format!("{} ms", ms(watched)), "–", None);
        }

        // Under load.
        let rate_half = (saturation * 0.5).max(200.0);
        caught_up(&r.store).await?;
        let (cursor, watcher) = CursorLog::spawn(r.store.clone());
        let reqs = Arc::new(load::bodies(bodies, 1));
        let secs = if quick { 4 } else { 8 };
        let addr = router.addr;
        let load_task = tokio::spawn(load::open_loop(addr, reqs, rate_half, Duration::from_secs(secs), 64));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let quiet_from = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let quiet_gap = longest_gap(&cursor, quiet_from, Instant::now());
        let mut gaps = Vec::new();
        for case in ["cold compile", "cache hit"] {
            let bytes = if case == "cold compile" { variant(&base, 999) } else { base.clone() };
            let want = version_of(&bytes);
            let wrote = Instant::now();
            put(&file, &bytes)?;
            util::wait_until(Duration::from_secs(120), || serving(&r) == want).await?;
            let served = Instant::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
            gaps.push((case, served - wrote, longest_gap(&cursor, wrote, Instant::now())));
        }
        let samples = load_task.await??;
        caught_up(&r.store).await?;
        watcher.abort();
        let lost = lost_events(&r.store).await?;
        for (case, took, gap) in &gaps {
            s.row(vec![
                format!("under load ({} events/s), {case}: longest output pause {} ms (quiet load: {} ms)", rate(rate_half), ms(*gap), ms(quiet_gap)),
                ms(*took),
                "".into(),
            ]);
        }
        s.row(vec![
            format!("events accepted under load: {}; lost or duplicated outputs over the whole run: {lost}", samples.len()),
            "".into(),
            "".into(),
        ]);
        let worst = gaps.iter().map(|g| g.2).max().unwrap_or_default();
        report.headline("longest output pause during a swap at 50% saturation", format!("{} ms (quiet: {} ms)", ms(worst), ms(quiet_gap)), "–", None);
        report.headline("events lost during swaps", lost.to_string(), "0", Some(lost == 0));
        report.sections.push(s);
        router.stop().await?;
        Ok(())
    })
}

/// Inputs without exactly one output with the derived id, plus outputs
/// that are not of an input.
async fn lost_events(store: &switchyard::Store) -> Result<usize> {
    let mut want = HashSet::new();
    let len = store.topic_len("events")?;
    let mut off = 0;
    while off < len {
        let recs = store.read("events", off, 10_000)?;
        off = recs.last().map_or(len, |r| r.offset + 1);
        for r in recs {
            want.insert(switchyard::pipeline::derive_id(
                &r.event.id,
                "domain-fanout",
                0,
                0,
            ));
        }
    }
    let mut bad = 0;
    let mut seen = HashSet::new();
    for (topic, n) in store.topics()? {
        if !topic.starts_with("domain.") {
            continue;
        }
        let mut off = 0;
        while off < n {
            let recs = store.read(&topic, off, 10_000)?;
            off = recs.last().map_or(n, |r| r.offset + 1);
            for r in recs {
                if !want.contains(&r.event.id) || !seen.insert(r.event.id) {
                    bad += 1;
                }
            }
        }
    }
    Ok(bad + want.len() - seen.len())
}

/// Scenario 5: the default config's projection rebuilt over `events`.
pub fn rebuild(report: &mut Report, events: &[switchyard::Event]) -> Result<()> {
    let rt = util::threads(2)?;
    rt.block_on(async {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("data");
        let n = events.len() as u64;
        {
            let store = switchyard::Store::open(&data)?;
            let start = Instant::now();
            crate::stage::seed(&store, events).await?;
            // Already handled live: only the rebuild reads them.
            store.write(WriteBatch { cursors: vec![("router".into(), n)], ..Default::default() }).await?;
            tracing::debug!(secs = start.elapsed().as_secs_f64(), "log written");
            store.close();
        }
        let text = std::fs::read_to_string(util::root().join("config/switchyard.toml"))?
            .replace("../plugins/dist", &util::root().join("plugins/dist").display().to_string())
            .replace("schemas/", &format!("{}/", util::root().join("config/schemas").display()))
            .replace("watch = true", "watch = false");
        let (_, cfg) = util::write_config(tmp.path(), &text)?;
        let router = util::Router::start(cfg, &data).await?;
        let r = router.rt.clone();
        let handle = r.reload.get().context("reload controller not started")?.clone();
        let routed = events
            .iter()
            .filter(|e| e.event_type.starts_with("prison-offender-events.prisoner.re"))
            .count();
        let start = Instant::now();
        let outcome = handle.request(Request::Rebuild("prisoner-projection".into()), "bench").await;
        anyhow::ensure!(outcome.as_ref().is_some_and(|o| !o.is_failure()), "rebuild refused: {outcome:?}");
        let done = || {
            r.statuses
                .view("prisoner-projection")
                .rebuild
                .is_some_and(|p| p.state == "done" && p.offset >= n)
        };
        util::wait_until(Duration::from_secs(3600), done).await?;
        let took = start.elapsed();
        let eps = n as f64 / took.as_secs_f64();
        let mut s = Section::new(
            "5. Projection rebuild (prisoner-projection, default config)",
            &format!(
                "{n} events already in the log (router cursor past them); a rebuild request replays the whole \
                 log into a fresh state generation and swaps it in. The projection's routes take the received \
                 and released events ({routed} of them); the rest are read and skipped."
            ),
            &["events in log", "projection calls", "seconds", "log events/s", "projection calls/s"],
        );
        s.row(vec![
            n.to_string(),
            routed.to_string(),
            format!("{:.2}", took.as_secs_f64()),
            rate(eps),
            rate(routed as f64 / took.as_secs_f64()),
        ]);
        report.headline(&format!("projection rebuild, log events/s ({n} events)"), rate(eps), "–", None);
        report.sections.push(s);
        router.stop().await?;
        Ok(())
    })
}
