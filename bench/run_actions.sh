#!/usr/bin/env bash
# Executions per second of `core.local cmd=true` through a running agent (each request waits
# for its result), sequential and with 2 clients in parallel, next to a raw posix_spawn loop of
# `/bin/sh -c true` measured in the same run. Prints the ratios (target >= 0.9).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-400}"
cargo build --release --locked -q
bin="$PWD/target/release/packd"
tmp=$(mktemp -d)
trap 'kill "$agent" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --data "$tmp/var" serve --packs "$PWD/packs" --listen "127.0.0.1:$port" 2>"$tmp/agent.log" &
agent=$!
for _ in $(seq 100); do [ -S "$tmp/var/packd.sock" ] && break; sleep 0.05; done
python3 - "$tmp/var/packd.sock" "$N" <<'PY'
import json, os, socket, sys, threading, time
sock, n = sys.argv[1], int(sys.argv[2])

def client(count, out):
    s = socket.socket(socket.AF_UNIX); s.connect(sock); f = s.makefile("rwb")
    ok = 0
    for _ in range(count):
        f.write(b'{"op":"run","action":"core.local","parameters":{"cmd":"true"},"wait":true}\n'); f.flush()
        r = json.loads(f.readline())
        ok += r.get("ok") and r["result"]["status"] == "succeeded"
    out.append(ok)

def agent_rate(clients):
    out = []; per = n // clients
    ts = [threading.Thread(target=client, args=(per, out)) for _ in range(clients)]
    t = time.perf_counter(); [x.start() for x in ts]; [x.join() for x in ts]
    dt = time.perf_counter() - t
    assert sum(out) == per * clients, out
    return per * clients / dt

def raw_rate(workers):
    per = n // workers
    def loop():
        for _ in range(per):
            pid = os.posix_spawn("/bin/sh", ["sh", "-c", "true"], os.environ)
            os.waitpid(pid, 0)
    ts = [threading.Thread(target=loop) for _ in range(workers)]
    t = time.perf_counter(); [x.start() for x in ts]; [x.join() for x in ts]
    return per * workers / (time.perf_counter() - t)

client(20, [])  # warm up
for c in (1, 2):
    raw = raw_rate(c); agent = agent_rate(c)
    print(f"{c} client(s): agent {agent:7.1f} exec/s   raw posix_spawn {raw:7.1f} /s   ratio {agent/raw:.2f}")
PY
