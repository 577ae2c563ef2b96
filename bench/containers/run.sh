#!/usr/bin/env bash
# bench/containers: the compose fleet on real containers, measured.
#   - the image: its size, its build time cold (no Trawl layer cached; the base images kept) and
#     with the dependency layer cached (one source file changed, in a copy of the tree);
#   - time from `up` to the first crawled item;
#   - the share of the rate-limit windows that 16 worker containers use: the capacity benchmark's
#     workload (bench/capacity: follower crawls, where the per-query-type window of 200 per 11
#     minutes binds), counted the same way from the simulator's audit log.
#
# Usage: bench/containers/run.sh [--cold] [--workers N] [--windows W] [--time-scale F] [--write FILE]
# Needs a Docker engine and a build of the host's `trawl` (TRAWL_BIN, else target/release or
# target/debug); makes the images with scripts/build-images.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

cold=0 workers=16 windows=3 time_scale=0.2402 write=""
while [ $# -gt 0 ]; do
  case $1 in
    --cold) cold=1 ;;
    --workers) workers=$2; shift ;;
    --windows) windows=$2; shift ;;
    --time-scale) time_scale=$2; shift ;;
    --write) write=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
# The host's CLI submits the crawl, as a user would (any build of it will do).
trawl=${TRAWL_BIN:-}
for candidate in target/release/trawl target/debug/trawl; do
  [ -n "$trawl" ] || { [ -x "$candidate" ] && trawl=$candidate; }
done
[ -n "$trawl" ] || { echo "build the host CLI first: cargo build --release --bin trawl" >&2; exit 1; }
compose=(docker compose)
docker compose version >/dev/null 2>&1 || compose=(docker-compose)
seconds() { python3 -c "import time; print(f'{time.monotonic():.1f}')"; }
elapsed() { python3 -c "print(f'{$(seconds) - $1:.0f}')"; }

# --- The image -------------------------------------------------------------------------------
if [ "$cold" = 1 ]; then
  docker rmi -f trawl:latest >/dev/null 2>&1 || true
  docker image prune -f >/dev/null
fi
t0=$(seconds)
eval "$(scripts/build-images.sh | grep -E '^[A-Z_]+=')"
build_first=$(elapsed "$t0")
export IMAGE_TRAWL IMAGE_POSTGRES IMAGE_PROMETHEUS
size_mb=$(docker image inspect -f '{{.Size}}' "$IMAGE_TRAWL" | awk '{printf "%.0f", $1 / 1e6}')
base_mb=$(docker image inspect -f '{{.Size}}' trawl-local/debian:12-slim | awk '{printf "%.0f", $1 / 1e6}')

# A developer's rebuild: one file of the binary crate changed, Cargo.lock not, so the dependency
# layer holds and only the `trawl` crate is compiled again.
copy=$(mktemp -d)
git archive HEAD | tar -x -C "$copy"
echo "// rebuilt by bench/containers" >> "$copy/src/main.rs"
t0=$(seconds)
docker build -q -f "$copy/deploy/Dockerfile" \
  --build-arg "RUST_IMAGE=trawl-local/rust:$(rustc --version | awk '{print $2}')-slim-bookworm" \
  --build-arg "RUNTIME_IMAGE=trawl-local/debian:12-slim" -t trawl:bench-cached "$copy" >/dev/null
build_cached=$(elapsed "$t0")
rm -rf "$copy"
docker rmi trawl:bench-cached >/dev/null

