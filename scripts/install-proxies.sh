#!/usr/bin/env bash
# Makes sure `tinyproxy` (an HTTP forward proxy) and `microsocks` (a SOCKS5 proxy) are installed:
# the proxy tests run several of each on loopback, each sending its traffic from a loopback
# address of its own, so that a server on 127.0.0.1 sees one peer address per proxy. Installs
# Debian's packages when either is missing: `tinyproxy-bin`, the executable alone, rather than
# `tinyproxy`, whose service would start a system proxy on port 8888 that the tests never use.
set -euo pipefail

# Both are in /usr/bin on Debian 12; the sbin directories are looked in too, as a non-root user's
# PATH may lack them.
find_binary() {
  local dir
  for dir in /usr/bin /usr/sbin /usr/local/bin /usr/local/sbin; do
    if [ -x "$dir/$1" ]; then
      echo "$dir/$1"
      return 0
    fi
  done
  command -v "$1" 2>/dev/null
}

have_binaries() {
  local tinyproxy microsocks
  tinyproxy=$(find_binary tinyproxy) && microsocks=$(find_binary microsocks) || return 1
  echo "tinyproxy: $tinyproxy"
  echo "microsocks: $microsocks"
}

have_binaries && exit 0

# shellcheck source=scripts/lib/debian.sh
. "$(dirname "$0")/lib/debian.sh"
ensure_root_and_apt "tinyproxy-bin microsocks" "tinyproxy or microsocks is" \
  "install tinyproxy 1.11 and microsocks so that both are on PATH." "$@"

apt-get update -qq
apt-get install -y -qq --no-install-recommends tinyproxy-bin microsocks >/dev/null
have_binaries
