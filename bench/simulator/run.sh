#!/usr/bin/env bash
# Requests per second the simulator serves, measured with wrk on loopback.
#   bench/simulator/run.sh [--write bench/RESULTS.md]
# Starts `trawl sim` (release build) with 10,000 users and windows scaled so small that no request
# is refused, warms it, then runs wrk (2 threads, 64 connections, 10 s) against a profile page and a
# page of GraphQL posts. Installs wrk from Debian when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
write=""
if [ "${1:-}" = "--write" ]; then write="${2:?--write needs a file}"; fi

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  else echo "wrk is missing: apt-get install wrk" >&2; exit 1; fi
fi
cargo build --release --bin trawl -q
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
started=$(date +%s.%N)
./target/release/trawl sim --seed 1 --users 10000 --listen "127.0.0.1:$port" --time-scale 0.000001 \
  --checkpoint-after-429s 0 2> /tmp/trawl-sim-bench.log &
sim=$!
trap 'kill $sim 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
load=$(grep -o 'in [0-9.]*[a-zµ]*s' /tmp/trawl-sim-bench.log | head -1)
user=$(./target/release/trawl sim users --seed 1 --users 10000 --count 2 | awk 'NR==2{print $1}')
id=$(curl -s "http://127.0.0.1:$port/api/v1/users/web_profile_info/?username=$user" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["user"]["id"])')
posts_url="http://127.0.0.1:$port/graphql/query/?query_hash=003056d32c2554def87228bc3fd9668a&variables=%7B%22id%22%3A%22$id%22%2C%22first%22%3A12%7D"
profile_url="http://127.0.0.1:$port/api/v1/users/web_profile_info/?username=$user"
rss_kb=$(ps -o rss= -p $sim | tr -d ' ')
run() { wrk -t2 -c64 -d10s --latency "$1" | tee /dev/stderr | awk '/Requests\/sec/{rps=$2} /^ +50%/{p50=$2} /^ +99%/{p99=$2} END{print rps, p50, p99}'; }
wrk -t2 -c64 -d3s "$profile_url" >/dev/null
read -r p_rps p_p50 p_p99 < <(run "$profile_url")
read -r g_rps g_p50 g_p99 < <(run "$posts_url")
report=$(cat <<MD
## Simulator (\`bench/simulator/run.sh\`)

Command: \`bench/simulator/run.sh --write bench/RESULTS.md\`  
Run: $(date -u '+%Y-%m-%d %H:%M UTC')

- Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), wrk and the simulator on the same machine
- Data set: 10,000 users (seed 1), generated $load; resident memory after load $((rss_kb / 1024)) MiB
- Load: \`wrk -t2 -c64 -d10s --latency\`, after a 3 s warm-up; windows scaled so that nothing is refused

| page | requests/s | p50 | p99 |
|---|---:|---:|---:|
| \`web_profile_info\` (profile + 12 posts) | $p_rps | $p_p50 | $p_p99 |
| GraphQL profile posts, \`first: 12\` | $g_rps | $g_p50 | $g_p99 |
MD
)
echo "$report"
if [ -n "$write" ]; then
  printf '%s\n' "$report" | bench/write-section.py "$write" simulator
  echo "wrote $write" >&2
fi
