#!/usr/bin/env bash
# The README's test command: installs what is missing, builds seqmem (Release, warnings as
# errors) and runs every test with ctest. About 6 minutes on 2 cores from a clean build.
# Extra arguments are passed to ctest, e.g. `scripts/test.sh -R linear` or `-LE consumer`.
# The checked builds (ASan/UBSan, TSan, fuzzing, clang -Werror) are scripts/sanitize.sh, which
# .ci/run runs after this script.
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
