#!/usr/bin/env bash
# Rebuilds every guest artifact in tests/guests/ reproducibly:
#   hello-v1.wasm        wasi:http/proxy component, HELLO_VERSION=1.0.0
#   hello-v2.wasm        same, HELLO_VERSION=2.0.0
#   hello-1mib-v1.wasm   hello-v1.wasm padded to exactly 1 MiB with a custom section (pad.py)
#   hello-1mib-v2.wasm   hello-v2.wasm padded the same way (different padding)
#   wrong-world.wasm     valid component exporting wasi:cli/run (no incoming-handler)
#   fault-health-trap.wasm  faults/ with FAULT=health-trap, HELLO_VERSION=3.0.0: GET /health traps
#   fault-crash.wasm        faults/ with FAULT=crash,       HELLO_VERSION=3.1.0: /crash* traps
#   fault-spin.wasm         faults/ with FAULT=spin,        HELLO_VERSION=3.2.0: all but GET /health loop forever
#   fault-bomb.wasm         faults/ with FAULT=bomb,        HELLO_VERSION=3.3.0: every request allocates until it traps
#   start-trap.wasm      component whose instantiation traps (wat/start-trap.wat, via wat2wasm/)
#   not-a-component.wasm valid *core* wasm module (written byte by byte)
#   garbage.bin          plain text, not wasm at all
#
# Toolchain needed: stable Rust (>= 1.87) with the WASI preview 2 target:
#   rustup target add wasm32-wasip2
# The rustc wasm32-wasip2 target links a component directly; no wasm-tools,
# cargo-component or wit-bindgen CLI is needed. Crate versions are pinned by the
# committed Cargo.lock files (built with --locked).
#
# Usage: bash tests/guests/build.sh   (from anywhere)
set -euo pipefail

GUESTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"

# Reproducibility: keep machine-specific paths (checkout location, cargo home)
# out of the binaries, and ignore any ambient rustflags / target settings.
export RUSTFLAGS="--remap-path-prefix=${GUESTS}=/fleetcast/tests/guests --remap-path-prefix=${CARGO_HOME_DIR}=/cargo"
unset CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
export SOURCE_DATE_EPOCH=0

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "build.sh: the wasm32-wasip2 target is missing; run: rustup target add wasm32-wasip2" >&2
    exit 1
fi

build_guest() { # <crate dir> <artifact name in target/.../release> <output> [HELLO_VERSION] [FAULT]
    local dir="$1" artifact="$2" out="$3" version="${4:-}" fault="${5:-}"
    (
        cd "$GUESTS/$dir"
        if [[ -n "$version" ]]; then export HELLO_VERSION="$version"; else unset HELLO_VERSION; fi
        if [[ -n "$fault" ]]; then export FAULT="$fault"; else unset FAULT; fi
        cargo build --quiet --locked --release --target wasm32-wasip2 --target-dir "$GUESTS/$dir/target"
    )
    cp "$GUESTS/$dir/target/wasm32-wasip2/release/$artifact" "$GUESTS/$out"
    echo "built $out ($(wc -c < "$GUESTS/$out") bytes)"
}

# HELLO_VERSION is read with option_env!, which cargo tracks, so switching it rebuilds the crate.
build_guest hello fleetcast_guest_hello.wasm hello-v1.wasm 1.0.0
build_guest hello fleetcast_guest_hello.wasm hello-v2.wasm 2.0.0
build_guest wrong-world wrong-world.wasm wrong-world.wasm

# Fault-injecting guests (faults/): hello's behaviour plus one fault chosen by FAULT (option_env!,
# tracked by cargo like HELLO_VERSION). Each has its own version so tests can tell them apart.
build_guest faults fleetcast_guest_faults.wasm fault-health-trap.wasm 3.0.0 health-trap
build_guest faults fleetcast_guest_faults.wasm fault-crash.wasm       3.1.0 crash
build_guest faults fleetcast_guest_faults.wasm fault-spin.wasm        3.2.0 spin
build_guest faults fleetcast_guest_faults.wasm fault-bomb.wasm        3.3.0 bomb

# Hand-written components in WebAssembly text (wat/), converted by the small host tool in
# wat2wasm/ (the `wat` crate, pinned by wat2wasm/Cargo.lock; same text -> same bytes).
(
    cd "$GUESTS/wat2wasm"
    cargo build --quiet --locked --release --target-dir "$GUESTS/wat2wasm/target"
)
"$GUESTS/wat2wasm/target/release/wat2wasm" "$GUESTS/wat/start-trap.wat" "$GUESTS/start-trap.wasm"
echo "built start-trap.wasm ($(wc -c < "$GUESTS/start-trap.wasm") bytes)"

# 1 MiB components for the mesh tests and bench: the same guests plus one custom section of
# deterministic padding (python3 only; pad.py alone regenerates them from the committed hello-v*).
python3 "$GUESTS/pad.py" "$GUESTS/hello-v1.wasm" "$GUESTS/hello-1mib-v1.wasm"
python3 "$GUESTS/pad.py" "$GUESTS/hello-v2.wasm" "$GUESTS/hello-1mib-v2.wasm"

# A minimal valid core module (version 1, not a component):
#   (module (func (export "answer") (result i32) i32.const 42))
printf '\x00\x61\x73\x6d\x01\x00\x00\x00'          > "$GUESTS/not-a-component.wasm"  # magic, version 1
printf '\x01\x05\x01\x60\x00\x01\x7f'             >> "$GUESTS/not-a-component.wasm"  # type: () -> i32
printf '\x03\x02\x01\x00'                         >> "$GUESTS/not-a-component.wasm"  # func 0 : type 0
printf '\x07\x0a\x01\x06answer\x00\x00'           >> "$GUESTS/not-a-component.wasm"  # export "answer" = func 0
printf '\x0a\x06\x01\x04\x00\x41\x2a\x0b'         >> "$GUESTS/not-a-component.wasm"  # code: i32.const 42; end
echo "built not-a-component.wasm ($(wc -c < "$GUESTS/not-a-component.wasm") bytes)"

# Plain text, no wasm magic: for "not wasm at all" error paths.
cat > "$GUESTS/garbage.bin" <<'TEXT'
This file is deliberately not WebAssembly. It is plain ASCII text used by the
fleetcast tests to check that publishing or loading something that is neither
a core wasm module nor a component fails cleanly, with a useful error, instead
of crashing the agent or the publisher. Its first four bytes spell "This", not
"\0asm", so any wasm parser must reject it at the magic number check.
TEXT
echo "built garbage.bin ($(wc -c < "$GUESTS/garbage.bin") bytes)"

(cd "$GUESTS" && sha256sum hello-v1.wasm hello-v2.wasm hello-1mib-v1.wasm hello-1mib-v2.wasm wrong-world.wasm \
    fault-health-trap.wasm fault-crash.wasm fault-spin.wasm fault-bomb.wasm start-trap.wasm \
    not-a-component.wasm garbage.bin)
