#!/usr/bin/env bash
# Builds every plugin as a WebAssembly component into plugins/dist/:
# the Rust workspace's plugins as dist/<crate-name>.wasm, and the JavaScript and
# Python examples as dist/<name>-js.wasm and dist/<name>-python.wasm.
# Needs the toolchains scripts/setup installs (plugins/js/node_modules for
# ComponentizeJS, the repository's .venv for componentize-py). Safe to re-run:
# JavaScript and Python components are rebuilt only when their sources changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

TARGET=wasm32-wasip2
# Crate names of the plugins; each becomes dist/<name>.wasm.
COMPONENTS=(prisoner-projection domain-fanout chaos hostile future-contract versioned counter-projection)
# Extra builds of test plugins with features: "<crate> <feature> <dist name>".
VARIANTS=(
    "versioned v2 versioned-v2"
    "versioned trap-init versioned-trap-init"
    "counter-projection v2 counter-projection-v2"
)
# Examples written again in JavaScript and Python (plugins/js/<name>, plugins/python/<name>).
EXAMPLES=(prisoner-projection domain-fanout)

if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        echo "adding rust target $TARGET"
        rustup target add "$TARGET"
    fi
fi

# PLUGINS_TARGET_DIR (CI keeps it outside the clone) wins over CARGO_TARGET_DIR.
target_dir="${PLUGINS_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}}"
export CARGO_TARGET_DIR="$target_dir"

# --target repeats .cargo/config.toml so the script does not depend on it.
cargo build --release --target "$TARGET"

mkdir -p dist
for name in "${COMPONENTS[@]}"; do
    # Cargo names the artefact after the library: dashes become underscores.
    src="$target_dir/$TARGET/release/${name//-/_}.wasm"
    dst="dist/$name.wasm"
    if [[ ! -f "$src" ]]; then
        echo "error: $src was not built" >&2
        exit 1
    fi
    # Copy aside and rename, so a router watching dist/ never sees half a file.
    cp "$src" "$dst.tmp"
    mv "$dst.tmp" "$dst"
    printf '%-40s %8d bytes\n' "plugins/$dst" "$(wc -c <"$dst")"
done

# Variants after the plain builds: each rebuild of a crate overwrites its
# artefact in target/.
for variant in "${VARIANTS[@]}"; do
    read -r crate feature name <<<"$variant"
    cargo build --release --target "$TARGET" -p "$crate" --features "$feature"
    src="$target_dir/$TARGET/release/${crate//-/_}.wasm"
    dst="dist/$name.wasm"
    cp "$src" "$dst.tmp"
    mv "$dst.tmp" "$dst"
    printf '%-40s %8d bytes\n' "plugins/$dst" "$(wc -c <"$dst")"
done

# Whether $1 is missing or older than any of the remaining paths' files.
stale() {
    local out=$1
    shift
    [[ ! -f "$out" ]] && return 0
    [[ -n "$(find "$@" -type f -newer "$out" -not -path '*/__pycache__/*' -print -quit)" ]]
}

report() {
    printf '%-40s %8d bytes\n' "plugins/$1" "$(wc -c <"$1")"
}

COMPONENTIZE_JS=js/node_modules/@bytecodealliance/componentize-js
COMPONENTIZE_PY=../.venv/bin/componentize-py
for tool in "$COMPONENTIZE_JS/package.json" "$COMPONENTIZE_PY"; do
    if [[ ! -f "$tool" ]]; then
        echo "error: $tool is missing: run scripts/setup (npm ci in plugins/js, pip into .venv)" >&2
        exit 1
    fi
done

for name in "${EXAMPLES[@]}"; do
    dst="dist/$name-js.wasm"
    if stale "$dst" "js/$name" sdk/js ../wit js/componentize.mjs; then
        # ComponentizeJS resolves `./switchyard.js` next to the entry module.
        stage=$(mktemp -d)
        cp "js/$name"/*.js sdk/js/switchyard.js "$stage/"
        node js/componentize.mjs "$COMPONENTIZE_JS" "$stage/plugin.js" ../wit "$dst"
        rm -rf "$stage"
    fi
    report "$dst"

    dst="dist/$name-python.wasm"
    if stale "$dst" "python/$name" sdk/python ../wit; then
        PYTHONDONTWRITEBYTECODE=1 "$COMPONENTIZE_PY" -d ../wit -w processor componentize \
            -p "python/$name" -p sdk/python plugin -o "$dst.tmp" >/dev/null
        mv "$dst.tmp" "$dst"
    fi
    report "$dst"
done
