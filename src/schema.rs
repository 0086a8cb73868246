//! The JSON Schema registry: the HMPPS base schema plus per-event-type
//! schemas, compiled once at load so that validating an event on the hot path
//! never touches the file system.
//!
//! Per-type schemas live in one folder, named `<eventType>.schema.json` (every
//! version) or `<eventType>@<version>.schema.json` (that version only); both
//! apply when both exist. The base schema applies only to events that arrived
//! in the HMPPS envelope, since a CloudEvent's own attributes are checked by
//! the envelope decoder.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use jsonschema::Validator;
use serde_json::Value;

use crate::envelope::{Envelope, Incoming};

const SUFFIX: &str = ".schema.json";

/// One way an event breaks a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where in the payload, as a JSON pointer (`""` for the root).
    pub pointer: String,
    /// Readable reason, e.g. `"2024-06-11T14:41:22" is not a "date-time"`.
    pub reason: String,
    /// File name of the schema that was broken, so producers know which
    /// contract to read.
    pub schema: String,
}

/// A schema file could not be loaded; names the file so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema {}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("schema {}: invalid json: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("schema {}: invalid schema: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "schema {}: file name must be <eventType>{SUFFIX} or <eventType>@<version>{SUFFIX}",
        path.display()
    )]
    BadName { path: PathBuf },
}

impl SchemaError {
    /// The file at fault.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Json { path, .. }
            | Self::Invalid { path, .. }
            | Self::BadName { path } => path,
        }
    }
}

/// A schema file, compiled.
#[derive(Debug)]
struct Compiled {
    path: PathBuf,
    name: String,
    validator: Validator,
}

impl Compiled {
    fn load(path: &Path) -> Result<Self, SchemaError> {
        let text = fs::read_to_string(path).map_err(|source| SchemaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let schema: Value = serde_json::from_str(&text).map_err(|source| SchemaError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        // `offline`: our schemas are self-contained, and a remote `$ref` would
        // otherwise block startup on the network (or panic inside tokio).
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .offline()
            .build(&schema)
            .map_err(|e| {
                let at = e.instance_path().as_str();
                let reason = if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{e} at {at}")
                };
                SchemaError::Invalid {
                    path: path.to_path_buf(),
                    reason,
                }
            })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            name,
            validator,
        })
    }

    fn check(&self, payload: &Value, out: &mut Vec<Violation>) {
        // Most events are valid: `is_valid` stops at nothing to report and
        // builds no error values; only an invalid payload is walked again
        // to collect every violation.
        if self.validator.is_valid(payload) {
            return;
        }
        out.extend(self.validator.iter_errors(payload).map(|e| Violation {
            pointer: e.instance_path().as_str().to_string(),
            reason: e.to_string(),
            schema: self.name.clone(),
        }));
    }
}

/// The schemas of one event type.
#[derive(Debug, Default)]
struct TypeSchemas {
    every_version: Option<Compiled>,
    by_version: BTreeMap<String, Compiled>,
}

/// All schemas, compiled. Immutable once loaded: a reload builds a new
/// registry and swaps the `Arc`, so validation never waits on a lock.
#[derive(Debug)]
pub struct SchemaRegistry {
    base: Compiled,
    types: BTreeMap<String, TypeSchemas>,
}

impl SchemaRegistry {
    /// Loads `base` (the HMPPS domain event schema, applied to events that
    /// arrived in the HMPPS envelope) and every per-type schema under
    /// `types_dir`, compiled once with format validation on, because
    /// `occurredAt` must carry an offset and draft 2020-12 treats `format` as
    /// a mere annotation by default. Files not ending in `.schema.json` are
    /// ignored so the folder can hold a README.
    pub fn load(base: &Path, types_dir: Option<&Path>) -> Result<Self, SchemaError> {
        let base = Compiled::load(base)?;
        let mut types: BTreeMap<String, TypeSchemas> = BTreeMap::new();
        let Some(dir) = types_dir else {
            return Ok(Self { base, types });
        };
        let read_err = |source| SchemaError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            let is_schema = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(SUFFIX));
            if is_schema && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        for path in paths {
            let (event_type, version) = parse_name(&path)?;
            let compiled = Compiled::load(&path)?;
            let entry = types.entry(event_type).or_default();
            match version {
                Some(v) => _ = entry.by_version.insert(v, compiled),
                None => entry.every_version = Some(compiled),
            }
        }
        Ok(Self { base, types })
    }

    /// Checks an incoming event against every schema that applies to it and
    /// collects all violations, so the producer can fix them in one go.
    pub fn validate(&self, incoming: &Incoming) -> Result<(), Vec<Violation>> {
        let mut out = Vec::new();
        if incoming.envelope == Envelope::Hmpps {
            self.base.check(&incoming.payload, &mut out);
        }
        if let Some(schemas) = self.types.get(&incoming.event.event_type) {
            if let Some(all) = &schemas.every_version {
                all.check(&incoming.payload, &mut out);
            }
            if let Some(one) = schemas.by_version.get(&incoming.event.version) {
                one.check(&incoming.payload, &mut out);
            }
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }

    /// Every per-type schema as (event type, version if version-specific,
    /// file), sorted by type then version, for the admin API and AsyncAPI.
    pub fn describe(&self) -> Vec<(String, Option<String>, PathBuf)> {
        let mut out = Vec::new();
        for (ty, schemas) in &self.types {
            if let Some(all) = &schemas.every_version {
                out.push((ty.clone(), None, all.path.clone()));
            }
            for (version, one) in &schemas.by_version {
                out.push((ty.clone(), Some(version.clone()), one.path.clone()));
            }
        }
        out
    }

    /// The base schema's file, for the same listings.
    pub fn base_path(&self) -> &Path {
        &self.base.path
    }
}

