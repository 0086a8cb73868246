//! The plugin's durable key-value state (the WIT `kv` interface).
//!
//! Writes made while handling an event commit together with that event's
//! outputs, or not at all, so a plugin can read-modify-write here without
//! worrying about half-applied events or replays.

use crate::Failure;
use crate::bindings::switchyard::plugin::kv as host;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The raw bytes stored under `key`, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    host::get(key)
}

/// Stores `value` under `key`, replacing any previous value.
pub fn put(key: &str, value: &[u8]) {
    host::put(key, value)
}

/// Removes `key` (a no-op if absent).
pub fn delete(key: &str) {
    host::delete(key)
}

/// Entries whose key starts with `prefix`, in key order, at most `limit`.
pub fn scan_prefix(prefix: &str, limit: u32) -> Vec<(String, Vec<u8>)> {
    host::scan_prefix(prefix, limit)
}

/// The JSON value stored under `key`, decoded as `T`; `Ok(None)` if absent.
///
/// A stored value that does not decode is reported rather than treated as
/// absent: silently starting from empty state would overwrite it. It is a
/// `Failure::BadEvent` (the event is dead-lettered with the reason, for a
/// person to look at) because retrying would fail the same way forever.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Failure> {
    match host::get(key) {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Failure::bad_event(format!("kv value at {key:?} cannot be decoded: {e}"))),
    }
}

/// Stores `value` as JSON under `key`.
///
/// # Panics
///
/// If `T`'s `Serialize` impl fails (e.g. a map with non-string keys). That is
/// a bug in the plugin, not something an event can cause, so it traps.
pub fn put_json<T: Serialize + ?Sized>(key: &str, value: &T) {
    let bytes = serde_json::to_vec(value)
        .unwrap_or_else(|e| panic!("cannot encode kv value for {key:?} as JSON: {e}"));
    host::put(key, &bytes)
}
