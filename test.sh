#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests that start the real binary.
# Needs only cargo and python3 (for the StackStorm Python shim tests). Prints a closing
# "N passed, N failed" line summed over every test binary.
set -euo pipefail
cd "$(dirname "$0")"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# --lib --bins --tests: every test there is (the crate has no doc tests).
cargo test --locked --lib --bins --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
