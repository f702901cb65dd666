#!/usr/bin/env bash
# Checked builds, run by .ci/run after scripts/test.sh (the main tests). Small shapes throughout;
# the engine's products on Eigen (the main build runs them on libxsmm when installed).
#
#   asan   g++ -fsanitize=address,undefined -fno-sanitize-recover=all -D_GLIBCXX_ASSERTIONS,
#          Eigen's own assertions on (no NDEBUG): property_test (every layer, every form, float
#          and double; SEQMEM_SANITIZE_PROPERTY_CASES configurations per layer and type,
#          default 200 as in the main suite), golden_test (every golden case in every form),
#          multi_head_test (among others, copied inputs that own a copy of an expression), and
#          for the layers from x checkpoint_test, layer_golden_test, layer_conformance_test
#          (batches on two threads, state files) and models_test.
#   tsan   g++ -fsanitize=thread: concurrency_test (one layer shared by threads; MultiHead).
#   fuzz   clang++-14 -fsanitize=fuzzer,address,undefined -Werror: fuzz/forward_fuzz (input
#          validation) and fuzz/state_io_fuzz (load_state), SEQMEM_FUZZ_SECONDS each (default
#          60), from the seed corpus in fuzz/corpus/, then fuzz/safetensors_fuzz (the checkpoint
#          reader) likewise. Any crash fails; libFuzzer's stats are printed.
#   clang  clang++-14 -Werror -fsyntax-only of every source of our own targets (tests,
#          benchmarks, examples): all of clang's warnings, without code generation.
#
# Environment: SEQMEM_SANITIZE_STAGES (default "asan tsan fuzz clang"), SEQMEM_SANITIZE_DIR
# (build trees, default build-sanitize), SEQMEM_SANITIZE_PROPERTY_CASES, SEQMEM_FUZZ_SECONDS,
# SEQMEM_SANITIZE_JOBS (default nproc). Installs clang-14, libclang-rt-14-dev and python3 if
# missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

STAGES=${SEQMEM_SANITIZE_STAGES:-asan tsan fuzz clang}
DIR=${SEQMEM_SANITIZE_DIR:-build-sanitize}
PROPERTY_CASES=${SEQMEM_SANITIZE_PROPERTY_CASES:-200}
FUZZ_SECONDS=${SEQMEM_FUZZ_SECONDS:-60}
JOBS=${SEQMEM_SANITIZE_JOBS:-$(nproc 2>/dev/null || echo 2)}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

# -O1 keeps the sanitizers fast enough; no -DNDEBUG, so eigen_assert (index and size checks)
# is on. The checked builds run the engine's products on Eigen (SEQMEM_USE_LIBXSMM=OFF): the
# main build tests the libxsmm backend, these test the default path, and libxsmm's prebuilt
# library is not instrumented.
CHECKED_FLAGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1"
               -DSEQMEM_BUILD_BENCHMARKS=OFF -DSEQMEM_BUILD_EXAMPLES=OFF -DSEQMEM_INSTALL=OFF
               -DSEQMEM_USE_LIBXSMM=OFF)
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)

# Configures (if needed) and builds some targets in $DIR/<tree>.
build() {  # tree, cmake args…, --, targets…
  local tree=$1 args=()
  shift
  while [ "$1" != "--" ]; do
    args+=("$1")
    shift
  done
  shift
  cmake -S "$ROOT" -B "$DIR/$tree" "${GENERATOR[@]}" "${args[@]}" >"$DIR/$tree.configure.log" ||
    { cat "$DIR/$tree.configure.log"; return 1; }
  cmake --build "$DIR/$tree" -j"$JOBS" --target "$@"
}

# Missing Debian packages (clang-14 for the fuzz and clang stages, its runtimes for libFuzzer
# and the sanitizers, python3 for the clang stage) are installed with
# seqmem_install_packages from scripts/install-deps.sh.
source "$ROOT/scripts/install-deps.sh"

# Readable sanitizer stacks when a symbolizer is there (llvm-14 ships one).
for s in llvm-symbolizer llvm-symbolizer-14 /usr/lib/llvm-14/bin/llvm-symbolizer; do
  if command -v "$s" >/dev/null 2>&1; then
    export ASAN_SYMBOLIZER_PATH UBSAN_SYMBOLIZER_PATH
    ASAN_SYMBOLIZER_PATH=$(command -v "$s")
    UBSAN_SYMBOLIZER_PATH=$ASAN_SYMBOLIZER_PATH
    break
  fi
done
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

stage_asan() {
  build asan "${CHECKED_FLAGS[@]}" "-DSEQMEM_SANITIZE=address;undefined" -- property_test \
    golden_test multi_head_test checkpoint_test layer_golden_test layer_conformance_test \
    models_test
  SEQMEM_PROPERTY_CASES=$PROPERTY_CASES ctest --test-dir "$DIR/asan" --output-on-failure -j2 \
    -R '^(property_test|golden_test|multi_head_test|checkpoint_test|layer_golden_test|layer_conformance_test|models_test)\.'
  # How many cases ran, from the test log.
  grep -h '^\[ property \]' "$DIR/asan/Testing/Temporary/LastTest.log" || true
}

stage_tsan() {
  build tsan "${CHECKED_FLAGS[@]}" -DSEQMEM_SANITIZE=thread -- concurrency_test
  ctest --test-dir "$DIR/tsan" --output-on-failure -j2 -R '^concurrency_test\.'
}

