# Sourced by the scripts/install-*.sh scripts: what every "install it when it is missing" step
# needs before apt-get runs.

# ensure_root_and_apt PACKAGE WHAT ELSEWHERE [SCRIPT_ARGS...]
# Re-runs the calling script under sudo when not root (or says what to run as root), refuses
# non-Debian systems with ELSEWHERE (how to install WHAT there), and makes apt non-interactive.
ensure_root_and_apt() {
  local package=$1 what=$2 elsewhere=$3
  shift 3
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      exec sudo "$0" "$@"
    fi
    echo "$what missing. As root, run: apt-get install -y $package" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$what missing and this is not a Debian-like system: $elsewhere" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
}
