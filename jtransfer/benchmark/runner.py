"""The benchmark runner: every cell's trials, the choice on validation, the test, the records.

    from jtransfer.benchmark import runner
    rows = runner.run(config, "workdirs/demo")     # config: configs/benchmark/*.py

For each cell (``schema.cells``) it fits every grid point of the variant (a *trial*, by the
variant's kind: ``benchmark/kinds/``) and scores it on validation, chooses the point with the
highest validation top-1 (the first in grid order on ties), and only then evaluates that point on
the test split and the shifted test sets. It never branches on a kind's name.

Every finished trial appends one line to ``trials.jsonl`` and every finished cell one line (with
its full config) to ``results.jsonl``; a restarted benchmark skips both. The workdir is locked for
the run and belongs to one config. At the end ``report.write_all`` writes the tables,
comparisons and plots; a ``zeroshot`` section adds ``zeroshot.{json,md}``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Callable, TextIO

import numpy as np

from jtransfer import methods
from jtransfer import workdir as wd
from jtransfer.benchmark import (
  compiles,
  compose,
  cost,
  diagnostics,
  evaluation,
  features,
  kinds,
  report,
  schema,
  zeroshot_section,
)
from jtransfer.benchmark import starts as starts_lib
from jtransfer.benchmark.kinds.features import feature_arrays
from jtransfer.train import trainer


def ensure_pretrained(config, workdir: str, stream: TextIO) -> str:
  """Runs the pretraining experiment once; returns its exported weights dir (reused when present)."""
  if not config.pretrain.enabled:
    return config.base.model.init
  run_dir = os.path.join(workdir, "pretrain")
  export = wd.RunDir(run_dir).export
  if wd.RunDir(run_dir).finished():
    print(f"[benchmark] reusing pretrained weights {export}", file=stream, flush=True)
    return export
  print(f"[benchmark] pretraining {config.pretrain.config.model.arch} on "
        f"{config.pretrain.config.data.dataset} -> {export}", file=stream, flush=True)
  result = trainer.train_and_evaluate(config.pretrain.config, run_dir,
                                      task=methods.task_for(config.pretrain.config))
  print(f"[benchmark] pretrained: {config.pretrain.config.data.dataset} test top-1 "
        f"{result['eval']['top1'] * 100:.1f}% in {result['wall_s']:.0f} s", file=stream, flush=True)
  return export


def _append(path: str, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record, default=float) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _compiled(c: dict) -> str:
  """'compile 12.3 s: 9 programs, 7 from the cache' for a progress line."""
  return (f"compile {c['compile_s']:.1f} s: {c['programs']} programs, {c['cache_hits']} from the "
          "persistent cache")


def _trial(ctx: kinds.Context, cell: schema.Cell, point: dict, splits) -> dict:
  """Fits one grid point (its kind's ``fit``); returns its trial record."""
  kind = kinds.get(ctx.variant(cell).kind)
  t0 = ctx.clock()
  with compiles.Meter() as meter:
    rec = kind.fit(ctx, cell, point, splits)
  rec = {"cell": cell.id, "point": point, "point_id": schema.point_id(point), **rec}
  rec["val_top1"] = float(rec["val"]["top1"])
  rec["wall_s"] = ctx.clock() - t0
  rec["compile"] = meter.summary()
  return rec


def _trials(ctx: kinds.Context, cell: schema.Cell, splits, done: dict) -> list[dict]:
  """Every grid point's trial record, fitted unless ``done`` (trials.jsonl) holds it."""
  trials = []
  kind = kinds.get(ctx.variant(cell).kind)
  for point in schema.cell_points(ctx.config, cell, kind.cross_validates):
    tid = f"{cell.id}/{schema.point_id(point)}"
    rec = done.get(tid)
    if rec is None:
      rec = {**_trial(ctx, cell, point, splits), "trial": tid}
      _append(os.path.join(ctx.workdir, "trials.jsonl"), rec)
      print(f"[benchmark]   trial {tid}: val top-1 {rec['val_top1'] * 100:.1f}% "
            f"in {rec['wall_s']:.1f} s ({_compiled(rec['compile'])})", file=ctx.stream,
            flush=True)
    trials.append(rec)
  return trials


def _selection(ctx, cell, v, kind) -> str:
  """How the cell chose: 'val', 'fixed', 'within_draw' (cross-validation in the draw) or 'rule'
  (its first grid point, under within-draw selection)."""
  if not schema.within_draw(ctx.config, cell) or len(schema.points(v)) == 1:
    return v.get("selection", "val")
  return "within_draw" if schema.cross_validated(ctx.config, cell, kind.cross_validates) else "rule"


def _run_cell(ctx: kinds.Context, cell: schema.Cell, trials_done: dict) -> dict:
  v = ctx.variant(cell)
  kind = kinds.get(v.kind)
  splits = compose.splits_for(ctx.config, cell.dataset, cell.shots)
  trials = _trials(ctx, cell, splits, trials_done)
  # The validation argmax; the first point in grid order on ties.
  chosen = max(trials, key=lambda r: (r["val_top1"], -trials.index(r)))
  t0 = ctx.clock()
  with compiles.Meter() as meter:
    scores = kind.test(ctx, cell, chosen, splits)
  test_wall = ctx.clock() - t0
  compiled = meter.summary()
  for t in trials:
    compiled = compiles.add(compiled, t.get("compile", {}))
  ood = {schema.shift_name(*s): float(m["top1"]) for s, m in scores.items() if s is not None}
  search_gflops = [t["train_gflops"] for t in trials]
  row = {"cell": cell.id, "dataset": cell.dataset, "variant": cell.variant, "shots": cell.shots,
         "seed": cell.seed, "kind": v.kind, "init": v.get("init", "pretrained"),
         "selection": _selection(ctx, cell, v, kind), "budget": len(trials),
         "chosen": chosen["point"], "chosen_id": chosen["point_id"],
         "val_top1": chosen["val_top1"], "test_top1": float(scores[None]["top1"]),
         "accuracy": float(scores[None]["top1"]), "ood": ood,
         "ood_mean": float(np.mean(list(ood.values()))) if ood else None,
         "trainable_params": chosen["trainable_params"], "train_gflops": chosen["train_gflops"],
         "search_gflops": (None if any(g is None for g in search_gflops)
                           else float(sum(search_gflops))),
         "peak_bytes": chosen["peak_bytes"], "wall_s": sum(t["wall_s"] for t in trials) + test_wall,
         "compile_s": compiled["compile_s"], "compile": compiled,
         "splits": dataclasses.asdict(splits), "metrics": scores[None],
         "run_dir": chosen.get("run_dir")}
  kind.finish_row(ctx, cell, chosen, row)
  if kind.exports:
    row["config"] = wd.RunDir(chosen["run_dir"]).read_config().to_dict()
  else:
    row["config"] = json.loads(ctx.cell_config(cell, point=chosen["point"], splits=splits)
                               .to_json_best_effort())
  row.update(diagnostics.cell_facts(ctx, cell, chosen, trials, splits, row["config"], scores[None]))
  return row


def _zero_shot(ctx: kinds.Context) -> dict:
  """The zero-shot section (``zeroshot_section``) on every dataset's pool and test features."""
  path = os.path.join(ctx.workdir, "zeroshot.json")
  if os.path.exists(path):
    with open(path) as f:
      out = json.load(f)
  else:
    out = {}
    for dataset in ctx.config.datasets:
      splits = compose.splits_for(ctx.config, dataset, "all")
      name = next(n for n in ctx.config.order
                  if kinds.get(ctx.config.variants[n].kind).uses_features)
      cfg = ctx.cell_config(schema.Cell(dataset, name, "all", 0), splits=splits)
      out[dataset] = zeroshot_section.run(
          ctx.config.zeroshot, evaluation.num_classes(cfg.data),
          pool=feature_arrays(ctx, cfg, splits.pool), test=feature_arrays(ctx, cfg, splits.test))
    wd.atomic_write_json(path, out)
  table = zeroshot_section.markdown(out)
  wd.atomic_write_text(os.path.join(ctx.workdir, "zeroshot.md"), table)
  print(table, file=ctx.stream, flush=True)
  return out


def run(config, workdir: str, *, stream: TextIO = sys.stderr,
        clock: Callable[[], float] = time.monotonic) -> list[dict]:
  """Runs every unfinished cell (and trial), then writes the report. Returns all result rows.

  The workdir is locked for the run (a second benchmark on it stops at once, naming the holder),
  and it belongs to one config: a run whose config differs from the ``benchmark_config.json``
  already there is refused before anything is read or written, so finished cells of another
  config can never be reported as this one's.
  """
  compose.validate(config)
  os.makedirs(workdir, exist_ok=True)
  with wd.WorkdirLock(workdir):
    _claim(config, workdir)
    return _run_locked(config, workdir, stream=stream, clock=clock)


def _claim(config, workdir: str) -> None:
  """Writes ``benchmark_config.json``, or checks that the one there is ``config``'s."""
  path = os.path.join(workdir, "benchmark_config.json")
  mine = json.loads(config.to_json_best_effort(sort_keys=True))
  if os.path.exists(path):
    with open(path) as f:
      theirs = json.load(f)
    if theirs != mine:
      keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
      raise ValueError(f"{workdir} holds a benchmark of another config (sections that differ: "
                       f"{', '.join(keys)}; see {path}). Use a new --workdir, or delete this one "
                       "to start over.")
    return
  wd.atomic_write_text(path, json.dumps(mine, indent=1, sort_keys=True))


def _context(config, workdir: str, rows: list[dict], stream, clock) -> kinds.Context:
  pretrained = ensure_pretrained(config, workdir, stream)
  named = starts_lib.ensure(config, workdir, pretrained=pretrained, stream=stream, clock=clock)
  return kinds.Context(config, workdir, pretrained, named,
                       features.FeatureCache(os.path.join(workdir, "features")),
                       cost.CostMeter(), {r["cell"]: r for r in rows}, stream, clock,
                       compose=compose.cell_config,
                       run_dir_of=functools.partial(compose.run_dir, workdir))


def _run_locked(config, workdir: str, *, stream: TextIO, clock: Callable[[], float]) -> list[dict]:
  results_path = os.path.join(workdir, "results.jsonl")
  rows = report.load_results(results_path)
  done = {r["cell"] for r in rows}
  trials_done = {t["trial"]: t for t in report.load_results(os.path.join(workdir, "trials.jsonl"))}
  start = clock()
  ctx = _context(config, workdir, rows, stream, clock)
  todo = [c for c in schema.cells(config) if c.id not in done]
  total = len(todo) + len(done)
  walls: dict[str, list[float]] = {}  # per variant, for the ETA
  for i, cell in enumerate(todo):
    t0 = clock()
    row = _run_cell(ctx, cell, trials_done)
    _append(results_path, row)
    rows.append(row)
    ctx.results[cell.id] = row
    wall = clock() - t0
    walls.setdefault(cell.variant, []).append(wall)
    overall = np.mean([w for ws in walls.values() for w in ws])
    eta = sum(np.mean(walls.get(c.variant, [overall])) for c in todo[i + 1:])
    ood = f", OOD {row['ood_mean'] * 100:.1f}%" if row["ood_mean"] is not None else ""
    print(f"[benchmark {len(done) + i + 1}/{total}] {cell.id}: chose {row['chosen_id']} "
          f"(val {row['val_top1'] * 100:.1f}%), test top-1 {row['test_top1'] * 100:.1f}%{ood} "
          f"in {wall:.1f} s ({_compiled(row['compile'])}) | elapsed {clock() - start:.0f} s, "
          f"ETA {eta:.0f} s", file=stream, flush=True)
  if config.get("zeroshot"):
    _zero_shot(ctx)
  protocol = schema.protocol_of(config)
  table = report.write_all(rows, workdir, variant_order=list(config.order), protocol=protocol)
  print(report.markdown(table, list(config.order), protocol=protocol, rows=rows), file=stream,
        flush=True)
  return rows


__all__ = ["ensure_pretrained", "run"]
