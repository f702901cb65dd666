#!/usr/bin/env bash
# Builds the benchmarks (Release), runs the suite, the softmax peak-memory tool and the ratio
# guard, and renders plots + a Markdown report (bench/report.py, Debian's python3-matplotlib).
#
#   scripts/bench.sh            full suite (~15-25 min on 2 cores) -> docs/benchmarks.md,
#                               docs/benchmarks/*.png, docs/benchmarks/results.csv
#   scripts/bench.sh --quick    a subset of a few minutes -> build-bench/bench-quick/
#                               (so a quick run never overwrites the committed report)
#   scripts/bench.sh --as-consumer   as a user builds them (issue 17): seqmem installed with
#                               default options into <build-dir>/prefix, bench/consumer/ built
#                               against it by find_package, Release, no -march or warning flags
#                               -> build-bench-consumer/bench-consumer/ (also with --quick;
#                               softmax_memory is not run)
#
# Options: --out DIR  write <DIR>/benchmarks.md and <DIR>/benchmarks/ instead
#          --build-dir DIR (default build-bench, or $SEQMEM_BENCH_BUILD_DIR; with
#                          --as-consumer build-bench-consumer)
#          --jobs N     parallel build jobs (default: nproc)
#          --repetitions N, --min-time SECONDS (defaults: full 3 / 0.25, quick 1 / 0.05)
#          -- ARGS...   extra arguments for layers_bench (e.g. --benchmark_filter=...)
# Raw results (Google Benchmark JSON) stay in <build-dir>/bench-results/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

quick=0
consumer=0
out=""
build_dir=""
jobs="$(nproc 2>/dev/null || echo 2)"
repetitions=""
min_time=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --as-consumer) consumer=1 ;;
    --out) out="$2"; shift ;;
    --build-dir) build_dir="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --repetitions) repetitions="$2"; shift ;;
    --min-time) min_time="$2"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$consumer" -eq 1 ]; then
  build_dir="${build_dir:-build-bench-consumer}"
  out="${out:-$build_dir/bench-consumer}"
else
  build_dir="${build_dir:-${SEQMEM_BENCH_BUILD_DIR:-build-bench}}"
fi
if [ "$quick" -eq 1 ]; then
  suite=quick; repetitions="${repetitions:-1}"; min_time="${min_time:-0.05}"
  out="${out:-$build_dir/bench-quick}"
else
  suite=full; repetitions="${repetitions:-3}"; min_time="${min_time:-0.25}"
  out="${out:-docs}"
fi

# --- dependencies: the build's (scripts/install-deps.sh) and matplotlib for the plots -------
source scripts/install-deps.sh
seqmem_install_deps

# A python3 that imports matplotlib: Debian's /usr/bin/python3 first (python3-matplotlib
# installs there; a python3 earlier on PATH, e.g. pyenv's, would not see it).
find_python() {
  local py
  for py in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [ -n "$py" ] && [ -x "$py" ] && "$py" -c 'import matplotlib' >/dev/null 2>&1; then
      echo "$py"; return 0
    fi
  done
  return 1
}
if ! python=$(find_python); then
  if command -v dpkg >/dev/null 2>&1; then
    seqmem_install_packages python3 python3-matplotlib
  fi
  python=$(find_python) || { echo "bench.sh: no python3 with matplotlib" >&2; exit 1; }
fi

# --- build -------------------------------------------------------------------------------------
# The compile settings the report states (--as-consumer: read from the consumer's compile line).
build_flags="CMake Release (-O3 -DNDEBUG) -march=native (SEQMEM_NATIVE)"
if [ "$consumer" -eq 1 ]; then
  # seqmem as a user gets it: installed with its default options (only the tests, benchmarks
  # and examples off) into a fresh prefix, then bench/consumer built against that prefix.
  mkdir -p "$build_dir"
  abs_build_dir=$(cd "$build_dir" && pwd)
  cmake -S . -B "$build_dir/package" -DCMAKE_BUILD_TYPE=Release -DSEQMEM_BUILD_TESTS=OFF \
    -DSEQMEM_BUILD_BENCHMARKS=OFF -DSEQMEM_BUILD_EXAMPLES=OFF \
    -DCMAKE_INSTALL_PREFIX="$abs_build_dir/prefix"
  rm -rf "$abs_build_dir/prefix" # no headers left over from an earlier install
  cmake --install "$build_dir/package"
  cmake -S bench/consumer -B "$build_dir/consumer" -DCMAKE_PREFIX_PATH="$abs_build_dir/prefix" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
  cmake --build "$build_dir/consumer" --target layers_bench form_ratio -j"$jobs"
  bin_dir="$build_dir/consumer"
  compile_line=$("$python" - "$build_dir/consumer/compile_commands.json" <<'PY'
import json, shlex, sys
for entry in json.load(open(sys.argv[1], encoding="utf-8")):
    if entry["file"].endswith("/layers_bench.cpp"):
        words, flags = shlex.split(entry["command"])[1:], []
        while words:
            word = words.pop(0)
            if word in ("-o", "-c", "-I", "-isystem"):
                words.pop(0)  # and its argument: paths, not flags
            elif not word.startswith("-I"):
                flags.append(word)
        print(" ".join(flags))
PY
)
  echo "bench.sh: the consumer's compile flags (layers_bench.cpp): $compile_line"
  build_flags="installed package via find_package(seqmem), default options, CMake Release; \
compile flags \`$compile_line\`"
else
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DSEQMEM_BUILD_BENCHMARKS=ON \
    -DSEQMEM_BUILD_TESTS=OFF -DSEQMEM_BUILD_EXAMPLES=OFF
  cmake --build "$build_dir" --target layers_bench softmax_memory form_ratio -j"$jobs"
  bin_dir="$build_dir/bench"
