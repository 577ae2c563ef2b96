#!/usr/bin/env bash
# Makes sure a Docker engine answers and a compose tool is on PATH: the container test
# (tests/containers.rs) runs deploy/compose.yaml for real. Installs Debian's docker.io and
# docker-compose packages when they are missing and starts the daemon when none runs.
set -euo pipefail

have_compose() {
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1
}
if docker info >/dev/null 2>&1 && have_compose; then
  echo "Docker: $(docker info -f '{{.ServerVersion}}')"
  exit 0
fi

# shellcheck source=scripts/lib/debian.sh
. "$(dirname "$0")/lib/debian.sh"
ensure_root_and_apt "docker.io docker-compose" "a Docker engine and its compose tool are" \
  "install Docker Engine with the compose plugin and start it." "$@"
if ! command -v dockerd >/dev/null 2>&1 || ! have_compose; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io docker-compose >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  # No init system runs the service here (a container or a bare CI machine): start it directly.
  nohup dockerd >/var/log/trawl-dockerd.log 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
docker info >/dev/null 2>&1 || {
  echo "install-docker: dockerd did not start; see /var/log/trawl-dockerd.log" >&2
  exit 1
}
echo "Docker: $(docker info -f '{{.ServerVersion}}')"
