#!/usr/bin/env python3
"""Renders a layers_bench run into PNG plots, a CSV and a Markdown report.

    report.py --json run.json [--memory softmax_memory.jsonl] [--guard-json guard.json]
              --out-dir docs/benchmarks --md docs/benchmarks.md [--title ...]
              [--build-flags ...]   (how it was compiled; default: -march=native, as bench.sh)
    report.py --from-x-only --json run.json [--json ...]   (prints the layers-from-x tables)

Inputs: the Google Benchmark JSON of `layers_bench` (any suite), the JSON lines written by
`softmax_memory`, and optionally the JSON of a `layers_bench --suite=guard` run (evaluated with
the checks of ratio_guard.py). Outputs: tokens_vs_T.png, decode_latency.png,
useful_gflops.png, results.csv (one row per case) in --out-dir, and the Markdown report.
Cells that the run did not measure are shown as "—". stdlib + matplotlib only.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field

LAYERS = [  # (bench name, display name)
    ("linear_attention_gated", "linear attention (gated)"),
    ("softmax_attention", "softmax attention"),
    ("delta_net", "DeltaNet"),
    ("gated_delta_net", "gated DeltaNet"),
    ("ttt_linear", "TTT-Linear"),
    ("ttt_mlp", "TTT-MLP"),
    ("titans_L1", "Titans L=1"),
    ("titans_L2", "Titans L=2"),
    ("gla", "GLA"),
    ("kda", "KDA"),
    ("generalized_delta_rule", "generalized delta rule"),
]
DISPLAY = dict(LAYERS)
FORMS = ["recurrent", "parallel", "chunkwise"]
TOKENS = [16, 256, 1024, 4096, 16384]
DASH = "—"
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass
class Case:
    name: str
    kind: str  # "layer", "decode", "gemm", "product" or "scaling" (run_thread_scaling)
    layer: str = ""
    form: str = ""
    T: int = 0
    d: int = 0
    f64: bool = False
    heads: int = 1
    threads: int = 0  # 0: one head, layer.forward directly
    n: int = 0  # gemm size
    values: dict = field(default_factory=dict)  # counter/time -> value
    cv: float | None = None  # coefficient of variation of the time over repetitions
    reps: int = 1
    time_unit: str = ""


NAME_RE = re.compile(r"^BM_(?P<layer>[A-Za-z0-9_]+)/(?P<form>recurrent|parallel|chunkwise|decode)/(?P<rest>.*)$")
GEMM_RE = re.compile(r"^BM_eigen_gemm(?P<f64>_f64)?/(?P<n>\d+)$")
PRODUCT_RE = re.compile(r"^BM_(?P<which>eigen|engine)_product/(?P<shape>\d+x\d+x\d+)$")


def parse_name(name: str) -> Case | None:
    m = GEMM_RE.match(name)
    if m:
        return Case(name, "gemm", n=int(m["n"]), f64=bool(m["f64"]))
    m = PRODUCT_RE.match(name)
    if m:  # the engine's skinny products: layer = eigen|engine, form = the m×k×n shape
        return Case(name, "product", layer=m["which"], form=m["shape"])
    m = NAME_RE.match(name)
    if not m:
        return None
    case = Case(name, "decode" if m["form"] == "decode" else "layer", layer=m["layer"],
                form=m["form"])
    for part in m["rest"].split("/"):
        key, _, value = part.partition(":")
        if key in ("T", "ctx"):
            case.T = int(value)
        elif key == "d":
            case.d = int(value)
        elif key == "heads":
            case.heads = int(value)
        elif key == "threads":
            case.threads = int(value)
        elif key == "f64":
            case.f64 = True
        elif key == "scaling":
            case.kind = "scaling"
    return case


VALUE_KEYS = ["tokens/s", "head_tokens/s", "GFLOP/s", "useful_GFLOP/s", "us/token",
              "us/head_token", "real_time", "cpu_time", "multihead_speedup",
              "independent_speedup", "multihead_1t_ms", "multihead_2t_ms", "independent_1t_ms",
              "independent_2t_ms"]


def load_cases(path: str) -> tuple[dict, dict[str, Case]]:
    """Median over repetitions (the `median` aggregate when present, else computed)."""
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    iterations: dict[str, list[dict]] = defaultdict(list)
    aggregates: dict[str, dict[str, dict]] = defaultdict(dict)
    for b in run["benchmarks"]:
        if b.get("error_occurred"):
            continue
        name = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate":
            aggregates[name][b.get("aggregate_name", "")] = b
        else:
            iterations[name].append(b)
    cases: dict[str, Case] = {}
    for name in list(iterations) + [n for n in aggregates if n not in iterations]:
        case = parse_name(name)
        if case is None:
            continue
        med = aggregates[name].get("median")
        runs = iterations.get(name, [])
        source = med if med is not None else (runs[0] if runs else None)
        if source is None:
            continue
        case.time_unit = source.get("time_unit", "")
        for key in VALUE_KEYS:
            if med is not None and key in med:
                case.values[key] = float(med[key])
            elif runs and key in runs[0]:
                case.values[key] = statistics.median(float(r[key]) for r in runs)
        cv = aggregates[name].get("cv")
        if cv is not None:
            timed = "cpu_time" if case.threads == 0 and case.kind == "layer" else "real_time"
            case.cv = float(cv.get(timed, 0.0))
        elif len(runs) > 1:
            times = [float(r["cpu_time"]) for r in runs]
            case.cv = statistics.pstdev(times) / statistics.mean(times)
        case.reps = max(len(runs), int(med.get("repetitions", 1)) if med else 1)
        cases[name] = case
    return run.get("context", {}), cases


class Index:
    """Lookups into the parsed cases."""

    def __init__(self, cases: dict[str, Case]):
        self.cases = cases
        self.layer = {}
        self.decode = {}
        self.gemm = {}
        self.product = {}
        self.scaling = {}
        for c in cases.values():
            if c.kind == "layer":
                self.layer[(c.layer, c.form, c.T, c.d, c.f64, c.heads, c.threads)] = c
            elif c.kind == "decode":
                self.decode[(c.layer, c.d, c.heads)] = c
            elif c.kind == "scaling":
                self.scaling[(c.layer, c.d)] = c
            elif c.kind == "product":
                self.product[(c.layer, c.form)] = c.values.get("GFLOP/s")
            else:
                self.gemm[(c.n, c.f64)] = c

    def get(self, layer, form, T, d, key="tokens/s", f64=False, heads=1, threads=0):
        c = self.layer.get((layer, form, T, d, f64, heads, threads))
        return None if c is None else c.values.get(key)

    def cpu_rate(self, layer, form, T, d, heads=1, threads=0):
        """head-tokens per CPU second (multi-head cases: the process's CPU time)."""
        c = self.layer.get((layer, form, T, d, False, heads, threads))
        if c is None or "cpu_time" not in c.values:
            return None
        seconds = c.values["cpu_time"] * TIME_UNITS.get(c.time_unit, 1.0)
        return T * heads / seconds if seconds > 0 else None

    def gemm_rate(self, n=128, f64=False):
        c = self.gemm.get((n, f64))
        return None if c is None else c.values.get("GFLOP/s")

    def dims(self):
        return sorted({c.d for c in self.cases.values() if c.kind == "layer" and not c.f64})


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------

def fmt_rate(x):
    if x is None:
        return DASH
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def fmt(x, digits=3, suffix=""):
    if x is None:
        return DASH
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}{suffix}"
    return f"{x:.{digits}g}{suffix}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def pct(a, b):
    r = ratio(a, b)
    return DASH if r is None else f"{100 * r:.0f}%"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------------------------

def lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    info = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def machine_rows(context: dict, args) -> list[list[str]]:
    cpu = lscpu()
    model = cpu.get("Model name", DASH)
    cores = cpu.get("CPU(s)", str(context.get("num_cpus", DASH)))
    per_core = cpu.get("Thread(s) per core", "?")
    sockets = cpu.get("Socket(s)", "?")
    per_socket = cpu.get("Core(s) per socket", "?")
    caches = ", ".join(f"{k.split()[0]} {cpu[k]}" for k in ("L1d cache", "L2 cache", "L3 cache")
                       if k in cpu)
    if not caches:  # lscpu of a VM may show none: ask getconf (the guest's view)
        try:
            conf = subprocess.run(["getconf", "-a"], check=True, capture_output=True,
                                  text=True).stdout
            sizes = dict(line.split(None, 1) for line in conf.splitlines()
                         if line.startswith("LEVEL") and len(line.split()) == 2)
            caches = ", ".join(
                f"{label} {int(sizes[key]) // 1024} KiB" for label, key in
                (("L1d", "LEVEL1_DCACHE_SIZE"), ("L2", "LEVEL2_CACHE_SIZE"),
                 ("L3", "LEVEL3_CACHE_SIZE")) if sizes.get(key, "0").isdigit()
                and int(sizes[key]) > 0)
            if caches:
                caches += " (getconf, as the guest reports them)"
        except (OSError, subprocess.CalledProcessError, ValueError):
            caches = ""
    if not caches and context.get("caches"):  # Google Benchmark's view (per core or shared)
        caches = ", ".join(
            f"L{c['level']}{'d' if c['type'] == 'Data' else 'i' if c['type'] == 'Instruction' else ''}"
            f" {c['size'] // 1024} KiB" + (f" (shared by {c['num_sharing']})"
                                          if c.get("num_sharing", 0) > 1 else "")
            for c in context["caches"])
    mhz = context.get("mhz_per_cpu")
    load = context.get("load_avg")
    rows = [
        ["CPU", f"{model} (lscpu), {cores} CPUs: {sockets} socket × {per_socket} cores × "
                f"{per_core} thread" + (f", {mhz} MHz" if mhz else "")],
        ["caches", caches or DASH],
        ["compiler", f"{context.get('compiler', DASH)}; {args.build_flags}"],
        ["Eigen", f"{context.get('eigen_version', DASH)}, SIMD in use: "
                  f"{context.get('eigen_simd', DASH)}; no Eigen threading (no OpenMP)"],
        ["seqmem", f"{context.get('seqmem_version', DASH)}, {context.get('seqmem_build', DASH)}"],
        ["TTT/Titans engine products", context.get("engine_products", "Eigen")],
        ["Google Benchmark", f"Debian package, library built as "
                             f"{context.get('library_build_type', '?')} (affects only the "
                             "harness's own bookkeeping, not the timed code)"],
        ["date", context.get("date", dt.datetime.now().isoformat(timespec="seconds"))],
        ["host load", "load average at start " + (", ".join(f"{x:.2f}" for x in load)
                                                  if load else DASH)
                      + " — the machine is shared: other processes competed for the cores"],
    ]
    if args.run_info:
        rows.append(["run", args.run_info])
    return rows


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------

FORM_COLORS = {"recurrent": "tab:blue", "parallel": "tab:red", "chunkwise": "tab:green"}
DIM_STYLES = {64: "-", 128: "--"}


