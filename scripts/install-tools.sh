#!/usr/bin/env bash
# Installs the pinned external tools the test suite compares against, into a cache
# outside the clone (~/.cache/proctor/<tool>-<version>), and skips any already there at
# that version. Safe to run repeatedly; only a fresh machine pays for the builds.
#
#   b3sum   reference implementation that `proctor hash` must agree with (tests/cli.rs)
set -euo pipefail

CACHE="${PROCTOR_CACHE:-$HOME/.cache/proctor}"
B3SUM_VERSION=1.8.7

install_crate() { # name version
  local name=$1 version=$2 root="$CACHE/$1-$2"
  if [ -x "$root/bin/$name" ] && "$root/bin/$name" --version 2>/dev/null | grep -q "$version"; then
    echo "$name $version: already installed in $root"
    return
  fi
  echo "$name $version: installing into $root"
  cargo install "$name" --version "$version" --locked --root "$root" --quiet
}

install_crate b3sum "$B3SUM_VERSION"
