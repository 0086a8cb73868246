//! Rust guest SDK for switchyard plugins.
//!
//! A switchyard plugin is a WebAssembly component implementing the
//! `switchyard:plugin/processor@0.1.0` world (`wit/plugin.wit` at the
//! repository root). This crate hides the `wit-bindgen` plumbing so that a
//! plugin is a type implementing [`Plugin`] plus one [`export!`] line:
//!
//! ```ignore
//! use switchyard_plugin::{Event, Failure, Output, Plugin};
//!
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn handle(ev: Event) -> Result<Vec<Output>, Failure> {
//!         let data = ev.json()?;
//!         Ok(vec![Output::new("echo", &ev.type_, &data)])
//!     }
//! }
//!
//! switchyard_plugin::export!(Echo);
//! ```
//!
//! The record types ([`Event`], [`Output`], [`Failure`]) are the generated
//! WIT bindings themselves, so nothing is copied or converted on the way in
//! or out; this crate only adds helper methods to them. The host interfaces
//! are wrapped in [`kv`], [`log`], [`clock`] and [`http`].

pub mod clock;

#[cfg(any(test, all(target_family = "wasm", not(target_feature = "atomics"))))]
pub mod heap;

/// The plugin's heap (see [`heap`]): every event allocates its parsed
/// payload, and size-class free lists serve that several times faster than
/// Rust's default wasm allocator. Off with `default-features = false` for a
/// plugin with its own allocator.
#[cfg(all(
    feature = "heap",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: heap::Heap = heap::Heap::new();

pub mod http;
pub mod kv;
pub mod log;

#[cfg(any(test, target_family = "wasm"))]
pub mod memcmp;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// The raw `wit-bindgen` output. Public only because [`export!`] expands
/// inside the plugin crate and has to name it; not part of the API.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "processor",
        // The export macro must be callable from plugin crates, and the
        // types it refers to live here rather than in the plugin.
        pub_export_macro: true,
        export_macro_name: "__export_processor",
        default_bindings_module: "::switchyard_plugin::bindings",
    });
}

pub use bindings::switchyard::plugin::types::{Event, Failure, Output};

/// The content type [`Output::new`] sets: every payload built by this SDK is
/// JSON text.
pub const JSON: &str = "application/json";

/// What a plugin implements. Both functions are associated functions (no
/// `self`) because that is the shape of the WIT exports: the host owns the
/// instance, and a plugin that needs configuration at `handle` time keeps it
/// in a `static` set by [`Plugin::init`].
pub trait Plugin {
    /// Called once per instance with the plugin's `config` table from the
    /// router file (`{}` when there is none). Returning `Err` refuses the
    /// plugin, so validate the configuration here rather than on the first
    /// event. The default accepts anything.
    fn init(config: Value) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Handles one event: zero or more outputs, or a [`Failure`] saying
    /// whether the host should dead-letter the event (`BadEvent`) or retry it
    /// (`Transient`). A panic traps the instance; the host treats that as a
    /// failed attempt and replaces the instance.
    fn handle(ev: Event) -> Result<Vec<Output>, Failure>;
}

/// Exports a [`Plugin`] implementation as the component's `init` and
/// `handle`. Use it exactly once per plugin crate (which must be built as a
/// `cdylib` for `wasm32-wasip2`).
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        const _: () = {
            // The generated export macro wants a local type implementing the
            // generated `Guest` trait; this adapter forwards to the plugin.
            struct __Guest;

            impl $crate::bindings::Guest for __Guest {
                fn init(config: ::std::string::String) -> $crate::__InitResult {
                    $crate::__init::<$plugin>(&config)
                }

                fn handle(ev: $crate::Event) -> $crate::__HandleResult {
                    <$plugin as $crate::Plugin>::handle(ev)
                }
            }

            $crate::bindings::__export_processor! {
                __Guest with_types_in $crate::bindings
            }
        };
    };
}

#[doc(hidden)]
pub type __InitResult = Result<(), String>;
#[doc(hidden)]
pub type __HandleResult = Result<Vec<Output>, Failure>;

/// Parses the config text the host passed and hands it to the plugin.
#[doc(hidden)]
pub fn __init<P: Plugin>(config: &str) -> Result<(), String> {
    let config = if config.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(config).map_err(|e| format!("plugin config is not valid JSON: {e}"))?
    };
    P::init(config)
}

/// Deserializes a plugin's configuration into `T`, treating `null` like `{}`
/// so that a config struct whose fields all have defaults works with no
/// config at all. The error is worded for the router's log, where it ends up
/// when `init` refuses the plugin.
pub fn parse_config<T: DeserializeOwned>(config: Value) -> Result<T, String> {
    let config = match config {
        Value::Null => Value::Object(Default::default()),
        other => other,
    };
    serde_json::from_value(config).map_err(|e| format!("invalid plugin config: {e}"))
}