def plot_tokens(idx: Index, path: str, plt) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5), sharex=True)
    for ax, (layer, title) in zip(axes.flat, LAYERS):
        for form in FORMS:
            for d in idx.dims():
                pts = [(T, idx.get(layer, form, T, d)) for T in TOKENS]
                pts = [(T, v) for T, v in pts if v is not None]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ax.plot(xs, ys, DIM_STYLES.get(d, ":"), color=FORM_COLORS[form], marker="o",
                        markersize=3.5, label=f"{form}, d={d}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs="auto"))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: fmt_rate(y)))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks([16, 256, 1024, 4096, 16384])
        ax.set_xticklabels(["16", "256", "1k", "4k", "16k"])
    for ax in axes[-1]:
        ax.set_xlabel("T (tokens per call)")
    for ax in axes[:, 0]:
        ax.set_ylabel("tokens/s (one head, float)")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=6, frameon=False)
    fig.suptitle("seqmem throughput per layer and form (log-log; higher is better). "
                 "Parallel stops at T=4096 (O(T²)), TTT/Titans parallel exists only at T≤16",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_decode(idx: Index, path: str, plt) -> None:
    variants = [(d, h) for d in (64, 128) for h in (1, 4)
                if any((layer, d, h) in idx.decode for layer, _ in LAYERS)]
    if not variants:
        return
    fig, ax = plt.subplots(figsize=(13, 5))
    width = 0.8 / len(variants)
    colors = {(64, 1): "tab:blue", (128, 1): "tab:orange", (64, 4): "lightsteelblue",
              (128, 4): "navajowhite"}
    for i, (d, h) in enumerate(variants):
        xs, ys = [], []
        for j, (layer, _) in enumerate(LAYERS):
            c = idx.decode.get((layer, d, h))
            if c and "us/head_token" in c.values:
                xs.append(j + (i - (len(variants) - 1) / 2) * width)
                ys.append(c.values["us/head_token"])
        label = f"d={d}, " + ("1 head" if h == 1 else f"{h} heads (per head-token)")
        bars = ax.bar(xs, ys, width, label=label, color=colors.get((d, h)), edgecolor="gray")
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
    ax.set_xticks(range(len(LAYERS)))
    ax.set_xticklabels([t for _, t in LAYERS], fontsize=9)
    ax.set_yscale("log")
    ax.set_ylabel("µs per decoded token (per head)")
    ax.set_title("Decode latency: one recurrent token on a state that has seen 4096 tokens "
                 "(lower is better)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_useful(idx: Index, path: str, plt, T=4096) -> None:
    dims = [d for d in idx.dims() if d in (64, 128)]
    if not dims:
        return
    fig, axes = plt.subplots(1, len(dims), figsize=(7 * len(dims), 4.8), squeeze=False)
    for ax, d in zip(axes[0], dims):
        for i, form in enumerate(FORMS):
            xs, ys = [], []
            for j, (layer, _) in enumerate(LAYERS):
                v = idx.get(layer, form, T, d, "useful_GFLOP/s")
                if v is not None:
                    xs.append(j + (i - 1) * 0.27)
                    ys.append(v)
            ax.bar(xs, ys, 0.27, label=form, color=FORM_COLORS[form])
        gemm = idx.gemm_rate(128)
        if gemm:
            ax.axhline(gemm, color="black", linestyle="--", linewidth=1,
                       label=f"Eigen GEMM 128 ({gemm:.0f})")
        ax.set_xticks(range(len(LAYERS)))
        ax.set_xticklabels([t for _, t in LAYERS], rotation=30, ha="right", fontsize=9)
        ax.set_yscale("log")
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom, top * 6)  # room for the legend above the bars
        ax.set_ylabel("useful GFLOP/s (recurrent FLOP count)")
        ax.set_title(f"T={T}, d={d}, one head, float")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=4, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

def load_memory(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        if not path or not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip().startswith("{")]
    return rows


def mib(kib):
    return None if kib is None else kib / 1024.0


def targets_section(idx: Index, memory: list[dict]) -> list[str]:
    out = ["## Measured targets", ""]
    gemm = idx.gemm_rate(128)
    out.append(f"Reference: Eigen float GEMM 128×128·128×128 in this run: "
               f"**{fmt(gemm)} GFLOP/s** (64: {fmt(idx.gemm_rate(64))}, "
               f"1024: {fmt(idx.gemm_rate(1024))}). One head, float, medians.")
    out.append("")

    # (a)
    rows = []
    for layer in ("linear_attention_gated", "delta_net", "gated_delta_net"):
        u = idx.get(layer, "chunkwise", 4096, 128, "useful_GFLOP/s")
        f = idx.get(layer, "chunkwise", 4096, 128, "GFLOP/s")
        rows.append([DISPLAY[layer], fmt(u), pct(u, gemm), fmt(f), pct(f, gemm)])
    out += ["**(a)** Chunkwise useful GFLOP/s at T=4096, d=128, as % of the same run's Eigen "
            "GEMM 128:", "",
            table(["layer", "useful GFLOP/s", "% of GEMM 128", "form GFLOP/s",
                   "% of GEMM 128"], rows), ""]

    # (b)
    rows = []
    for layer in ("ttt_linear", "ttt_mlp", "titans_L2"):
        c = idx.get(layer, "chunkwise", 4096, 64)
        r = idx.get(layer, "recurrent", 4096, 64)
        rows.append([DISPLAY[layer], fmt_rate(c), fmt_rate(r), fmt(ratio(c, r), 3, "×"),
                     fmt(idx.get(layer, "chunkwise", 4096, 64, "useful_GFLOP/s")),
                     fmt(idx.get(layer, "recurrent", 4096, 64, "useful_GFLOP/s")),
                     pct(idx.get(layer, "chunkwise", 4096, 64, "useful_GFLOP/s"), gemm)])
    out += ["**(b)** TTT / Titans at b=16, d=64, T=4096:", "",
            table(["layer", "chunkwise tok/s", "recurrent tok/s", "chunkwise / recurrent",
                   "chunkwise useful GFLOP/s", "recurrent useful GFLOP/s",
                   "chunkwise % of GEMM 128"], rows), ""]
    shapes = sorted({shape for _, shape in idx.product}, key=lambda s: [int(x) for x in s.split("x")])
    if shapes:
        rows = [[s, fmt(idx.product.get(("eigen", s))), fmt(idx.product.get(("engine", s)))]
                for s in shapes]
        out += ["The engine's skinny float products in this run (m×k·k×n, GFLOP/s): Eigen's "
                "product and the engine's `detail::multiply` (the backend in the Machine table):",
                "", table(["m×k×n", "Eigen", "engine"], rows), ""]

    # (c)
    t = idx.get("softmax_attention", "chunkwise", 4096, 128)
    c_gflops = None if t is None else t * 2 * 4096 * 128 * 1e-9
    out += [f"**(c)** Chunkwise softmax attention at T=4096, d=128, counting 2·T·d FLOP per "
            f"token: {fmt_rate(t)} tok/s × 2·4096·128 = **{fmt(c_gflops)} GFLOP/s** "
            f"({pct(c_gflops, gemm)} of GEMM 128); the form's own count (diagonal tiles "
            f"computed whole) gives {fmt(idx.get('softmax_attention', 'chunkwise', 4096, 128, 'GFLOP/s'))} "
            "GFLOP/s.", ""]

    # (d)
    rows = []
    for layer in ("linear_attention_gated", "delta_net", "gated_delta_net"):
        one = idx.decode.get((layer, 128, 1))
        four = idx.decode.get((layer, 128, 4))
        rows.append([DISPLAY[layer],
                     fmt(one.values.get("us/head_token") if one else None, 3, " µs"),
                     fmt(four.values.get("us/head_token") if four else None, 3, " µs"),
                     fmt(four.values.get("us/token") if four else None, 3, " µs")])
    out += ["**(d)** Decode step at d=128 (state has seen 4096 tokens), µs per head-token:", "",
            table(["layer", "1 head", "4 heads (MultiHead), per head-token",
                   "4 heads, per token (all heads)"], rows), ""]

    # (e)
    rows = []
    used = []
    for layer, title in LAYERS:
        for d in (64, 128):
            one = idx.get(layer, "chunkwise", 4096, d, heads=4, threads=1)
            two = idx.get(layer, "chunkwise", 4096, d, heads=4, threads=2)
            if one is None and two is None:
                continue
            cores = []
            for threads in (1, 2):
                cpu = idx.get(layer, "chunkwise", 4096, d, "cpu_time", heads=4, threads=threads)
                wall = idx.get(layer, "chunkwise", 4096, d, "real_time", heads=4,
                               threads=threads)
                cores.append(ratio(cpu, wall))
            cpu1 = idx.get(layer, "chunkwise", 4096, d, "cpu_time", heads=4, threads=1)
            cpu2 = idx.get(layer, "chunkwise", 4096, d, "cpu_time", heads=4, threads=2)
            used += [c for c in cores if c is not None]
            rows.append([title, d, fmt_rate(one), fmt_rate(two), f"**{fmt(ratio(two, one), 3, '×')}**",
                         fmt(cores[0], 2), fmt(cores[1], 2), fmt(ratio(cpu2, cpu1), 3, "×")])
    out += ["**(e)** 4 heads (seqmem::MultiHead), chunkwise, T=4096: wall-clock tokens/s (all "
            "heads) on 2 threads vs 1 thread (ideal 2×). \"cores used\" = the process's CPU "
            "time / wall time during the case: how much CPU the machine actually gave the "
            "benchmark; \"CPU 2t/1t\" = total CPU time of the 2-thread run / the 1-thread run "
            "(the work threading adds; 1× = none).", "",
            table(["layer", "d", "1 thread tok/s", "2 threads tok/s", "speedup (wall)",
                   "cores used, 1 thread", "cores used, 2 threads", "CPU 2t/1t"], rows), ""]
    if used and max(used) < 1.2:
        out += [f"**The 2-thread speedup could not be measured in this run**: the 2-thread runs "
                f"got at most {max(used):.2f} cores (other processes kept both cores busy; "
                "see the load average), so the wall-clock ratio only shows that threading did "
                "not cost extra work (CPU 2t/1t). On an idle 2-core machine 4 heads split 2 + 2 "
                "and the bound is 2×.", ""]

    out += scaling_section(idx)

    # (f)
    out += memory_section(memory, heading=False)

    # (g)
    out += diagonal_section(idx, gemm)
    return out


def scaling_section(idx: "Index") -> list[str]:
    """(e)'s speedups measured against what the machine allows (run_thread_scaling)."""
    rows = []
    for layer, title in LAYERS:
        for d in (64, 128):
            c = idx.scaling.get((layer, d))
            if c is None:
                continue
            v = c.values
            rows.append([title, d, fmt(v.get("multihead_1t_ms"), 3), fmt(v.get("multihead_2t_ms"), 3),
                         f"**{fmt(v.get('multihead_speedup'), 3, '×')}**",
                         fmt(v.get("independent_1t_ms"), 3), fmt(v.get("independent_2t_ms"), 3),
                         f"**{fmt(v.get('independent_speedup'), 3, '×')}**",
                         fmt(ratio(v.get("independent_2t_ms"), v.get("multihead_2t_ms")), 3, "×")])
    if not rows:
        return []
    return ["The same speedup against what this machine allows, measured interleaved in one "
            "process (`BM_<layer>/chunkwise/T:4096/d:<d>/heads:4/scaling`; each round times all "
            "four calls one after another, medians over the rounds, ms per call): MultiHead "
            "on 1 and 2 threads, and the same 4 head calls made directly by two threads that "
            "share nothing (2 heads each, each thread with its own copy of the inputs and its "
            "own output) vs the two halves one after another on one thread. The second "
            "speedup is the bound the machine sets for this work (its shared L3 and memory, and "
            "other load); the last column is MultiHead's 2-thread rate over that of the "
            "threads that share nothing (1× = MultiHead adds nothing).", "",
            table(["layer", "d", "MultiHead 1t", "MultiHead 2t", "MultiHead speedup",
                   "sharing nothing 1t", "sharing nothing 2t", "machine's speedup",
                   "MultiHead 2t ÷ sharing nothing 2t (rate)"], rows), ""]


def diagonal_section(idx: "Index", gemm) -> list[str]:
    """Issue 16's targets for the diagonal-gate layers (docs/math.md §7–§9)."""
    targets = {"gla": 40, "kda": 30, "generalized_delta_rule": 30}
    per_token = {"gla": 4, "kda": 6, "generalized_delta_rule": 8}  # recurrent FLOPs / (dk·dv)
    rows = []
    for layer, floor in targets.items():
        for d in (64, 128):
            one = idx.get(layer, "chunkwise", 4096, d, "useful_GFLOP/s")
            rate = idx.cpu_rate(layer, "chunkwise", 4096, d, heads=4, threads=1)
            four = None if rate is None else rate * per_token[layer] * d * d * 1e-9
            dec1 = idx.decode.get((layer, d, 1))
            dec4 = idx.decode.get((layer, d, 4))
            if one is None and four is None and dec1 is None:
                continue
            rows.append([DISPLAY[layer], d, fmt(one), pct(one, gemm), fmt(four), pct(four, gemm),
                         f"≥ {floor}%" if d == 128 else DASH,
                         fmt(dec1.values.get("us/head_token") if dec1 else None, 3, " µs"),
                         fmt(dec4.values.get("us/head_token") if dec4 else None, 3, " µs"),
                         "≤ 2 µs" if d == 128 else DASH])
    if not rows:
        return []
    return ["**(g)** Diagonal gates (docs/math.md §7–§9), T=4096: chunkwise useful GFLOP/s "
            "(one head; 4 heads through MultiHead on one thread, by the process's CPU time so "
            "that other load cancels out) as % of the same run's Eigen "
            "GEMM 128, and the decode step per head-token:", "",
            table(["layer", "d", "1 head useful GFLOP/s", "% GEMM", "4 heads useful GFLOP/s",
                   "% GEMM", "target (d=128)", "decode 1 head", "decode 4 heads",
                   "target (d=128)"], rows), ""]


def memory_section(memory: list[dict], heading=True) -> list[str]:
    out = ["## Softmax attention peak memory", ""] if heading else []
    if not memory:
        return out + ["**(f)** Peak memory: not measured in this run.", ""]
    rows = []
    by = {(m["form"], m["T"], m["d"]): m for m in memory}
    for m in memory:
        rows.append([m["form"], m["T"], m["d"], fmt(mib(m["baseline_kib"]), 4),
                     fmt(mib(m["peak_kib"]), 4), f"**{fmt(mib(m['delta_kib']), 4)}**",
                     fmt(mib(m["expected_workspace_kib"]), 4), fmt(m["seconds"], 3)])
    out += ["**(f)** Peak memory of one softmax-attention call from the initial state "
            "(`bench/softmax_memory`: one forked process per form; getrusage ru_maxrss before "
            "and after the call; MiB):", "",
            table(["form", "T", "d", "baseline (inputs + output)", "peak", "delta = call",
                   "score storage alone", "seconds"], rows), ""]
    notes = []
    for (form, T, d), m in sorted(by.items()):
        if form == "parallel" and ("chunkwise", T, d) in by:
            c = by[("chunkwise", T, d)]
            notes.append(f"T={T}, d={d}: parallel needs {fmt(mib(m['delta_kib']), 4)} MiB, "
                         f"chunkwise {fmt(mib(c['delta_kib']), 4)} MiB "
                         f"({fmt(ratio(m['delta_kib'], c['delta_kib']), 3)}× less)")
    if notes:
        out += ["- " + n for n in notes] + [""]
    out += ["The chunkwise delta is the call's O(T·d) part (the KV cache it appends, grown by "
            "doubling, and a scaled copy of q); the parallel form adds the T×T float score "
            "matrix (T=16384: 1 GiB).", ""]
    return out


def throughput_tables(idx: Index) -> list[str]:
    out = ["## Throughput: tokens/s, one head, float", "",
           "Medians. `par` = parallel; empty cells are excluded combinations (see below). "
           "Useful GFLOP/s (the recurrent form's FLOP count per second, the same numerator for "
           "all forms of a layer) and the forms' own GFLOP/s for every case are in "
           "`benchmarks/results.csv`.", ""]
    for d in idx.dims():
        header = ["layer"]
        cols = []
        for T in TOKENS:
            for form in FORMS:
                if any(idx.get(l, form, T, d) is not None for l, _ in LAYERS):
                    cols.append((T, form))
                    header.append(f"T={T} {form[:3] if form != 'parallel' else 'par'}")
        rows = [[title] + [fmt_rate(idx.get(layer, form, T, d)) for T, form in cols]
                for layer, title in LAYERS]
        out += [f"### d = {d}", "", table(header, rows), ""]
    return out


def ratio_tables(idx: Index) -> list[str]:
    gemm = idx.gemm_rate(128)
    out = ["## Key ratios", "",
           "Chunkwise / recurrent tokens/s at T=4096 (one head, float), and the best form's "
           "useful GFLOP/s as a share of the same run's Eigen GEMM 128 rate "
           f"({fmt(gemm)} GFLOP/s):", ""]
    rows = []
    for layer, title in LAYERS:
        row = [title]
        for d in (64, 128):
            c = idx.get(layer, "chunkwise", 4096, d)
            r = idx.get(layer, "recurrent", 4096, d)
            row.append(fmt(ratio(c, r), 3, "×"))
        for d in (64, 128):
            best = max((v for v in (idx.get(layer, f, 4096, d, "useful_GFLOP/s") for f in FORMS)
                        if v is not None), default=None)
            row += [fmt(best), pct(best, gemm)]
        rows.append(row)
    out += [table(["layer", "chunkwise/recurrent d=64", "chunkwise/recurrent d=128",
                   "best useful GFLOP/s d=64", "% GEMM", "best useful GFLOP/s d=128",
                   "% GEMM"], rows), ""]

    # multi-head
    rows = []
    for layer, title in LAYERS:
        for form in ("recurrent", "chunkwise"):
            row = [title, form]
            have = False
            for T in (1024, 4096):
                for d in (64, 128):
                    one = idx.get(layer, form, T, d, heads=4, threads=1)
                    two = idx.get(layer, form, T, d, heads=4, threads=2)
                    have |= one is not None
                    row.append(fmt(ratio(two, one), 3, "×"))
            if have:
                rows.append(row)
    if rows:
        out += ["4 heads (seqmem::MultiHead), 2 threads vs 1 thread, wall-clock tokens/s "
                "(ideal 2×; the machine was shared, see the load average above):", "",
                table(["layer", "form", "T=1024 d=64", "T=1024 d=128", "T=4096 d=64",
                       "T=4096 d=128"], rows), ""]
        rows = []
        for layer, title in LAYERS:
            for form in ("recurrent", "chunkwise"):
                row = [title, form]
                for d in (64, 128):
                    single = idx.cpu_rate(layer, form, 4096, d)
                    four = idx.cpu_rate(layer, form, 4096, d, heads=4, threads=1)
                    row += [fmt_rate(single), fmt_rate(four), fmt(ratio(four, single), 3, "×")]
                if row[2] != DASH or row[5] != DASH:
                    rows.append(row)
        if rows:
            out += ["Cost per head through MultiHead (one thread) vs one head called directly, "
                    "in head-tokens per CPU second (CPU time, so the machine's load cancels "
                    "out; T=4096; ideal 1×). The 4 heads' inputs are column slices of T×(4·d) "
                    "matrices (row stride 4·d); both write into an output allocated once (MultiHead "
                    "into the T×(4·d) one):", "",
                    table(["layer", "form", "d=64 direct", "d=64 MultiHead", "ratio",
                           "d=128 direct", "d=128 MultiHead", "ratio"], rows), ""]

    # double
    rows = []
    for layer, title in LAYERS:
        for form in FORMS:
            f32 = idx.get(layer, form, 4096, 64)
            f64 = idx.get(layer, form, 4096, 64, f64=True)
            if f64 is not None:
                rows.append([title, form, fmt_rate(f32), fmt_rate(f64), fmt(ratio(f32, f64), 3, "×")])
    if rows:
        gemm64 = idx.gemm_rate(128, f64=True)
        out += [f"double vs float, T=4096, d=64 (Eigen GEMM 128: float {fmt(gemm)}, double "
                f"{fmt(gemm64)} GFLOP/s):", "",
                table(["layer", "form", "float tok/s", "double tok/s", "float / double"], rows),
                ""]
    return out


def decode_table(idx: Index) -> list[str]:
    if not idx.decode:
        return []
    rows = []
    for layer, title in LAYERS:
        row = [title]
        for d in (64, 128):
            for h in (1, 4):
                c = idx.decode.get((layer, d, h))
                row.append(fmt(c.values.get("us/head_token") if c else None, 3))
            long_call = idx.get(layer, "recurrent", 4096, d)
            row.append(fmt(None if long_call is None else 1e6 / long_call, 3))
        rows.append(row)
    return ["## Decode latency", "",
            "One recurrent call of one token on a state that has already seen 4096 tokens "
            "(chunkwise prefill, not timed), µs per head-token; 16 consecutive steps are timed "
            "per iteration (one TTT/Titans mini-batch, so the end-of-mini-batch update is "
            "included once per 16 tokens) and the prefilled state is restored between "
            "iterations (not timed). Includes input validation (check_finite). 4 heads go "
            "through seqmem::MultiHead (on the calling thread: too few tokens for threads).",
            "",
            table(["layer", "d=64 1 head", "d=64 4 heads", "d=64 in a long call",
                   "d=128 1 head", "d=128 4 heads", "d=128 in a long call"], rows), "",
            "\"in a long call\": µs per token of the recurrent form inside one call of T=4096 "
            "(1 / tokens/s, one head; for softmax attention the average over contexts 0..4095, "
            "so not comparable). The difference to the decode step is work every call pays once "
            "(not broken down here): validation of the inputs and of the state (TTT and Titans "
            "check every weight matrix of the state for finiteness on each call), building "
            "views, small allocations; it is largest for the layers with the largest states.", ""]


def guard_section(guard_json: str | None, idx: Index) -> list[str]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import ratio_guard  # noqa: E402  (same directory)

    rates = {}
    reps = 0
    if guard_json and os.path.exists(guard_json):
        with open(guard_json, encoding="utf-8") as f:
            benchmarks = json.load(f)["benchmarks"]
        rates = ratio_guard.best_rates(benchmarks)
        counts = defaultdict(int)
        for b in benchmarks:
            if b.get("run_type") != "aggregate":
                counts[b.get("run_name", b["name"])] += 1
        reps = max(counts.values(), default=0)
    out = ["## Regression guard (`ctest -R bench.ratio_guard`)", "",
           "`bench/ratio_guard.py` runs `layers_bench --suite=guard` (23 small cases, "
           f"{' '.join(ratio_guard.GUARD_ARGS[1:])}; about 35 s here) and checks only ratios "
           "of tokens/s between cases of the same run, each case's best repetition, with wide "
           "margins; never absolute times. A failing check reruns the suite once and uses the "
           "best of both runs. \"this run\" below: the guard run made with this report"
           + (f" ({reps} repetitions per case)" if reps else "") + ".", ""]
    rows = []
    for c, r in ratio_guard.evaluate(rates, ratio_guard.CHECKS):
        status = DASH if r is None else ("pass" if r >= c.minimum else "**FAIL**")
        rows.append([c.name, f"≥ {c.minimum:g}", c.measured, fmt(r, 3), status, c.why])
    out += [table(["checked ratio", "threshold", "measured when chosen", "this run", "",
                   "why it holds"], rows), ""]
    rows = []
    for c, r in ratio_guard.evaluate_per_head(rates, ratio_guard.PER_HEAD_CHECKS):
        status = DASH if r is None else ("pass" if r <= c.maximum else "**FAIL**")
        rows.append([c.name, f"≤ {c.maximum:g}", c.measured, fmt(r, 3), status, c.why])
    out += ["Decode through `MultiHead` against one head called directly (time of H heads ÷ "
            "(H × time of one head)):", "",
            table(["checked ratio", "threshold", "measured when chosen", "this run", "",
                   "why it holds"], rows), ""]
    rows = []
    for c, r in ratio_guard.evaluate(rates, ratio_guard.REPORTED):
        rows.append([c.name, f"≥ {c.minimum:g}", c.measured, fmt(r, 3), c.why])
    d128 = ratio(idx.get("delta_net", "chunkwise", 4096, 128),
                 idx.get("delta_net", "recurrent", 4096, 128))
    out += ["Asked for by the issue but **not true on this machine**, so not checked:", "",
            table(["ratio", "asked", "measured when chosen", "this run", "why"], rows), "",
            f"(At d=128, T=4096 the full suite measured DeltaNet chunkwise / recurrent = "
            f"{fmt(d128, 3, '×')}.)", ""]
    return out


EXCLUSIONS = """## Excluded combinations

- **TTT-Linear, TTT-MLP, Titans parallel form for T > 16**: defined only within one
  mini-batch (b = 16); the layer throws. Their three forms are instead compared at T = 16.
- **Linear attention and (gated) DeltaNet parallel form for T > 4096**: one T×T block
  (O(T²) memory and time; DeltaNet's also a T×T triangular solve): 16384 would need a 1 GiB
  matrix per call and minutes per case while showing nothing chunkwise does not.
- **Softmax attention parallel form** is kept up to T = 16384 (for the memory comparison).
- Full suite: **double** only at T ∈ {1024, 4096}, d = 64; **4 heads** only for the recurrent
  and chunkwise forms at T ∈ {1024, 4096}; **decode** at context 4096 only. The quick suite
  (`--quick`) runs T ≤ 4096 (softmax parallel included), no double, 4 heads at T=4096, d=64.
"""


def write_csv(cases: dict[str, Case], path: str) -> None:
    cols = ["name", "kind", "layer", "form", "T", "d", "scalar", "heads", "threads",
            "tokens_per_s", "head_tokens_per_s", "GFLOP_per_s", "useful_GFLOP_per_s",
            "us_per_token", "us_per_head_token", "time", "time_unit", "time_kind", "cv",
            "repetitions"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for c in cases.values():
            v = c.values
            kind = ("manual" if c.kind in ("decode", "scaling") else "real" if c.threads else "cpu")
            time = v.get("real_time" if kind != "cpu" else "cpu_time")

            def g(key):
                x = v.get(key)
                return "" if x is None else f"{x:.6g}"

            w.writerow([c.name, c.kind, c.layer, c.form, c.T or "", c.d or c.n or "",
                        "double" if c.f64 else "float", c.heads, c.threads,
                        g("tokens/s"), g("head_tokens/s"), g("GFLOP/s"), g("useful_GFLOP/s"),
                        g("us/token"), g("us/head_token"),
                        "" if time is None else f"{time:.6g}", c.time_unit, kind,
                        "" if c.cv is None else f"{c.cv:.3f}", c.reps])


# ---------------------------------------------------------------------------------------------
# Layers from x (bench/layers_from_x.cpp): D = 1024, prefill and decode, with the share split
# ---------------------------------------------------------------------------------------------

FROM_X_RE = re.compile(r"^BM_from_x/(?P<layer>[A-Za-z0-9_]+)/(?P<kind>chunkwise|decode)/"
                       r"(?:T|ctx):(?P<T>\d+)/D:(?P<D>\d+)(?:/block:(?P<block>\d+))?")
FROM_X_KEYS = ["tokens/s", "us/token", "proj_us/token", "memory_us/token", "rest_us/token",
               "share_proj", "share_memory", "share_rest"]


def load_from_x(path: str) -> list[dict]:
    """The layers-from-x cases of a run: one dict per case (median over repetitions)."""
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    runs: dict[str, list[dict]] = defaultdict(list)
    medians: dict[str, dict] = {}
    for b in run["benchmarks"]:
        name = re.sub(r"/iterations:\d+|/manual_time", "", b.get("run_name", b["name"]))
        if b.get("error_occurred") or not FROM_X_RE.match(name):
            continue
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[name] = b
        else:
            runs[name].append(b)
    cases = []
    for name in list(dict.fromkeys(list(runs) + list(medians))):
        m = FROM_X_RE.match(name)
        case = {"name": name, "layer": m["layer"], "kind": m["kind"], "T": int(m["T"]),
                "D": int(m["D"]), "block": None if m["block"] is None else int(m["block"])}
        for key in FROM_X_KEYS:
            if name in medians and key in medians[name]:
                case[key] = float(medians[name][key])
            elif runs.get(name) and key in runs[name][0]:
                case[key] = statistics.median(float(r[key]) for r in runs[name])
        cases.append(case)
    return cases


def from_x_section(cases: list[dict], heading=True) -> list[str]:
    if not cases:
        return []
    out = ["## Layers from x (D = 1024)", ""] if heading else []
    out += ["Whole token mixers (`include/seqmem/models/`, random checkpoint), float, one thread; "
            "shapes, cases and method in the header of `bench/layers_from_x.cpp`. Each round "
            "times the layer, its projections alone (the same `pieces::Linear` maps) and its "
            "memory alone (the same heads), interleaved; rest = layer − projections − memory "
            "(convolutions, activations, gates, norms, checks, copies). Each part's fastest "
            "round, CPU time of the thread. Target: rest ≤ 15 % of the prefill time. Method, "
            "the glue fix and its before/after: "
            "[benchmarks/layers_from_x.md](benchmarks/layers_from_x.md).", ""]
    rows = []
    for c in cases:
        if c["block"] is not None:
            continue
        what = (f"prefill T={c['T']}" if c["kind"] == "chunkwise"
                else f"decode (ctx {c['T']})")
        rows.append([c["layer"], what, fmt_rate(c.get("tokens/s")), fmt(c.get("us/token")),
                     fmt(c.get("proj_us/token")), fmt(c.get("memory_us/token")),
                     fmt(c.get("rest_us/token")), pct(c.get("share_proj"), 1),
                     pct(c.get("share_memory"), 1), pct(c.get("share_rest"), 1)])
    if rows:
        out += [table(["layer", "case", "tokens/s", "µs/token", "projections µs/token",
                       "memory µs/token", "rest µs/token", "projections", "memory", "rest"],
                      rows), ""]
    sweep = [c for c in cases if c["block"] is not None]
    if sweep:
        out += ["Prefill over the row-block size (`--suite=layer_blocks`; 0 = one block of "
                "all T rows):", "",
                table(["layer", "block_size", "tokens/s", "µs/token", "rest µs/token", "rest"],
                      [[c["layer"], c["block"], fmt_rate(c.get("tokens/s")),
                        fmt(c.get("us/token")), fmt(c.get("rest_us/token")),
                        pct(c.get("share_rest"), 1)] for c in sweep]), ""]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", required=True, help="layers_bench --benchmark_out JSON")
    p.add_argument("--memory", action="append", default=[], help="softmax_memory output")
    p.add_argument("--guard-json", help="JSON of a layers_bench --suite=guard run")
    p.add_argument("--out-dir", required=True, help="where PNGs and results.csv go")
    p.add_argument("--md", required=True, help="Markdown report to write")
    p.add_argument("--title", default="Benchmarks")
    p.add_argument("--run-info", default="", help="one line: how the run was made")
    p.add_argument("--build-flags", default="CMake Release (-O3 -DNDEBUG) -march=native "
                   "(SEQMEM_NATIVE)", help="how the benchmarks were compiled (table Machine)")
    p.add_argument("--form-ratio", help="output of bench/form_ratio (TTT/Titans, interleaved)")
    if "--from-x-only" in sys.argv:  # print just the layers-from-x tables of a run
        q = argparse.ArgumentParser()
        q.add_argument("--from-x-only", action="store_true")
        q.add_argument("--json", required=True, action="append")
        only = q.parse_args()
        cases = [c for path in only.json for c in load_from_x(path)]
        print("\n".join(from_x_section(cases, heading=False)))
        return 0
    if "--diagonal-only" in sys.argv:  # print just table (g) of a --suite=diagonal run
        q = argparse.ArgumentParser()
        q.add_argument("--diagonal-only", action="store_true")
        q.add_argument("--json", required=True)
        only = q.parse_args()
        _, cases = load_cases(only.json)
        idx = Index(cases)
        print("\n".join(diagonal_section(idx, idx.gemm_rate(128))))
        return 0
    args = p.parse_args()

    context, cases = load_cases(args.json)
    idx = Index(cases)
    memory = load_memory(args.memory)
    os.makedirs(args.out_dir, exist_ok=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_tokens(idx, os.path.join(args.out_dir, "tokens_vs_T.png"), plt)
    plot_decode(idx, os.path.join(args.out_dir, "decode_latency.png"), plt)
    plot_useful(idx, os.path.join(args.out_dir, "useful_gflops.png"), plt)
    write_csv(cases, os.path.join(args.out_dir, "results.csv"))

    rel = os.path.relpath(args.out_dir, os.path.dirname(os.path.abspath(args.md)))
    md = [f"# {args.title}", "",
          "Generated by `scripts/bench.sh` (`bench/layers_bench`, `bench/softmax_memory`, "
          "`bench/report.py`); every number below comes from one run on the machine described "
          "here. Absolute rates depend on the machine and its load; compare rates of the same "
          f"run. All cases: `{rel}/results.csv`.", "",
          "## Machine", "", table(["", ""], machine_rows(context, args)), ""]
    md += targets_section(idx, memory)
    if args.form_ratio:
        with open(args.form_ratio, encoding="utf-8") as f:
            lines = f.read().rstrip("\n")
        md += ["**(b')** The same TTT/Titans comparison with the two forms' calls alternating "
               "(`bench/form_ratio`, run after the suite; a change of machine load hits both "
               "forms alike, so these ratios are the ones to quote):", "",
               "```", lines, "```", ""]
    md += ["## Plots", "",
           f"![tokens/s vs T]({rel}/tokens_vs_T.png)", "",
           f"![decode latency]({rel}/decode_latency.png)", "",
           f"![useful GFLOP/s]({rel}/useful_gflops.png)", ""]
    md += ratio_tables(idx)
    md += decode_table(idx)
    md += from_x_section(load_from_x(args.json))
    md += throughput_tables(idx)
    md += memory_section(memory) if memory else []
    md += guard_section(args.guard_json, idx)
    md += [EXCLUSIONS,
           "## Counters and method", "",
           "- `tokens/s`: tokens of the call per second (4 heads: the sequence's tokens, all "
           "heads together; `head_tokens/s` = tokens × heads).",
           "- `GFLOP/s`: the analytic FLOP count of the algorithm the form runs (masked work "
           "that is computed is counted) per second; the formula is in a comment beside each "
           "case's `flops()` in `bench/layers_bench.cpp`. `useful_GFLOP/s`: the recurrent "
           "form's count for the same call, so all forms of a layer share one numerator.",
           "- One head: CPU time of the benchmark thread. 4 heads: wall-clock time (their work "
           "runs on several threads). Decode: only the decode steps are timed.",
           "- Every call starts from the initial state (allocating it is timed: part of a real "
           "call); inputs are fixed random data (seeded), keys L2-normalized for DeltaNet and "
           "Titans.", ""]
    with open(args.md, "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    print(f"report.py: wrote {args.md} and {args.out_dir}/{{tokens_vs_T,decode_latency,"
          "useful_gflops}.png, results.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
