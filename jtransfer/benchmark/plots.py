"""The benchmark's plots: accuracy against shots, against cost, and out against in distribution.

    plots.plot(table, "results.png", variant_order)     # table: report.aggregate(rows)
    plots.plot_cost(table, "cost.png"); plots.plot_ood(table, "ood.png")

Each PNG is written atomically; matplotlib (the 'plot' extra) is imported on first use. The bars
of ``plot`` are the table's Student-t intervals of the mean over draws (``acc_ci_low``/``_high``,
``stats.summarize``): the spread a new draw would bring, none for a cell with one draw; the test
set's own interval is in results.md, not drawn.
"""

from __future__ import annotations

import io
import math

from jtransfer import workdir as wd


def shots_key(shots):
  """Sort key of a shots value: the ints in order, then 'all'."""
  return math.inf if shots == "all" else int(shots)


def ordered_variants(rows, variant_order):
  """The variants of ``rows``: those of ``variant_order`` first, in its order, then the rest."""
  present = {r["variant"] for r in rows}
  out = [v for v in (variant_order or []) if v in present]
  return out + sorted(present - set(out))


def _save(fig, path: str) -> None:
  """``fig`` as a PNG at ``path``, written atomically."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  wd.atomic_write_bytes(path, buf.getvalue())


def _colors(variants):
  import matplotlib
  cmap = matplotlib.colormaps["tab20"]
  return {v: cmap(i % 20) for i, v in enumerate(variants)}


def plot(table: list[dict], path: str, variant_order: list[str] | None = None) -> None:
  """Top-1 vs examples per class (log axis), one line per variant, t-intervals over draws as bars."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  datasets = sorted({r["dataset"] for r in table})
  fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5), squeeze=False)
  for ax, dataset in zip(axes[0], datasets):
    rows = [r for r in table if r["dataset"] == dataset]
    numeric = sorted({r["shots"] for r in rows if r["shots"] != "all"})
    all_x = (max(numeric) * 4 if numeric else 1)  # 'all' drawn to the right of the largest k
    variants = ordered_variants(rows, variant_order)
    colors = _colors(variants)
    for v in variants:
      rs = sorted((r for r in rows if r["variant"] == v), key=lambda r: shots_key(r["shots"]))
      xs = [all_x if r["shots"] == "all" else r["shots"] for r in rs]
      ys = [r["acc_mean"] for r in rs]
      bound = lambda r, key, y: y if r.get(key) is None else r[key]  # one draw: no interval
      err = [[y - bound(r, "acc_ci_low", y) for y, r in zip(ys, rs)],
             [bound(r, "acc_ci_high", y) - y for y, r in zip(ys, rs)]]
      ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=v, color=colors[v])
    ax.set_xscale("log")
    ticks = numeric + ([all_x] if any(r["shots"] == "all" for r in rows) else [])
    ax.set_xticks(ticks, [str(t) for t in numeric] + (["all"] if len(ticks) > len(numeric) else []))
    ax.set_xlabel("training examples per class")
    ax.set_ylabel("test top-1 accuracy (%), t-interval of the mean over draws")
    ax.set_title(dataset)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)


def _scatter(table, path, variant_order, *, x_of, y_of, xlabel, ylabel, logx=False, diagonal=False):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  datasets = sorted({r["dataset"] for r in table})
  fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5.5), squeeze=False)
  markers = "os^Dvp*h"
  for ax, dataset in zip(axes[0], datasets):
    rows = [r for r in table if r["dataset"] == dataset and x_of(r) is not None
            and y_of(r) is not None]
    shots = sorted({r["shots"] for r in rows}, key=shots_key)
    variants = ordered_variants(rows, variant_order)
    colors = _colors(variants)
    for r in rows:
      ax.scatter(x_of(r), y_of(r), color=colors[r["variant"]],
                 marker=markers[shots.index(r["shots"]) % len(markers)], s=40)
    for v in variants:
      ax.scatter([], [], color=colors[v], marker="s", label=v)
    for i, s in enumerate(shots):
      ax.scatter([], [], color="gray", marker=markers[i % len(markers)], label=f"{s}/class")
    if logx:
      ax.set_xscale("log")
    if diagonal and rows:
      lo = min(min(x_of(r), y_of(r)) for r in rows)
      ax.plot([lo, 100], [lo, 100], "k--", lw=0.8, label="OOD = ID")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(dataset)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)


def plot_cost(table, path, variant_order=None) -> None:
  """Test top-1 vs training GFLOPs of the chosen point (log axis): colour = variant, marker = shots."""
  _scatter(table, path, variant_order, x_of=lambda r: r.get("train_gflops") or None,
           y_of=lambda r: r["acc_mean"], xlabel="training GFLOPs (chosen point, log)",
           ylabel="test top-1 accuracy (%)", logx=True)


def plot_ood(table, path, variant_order=None) -> None:
  """OOD top-1 (mean over shifts) vs in-distribution test top-1, with the diagonal."""
  _scatter(table, path, variant_order, x_of=lambda r: r["acc_mean"],
           y_of=lambda r: r.get("ood_mean"), xlabel="in-distribution test top-1 (%)",
           ylabel="OOD top-1 (%), mean over shifted test sets", diagonal=True)


__all__ = ["ordered_variants", "plot", "plot_cost", "plot_ood", "shots_key"]
