#!/usr/bin/env bash
# Security CI step (issue 3): builds and runs the libFuzzer harnesses for a bounded time over their
# committed corpora, the wire-layer regression test, and the tap integration tests against an
# ASan/UBSan build of the addon. Works on a fresh Debian 12 machine; as root it installs what it needs:
#   clang-14 libclang-rt-14-dev   (libFuzzer, ASan/UBSan runtimes for clang)
#   g++ binutils                  (the addon's sanitizer build: libasan8 and libubsan1 come with g++; nm)
# node, npm and the project's npm dependencies are expected (npm ci is run if node_modules is missing).
#   FUZZ_SECONDS   seconds per fuzzer (default 45: four fuzzers, about 3 minutes of fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)

need=()
command -v clang++-14 >/dev/null || command -v clang++ >/dev/null || need+=(clang-14)
ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-14-dev)
command -v g++ >/dev/null || need+=(g++)
command -v nm >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "security.sh: missing ${need[*]} (apt-get install them)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends clang-14 libclang-rt-14-dev g++ binutils >/dev/null
fi
[ -d node_modules ] || npm ci

echo "== fuzzers: build"
bash fuzz/build.sh
echo "== wire regression"
fuzz/out/wire_test
echo "== fuzzers: run (${FUZZ_SECONDS:-45}s each)"
FUZZ_SECONDS=${FUZZ_SECONDS:-45} bash fuzz/run.sh
echo "== ASan/UBSan integration tests"
bash scripts/test-asan.sh
echo "security.sh: all passed in $(( $(date +%s) - t0 ))s"
