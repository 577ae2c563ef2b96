#!/usr/bin/env bash
# Makes sure Debian's `faketime` (libfaketime) is installed: the clock-skew chaos scenario (R5)
# runs workers with their wall clock ten minutes ahead and behind. Installs the package when it
# is missing.
set -euo pipefail

if command -v faketime >/dev/null 2>&1; then
  echo "faketime: $(command -v faketime)"
  exit 0
fi

# shellcheck source=scripts/lib/debian.sh
. "$(dirname "$0")/lib/debian.sh"
ensure_root_and_apt faketime "faketime is" \
  "install libfaketime so that the faketime command is on PATH." "$@"

apt-get update -qq
apt-get install -y -qq --no-install-recommends faketime >/dev/null
echo "faketime: $(command -v faketime)"
