#!/usr/bin/env bash
# Installs an S3-compatible server for the blob store's tests: moto 5.x's `moto_server` (PyPI
# `moto[server]`) in a virtualenv. The tests run this themselves, so a fresh CI machine needs
# nothing installed by hand; they start the server on a free port and stop it at the end.
#
#   S3_SERVER_VENV   where the venv goes (default: <repo>/target/s3-server-venv, or
#                    $CARGO_TARGET_DIR/s3-server-venv when that is set)
#
# Idempotent: when the venv already has this moto it returns at once.
# Prints the path of the `moto_server` executable on its last line.
set -euo pipefail

VERSION=5.2.5
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${S3_SERVER_VENV:-${CARGO_TARGET_DIR:-$root/target}/s3-server-venv}"
py="$venv/bin/python"
server="$venv/bin/moto_server"

installed() {
    [ -x "$server" ] && "$py" -c "
import sys
from importlib.metadata import version
import moto.server  # the [server] extra (flask) is importable
sys.exit(version('moto') != '$VERSION')" 2>/dev/null
}

if installed; then
    echo "$server"
    exit 0
fi

mkdir -p "$(dirname "$venv")"
# A lock, because two test binaries may run this at once on one target dir.
exec 9>"$venv.lock"
flock 9
if installed; then
    echo "$server"
    exit 0
fi

if ! python3 -m venv "$venv" >&2 2>&1; then
    # Debian ships venv separately; we run as root on CI.
    rm -rf "$venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; }
    python3 -m venv "$venv" >&2
fi
"$py" -m pip install --quiet --disable-pip-version-check "moto[server]==$VERSION" >&2
installed || { echo "moto[server] $VERSION did not install into $venv" >&2; exit 1; }
echo "$server"
