# Sourced by the scripts that put a Python tool into a virtualenv of its own under the target
# directory (scripts/install-instaloader.sh, scripts/install-s3-server.sh).

# install_into_venv VENV REQUIREMENT CHECK
# Unless CHECK (a shell function) already succeeds, creates VENV (installing Debian's
# python3-venv first when the interpreter lacks it; CI runs as root) and pip-installs
# REQUIREMENT into it, under a lock, because two test binaries may run the same script at once
# on one target dir. Fails, naming REQUIREMENT, if CHECK does not succeed afterwards.
install_into_venv() {
  local venv=$1 requirement=$2 check=$3
  "$check" && return 0
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  flock 9
  "$check" && return 0
  if ! python3 -m venv "$venv" >&2 2>&1; then
    rm -rf "$venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; }
    python3 -m venv "$venv" >&2
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$requirement" >&2
  "$check" || { echo "$requirement did not install into $venv" >&2; return 1; }
}
