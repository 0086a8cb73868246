//! A plugin version's circuit breaker.
//!
//! After `failures` failed events in a row the circuit *opens*: the pipeline
//! stops calling the plugin and dead-letters (or holds) its events. After a
//! back-off one *probe* call is let through (*half-open*); its success closes
//! the circuit, its failure opens it again with the back-off doubled, up to a
//! cap. A reload makes a new [`super::Plugin`] and so a closed breaker.
//!
//! The breaker only counts; the pipeline decides which outcomes are failures
//! (see `pipeline::stage`). Each transition is logged once, here.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::BreakerConfig;

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: call.
    Call,
    /// Half-open: this call is the probe; its outcome decides.
    Probe,
    /// Open: do not call; the next probe is due in this long.
    Open(Duration),
}

/// What a call (with the pipeline's checks of its outputs) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The plugin did its job (outputs, or a considered `bad-event`).
    Healthy,
    /// The plugin failed (trap, deadline, memory, bad output, transient).
    Failed,
    /// Not the plugin's doing (the host failed under it).
    Neutral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// The breaker as `GET /v1/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerView {
    pub state: CircuitState,
    pub consecutive_failures: u32,
    /// Failures in a row that open it (0: the breaker is off).
    pub threshold: u32,
    pub on_open: &'static str,
    /// Times it opened since this version was loaded.
    pub opens: u64,
    /// RFC 3339, when it last opened.
    pub opened_at: Option<String>,
    /// RFC 3339, when the next probe is let through (while open).
    pub next_probe_at: Option<String>,
    /// The back-off that led to `next_probe_at`.
    pub backoff_ms: u64,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    failures: u32,
    opens: u64,
    backoff: Duration,
    opened_at: Option<SystemTime>,
    next_probe: Option<Instant>,
    next_probe_wall: Option<SystemTime>,
}

/// One plugin version's breaker; shared by all its concurrent calls.
#[derive(Debug)]
pub struct Breaker {
    plugin: String,
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(plugin: &str, cfg: BreakerConfig) -> Self {
        Self {
            plugin: plugin.to_string(),
            cfg,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                failures: 0,
                opens: 0,
                backoff: Duration::ZERO,
                opened_at: None,
                next_probe: None,
                next_probe_wall: None,
            }),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Asks to call the plugin now.
    pub fn admit(&self) -> Admit {
        let mut s = self.lock();
        match s.state {
            CircuitState::Closed => Admit::Call,
            CircuitState::HalfOpen => Admit::Open(Duration::ZERO),
            CircuitState::Open => {
                let now = Instant::now();
                let due = s.next_probe.unwrap_or(now);
                if now >= due {
                    s.state = CircuitState::HalfOpen;
                    tracing::info!(plugin = %self.plugin, opens = s.opens, "circuit half-open, probing");
                    Admit::Probe
                } else {
                    Admit::Open(due - now)
                }
            }
        }
    }

    /// Records the outcome of an admitted call (`probe`: it was the probe).
    pub fn record(&self, probe: bool, verdict: Verdict) {
        if self.cfg.failures == 0 {
            return;
        }
        let mut s = self.lock();
        match (s.state, verdict) {
            (CircuitState::HalfOpen, _) if !probe => {}
            (CircuitState::HalfOpen, Verdict::Healthy) => {
                s.state = CircuitState::Closed;
                s.failures = 0;
                s.next_probe = None;
                s.next_probe_wall = None;
                tracing::info!(plugin = %self.plugin, opens = s.opens, "circuit closed, probe succeeded");
            }
            (CircuitState::HalfOpen, Verdict::Failed) => {
                let backoff = (s.backoff * 2).min(self.max_backoff());
                self.open(&mut s, backoff, "probe failed");
            }
            // The host failed under the probe: let the next call probe again.
            (CircuitState::HalfOpen, Verdict::Neutral) => s.state = CircuitState::Open,
            (CircuitState::Closed, Verdict::Healthy) => s.failures = 0,
            (CircuitState::Closed, Verdict::Failed) => {
                s.failures = s.failures.saturating_add(1);
                if s.failures >= self.cfg.failures {
                    let backoff =
                        Duration::from_millis(self.cfg.backoff_ms).min(self.max_backoff());
                    self.open(&mut s, backoff, "consecutive failures");
                }
            }
            // Calls admitted before it opened finish while it is open.
            (CircuitState::Open, Verdict::Failed) => s.failures = s.failures.saturating_add(1),
            _ => {}
        }
    }

    fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.cfg.max_backoff_ms.max(self.cfg.backoff_ms))
    }

    fn open(&self, s: &mut Inner, backoff: Duration, why: &str) {
        s.state = CircuitState::Open;
        s.opens += 1;
        s.backoff = backoff;
        s.opened_at = Some(SystemTime::now());
        s.next_probe = Some(Instant::now() + backoff);
        s.next_probe_wall = Some(SystemTime::now() + backoff);
        tracing::warn!(
            plugin = %self.plugin,
            failures = s.failures,
            backoff_ms = backoff.as_millis() as u64,
            opens = s.opens,
            why,
            "circuit opened"
        );
    }

    pub fn view(&self) -> BreakerView {
        let s = self.lock();
        let rfc = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
        BreakerView {
            state: s.state,
            consecutive_failures: s.failures,
            threshold: self.cfg.failures,
            on_open: match self.cfg.on_open {
                crate::config::OnOpen::DeadLetter => "dead-letter",
                crate::config::OnOpen::Wait => "wait",
            },
            opens: s.opens,
            opened_at: s.opened_at.map(rfc),
            next_probe_at: match s.state {
                CircuitState::Closed => None,
                _ => s.next_probe_wall.map(rfc),
            },
            backoff_ms: s.backoff.as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, backoff_ms: u64, max_backoff_ms: u64) -> Breaker {
        Breaker::new(
            "p",
            BreakerConfig {
                failures,
                backoff_ms,
                max_backoff_ms,
                ..Default::default()
            },
        )
    }

    #[test]
    fn opens_after_n_failures_in_a_row_and_a_success_resets_the_count() {
        let b = breaker(3, 60_000, 60_000);
        for _ in 0..2 {
            assert_eq!(b.admit(), Admit::Call);
            b.record(false, Verdict::Failed);
        }
        b.record(false, Verdict::Healthy);
        assert_eq!(b.view().consecutive_failures, 0);
        for _ in 0..2 {
            b.record(false, Verdict::Failed);
        }
        b.record(false, Verdict::Neutral);
        assert_eq!(b.admit(), Admit::Call, "host failures do not count");
        b.record(false, Verdict::Failed);
        assert!(matches!(b.admit(), Admit::Open(d) if d > Duration::ZERO));
        let v = b.view();
        assert_eq!((v.state, v.opens), (CircuitState::Open, 1));
        assert!(v.opened_at.is_some() && v.next_probe_at.is_some());
    }

    #[test]
    fn one_probe_after_the_backoff_closes_or_reopens_with_a_longer_capped_backoff() {
        let b = breaker(1, 0, 0);
        b.record(false, Verdict::Failed);
        assert_eq!(b.view().state, CircuitState::Open);
        assert_eq!(b.admit(), Admit::Probe);
        // Only one probe at a time.
        assert_eq!(b.admit(), Admit::Open(Duration::ZERO));
        b.record(false, Verdict::Healthy); // a call admitted earlier: ignored
        assert_eq!(b.view().state, CircuitState::HalfOpen);
        b.record(true, Verdict::Healthy);
        assert_eq!(b.view().state, CircuitState::Closed);
        assert_eq!(b.admit(), Admit::Call);

        let b = breaker(1, 10, 25);
        b.record(false, Verdict::Failed);
        assert_eq!(b.view().backoff_ms, 10);
        b.lock().next_probe = Some(Instant::now());
        assert_eq!(b.admit(), Admit::Probe);
        b.record(true, Verdict::Failed);
        assert_eq!(
            (b.view().state, b.view().backoff_ms),
            (CircuitState::Open, 20)
        );
        b.lock().next_probe = Some(Instant::now());
        assert_eq!(b.admit(), Admit::Probe);
        b.record(true, Verdict::Failed);
        assert_eq!(b.view().backoff_ms, 25, "capped");
        assert_eq!(b.view().opens, 3);
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let b = breaker(0, 0, 0);
        for _ in 0..10 {
            b.record(false, Verdict::Failed);
        }
        assert_eq!(b.admit(), Admit::Call);
    }
}
