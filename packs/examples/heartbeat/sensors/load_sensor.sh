#!/bin/sh
# A JSON-lines sensor: one {"trigger", "payload"} object per line on stdout.
max="${MAX_LOAD:-4.0}"
while true; do
  load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
  if awk -v l="$load" -v m="$max" 'BEGIN { exit !(l > m) }'; then
    printf '{"trigger": "heartbeat.high_load", "payload": {"load1": %s, "max_load": %s}}\n' "$load" "$max"
  fi
  sleep 30
done
