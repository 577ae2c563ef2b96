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

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo "$0" "$@"
  fi
  echo "PostgreSQL server binaries are missing. As root, run: apt-get install -y postgresql" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries are missing and this is not a Debian-like system:" >&2
  echo "install PostgreSQL 13 or newer so that initdb and pg_ctl are on PATH." >&2
  exit 1
fi

# Trawl runs its own clusters; do not create or start Debian's default one.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
have_binaries
