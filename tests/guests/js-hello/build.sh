#!/usr/bin/env bash
# Builds ../js-hello.wasm: a wasi:http/proxy component written in JavaScript
# (app.js, a StarlingMonkey `fetch` event listener), made with componentize-js.
#
# Needs: Node.js >= 20 with npm, and the npm registry. The toolchain is pinned
# in package.json / package-lock.json and installed locally (node_modules/,
# git-ignored) with `npm ci`; its SpiderMonkey engine and wizer ship inside the
# npm packages, nothing else is downloaded. No AOT (weval) is used.
#
# WIT: componentize-js ships no WASI WIT, and the StarlingMonkey engine in
# componentize-js 0.23.0 is built against WASI 0.2.10 (it exports
# wasi:http/incoming-handler@0.2.10#handle), so the target world must be
# wasi:http/proxy@0.2.10 -- targeting 0.2.12 fails with "failed to find export
# of interface `wasi:http/incoming-handler@0.2.12` function `handle`".
# wit/deps/ is the WASI 0.2.12 WIT shipped by the wasmtime-wasi-http 48.0.8
# crate (see ../py-hello/wit/deps) relabelled as 0.2.10: every `@0.2.12`
# became `@0.2.10`, and `wasi:cli/exit#exit-with-code` (`@since 0.2.12`) is
# marked `@unstable(feature = cli-exit-with-code)` as it was before 0.2.12.
# Nothing in the proxy world differs. wit/world.wit is only the root package.
#
# Not byte-reproducible: the tool pre-initialises the interpreter and snapshots
# its memory, which holds build-time random state, so two builds of the same
# source differ in bytes (and by a few bytes to ~50 KB in size). The committed
# .wasm is the artifact the tests use; rebuilding gives an equivalent one.
#
# Usage: bash tests/guests/js-hello/build.sh   (from anywhere)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/../js-hello.wasm"
cd "$HERE"

npm ci --no-audit --no-fund --loglevel=error
echo "componentize-js $(node -p 'require("./node_modules/@bytecodealliance/componentize-js/package.json").version')"

./node_modules/.bin/componentize-js --wit wit --world-name wasi:http/proxy@0.2.10 -o "$OUT" app.js
echo "built js-hello.wasm ($(wc -c < "$OUT") bytes)"
sha256sum "$OUT"
