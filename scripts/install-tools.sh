#!/usr/bin/env bash
# Installs the pinned external tools the test suite compares against, into a cache
# outside the clone (~/.cache/proctor/<tool>-<version>), and skips any already there at
# that version. Safe to run repeatedly; only a fresh machine pays for the builds.
#
#   b3sum     reference implementation that `proctor hash` must agree with (tests/cli.rs)
#   chromium  and chromium-driver, from Debian: the review app's browser tests
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

# Debian's Chromium and its WebDriver, for the review app's browser tests
# (tests/review_browser.rs). Debian replaces old Chromium builds with each security
# update, so the packages are not pinned to a version: whatever Debian ships now, and
# nothing is done when both are installed.
install_debian() { # package...
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "$*: already installed"
    return
  fi
  echo "installing ${missing[*]} from Debian"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_debian chromium chromium-driver