# --- The fleet ---------------------------------------------------------------------------------
project=trawlbench$$
dir=$(mktemp -d)/deploy
mkdir -p "$dir"
cp -r deploy/compose.yaml deploy/trawl.env deploy/prometheus "$dir/"
hex() { python3 -c "import secrets; print(secrets.token_hex($1))"; }
password=$(hex 16)
token_out=$("$trawl" token new --scope admin --name bench)
token=$(sed -n 's/^token: //p' <<<"$token_out")
sha=$(sed -n 's/^sha256 = "\(.*\)"/\1/p' <<<"$token_out")
cat > "$dir/.env" <<ENV
POSTGRES_PASSWORD=$password
TRAWL_DATABASE__URL=postgres://trawl:$password@postgres:5432/trawl
TRAWL_SECRETS__KEY=$(hex 32)
TRAWL_SCHEDULER__TOKENS=[{name="bench",sha256="$sha",scopes=["admin"]}]
GF_SECURITY_ADMIN_PASSWORD=$(hex 8)
ENV
# The capacity benchmark's data set (seed 3; users followed by 500 to 2,000 others) and as many
# accounts as workers, at the chosen time scale.
data=(--seed 3 --users 2000 --max-posts 2 --max-following 2000 --max-comments 0)
cat > "$dir/compose.bench.yaml" <<YAML
services:
  simulator:
    command: ["sim", "--listen", "0.0.0.0:8443", "--time-scale", "$time_scale", "--accounts", "$workers", $(printf '"%s", ' "${data[@]}" | sed 's/, $//')]
  trial-accounts:
    command:
      - >-
        trawl sim accounts --accounts $workers --seed 3 | while read -r name password; do
        printf '%s\\n' "\$\$password" | trawl accounts add "\$\$name" --password-stdin || true; done
  worker:
    environment:
      TRAWL_LIMITER__TIME_SCALE: "$time_scale"
YAML
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
scheduler_port=$(free_port)
prometheus_port=$(free_port)
export PORT_SCHEDULER=$scheduler_port PORT_PROMETHEUS=$prometheus_port
dc() { "${compose[@]}" -p "$project" -f "$dir/compose.yaml" -f "$dir/compose.bench.yaml" "$@"; }
cleanup() {
  dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
  rm -rf "$(dirname "$dir")" "${audit:-}"
}
trap cleanup EXIT

t_up=$(seconds)
dc up -d --scale "worker=$workers" >/dev/null 2>&1
pg_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"${project}_data\").IPAddress}}" "$(dc ps -q postgres)"; }
sql() { PGPASSWORD=$password psql -qtAX -h "$(pg_ip)" -U trawl -d trawl -c "$1" 2>/dev/null || echo ""; }
command -v psql >/dev/null || { echo "psql is needed (apt-get install postgresql-client)" >&2; exit 1; }
until [ "$(sql 'SELECT count(*) FROM accounts')" = "$workers" ]; do sleep 1; done
until curl -fsS "http://127.0.0.1:$scheduler_port/readyz" >/dev/null 2>&1; do sleep 1; done

# Enough follower pages for every account to stay busy through the measured windows.
needed=$((workers * 200 * (windows + 2) * 13 / 10))
pages=0
while read -r user _posts followers _rest; do
  [ "$followers" -ge 500 ] 2>/dev/null || continue
  TRAWL_CLIENT__TOKEN=$token "$trawl" --url "http://127.0.0.1:$scheduler_port" submit followers "$user" >/dev/null
  pages=$((pages + (followers + 11) / 12))
  [ "$pages" -ge "$needed" ] && break
done < <("$trawl" sim users "${data[@]}" --count 2000 | tail -n +2)
until [ "$(sql 'SELECT count(*) > 0 FROM ig_follows')" = "t" ]; do sleep 0.5; done
up_to_first=$(elapsed "$t_up")

window=$(python3 -c "print(660 * $time_scale)")
run_for=$(python3 -c "print(int($window * ($windows + 1) + 5))")
echo "bench-containers: $workers workers crawling for ${run_for} s (window ${window} s)" >&2
sleep "$run_for"
sim_ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"${project}_default\").IPAddress}}" "$(dc ps -q simulator)")
audit=$(mktemp)
curl -fsS "http://$sim_ip:8443/__sim/audit.jsonl" > "$audit"
oracle=$(curl -fsS "http://$sim_ip:8443/__sim/oracle")
running=$(dc ps -q worker | xargs docker inspect -f '{{.State.Running}}' | grep -c true)
left=$(sql "SELECT count(*) FROM jobs WHERE state = 'queued'")

