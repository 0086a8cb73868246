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
        let component = compile(engine, bytes)?;
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

/// Compiles `bytes`, then hands the memory compiling used back to the
/// system. Cranelift allocates a lot while it compiles (the default config's
/// two Rust plugins take the router from 28 to 121 MiB resident), and the
/// router's allocator (mimalloc) keeps the pages a thread freed committed
/// until that thread allocates again or exits. So the compile runs on a
/// thread pool of its own (wasmtime's parallel compilation uses the current
/// rayon pool), whose threads exit when it is done, and the freed memory is
/// then decommitted on a short-lived thread (decommitting takes tens of
/// milliseconds, measured as about 40 ms more per cold compile when the
/// caller waited for it).
pub fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (exited, exits) = std::sync::mpsc::channel();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wasm-compile-{i}"))
        .exit_handler(move |_| {
            let _ = exited.send(());
        })
        .build();
    let component = match pool {
        Ok(pool) => {
            let c = pool.install(|| Component::from_binary(engine, bytes));
            drop(pool);
            for _ in 0..threads {
                if exits
                    .recv_timeout(std::time::Duration::from_secs(1))
                    .is_err()
                {
                    break;
                }
            }
            c
        }
        Err(_) => Component::from_binary(engine, bytes),
    };
    let collect = || {
        // SAFETY: `mi_collect` has no preconditions; with `true` it also
        // decommits the free memory of the allocator's arenas.
        unsafe { libmimalloc_sys::mi_collect(true) }
    };
    if std::thread::Builder::new()
        .name("wasm-compile-gc".into())
        .spawn(collect)
        .is_err()
    {
        collect();
    }
    component.map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_gives_a_component_or_the_reason() {
        let engine = crate::plugin::limits::SharedEngine::new().expect("engine");
        let bytes = wat::parse_str(
            r#"(component
                 (core module $m (func (export "one") (result i32) i32.const 1))
                 (core instance $i (instantiate $m))
                 (func (export "one") (result u32) (canon lift (core func $i "one"))))"#,
        )
        .expect("valid text");
        let component = compile(&engine.engine, &bytes).expect("compiles");
        assert!(component.get_export_index(None, "one").is_some());
        let err = compile(&engine.engine, b"\0asm not really").expect_err("not a component");
        assert!(!err.is_empty());
    }
}
