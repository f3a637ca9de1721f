#!/usr/bin/env bash
# Builds ../py-hello.wasm: a wasi:http/proxy component written in Python (app.py),
# made with componentize-py from PyPI.
#
# Needs: python3 (>= 3.10) with venv, and PyPI. componentize-py is installed,
# pinned, into a private venv (py-hello/.venv, git-ignored); its wheel carries
# CPython and the whole toolchain, nothing else is downloaded.
#
# WIT: componentize-py's package ships no WIT files (its documented http example
# uses `-d ../../wit` from its own repository), so wit/deps/ holds the WASI
# 0.2.12 WIT that wasmtime-wasi-http 48.0.8 (the agent's host) ships in its
# crate's wit/deps/, copied verbatim; wit/world.wit is only the root package
# that lets the resolver find them. The target world is wasi:http/proxy@0.2.12.
#
# Not byte-reproducible: the tool pre-initialises the interpreter and snapshots
# its memory, which holds build-time random state, so two builds of the same
# source differ in bytes (and by a few bytes to ~50 KB in size). The committed
# .wasm is the artifact the tests use; rebuilding gives an equivalent one.
#
# Usage: bash tests/guests/py-hello/build.sh   (from anywhere)
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/../py-hello.wasm"
cd "$HERE"

if [[ ! -x .venv/bin/componentize-py ]] \
    || [[ "$(.venv/bin/componentize-py --version)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
.venv/bin/componentize-py --version

# `componentize` generates the `wit_world` bindings module on the fly (the
# `bindings` subcommand only writes stubs, for IDEs); app.py imports from it.
.venv/bin/componentize-py -d wit -w wasi:http/proxy@0.2.12 componentize app -o "$OUT"
echo "built py-hello.wasm ($(wc -c < "$OUT") bytes)"
sha256sum "$OUT"
