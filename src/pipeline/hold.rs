//! Poison isolation per key: a key whose event keeps failing transiently is
//! *held* on that route, so the key's later events wait behind it (its order
//! is kept) while the consumer's cursor, and every other key, moves on.
//!
//! A held key is a record in the store's `meta` table (`held/["route","key"]`)
//! listing the ingest-topic offsets of its waiting events, the failing one
//! first. It is written in the same transaction as the batch that held it (or
//! added to it), and the retry that releases an event commits its outputs with
//! the shortened list, so an event is handled exactly once either way.
//!
//! The failing event is retried with a growing back-off (`router.hold_*`);
//! after `hold_retries` it is dead-lettered and, with `on_poison = "wait"`, the
//! key's next events go on in order; with `"park"` the key stays parked and its
//! events are dead-lettered as `key-parked` until a dead-letter replay releases
//! it. An open circuit whose plugin is set to `on_open = "wait"` holds keys the
//! same way, retried at the breaker's next probe.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::stage::{StageFailure, StagePolicy, dead_letter};
use crate::config::OnPoison;
use crate::event::Event;
use crate::router::Route;
use crate::store::{Store, StoreError};

/// Prefix of held-key records in the store's `meta` table.
pub const HELD_PREFIX: &str = "held/";

/// Shortest wait before a held event is tried again, whatever the config
/// says: a key that is retried at once, again and again, would keep the
/// consumer from ever reading on.
const MIN_RETRY: Duration = Duration::from_millis(10);

/// Unix milliseconds `wait` (at least [`MIN_RETRY`]) from now.
fn after(wait: Duration) -> u64 {
    now_ms() + wait.max(MIN_RETRY).as_millis() as u64
}

/// One held (route, key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub route: String,
    pub key: String,
    /// Ingest-topic offsets of the key's waiting events, the failing one first.
    pub offsets: Vec<u64>,
    /// Attempts of the first event so far.
    pub attempts: u32,
    /// Held retries of the first event so far.
    pub retries: u32,
    /// Unix milliseconds when the first event is tried again.
    pub next_at_ms: u64,
    /// The key's failing event was dead-lettered: its events are
    /// dead-lettered as `key-parked` until a replay releases it.
    pub parked: bool,
    /// The last failure of the first event.
    pub reason: String,
    pub error: String,
}

impl Held {
    /// The `meta` key of this record.
    pub fn meta_key(&self) -> String {
        meta_key(&self.route, &self.key)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether a retry is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        !self.parked && !self.offsets.is_empty() && self.next_at_ms <= now_ms
    }
}

