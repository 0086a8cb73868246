//! `switchyard plugin new NAME --lang rust|js|python`: a ready plugin project
//! that builds and passes its own sample case straight away.
//!
//! The templates, the SDKs and the WIT contract are compiled into the binary,
//! so a project made by this switchyard matches the contract it links.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

/// The plugin languages `plugin new` and `plugin build` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        })
    }
}

/// The contract, as this binary links it.
pub const WIT: &str = include_str!("../../wit/plugin.wit");

/// The guest SDKs, as this binary ships them.
pub mod sdk {
    pub const JS: &str = include_str!("../../plugins/sdk/js/switchyard.js");
    pub const JS_COMPONENTIZE: &str = include_str!("../../plugins/js/componentize.mjs");
    pub const PYTHON: &str = include_str!("../../plugins/sdk/python/switchyard_plugin.py");
    pub const RUST: &[(&str, &str)] = &[
        (
            "src/lib.rs",
            include_str!("../../plugins/sdk/rust/src/lib.rs"),
        ),
        (
            "src/kv.rs",
            include_str!("../../plugins/sdk/rust/src/kv.rs"),
        ),
        (
            "src/log.rs",
            include_str!("../../plugins/sdk/rust/src/log.rs"),
        ),
        (
            "src/clock.rs",
            include_str!("../../plugins/sdk/rust/src/clock.rs"),
        ),
    ];
    /// A stand-alone manifest for the copied Rust SDK (the repository's
    /// inherits from its workspace).
    pub const RUST_MANIFEST: &str = r#"[package]
name = "switchyard-plugin"
description = "Rust guest SDK for switchyard plugins (copied by `switchyard plugin new`)"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
serde = "1.0.229"
serde_json = "1.0.154"
wit-bindgen = { version = "0.63.0", default-features = false, features = ["macros", "realloc"] }
"#;
    /// Where the repository's SDK finds the WIT, and where the copy does.
    pub const RUST_WIT_PATH: (&str, &str) = ("\"../../../wit\"", "\"wit\"");
}

const SAMPLE: &str = include_str!("../../plugins/templates/samples/basic.json");

fn template(lang: Lang) -> Vec<(&'static str, &'static str)> {
    match lang {
        Lang::Rust => vec![
            (
                "Cargo.toml",
                include_str!("../../plugins/templates/rust/Cargo.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("../../plugins/templates/rust/src/lib.rs"),
            ),
            // The versions the repository's plugins are built and tested
            // with; cargo drops the entries the project does not use.
            ("Cargo.lock", include_str!("../../plugins/Cargo.lock")),
            (
                ".gitignore",
                include_str!("../../plugins/templates/rust/gitignore"),
            ),
        ],
        Lang::Js => vec![
            (
                "package.json",
                include_str!("../../plugins/templates/js/package.json"),
            ),
            (
                "plugin.js",
                include_str!("../../plugins/templates/js/plugin.js"),
            ),
            (
                ".gitignore",
                include_str!("../../plugins/templates/js/gitignore"),
            ),
        ],
        Lang::Python => vec![
            (
                "plugin.py",
                include_str!("../../plugins/templates/python/plugin.py"),
            ),
            (
                ".gitignore",
                include_str!("../../plugins/templates/python/gitignore"),
            ),
        ],
    }
}

/// Plugin names become topic names, crate/package names and file names.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "invalid plugin name {name:?}: use 1-64 lower-case letters, digits, `-` or `_`, \
             starting with a letter"
        );
    }
    Ok(())
}

/// Creates the project `NAME` (under `parent`) and returns its directory.
pub fn new(name: &str, lang: Lang, parent: &Path) -> Result<PathBuf> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists; choose another name", dir.display());
    }
    let mut files: Vec<(String, String)> = template(lang)
        .into_iter()
        .map(|(p, text)| (p.to_string(), text.replace("{{name}}", name)))
        .collect();
    files.push((
        "samples/basic.json".into(),
        SAMPLE.replace("{{name}}", name),
    ));
    if lang == Lang::Rust {
        // The SDK is not on crates.io: the project carries its own copy.
        for (p, text) in sdk::RUST {
            let text = text.replace(sdk::RUST_WIT_PATH.0, sdk::RUST_WIT_PATH.1);
            files.push((format!("sdk/switchyard-plugin/{p}"), text));
        }
        files.push((
            "sdk/switchyard-plugin/Cargo.toml".into(),
            sdk::RUST_MANIFEST.into(),
        ));
        files.push(("sdk/switchyard-plugin/wit/plugin.wit".into(), WIT.into()));
    }
    for (p, text) in &files {
        let path = dir.join(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("created {lang} plugin project {}", dir.display());
    println!("next:");
    println!(
        "  switchyard plugin test {}     # builds, then runs samples/*.json",
        dir.display()
    );
    println!("  edit the plugin, then drop dist/{name}.wasm into the router's plugins folder");
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("my-plugin_2").is_ok());
        for bad in ["", "My", "2x", "a b", "a/b", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_copied_rust_sdk_points_at_its_own_wit() {
        let lib = sdk::RUST[0].1;
        assert!(
            lib.contains(sdk::RUST_WIT_PATH.0),
            "the SDK's WIT path moved"
        );
    }
}