# Runs one fuzz target for FUZZ_SECONDS from the seed corpus; prints libFuzzer's stats.
run_fuzzer() {  # target, seed dir(s)…
  local target=$1
  shift
  local work="$DIR/fuzz-work/$target" log="$DIR/fuzz-work/$target.log"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  local dir f n=0
  for dir in "$@"; do  # numbered, so that seeds of the same name from two dirs both count
    n=$((n + 1))
    for f in "$dir"/*; do cp "$f" "$work/corpus/$n-$(basename "$f")"; done
  done
  echo "sanitize: fuzzing $target for ${FUZZ_SECONDS} s from $(ls "$work/corpus" | wc -l) seeds"
  local rc=0
  "$DIR/fuzz/fuzz/$target" "$work/corpus" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 \
    -rss_limit_mb=2048 -timeout=30 -artifact_prefix="$work/artifacts/" >"$log" 2>&1 || rc=$?
  local runs speed
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  echo "sanitize: $target: ${runs:-?} executions, ${speed:-?} exec/s," \
    "corpus $(ls "$work/corpus" | wc -l) inputs (log $log)"
  if [ "$rc" -ne 0 ]; then
    echo "sanitize: $target FAILED (exit $rc); from its log:" >&2
    awk '/runtime error|ERROR|violated|unexpected exception/ { on = 1 } on && n++ < 50' "$log" >&2
    local a  # the crashing input in hex, for when the artifact file is gone with the CI machine
    for a in "$work/artifacts"/*; do
      [ -f "$a" ] && { echo "$a:"; od -An -tx1 "$a" | head -40; } >&2
    done
    return 1
  fi
}

stage_fuzz() {
  seqmem_install_packages clang-14 libclang-rt-14-dev
  build fuzz -DCMAKE_CXX_COMPILER=clang++-14 "${CHECKED_FLAGS[@]}" -DSEQMEM_BUILD_TESTS=OFF \
    -DSEQMEM_WERROR=ON -DSEQMEM_BUILD_FUZZ=ON -- all
  # Fresh seeds in the current file format, besides the committed ones.
  mkdir -p "$DIR/fuzz-work/state-seeds"
  "$DIR/fuzz/fuzz/make_state_corpus" "$DIR/fuzz-work/state-seeds"
  # Both at once: each fuzzer runs on one core.
  local forward state rc=0
  run_fuzzer forward_fuzz "$ROOT/fuzz/corpus/forward" &
  forward=$!
  run_fuzzer state_io_fuzz "$ROOT/fuzz/corpus/state_io" "$DIR/fuzz-work/state-seeds" &
  state=$!
  wait "$forward" || rc=1
  wait "$state" || rc=1
  run_fuzzer safetensors_fuzz "$ROOT/fuzz/corpus/safetensors" || rc=1
  return "$rc"
}

stage_clang() {
  seqmem_install_packages clang-14 python3
  # Configure with clang and -Werror, then run each compile command with -fsyntax-only.
  cmake -S "$ROOT" -B "$DIR/clang" "${GENERATOR[@]}" -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCMAKE_BUILD_TYPE=Release -DSEQMEM_WERROR=ON -DSEQMEM_INSTALL=OFF \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$DIR/clang.configure.log" ||
    { cat "$DIR/clang.configure.log"; return 1; }
  python3 - "$DIR/clang/compile_commands.json" "$JOBS" <<'EOF'
import json, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
entries = json.load(open(sys.argv[1]))
def check(e):
    args, out, skip = shlex.split(e["command"]), [], False
    for a in args:  # drop "-o FILE" and "-c": no object file
        if skip:
            skip = False
        elif a == "-o":
            skip = True
        elif a != "-c":
            out.append(a)
    r = subprocess.run(out + ["-fsyntax-only"], cwd=e["directory"], capture_output=True, text=True)
    return e["file"], r.returncode, r.stdout + r.stderr
failed = 0
with ThreadPoolExecutor(int(sys.argv[2])) as pool:
    for name, rc, text in pool.map(check, entries):
        print(("ok    " if rc == 0 and not text else "ERROR ") + name, flush=True)
        if rc != 0 or text:
            failed += 1
            print(text)
print(f"clang -Werror -fsyntax-only: {len(entries) - failed} files clean, {failed} with diagnostics")
sys.exit(1 if failed or not entries else 0)
EOF
}

SUMMARY=()
stage=
# (stdout: a failing stage exits while its stderr goes to the .time file below)
trap 'rc=$?; [ "$rc" -eq 0 ] || echo "sanitize: stage ${stage:-?} FAILED (exit $rc)"' EXIT
for stage in $STAGES; do
  case $stage in
    asan | tsan | fuzz | clang) ;;
    *) echo "sanitize: unknown stage '$stage' (asan, tsan, fuzz, clang)" >&2; exit 2 ;;
  esac
  echo "sanitize: ---- stage $stage"
  # `time` on the stage: wall time and the CPU time of everything it ran.
  TIMEFORMAT="%R %U %S"
  { time "stage_$stage" 2>&1; } 2>"$DIR/$stage.time"
  read -r wall user sys <"$DIR/$stage.time"
  SUMMARY+=("$(awk -v s="$stage" -v w="$wall" -v u="$user" -v k="$sys" \
    'BEGIN { printf "%-6s wall %5.0f s, CPU %5.0f s", s, w, u + k }')")
  echo "sanitize: stage $stage passed (${SUMMARY[-1]#* })"
done

printf '  %s\n' "${SUMMARY[@]}"
echo "sanitize: ${#SUMMARY[@]} passed, 0 failed"
