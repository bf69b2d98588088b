"""Benchmark results → tables, comparisons and plots.

    rows = report.load_results("workdirs/demo/results.jsonl")
    table = report.aggregate(rows)   # per (dataset, variant, shots): mean, 95% CI, min/median/max
    report.write_all(rows, "workdirs/demo", variant_order=[...], reference="full_finetune")

Writes ``results.csv`` (one row per cell: variant, dataset, shots, seed, selection, budget, the
chosen hyper-parameters, val/test/OOD top-1, cost), ``summary.csv`` (one row per dataset ×
variant × shots), ``results.md`` (tables: test top-1 with intervals and the best marked, spread,
OOD, cost, selection), ``comparisons.md`` (each variant vs the reference, paired over seeds),
``results.png`` (top-1 vs examples per class), ``cost.png`` (top-1 vs training GFLOPs) and
``ood.png`` (in- vs out-of-distribution top-1; the plots are drawn by ``plots.py``).

A result row is a dict with at least ``dataset``, ``variant``, ``shots`` (int, or "all"),
``seed``, ``accuracy`` (test top-1, 0..1) and ``wall_s``; the harness adds the rest.
"""

from __future__ import annotations

from collections import Counter, defaultdict
import csv
import io
import os
from typing import Iterable

import numpy as np

from jtransfer import workdir as wd
from jtransfer.benchmark import plots, stats
from jtransfer.train import writers

__all__ = ["CSV_COLUMNS", "aggregate", "comparisons", "load_results", "markdown", "write_all",
           "write_csv"]

# results.csv, before one 'ood_<shift>' column per shift (inserted after test_top1).
CSV_COLUMNS = ("variant", "dataset", "shots", "seed", "kind", "selection", "budget",
               "hyperparams", "val_top1", "test_top1", "ood_mean", "trainable_params",
               "train_gflops", "search_gflops", "wall_s", "compile_s", "peak_step_mb")


def load_results(path: str) -> list[dict]:
  """The rows of a JSON-lines file (none when it does not exist yet)."""
  return writers.read_jsonl(path) if os.path.exists(path) else []


def _test(r) -> float:
  return float(r.get("test_top1", r["accuracy"]))


def _mean(values):
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _shifts(rows) -> list[str]:
  return sorted({s for r in rows for s in (r.get("ood") or {})})


