#!/usr/bin/env python3
"""Draws the examples' results.

    scripts/plots.py [--recall recall.csv] [--bench run.json] [--d 64] [--out-dir docs]

--recall  the CSV written by examples/recall.cpp (build/examples/recall --csv=recall.csv):
          mean cosine and exact recall against the number of stored pairs N, one line per
          memory, into <out-dir>/recall.png.
--bench   the Google Benchmark JSON of a layers_bench run
          (build/bench/layers_bench --benchmark_format=json > run.json; any suite, e.g.
          --suite=quick with a --benchmark_filter): tokens/s against T, one panel per form, one
          line per layer, log-log, for the one-head float cases of width --d, into
          <out-dir>/throughput.png.

Needs only matplotlib (Debian: `bash scripts/install-deps.sh --plots`, which installs it for
/usr/bin/python3; run the script with that interpreter if another python3 comes first on PATH).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import sys
from collections import defaultdict

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plots.py: needs matplotlib (Debian: bash scripts/install-deps.sh --plots, then "
             "/usr/bin/python3 scripts/plots.py ...)")

FORMS = ["recurrent", "parallel", "chunkwise"]
# BM_<layer>/<form>/T:<T>/d:<d>[/f64][/heads:<H>/threads:<n>] (bench/layers_bench.cpp)
CASE_RE = re.compile(r"^BM_(?P<layer>\w+)/(?P<form>recurrent|parallel|chunkwise)/(?P<rest>.*)$")


def read_recall(path: str) -> dict[str, list[tuple[int, float, float]]]:
    """memory -> [(N, mean cosine, exact recall)], in file order."""
    rows: dict[str, list[tuple[int, float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["memory"], []).append(
                (int(r["N"]), float(r["mean_cosine"]), float(r["exact_recall"])))
    return rows


def plot_recall(csv_path: str, png_path: str) -> None:
    rows = read_recall(csv_path)
    fig, (ax_cos, ax_rec) = plt.subplots(1, 2, figsize=(13, 5.5), sharex=True)
    colors = plt.get_cmap("tab10")
    markers = "osD^vP*Xh<>"
    learned = 0
    for memory, points in rows.items():
        points.sort()
        n = [p[0] for p in points]
        if memory.startswith("softmax"):  # the references: grey dashes
            style = dict(color="0.2" if "ceiling" in memory else "0.6", linestyle="--",
                         marker=".", linewidth=1.4)
        else:  # memories that coincide (examples/unified.cpp) share a line: markers tell them apart
            style = dict(color=colors(learned % 10), marker=markers[learned % len(markers)],
                         markersize=5 if learned < 10 else 7, linewidth=1.4, fillstyle="none"
                         if learned >= 10 else "full")
            learned += 1
        ax_cos.plot(n, [p[1] for p in points], label=memory, **style)
        ax_rec.plot(n, [100 * p[2] for p in points], **style)
    for ax, title, unit in ((ax_cos, "mean cosine(read-out, stored value)", ""),
                            (ax_rec, "exact recall (nearest stored value is right)", " %")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p[0] for points in rows.values() for p in points}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("stored pairs N (d = 64)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if unit:
            ax.set_ylim(-2, 102)
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Memory capacity (examples/recall.cpp)")
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    print(f"wrote {png_path}")


def read_bench(path: str, d: int) -> dict[tuple[str, str], dict[int, float]]:
    """(layer, form) -> {T: tokens/s} for the one-head float cases of width d (the median over
    repetitions when the run has them)."""
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    samples: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    medians: dict[tuple[str, str, int], float] = {}
    for b in run.get("benchmarks", []):
        if b.get("error_occurred") or "tokens/s" not in b:
            continue
        m = CASE_RE.match(b.get("run_name", b["name"]))
        if not m:
            continue
        parts = dict(p.partition(":")[::2] for p in m["rest"].split("/"))
        if "f64" in parts or "heads" in parts or int(parts.get("d", -1)) != d or "T" not in parts:
            continue
        key = (m["layer"], m["form"], int(parts["T"]))
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[key] = float(b["tokens/s"])
        else:
            samples[key].append(float(b["tokens/s"]))
    rates: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for key in set(samples) | set(medians):
        layer, form, T = key
        rates[(layer, form)][T] = medians.get(key, statistics.median(samples.get(key, [0.0])))
    return rates


def plot_throughput(json_path: str, png_path: str, d: int) -> None:
    rates = read_bench(json_path, d)
    if not rates:
        sys.exit(f"plots.py: {json_path} has no one-head float cases BM_<layer>/<form>/T:*/d:{d}")
    layers = sorted({layer for layer, _ in rates})
    colors, markers = plt.get_cmap("tab10"), "osD^vP*Xh<>"
    style = {layer: dict(color=colors(i % 10), marker=markers[i % len(markers)])
             for i, layer in enumerate(layers)}
    sizes = sorted({t for points in rates.values() for t in points})
    forms = [f for f in FORMS if any(form == f for _, form in rates)]
    fig, axes = plt.subplots(1, len(forms), figsize=(5.2 * len(forms), 5), sharey=True,
                             squeeze=False)
    for ax, form in zip(axes[0], forms):
        for layer in layers:
            points = sorted(rates.get((layer, form), {}).items())
            if points:
                ax.plot([t for t, _ in points], [r for _, r in points], markersize=4.5,
                        label=layer, **style[layer])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("tokens per call T")
        ax.set_title(f"{form} form")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"tokens/s (one head, d = {d}, float)")
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8,
               frameon=False)
    with open(json_path, encoding="utf-8") as f:
        context = json.load(f).get("context", {})
    suite = f", suite {context['seqmem_suite']}" if "seqmem_suite" in context else ""
    fig.suptitle(f"Throughput (layers_bench{suite}, {context.get('num_cpus', '?')} CPUs)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    print(f"wrote {png_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recall", help="CSV of examples/recall.cpp")
    parser.add_argument("--bench", help="Google Benchmark JSON of layers_bench")
    parser.add_argument("--d", type=int, default=64, help="head width of the throughput plot")
    parser.add_argument("--out-dir", default="docs", help="where the PNGs go (default docs)")
    args = parser.parse_args()
    if not args.recall and not args.bench:
        parser.error("give --recall CSV and/or --bench JSON")
    os.makedirs(args.out_dir, exist_ok=True)
    if args.recall:
        plot_recall(args.recall, os.path.join(args.out_dir, "recall.png"))
    if args.bench:
        plot_throughput(args.bench, os.path.join(args.out_dir, "throughput.png"), args.d)


if __name__ == "__main__":
    main()
