#!/usr/bin/env bash
# Runs each fuzzer for a bounded time over its committed seed corpus and fails on any crash, leak or
# invariant violation. Build first with fuzz/build.sh.
#   FUZZ_SECONDS  seconds per fuzzer (default 45)
#   FUZZ_OUT      where build.sh put the binaries (default fuzz/out)
# New inputs go to a scratch corpus under $FUZZ_OUT/work, never into fuzz/corpus; a crash leaves its
# input in $FUZZ_OUT/artifacts/ and the run fails. Every file under fuzz/corpus/<name>/ (including the
# regression inputs of crashes found earlier, named regress-*) is replayed first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${FUZZ_OUT:-fuzz/out}
SECONDS_EACH=${FUZZ_SECONDS:-45}
source fuzz/fuzzers.sh

status=0
for name in "${FUZZERS[@]}"; do
  bin=$OUT/$name
  [ -x "$bin" ] || { echo "fuzz/run.sh: $bin is missing (run fuzz/build.sh)" >&2; exit 2; }
  work=$OUT/work/$name
  art=$OUT/artifacts/$name/
  mkdir -p "$work" "$art"
  start=$(date +%s)
  # -rss_limit_mb: a leak per input shows as growth; -timeout: one input must not hang (a blocking read).
  "$bin" -max_total_time="$SECONDS_EACH" -max_len="${MAX_LEN[$name]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art" "$work" "fuzz/corpus/$name" >"$OUT/$name.log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$OUT/$name.log" | grep -o '[0-9]*$')
  if [ $rc -ne 0 ]; then
    echo "FAIL $name after ${took}s (exit $rc); input saved in $art; log $OUT/$name.log:" >&2
    grep -E 'ERROR|invariant|runtime error|SUMMARY|Test unit written' "$OUT/$name.log" | head -20 >&2
    status=1
  else
    echo "ok   $name: ${execs:-?} inputs in ${took}s, no crash"
  fi
done
exit $status
