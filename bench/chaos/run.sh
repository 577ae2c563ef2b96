#!/usr/bin/env bash
# The long versions of the chaos scenarios R1–R8b (tests/chaos), with their figures.
#   bench/chaos/run.sh [--write bench/RESULTS.md] [r1 r2 … r7 r8 r8b | --no-run]
# Runs each scenario's test (`cargo test --release --test chaos -- rN_`) with TRAWL_CHAOS_LONG=1
# (bigger crawls, longer and repeated faults), one at a time so that each has the machine to
# itself, and keeps the row it records (TRAWL_CHAOS_FIGURES) in target/chaos-figures/rN.md. Naming
# scenarios runs only those; the section is written from all nine rows. A scenario that fails
# stops the run and keeps its old row. Needs what the tests need: scripts/install-postgres.sh and
# scripts/install-faketime.sh (both run here).
set -euo pipefail
cd "$(dirname "$0")/../.."
write=""
if [ "${1:-}" = "--write" ]; then write="${2:?--write needs a file}"; shift 2; fi
# `--no-run`: only write the section from the rows already kept.
if [ "${1:-}" = "--no-run" ]; then scenarios=(); shift; else scenarios=("${@:-r1 r2 r3 r4 r5 r6 r7 r8 r8b}"); fi
# shellcheck disable=SC2206
scenarios=(${scenarios[*]})

scripts/install-postgres.sh >/dev/null
scripts/install-faketime.sh >/dev/null
# One row per scenario, kept between runs so that one scenario can be run again alone.
figures=target/chaos-figures
mkdir -p "$figures"
[ ${#scenarios[@]} -eq 0 ] || cargo test --release --test chaos --no-run
for scenario in "${scenarios[@]}"; do
  : > "$figures/$scenario.md.new"
  TRAWL_CHAOS_LONG=1 TRAWL_CHAOS_FIGURES="$figures/$scenario.md.new" \
    cargo test --release --test chaos -- --nocapture "${scenario}_" 2>&1 | tee "$figures/$scenario.log"
  [ -s "$figures/$scenario.md.new" ] || { echo "$scenario recorded no figures" >&2; exit 1; }
  # The test's own run time, as the test harness reports it (no build time).
  elapsed=$(sed -n 's/.*finished in \([0-9.]*\)s.*/\1/p' "$figures/$scenario.log" | tail -n 1)
  sed -i "s/ |\$/ ($(date -u '+%Y-%m-%d'), test ${elapsed} s) |/" "$figures/$scenario.md.new"
  mv "$figures/$scenario.md.new" "$figures/$scenario.md"
done
missing=$(for s in r1 r2 r3 r4 r5 r6 r7 r8 r8b; do [ -s "$figures/$s.md" ] || echo "$s"; done)
[ -z "$missing" ] || { echo "no figures yet for: $missing (run them first)" >&2; exit 1; }

report=$(cat <<MD
## Chaos, long versions (\`bench/chaos/run.sh\`)

Command: \`bench/chaos/run.sh --write bench/RESULTS.md [r1 … r8b]\` (per scenario: \`TRAWL_CHAOS_LONG=1 cargo test --release --test chaos -- rN_\`, one at a time)  
Written: $(date -u '+%Y-%m-%d %H:%M UTC'); each row ends with the date and the test's run time of its own run ("first full run" marks rows from one earlier run of all seven)

- Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM; every process (PostgreSQL, the simulator, the scheduler, the workers) on this machine
- Each scenario: real \`trawl\` processes, the simulator at scaled time, a private PostgreSQL; the verdict comes from the database and the simulator's audit-log oracle. "Lost" = jobs not terminal at the end; "missing"/"unexpected" = data-set items of the crawl not stored / stored items the crawl does not cover (a duplicate would be one); "busiest" = the fullest sliding window's share of its cap.

| scenario | jobs | lost | failed | items | missing | unexpected | requests | 429s | windows over cap | busiest | what happened |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
$(cat "$figures"/r[1-7].md "$figures"/r8.md "$figures"/r8b.md)
MD
)
echo "$report"
if [ -n "$write" ]; then
  printf '%s\n' "$report" | bench/write-section.py "$write" chaos
  echo "wrote $write" >&2
fi
