#!/usr/bin/env bash
# Checks systemd/packd.service with `systemd-analyze verify`, the way systemd would load it.
# Installs systemd from Debian when systemd-analyze is missing (needs root and apt). The unit's
# ExecStart binary must exist for verify to pass, so a copy of the unit with ExecStart pointing
# at an existing executable (the built packd if there is one, else /bin/true) is verified.
# Usage: systemd/verify.sh [PACKD_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v systemd-analyze >/dev/null; then
  echo "systemd/verify.sh: installing systemd (for systemd-analyze)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || echo "systemd/verify.sh: apt-get update reported errors; continuing" >&2
  apt-get install -y -q --no-install-recommends systemd
fi

bin=${1:-}
if [ -z "$bin" ]; then
  for b in target/release/packd target/debug/packd /bin/true; do
    if [ -x "$b" ]; then bin=$b; break; fi
  done
fi
bin=$(realpath "$bin")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#^ExecStart=/usr/local/bin/packd #ExecStart=$bin #" systemd/packd.service > "$tmp/packd.service"
grep -q "^ExecStart=$bin serve --config /etc/packd/config.yaml$" "$tmp/packd.service" || {
  echo "systemd/verify.sh: ExecStart line not found in systemd/packd.service" >&2; exit 1; }

# verify prints problems on stderr and exits non-zero on errors; warnings about the host (no
# systemd running in a container) are not about the unit, so only lines naming it count.
out=$(systemd-analyze verify --man=no "$tmp/packd.service" 2>&1) && rc=0 || rc=$?
echo "$out" | grep -v '^$' || true
if [ "$rc" != 0 ] || echo "$out" | grep -q "packd.service"; then
  echo "systemd/verify.sh: FAILED (exit $rc)" >&2
  exit 1
fi
echo "systemd/verify.sh: packd.service OK ($(systemd-analyze --version | head -1))"