row=$(python3 - "$audit" "$windows" "$window" <<'PY'
import collections, json, sys
audit, windows, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
times = collections.defaultdict(list)
for line in open(audit):
    e = json.loads(line)
    if (e.get("query_type") or "").startswith("qh:") and e.get("account"):
        times[(e["query_type"], e["account"])].append(e["t"])
# The followers query: the type that carries most of every account's requests.
per_type = collections.Counter()
for (query_type, _), t in times.items():
    per_type[query_type] += len(t)
followers = per_type.most_common(1)[0][0]
span = window * windows
counts = []
for (query_type, _), t in times.items():
    if query_type == followers:
        t.sort()
        counts.append(sum(1 for x in t if x < t[0] + span))
capacity = 200 * windows
allowance = int(windows * 660 * 200 / 666) + 1
low, mean = min(counts), sum(counts) / len(counts)
print(f"{len(counts)} | {low} / {mean:.1f} / {max(counts)} | "
      f"{low / capacity * 100:.2f}% / {mean / capacity * 100:.2f}% | "
      f"{low / allowance * 100:.2f}% / {mean / allowance * 100:.2f}%")
PY
)
r429=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['responses_429'])" "$oracle")
peak=$(python3 -c "
import json,sys
o=json.loads(sys.argv[1])
p=max(o['peaks'], key=lambda p: p['most']/max(p['cap'],1))
print(f\"{p['most']} / {p['cap']}\")" "$oracle")

report=$(cat <<MD
## Containers: the image and the compose fleet (\`bench/containers/run.sh\`)

Command: \`bench/containers/run.sh$([ "$cold" = 1 ] && echo " --cold") --workers $workers --windows $windows --time-scale $time_scale --write bench/RESULTS.md\`

Run: $(date -u '+%Y-%m-%d %H:%M UTC')

- Machine: $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM; Docker $(docker info -f '{{.ServerVersion}}') ($(docker info -f '{{.Driver}}')), $("${compose[@]}" version --short 2>/dev/null || "${compose[@]}" version | head -1)
- Images made by \`scripts/build-images.sh\` from Debian's packages (no registry); Trawl's from \`deploy/Dockerfile\` (cargo-chef, release build, Debian 12 minbase runtime, uid 10001)

| figure | value |
|---|---|
| image size (\`trawl:latest\`) | ${size_mb} MB (of which the Debian base ${base_mb} MB) |
| build, $([ "$cold" = 1 ] && echo "cold (no Trawl layer cached; base images present)" || echo "as found (layers cached where unchanged)") | ${build_first} s |
| build with the dependency layer cached (\`src/main.rs\` changed: the binary crate alone rebuilt) | ${build_cached} s |
| \`up\` to the first crawled item ($workers workers) | ${up_to_first} s |

### The share of the windows $workers worker containers use

Each of $workers worker containers holds one of $workers accounts and works a backlog of
\`followers\` crawls (bench/capacity's workload and data set) at time scale $time_scale (a window of
${window} s); counted from the simulator's audit log, per account, the requests of the followers
query in the $windows full windows from its first one, against $windows × 200 (server capacity) and
against what Instaloader's 6 s margin allows (⌊span / (666 s / 200)⌋ + 1). Workers running at the
end: $running; jobs still queued: $left (the backlog outlasted the measurement).

| accounts | requests per account (min / mean / max) | of server capacity (min / mean) | of the limiter's allowance (min / mean) | 429s | busiest window / cap |
|---|---|---|---|---|---|
| $row | $r429 | $peak |
MD
)
echo "$report"
if [ -n "$write" ]; then
  python3 bench/write-section.py "$write" containers <<<"$report"
  echo "wrote $write" >&2
fi
