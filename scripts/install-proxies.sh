#!/usr/bin/env bash
# Makes sure `squid` (an HTTP forward proxy), `microsocks` (a SOCKS5 proxy) and `openssl` (to
# write squid's password file) are installed: the proxy tests run several proxies on loopback, each
# sending its traffic from a loopback address of its own, so that a server on 127.0.0.1 sees one
# peer address per proxy. Installs Debian's packages when one is missing. (Not tinyproxy: 1.11
# keeps only the first of repeated answer headers, which breaks every login's Set-Cookie lines.)
# Debian's squid package may start a system squid on port 3128; the tests never use it.
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
  local squid microsocks openssl
  squid=$(find_binary squid) && microsocks=$(find_binary microsocks) &&
    openssl=$(find_binary openssl) && [ -x /usr/lib/squid/basic_ncsa_auth ] || return 1
  echo "squid: $squid"
  echo "microsocks: $microsocks"
  echo "openssl: $openssl"
}

have_binaries && exit 0

# shellcheck source=scripts/lib/debian.sh
. "$(dirname "$0")/lib/debian.sh"
ensure_root_and_apt "squid microsocks openssl" "squid, microsocks or openssl is" \
  "install squid (with its basic_ncsa_auth helper), microsocks and openssl." "$@"

apt-get update -qq
apt-get install -y -qq --no-install-recommends squid microsocks openssl >/dev/null
have_binaries
