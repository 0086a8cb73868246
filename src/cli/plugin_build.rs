//! `switchyard plugin build DIR`: builds a Rust plugin project into a
//! `wasm32-wasip2` component and copies it where the router can load it.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-wasip2";

/// Builds the project in `dir`; returns the path of the written component.
pub fn build(dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{}: no Cargo.toml; only Rust plugin projects can be built for now",
            dir.display()
        );
    }
    ensure_target()?;
    let mut child = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let mut artefacts = Vec::new();
    let mut package = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("reading cargo output")?;
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact"
                || msg["manifest_path"].as_str() != manifest_str(&manifest).as_deref()
            {
                continue;
            }
            package = msg["target"]["name"].as_str().map(str::to_string);
            for f in msg["filenames"].as_array().into_iter().flatten() {
                if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                    artefacts.push(PathBuf::from(f));
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo build failed for {}", dir.display());
    }
    let Some(built) = artefacts.pop() else {
        bail!(
            "{}: cargo produced no .wasm (is it a `cdylib` crate?)",
            dir.display()
        );
    };
    let name = package.unwrap_or_else(|| "plugin".into()).replace('_', "-");
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("dist").join(format!("{name}.wasm")));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Write aside and rename, so a router watching `out` never sees half a file.
    let tmp = out.with_extension("wasm.tmp");
    std::fs::copy(&built, &tmp)
        .with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, &out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!("built {} ({} KiB)", out.display(), size / 1024);
    Ok(out)
}

fn manifest_str(manifest: &Path) -> Option<String> {
    std::fs::canonicalize(manifest)
        .ok()
        .map(|p| p.display().to_string())
}

/// Adds the `wasm32-wasip2` target through rustup when it is missing.
fn ensure_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("cannot run rustup (needed to add the wasm32-wasip2 target)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed");
    }
    Ok(())
}
