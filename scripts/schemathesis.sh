#!/usr/bin/env bash
# Fuzzes a live scheduler against docs/openapi.yaml with schemathesis: no 5xx answer, every
# answer's status, content type and body as the document says, every request the document calls
# valid accepted and every one it calls invalid refused. Run by .ci/run.
#
# Each run draws a new seed, so runs explore different inputs; the seed is printed first and again
# on failure, and SCHEMATHESIS_SEED=N replays a run.
#
# schemathesis comes from PyPI into target/tools-venv (shared with scripts/cargo-deny.sh) on first
# use. The scheduler is the debug `trawl` binary on a private PostgreSQL cluster in a temporary
# folder; both are stopped and the folder deleted on any exit. Extra arguments go to
# `schemathesis run` (e.g. `-n 200`, `--include-path /v1/jobs`).
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=target/tools-venv
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $version" ]; then
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$version"
fi

seed=${SCHEMATHESIS_SEED:-$(python3 -c 'import secrets; print(secrets.randbelow(2**31))')}
case $seed in
  '' | *[!0-9]*) echo "schemathesis.sh: SCHEMATHESIS_SEED must be a number, not '$seed'" >&2; exit 2 ;;
esac
echo "schemathesis.sh: seed $seed (replay with SCHEMATHESIS_SEED=$seed)"

cargo build --bin trawl
# Wherever cargo puts it (CARGO_TARGET_DIR, a workspace setting), not necessarily ./target.
target_dir=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
trawl=$target_dir/debug/trawl

scripts/install-postgres.sh >/dev/null
# PostgreSQL's server binaries: the newest /usr/lib/postgresql/*/bin, else PATH (as shared/src/pgcluster.rs).
pgbin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
if [ ! -x "$pgbin/initdb" ]; then
  pgbin=$(dirname "$(command -v initdb || echo /missing/initdb)")
fi
if [ ! -x "$pgbin/initdb" ] || [ ! -x "$pgbin/pg_ctl" ]; then
  echo "schemathesis.sh: PostgreSQL server binaries not found; run scripts/install-postgres.sh" >&2
  exit 1
fi
# initdb refuses to run as root.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(runuser -u postgres --)
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work=$(mktemp -d "${TMPDIR:-/tmp}/trawl-schemathesis.XXXXXX")
scheduler_pid=
cleanup() {
  local status=$?
  if [ -n "$scheduler_pid" ]; then
    kill "$scheduler_pid" 2>/dev/null || true
    wait "$scheduler_pid" 2>/dev/null || true
  fi
  if [ -f "$work/data/postmaster.pid" ]; then
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  if [ "$status" != 0 ] && [ -f "$work/scheduler.log" ]; then
    echo "--- last lines of the scheduler's log ---" >&2
    tail -n 40 "$work/scheduler.log" >&2
  fi
  if [ "$status" != 0 ]; then
    echo "schemathesis.sh: failed with seed $seed; replay with SCHEMATHESIS_SEED=$seed bash scripts/schemathesis.sh" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ "${#as_pg[@]}" != 0 ]; then
  chown postgres "$work"
fi

"${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --locale=C \
  --no-sync --no-instructions >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; exit 1; }
pg_port=$(free_port)
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w -t 60 -o \
  "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off -c synchronous_commit=off" \
  start >/dev/null || { cat "$work/postgres.log" >&2; exit 1; }

export TRAWL_DATABASE__URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
TRAWL_SCHEDULER__API_TOKEN="trawl_$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
export TRAWL_SCHEDULER__API_TOKEN
"$trawl" migrate

# Rows for the account and proxy routes, so that their answers are checked with something in them
# (a proxy with credentials, one down, an account behind each) rather than as empty lists, and the
# document's examples (account `alice`, proxy `eu-1`) name what exists. Nothing connects to the
# proxies. No CLI verb marks a proxy down (workers do), hence the SQL.
printf 'schemathesis-proxy-password\n' | "$trawl" proxies add eu-1 http://127.0.0.1:9 \
  --username schemathesis-proxy-user --password-stdin --insecure-dev-key >/dev/null
"$trawl" proxies add us-1 http://127.0.0.1:10 >/dev/null
printf 'schemathesis-account-password\n' | "$trawl" accounts add alice --password-stdin --proxy eu-1 \
  --insecure-dev-key >/dev/null
"$trawl" accounts add bob --anonymous --proxy us-1 >/dev/null
"$pgbin/psql" "$TRAWL_DATABASE__URL" -v ON_ERROR_STOP=1 -q -c \
  "UPDATE proxies SET state = 'down', down_reason = 'connection refused', down_since = now(),
          check_after = now() + interval '1 hour', failures = 1
    WHERE name = 'us-1'"

port=$(free_port)
"$trawl" scheduler --listen "127.0.0.1:$port" >"$work/scheduler.log" 2>&1 &
scheduler_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$scheduler_pid" 2>/dev/null; then
    echo "schemathesis.sh: the scheduler exited before it was ready" >&2
    exit 1
  fi
  sleep 0.2
done
curl -fsS "$base/readyz" >/dev/null

# Beyond the four conformance checks: documented headers (WWW-Authenticate), schema-valid requests
# accepted (positive_data_acceptance: anything but 400 and 422 passes, so an unknown job id's 404
# or an active duplicate's answer is fine), schema-invalid requests refused, auth really enforced,
# undocumented methods refused with a correct Allow header. It runs from the temporary folder,
# where schemathesis keeps its cache (.schemathesis/), and the example database is off, so
# nothing is written into the work tree and nothing carries over from an earlier run.
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
checks+=,response_headers_conformance,positive_data_acceptance,negative_data_rejection,ignored_auth
checks+=,unsupported_method,allow_header_conformance
spec=$PWD/docs/openapi.yaml
venv_bin=$PWD/$venv/bin
(
  cd "$work"
  "$venv_bin/schemathesis" run "$spec" \
    --url "$base" \
    --header "Authorization: Bearer $TRAWL_SCHEDULER__API_TOKEN" \
    --checks "$checks" \
    --max-examples 50 \
    --seed "$seed" \
    --generation-database none \
    --request-timeout 10 \
    --no-color \
    "$@"
)
