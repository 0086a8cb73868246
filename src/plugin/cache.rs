//! The cache of precompiled components, keyed by the SHA-256 of the `.wasm`.
//!
//! Compiling a component takes milliseconds for Rust guests and seconds for
//! JavaScript or Python ones; loading the precompiled artefact takes about a
//! millisecond. So a version seen before (a rollback, a restart, a projection
//! whose old version must keep serving) loads at once.
//!
//! Artefacts are written by this process into the router's own data
//! directory (aside, then renamed), and wasmtime checks on load that an
//! artefact matches this engine's version and settings; one that does not is
//! compiled again and overwritten.

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of `<sha256>.cwasm` files.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// Whether an artefact for `digest` is present.
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_file()
    }

    /// The component for `digest`, from the cache when possible, else
    /// compiled from `bytes` (when given) and cached. Blocking: call it off the
    /// async runtime.
    pub fn component(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: Option<&[u8]>,
    ) -> Result<(Component, bool), String> {
        let path = self.path(digest);
        if path.is_file() {
            // SAFETY: the file was produced by `Component::serialize` of this
            // router into its own data directory; wasmtime verifies that it
            // was made by a compatible engine before using it.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "stale compile cache entry, recompiling")
                }
            }
        }
        let bytes = bytes.ok_or_else(|| format!("version {digest} is not in the compile cache"))?;
        let component = Component::from_binary(engine, bytes).map_err(|e| format!("{e:#}"))?;
        if let Err(e) = self.store(&path, &component) {
            // The cache only saves time; a router that cannot write it still runs.
            tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache");
        }
        Ok((component, false))
    }

    fn store(&self, path: &Path, component: &Component) -> Result<(), String> {
        let artefact = component.serialize().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("cwasm.tmp");
        std::fs::write(&tmp, artefact).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())
    }
}
