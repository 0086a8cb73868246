//! The file watcher: notices changes to plugin components, the config file
//! and the schema files, and *signals* the reload controller. It never
//! reloads anything itself.
//!
//! It watches the directories that hold those files (not the files: an
//! atomic rename replaces the file, and a watch on the old inode would go
//! quiet), maps each event's path to a request, and debounces: a request is
//! sent once its file has been quiet for [`DEBOUNCE`]. A copy in progress
//! keeps producing events, so the final content is what gets loaded; if a
//! slow writer pauses longer than that, the half-written file fails to load
//! (the old version keeps serving) and the writes that follow trigger another
//! reload with the complete file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use super::{ReloadHandle, Request};
use crate::config::Config;

/// Quiet time before a change is acted on: long enough to cover the bursts of
/// events one write or copy makes, short enough to feel immediate.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// What the watched paths mean.
#[derive(Debug, Default)]
struct PathMap {
    files: HashMap<PathBuf, Request>,
    /// Directories whose `*.schema.json` files are schemas.
    schema_dirs: BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl PathMap {
    fn from_config(cfg: &Config) -> Self {
        let mut map = PathMap::default();
        map.files.insert(cfg.file.clone(), Request::Config);
        map.files
            .insert(cfg.schemas.base.get_ref().clone(), Request::Schemas);
        if let Some(dir) = &cfg.schemas.types_dir {
            map.schema_dirs.insert(dir.get_ref().clone());
            map.dirs.insert(dir.get_ref().clone());
        }
        for (name, p) in &cfg.plugins {
            map.files
                .insert(p.path.get_ref().clone(), Request::Plugin(name.clone()));
        }
        let parents: Vec<PathBuf> = map
            .files
            .keys()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        map.dirs.extend(parents);
        map
    }

    fn request_for(&self, path: &Path) -> Option<Request> {
        if let Some(r) = self.files.get(path) {
            return Some(r.clone());
        }
        let name = path.file_name()?.to_str()?;
        let in_schema_dir = path.parent().is_some_and(|d| self.schema_dirs.contains(d));
        (in_schema_dir && name.ends_with(".schema.json")).then_some(Request::Schemas)
    }
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    state: Arc<Mutex<PathMap>>,
    watcher: Mutex<RecommendedWatcher>,
}

impl Watcher {
    /// Watches what `cfg` names and sends debounced requests to `handle`.
    pub fn spawn(cfg: &Config, handle: ReloadHandle) -> Result<Self, notify::Error> {
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(move |ev| {
            let _ = tx.send(ev);
        })?;
        let map = PathMap::from_config(cfg);
        for dir in &map.dirs {
            watch_dir(&mut watcher, dir);
        }
        let state = Arc::new(Mutex::new(map));
        let shared = state.clone();
        std::thread::Builder::new()
            .name("reload-watch".into())
            .spawn(move || debounce(rx, &shared, &handle))
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(Self {
            state,
            watcher: Mutex::new(watcher),
        })
    }

    /// Follows a new config: watches the directories it names now.
    pub fn update(&self, cfg: &Config) {
        let map = PathMap::from_config(cfg);
        let mut state = crate::sync::lock(&self.state);
        let mut watcher = crate::sync::lock(&self.watcher);
        for dir in state.dirs.difference(&map.dirs) {
            let _ = watcher.unwatch(dir);
        }
        for dir in map.dirs.difference(&state.dirs) {
            watch_dir(&mut watcher, dir);
        }
        *state = map;
    }
}

fn watch_dir(watcher: &mut RecommendedWatcher, dir: &Path) {
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
    }
}

/// Whether an event can mean new content (not a mere read).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
        _ => true,
    }
}

fn debounce(
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    state: &Mutex<PathMap>,
    handle: &ReloadHandle,
) {
    let mut due: BTreeMap<Request, Instant> = BTreeMap::new();
    loop {
        let wait = due
            .values()
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Ok(ev)) if is_change(&ev.kind) => {
                let map = crate::sync::lock(state);
                for path in &ev.paths {
                    if let Some(req) = map.request_for(path) {
                        due.insert(req, Instant::now() + DEBOUNCE);
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "file watch error"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The watcher was dropped: the router is stopping.
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let ready: Vec<Request> = due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for req in ready {
            due.remove(&req);
            tracing::debug!(?req, "file change");
            handle.signal(req, "watch");
        }
    }
}
