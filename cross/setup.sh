#!/usr/bin/env bash
# Installs what cross/build.sh needs for static builds, from Debian's registry only:
#   - rustc-web/cargo-web (1.96) and the prebuilt arm64 std of exactly the same version,
#   - rust-web-src (the std source, for armv7 via -Zbuild-std: there is no prebuilt armhf std,
#     and adding the armhf architecture breaks apt on this mirror, see below),
#   - the aarch64 and armhf cross gccs with their libc (the linker, and the C compiler for
#     bundled SQLite and ring),
#   - qemu-user-static (the test runner: this machine has no binfmt_misc),
#   - file (build.sh checks "statically linked" with it).
# Idempotent: when everything is installed it does nothing (no apt-get update), so re-running
# costs about a second. It adds only the arm64 architecture: the mirror's bookworm-security
# armhf index has the wrong size, and a failed index makes apt drop arm64's security index too.
# Usage: cross/setup.sh            (as root)
set -euo pipefail

pkgs=(rustc-web cargo-web rust-web-src
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross
      gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
      qemu-user-static file)

installed() { # true when every package named is installed
  local p
  for p in "$@"; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || return 1
  done
}

arm64_std_ok() { # the arm64 std must be exactly rustc-web's version, or rustc refuses it
  local want have
  want=$(dpkg-query -W -f='${Version}' rustc-web 2>/dev/null) || return 1
  have=$(dpkg-query -W -f='${Version}' libstd-rust-web-dev:arm64 2>/dev/null) || return 1
  [ -n "$want" ] && [ "$want" = "$have" ]
}

if installed "${pkgs[@]}" && arm64_std_ok; then
  echo "cross/setup.sh: everything is installed already"
  exit 0
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
export DEBIAN_FRONTEND=noninteractive
# One update. A partial failure (one broken index on the mirror) must not stop us: the
# packages we need are in the indexes that did load, and the install below fails loudly if not.
apt-get update -q || echo "cross/setup.sh: apt-get update reported errors; continuing" >&2
apt-get install -y -q --no-install-recommends "${pkgs[@]}"

# The prebuilt arm64 std, pinned to rustc-web's exact version. If the mirror does not have that
# version (a security update to rustc-web not yet mirrored for arm64), build.sh falls back to
# -Zbuild-std for aarch64 as well, so this is not fatal.
ver=$(dpkg-query -W -f='${Version}' rustc-web)
if ! arm64_std_ok; then
  if ! apt-get install -y -q --no-install-recommends "libstd-rust-web-dev:arm64=$ver"; then
    echo "cross/setup.sh: no libstd-rust-web-dev:arm64=$ver; aarch64 will use -Zbuild-std" >&2
  fi
fi
echo "cross/setup.sh: done (rustc-web $ver)"
