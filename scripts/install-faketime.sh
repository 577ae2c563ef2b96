#!/usr/bin/env bash
# Makes sure Debian's `faketime` (libfaketime) is installed: the clock-skew chaos scenario (R5)
# runs workers with their wall clock ten minutes ahead and behind. Installs the package when it
# is missing.
set -euo pipefail

if command -v faketime >/dev/null 2>&1; then
  echo "faketime: $(command -v faketime)"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo "$0" "$@"
  fi
  echo "faketime is missing. As root, run: apt-get install -y faketime" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "faketime is missing and this is not a Debian-like system: install libfaketime so that" >&2
  echo "the faketime command is on PATH." >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends faketime >/dev/null
echo "faketime: $(command -v faketime)"
