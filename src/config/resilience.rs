//! Config for failing plugins and failing keys: the per-plugin circuit
//! breaker (`[plugins.NAME.breaker]`), what a route does with a key whose
//! event keeps failing transiently (`[[routes]] on_poison`), and how long such
//! a key is held (`[router] hold_*`).

use serde::Deserialize;

/// Default consecutive failures that open a plugin's circuit: a handful of
/// traps in a row is a broken version, not bad luck with one event.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default wait before the first probe of an open circuit.
pub const DEFAULT_BREAKER_BACKOFF_MS: u64 = 1_000;
/// Default cap on the wait between probes: it doubles after each failed
/// probe, and a fixed plugin should not wait longer than this to be tried.
pub const DEFAULT_BREAKER_MAX_BACKOFF_MS: u64 = 60_000;
/// Default further attempts of a held event after the in-batch attempts.
pub const DEFAULT_HOLD_RETRIES: u32 = 10;
/// Default wait before the first retry of a held event; doubles each time.
pub const DEFAULT_HOLD_BACKOFF_MS: u64 = 1_000;
/// Default cap on the wait between retries of a held event.
pub const DEFAULT_HOLD_MAX_BACKOFF_MS: u64 = 60_000;

/// A plugin's circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed events (trap, timeout, memory limit, denied
    /// capability, bad output, transient after its retries) that open the
    /// circuit; 0 turns the breaker off. A `bad-event` answer is the plugin
    /// working as meant and counts as a success.
    pub failures: u32,
    /// What happens to the plugin's events while the circuit is open.
    pub on_open: OnOpen,
    /// Wait before the first probe call, in milliseconds.
    pub backoff_ms: u64,
    /// Cap on the wait between probes (it doubles after a failed probe).
    pub max_backoff_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: DEFAULT_BREAKER_FAILURES,
            on_open: OnOpen::DeadLetter,
            backoff_ms: DEFAULT_BREAKER_BACKOFF_MS,
            max_backoff_ms: DEFAULT_BREAKER_MAX_BACKOFF_MS,
        }
    }
}

/// Events of a plugin whose circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnOpen {
    /// To the dead-letter topic with reason `circuit-open` (replayable).
    #[default]
    DeadLetter,
    /// Held per key (like a transient failure) and retried at the next probe.
    Wait,
}

/// What a route does when an event of a key keeps failing transiently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnPoison {
    /// Hold the key: its later events wait (in order) while the failing one
    /// is retried with back-off; other keys flow. After `hold_retries` the
    /// failing event is dead-lettered and the key's events go on.
    #[default]
    Wait,
    /// Like `wait`, but once the failing event is dead-lettered the key stays
    /// parked: its later events are dead-lettered as `key-parked` until a
    /// dead-letter replay releases it.
    Park,
    /// No holding: the event is dead-lettered after its in-batch attempts.
    DeadLetter,
}
