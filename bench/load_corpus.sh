#!/usr/bin/env bash
# Wall time and peak RSS of `packd pack validate` over the whole StackStorm corpus (18 packs,
# 4,400 files), next to `cat` of the same files as a baseline measured in the same run.
# Target: under 1 s and under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="${PACKD_CORPUS:-../shared/corpus}/st2"
[ -d "$corpus" ] || { echo "no corpus at $corpus" >&2; exit 1; }
cargo build --release --locked -q
bin=target/release/packd
runs=5
measure() { # prints "seconds maxrss_kib" of one run of "$@"
  /usr/bin/env python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
dt = time.perf_counter() - t
print(f"{dt:.4f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base_t=$(for i in $(seq $runs); do measure sh -c "find '$corpus' -name '*.y*ml' -exec cat {} + > /dev/null"; done | awk '{print $1}' | median)
out=$(for i in $(seq $runs); do measure "$bin" pack validate "$corpus"; done)
t=$(echo "$out" | awk '{print $1}' | median)
rss=$(echo "$out" | awk '{print $2}' | median)
files=$(find "$corpus" -type f -name '*.y*ml' | wc -l)
echo "corpus: $files YAML files"
echo "packd pack validate: median ${t}s over $runs runs, peak RSS $((rss / 1024)) MiB"
echo "baseline (find + cat of the same files): median ${base_t}s"
awk -v a="$t" -v b="$base_t" 'BEGIN { printf "ratio validate/cat: %.1fx\n", a / b }'
