//! Scenario 10: the trace index at scale, the store alone. Section 8 drains
//! 100,000 events, a few runs' worth; the index's merges only begin at 16
//! runs (262,144 entries), so this writes millions of entries the way the
//! pipeline does and times lookups as the runs pile up and merge.

use std::time::{Duration, Instant};

use anyhow::Result;
use switchyard::store::{Store, Trace, WriteBatch};

use crate::events;
use crate::report::{Report, Section};
use crate::util::{self, rate};

/// Entries per write, as the pipeline's batches.
const BATCH: usize = 256;
/// Writes queued at once, as the pipeline keeps them.
const IN_FLIGHT: usize = 3;
/// Lookups timed at each checkpoint.
const LOOKUPS: usize = 500;

pub fn trace_index(report: &mut Report, quick: bool) -> Result<()> {
    let total = if quick { 400_000 } else { 4_000_000 };
    let mut s = Section::new(
        "10. Trace index at scale (the store alone)",
        &format!(
            "{total} trace entries for random (version 4 UUID) ids written through `Store::queue` as the \
             pipeline writes them: {BATCH} a write, {IN_FLIGHT} writes in flight, each entry naming one \
             record of its write and one output (about 100 bytes, like the pipeline's), one record a \
             write, so the index is most of each commit. At each quarter: the entries per second over \
             that quarter, the index's runs and the entries waiting in chunks (as `/metrics` shows them), \
             and `Store::trace` for {LOOKUPS} ids spread over all written so far (each must be found). \
             Runs are sealed every 16,384 entries and merged 16 at a time."
        ),
        &[
            "entries",
            "entries/s (this quarter)",
            "runs",
            "waiting in chunks",
            "lookup p50 ms",
            "lookup p99 ms",
        ],
    );
    let rt = util::current_thread()?;
    rt.block_on(async {
        let tmp = tempfile::tempdir()?;
        let store = Store::open(&tmp.path().join("data"))?;
        let id = |i: usize| events::event_id(events::SEED ^ 0x7ace, i);
        let output = br#"{"route":"domain-fanout","stages":[["domain-fanout","0.1.0"]]}"#.to_vec();
        let record = events::generate(events::SEED, 1)
            .into_iter()
            .next()
            .map(|g| g.event)
            .ok_or_else(|| anyhow::anyhow!("no event generated"))?;
        let quarter = total / 4;
        let (mut written, mut queued) = (0usize, Vec::new());
        for _ in 0..4 {
            let started = Instant::now();
            let end = written + quarter;
            while written < end {
                let traces = (written..(written + BATCH).min(end))
                    .map(|i| Trace {
                        id: id(i),
                        writer: 1,
                        input: Some(0),
                        outputs: vec![(0, output.clone())],
                        ..Default::default()
                    })
                    .collect::<Vec<_>>();
                written += traces.len();
                let batch = WriteBatch {
                    appends: vec![("in".to_string(), record.clone())],
                    traces,
                    ..Default::default()
                };
                queued.push(store.queue(batch)?);
                if queued.len() >= IN_FLIGHT {
                    queued.remove(0).written().await?;
                }
            }
            for q in queued.drain(..) {
                q.written().await?;
            }
            let per_sec = quarter as f64 / started.elapsed().as_secs_f64();
            let (runs, waiting) = store.trace_index();
            let mut times = Vec::with_capacity(LOOKUPS);
            for k in 0..LOOKUPS {
                let i = k * written / LOOKUPS;
                let t = Instant::now();
                let entries = store.trace(&id(i))?;
                times.push(t.elapsed());
                anyhow::ensure!(!entries.is_empty(), "no trace entry for input {i}");
            }
            times.sort();
            let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
            let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
            s.row(vec![
                rate(written as f64),
                rate(per_sec),
                runs.to_string(),
                rate(waiting as f64),
                ms(at(0.5)),
                ms(at(0.99)),
            ]);
        }
        store.close();
        anyhow::Ok(())
    })?;
    report.sections.push(s);
    Ok(())
}
