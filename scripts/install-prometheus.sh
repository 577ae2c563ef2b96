#!/usr/bin/env bash
# Makes sure `prometheus` and `promtool` are installed: the observability tests run a real
# Prometheus against a real crawl and check the dashboards, alerts and /metrics bodies with
# promtool. Installs Debian's `prometheus` package when they are missing (it starts no daemon here;
# the tests run their own server on a free port).
set -euo pipefail

have_binaries() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "Prometheus: $(command -v prometheus), $(command -v promtool)"
    return 0
  fi
  return 1
}

have_binaries && exit 0

# shellcheck source=scripts/lib/debian.sh
. "$(dirname "$0")/lib/debian.sh"
ensure_root_and_apt prometheus "prometheus and promtool are" \
  "install Prometheus 2.x so that both are on PATH." "$@"

# The package's service must not start: tests run their own server.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
have_binaries
