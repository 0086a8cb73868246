//! Wall-clock time from the host (the WIT `clock` interface).

/// Milliseconds since the Unix epoch, as the router sees it.
///
/// Prefer the event's own time for anything that ends up in state or
/// outputs: a replayed event should produce the same result.
pub fn now_ms() -> u64 {
    crate::bindings::switchyard::plugin::clock::now_ms()
}
