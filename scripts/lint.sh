#!/usr/bin/env bash
# npm run lint: ESLint and Prettier over the TypeScript, clang-format over the C++.
# npm run format (this script with --fix): rewrites the same files instead of checking them.
# The C++ check is clang-format 14 on purpose: other versions format some constructs differently, and CI installs 14.
set -euo pipefail
cd "$(dirname "$0")/.."

fix=0
if [ "${1:-}" = "--fix" ]; then fix=1; fi

clang_format=""
for c in clang-format-14 clang-format; do
  if command -v "$c" >/dev/null 2>&1; then clang_format=$c; break; fi
done
if [ -z "$clang_format" ]; then
  echo "lint: neither clang-format-14 nor clang-format is on PATH (Debian: apt-get install clang-format-14)" >&2
  exit 1
fi

# Tracked files only, so build output and stray scratch files never decide the result.
mapfile -t cxx < <(git ls-files 'addon/*.cc' 'addon/*.h' 'fuzz/*.cc' 'fuzz/*.h' 'bench/native/*.cc' 'bench/native/*.h')

if [ "$fix" = 1 ]; then
  npx prettier --write --log-level warn .
  "$clang_format" -i "${cxx[@]}"
else
  npx eslint .
  npx prettier --check --log-level warn .
  "$clang_format" --dry-run -Werror "${cxx[@]}"
fi
