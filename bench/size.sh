#!/usr/bin/env bash
# Prints the size of the static release binary of packd for each target, and whether it is
# under the 12 MB budget (DESIGN.md: "a static release binary under 12 MB"; MB = 10^6 bytes).
# Binaries come from cross/build.sh; with --build, a missing one is built first (ARM targets
# need cross/setup.sh once). Exit code 1 when a binary is over budget, or when none was found.
# Usage: bench/size.sh [--build] [TARGET...]   (default: all three targets)
set -euo pipefail
cd "$(dirname "$0")/.."
budget=12000000
build=0
if [ "${1:-}" = --build ]; then build=1; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
dir=${CARGO_TARGET_DIR:-target}
over=0; found=0
printf '%-32s %12s %9s  %s\n' target bytes MB "under 12 MB"
for t in "${targets[@]}"; do
  case $t in x86_64) t=x86_64-unknown-linux-gnu ;; aarch64) t=aarch64-unknown-linux-gnu ;;
    armv7) t=armv7-unknown-linux-gnueabihf ;; esac
  bin=$dir/$t/release/packd
  if [ ! -x "$bin" ] && [ "$build" = 1 ]; then
    cross/build.sh "$t" >&2
  fi
  if [ ! -x "$bin" ]; then
    printf '%-32s %12s %9s  %s\n' "$t" - - "not built (cross/build.sh $t)"
    continue
  fi
  found=1
  bytes=$(stat -c %s "$bin")
  kind=$(file -b "$bin" | grep -Eo 'statically linked|static-pie linked|dynamically linked' || echo "unknown linkage")
  if [ "$bytes" -lt "$budget" ]; then verdict=yes; else verdict=NO; over=1; fi
  printf '%-32s %12d %9s  %s (%s)\n' "$t" "$bytes" "$(awk -v b="$bytes" 'BEGIN{printf "%.2f", b/1e6}')" "$verdict" "$kind"
done
[ "$found" = 1 ] || { echo "bench/size.sh: no binary found; run cross/build.sh TARGET or pass --build" >&2; exit 1; }
exit "$over"
