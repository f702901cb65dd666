#!/usr/bin/env bash
# Builds the API reference with doxygen (installed first if missing) into build/docs/html
# (open build/docs/html/index.html). Fails on any doxygen warning (docs/Doxyfile:
# WARN_AS_ERROR), e.g. a public class or function without a `///` comment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/install-deps.sh
command -v doxygen >/dev/null 2>&1 || seqmem_install_docs_deps

mkdir -p build/docs  # docs/Doxyfile's OUTPUT_DIRECTORY (paths are relative to the repo root)
doxygen docs/Doxyfile
echo "seqmem: API reference in build/docs/html/index.html"
