#!/usr/bin/env bash
# Hot reload figures: p50/p99 of "rule file written -> the new rule matches a webhook" over 20
# edits (target p99 <= 500 ms), with the time of one `packd pack reload` round trip measured in
# the same run as the baseline; and the agent's RSS before and after 1,000 reloads.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin="$PWD/target/release/packd"
tmp=$(mktemp -d)
trap 'kill "$agent" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/packs/live/rules"
printf 'name: live\ndescription: d\nversion: 1.0.0\nauthor: b\n' > "$tmp/packs/live/pack.yaml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rule() { printf 'name: hook\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: live}}\ncriteria: {trigger.body.v: {type: equals, pattern: "%s"}}\naction: {ref: core.local, parameters: {cmd: "echo %s >> %s/out"}}\n' "$1" "$1" "$tmp"; }
rule v0 > "$tmp/packs/live/rules/hook.yaml"
"$bin" --data "$tmp/var" serve --packs "$PWD/packs" --packs "$tmp/packs" --listen "127.0.0.1:$port" 2>"$tmp/agent.log" &
agent=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.05; done
export TMPD="$tmp" PORT="$port" BIN="$bin" AGENT="$agent"
python3 - <<'PY'
import os, subprocess, time, urllib.request
tmp, port, bin_, pid = os.environ["TMPD"], int(os.environ["PORT"]), os.environ["BIN"], os.environ["AGENT"]
rule_file = f"{tmp}/packs/live/rules/hook.yaml"
def rule(v):
    return (f'name: hook\nenabled: true\ntrigger: {{type: core.st2.webhook, parameters: {{url: live}}}}\n'
            f'criteria: {{trigger.body.v: {{type: equals, pattern: "{v}"}}}}\n'
            f'action: {{ref: core.local, parameters: {{cmd: "echo {v} >> {tmp}/out"}}}}\n')
def post(v):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/webhooks/live", data=f'{{"v": "{v}"}}'.encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
def seen(v):
    try:
        return v in open(f"{tmp}/out").read().split()
    except FileNotFoundError:
        return False
def rss():
    return int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1])
lat = []
for i in range(1, 21):
    v = f"v{i}"
    t = time.perf_counter()
    open(rule_file, "w").write(rule(v))
    # Probe until the new rule has matched a webhook (each probe is a real event).
    while True:
        post(v)
        deadline = time.perf_counter() + 0.02
        while time.perf_counter() < deadline and not seen(v):
            time.sleep(0.002)
        if seen(v):
            break
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
base = []
for _ in range(10):
    t = time.perf_counter()
    subprocess.run([bin_, "--data", f"{tmp}/var", "pack", "reload", "live"], stdout=subprocess.DEVNULL, check=True)
    base.append((time.perf_counter() - t) * 1000)
base.sort()
print(f"file written -> new rule matching a webhook, 20 edits: p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms (target p99 <= 500 ms)")
print(f"baseline: one `packd pack reload` round trip: median {base[5]:.0f} ms; ratio p50/baseline {p(0.5)/base[5]:.1f}")
before = rss()
for i in range(1000):
    open(rule_file, "w").write(rule(f"r{i}"))
    subprocess.run([bin_, "--data", f"{tmp}/var", "pack", "reload", "live"], stdout=subprocess.DEVNULL, check=True)
after = rss()
print(f"RSS before 1000 reloads: {before/1024:.1f} MiB, after: {after/1024:.1f} MiB (ratio {after/before:.2f})")
PY
