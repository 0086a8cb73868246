//! What a component says about itself, read from its binary without
//! compiling it: the contract version it was built against, the host
//! capabilities it imports, what it exports and which tools produced it.
//!
//! Reading the import names takes milliseconds even for a 15 MB JavaScript or
//! Python component, while compiling one takes seconds, so the host checks the
//! contract version here first and refuses a mismatch before compiling.

use std::collections::BTreeSet;

use wasmparser::{ComponentExternalKind, ComponentTypeRef, Encoding, KnownCustom, Parser, Payload};

use crate::config::Capability;

/// The contract version this host implements (the WIT package version).
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The `switchyard:plugin` versions this host links, as semver compatibility
/// prefixes: `0.1` accepts every `0.1.x`. When the contract moves to a new
/// minor version, the previous one stays listed here for a release (with its
/// own bindings), so plugins can be rebuilt at their own pace.
pub const ACCEPTED_CONTRACTS: &[&str] = &["0.1"];

/// The WIT package plugins implement.
pub const CONTRACT_PACKAGE: &str = "switchyard:plugin";

/// The world plugins implement.
pub const WORLD: &str = "processor";

/// A component's self-description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Size of the component file in bytes.
    pub size: usize,
    /// The `switchyard:plugin` version its imports name (none if it imports
    /// no `switchyard:plugin` interface at all).
    pub contract: Option<String>,
    /// Host capabilities it imports (`log`, `clock`, `kv`); the router must
    /// grant the ones it calls.
    pub capabilities: Vec<Capability>,
    /// Every top-level import, in file order (WASI interfaces included).
    pub imports: Vec<String>,
    /// Every top-level export.
    pub exports: Vec<String>,
    /// `name version` of the languages, SDKs and tools in its `producers`
    /// sections (of the component and of the modules inside it).
    pub producers: Vec<String>,
}

/// Why a binary could not be read as a component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("not a webassembly component: {0}")]
    Malformed(String),
    #[error("a core webassembly module, not a component (build it for wasm32-wasip2)")]
    CoreModule,
    #[error("imports more than one switchyard:plugin version: {0}")]
    MixedContracts(String),
}

