"""Benchmark results → tables, comparisons and plots.

    rows = report.load_results("workdirs/demo/results.jsonl")
    table = report.aggregate(rows)   # per (dataset, variant, shots): mean, t-interval, spread
    report.write_all(rows, "workdirs/demo", variant_order=[...], protocol=schema.protocol_of(config))

Writes ``results.csv`` (one row per cell and draw: variant, dataset, shots, seed, selection, its
budget and labels, the chosen hyper-parameters, val/test/OOD top-1, the test set's size, the
convergence flag, cost: every interval can be recomputed from it), ``summary.csv`` (one row per
dataset × variant × shots), ``results.md`` (tables: test top-1 with Student-t intervals over
draws and the test set's own interval, spread, OOD, cost, selection and budget, the flagged
cells, the declared comparisons), ``comparisons.md`` (the declared comparisons,
``comparisons.py``),
``results.png`` (top-1 vs examples per class), ``cost.png`` (top-1 vs training GFLOPs) and
``ood.png`` (in- vs out-of-distribution top-1; the plots are drawn by ``plots.py``).

A result row is a dict with at least ``dataset``, ``variant``, ``shots`` (int, or "all"),
``seed``, ``accuracy`` (test top-1, 0..1) and ``wall_s``; the harness adds the rest.

Intervals (``stats.py``): Student-t over draws (a cell with one draw says so) and the test set's own
Clopper-Pearson half-width (rows with ``test_n``). Only ``protocol.comparisons`` are tested
(``comparisons.py``); no variant is marked best.
"""

from __future__ import annotations

from collections import Counter, defaultdict
import csv
import io
import os
from typing import Iterable

import numpy as np

from jtransfer import workdir as wd
from jtransfer.benchmark import comparisons as comparisons_lib
from jtransfer.benchmark import plots, stats
from jtransfer.train import writers

__all__ = ["CSV_COLUMNS", "aggregate", "load_results", "markdown", "write_all", "write_csv"]

# results.csv, before one 'ood_<shift>' column per shift (inserted after test_top1).
CSV_COLUMNS = ("variant", "dataset", "shots", "seed", "kind", "selection", "budget",
               "hyperparams", "val_top1", "test_top1", "test_n", "ood_mean", "selection_labels",
               "budget_steps", "budget_epochs", "resolution", "converged", "trainable_params",
               "train_gflops", "search_gflops", "wall_s", "compile_s", "peak_step_mb")


def load_results(path: str) -> list[dict]:
  """The rows of a JSON-lines file (none when it does not exist yet)."""
  return writers.read_jsonl(path) if os.path.exists(path) else []


def _test(r) -> float:
  return float(r["test_top1"] if "test_top1" in r else r["accuracy"])


def _mean(values):
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _shifts(rows) -> list[str]:
  return sorted({s for r in rows for s in (r.get("ood") or {})})


def _test_halfwidth(rs) -> float | None:
  """Median over draws of the test set's own 95 % Clopper-Pearson half-width, in points."""
  widths = []
  for r in rs:
    n = r.get("test_n")
    if n:
      low, high = stats.binomial_interval(int(round(_test(r) * n)), int(n))
      widths.append(50.0 * (high - low))
  return float(np.median(widths)) if widths else None


