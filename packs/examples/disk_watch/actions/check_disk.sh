#!/bin/sh
# check_disk.sh [--threshold=N] PATH — prints {"path", "used_percent", "over"} as JSON.
threshold=90
for arg in "$@"; do
  case "$arg" in
    --threshold=*) threshold="${arg#--threshold=}" ;;
    *) path="$arg" ;;
  esac
done
path="${path:-/}"
used=$(df -P "$path" | awk 'NR==2 { sub("%", "", $5); print $5 }')
if [ -z "$used" ]; then
  echo "cannot read usage of $path" >&2
  exit 1
fi
over=false
[ "$used" -ge "$threshold" ] && over=true
printf '{"path": "%s", "used_percent": %s, "threshold": %s, "over": %s}\n' "$path" "$used" "$threshold" "$over"
