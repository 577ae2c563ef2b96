#!/usr/bin/env bash
# Installs the real Instaloader 4.16 into a virtualenv, for the simulator's protocol test.
# The test runs this itself, so a fresh CI machine needs nothing installed by hand.
#
#   INSTALOADER_VENV   where the venv goes (default: <repo>/target/instaloader-venv, or
#                      $CARGO_TARGET_DIR/instaloader-venv when that is set)
#
# Idempotent: when the venv already has instaloader 4.16 it returns at once.
# Prints the venv's python on its last line.
set -euo pipefail

VERSION=4.16
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${INSTALOADER_VENV:-${CARGO_TARGET_DIR:-$root/target}/instaloader-venv}"
py="$venv/bin/python"

installed() {
    [ -x "$py" ] && "$py" -c "import instaloader, sys; sys.exit(instaloader.__version__ != '$VERSION')" 2>/dev/null
}

# shellcheck source=lib/venv.sh
. "$root/scripts/lib/venv.sh"
install_into_venv "$venv" "instaloader==$VERSION" installed
echo "$py"
