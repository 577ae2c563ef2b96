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

if installed; then
    echo "$py"
    exit 0
fi

mkdir -p "$(dirname "$venv")"
# A lock, because two test binaries may run this at once on one target dir.
exec 9>"$venv.lock"
flock 9
if installed; then
    echo "$py"
    exit 0
fi

if ! python3 -m venv "$venv" >&2 2>&1; then
    # Debian ships venv separately; we run as root on CI.
    rm -rf "$venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; }
    python3 -m venv "$venv" >&2
fi
"$py" -m pip install --quiet --disable-pip-version-check "instaloader==$VERSION" >&2
installed || { echo "instaloader $VERSION did not install into $venv" >&2; exit 1; }
echo "$py"
