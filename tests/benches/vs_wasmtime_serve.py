#!/usr/bin/env python3
"""fleetcast-agent against `wasmtime serve` (wasmtime-cli 48.0.8) on the same machine, in the
same run, with the same component (tests/guests/hello-v1.wasm) and the same load generator
(the `loadgen` binary of this repository: closed loop, keep-alive HTTP/1.1). Also: the agent's
idle RSS (and wasmtime serve's, for reference) and its cold start (process start -> first 200
served from its compiled cache).

Run from the repository root:  python3 tests/benches/vs_wasmtime_serve.py
Env: FLEETCAST_BENCH_CONNS (32), FLEETCAST_BENCH_SECS (10), FLEETCAST_BENCH_ROUNDS (3: load
runs per server, alternating), FLEETCAST_BENCH_COLD (10: cold starts),
FLEETCAST_BENCH_TOOLS (target/bench-tools: where wasmtime-cli is installed with cargo).
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("FLEETCAST_BENCH_TOOLS", ROOT / "target" / "bench-tools"))
CONNS = int(os.environ.get("FLEETCAST_BENCH_CONNS", "32"))
SECS = int(os.environ.get("FLEETCAST_BENCH_SECS", "10"))
ROUNDS = int(os.environ.get("FLEETCAST_BENCH_ROUNDS", "3"))
COLD = int(os.environ.get("FLEETCAST_BENCH_COLD", "10"))
BIN = ROOT / "target" / "release"
HELLO = ROOT / "tests" / "guests" / "hello-v1.wasm"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def http_ok(port, host="hello"):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_ok(port, deadline_s=60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if http_ok(port):
            return
        time.sleep(0.001)
    sys.exit(f"nothing answered 200 on port {port}")


def loadgen(port):
    out = subprocess.run(
        [BIN / "loadgen", "--addr", f"127.0.0.1:{port}", "--host", "hello", "--path", "/",
         "--connections", str(CONNS), "--duration", str(SECS), "--warmup", "2", "--json"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT, check=True)
    wasmtime = TOOLS / "bin" / "wasmtime"
    if not wasmtime.exists():
        subprocess.run(["cargo", "install", "wasmtime-cli", "--version", "48.0.8", "--locked",
                        "--root", TOOLS], check=True)
    version = subprocess.run([wasmtime, "--version"], capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="fleetcast-bench-"))
    subprocess.run([BIN / "fleetcast", "keygen", "--out", tmp / "ops.key"], check=True,
                   capture_output=True)
    agent_http = free_port()
    (tmp / "agent.toml").write_text(
        f'fleet = "bench"\nlisten = "127.0.0.1:0"\nhttp = "127.0.0.1:{agent_http}"\n'
        f'data_dir = "data"\ntrusted_keys = ["ops.pub"]\n'
        f'[admin]\nlisten = "127.0.0.1:0"\n[trial]\nrequests = 0\nsecs = 0\n')

    def start_agent():
        p = subprocess.Popen([BIN / "fleetcast-agent", "run", "--config", tmp / "agent.toml"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = p.stdout.readline()
        assert line.startswith("fleetcast-agent ready"), line
        quic = [f for f in line.split() if f.startswith("quic=")][0][5:]
        return p, quic

    def stop(p):
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)

    agent, quic = start_agent()
    subprocess.run([BIN / "fleetcast", "release", HELLO, "--app", "hello", "--version", "1.0.0",
                    "--key", tmp / "ops.key", "--peer", quic], check=True, capture_output=True)
    wait_ok(agent_http)
    time.sleep(2)
    agent_rss = rss_kib(agent.pid)
    stop(agent)

    ws_port = free_port()
    results = {"fleetcast-agent": [], "wasmtime serve": []}
    ws_rss = 0
    for _ in range(ROUNDS):
        agent, _ = start_agent()
        wait_ok(agent_http)
        results["fleetcast-agent"].append(loadgen(agent_http))
        stop(agent)
        ws = subprocess.Popen([wasmtime, "serve", "--addr", f"127.0.0.1:{ws_port}", HELLO],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ok(ws_port)
        time.sleep(1)
        ws_rss = rss_kib(ws.pid)
        results["wasmtime serve"].append(loadgen(ws_port))
        stop(ws)

    cold = []
    for _ in range(COLD):
        t0 = time.monotonic()
        p = subprocess.Popen([BIN / "fleetcast-agent", "run", "--config", tmp / "agent.toml"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ok(agent_http)
        cold.append((time.monotonic() - t0) * 1000)
        stop(p)

    print(f"machine: {os.cpu_count()} cores; {version}; {CONNS} connections, {SECS} s per run "
          f"(+2 s warmup), {ROUNDS} runs each, alternating; component {HELLO.name}")
    rps = {}
    for name, runs in results.items():
        r = [x["rps"] for x in runs]
        rps[name] = statistics.median(r)
        p50 = statistics.median(x["p50_us"] for x in runs)
        p99 = statistics.median(x["p99_us"] for x in runs)
        failed = sum(x["failed"] for x in runs)
        print(f"{name:<16} median {rps[name]:>8.0f} req/s (runs {', '.join(f'{v:.0f}' for v in r)})"
              f"  p50 {p50:.0f} us  p99 {p99:.0f} us  failed {failed}")
    print(f"throughput ratio fleetcast-agent / wasmtime serve: "
          f"{rps['fleetcast-agent'] / rps['wasmtime serve']:.2f}")
    print(f"idle RSS: fleetcast-agent {agent_rss / 1024:.1f} MiB (one app deployed, mesh and admin "
          f"up); wasmtime serve {ws_rss / 1024:.1f} MiB")
    print(f"cold start to first 200 from cache (n={COLD}): min {min(cold):.1f} ms  "
          f"median {statistics.median(cold):.1f} ms  max {max(cold):.1f} ms")


if __name__ == "__main__":
    main()
