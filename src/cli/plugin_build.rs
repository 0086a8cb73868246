//! `switchyard plugin build DIR`: detects the project's language and builds
//! it into a component the router can load, at `DIR/dist/<name>.wasm`.
//!
//! * Rust (`Cargo.toml`): `cargo build --release --target wasm32-wasip2`.
//! * JavaScript (`package.json`, entry `main` or `plugin.js`): ComponentizeJS,
//!   interpreted (its AOT step needs a download at build time).
//! * Python (`plugin.py`): componentize-py.
//! * C (`plugin.c`): clang for `wasm32-wasi`, then `wasm-tools component new`.
//!
//! JavaScript, Python and C sources are staged in `DIR/.switchyard/build/` next
//! to this binary's copy of the SDK and the WIT contract, so a project always
//! builds against the contract of the switchyard that builds it.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use super::plugin_new::{Lang, WIT, sdk};
use super::toolchain;

const TARGET: &str = "wasm32-wasip2";

/// Directories never part of a project's sources.
const SKIP_DIRS: &[&str] = &["target", "dist", "node_modules", "samples", "__pycache__"];

/// A plugin project on disk.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub lang: Lang,
    /// The component's name: `dist/<name>.wasm`.
    pub name: String,
}

impl Project {
    /// Recognises the project in `dir` by its manifest.
    pub fn detect(dir: &Path) -> Result<Project> {
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("{}: no such plugin project", dir.display()))?;
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        let (lang, name) = if dir.join("Cargo.toml").is_file() {
            let text = read(&dir.join("Cargo.toml"))?;
            let manifest: toml::Table = toml::from_str(&text)
                .with_context(|| format!("{}/Cargo.toml is not valid TOML", dir.display()))?;
            let name = manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .map(str::to_string)
                .with_context(|| format!("{}/Cargo.toml: no [package] name", dir.display()))?;
            (Lang::Rust, name)
        } else if dir.join("package.json").is_file() {
            let name = package_json(&dir)?["name"]
                .as_str()
                .map(|n| n.rsplit('/').next().unwrap_or(n).to_string())
                .unwrap_or(dir_name);
            (Lang::Js, name)
        } else if dir.join("plugin.py").is_file() {
            (Lang::Python, dir_name)
        } else if dir.join("plugin.c").is_file() {
            (Lang::C, dir_name)
        } else {
            bail!(
                "{}: not a plugin project: expected Cargo.toml (Rust), package.json \
                 (JavaScript), plugin.py (Python) or plugin.c (C); `switchyard plugin new` \
                 makes one",
                dir.display()
            );
        };
        Ok(Project { dir, lang, name })
    }

    /// Where `build` writes the component by default.
    pub fn artefact(&self) -> PathBuf {
        self.dir.join("dist").join(format!("{}.wasm", self.name))
    }

    /// Whether the artefact is missing or older than a source file. Rust
    /// projects always count as stale: cargo knows better what changed.
    pub fn is_stale(&self) -> bool {
        if self.lang == Lang::Rust {
            return true;
        }
        let Some(built) = mtime(&self.artefact()) else {
            return true;
        };
        sources(&self.dir)
            .iter()
            .any(|f| mtime(f).is_none_or(|t| t > built))
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn package_json(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("package.json");
    serde_json::from_str(&read(&path)?)
        .with_context(|| format!("{} is not valid JSON", path.display()))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Source files of a project: everything outside build, tool and hidden dirs.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && !SKIP_DIRS.contains(&name.as_str()) {
                    stack.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Builds the project in `dir`; returns the path of the written component.
pub fn build(dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let project = Project::detect(dir)?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| project.artefact());
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let started = std::time::Instant::now();
    match project.lang {
        Lang::Rust => build_rust(&project, &out)?,
        Lang::Js => build_js(&project, &out)?,
        Lang::Python => build_python(&project, &out)?,
        Lang::C => build_c(&project, &out)?,
    }
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "built {} ({} plugin, {} KiB, {:.1} s)",
        out.display(),
        project.lang,
        size / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Write aside and rename, so a router watching `out` never sees half a file.
fn install(built: &Path, out: &Path) -> Result<()> {
    let tmp = out.with_extension("wasm.tmp");
    std::fs::copy(built, &tmp)
        .with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))
}

/// A fresh staging directory under `.switchyard/build/`.
fn staging(project: &Project, what: &str) -> Result<PathBuf> {
    let dir = project.dir.join(".switchyard").join("build").join(what);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Copies the project's source files with one of `exts` under `to`.
fn stage_sources(project: &Project, to: &Path, exts: &[&str]) -> Result<()> {
    for f in sources(&project.dir) {
        if !f.extension().is_some_and(|x| exts.iter().any(|e| x == *e)) {
            continue;
        }
        let rel = f.strip_prefix(&project.dir).unwrap_or(&f);
        let dst = to.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&f, &dst).with_context(|| format!("copying {}", f.display()))?;
    }
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn build_js(project: &Project, out: &Path) -> Result<()> {
    let node = toolchain::node()?;
    let package = toolchain::componentize_js(&project.dir)?;
    let entry = package_json(&project.dir)?["main"]
        .as_str()
        .unwrap_or("plugin.js")
        .to_string();
    let stage = staging(project, "js")?;
    let src = stage.join("src");
    stage_sources(project, &src, &["js", "mjs", "cjs", "json"])?;
    if !src.join(&entry).is_file() {
        bail!(
            "{}: entry module {entry} not found (package.json `main`)",
            project.dir.display()
        );
    }
    // The SDK goes next to the entry module, where `./switchyard.js` finds it.
    let entry_dir = src.join(&entry).parent().map(Path::to_path_buf);
    write(
        &entry_dir.unwrap_or(src.clone()).join("switchyard.js"),
        sdk::JS,
    )?;
    write(&stage.join("wit/plugin.wit"), WIT)?;
    write(&stage.join("componentize.mjs"), sdk::JS_COMPONENTIZE)?;
    eprintln!("componentizing {entry} with ComponentizeJS (takes a few seconds)");
    run(
        Command::new(node)
            .arg(stage.join("componentize.mjs"))
            .arg(&package)
            .arg(src.join(&entry))
            .arg(stage.join("wit"))
            .arg(out),
        "ComponentizeJS",
    )
}

fn build_python(project: &Project, out: &Path) -> Result<()> {
    let tool = toolchain::componentize_py(&project.dir)?;
    let stage = staging(project, "python")?;
    stage_sources(project, &stage.join("src"), &["py"])?;
    write(&stage.join("sdk/switchyard_plugin.py"), sdk::PYTHON)?;
    write(&stage.join("wit/plugin.wit"), WIT)?;
    let built = stage.join("plugin.wasm");
    eprintln!("componentizing plugin.py with componentize-py (takes a few seconds)");
    run(
        Command::new(&tool)
            .arg("-d")
            .arg(stage.join("wit"))
            .args(["-w", "processor", "componentize", "-p"])
            .arg(stage.join("src"))
            .arg("-p")
            .arg(stage.join("sdk"))
            .arg("plugin")
            .arg("-o")
            .arg(&built)
            .stdout(Stdio::null()),
        "componentize-py",
    )?;
    install(&built, out)
}

fn build_c(project: &Project, out: &Path) -> Result<()> {
    let clang = toolchain::clang_wasi()?;
    let wasm_tools = toolchain::wasm_tools(&project.dir)?;
    let stage = staging(project, "c")?;
    let sdk_dir = stage.join("sdk");
    std::fs::create_dir_all(&sdk_dir)?;
    for (name, bytes) in sdk::C {
        std::fs::write(sdk_dir.join(name), bytes)
            .with_context(|| format!("writing {}", sdk_dir.join(name).display()))?;
    }
    let sources: Vec<PathBuf> = sources(&project.dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|x| x == "c"))
        .collect();
    let core = stage.join("plugin.core.wasm");
    run(
        Command::new(&clang)
            .args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-I"])
            .arg(&sdk_dir)
            .arg("-I")
            .arg(&project.dir)
            .args(&sources)
            .arg(sdk_dir.join("processor.c"))
            .arg(sdk_dir.join("processor_component_type.o"))
            .arg("-o")
            .arg(&core),
        "clang",
    )?;
    let built = stage.join("plugin.wasm");
    let status = Command::new(&wasm_tools)
        .args(["component", "new"])
        .arg(&core)
        .arg("-o")
        .arg(&built)
        .status()
        .context("cannot run wasm-tools")?;
    if !status.success() {
        bail!(
            "wasm-tools component new failed ({status}); a C plugin cannot use stdio, files or \
             the environment (it would import WASI, which C plugins are built without)"
        );
    }
    install(&built, out)
}

fn build_rust(project: &Project, out: &Path) -> Result<()> {
    let manifest = project.dir.join("Cargo.toml");
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
        // In the project, so that its own `.cargo/config.toml` applies.
        .current_dir(&project.dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo (install Rust with rustup: https://rustup.rs)")?;
    let mut artefacts = Vec::new();
    let wanted = manifest.display().to_string();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("reading cargo output")?;
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact"
                || msg["manifest_path"].as_str() != Some(wanted.as_str())
            {
                continue;
            }
            for f in msg["filenames"].as_array().into_iter().flatten() {
                if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                    artefacts.push(PathBuf::from(f));
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo build failed for {}", project.dir.display());
    }
    let Some(built) = artefacts.pop() else {
        bail!(
            "{}: cargo produced no .wasm (is it a `cdylib` crate?)",
            project.dir.display()
        );
    };
    install(&built, out)
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
    run(
        Command::new("rustup").args(["target", "add", TARGET]),
        "rustup target add",
    )
}
