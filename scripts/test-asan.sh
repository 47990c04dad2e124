#!/usr/bin/env bash
# npm run test:asan: builds both addons (the product and the test front end) with AddressSanitizer and UndefinedBehaviorSanitizer (g++) into
# build-asan/ and runs the tap integration tests that drive it over real sockets under it.
# build/Release (the normal build) is not touched. Needs g++ (libasan8, libubsan1: Debian's gcc brings them).
#
# Node itself is not instrumented, so the ASan runtime is preloaded (LD_PRELOAD) into every node
# process of the run and leak detection is off (node does not free everything at exit); any ASan report
# aborts the process and so fails its test, and every UBSan finding aborts as well (no recovery).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build-asan
TESTS=${ASAN_TESTS:-"dist/test/addon/backend.test.js dist/test/addon/validation.test.js dist/test/addon/offloads.test.js dist/test/addon/survival/*.test.js dist/test/interop/uplink.test.js dist/test/interop/uplink-offloads.test.js"}

mkdir -p "$OUT"
node scripts/asan-gyp.cjs > "$OUT/binding.gyp"
NODEDIR=$(npm config get nodedir 2>/dev/null || true)
GYP_ARGS=()
if [ -n "$NODEDIR" ] && [ -d "$NODEDIR/include/node" ]; then GYP_ARGS+=("--nodedir=$NODEDIR"); fi
(cd "$OUT" && "$ROOT/node_modules/.bin/node-gyp" rebuild "${GYP_ARGS[@]}" -j 2 >"$OUT/build.log" 2>&1) || {
  tail -40 "$OUT/build.log"
  echo "test:asan: building the sanitizer addon failed (log: $OUT/build.log)" >&2
  exit 1
}
ADDON_DIR=$OUT/build/Release
ADDONS="vhostwire.node vhostwire_frontend.node"
# Each addon must really be instrumented (a silent fallback to an unsanitized build would prove nothing).
for addon in $ADDONS; do
  if ! nm -D "$ADDON_DIR/$addon" | grep -c __asan_init >/dev/null; then
    echo "test:asan: $ADDON_DIR/$addon is not instrumented" >&2
    exit 1
  fi
done

npx tsc -p .

LIBASAN=$(g++ -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "test:asan: libasan.so not found (install g++ / libasan8)" >&2; exit 1; }

export VHOSTWIRE_ADDON_DIR=$ADDON_DIR
export NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }--require=$ROOT/scripts/asan-redirect.cjs"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=0:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LD_PRELOAD=$LIBASAN
export VHOSTWIRE_ADDON_LOG=$OUT/loaded.log
rm -f "$VHOSTWIRE_ADDON_LOG"
# Sanitized code is a few times slower: give each test file more time than the default run does.
# shellcheck disable=SC2086
npx tap --timeout=300 --disable-coverage --allow-empty-coverage $TESTS
# shellcheck disable=SC2086
files=$(echo $TESTS | wc -w)
# Every one of these test files drives the backend with our front end: both addons load in each.
for addon in $ADDONS; do
  loads=$(grep -c "/$addon\$" "$VHOSTWIRE_ADDON_LOG" 2>/dev/null || true)
  if [ "${loads:-0}" -lt "$files" ]; then
    echo "test:asan: the sanitized $addon was loaded ${loads:-0} time(s) for $files test file(s)" >&2
    exit 1
  fi
done
echo "test:asan: $files test file(s) passed against the ASan/UBSan addons ($ADDON_DIR)"
