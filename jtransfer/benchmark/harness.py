"""The benchmark harness: variants × datasets × examples-per-class × seeds, one trainer for all.

    from jtransfer.benchmark import harness
    rows = harness.run(config, "workdirs/demo")     # config: jtransfer/configs/benchmark/*.py

Each cell is the base experiment plus the cell's overrides, trained with
``train.train_and_evaluate`` in its own run dir (so a killed run resumes from its checkpoint), or,
for feature variants (``ridge``, ``knn``, ``linear_probe_cached``), a classifier on features that
are extracted once per dataset and cached. Every finished cell appends one JSON line (with its full
config) to ``results.jsonl``; a restarted benchmark skips the cells already there. At the end,
``results.csv``, ``results.md`` and ``results.png`` are written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Callable, TextIO

from ml_collections import config_dict
import numpy as np

from jtransfer import data
from jtransfer.benchmark import evaluators, features, report
from jtransfer.train import metrics as metrics_lib
from jtransfer.train import trainer

FEATURE_KINDS = tuple(evaluators.EVALUATORS)
KINDS = ("train",) + FEATURE_KINDS


@dataclasses.dataclass(frozen=True)
class Cell:
  dataset: str
  variant: str
  shots: int | str  # int, or "all"
  seed: int

  @property
  def id(self) -> str:
    return f"{self.dataset}/{self.variant}/shots-{self.shots}/seed-{self.seed}"


def validate(config) -> None:
  """Fails on the first bad variant before anything runs (unknown kind, teacher, override key)."""
  names = list(config.order)
  if sorted(names) != sorted(config.variants):
    raise ValueError(f"order {sorted(names)} must list each of the variants {sorted(config.variants)} once")
  for name in names:
    v = config.variants[name]
    if v.kind not in KINDS:
      raise ValueError(f"variants.{name}.kind={v.kind!r}; known: {', '.join(KINDS)}")
    if v.get("teacher") and v.teacher not in names[:names.index(name)]:
      raise ValueError(f"variants.{name}.teacher={v.teacher!r} must name a variant listed before it")
  for shots in config.shots:
    if shots != "all" and (not isinstance(shots, int) or shots < 1):
      raise ValueError(f"shots entries must be positive ints or 'all', got {shots!r}")
  for dataset in config.datasets:
    for shots in config.shots:
      for name in names:
        cell_config(config, Cell(dataset, name, shots, 0), pretrained="PRETRAINED", teacher="TEACHER")


def cells(config) -> list[Cell]:
  """Dataset-major, then shots, seed, variant in ``config.order`` (teachers before students)."""
  return [Cell(d, v, s, seed) for d in config.datasets for s in config.shots
          for seed in config.seeds for v in config.order]


def variant(kind: str, *, pretrained: bool = True, freezing=None, overrides=(), teacher: str = "",
            args=None) -> config_dict.ConfigDict:
  """One variant of a benchmark config (the harness's schema; configs build variants with this).

  Args:
    kind: 'train' (the one trainer) or a feature evaluator: ridge | knn | linear_probe_cached.
    pretrained: start from the benchmark's pretrained weights (else random initialisation).
    freezing: a freezing config (``optim.get_freezing_config(...)``); None = the base's.
    overrides: (dotted key, value) pairs applied to the base experiment (a typo is an error).
    teacher: distillation: the variant (same cell, listed earlier) whose export is the teacher.
    args: a feature evaluator's keyword arguments.
  """
  v = config_dict.ConfigDict()
  v.kind = kind
  v.pretrained = pretrained
  v.freezing = freezing or config_dict.placeholder(config_dict.ConfigDict)
  v.overrides = tuple(overrides)
  v.teacher = teacher
  v.args = args or {}
  return v


def _apply(cfg, overrides, where: str) -> None:
  for key, value in overrides:
    try:
      cfg.update_from_flattened_dict({key: value})
    except (KeyError, AttributeError) as e:
      raise KeyError(f"{where}: unknown config key {key!r}") from e


def cell_config(config, cell: Cell, *, pretrained: str, teacher: str = ""):
  """The base experiment with the cell's dataset, shots, seed and variant applied."""
  variant = config.variants[cell.variant]
  cfg = config.base.copy_and_resolve_references()
  cfg.data.dataset = cell.dataset
  cfg.data.shots = None if cell.shots == "all" else int(cell.shots)
  cfg.data.fewshot_seed = cell.seed
  cfg.train.seed = cell.seed
  cfg.model.init = pretrained if variant.pretrained else ""
  if variant.get("freezing"):
    cfg.freezing = variant.freezing.copy_and_resolve_references()
  _apply(cfg, config.shot_overrides.get(str(cell.shots), ()), f"shot_overrides[{cell.shots!r}]")
  _apply(cfg, variant.overrides, f"variants.{cell.variant}.overrides")
  if variant.get("teacher"):
    cfg.loss.distill.teacher = teacher
  return cfg


def _run_dir(workdir: str, cell: Cell) -> str:
  return os.path.join(workdir, "runs", cell.dataset, cell.variant, f"shots-{cell.shots}", f"seed-{cell.seed}")


def ensure_pretrained(config, workdir: str, stream: TextIO) -> str:
  """Runs the pretraining experiment once; returns its exported weights dir (reused when present)."""
  if not config.pretrain.enabled:
    return config.base.model.init
  run_dir = os.path.join(workdir, "pretrain")
  export = os.path.join(run_dir, "export")
  if os.path.exists(os.path.join(run_dir, "result.json")) and os.path.isdir(export):
    print(f"[benchmark] reusing pretrained weights {export}", file=stream, flush=True)
    return export
  print(f"[benchmark] pretraining {config.pretrain.config.model.arch} on "
        f"{config.pretrain.config.data.dataset} -> {export}", file=stream, flush=True)
  result = trainer.train_and_evaluate(config.pretrain.config, run_dir)
  print(f"[benchmark] pretrained: {config.pretrain.config.data.dataset} test top-1 "
        f"{result['eval']['top1'] * 100:.1f}% in {result['wall_s']:.0f} s", file=stream, flush=True)
  return export


def _feature_cell(config, cell: Cell, cfg, cache: features.FeatureCache) -> dict:
  variant = config.variants[cell.variant]
  x, y = cache.get(cfg.model, cfg.data, cfg.data.train_split)
  tx, ty = cache.get(cfg.model, cfg.data, cfg.data.eval_split)
  if cell.shots != "all":
    idx = data.sample_per_class(y, int(cell.shots), cell.seed, where=f"{cell.dataset} train")
    x, y = x[idx], y[idx]
  num_classes = int(max(y.max(), ty.max()) + 1)
  kwargs = dict(variant.get("args", {}))
  if variant.kind == "linear_probe_cached":
    kwargs["seed"] = cell.seed
  out = evaluators.EVALUATORS[variant.kind](x, y, tx, num_classes=num_classes, **kwargs)
  m = metrics_lib.classification_metrics(out["logits"], ty)
  return {k: v for k, v in m.items() if k != "confusion_matrix"}


def run(config, workdir: str, *, stream: TextIO = sys.stderr,
        clock: Callable[[], float] = time.monotonic) -> list[dict]:
  """Runs every unfinished cell, then writes the tables and the plot. Returns all result rows."""
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "benchmark_config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=1, sort_keys=True))
  results_path = os.path.join(workdir, "results.jsonl")
  rows = report.load_results(results_path)
  done = {r["cell"] for r in rows}
  start = clock()
  pretrained = ensure_pretrained(config, workdir, stream)
  cache = features.FeatureCache(os.path.join(workdir, "features"))
  todo = [c for c in cells(config) if c.id not in done]
  total = len(todo) + len(done)
  walls: dict[str, list[float]] = {}  # per variant, for the ETA
  for i, cell in enumerate(todo):
    variant = config.variants[cell.variant]
    teacher = ""
    if variant.get("teacher"):
      teacher = os.path.join(_run_dir(workdir, dataclasses.replace(cell, variant=variant.teacher)), "export")
    cfg = cell_config(config, cell, pretrained=pretrained, teacher=teacher)
    t0 = clock()
    if variant.kind == "train":
      result = trainer.train_and_evaluate(cfg, _run_dir(workdir, cell))
      scores = result["eval"]
    else:
      scores = _feature_cell(config, cell, cfg, cache)
    wall = clock() - t0
    row = {"cell": cell.id, "dataset": cell.dataset, "variant": cell.variant, "shots": cell.shots,
           "seed": cell.seed, "kind": variant.kind, "accuracy": float(scores["top1"]),
           "metrics": {k: v for k, v in scores.items() if k != "confusion_matrix"},
           "wall_s": wall, "config": json.loads(cfg.to_json_best_effort())}
    with open(results_path, "a") as f:
      f.write(json.dumps(row, default=float) + "\n")
      f.flush()
      os.fsync(f.fileno())
    rows.append(row)
    walls.setdefault(cell.variant, []).append(wall)
    overall = np.mean([w for ws in walls.values() for w in ws])
    eta = sum(np.mean(walls.get(c.variant, [overall])) for c in todo[i + 1:])
    print(f"[benchmark {len(done) + i + 1}/{total}] {cell.id}: top-1 {row['accuracy'] * 100:.1f}% "
          f"in {wall:.1f} s | elapsed {clock() - start:.0f} s, ETA {eta:.0f} s", file=stream, flush=True)
  table = report.write_all(rows, workdir, variant_order=list(config.order))
  print(report.markdown(table, list(config.order)), file=stream, flush=True)
  return rows
