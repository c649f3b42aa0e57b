#!/bin/sh
# Parameters arrive as ATTUNE_ACTION_* variables (and as JSON on stdin, unused here).
msg="${ATTUNE_ACTION_MESSAGE:-alive}"
file="${ATTUNE_ACTION_LOG_FILE:?log_file is required}"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "$now $msg" >> "$file"
printf '{"written_to": "%s", "at": "%s"}\n' "$file" "$now"