/// The `meta` key of the record of `key` held on `route`.
pub fn meta_key(route: &str, key: &str) -> String {
    format!(
        "{HELD_PREFIX}{}",
        serde_json::to_string(&[route, key]).unwrap_or_default()
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Every held (route, key), by (route, key).
pub fn load(store: &Store) -> Result<HashMap<(String, String), Held>, StoreError> {
    let mut out = HashMap::new();
    for (k, v) in store.meta_scan(HELD_PREFIX)? {
        match serde_json::from_slice::<Held>(&v) {
            Ok(h) => {
                out.insert((h.route.clone(), h.key.clone()), h);
            }
            Err(e) => return Err(StoreError::Read(format!("meta record {k} is corrupt: {e}"))),
        }
    }
    Ok(out)
}

/// How long until the earliest due retry (zero when one is due now).
pub fn next_due(held: &HashMap<(String, String), Held>) -> Option<Duration> {
    let now = now_ms();
    held.values()
        .filter(|h| !h.parked && !h.offsets.is_empty())
        .map(|h| Duration::from_millis(h.next_at_ms.saturating_sub(now)))
        .min()
}

/// Whether a rebuild of the projection that is `route`'s first stage is in
/// progress. The rebuild skips the events held on the route when it passes
/// them, so they must stay held until it has switched over: released before,
/// they would be in neither generation; after, in the new one exactly once.
pub fn rebuilding(store: &Store, route: &Route) -> Result<bool, StoreError> {
    let Some(first) = route.stages.first() else {
        return Ok(false);
    };
    let meta = store.meta_get(&format!("projection/{}", first.plugin.name()))?;
    Ok(meta
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|m| !m["rebuild"].is_null()))
}

/// Whether `f` on `route` holds the key rather than dead-lettering the event.
pub fn holds(route: &Route, f: &StageFailure, policy: &StagePolicy) -> bool {
    if f.kind == "circuit-open" {
        return f.transient;
    }
    f.transient && route.on_poison != OnPoison::DeadLetter && policy.hold_retries > 0
}

/// A new hold of `key` on `route`, its failing event at `offset`.
pub fn start(
    route: &Route,
    key: &str,
    offset: u64,
    f: &StageFailure,
    policy: &StagePolicy,
) -> Held {
    let wait = f.retry_in.unwrap_or_else(|| policy.hold_delay(0));
    tracing::warn!(route = %route.name, key, offset, reason = %f.kind, retry_in_ms = wait.as_millis() as u64, "key held: its later events wait");
    Held {
        route: route.name.clone(),
        key: key.to_string(),
        offsets: vec![offset],
        attempts: f.attempts,
        retries: 0,
        next_at_ms: after(wait),
        parked: false,
        reason: f.kind.clone(),
        error: f.error.clone(),
    }
}

/// The dead-letter record of an event of a parked key on `route`.
pub fn parked_letter(ev: &Event, h: &Held, route: &Route) -> Event {
    let f = StageFailure::router(
        "key-parked",
        format!(
            "key {:?} is parked on route {:?} since an earlier event of it was dead-lettered ({}); replay the dead letters to release it",
            h.key, h.route, h.reason
        ),
    )
    .on(route);
    dead_letter(ev, Some(&h.route), &f)
}

/// What the retry of a held key's first event came to.
pub enum Retried {
    /// Try again later (the record is updated).
    Later,
    /// It was dead-lettered (the record is updated; parked if so configured).
    DeadLettered(Box<Event>),
}

/// Updates `h` after its first event failed again with `f`.
pub fn failed_again(
    h: &mut Held,
    route: &Route,
    ev: &Event,
    f: &StageFailure,
    policy: &StagePolicy,
) -> Retried {
    h.reason = f.kind.clone();
    h.error = f.error.clone();
    if f.kind == "circuit-open" {
        // Waiting for the breaker is not an attempt of the event, and a held
        // event waits for it whatever the plugin's `on_open`.
        h.next_at_ms = after(f.retry_in.unwrap_or_else(|| policy.hold_delay(h.retries)));
        return Retried::Later;
    }
    h.attempts = h.attempts.saturating_add(f.attempts);
    if !f.transient {
        return dead_lettered(h, route, ev, f);
    }
    h.retries += 1;
    if h.retries >= policy.hold_retries {
        return dead_lettered(h, route, ev, f);
    }
    h.next_at_ms = after(policy.hold_delay(h.retries));
    Retried::Later
}

fn dead_lettered(h: &mut Held, route: &Route, ev: &Event, f: &StageFailure) -> Retried {
    let f = StageFailure {
        attempts: h.attempts,
        ..f.clone()
    };
    tracing::warn!(event = %ev.id, route = %route.name, key = %h.key, reason = %f.kind, attempts = h.attempts, "held event dead-lettered");
    h.offsets.remove(0);
    h.attempts = 0;
    h.retries = 0;
    if route.on_poison == OnPoison::Park && f.transient {
        h.parked = true;
        tracing::warn!(route = %route.name, key = %h.key, "key parked until its dead letters are replayed");
    }
    Retried::DeadLettered(Box::new(dead_letter(ev, Some(&route.name), &f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_keys_are_distinct_for_any_route_and_key() {
        assert_ne!(meta_key("a/b", "c"), meta_key("a", "b/c"));
        assert!(meta_key("r", "k").starts_with(HELD_PREFIX));
        let h = Held {
            route: "r".into(),
            key: "k".into(),
            offsets: vec![3, 5],
            attempts: 3,
            retries: 0,
            next_at_ms: 10,
            parked: false,
            reason: "transient".into(),
            error: "e".into(),
        };
        assert!(h.due(10) && !h.due(9));
        let back: Held = serde_json::from_slice(&h.to_bytes()).unwrap();
        assert_eq!(back, h);
    }
}