impl Event {
    /// Parses `data` as JSON. A payload that does not parse is the event's
    /// fault, and retrying will not change it, hence `Failure::BadEvent`.
    pub fn json(&self) -> Result<Value, Failure> {
        serde_json::from_str(&self.data).map_err(|e| {
            Failure::bad_event(format!("event {} data is not valid JSON: {e}", self.id))
        })
    }

    /// Parses `data` straight into a typed payload; a mismatch with `T` is a
    /// `Failure::BadEvent` for the same reason as in [`Event::json`].
    pub fn json_as<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_str(&self.data).map_err(|e| {
            Failure::bad_event(format!(
                "event {} data does not match the expected shape: {e}",
                self.id
            ))
        })
    }

    /// The value of the first attribute called `name` (exact match).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `value` as compact JSON text.
///
/// Prefer this (or `serde_json::to_string`) to `value.to_string()`: the
/// `Display` route writes through `core::fmt` one token at a time, which in
/// a wasm32 plugin cost about a fifth of a small transform's time.
pub fn json_text(value: &Value) -> String {
    // Serialising a `Value` cannot fail (its map keys are strings); the
    // fallback only keeps this total.
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
}

impl Output {
    /// An output event for `topic` carrying `data` as JSON.
    ///
    /// Everything not given here is left for the host to fill in, which is
    /// what keeps replays deterministic and traces connected:
    /// - `id` empty: the host derives a stable id from the input's id;
    /// - `key` none: same ordering key as the input (see [`Output::key`]);
    /// - `time` empty: same time as the input;
    /// - `source` empty: the host fills in its own source;
    /// - `traceparent` none: the host copies the input's trace context;
    /// - `version` is `"1"` and `content-type` is [`JSON`].
    pub fn new(topic: impl Into<String>, event_type: impl Into<String>, data: &Value) -> Self {
        Output {
            topic: topic.into(),
            event: Event {
                id: String::new(),
                type_: event_type.into(),
                version: "1".to_owned(),
                source: String::new(),
                key: None,
                time: String::new(),
                content_type: JSON.to_owned(),
                data: json_text(data),
                attributes: Vec::new(),
                traceparent: None,
            },
        }
    }

    /// Sets the output's ordering key (otherwise it inherits the input's).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.event.key = Some(key.into());
        self
    }

    /// Adds an attribute, which the host carries to the sinks (e.g. as an
    /// SNS message attribute or CloudEvents extension).
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.event.attributes.push((name.into(), value.into()));
        self
    }

    /// Sets the schema version (default `"1"`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.event.version = version.into();
        self
    }
}

impl Failure {
    /// The event is wrong and retrying cannot help: the host dead-letters it.
    pub fn bad_event(reason: impl Into<String>) -> Self {
        Failure::BadEvent(reason.into())
    }

    /// Something passing went wrong: the host retries the event later.
    pub fn transient(reason: impl Into<String>) -> Self {
        Failure::Transient(reason.into())
    }

    /// The human-readable reason, whichever the variant.
    pub fn reason(&self) -> &str {
        match self {
            Failure::BadEvent(r) | Failure::Transient(r) => r,
        }
    }
}

// These tests touch no host import, so they run on the build machine:
// `cargo test -p switchyard-plugin --target x86_64-unknown-linux-gnu`.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: &str) -> Event {
        let mut ev = Output::new("in", "t", &Value::Null).event;
        ev.id = "ev-1".into();
        ev.data = data.into();
        ev.attributes = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        ev
    }

    #[test]
    fn json_parses_and_rejects() {
        assert_eq!(event(r#"{"x":1}"#).json().unwrap(), json!({"x": 1}));
        match event("{nope").json() {
            Err(Failure::BadEvent(r)) => assert!(r.contains("ev-1"), "{r}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn attribute_takes_first_match() {
        let ev = event("{}");
        assert_eq!(ev.attribute("a"), Some("1"));
        assert_eq!(ev.attribute("b"), None);
    }

    #[test]
    fn output_defaults_and_builder() {
        let out = Output::new("topic", "type", &json!({"k": "v"}))
            .key("A1234BC")
            .attribute("domain", "d");
        assert_eq!(out.topic, "topic");
        let ev = out.event;
        assert_eq!(
            (ev.id.as_str(), ev.source.as_str(), ev.time.as_str()),
            ("", "", "")
        );
        assert_eq!((ev.version.as_str(), ev.content_type.as_str()), ("1", JSON));
        assert_eq!(ev.key.as_deref(), Some("A1234BC"));
        assert_eq!(ev.attributes, vec![("domain".to_owned(), "d".to_owned())]);
        assert_eq!(
            serde_json::from_str::<Value>(&ev.data).unwrap(),
            json!({"k": "v"})
        );
    }

    #[test]
    fn config_null_is_empty_object() {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct C {
            topic: Option<String>,
        }
        assert!(parse_config::<C>(Value::Null).unwrap().topic.is_none());
        assert!(parse_config::<C>(json!({"topic": 3})).is_err());
    }
}
