#!/usr/bin/env bash
# Regenerates the committed seed corpora fuzz/corpus/<fuzzer>/ : runs each fuzzer from its current
# corpus (plus any extra directories given, e.g. a long local run) for CORPUS_SECONDS (default 120), then
# keeps the smallest set of inputs that covers the same features (libFuzzer -merge=1). Regression
# inputs (regress-*) are kept as they are. Run fuzz/build.sh first; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${FUZZ_OUT:-fuzz/out}
SECS=${CORPUS_SECONDS:-120}
source fuzz/fuzzers.sh
for name in "${FUZZERS[@]}"; do
  scratch=$OUT/corpus-gen/$name
  rm -rf "$scratch" && mkdir -p "$scratch" "fuzz/corpus/$name"
  "$OUT/$name" -max_total_time="$SECS" -max_len="${MAX_LEN[$name]}" -timeout=10 "$scratch" "fuzz/corpus/$name" "$@" \
    >"$OUT/corpus-gen-$name.log" 2>&1
  merged=$OUT/corpus-gen/$name.merged
  rm -rf "$merged" && mkdir -p "$merged"
  "$OUT/$name" -merge=1 -max_len="${MAX_LEN[$name]}" "$merged" "$scratch" "fuzz/corpus/$name" >>"$OUT/corpus-gen-$name.log" 2>&1
  find "fuzz/corpus/$name" -type f ! -name 'regress-*' -delete
  cp "$merged"/* "fuzz/corpus/$name/"
  echo "$name: $(ls "fuzz/corpus/$name" | wc -l) inputs, $(du -sh "fuzz/corpus/$name" | cut -f1)"
done