def aggregate(rows: Iterable[dict], *, level: float = 0.95) -> list[dict]:
  """Per (dataset, variant, shots): test top-1 % over draws (mean, Student-t interval,
  min/median/max, std), the test set's own interval within a draw, validation and OOD means,
  cost means, the chosen points, the budget, the labels selection used and the flagged runs."""
  cells = defaultdict(list)
  for r in rows:
    cells[(r["dataset"], r["variant"], r["shots"])].append(r)
  out = []
  for (dataset, variant, shots), rs in cells.items():
    s = stats.summarize([_test(r) * 100 for r in rs], level=level)
    row = {"dataset": dataset, "variant": variant, "shots": shots, "seeds": len(rs),
           "acc_mean": s["mean"], "acc_ci_low": s["ci_low"], "acc_ci_high": s["ci_high"],
           "acc_min": s["min"], "acc_median": s["median"], "acc_max": s["max"], "acc_std": s["std"],
           "test_ci_halfwidth": _test_halfwidth(rs),
           "val_mean": _mean(r.get("val_top1", None) and r["val_top1"] * 100 for r in rs),
           "selection": rs[0].get("selection", "fixed"), "budget": rs[0].get("budget", 1),
           "selection_labels": _mean(r.get("selection_labels") for r in rs),
           "budget_steps": _mean(r.get("budget_steps") for r in rs),
           "budget_epochs": _mean(r.get("budget_epochs") for r in rs),
           "not_converged": sum(r.get("converged") is False for r in rs),
           "chosen": dict(Counter(r.get("chosen_id", "default") for r in rs)),
           "trainable_params": _mean(r.get("trainable_params") for r in rs),
           "train_gflops": _mean(r.get("train_gflops") for r in rs),
           "search_gflops": _mean(r.get("search_gflops") for r in rs),
           "wall_s_mean": float(np.mean([r["wall_s"] for r in rs])),
           "compile_s_mean": _mean(r.get("compile_s") for r in rs),
           "peak_step_mb": _mean(r.get("peak_bytes") and r["peak_bytes"] / 2**20 for r in rs)}
    if any(r.get("ood_mean") is not None for r in rs):
      o = stats.summarize([r["ood_mean"] * 100 for r in rs], level=level)
      row.update(ood_mean=o["mean"], ood_ci_low=o["ci_low"], ood_ci_high=o["ci_high"])
      for shift in _shifts(rs):
        row[f"ood_{shift}"] = _mean(r["ood"].get(shift, None) and r["ood"][shift] * 100 for r in rs)
    out.append(row)
  return sorted(out, key=lambda r: (r["dataset"], r["variant"], plots.shots_key(r["shots"])))


def _per_cell_csv(rows: list[dict]) -> list[dict]:
  shifts = _shifts(rows)
  out = []
  for r in sorted(rows, key=lambda r: (r["dataset"], r["variant"], plots.shots_key(r["shots"]), r["seed"])):
    d = {"variant": r["variant"], "dataset": r["dataset"], "shots": r["shots"], "seed": r["seed"],
         "kind": r.get("kind", ""), "selection": r.get("selection", "fixed"),
         "budget": r.get("budget", 1), "hyperparams": r.get("chosen_id", "default"),
         "val_top1": r.get("val_top1"), "test_top1": _test(r)}
    for s in shifts:
      d[f"ood_{s}"] = (r.get("ood") or {}).get(s)
    d.update(ood_mean=r.get("ood_mean"), test_n=r.get("test_n"),
             selection_labels=r.get("selection_labels"), budget_steps=r.get("budget_steps"),
             budget_epochs=r.get("budget_epochs"), resolution=r.get("resolution"),
             converged=r.get("converged"), trainable_params=r.get("trainable_params"),
             train_gflops=r.get("train_gflops"), search_gflops=r.get("search_gflops"),
             wall_s=r["wall_s"], compile_s=r.get("compile_s"),
             peak_step_mb=None if r.get("peak_bytes") is None else r["peak_bytes"] / 2**20)
    out.append(d)
  return out


def write_csv(table: list[dict], path: str) -> None:
  """The rows as CSV, written atomically (a reader never sees half a table)."""
  fields = list(dict.fromkeys(k for row in table for k in row)) or ["dataset"]
  buf = io.StringIO(newline="")
  w = csv.DictWriter(buf, fieldnames=fields)
  w.writeheader()
  w.writerows(table)
  wd.atomic_write_text(path, buf.getvalue())


def _fmt(x, digits=1):
  return "—" if x is None else f"{x:.{digits}f}"


def _wall(r) -> str:
  c = r.get("compile_s_mean")
  return _fmt(r["wall_s_mean"]) + ("" if c is None else f" ({c:.1f})")


def _acc(r, level) -> str:
  """``mean [t-interval] (±test)``: over draws, and the test set's own half-width."""
  text = f"{r['acc_mean']:.1f}"
  if r["acc_ci_low"] is not None:
    text += f" [{r['acc_ci_low']:.1f}, {r['acc_ci_high']:.1f}]"
  if r.get("test_ci_halfwidth") is not None:
    text += f" (±{r['test_ci_halfwidth']:.1f})"
  return text


