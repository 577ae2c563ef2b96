#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo fuzz with libFuzzer) for a set time, one after another.
#   bench/fuzz/run.sh [--seconds N] [--write bench/RESULTS.md] [--update-corpus] [TARGET...]
# Builds the targets once (release, debug assertions and overflow checks on, AddressSanitizer) in
# fuzz/target, apart from the workspace's target directory, then runs each built binary for N
# seconds (default 300) on its checked-in corpus (fuzz/corpus/TARGET is read, never written: new
# inputs go to a scratch directory). Per target it reports executions, exec/s, libFuzzer's final
# coverage (`cov:` edges, `ft:` features), the corpus size and any crash, timeout or out-of-memory
# input (left in fuzz/artifacts/TARGET). --update-corpus merges what the runs found into
# fuzz/corpus/TARGET, minimised as `cargo fuzz cmin` does (named seeds and regression-* inputs
# are always kept). Not run in CI. Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); the
# stable toolchain works with RUSTC_BOOTSTRAP=1, which this script sets.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=300
write=""
update=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --write) write="${2:?--write needs a file}"; shift 2 ;;
    --update-corpus) update=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(session_file batch_jsonl ig_response ig_verdict cursor config)
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
fuzz_flags=(-a)   # debug assertions and overflow checks: an overflow is a finding, not a wrap

build_started=$(date +%s)
cargo fuzz build "${fuzz_flags[@]}" 2>&1 | tail -3 >&2
build_seconds=$(( $(date +%s) - build_started ))
if [ "$build_seconds" -lt 10 ]; then build_note="already up to date (${build_seconds} s)"
else build_note="${build_seconds} s"; fi
# The binaries just built: running them directly (not `cargo fuzz run`) keeps every target on the
# same build even while the sources change, and keeps rebuilds out of the timed runs.
bin_dir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

work=$(mktemp -d /tmp/trawl-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
rows=""
total_crashes=0
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "no corpus for $t (fuzz/corpus/$t)" >&2; exit 1; }
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  seeds=$(find "fuzz/corpus/$t" -type f | wc -l)
  find "fuzz/artifacts/$t" -type f | sort >"$work/$t.before"
  log="$work/$t.log"
  echo "== $t: $seconds s from $seeds corpus files" >&2
  # New inputs go to the first directory (scratch); the checked-in corpus is only read.
  set +e
  "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 "$work/$t" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  # libFuzzer's own count: `Done N runs in S second(s)` (absent when it stopped on a crash).
  elapsed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  tail -4 "$log" >&2
  # libFuzzer's last status line (`#N DONE cov: … ft: … corp: U/SIZE … exec/s: …`) and final stats.
  status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  field() { sed -n "s/.* $1: \([^ ]*\).*/\1/p" <<<"$status"; }
  cov=$(field cov); ft=$(field ft); corp=$(field corp)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  find "fuzz/artifacts/$t" -type f | sort >"$work/$t.after"
  new_artifacts=$(comm -13 "$work/$t.before" "$work/$t.after" | paste -sd ' ' -)
  found=$(comm -13 "$work/$t.before" "$work/$t.after" | wc -l)
  what="none"
  if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
    kinds=$(grep -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+' "$log" | sort -u | paste -sd ';' - || true)
    what="**${found} (exit $rc)**: ${kinds:-see log}${new_artifacts:+ (\`$new_artifacts\`)}"
    total_crashes=$((total_crashes + (found > 0 ? found : 1)))
  fi
  rows+="| \`$t\` | $seeds | ${elapsed:-?} s | ${execs:-?} | ${eps:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | ${rss:-?} MB | $what |"$'\n'
  if [ "$update" -eq 1 ]; then
    # What `cargo fuzz cmin` does (libFuzzer's -merge=1), except that named files (hand-made
    # seeds, regression-* inputs) are always kept: only the fuzzer's own inputs (named by their
    # SHA-1) are minimised, old and new together, against the coverage of the named ones.
    mkdir -p "$work/$t.min"
    find "fuzz/corpus/$t" -type f -regextype posix-extended ! -regex '.*/[0-9a-f]{40}' \
      -exec cp {} "$work/$t.min/" \;
    "$bin_dir/$t" -merge=1 -timeout=10 -rss_limit_mb=2048 "$work/$t.min" "fuzz/corpus/$t" "$work/$t" \
      >"$work/$t.cmin.log" 2>&1 || { tail -5 "$work/$t.cmin.log" >&2; exit 1; }
    find "fuzz/corpus/$t" -type f -regextype posix-extended -regex '.*/[0-9a-f]{40}' -delete
    find "$work/$t.min" -type f -regextype posix-extended -regex '.*/[0-9a-f]{40}' \
      -exec cp {} "fuzz/corpus/$t/" \;
    echo "   corpus minimised: $(find "fuzz/corpus/$t" -type f | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)" >&2
  fi
done

cmd="bench/fuzz/run.sh --seconds $seconds${write:+ --write $write}"
[ "$update" -eq 1 ] && cmd+=" --update-corpus"
[ ${#targets[@]} -ne ${#all[@]} ] && cmd+=" ${targets[*]}"
report=$(cat <<MD
## Fuzzing (\`bench/fuzz/run.sh\`)

Command: \`$cmd\`  
Run: $(date -u '+%Y-%m-%d %H:%M UTC')

- Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -m | awk '/^Mem:/{printf "%.0f", $2 / 1024}') GiB RAM; one target at a time, one libFuzzer job each
- Tools: $(cargo fuzz --version), $(rustc --version | cut -d' ' -f1-2) with \`RUSTC_BOOTSTRAP=1\`; \`cargo fuzz build -a\` (release, debug assertions and overflow checks, AddressSanitizer): ${build_note}
- Each target: \`fuzz/target/…/release/TARGET -max_total_time=$seconds -timeout=10 -rss_limit_mb=2048 SCRATCH fuzz/corpus/TARGET\` (what \`cargo fuzz run -a TARGET\` runs), one after another, starting from the checked-in corpus; run time is libFuzzer's own count

| target | corpus at start (files) | run time | executions | exec/s | cov | ft | corpus (units/size) | peak RSS | crashes, timeouts, OOMs |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---|
${rows%$'\n'}

\`cov\` is libFuzzer's count of covered edges and \`ft\` its count of features (edges with hit counts) at the end of the run. What each target feeds and asserts, and every finding so far with its fix and regression test: [\`bench/fuzz/findings.md\`](fuzz/findings.md).

$(sed -n '/^<!-- findings:begin -->$/,/^<!-- findings:end -->$/p' bench/fuzz/findings.md | sed '1d;$d')
MD
)
echo "$report"
if [ -n "$write" ]; then
  printf '%s\n' "$report" | bench/write-section.py "$write" fuzz
  echo "wrote $write" >&2
fi
[ "$total_crashes" -eq 0 ]