/// Splits `<eventType>[@<version>].schema.json` into its parts.
fn parse_name(path: &Path) -> Result<(String, Option<String>), SchemaError> {
    let bad = || SchemaError::BadName {
        path: path.to_path_buf(),
    };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    let stem = name.strip_suffix(SUFFIX).ok_or_else(bad)?;
    match stem.rsplit_once('@') {
        None if !stem.is_empty() => Ok((stem.to_string(), None)),
        Some((ty, v)) if !ty.is_empty() && !v.is_empty() => {
            Ok((ty.to_string(), Some(v.to_string())))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use serde_json::json;

    const BASE: &str = "hmpps-domain-event.schema.json";
    const RECEIVED: &str = "prison-offender-events.prisoner.received";

    fn config() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/schemas")
    }

    fn registry() -> SchemaRegistry {
        let dir = config();
        SchemaRegistry::load(&dir.join(BASE), Some(&dir.join("types"))).unwrap()
    }

    fn incoming(envelope: Envelope, ty: &str, version: &str, payload: Value) -> Incoming {
        let event = Event {
            id: String::new(),
            event_type: ty.into(),
            version: version.into(),
            source: "urn:test".into(),
            key: None,
            time: "2024-06-11T14:41:22Z".into(),
            content_type: "application/json".into(),
            data: payload.to_string(),
            attributes: BTreeMap::new(),
            traceparent: None,
        };
        Incoming {
            event,
            envelope,
            payload,
            index: 0,
            batch: false,
        }
    }

    fn received() -> Value {
        json!({"eventType": RECEIVED, "version": 1, "occurredAt": "2024-06-11T14:41:22+01:00",
               "description": "received", "detailUrl": "https://example.invalid/p/A1",
               "additionalInformation": {"prisonId": "MDI", "reason": "ADMISSION"},
               "personReference": {"identifiers": [{"type": "CRN", "value": "X1"},
                                                   {"type": "NOMS", "value": "A1"}]}})
    }

    fn violations(reg: &SchemaRegistry, payload: Value) -> Vec<Violation> {
        let ty = payload["eventType"].as_str().unwrap_or("other").to_string();
        reg.validate(&incoming(Envelope::Hmpps, &ty, "1", payload))
            .unwrap_err()
    }

    /// A scratch folder removed on drop (no tempfile crate in this module's deps).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir =
                std::env::temp_dir().join(format!("switchyard-schema-{}", uuid::Uuid::new_v4()));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn registry_is_shareable() {
        fn check<T: Send + Sync>() {}
        check::<SchemaRegistry>();
    }

    #[test]
    fn base_schema_accepts_valid_events() {
        let reg = registry();
        let mut ev = received();
        assert_eq!(
            reg.validate(&incoming(Envelope::Hmpps, RECEIVED, "1", ev.clone())),
            Ok(())
        );
        ev["occurredAt"] = json!("2024-06-11T14:41:22.123Z");
        ev["eventType"] = json!("some.other.event");
        assert_eq!(
            reg.validate(&incoming(Envelope::Hmpps, "some.other.event", "1", ev)),
            Ok(())
        );
    }

    #[test]
    fn occurred_at_needs_an_offset() {
        let mut ev = received();
        ev["occurredAt"] = json!("2024-06-11T14:41:22");
        let v = violations(&registry(), ev);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].pointer, "/occurredAt");
        assert_eq!(v[0].reason, r#""2024-06-11T14:41:22" is not a "date-time""#);
        assert_eq!(v[0].schema, BASE);
    }

    #[test]
    fn base_schema_collects_every_violation() {
        let mut ev = received();
        ev["detailUrl"] = Value::Null;
        ev["version"] = json!("1");
        ev["personReference"]["identifiers"][0] = json!({"type": "CRN"});
        let mut pointers: Vec<_> = violations(&registry(), ev)
            .into_iter()
            .map(|v| v.pointer)
            .collect();
        pointers.sort();
        assert_eq!(
            pointers,
            ["/detailUrl", "/personReference/identifiers/0", "/version"]
        );
        let mut ev = received();
        ev.as_object_mut().unwrap().remove("eventType");
        let v = violations(&registry(), ev);
        assert_eq!(v[0].pointer, "");
        assert!(
            v[0].reason.contains("\"eventType\" is a required property"),
            "{}",
            v[0].reason
        );
    }

    #[test]
    fn per_type_schema_applies_to_both_envelopes() {
        let reg = registry();
        let mut ev = received();
        ev["additionalInformation"] = json!({"reason": "ADMISSION"});
        for envelope in [Envelope::Hmpps, Envelope::CloudEvent] {
            let v = reg
                .validate(&incoming(envelope, RECEIVED, "3", ev.clone()))
                .unwrap_err();
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].pointer, "/additionalInformation");
            assert!(v[0].reason.contains("prisonId"), "{}", v[0].reason);
            assert_eq!(v[0].schema, format!("{RECEIVED}.schema.json"));
        }
        let mut ev = received();
        ev["personReference"]["identifiers"] = json!([{"type": "CRN", "value": "X1"}]);
        assert_eq!(
            violations(&reg, ev)[0].pointer,
            "/personReference/identifiers"
        );
        let released = "prison-offender-events.prisoner.released";
        let mut ev = received();
        ev["eventType"] = json!(released);
        ev.as_object_mut().unwrap().remove("additionalInformation");
        assert_eq!(
            reg.validate(&incoming(Envelope::Hmpps, released, "1", ev.clone())),
            Ok(())
        );
        ev["additionalInformation"] = json!({"prisonId": 7});
        assert_eq!(
            violations(&reg, ev)[0].pointer,
            "/additionalInformation/prisonId"
        );
        // The base schema is for the HMPPS envelope only.
        let data = json!({"anything": true});
        assert_eq!(
            reg.validate(&incoming(Envelope::CloudEvent, "x", "1", data)),
            Ok(())
        );
    }

    #[test]
    fn versioned_schema_applies_only_to_its_version() {
        let dir = Scratch::new();
        let base = dir.write("base.schema.json", "{}");
        let types = Scratch::new();
        types.write("a.b.schema.json", r#"{"required": ["all"]}"#);
        types.write("a.b@2.schema.json", r#"{"required": ["two"]}"#);
        types.write("README.md", "not a schema");
        let reg = SchemaRegistry::load(&base, Some(&types.0)).unwrap();
        let check = |version: &str| {
            let inc = incoming(Envelope::CloudEvent, "a.b", version, json!({}));
            let mut names: Vec<_> = reg
                .validate(&inc)
                .unwrap_err()
                .into_iter()
                .map(|v| v.schema)
                .collect();
            names.sort();
            names
        };
        assert_eq!(check("1"), ["a.b.schema.json"]);
        assert_eq!(check("2"), ["a.b.schema.json", "a.b@2.schema.json"]);
        let described = reg.describe();
        assert_eq!(described.len(), 2);
        assert_eq!(
            (described[0].0.as_str(), described[0].1.as_deref()),
            ("a.b", None)
        );
        assert_eq!(
            (described[1].1.as_deref(), described[1].2.clone()),
            (Some("2"), types.0.join("a.b@2.schema.json"))
        );
        assert_eq!(reg.base_path(), base);
    }

    #[test]
    fn config_schemas_are_described() {
        let types: Vec<_> = registry()
            .describe()
            .into_iter()
            .map(|(t, v, _)| (t, v))
            .collect();
        assert_eq!(
            types,
            [
                (RECEIVED.to_string(), None),
                ("prison-offender-events.prisoner.released".to_string(), None),
            ]
        );
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = Scratch::new();
        let missing = dir.0.join("missing.schema.json");
        let e = SchemaRegistry::load(&missing, None).unwrap_err();
        assert!(
            matches!(e, SchemaError::Read { .. }) && e.path() == missing,
            "{e}"
        );
        let bad = dir.write("bad.schema.json", "{\n  \"type\": }");
        let e = SchemaRegistry::load(&bad, None).unwrap_err();
        assert_eq!(e.path(), bad);
        assert!(
            e.to_string().contains("bad.schema.json") && e.to_string().contains("line 2 column"),
            "{e}"
        );
        let wrong = dir.write("wrong.schema.json", r#"{"type": "strin"}"#);
        let e = SchemaRegistry::load(&wrong, None).unwrap_err();
        assert!(
            matches!(e, SchemaError::Invalid { .. }) && e.to_string().contains("wrong.schema.json"),
            "{e}"
        );
        let base = dir.write("base.json", "{}");
        let types = Scratch::new();
        let unnamed = types.write("@2.schema.json", "{}");
        let e = SchemaRegistry::load(&base, Some(&types.0)).unwrap_err();
        assert!(
            matches!(e, SchemaError::BadName { .. }) && e.path() == unnamed,
            "{e}"
        );
        let e = SchemaRegistry::load(&base, Some(&dir.0.join("nope"))).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
