#!/usr/bin/env bash
# Builds a static release binary of packd for one target, checks that every executable it built
# is statically linked, and (with --test) runs the test suite for that target, under qemu for
# the ARM targets. Run cross/setup.sh once first (as root) for the ARM targets.
#
# Usage: cross/build.sh TARGET [--test] [-- ARGS for cargo test]
#   TARGET: x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf
#           (or the short names x86_64, aarch64, armv7)
#   --test  also run `cargo test --release` for TARGET (same as TEST=1); ARGS after `--` go to
#           cargo test, e.g. `-- --lib` or `-- --test bad_input`.
# Env: CARGO_TARGET_DIR as usual; JOBS=N for -jN (default: cargo's).
#
# Why it is built this way (measured in shared/reference/cross.md):
# - x86_64 uses the default (rustup) cargo. ARM uses Debian's rustc-web (/usr/bin/cargo, RUSTC
#   set explicitly: rustup's ~/.cargo/bin comes first in PATH) with the prebuilt arm64 std, or
#   -Zbuild-std from rust-web-src where no prebuilt std exists (armv7 always).
# - `+crt-static` goes into RUSTFLAGS together with an explicit --target, so it applies to the
#   target only and never to build scripts or proc-macros.
# - Bundled SQLite and ring compile C, so CC_/AR_<target> name the cross gcc.
# - There is no binfmt_misc: ARM executables only start through qemu-<arch>-static, which cargo
#   uses as the test runner. Integration tests that spawn packd read the same
#   CARGO_TARGET_<T>_RUNNER variable and prefix it (tests/common/mod.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '6,13p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
target=$1; shift
run_tests=${TEST:-0}
test_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --test) run_tests=1; shift ;;
    --) shift; test_args=("$@"); break ;;
    *) usage ;;
  esac
done

case $target in
  x86_64|x86_64-unknown-linux-gnu) target=x86_64-unknown-linux-gnu ;;
  aarch64|arm64|aarch64-unknown-linux-gnu) target=aarch64-unknown-linux-gnu
    gcc=aarch64-linux-gnu; qemu=qemu-aarch64-static ;;
  armv7|armhf|armv7-unknown-linux-gnueabihf) target=armv7-unknown-linux-gnueabihf
    gcc=arm-linux-gnueabihf; qemu=qemu-arm-static ;;
  *) echo "cross/build.sh: unknown target '$target'" >&2; usage ;;
esac
T=$(echo "$target" | tr 'a-z-' 'A-Z_')   # CARGO_TARGET_<T>_* spelling
t=$(echo "$target" | tr '-' '_')         # CC_<t> spelling

export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"
cargo_cmd=(cargo)
zflags=()
if [ "$target" != x86_64-unknown-linux-gnu ]; then
  for tool in /usr/bin/cargo /usr/bin/rustc "$gcc-gcc" "$qemu" file; do
    command -v "$tool" >/dev/null || { echo "cross/build.sh: $tool missing; run cross/setup.sh" >&2; exit 1; }
  done
  cargo_cmd=(/usr/bin/cargo)
  export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
  export "CARGO_TARGET_${T}_LINKER=$gcc-gcc" "CC_$t=$gcc-gcc" "AR_$t=$gcc-ar"
  # -L: where a dynamically linked helper would find its loader; harmless for static binaries.
  runner="$qemu -L /usr/$gcc"
  if [ ! -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/$target/lib" ]; then
    # No prebuilt std for this target: build it from rust-web-src. Debian's rustc is a stable
    # compiler, so -Z needs RUSTC_BOOTSTRAP. panic_abort is listed because the release profile
    # has panic = "abort" (cargo test adds the `test` crate by itself).
    export RUSTC_BOOTSTRAP=1
    zflags=(-Zbuild-std=std,panic_abort)
  fi
fi
jobs=()
[ -n "${JOBS:-}" ] && jobs=("-j$JOBS")
target_dir=${CARGO_TARGET_DIR:-target}

echo "== build $target (static, release)"
"${cargo_cmd[@]}" build "${zflags[@]}" "${jobs[@]}" --locked --release --target "$target" --bins

check_static() { # every executable in target/<T>/release must be static
  echo "== check: every executable is statically linked"
  bad=0; n=0
  while IFS= read -r -d '' exe; do
    n=$((n + 1))
    desc=$(file -b "$exe")
    case $desc in
      *"statically linked"*|*"static-pie linked"*) echo "ok: $exe: ${desc%%,*}, $(stat -c %s "$exe") bytes" ;;
      *) echo "NOT STATIC: $exe: $desc" >&2; bad=1 ;;
    esac
  done < <(find "$target_dir/$target/release" -maxdepth 1 -type f -perm -u+x -print0)
  [ "$n" -gt 0 ] || { echo "cross/build.sh: no executable in $target_dir/$target/release" >&2; exit 1; }
  [ "$bad" = 0 ] || exit 1
}
check_static

if [ "$run_tests" = 1 ]; then
  if [ -n "${runner:-}" ]; then export "CARGO_TARGET_${T}_RUNNER=$runner"; fi
  echo "== test $target${runner:+ (runner: $runner)}"
  if [ ${#zflags[@]} -gt 0 ]; then
    # With -Zbuild-std, cargo builds std once per panic strategy into one deps directory, and
    # rustc then finds two `core`s ("duplicate lang item"): the test harness needs unwinding,
    # the packd binary the integration tests run has panic=abort. So the test build uses
    # panic=unwind throughout, in its own target directory (the shipped binary above stays
    # the panic=abort one).
    CARGO_TARGET_DIR="$target_dir/build-std-test" CARGO_PROFILE_RELEASE_PANIC=unwind \
      "${cargo_cmd[@]}" test "${zflags[@]}" "${jobs[@]}" --locked --release --target "$target" --lib --bins --tests "${test_args[@]}"
  else
    # --lib --bins --tests: every test there is (the crate has no doc tests).
    "${cargo_cmd[@]}" test "${jobs[@]}" --locked --release --target "$target" --lib --bins --tests "${test_args[@]}"
    # The integration tests ran target/<T>/release/packd; check it is still the static one.
    check_static
  fi
fi
