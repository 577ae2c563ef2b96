#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, pg_ctl, postgres) are installed, which is all
# `trawl demo` and the test suite need: they start a private throwaway cluster of their own.
# Installs Debian's `postgresql` package when they are missing. No system cluster is created.
set -euo pipefail

have_binaries() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      echo "PostgreSQL server binaries: $dir"
      return 0
    fi
  done
  return 1
}

have_binaries && exit 0

# shellcheck source=scripts/lib/debian.sh
. "$(dirname "$0")/lib/debian.sh"
ensure_root_and_apt postgresql "PostgreSQL server binaries are" \
  "install PostgreSQL 13 or newer so that initdb and pg_ctl are on PATH." "$@"


# Trawl runs its own clusters; do not create or start Debian's default one.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
fi
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
have_binaries
