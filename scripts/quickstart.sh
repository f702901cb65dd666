#!/usr/bin/env bash
# Installs what is missing, builds seqmem (Release) and runs the quickstart example.
# Extra arguments are passed to the example.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/install-deps.sh
seqmem_install_deps

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build --target quickstart -j"$(nproc 2>/dev/null || echo 2)"
build/examples/quickstart "$@"