def aggregate(rows: Iterable[dict]) -> list[dict]:
  """Per (dataset, variant, shots): test top-1 % summary over seeds (mean, bootstrap 95 %
  interval, min/median/max, std), validation and OOD means, cost means, the chosen points."""
  cells = defaultdict(list)
  for r in rows:
    cells[(r["dataset"], r["variant"], r["shots"])].append(r)
  out = []
  for (dataset, variant, shots), rs in cells.items():
    s = stats.summarize([_test(r) * 100 for r in rs])
    row = {"dataset": dataset, "variant": variant, "shots": shots, "seeds": len(rs),
           "acc_mean": s["mean"], "acc_ci_low": s["ci_low"], "acc_ci_high": s["ci_high"],
           "acc_min": s["min"], "acc_median": s["median"], "acc_max": s["max"], "acc_std": s["std"],
           "val_mean": _mean(r.get("val_top1", None) and r["val_top1"] * 100 for r in rs),
           "selection": rs[0].get("selection", "fixed"), "budget": rs[0].get("budget", 1),
           "chosen": dict(Counter(r.get("chosen_id", "default") for r in rs)),
           "trainable_params": _mean(r.get("trainable_params") for r in rs),
           "train_gflops": _mean(r.get("train_gflops") for r in rs),
           "search_gflops": _mean(r.get("search_gflops") for r in rs),
           "wall_s_mean": float(np.mean([r["wall_s"] for r in rs])),
           "compile_s_mean": _mean(r.get("compile_s") for r in rs),
           "peak_step_mb": _mean(r.get("peak_bytes") and r["peak_bytes"] / 2**20 for r in rs)}
    if any(r.get("ood_mean") is not None for r in rs):
      o = stats.summarize([r["ood_mean"] * 100 for r in rs])
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
    d.update(ood_mean=r.get("ood_mean"), trainable_params=r.get("trainable_params"),
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


def _per_seed(rows, dataset, shots, key) -> dict[str, dict]:
  out = defaultdict(dict)
  for r in rows:
    if r["dataset"] == dataset and r["shots"] == shots:
      value = _test(r) if key == "test" else r.get("ood_mean")
      if value is not None:
        out[r["variant"]][r["seed"]] = value * 100
  return out


def _marks(rows, dataset, shots, key, best_test, level) -> tuple[str | None, set]:
  per = _per_seed(rows, dataset, shots, key)
  if not per:
    return None, set()
  return stats.indistinguishable_from_best(per, test=best_test, level=level)


def _fmt(x, digits=1):
  return "—" if x is None else f"{x:.{digits}f}"


def _wall(r) -> str:
  c = r.get("compile_s_mean")
  return _fmt(r["wall_s_mean"]) + ("" if c is None else f" ({c:.1f})")


def _rule(best_test, level) -> str:
  if best_test == "ci":
    return (f"the paired bootstrap {level:.0%} interval of its difference to the best contains 0 "
            "(`stats.indistinguishable_from_best(test='ci')`)")
  return (f"the paired sign-flip p-value against the best is ≥ {1 - level:.2f} "
          "(`stats.indistinguishable_from_best(test='permutation')`)")


def markdown(table: list[dict], variant_order: list[str] | None = None, *, rows=None,
             best_test: str = "ci", level: float = 0.95) -> str:
  """Per dataset: test top-1 (mean [95 % CI], best and indistinguishable in bold), spread, OOD,
  cost and selection tables. ``rows`` (the per-seed results) enable the best marks."""
  lines = []
  for dataset in sorted({r["dataset"] for r in table}):
    trs = [r for r in table if r["dataset"] == dataset]
    shots = sorted({r["shots"] for r in trs}, key=plots.shots_key)
    variants = plots.ordered_variants(trs, variant_order)
    seeds = max(r["seeds"] for r in trs)
    cell = {(r["variant"], r["shots"]): r for r in trs}
    head = "| variant | " + " | ".join(f"{s}/class" for s in shots) + " |"
    sep = "|---|" + "---|" * len(shots)

    def table_of(title, fmt, key=None):
      out = [title, "", head, sep]
      marks = {s: _marks(rows, dataset, s, key, best_test, level) if rows and key else (None, set())
               for s in shots}
      for v in variants:
        parts = []
        for s in shots:
          r = cell.get((v, s))
          text = "—" if r is None else fmt(r)
          if r is not None and text != "—" and v in marks[s][1]:
            text = f"**{text}**"
          parts.append(text)
        out.append(f"| {v} | " + " | ".join(parts) + " |")
      return out + [""]

    lines += table_of(
        f"### {dataset}: test top-1 % (mean [95 % bootstrap interval] over {seeds} seeds)",
        lambda r: f"{r['acc_mean']:.1f} [{r['acc_ci_low']:.1f}, {r['acc_ci_high']:.1f}]", "test")
    if rows:
      lines += [f"Bold: the best mean of the column and every variant not distinguishable from it: "
                f"{_rule(best_test, level)}. With few seeds read the intervals, not only the bold.",
                ""]
    lines += table_of(f"#### {dataset}: test top-1 % spread over seeds (min / median / max)",
                      lambda r: f"{r['acc_min']:.1f} / {r['acc_median']:.1f} / {r['acc_max']:.1f}")
    if any("ood_mean" in r for r in trs):
      shifts = sorted({k[4:] for r in trs for k in r if k.startswith("ood_")} -
                      {"mean", "ci_low", "ci_high"})
      lines += table_of(
          f"#### {dataset}: OOD top-1 % (mean over the {len(shifts)} shifted test sets "
          f"{', '.join(shifts)}; [95 % interval]; bold as above)",
          lambda r: ("—" if "ood_mean" not in r else
                     f"{r['ood_mean']:.1f} [{r['ood_ci_low']:.1f}, {r['ood_ci_high']:.1f}]"), "ood")
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
    lines += [f"#### {dataset}: selection (by validation top-1 on held-out train examples)", "",
              "| variant | selection | budget (points) | chosen point per shots (× seeds) |",
              "|---|---|---|---|"]
    for v in variants:
      rs = [cell[(v, s)] for s in shots if (v, s) in cell]
      chosen = "; ".join(f"{r['shots']}: " + ", ".join(f"{k} ×{n}" for k, n in r["chosen"].items())
                         for r in rs)
      lines.append(f"| {v} | {rs[0]['selection']} | {rs[0]['budget']} | {chosen} |")
    lines.append("")
  compiled = [r["compile"] for r in rows or () if r.get("compile")]
  if compiled:
    c = {k: sum(x[k] for x in compiled) for k in ("compile_s", "programs", "cache_hits")}
    lines += [f"Compilation, over the {len(compiled)} cells: {c['compile_s']:.0f} s tracing, "
              f"lowering and compiling; {c['programs']} programs compiled, {c['cache_hits']} of "
              "them read from the persistent cache.", ""]
  return "\n".join(lines)


def comparisons(rows: list[dict], *, reference: str, variant_order: list[str] | None = None,
                level: float = 0.95) -> str:
  """``comparisons.md``: every variant vs ``reference``, paired over the seeds both have."""
  seeds = sorted({r["seed"] for r in rows})
  n = len(seeds)
  lines = [f"# Paired comparisons with `{reference}`", "",
           f"Differences are variant − {reference} in top-1 percentage points, paired by seed (a "
           "seed fixes the few-shot draw, the head init and the data order). Interval: "
           f"{level:.0%} percentile bootstrap of the mean difference; W/T/L: seeds won/tied/lost; "
           "p: exact two-sided sign-flip permutation p-value.", "",
           f"With {n} seeds the smallest possible p-value is 2/2^{n} = {2 / 2 ** n:.3g}"
           + (": no difference can reach p < 0.05 here, whatever its size." if 2 / 2 ** n >= 0.05
              else "."), ""]
  for key, title in (("test", "test top-1 (in distribution)"), ("ood", "OOD top-1 (mean over shifts)")):
    for dataset in sorted({r["dataset"] for r in rows}):
      for shots in sorted({r["shots"] for r in rows if r["dataset"] == dataset}, key=plots.shots_key):
        per = _per_seed(rows, dataset, shots, key)
        if reference not in per:
          continue
        lines += [f"## {dataset}, {shots}/class: {title}", "",
                  "| variant | mean diff (pp) | 95 % interval | W/T/L | p |", "|---|---|---|---|---|"]
        for v in plots.ordered_variants([{"variant": k} for k in per], variant_order):
          if v == reference:
            continue
          c = stats.paired_comparison(per[v], per[reference], level=level)
          lines.append(f"| {v} | {c['mean_diff']:+.1f} | [{c['ci_low']:+.1f}, {c['ci_high']:+.1f}] "
                       f"| {c['wins']}/{c['ties']}/{c['losses']} | {c['p_value']:.3g} |")
        lines.append("")
  return "\n".join(lines)


def write_all(rows: list[dict], workdir: str, variant_order: list[str] | None = None, *,
              reference: str = "full_finetune", best_test: str = "ci",
              level: float = 0.95) -> list[dict]:
  """Every output file; returns the aggregated table."""
  table = aggregate(rows)
  write_csv(_per_cell_csv(rows), os.path.join(workdir, "results.csv"))
  write_csv(table, os.path.join(workdir, "summary.csv"))
  wd.atomic_write_text(os.path.join(workdir, "results.md"),
                       markdown(table, variant_order, rows=rows, best_test=best_test,
                                level=level) + "\n")
  if any(r["variant"] == reference for r in rows):
    wd.atomic_write_text(os.path.join(workdir, "comparisons.md"),
                         comparisons(rows, reference=reference, variant_order=variant_order,
                                     level=level) + "\n")
  if table:
    plots.plot(table, os.path.join(workdir, "results.png"), variant_order)
    plots.plot_cost(table, os.path.join(workdir, "cost.png"), variant_order)
    if any(r.get("ood_mean") is not None for r in table):
      plots.plot_ood(table, os.path.join(workdir, "ood.png"), variant_order)
  return table
