#!/usr/bin/env bash
# Webhook figures against one running agent, with adnanh/webhook (Debian package `webhook`) as
# the same-run baseline where it installs:
#   1. durable ingest: POSTs to a hook whose rule never matches (202 only after COMMIT), wrk with
#      8 connections: requests/s and p50/p99 latency; the same load on `webhook` with no command.
#   2. webhook -> command: every accepted event runs `core.local cmd=true`; executions are
#      counted after the queue drains (each must have run exactly once), next to a raw
#      posix_spawn loop of `/bin/sh -c true` measured in the same run.
#   3. idle RSS of the agent, next to `webhook`'s.
# Installs wrk (and webhook) from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
need() { command -v "$1" >/dev/null 2>&1 || { (apt-get update -qq || true) >/dev/null 2>&1; apt-get install -y -qq "$2" >/dev/null 2>&1 || true; }; }
need wrk wrk
need webhook webhook
command -v wrk >/dev/null || { echo "wrk is not available" >&2; exit 1; }
cargo build --release --locked -q
bin="$PWD/target/release/packd"
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

mkdir -p "$tmp/packs/bench/rules"
cat > "$tmp/packs/bench/pack.yaml" <<'Y'
name: bench
description: benchmark rules
version: 1.0.0
author: bench
Y
cat > "$tmp/packs/bench/rules/ingest.yaml" <<'Y'
name: ingest
enabled: true
trigger: {type: core.st2.webhook, parameters: {url: ingest}}
criteria: {trigger.body.never: {type: equals, pattern: "never"}}
action: {ref: core.noop}
Y
cat > "$tmp/packs/bench/rules/run.yaml" <<'Y'
name: run
enabled: true
trigger: {type: core.st2.webhook, parameters: {url: run}}
action: {ref: core.local, parameters: {cmd: "true"}}
Y
cat > "$tmp/post.lua" <<'L'
wrk.method = "POST"
wrk.body = '{"n": 1}'
wrk.headers["Content-Type"] = "application/json"
L
port=$(freeport)
"$bin" --data "$tmp/var" serve --packs "$PWD/packs" --packs "$tmp/packs" --listen "127.0.0.1:$port" 2>"$tmp/agent.log" &
agent=$!; pids+=("$agent")
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.05; done
sleep 1
echo "idle RSS: packd $(( $(rss "$agent") / 1024 )) MiB"

if command -v webhook >/dev/null; then
  wport=$(freeport)
  echo '[{"id": "ingest", "execute-command": "/bin/true", "response-message": "ok", "include-command-output-in-response": false}]' > "$tmp/hooks.json"
  webhook -hooks "$tmp/hooks.json" -ip 127.0.0.1 -port "$wport" >/dev/null 2>&1 &
  wh=$!; pids+=("$wh")
  sleep 1
  echo "idle RSS: webhook $(( $(rss "$wh") / 1024 )) MiB"
fi

parse() { awk '/Requests\/sec/ {r=$2} / 50%/ {p50=$2} / 99%/ {p99=$2} END {printf "%s req/s  p50 %s  p99 %s", r, p50, p99}'; }
echo "== durable ingest, 8 connections, $DURATION"
a=$(wrk -t2 -c8 -d"$DURATION" --latency -s "$tmp/post.lua" "http://127.0.0.1:$port/api/v1/webhooks/ingest" | parse)
echo "packd   (202 after commit):       $a"
if command -v webhook >/dev/null; then
  b=$(wrk -t2 -c8 -d"$DURATION" --latency -s "$tmp/post.lua" "http://127.0.0.1:$wport/hooks/ingest" | parse)
  echo "webhook (answers before running): $b"
  awk -v a="${a%% *}" -v b="${b%% *}" 'BEGIN { printf "ratio packd/webhook ingest: %.2f\n", a / b }'
fi

echo "== webhook -> command, 8 connections, $DURATION"
before=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^packd_events_accepted_total/ {print $2}')
w=$(wrk -t2 -c8 -d"$DURATION" -s "$tmp/post.lua" "http://127.0.0.1:$port/api/v1/webhooks/run")
start=$(date +%s.%N)
accepted=$(( $(curl -s "http://127.0.0.1:$port/metrics" | awk '/^packd_events_accepted_total/ {print $2}') - before ))
# Drain: wait until every accepted event has a finished execution (counts from /metrics,
# refreshed every 2 s by the agent).
finished() { curl -s "http://127.0.0.1:$port/metrics" | awk -F'[ ]' '/^packd_executions\{status="(succeeded|failed|timeout)"\}/ {n += $2} END {print n + 0}'; }
for _ in $(seq 600); do
  done_n=$(finished)
  [ "$done_n" -ge "$accepted" ] && break
  sleep 0.5
done
sleep 2.5; done_n=$(finished)
secs=$(echo "$w" | awk '/requests in/ {gsub("s,","",$4); print $4}')
drain=$(echo "$(date +%s.%N) - $start" | bc)
echo "accepted $accepted events, $done_n executions finished"
rate=$(echo "$done_n / ($secs + $drain)" | bc -l)
raw=$(python3 - <<'PY'
import os, threading, time
n = 1000
def loop():
    for _ in range(n // 2):
        os.waitpid(os.posix_spawn("/bin/sh", ["sh", "-c", "true"], os.environ), 0)
ts = [threading.Thread(target=loop) for _ in range(2)]
t = time.perf_counter(); [x.start() for x in ts]; [x.join() for x in ts]
print(f"{n / (time.perf_counter() - t):.1f}")
PY
)
printf "webhook->command: %.1f exec/s (including drain)   raw posix_spawn (2 workers): %s /s   ratio %.2f\n" "$rate" "$raw" "$(echo "$rate / $raw" | bc -l)"
[ "$done_n" -eq "$accepted" ] && echo "every accepted event ran exactly once" || echo "MISMATCH: accepted $accepted, executed $done_n"
