//! HMPPS-shaped events from a fixed seed: a realistic mix of event types,
//! person keys with a few busy prisoners, and payloads of 150–850 bytes
//! (median about 400).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use switchyard::Event;

/// The seed every scenario uses, so runs see the same events.
pub const SEED: u64 = 0x5eed_2026;

/// splitmix64: small, fast and good enough to pick test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Event types with their share of the traffic (per mille), after the
/// domain events HMPPS services publish most.
const TYPES: &[(&str, u32)] = &[
    ("prisoner-offender-search.prisoner.updated", 300),
    ("prison-offender-events.prisoner.received", 120),
    ("prison-offender-events.prisoner.released", 100),
    ("prisoner-offender-search.prisoner.alerts-updated", 120),
    ("probation-case.registration.added", 100),
    ("person.community.manager.allocated", 100),
    ("incentives.iep-review.inserted", 80),
    ("calculate-release-dates.prisoner.changed", 80),
];

const PRISONS: &[&str] = &["MDI", "LEI", "BXI", "WWI", "HMI", "PVI", "NMI", "LPI"];
const WORDS: &[&str] = &[
    "prisoner",
    "record",
    "updated",
    "after",
    "review",
    "by",
    "the",
    "establishment",
    "case",
    "officer",
    "with",
    "new",
    "details",
    "from",
    "court",
    "hearing",
    "and",
    "probation",
];

/// Distinct people: a NOMS number and a CRN each.
const PEOPLE: u64 = 5_000;

fn noms(n: u64) -> String {
    let l = |i: u64| (b'A' + (i % 26) as u8) as char;
    format!("{}{:04}{}{}", l(n / 7), n % 10_000, l(n / 3), l(n))
}

fn crn(n: u64) -> String {
    format!("X{:06}", 100_000 + n)
}

/// One generated event: the HMPPS JSON body (what a producer POSTs) and
/// the internal event the router would append for it.
pub struct Generated {
    pub body: String,
    pub event: Event,
}

/// `n` events from `seed`, with the ids of [`event_id`].
pub fn generate(seed: u64, n: usize) -> Vec<Generated> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| one(&mut rng, seed, i)).collect()
}

