#!/usr/bin/env python3
"""Pads a WebAssembly component to an exact size with one custom section.

    python3 tests/guests/pad.py IN.wasm OUT.wasm [SIZE]    (SIZE in bytes, default 1048576)

Appends a custom section named `fleetcast-padding` whose payload is deterministic
pseudo-random bytes (SHA-256 in counter mode, seeded with IN's own bytes), so two different
inputs give different padding and the output does not compress. A custom section is valid at
the top level of a component and ignored by validators and wasmtime, so OUT serves exactly
like IN. The same input always gives the same output (no time, no randomness).
"""

import hashlib
import sys

NAME = b"fleetcast-padding"


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def section(payload_len: int) -> bytes:
    """The section's header: id 0, size, then the name (the payload follows)."""
    body_len = len(leb128(len(NAME))) + len(NAME) + payload_len
    return b"\x00" + leb128(body_len) + leb128(len(NAME)) + NAME


def padding(seed: bytes, n: int) -> bytes:
    out = bytearray()
    counter = 0
    key = hashlib.sha256(seed).digest()
    while len(out) < n:
        out += hashlib.sha256(key + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:n])


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) == 4 else 1024 * 1024
    with open(src, "rb") as f:
        wasm = f.read()
    if wasm[:4] != b"\0asm":
        print(f"pad.py: {src} is not WebAssembly", file=sys.stderr)
        return 1
    # The header's own length depends on the payload length (LEB128): shrink until it fits.
    payload_len = size - len(wasm) - len(section(0))
    while payload_len >= 0 and len(wasm) + len(section(payload_len)) + payload_len > size:
        payload_len -= 1
    if payload_len < 0 or len(wasm) + len(section(payload_len)) + payload_len != size:
        print(f"pad.py: cannot pad {src} ({len(wasm)} bytes) to exactly {size} bytes", file=sys.stderr)
        return 1
    out = wasm + section(payload_len) + padding(wasm, payload_len)
    with open(dst, "wb") as f:
        f.write(out)
    print(f"padded {src} ({len(wasm)} bytes) to {dst} ({len(out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
