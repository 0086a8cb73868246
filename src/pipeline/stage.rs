//! Running one event through one route's stages, with retries, output checks
//! and the defaults the host fills into plugin outputs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::Instrument;

use super::kv::UnitKv;
use crate::config::OnOpen;
use crate::config::{Capability, check_topic_name};
use crate::event::{ATTR_PLUGIN, ATTR_PLUGIN_VERSION, ATTR_REPLAY_COUNT, Event};
use crate::plugin::{Admit, CallError, Plugin, Verdict};
use crate::router::Route;

/// Event type of dead-letter records.
pub const DEAD_LETTER_TYPE: &str = "switchyard.dead-letter";

/// Namespace for deterministic output ids (UUID v5).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d1f_4c3e_8a52_4b8e_9f0e_2c4d_5a6b_7c8d);

/// Limits a stage works within, from the router config.
#[derive(Debug, Clone)]
pub struct StagePolicy {
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    /// Topics plugins may not write to (the ingest topic, to avoid loops, and
    /// the dead-letter topic, which only the router writes).
    pub reserved_topics: Vec<String>,
    /// Retries of a held event (see `pipeline::hold`) before it is
    /// dead-lettered.
    pub hold_retries: u32,
    /// Wait before the first retry of a held event; doubles each retry.
    pub hold_backoff: Duration,
    /// Cap on the wait between retries of a held event.
    pub hold_max_backoff: Duration,
    /// Set for the retries of held events: their failures do not count
    /// towards opening the circuit (one poison event must not open a plugin
    /// for every key), though a retry that is the probe decides it.
    pub held_retry: bool,
}

impl StagePolicy {
    /// The policy of the router config, for routes reading `input`.
    pub fn new(input: &str, cfg: &crate::config::RouterConfig) -> Self {
        Self {
            max_attempts: cfg.max_attempts,
            retry_backoff: Duration::from_millis(cfg.retry_backoff_ms),
            reserved_topics: vec![input.to_string(), cfg.dead_letter_topic.clone()],
            hold_retries: cfg.hold_retries,
            hold_backoff: Duration::from_millis(cfg.hold_backoff_ms),
            hold_max_backoff: Duration::from_millis(cfg.hold_max_backoff_ms),
            held_retry: false,
        }
    }

    /// The wait before retry number `retry` (0-based) of a held event.
    pub fn hold_delay(&self, retry: u32) -> Duration {
        self.hold_backoff
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.hold_max_backoff.max(self.hold_backoff))
    }
}

/// Why a route failed for an event: what goes on the dead-letter record.
#[derive(Debug, Clone)]
pub struct StageFailure {
    pub kind: String,
    pub error: String,
    pub stage: usize,
    pub plugin: String,
    pub plugin_version: String,
    pub attempts: u32,
    /// Whether the event may succeed later as it is (a transient failure
    /// after its retries, or an open circuit whose plugin waits): the
    /// pipeline may hold its key instead of dead-lettering it.
    pub transient: bool,
    /// For an open circuit: when its next probe is due.
    pub retry_in: Option<Duration>,
    /// The route's stages' state namespaces when it failed: a replay after a
    /// projection was rebuilt (new namespace) would apply the event twice.
    pub namespaces: Vec<String>,
}

impl StageFailure {
    /// A failure of the router itself rather than of a stage.
    pub fn router(kind: &str, error: String) -> Self {
        Self {
            kind: kind.to_string(),
            error,
            stage: 0,
            plugin: String::new(),
            plugin_version: String::new(),
            attempts: 0,
            transient: false,
            retry_in: None,
            namespaces: Vec::new(),
        }
    }

    /// The same failure, naming `route`'s state namespaces.
    pub fn on(mut self, route: &Route) -> Self {
        self.namespaces = route.stages.iter().map(|s| s.namespace.clone()).collect();
        self
    }
}