/// The id of event `i`: a version 4 UUID drawn from `seed` and `i`, as
/// producers send them (SNS and SQS message ids, CloudEvents ids), so that
/// an id index gets its entries in random order as it would in use (with
/// sequential ids the pipeline ran twice as fast before the trace index
/// took its entries in sorted runs; BENCHMARKS.md, "Seventh round"). Drawn
/// apart from the rest of the event, which is the same either way.
pub fn event_id(seed: u64, i: usize) -> String {
    let mut r = Rng::new(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_exact_mut(8) {
        half.copy_from_slice(&r.next_u64().to_le_bytes());
    }
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn pick_type(rng: &mut Rng) -> &'static str {
    let mut r = rng.below(1000) as u32;
    for (t, w) in TYPES {
        if r < *w {
            return t;
        }
        r -= w;
    }
    TYPES[0].0
}

fn one(rng: &mut Rng, seed: u64, i: usize) -> Generated {
    let event_type = pick_type(rng);
    // A few busy people: squaring a uniform skews towards low numbers.
    let person = (rng.unit().powi(2) * PEOPLE as f64) as u64;
    let prison = PRISONS[rng.below(PRISONS.len() as u64) as usize];
    let second = 1_700_000_000 + i as i64 * 7 + rng.below(5) as i64;
    let occurred = chrono::DateTime::from_timestamp(second, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let probation = event_type.starts_with("probation") || event_type.starts_with("person.");
    let mut identifiers = vec![];
    if !probation || rng.below(2) == 0 {
        identifiers.push(json!({"type": "NOMS", "value": noms(person)}));
    }
    if probation || rng.below(3) == 0 {
        identifiers.push(json!({"type": "CRN", "value": crn(person)}));
    }
    let info = match event_type {
        "prison-offender-events.prisoner.received" => {
            json!({"prisonId": prison, "reason": "ADMISSION", "probableCause": "CONVICTED"})
        }
        "prison-offender-events.prisoner.released" => {
            json!({"prisonId": prison, "reason": "RELEASED", "nomisMovementReasonCode": "CR"})
        }
        "prisoner-offender-search.prisoner.updated" => {
            let cats = [
                "PERSONAL_DETAILS",
                "STATUS",
                "LOCATION",
                "SENTENCE",
                "ALERTS",
            ];
            let k = 1 + rng.below(cats.len() as u64) as usize;
            json!({"nomsNumber": noms(person), "categoriesChanged": cats[..k]})
        }
        "prisoner-offender-search.prisoner.alerts-updated" => {
            json!({"nomsNumber": noms(person), "bookingId": 1_000_000 + person,
                   "alertsAdded": ["XA", "HA"], "alertsRemoved": []})
        }
        "incentives.iep-review.inserted" => {
            json!({"id": rng.below(1_000_000), "nomsNumber": noms(person), "reason": "USER_CREATED"})
        }
        "calculate-release-dates.prisoner.changed" => {
            json!({"prisonerId": noms(person), "bookingId": 1_000_000 + person})
        }
        _ => json!({"staffCode": format!("N0{}", rng.below(900) + 100), "teamCode": "N07T01"}),
    };
    let mut data = json!({
        "eventType": event_type,
        "version": 1,
        "occurredAt": occurred,
        "detailUrl": format!("https://service.justice.gov.uk/v1/{}/{}", event_type.split('.').next().unwrap_or(""), person),
        "additionalInformation": info,
        "personReference": {"identifiers": identifiers},
    });
    // Payload size: 150 + 700·u^1.5 bytes puts the median near 400. An
    // event larger than its target loses its optional parts (the detail URL,
    // then the additional information where its type's schema does not
    // require it, as the prison movements' does); one smaller gets a
    // description of whole words that does not pass the target.
    let target = 150 + (700.0 * rng.unit().powf(1.5)) as usize;
    let movement = event_type.starts_with("prison-offender-events.");
    for optional in ["detailUrl", "additionalInformation"] {
        if data.to_string().len() <= target || (movement && optional == "additionalInformation") {
            break;
        }
        if let Value::Object(m) = &mut data {
            m.remove(optional);
        }
    }
    let base = data.to_string().len() + r#","description":"""#.len();
    let mut description = String::new();
    loop {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        let space = usize::from(!description.is_empty());
        if base + description.len() + space + word.len() > target {
            break;
        }
        if space == 1 {
            description.push(' ');
        }
        description.push_str(word);
    }
    if let Value::Object(m) = &mut data
        && !description.is_empty()
    {
        m.insert("description".into(), Value::String(description));
    }
    let body = data.to_string();
    let key = identifiers_key(&data);
    let event = Event {
        id: event_id(seed, i),
        event_type: event_type.to_string(),
        version: "1".into(),
        source: "urn:switchyard:http".into(),
        key,
        time: occurred,
        content_type: "application/json".into(),
        data: body.clone(),
        attributes: BTreeMap::new(),
        traceparent: None,
    };
    Generated { body, event }
}

/// The default config's key rule: NOMS, else CRN.
fn identifiers_key(data: &Value) -> Option<String> {
    let ids = data.pointer("/personReference/identifiers")?.as_array()?;
    ["NOMS", "CRN"].iter().find_map(|t| {
        ids.iter()
            .find(|i| i["type"] == *t)
            .and_then(|i| i["value"].as_str())
            .map(str::to_string)
    })
}

/// Sizes of the payloads: (min, median, max) bytes.
pub fn size_summary(events: &[Generated]) -> (usize, usize, usize) {
    let mut sizes: Vec<usize> = events.iter().map(|g| g.body.len()).collect();
    sizes.sort_unstable();
    if sizes.is_empty() {
        return (0, 0, 0);
    }
    (sizes[0], sizes[sizes.len() / 2], sizes[sizes.len() - 1])
}

/// Distinct event types and keys.
pub fn mix_summary(events: &[Generated]) -> (usize, usize) {
    let types: std::collections::BTreeSet<_> = events.iter().map(|g| &g.event.event_type).collect();
    let keys: std::collections::BTreeSet<_> = events.iter().map(|g| &g.event.key).collect();
    (types.len(), keys.len())
}