impl ComponentInfo {
    /// Reads `bytes` as a component.
    pub fn read(bytes: &[u8]) -> Result<Self, InspectError> {
        let mut info = ComponentInfo {
            size: bytes.len(),
            contract: None,
            capabilities: Vec::new(),
            imports: Vec::new(),
            exports: Vec::new(),
            producers: Vec::new(),
        };
        let mut producers = BTreeSet::new();
        let mut versions = BTreeSet::new();
        // Nested modules and components are parsed inline; only depth 0 is
        // the component's own interface.
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| InspectError::Malformed(e.to_string()))?;
            match payload {
                Payload::Version { encoding, .. } if depth == 0 && encoding == Encoding::Module => {
                    return Err(InspectError::CoreModule);
                }
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(reader) if depth == 0 => {
                    for import in reader {
                        let import = import.map_err(|e| InspectError::Malformed(e.to_string()))?;
                        // Type imports (the world's `use`d records) are not
                        // things the host provides.
                        if matches!(import.ty, ComponentTypeRef::Type(_)) {
                            continue;
                        }
                        let name = import.name.name.to_string();
                        if let Some((iface, version)) = contract_interface(&name) {
                            versions.insert(version.to_string());
                            if let Some(cap) = capability(iface) {
                                info.capabilities.push(cap);
                            }
                        }
                        info.imports.push(name);
                    }
                }
                Payload::ComponentExportSection(reader) if depth == 0 => {
                    for export in reader {
                        let export = export.map_err(|e| InspectError::Malformed(e.to_string()))?;
                        if export.kind == ComponentExternalKind::Type {
                            continue;
                        }
                        info.exports.push(export.name.name.to_string());
                    }
                }
                Payload::CustomSection(reader) => {
                    if let KnownCustom::Producers(fields) = reader.as_known() {
                        for field in fields.into_iter().flatten() {
                            if !matches!(field.name, "language" | "sdk" | "processed-by") {
                                continue;
                            }
                            for v in field.values.into_iter().flatten() {
                                producers.insert(format!("{} {}", v.name, v.version));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if versions.len() > 1 {
            let list: Vec<_> = versions.iter().map(String::as_str).collect();
            return Err(InspectError::MixedContracts(list.join(", ")));
        }
        info.contract = versions.into_iter().next();
        info.capabilities.sort();
        info.capabilities.dedup();
        info.producers = producers
            .into_iter()
            .map(|p| p.trim().to_string())
            .collect();
        Ok(info)
    }

    /// Whether it exports the world's functions (`init` and `handle`).
    pub fn implements_world(&self) -> bool {
        ["init", "handle"]
            .iter()
            .all(|f| self.exports.iter().any(|e| e == f))
    }

    /// `switchyard:plugin/processor@<version>` when it looks like a plugin.
    pub fn world(&self) -> Option<String> {
        let version = self.contract.as_deref()?;
        self.implements_world()
            .then(|| format!("{CONTRACT_PACKAGE}/{WORLD}@{version}"))
    }
}

/// `("kv", "0.1.0")` for `switchyard:plugin/kv@0.1.0`.
fn contract_interface(import: &str) -> Option<(&str, &str)> {
    let rest = import.strip_prefix(CONTRACT_PACKAGE)?.strip_prefix('/')?;
    let (iface, version) = rest.split_once('@')?;
    Some((iface, version))
}

fn capability(iface: &str) -> Option<Capability> {
    match iface {
        "log" => Some(Capability::Log),
        "clock" => Some(Capability::Clock),
        "kv" => Some(Capability::Kv),
        "http" => Some(Capability::Http),
        _ => None,
    }
}

/// The semver compatibility prefix of a version: `0.1` for `0.1.4`, `2` for
/// `2.3.0` (before 1.0 the minor version is the breaking one).
fn compat_prefix(version: &str) -> Option<String> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major: u64 = parts.next()?.parse().ok()?;
    let minor: u64 = parts.next()?.parse().ok()?;
    let _patch: u64 = parts.next()?.parse().ok()?;
    Some(if major == 0 {
        format!("0.{minor}")
    } else {
        major.to_string()
    })
}

/// Whether this host links plugins built against `version`.
pub fn contract_accepted(version: &str) -> bool {
    compat_prefix(version).is_some_and(|p| ACCEPTED_CONTRACTS.contains(&p.as_str()))
}

/// The accepted versions for messages: `0.1.x`.
pub fn accepted_contracts() -> String {
    ACCEPTED_CONTRACTS
        .iter()
        .map(|p| format!("{CONTRACT_PACKAGE}@{p}.x"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_current_minor_only() {
        assert!(contract_accepted(CONTRACT_VERSION));
        assert!(contract_accepted("0.1.7"));
        assert!(!contract_accepted("0.2.0"));
        assert!(!contract_accepted("1.1.0"));
        assert!(!contract_accepted("0.1"));
        assert!(!contract_accepted("nope"));
        assert_eq!(accepted_contracts(), "switchyard:plugin@0.1.x");
    }

    #[test]
    fn names_of_contract_imports() {
        assert_eq!(
            contract_interface("switchyard:plugin/kv@0.1.0"),
            Some(("kv", "0.1.0"))
        );
        assert_eq!(contract_interface("wasi:io/poll@0.2.6"), None);
        assert_eq!(compat_prefix("3.2.1-rc1"), Some("3".into()));
    }

    #[test]
    fn core_modules_and_garbage_are_refused() {
        let core = wat::parse_str("(module)").unwrap();
        assert_eq!(ComponentInfo::read(&core), Err(InspectError::CoreModule));
        assert!(matches!(
            ComponentInfo::read(b"not wasm"),
            Err(InspectError::Malformed(_))
        ));
    }

    #[test]
    fn reads_imports_exports_and_version() {
        let wat = r#"(component
            (import "switchyard:plugin/types@0.1.0" (instance))
            (import "switchyard:plugin/kv@0.1.0" (instance))
            (import "wasi:io/poll@0.2.6" (instance))
            (core module $m)
            (func $f (result u32) (canon lift (core func $g)))
            (core instance $i (instantiate $m))
            (core module $n (func (export "g") (result i32) i32.const 1))
            (core instance $j (instantiate $n))
            (core func $g (alias core export $j "g"))
            (export "init" (func $f))
            (export "handle" (func $f))
        )"#;
        let bytes = wat::parse_str(wat).unwrap();
        let info = ComponentInfo::read(&bytes).unwrap();
        assert_eq!(info.contract.as_deref(), Some("0.1.0"));
        assert_eq!(info.capabilities, vec![Capability::Kv]);
        assert_eq!(info.imports.len(), 3);
        assert_eq!(info.exports, vec!["init", "handle"]);
        assert_eq!(
            info.world().as_deref(),
            Some("switchyard:plugin/processor@0.1.0")
        );
    }
}