/// A deterministic id from the input id and where the output was made.
/// Part of the record format: a replay must derive the ids it derived the
/// first time, so the name (`<input id>/<route>/<stage>/<n>`) and the
/// namespace never change. It is a version 5 UUID (RFC 9562: SHA-1 of the
/// namespace, then the name). The `sha1` crate hashes with the CPU's SHA
/// instructions where it has them, which `uuid`'s own v5 does not (215
/// against 475 ns an id on the benchmark machine), and the name goes into
/// the hash without `format!` or `Display`.
pub fn derive_id(input_id: &str, route: &str, stage: usize, n: usize) -> String {
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(ID_NAMESPACE.as_bytes());
    h.update(input_id.as_bytes());
    h.update(b"/");
    h.update(route.as_bytes());
    h.update(b"/");
    h.update(itoa::Buffer::new().format(stage).as_bytes());
    h.update(b"/");
    h.update(itoa::Buffer::new().format(n).as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

/// Runs `input` through `route`. On success, the outputs of the last stage
/// with their topics; `kv` holds the state writes, to commit on success.
pub async fn run_route(
    route: &Route,
    input: &Event,
    kv: &Arc<UnitKv>,
    policy: &StagePolicy,
) -> Result<Vec<(String, Event)>, StageFailure> {
    run_stages(route, input, kv, policy)
        .await
        .map_err(|f| f.on(route))
}

async fn run_stages(
    route: &Route,
    input: &Event,
    kv: &Arc<UnitKv>,
    policy: &StagePolicy,
) -> Result<Vec<(String, Event)>, StageFailure> {
    let mut current: Vec<(String, Event)> = Vec::new();
    for (si, stage) in route.stages.iter().enumerate() {
        let plugin = &stage.plugin;
        let mut next = Vec::new();
        // The first stage reads the input where it is; later ones the
        // outputs of the stage before.
        let inputs: Vec<&Event> = if si == 0 {
            vec![input]
        } else {
            current.iter().map(|(_, e)| e).collect()
        };
        for ev in inputs {
            let breaker = plugin.breaker();
            let probe = match breaker.admit() {
                Admit::Call => false,
                Admit::Probe => true,
                Admit::Open(wait) => {
                    let mut f = failure(
                        plugin,
                        si,
                        "circuit-open",
                        format!(
                            "the circuit of plugin {:?} is open after failures in a row; next probe in {} ms",
                            plugin.name(),
                            wait.as_millis()
                        ),
                        0,
                    );
                    f.transient = breaker.config().on_open == OnOpen::Wait;
                    f.retry_in = Some(wait);
                    return Err(f);
                }
            };
            let result = call_stage(route, si, plugin, &stage.namespace, ev, kv, policy).await;
            let verdict = verdict(&result);
            if probe || !policy.held_retry || verdict != Verdict::Failed {
                breaker.record(probe, verdict);
            }
            next.extend(result?);
        }
        current = next;
    }
    Ok(current)
}

/// What a stage's outcome says about the plugin's health.
fn verdict<T>(r: &Result<T, StageFailure>) -> Verdict {
    match r {
        Ok(_) => Verdict::Healthy,
        // The plugin judged the event: it works as meant.
        Err(f) if f.kind == "bad-event" => Verdict::Healthy,
        // The host failed under it (state store unavailable).
        Err(f) if f.kind == "host-failure" => Verdict::Neutral,
        Err(_) => Verdict::Failed,
    }
}

/// One call of one stage on one event, with retries and output checks.
async fn call_stage(
    route: &Route,
    si: usize,
    plugin: &Plugin,
    namespace: &str,
    ev: &Event,
    kv: &Arc<UnitKv>,
    policy: &StagePolicy,
) -> Result<Vec<(String, Event)>, StageFailure> {
    let (outs, _attempts) = call_with_retries(plugin, namespace, ev, kv, policy)
        .await
        .map_err(|(e, attempts)| {
            let mut f = failure(plugin, si, e.kind(), e.to_string(), attempts);
            f.transient = e.is_transient();
            f
        })?;
    check_volume(&outs, &plugin.spec().limits)
        .map_err(|reason| failure(plugin, si, "bad-output", reason, 1))?;
    let mut next = Vec::with_capacity(outs.len());
    for (oi, mut out) in outs.into_iter().enumerate() {
        fill_defaults(&mut out.event, ev, plugin, &route.name, si, oi);
        check_output(&out.topic, &out.event, policy)
            .map_err(|reason| failure(plugin, si, "bad-output", reason, 1))?;
        if !route.allows_topic(&out.topic) {
            let reason = format!(
                "route {:?} does not allow output to topic {:?}",
                route.name, out.topic
            );
            return Err(failure(plugin, si, "bad-output", reason, 1));
        }
        next.push((out.topic, out.event));
    }
    Ok(next)
}

fn failure(
    plugin: &Plugin,
    stage: usize,
    kind: &str,
    error: String,
    attempts: u32,
) -> StageFailure {
    if kind == "bad-output" {
        plugin.note_bad_output(&error);
    }
    StageFailure {
        kind: kind.to_string(),
        error,
        stage,
        plugin: plugin.name().to_string(),
        plugin_version: plugin.version().to_string(),
        attempts,
        transient: false,
        retry_in: None,
        namespaces: Vec::new(),
    }
}

/// Calls `plugin` on `ev`, retrying transient failures with back-off; its
/// `kv` calls go to `namespace` through `kv`.
pub(crate) async fn call_with_retries(
    plugin: &Plugin,
    namespace: &str,
    ev: &Event,
    kv: &Arc<UnitKv>,
    policy: &StagePolicy,
) -> Result<(Vec<crate::plugin::Output>, u32), (CallError, u32)> {
    let granted_kv = plugin.spec().grants.contains(&Capability::Kv);
    let mut attempt = 1;
    loop {
        let view = granted_kv.then(|| kv.scoped(namespace));
        let span = tracing::debug_span!("plugin", plugin = plugin.name(), version = plugin.version(), event = %ev.id, attempt);
        match plugin.handle(ev, view).instrument(span).await {
            Ok(outs) => return Ok((outs, attempt)),
            Err(e) if e.is_transient() && attempt < policy.max_attempts => {
                tracing::warn!(plugin = plugin.name(), event = %ev.id, attempt, error = %e, "transient failure, retrying");
                tokio::time::sleep(policy.retry_backoff * 2u32.saturating_pow(attempt - 1)).await;
                attempt += 1;
            }
            Err(e) => return Err((e, attempt)),
        }
    }
}

fn fill_defaults(
    out: &mut Event,
    input: &Event,
    plugin: &Plugin,
    route: &str,
    stage: usize,
    n: usize,
) {
    if out.id.is_empty() {
        out.id = derive_id(&input.id, route, stage, n);
    }
    if out.version.is_empty() {
        out.version = "1".into();
    }
    if out.source.is_empty() {
        out.source = ["urn:switchyard:plugin:", plugin.name()].concat();
    }
    if out.time.is_empty() {
        out.time = input.time.clone();
    }
    if out.key.is_none() {
        out.key = input.key.clone();
    }
    if out.content_type.is_empty() {
        out.content_type = "application/json".into();
    }
    if out.traceparent.is_none() {
        out.traceparent = input.traceparent.clone();
    }
    out.attributes
        .insert(ATTR_PLUGIN.into(), plugin.name().into());
    out.attributes
        .insert(ATTR_PLUGIN_VERSION.into(), plugin.version().into());
}

/// The host's caps on what one call may emit: the output count and the
/// total data bytes, so a runaway plugin cannot flood the log.
fn check_volume(
    outs: &[crate::plugin::Output],
    limits: &crate::plugin::Limits,
) -> Result<(), String> {
    if outs.len() > limits.max_outputs {
        return Err(format!(
            "{} outputs for one event, more than max_outputs = {}",
            outs.len(),
            limits.max_outputs
        ));
    }
    let bytes: usize = outs.iter().map(|o| o.event.data.len()).sum();
    if bytes > limits.max_output_bytes {
        return Err(format!(
            "outputs of one event hold {bytes} data bytes, more than max_output_bytes = {}",
            limits.max_output_bytes
        ));
    }
    Ok(())
}

fn check_output(topic: &str, ev: &Event, policy: &StagePolicy) -> Result<(), String> {
    check_topic_name(topic).map_err(|r| format!("output topic: {r}"))?;
    if policy.reserved_topics.iter().any(|t| t == topic) {
        return Err(format!("plugins may not write to topic {topic:?}"));
    }
    if ev.event_type.is_empty() {
        return Err(format!("output for topic {topic:?} has an empty type"));
    }
    // The fast scanner first; serde_json (the reference) for the message.
    if ev.content_type.contains("json")
        && !super::json_check::is_json(&ev.data)
        && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&ev.data)
    {
        return Err(format!(
            "output for topic {topic:?} has data that is not JSON: {e}"
        ));
    }
    Ok(())
}

/// How many times `ev` was re-injected from the dead-letter topic (0 for an
/// event as it was ingested).
pub fn replay_count(ev: &Event) -> usize {
    ev.attributes
        .get(ATTR_REPLAY_COUNT)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The dead-letter record for `input` failing on `route`: deterministic id
/// (a replayed event that fails again gets a new one), the original event
/// whole (so it can be replayed), and why.
pub fn dead_letter(input: &Event, route: Option<&str>, f: &StageFailure) -> Event {
    let route_name = route.unwrap_or("");
    let replays = replay_count(input);
    let data = json!({
        "reason": f.kind,
        "error": f.error,
        "route": route,
        "stage": f.stage,
        "plugin": f.plugin,
        "pluginVersion": f.plugin_version,
        "attempts": f.attempts,
        "replays": replays,
        "namespaces": f.namespaces,
        "at": chrono::Utc::now().to_rfc3339(),
        "event": input,
    });
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert("reason".to_string(), f.kind.clone());
    if !f.plugin.is_empty() {
        attributes.insert(ATTR_PLUGIN.into(), f.plugin.clone());
        attributes.insert(ATTR_PLUGIN_VERSION.into(), f.plugin_version.clone());
    }
    Event {
        id: derive_id(&input.id, route_name, usize::MAX, replays),
        event_type: DEAD_LETTER_TYPE.into(),
        version: "1".into(),
        source: "urn:switchyard:router".into(),
        key: input.key.clone(),
        time: input.time.clone(),
        content_type: "application/json".into(),
        data: data.to_string(),
        attributes,
        traceparent: input.traceparent.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derive_id("e1", "r", 0, 0);
        // Pinned: ids already in logs must be derived again by replays.
        assert_eq!(a, "3f36054b-b817-54c2-9985-a4cb0aa635d6");
        assert_eq!(
            derive_id("e1", "r", usize::MAX, 3),
            "61cab8e8-cad0-5257-beac-37308b5c92bc"
        );
        assert_eq!(a, derive_id("e1", "r", 0, 0));
        assert_ne!(a, derive_id("e1", "r", 0, 1));
        assert_ne!(a, derive_id("e1", "r2", 0, 0));
        assert_ne!(a, derive_id("e2", "r", 0, 0));
    }

    #[test]
    fn outputs_to_reserved_or_bad_topics_or_with_bad_json_are_refused() {
        let policy = StagePolicy {
            max_attempts: 1,
            retry_backoff: Duration::ZERO,
            reserved_topics: vec!["events".into()],
            hold_retries: 0,
            hold_backoff: Duration::ZERO,
            hold_max_backoff: Duration::ZERO,
            held_retry: false,
        };
        let ev = Event {
            id: "x".into(),
            event_type: "t".into(),
            version: "1".into(),
            source: "s".into(),
            key: None,
            time: "2024-01-01T00:00:00Z".into(),
            content_type: "application/json".into(),
            data: "{\"a\":1}".into(),
            attributes: Default::default(),
            traceparent: None,
        };
        assert!(check_output("out", &ev, &policy).is_ok());
        assert!(
            check_output("events", &ev, &policy)
                .unwrap_err()
                .contains("may not write")
        );
        assert!(check_output("a b", &ev, &policy).is_err());
        let bad = Event {
            data: "{oops".into(),
            ..ev.clone()
        };
        assert!(
            check_output("out", &bad, &policy)
                .unwrap_err()
                .contains("not JSON")
        );
    }

    #[test]
    fn output_count_and_bytes_are_capped_per_call() {
        let ev = Event {
            id: "x".into(),
            event_type: "t".into(),
            version: "1".into(),
            source: "s".into(),
            key: None,
            time: String::new(),
            content_type: "application/json".into(),
            data: "0123456789".into(),
            attributes: Default::default(),
            traceparent: None,
        };
        let outs: Vec<_> = (0..3)
            .map(|_| crate::plugin::Output {
                topic: "out".into(),
                event: ev.clone(),
            })
            .collect();
        let limits = |max_outputs, max_output_bytes| crate::plugin::Limits {
            timeout: Duration::from_secs(1),
            memory_bytes: 1,
            instances: 1,
            max_outputs,
            max_output_bytes,
        };
        assert!(check_volume(&outs, &limits(3, 30)).is_ok());
        let err = check_volume(&outs, &limits(2, 30)).unwrap_err();
        assert!(
            err.contains("3 outputs") && err.contains("max_outputs = 2"),
            "{err}"
        );
        let err = check_volume(&outs, &limits(3, 29)).unwrap_err();
        assert!(err.contains("30 data bytes"), "{err}");
        assert!(check_volume(&[], &limits(0, 0)).is_ok());
    }
}
