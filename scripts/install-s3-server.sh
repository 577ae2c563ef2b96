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

# shellcheck source=lib/venv.sh
. "$root/scripts/lib/venv.sh"
install_into_venv "$venv" "moto[server]==$VERSION" installed
echo "$server"
