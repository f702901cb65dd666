#!/usr/bin/env bash
# Installs what is missing, builds seqmem (Release, warnings as errors) and runs all tests, then
# the checked builds of scripts/sanitize.sh (ASan/UBSan, TSan, fuzzing, clang -Werror).
# Extra arguments are passed to ctest, e.g. `scripts/test.sh -R linear` or `-LE consumer`;
# SEQMEM_SKIP_SANITIZE=1 skips the checked builds, e.g. for a quick local run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/install-deps.sh
seqmem_install_deps

# Each stage reports its wall time and the CPU time of everything it ran.
TIMEFORMAT="test.sh: %R s wall, %U s user + %S s sys CPU"
echo "test.sh: ---- build (Release)"
time {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSEQMEM_WERROR=ON
  cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
}
echo "test.sh: ---- ctest"
time ctest --test-dir build --output-on-failure -j2 "$@"

if [ "${SEQMEM_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "test.sh: ---- scripts/sanitize.sh"
  time bash scripts/sanitize.sh
fi
