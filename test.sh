#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests that start the real binary.
# Needs only cargo and python3 (for the StackStorm Python shim tests).
set -euo pipefail
cd "$(dirname "$0")"
cargo test --locked "$@"
