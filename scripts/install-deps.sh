#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages seqmem needs to build, test and benchmark, if missing.
# Sourced by the other scripts (seqmem_install_packages installs any further packages they
# need); can also be run on its own.
set -euo pipefail

# Installs those of the given Debian packages that are missing (apt-get, as root or via sudo).
seqmem_install_packages() {
  if ! command -v dpkg >/dev/null 2>&1; then
    echo "seqmem: dpkg not found; install these yourself if missing: $*" >&2
    return 0
  fi
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0

  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "seqmem: missing packages (${missing[*]}) and not root, no sudo" >&2
      return 1
    fi
  fi
  echo "seqmem: installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${missing[@]}"
}

# What building, testing and benchmarking need (libxsmm-dev + pkg-config: the optional
# SEQMEM_USE_LIBXSMM backend of the TTT/Titans engine, on in our own builds when found).
seqmem_install_deps() {
  seqmem_install_packages libeigen3-dev nlohmann-json3-dev libgtest-dev libbenchmark-dev cmake \
    g++ make libxsmm-dev pkg-config
}

# What scripts/plots.py needs: Debian's matplotlib (it installs for /usr/bin/python3). Only for
# the plots: `bash scripts/install-deps.sh --plots`.
seqmem_install_plot_deps() {
  seqmem_install_packages python3 python3-matplotlib
}

# What the API reference needs (scripts/docs.sh): doxygen only (no graphviz: the Doxyfile draws
# no dot graphs). Only for the docs: `bash scripts/install-deps.sh --docs`.
seqmem_install_docs_deps() {
  seqmem_install_packages doxygen
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    --plots) seqmem_install_plot_deps ;;
    --docs) seqmem_install_docs_deps ;;
    *) seqmem_install_deps ;;
  esac
fi