fi

results="$build_dir/bench-results"
mkdir -p "$results" "$out/benchmarks"
bench="$bin_dir/layers_bench"

# --- the suite -----------------------------------------------------------------------------------
echo "bench.sh: suite=$suite repetitions=$repetitions min_time=${min_time}s -> $results/$suite.json"
start=$(date +%s)
"$bench" --suite="$suite" --benchmark_repetitions="$repetitions" \
  --benchmark_min_time="$min_time" --benchmark_report_aggregates_only=true \
  --benchmark_out="$results/$suite.json" --benchmark_out_format=json ${extra[@]+"${extra[@]}"}
suite_seconds=$(( $(date +%s) - start ))

# --- softmax attention peak memory at T = 16384, one forked process per form -------------------
# (Not with --as-consumer: an empty file, which the report shows as "not measured".)
: >"$results/softmax_memory.jsonl"
memory_info="softmax_memory at T=16384"
if [ "$consumer" -eq 1 ]; then dims=""; memory_info="softmax_memory not run (--as-consumer)"
elif [ "$suite" = full ]; then dims="64 128"; forms=parallel,chunkwise,recurrent
else dims="64"; forms=parallel,chunkwise; fi
for d in $dims; do
  "$bin_dir/softmax_memory" --T=16384 --d="$d" --forms="$forms" \
    | tee -a "$results/softmax_memory.jsonl"
done

# --- TTT/Titans chunkwise vs recurrent with the calls interleaved ------------------------------
rounds=15
[ "$suite" = quick ] && rounds=3
"$bin_dir/form_ratio" "$rounds" | tee "$results/form_ratio.txt"

# --- ratio guard (the same checks as ctest bench.ratio_guard) -----------------------------------
guard_status=0
"$python" bench/ratio_guard.py --bench "$bench" --json "$results/guard.json" || guard_status=$?

# --- report --------------------------------------------------------------------------------------
# The library revision measured ($SEQMEM_BENCH_REVISION overrides, e.g. for an exported tree).
revision="${SEQMEM_BENCH_REVISION:-}"
if [ -z "$revision" ] && git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  revision="commit $(git -C "$root" rev-parse --short HEAD)"
  git -C "$root" diff --quiet HEAD -- include 2>/dev/null ||
    revision="$revision + uncommitted changes in include/"
fi
title="Benchmarks"
[ "$suite" = quick ] && title="Benchmarks (quick subset)"
if [ "$consumer" -eq 1 ]; then
  title="Benchmarks (as a consumer builds them: installed package, Release, no -march)"
  [ "$suite" = quick ] && title="Benchmarks (as a consumer builds them, quick subset)"
fi
"$python" bench/report.py --json "$results/$suite.json" \
  --memory "$results/softmax_memory.jsonl" --guard-json "$results/guard.json" \
  --form-ratio "$results/form_ratio.txt" \
  --out-dir "$out/benchmarks" --md "$out/benchmarks.md" --title "$title" \
  --build-flags "$build_flags" \
  --run-info "${revision:-unknown revision}; layers_bench --suite=$suite, $repetitions repetition(s) of >= ${min_time} s each \
(medians reported), $((suite_seconds / 60)) min $((suite_seconds % 60)) s wall time; \
$memory_info; ratio guard run separately"

echo "bench.sh: report in $out/benchmarks.md, plots in $out/benchmarks/"
if [ "$guard_status" -ne 0 ]; then
  echo "bench.sh: the ratio guard FAILED (see above)" >&2
  exit "$guard_status"
fi
