#!/usr/bin/env bash
# Builds every plugin in this workspace as a WebAssembly component and copies
# the results to plugins/dist/<crate-name>.wasm. Safe to re-run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

TARGET=wasm32-wasip2
# Crate names of the plugins; each becomes dist/<name>.wasm.
COMPONENTS=(prisoner-projection domain-fanout chaos versioned counter-projection)
# Extra builds of test plugins with features: "<crate> <feature> <dist name>".
VARIANTS=(
    "versioned v2 versioned-v2"
    "versioned trap-init versioned-trap-init"
    "counter-projection v2 counter-projection-v2"
)

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

# Variants last: each rebuild of a crate overwrites its artefact in target/.
for variant in "${VARIANTS[@]}"; do
    read -r crate feature name <<<"$variant"
    cargo build --release --target "$TARGET" -p "$crate" --features "$feature"
    src="$target_dir/$TARGET/release/${crate//-/_}.wasm"
    dst="dist/$name.wasm"
    cp "$src" "$dst.tmp"
    mv "$dst.tmp" "$dst"
    printf '%-40s %8d bytes\n' "plugins/$dst" "$(wc -c <"$dst")"
done
