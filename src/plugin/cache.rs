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
use std::sync::atomic::{AtomicU64, Ordering};

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
        let artefact = compile(bytes)?;
        match self.store(&path, &artefact) {
            // Loaded as a cache hit is, so its code is mapped from the file
            // (shared with the page cache) instead of held in the heap.
            // SAFETY: written just now by `store` from `compile`'s artefact.
            Ok(()) => match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, false)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot load the compile cache entry just written")
                }
            },
            // The cache only saves time; a router that cannot write it still runs.
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache")
            }
        }
        load(engine, &artefact).map(|c| (c, false))
    }

    fn store(&self, path: &Path, artefact: &[u8]) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        // A name of its own: two loads of one version (plugins sharing a
        // file) may compile at once, and the file renamed is then mapped.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("cwasm.{}-{n}.tmp", std::process::id()));
        let written = std::fs::write(&tmp, artefact).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(|e| e.to_string())
    }
}

/// The component in `artefact` (from [`compile`]) for `engine`.
pub fn load(engine: &Engine, artefact: &[u8]) -> Result<Component, String> {
    // SAFETY: `artefact` is `compile`'s output in this process, made by an
    // engine of the same configuration (which wasmtime checks again).
    unsafe { Component::deserialize(engine, artefact) }.map_err(|e| format!("{e:#}"))
}

/// Compiles `bytes` into a precompiled artefact (for [`load`]), then hands
/// the memory compiling used back to the system.
///
/// * The compile runs on an engine of its own, of the shared engine's
///   configuration, dropped once the artefact is out: an engine keeps a
///   Cranelift context per thread that ever compiled on it, each holding its
///   buffers at the size of the largest function it compiled. Compiled on
///   the shared engine, the default config's two Rust plugins left the
///   router at about 80 MiB resident for good, against 30 MiB when they came
///   from the cache.
/// * It runs on a thread pool of its own (wasmtime's parallel compilation
///   uses the current rayon pool), whose threads exit when it is done, and
///   the freed memory is then decommitted on a short-lived thread: the
///   router's allocator (mimalloc) keeps the pages a thread freed committed
///   until that thread allocates again or exits, and decommitting takes tens
///   of milliseconds (about 40 ms more per cold compile when the caller
///   waited for it).
pub fn compile(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let scratch = Engine::new(&super::limits::engine_config()).map_err(|e| format!("{e:#}"))?;
    let build = || Component::from_binary(&scratch, bytes).and_then(|c| c.serialize());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (exited, exits) = std::sync::mpsc::channel();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wasm-compile-{i}"))
        .exit_handler(move |_| {
            let _ = exited.send(());
        })
        .build();
    let artefact = match pool {
        Ok(pool) => {
            let a = pool.install(build);
            drop(pool);
            for _ in 0..threads {
                if exits
                    .recv_timeout(std::time::Duration::from_secs(1))
                    .is_err()
                {
                    break;
                }
            }
            a
        }
        Err(_) => build(),
    };
    drop(scratch);
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
    artefact.map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component whose export `one` returns 1.
    fn one() -> Vec<u8> {
        wat::parse_str(
            r#"(component
                 (core module $m (func (export "one") (result i32) i32.const 1))
                 (core instance $i (instantiate $m))
                 (func (export "one") (result u32) (canon lift (core func $i "one"))))"#,
        )
        .expect("valid text")
    }

    /// What `one` of `component` returns on `engine`.
    fn call_one(engine: &Engine, component: &Component) -> u32 {
        let mut store = wasmtime::Store::new(engine, ());
        store.set_epoch_deadline(1_000_000);
        let linker = wasmtime::component::Linker::<()>::new(engine);
        let instance = linker
            .instantiate(&mut store, component)
            .expect("instantiates");
        let one = instance
            .get_typed_func::<(), (u32,)>(&mut store, "one")
            .expect("exported");
        one.call(&mut store, ()).expect("runs").0
    }

    #[test]
    fn compile_gives_a_component_or_the_reason() {
        let engine = crate::plugin::limits::SharedEngine::new().expect("engine");
        let artefact = compile(&one()).expect("compiles");
        // Compiled on an engine of its own, it runs on the shared one.
        let component = load(&engine.engine, &artefact).expect("loads on the shared engine");
        assert_eq!(call_one(&engine.engine, &component), 1);
        let err = compile(b"\0asm not really").expect_err("not a component");
        assert!(!err.is_empty());
    }

    #[test]
    fn the_cache_serves_what_it_compiled_and_a_cache_it_cannot_write_only_costs_time() {
        let engine = crate::plugin::limits::SharedEngine::new().expect("engine");
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = CompileCache::new(dir.path().join("cache"));
        let (c, hit) = cache
            .component(&engine.engine, "d1", Some(&one()))
            .expect("compiles");
        assert!(!hit);
        assert_eq!(call_one(&engine.engine, &c), 1);
        assert!(cache.contains("d1"));
        let (c, hit) = cache
            .component(&engine.engine, "d1", None)
            .expect("from the cache");
        assert!(hit);
        assert_eq!(call_one(&engine.engine, &c), 1);
        // Its directory's place taken by a file: nothing is written, and
        // the component compiled in memory serves all the same.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"not a directory").expect("write");
        let cache = CompileCache::new(blocked);
        let (c, hit) = cache
            .component(&engine.engine, "d2", Some(&one()))
            .expect("compiles");
        assert!(!hit);
        assert_eq!(call_one(&engine.engine, &c), 1);
        assert!(!cache.contains("d2"));
        let err = cache
            .component(&engine.engine, "d2", None)
            .expect_err("not cached");
        assert!(err.contains("not in the compile cache"), "{err}");
    }
}
