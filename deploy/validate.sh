#!/usr/bin/env bash
# Validates every deployment file offline (no Docker engine or cluster runs here): the compose file
# against the compose specification, the Kubernetes manifests against Kubernetes's schemas, the
# Prometheus configuration and alert rules with promtool, and the Dockerfile's essentials.
# Run by .ci/run. Installs its two PyPI tools into target/deploy-venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
if [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "check-jsonschema==0.39.0" "kubernetes-validate==1.37.0"
fi

echo "compose: deploy/compose.yaml"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "kubernetes: deploy/k8s"
# KEDA's kinds have no schema in kubernetes-validate: it warns about them and checks the rest.
"$venv/bin/kubernetes-validate" --strict deploy/k8s/*.yaml
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize deploy/k8s >/dev/null
fi

echo "prometheus: deploy/prometheus"
command -v promtool >/dev/null || scripts/install-prometheus.sh >/dev/null
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/alerts.test.yml

echo "dockerfile: deploy/Dockerfile"
fail() { echo "deploy/Dockerfile: $1" >&2; exit 1; }
dockerfile=deploy/Dockerfile
# Base images are pinned to exact versions (ARG defaults), never a moving tag.
grep -Eq '^ARG RUST_IMAGE=rust:[0-9]+\.[0-9]+\.[0-9]+-slim-bookworm$' "$dockerfile" \
  || fail "the builder image must be pinned to rust:X.Y.Z-slim-bookworm"
grep -Eq '^ARG RUNTIME_IMAGE=debian:12\.[0-9]+-slim$' "$dockerfile" \
  || fail "the runtime image must be pinned to debian:12.N-slim (the builder's Debian release)"
unpinned=$(grep -E '^FROM ' "$dockerfile" | grep -Ev '^FROM (\$\{(RUST_IMAGE|RUNTIME_IMAGE)\}|chef) AS [a-z]+$' || true)
[ -z "$unpinned" ] || fail "every FROM must use a pinned ARG image or an earlier stage: $unpinned"

grep -Eq '^RUN cargo install cargo-chef --locked --version [0-9.]+$' "$dockerfile" \
  || fail "cargo-chef must be installed at a pinned version"
grep -q 'cargo chef cook' "$dockerfile" || fail "the dependency layer must be built by cargo chef cook"
grep -Eq '^ENV SQLX_OFFLINE=true$' "$dockerfile" || fail "SQLX_OFFLINE must be set"
grep -Eq '^USER [1-9][0-9]*(:[1-9][0-9]*)?$' "$dockerfile" || fail "the runtime must run as a non-root numeric USER"
grep -Eq '^  CMD \["/usr/local/bin/trawl", "healthcheck"\]$' "$dockerfile" \
  || fail "HEALTHCHECK must use the exec form of trawl healthcheck"
grep -Eq '^ENTRYPOINT \["/usr/local/bin/trawl"\]$' "$dockerfile" || fail "the entrypoint is the one binary"
# A syntax directive makes BuildKit pull its front end from a registry before building anything.
if grep -Eiq '^# *syntax *=' "$dockerfile"; then
  fail "no '# syntax=' directive: the build must work without a registry"
fi
echo "deployment files are valid"
