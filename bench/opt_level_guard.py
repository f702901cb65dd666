#!/usr/bin/env python3
"""Guard against build cliffs (issue 17): one program built two ways, time ratio per case.

bench/opt_level_guard.cpp is compiled twice, and this script compares the two builds:

  --o2/--o3          at -O2 (opt_level_guard_o2) and at -O3 (opt_level_guard_o3): -O2 time /
                     -O3 time (ctest bench.ratio_guard.opt_level);
  --eigen/--libxsmm  without -march, as a consumer's Release build is, on Eigen alone
                     (backend_guard_eigen) and on libxsmm (backend_guard_libxsmm): libxsmm time /
                     Eigen time (ctest bench.ratio_guard.backend). It caught libxsmm's AVX-512
                     kernels leaving the upper vector state dirty, which made the SSE code after
                     them 4-6x slower (decode 5x).

It runs the two alternately (base, test, base, test, ...), keeps each case's best time per
program over all rounds (interference from other processes only slows a run down) and fails
when a case's ratio exceeds its limit (CASES). Only ratios of the same machine at the same time
are checked, never absolute times. If a check fails, more rounds are run and the best of all is
used, so only a cliff that shows up every time fails.

    opt_level_guard.py --o2 build/bench/opt_level_guard_o2 --o3 build/bench/opt_level_guard_o3
    opt_level_guard.py --eigen build/bench/backend_guard_eigen \
                       --libxsmm build/bench/backend_guard_libxsmm

Limit: the program is one small translation unit. It catches loops that GCC vectorizes only
at -O3 (TTT's lazyProduct outer product, Eigen's triangular solve), but not a cliff that comes
from -O2's smaller inlining budget in a LARGE translation unit: layers_bench (one large TU)
measures gated linear attention and gated DeltaNet decode at about 2x at -O2 (Eigen's row
assignment left out of line in detail::decay_and_write_rows), this program about 1.0x.

Registered as the ctest cases above (bench/CMakeLists.txt). stdlib only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

# Per mode and case: the largest ratio accepted, and what was measured (the reference machine:
# 2-core AMD EPYC VM shared with other jobs, load average 3-5; best of 2-4 rounds). The issue's
# target is 1.25; MAX_RATIO is wider so that a busy machine cannot fail it.
MAX_RATIO = 1.6
CASES: dict[str, dict[str, tuple[float, str]]] = {
    "opt_level": {
        # Fixed (detail/inner_model.hpp, the primal forms' rank-1 updates): 2.4-3.2 before.
        "ttt_linear/recurrent/T:256/d:64": (MAX_RATIO, "0.82-0.91 (before the fix: 2.4-3.2)"),
        "titans_L2/recurrent/T:256/d:64": (MAX_RATIO, "1.01-1.03"),
        # Fixed: Eigen's triangular solve ran its inner loop unvectorized at -O2; the WY solves
        # are now detail::solve_unit_lower_in_place (row GEMVs). 1.36-1.49 before.
        "gated_delta_net/chunkwise/T:1024/d:64": (MAX_RATIO, "1.08 (before the fix: 1.36-1.49)"),
        "gated_delta_net/decode/d:128": (MAX_RATIO, "0.98-1.25, 1.00"),
        "linear_attention_gated/decode/d:128": (MAX_RATIO, "0.99-1.30, 0.99"),
        # Fixed: the row update pass (detail::decay_and_write_rows) is flattened; 1.58-2.04
        # before.
        "generalized_delta_rule/decode/d:128": (MAX_RATIO, "0.99 (before the fix: 1.58-2.04)"),
        # Fixed: the diagonal gates' decay exponents (double -> float, no vectorized Eigen cast
        # with AVX) and β scaling (row-major colwise) ran as scalar loops at -O2; 1.3-1.45 before.
        "kda/chunkwise/T:1024/d:64": (MAX_RATIO, "1.02-1.03 (before the fix: 1.40)"),
    },
    # Fixed (detail/matmul.hpp, clear_upper_vector_state): before, 4.7-6.2 on every case but the
    # chunkwise one (0.84), decode included.
    "backend": {
        "ttt_linear/recurrent/T:256/d:64": (MAX_RATIO, "0.99-1.05 (before the fix: 5.1)"),
        "titans_L2/recurrent/T:256/d:64": (MAX_RATIO, "0.99-1.00 (before the fix: 5.2)"),
        "gated_delta_net/chunkwise/T:1024/d:64": (MAX_RATIO, "0.34-0.35"),
        "gated_delta_net/decode/d:128": (MAX_RATIO, "0.94-0.95 (before the fix: 5.5)"),
        # Where the allocator put the state no longer matters (RowSplit in detail/row_kernels.hpp):
        # before, a state not 64-byte aligned made the pass 1.5x slower, so this ratio read up
        # to 1.34 with nothing wrong and had a limit of 2.0.
        "linear_attention_gated/decode/d:128": (MAX_RATIO, "1.02 (before the fix: 4.6)"),
        "generalized_delta_rule/decode/d:128": (MAX_RATIO, "0.92-0.99 (before the fix: 5.5)"),
        "kda/chunkwise/T:1024/d:64": (MAX_RATIO, "0.64"),
    },
}
MODES = {  # mode: (base label, test label, what the ratio is)
    "opt_level": ("O3", "O2", "-O2 time / -O3 time"),
    "backend": ("Eigen", "libxsmm", "libxsmm time / Eigen time (no -march)"),
}


def limit(mode: str, name: str) -> float:
    return CASES[mode].get(name, (MAX_RATIO, ""))[0]


def run(program: str, extra: list[str]) -> dict[str, float]:
    """ns per token per case from one run of one program."""
    out = subprocess.run([program, *extra], check=True, capture_output=True, text=True).stdout
    times: dict[str, float] = {}
    for line in out.splitlines():
        name, _, value = line.rpartition(" ")
        if name:
            times[name] = float(value)
    return times


def rounds(programs: dict[str, str], count: int, extra: list[str],
           best: dict[str, dict[str, float]]) -> None:
    for _ in range(count):
        for label, program in programs.items():
            for name, t in run(program, extra).items():
                best[label][name] = min(best[label].get(name, float("inf")), t)


def ratios(best: dict[str, dict[str, float]], base: str, test: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in best[base].keys() | best[test].keys():
        b, t = best[base].get(name), best[test].get(name)
        out[name] = t / b if b and t else None
    return out


def failures(mode: str, r: dict[str, float | None]) -> list[str]:
    return sorted(n for n, v in r.items() if v is None or v > limit(mode, n))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--o2", help="path of opt_level_guard_o2")
    parser.add_argument("--o3", help="path of opt_level_guard_o3")
    parser.add_argument("--eigen", help="path of backend_guard_eigen")
    parser.add_argument("--libxsmm", help="path of backend_guard_libxsmm")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs (default 2)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args()
    if args.o2 and args.o3 and not (args.eigen or args.libxsmm):
        mode, paths = "opt_level", (args.o3, args.o2)
    elif args.eigen and args.libxsmm and not (args.o2 or args.o3):
        mode, paths = "backend", (args.eigen, args.libxsmm)
    else:
        parser.error("give either --o2 and --o3, or --eigen and --libxsmm")
    base, test, what = MODES[mode]
    programs = {base: paths[0], test: paths[1]}
    extra = [f"--repetitions={args.repetitions}", f"--min-time={args.min_time}"]

    best: dict[str, dict[str, float]] = {base: {}, test: {}}
    print(f"running {paths[0]} and {paths[1]} alternately, {args.rounds} rounds", flush=True)
    rounds(programs, args.rounds, extra, best)
    if failures(mode, ratios(best, base, test)):
        print("a ratio is above the margin; running 2 more rounds", flush=True)
        rounds(programs, 2, extra, best)
    r = ratios(best, base, test)

    print(f"{what} (best ns/token of each):")
    for name in sorted(r):
        b, t, v = best[base].get(name), best[test].get(name), r[name]
        shown = "missing" if v is None else f"{v:5.2f}"
        measured = CASES[mode].get(name, (0, ""))[1]
        print(f"  {shown}  (<= {limit(mode, name):g}{', measured ' + measured if measured else ''})"
              f"  {name}  ({base} {b or 0:.1f} ns, {test} {t or 0:.1f} ns)")
    failed = failures(mode, r)
    if failed:
        print(f"FAILED ({test} cliff): " + "; ".join(failed))
        return 1
    print(f"no {test} cliff")
    return 0


if __name__ == "__main__":
    sys.exit(main())
