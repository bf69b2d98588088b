"""Benchmark results → ``results.csv``, ``results.md`` and ``results.png``.

    rows = report.load_results("workdirs/demo/results.jsonl")
    table = report.aggregate(rows)      # one row per (dataset, variant, shots): mean ± std over seeds
    report.write_all(rows, "workdirs/demo")

A result row is a dict with at least ``dataset``, ``variant``, ``shots`` (int, or "all"), ``seed``,
``accuracy`` (test top-1, 0..1) and ``wall_s``.
"""

from __future__ import annotations

from collections import defaultdict
import csv
import math
import os
from typing import Iterable

import numpy as np

from jtransfer.train import writers


def load_results(path: str) -> list[dict]:
  """The rows of ``results.jsonl`` (none when it does not exist yet)."""
  return writers.read_jsonl(path) if os.path.exists(path) else []


def _shots_key(shots):
  return math.inf if shots == "all" else int(shots)


def aggregate(rows: Iterable[dict]) -> list[dict]:
  """Mean and sample std over seeds of accuracy and wall time, per (dataset, variant, shots)."""
  cells = defaultdict(list)
  for r in rows:
    cells[(r["dataset"], r["variant"], r["shots"])].append(r)
  out = []
  for (dataset, variant, shots), rs in cells.items():
    acc = np.array([r["accuracy"] for r in rs]) * 100
    wall = np.array([r["wall_s"] for r in rs])
    out.append({"dataset": dataset, "variant": variant, "shots": shots, "seeds": len(rs),
                "acc_mean": float(acc.mean()), "acc_std": float(acc.std(ddof=1)) if len(rs) > 1 else 0.0,
                "wall_s_mean": float(wall.mean())})
  return sorted(out, key=lambda r: (r["dataset"], r["variant"], _shots_key(r["shots"])))


def write_csv(table: list[dict], path: str) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["dataset"])
    w.writeheader()
    w.writerows(table)


def markdown(table: list[dict], variant_order: list[str] | None = None) -> str:
  """One table per dataset: variants as rows, examples per class as columns, 'mean ± std (s/run)'."""
  lines = []
  for dataset in sorted({r["dataset"] for r in table}):
    rows = [r for r in table if r["dataset"] == dataset]
    shots = sorted({r["shots"] for r in rows}, key=_shots_key)
    variants = [v for v in (variant_order or []) if any(r["variant"] == v for r in rows)]
    variants += sorted({r["variant"] for r in rows} - set(variants))
    seeds = max(r["seeds"] for r in rows)
    lines += [f"### {dataset}: test top-1 % (mean ± std over {seeds} seeds; mean wall time per run)", "",
              "| variant | " + " | ".join(f"{s}/class" for s in shots) + " |",
              "|---|" + "---|" * len(shots)]
    cell = {(r["variant"], r["shots"]): r for r in rows}
    for v in variants:
      parts = []
      for s in shots:
        r = cell.get((v, s))
        parts.append("—" if r is None else f"{r['acc_mean']:.1f} ± {r['acc_std']:.1f} ({r['wall_s_mean']:.1f} s)")
      lines.append(f"| {v} | " + " | ".join(parts) + " |")
    lines.append("")
  return "\n".join(lines)


def plot(table: list[dict], path: str, variant_order: list[str] | None = None) -> None:
  """Accuracy vs examples per class (log axis), one line per variant, error bars over seeds."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  datasets = sorted({r["dataset"] for r in table})
  fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5), squeeze=False)
  for ax, dataset in zip(axes[0], datasets):
    rows = [r for r in table if r["dataset"] == dataset]
    numeric = sorted({r["shots"] for r in rows if r["shots"] != "all"})
    all_x = (max(numeric) * 4 if numeric else 1)  # 'all' drawn to the right of the largest k
    variants = [v for v in (variant_order or []) if any(r["variant"] == v for r in rows)]
    variants += sorted({r["variant"] for r in rows} - set(variants))
    for v in variants:
      rs = sorted((r for r in rows if r["variant"] == v), key=lambda r: _shots_key(r["shots"]))
      xs = [all_x if r["shots"] == "all" else r["shots"] for r in rs]
      ax.errorbar(xs, [r["acc_mean"] for r in rs], yerr=[r["acc_std"] for r in rs], marker="o",
                  capsize=3, label=v)
    ax.set_xscale("log")
    ticks = numeric + ([all_x] if any(r["shots"] == "all" for r in rows) else [])
    ax.set_xticks(ticks, [str(t) for t in numeric] + (["all"] if len(ticks) > len(numeric) else []))
    ax.set_xlabel("training examples per class")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(dataset)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_all(rows: list[dict], workdir: str, variant_order: list[str] | None = None) -> list[dict]:
  table = aggregate(rows)
  write_csv(table, os.path.join(workdir, "results.csv"))
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown(table, variant_order) + "\n")
  if table:
    plot(table, os.path.join(workdir, "results.png"), variant_order)
  return table