def markdown(table: list[dict], variant_order: list[str] | None = None, *, protocol=None,
             rows=None) -> str:
  """Per dataset: test top-1 (mean, Student-t interval over draws, the test set's own interval),
  spread, OOD, cost, selection and budget tables, the runs flagged as not converged; then the
  comparisons ``protocol.comparisons`` declares, at ``protocol.level`` (``rows``, the per-draw
  results, are needed for those)."""
  level, declared = comparisons_lib.settings(protocol)
  lines = []
  for dataset in sorted({r["dataset"] for r in table}):
    trs = [r for r in table if r["dataset"] == dataset]
    shots = sorted({r["shots"] for r in trs}, key=plots.shots_key)
    variants = plots.ordered_variants(trs, variant_order)
    seeds = max(r["seeds"] for r in trs)
    cell = {(r["variant"], r["shots"]): r for r in trs}
    head = "| variant | " + " | ".join(f"{s}/class" for s in shots) + " |"
    sep = "|---|" + "---|" * len(shots)

    def table_of(title, fmt):
      out = [title, "", head, sep]
      for v in variants:
        parts = ["—" if cell.get((v, s)) is None else fmt(cell[(v, s)]) for s in shots]
        out.append(f"| {v} | " + " | ".join(parts) + " |")
      return out + [""]

    lines += table_of(
        f"### {dataset}: test top-1 % (mean [{level:.0%} Student-t interval over draws] "
        f"(± the test set's own {level:.0%} half-width))", lambda r: _acc(r, level))
    lines += ["Draws per cell: " + ", ".join(
        f"{v} {'/'.join(str(cell[(v, s)]['seeds']) for s in shots if (v, s) in cell)}"
        for v in variants) + f" (at most {seeds}). The interval over draws is the mean's "
        "Student-t interval (none with one draw); in brackets after it, the median over draws of "
        "the Clopper-Pearson half-width of one draw's test accuracy — what the finite test set "
        "alone carries. No variant is marked best: the declared comparisons below are the tests.",
        ""]
    single = [f"{v} at {s}/class" for v in variants for s in shots
              if (v, s) in cell and cell[(v, s)]["seeds"] < 2]
    if single:
      which = "every cell" if len(single) == len(trs) else ", ".join(single)
      lines += [f"With one draw no interval over draws and no test is possible: {which} (the test "
                "set's own interval still holds for that draw).", ""]
    flagged = [f"{v} at {s}/class ({cell[(v, s)]['not_converged']} of {cell[(v, s)]['seeds']} "
               "draws)" for v in variants for s in shots if cell.get((v, s), {}).get("not_converged")]
    lines += ([f"Not converged (training loss and validation top-1 both still improving over "
               f"the last quarter, `budget.convergence`): {'; '.join(flagged)}. Read these cells "
               "as lower bounds of what the method reaches with a larger budget.", ""]
              if flagged else ["Every trained run that logged enough points to judge had settled "
                               "by its last quarter (`budget.convergence`).", ""])
    lines += table_of(f"#### {dataset}: test top-1 % spread over seeds (min / median / max)",
                      lambda r: f"{r['acc_min']:.1f} / {r['acc_median']:.1f} / {r['acc_max']:.1f}")
    if any("ood_mean" in r for r in trs):
      shifts = sorted({k[4:] for r in trs for k in r if k.startswith("ood_")} -
                      {"mean", "ci_low", "ci_high"})
      lines += table_of(
          f"#### {dataset}: OOD top-1 % (mean over the {len(shifts)} shifted test sets "
          f"{', '.join(shifts)}; [{level:.0%} t-interval over draws])",
          lambda r: ("—" if "ood_mean" not in r else f"{r['ood_mean']:.1f}" + (
              "" if r["ood_ci_low"] is None else f" [{r['ood_ci_low']:.1f}, {r['ood_ci_high']:.1f}]")))
      for s in shots:
        lines += [f"#### {dataset}, {s}/class: top-1 % per shift (mean over seeds)", "",
                  "| variant | ID (test) | " + " | ".join(shifts) + " |",
                  "|---|---|" + "---|" * len(shifts)]
        for v in variants:
          r = cell.get((v, s))
          if r is not None:
            lines.append(f"| {v} | {r['acc_mean']:.1f} | "
                         + " | ".join(_fmt(r.get(f"ood_{x}")) for x in shifts) + " |")
        lines.append("")
    lines += [f"#### {dataset}: cost of the chosen point (mean over seeds)", "",
              "| variant | trainable params | " + " | ".join(f"GFLOPs {s}/class" for s in shots)
              + " | " + " | ".join(f"wall s (compile) {s}/class" for s in shots)
              + " | peak step MB |",
              "|---|---|" + "---|" * (2 * len(shots) + 1)]
    for v in variants:
      rs = [cell.get((v, s)) for s in shots]
      any_r = next(r for r in rs if r is not None)
      params = any_r["trainable_params"]
      lines.append(
          f"| {v} | {'—' if params is None else f'{params:,.0f}'} | "
          + " | ".join("—" if r is None else _fmt(r["train_gflops"], 2) for r in rs) + " | "
          + " | ".join("—" if r is None else _wall(r) for r in rs) + " | "
          + _fmt(_mean(r["peak_step_mb"] for r in rs if r is not None)) + " |")
    lines += ["", "GFLOPs: training of the chosen point (XLA cost_analysis of each compiled step "
              "× its steps; cached variants: the feature extraction of their training examples; "
              "WiSE-FT: its fine-tune's). Wall: the whole cell, every trial of the search and "
              "the test evaluation included (WiSE-FT: plus its fine-tune's); in brackets the "
              "part of it spent tracing, lowering and compiling programs, or reading them from "
              "the persistent compilation cache (the cell's own).", ""]
    lines += [f"#### {dataset}: selection and budget", "",
              "| variant | selection | grid points | labels used for selection (beyond the draw) "
              "| steps (epochs) per shots | chosen point per shots (× draws) |",
              "|---|---|---|---|---|---|"]
    for v in variants:
      rs = [cell[(v, s)] for s in shots if (v, s) in cell]
      chosen = "; ".join(f"{r['shots']}: " + ", ".join(f"{k} ×{n}" for k, n in r["chosen"].items())
                         for r in rs)
      labels = ", ".join(f"{r['shots']}: {_fmt(r['selection_labels'], 0)}" for r in rs)
      steps = ", ".join(f"{r['shots']}: {r['budget_steps']:.0f} ({r['budget_epochs']:.1f})"
                        for r in rs if r.get("budget_steps")) or "—"
      lines.append(f"| {v} | {rs[0]['selection']} | {rs[0]['budget']} | {labels} | {steps} | "
                   f"{chosen} |")
    lines.append("")
  if declared:
    lines += ["## Declared comparisons", "", comparisons_lib.section(rows, protocol), ""]
  compiled = [r["compile"] for r in rows or () if r.get("compile")]
  if compiled:
    c = {k: sum(x[k] for x in compiled) for k in ("compile_s", "programs", "cache_hits")}
    lines += [f"Compilation, over the {len(compiled)} cells: {c['compile_s']:.0f} s tracing, "
              f"lowering and compiling; {c['programs']} programs compiled, {c['cache_hits']} of "
              "them read from the persistent cache.", ""]
  return "\n".join(lines)


def write_all(rows: list[dict], workdir: str, *, variant_order: list[str] | None = None,
              protocol=None) -> list[dict]:
  """Every output file; returns the aggregated table. ``protocol``: the benchmark's
  (``schema.protocol_of(config)``: its ``level`` and declared ``comparisons``)."""
  table = aggregate(rows, level=comparisons_lib.settings(protocol)[0])
  write_csv(_per_cell_csv(rows), os.path.join(workdir, "results.csv"))
  write_csv(table, os.path.join(workdir, "summary.csv"))
  wd.atomic_write_text(os.path.join(workdir, "results.md"),
                       markdown(table, variant_order, protocol=protocol, rows=rows) + "\n")
  wd.atomic_write_text(os.path.join(workdir, "comparisons.md"),
                       "# Declared comparisons\n\n" + comparisons_lib.section(rows, protocol) + "\n")
  if table:
    plots.plot(table, os.path.join(workdir, "results.png"), variant_order)
    plots.plot_cost(table, os.path.join(workdir, "cost.png"), variant_order)
    if any(r.get("ood_mean") is not None for r in table):
      plots.plot_ood(table, os.path.join(workdir, "ood.png"), variant_order)
  return table
