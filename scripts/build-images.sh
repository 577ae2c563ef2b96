#!/usr/bin/env bash
# Builds every image deploy/compose.yaml runs, on a Docker engine that cannot pull from a registry:
# the base images are made here from Debian's packages, then Trawl's image is built from
# deploy/Dockerfile, unchanged, with its two base-image arguments pointing at them.
#
#   trawl-local/debian:12-slim              debootstrap (minbase) + ca-certificates: the runtime base
#   trawl-local/rust:VERSION-slim-bookworm  that + gcc + this machine's Rust toolchain: the builder
#   trawl-local/postgres:15                 PostgreSQL 15 from Debian (deploy/images/postgres)
#   trawl-local/prometheus:2                Prometheus from Debian (deploy/images/prometheus)
#   trawl:latest                            deploy/Dockerfile (set IMAGE_TRAWL to tag it otherwise)
#
# Base images already present are kept (REBUILD_BASE=1 makes them again); the rest is left to
# Docker's layer cache, so a second run rebuilds only what changed. Ends by printing the variables
# deploy/compose.yaml reads to run these images instead of the registry's.
# Needs root (debootstrap) and a Docker engine; installs debootstrap when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

work=target/images
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=trawl-local/debian:12-slim
rust_version=$(rustc --version | awk '{print $2}')
rust=trawl-local/rust:${rust_version}-slim-bookworm
postgres=trawl-local/postgres:15
prometheus=trawl-local/prometheus:2
trawl=${IMAGE_TRAWL:-trawl:latest}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
step() { echo "build-images: $*" >&2; }
seconds_since() { echo $(($(date +%s) - $1)); }

if ! docker info >/dev/null 2>&1; then
  echo "build-images: no Docker engine answers (docker info failed)" >&2
  exit 1
fi
mkdir -p "$work"

if [ "${REBUILD_BASE:-}" = 1 ] || ! have_image "$base"; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    # shellcheck source=scripts/lib/debian.sh
    . scripts/lib/debian.sh
    ensure_root_and_apt debootstrap "debootstrap is" \
      "make a Debian 12 root file system another way and import it as $base." "$@"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  step "$base: debootstrap bookworm from $mirror"
  rootfs=$work/rootfs
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >"$work/debootstrap.log"
  # Certificate authorities this machine trusts beyond Debian's (a company CA, a TLS-inspecting
  # egress proxy): what the host can reach, builds inside these images must reach too.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --numeric-owner -c . \
    | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
  rm -rf "$rootfs"
fi

if [ "${REBUILD_BASE:-}" = 1 ] || ! have_image "$rust"; then
  step "$rust: the host's toolchain $(rustc --print sysroot)"
  context=$work/rust
  sysroot=$(rustc --print sysroot)
  rm -rf "$context"
  mkdir -p "$context/toolchain/bin"
  cp deploy/images/rust/Dockerfile "$context/"
  cp "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$context/toolchain/bin/"
  # The standard library and the compiler's shared libraries; no docs, no other targets' sources.
  cp -a "$sysroot/lib" "$context/toolchain/"
  docker build -q --build-arg "BASE_IMAGE=$base" -t "$rust" "$context" >/dev/null
  rm -rf "$context"
fi

for image in postgres prometheus; do
  tag=${!image}
  step "$tag: deploy/images/$image"
  docker build -q --build-arg "BASE_IMAGE=$base" -t "$tag" "deploy/images/$image" >/dev/null
done

step "$trawl: deploy/Dockerfile (RUST_IMAGE=$rust, RUNTIME_IMAGE=$base)"
started=$(date +%s)
docker build -f deploy/Dockerfile \
  --build-arg "RUST_IMAGE=$rust" --build-arg "RUNTIME_IMAGE=$base" \
  -t "$trawl" . >"$work/trawl-build.log" 2>&1 || {
  tail -40 "$work/trawl-build.log" >&2
  echo "build-images: deploy/Dockerfile failed; the whole log is in $work/trawl-build.log" >&2
  exit 1
}
step "$trawl built in $(seconds_since "$started") s ($(docker image inspect -f '{{.Size}}' "$trawl") bytes)"

cat <<VARS
IMAGE_TRAWL=$trawl
IMAGE_POSTGRES=$postgres
IMAGE_PROMETHEUS=$prometheus
VARS
