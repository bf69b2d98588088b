"""Scoring fixed variables and cached features on a split, for every kind of the benchmark.

    m = evaluation.evaluate_variables(cfg.model, 10, variables, cfg.data, "test")   # {'top1', ...}
    out = evaluation.on_test_and_shifts(config, cfg, model_cfg, 10, variables, "test")

The eval streams are read once and replayed from memory (``_Replay``): the eval pipeline (and the
seeded corruptions of the shifted test sets) is deterministic, and every chosen point of every
cell reads the same test batches.
"""

from __future__ import annotations

import functools
import json

from ml_collections import config_dict
import numpy as np

from jtransfer import data, models, weights
from jtransfer.benchmark import schema
from jtransfer.data import corruptions
from jtransfer.train import evaluate as evaluate_lib
from jtransfer.train import inputs, parallel, trainer


def pp_for(data_cfg, shift: tuple[str, int] | None, shift_seed: int) -> list | None:
  """The eval preprocessing of ``data_cfg``, with the corruption ``shift`` inserted when given."""
  if shift is None:
    return data_cfg.pp_eval
  return corruptions.shifted_pp(data.resolve_pp(data_cfg, train=False), shift[0], shift[1],
                                seed=shift_seed)


def _eval_cfg(data_cfg, split: str, pp_eval):
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.shots, cfg.vtab1k, cfg.eval_split = None, False, split
    if pp_eval is not None:  # None keeps the configured pp_eval (not the dataset's default)
      cfg.pp_eval = pp_eval
  return cfg


def evaluate_variables(model_cfg, num_classes: int, variables: dict, data_cfg, split: str, *,
                       pp_eval=None) -> dict:
  """Top-1 (and the other metrics) of ``variables`` of ``model_cfg``'s model on ``split``."""
  # The trainer's own shared eval program (so WiSE at α = 1 scores exactly what its fine-tune
  # scored: one compiled program, not a numerically different twin).
  par = parallel.create("jit")
  step = trainer.eval_step(trainer.build_model(model_cfg, int(num_classes)), par)
  cfg = _eval_cfg(data_cfg, split, pp_eval)
  source = _eval_batches(json.dumps(json.loads(cfg.to_json_best_effort()), sort_keys=True))
  m = evaluate_lib.evaluate(step, variables, source, par)
  return {k: v for k, v in m.items() if k != "confusion_matrix"}


def on_test_and_shifts(config, cfg, model_cfg, num_classes: int, variables: dict,
                       test_split: str) -> dict:
  """``evaluate_variables`` on the test split (key None) and on every shift of ``config``."""
  seed = config.get("shift_seed", 0)
  return {shift: evaluate_variables(model_cfg, num_classes, variables, cfg.data, test_split,
                                    pp_eval=pp_for(cfg.data, shift, seed))
          for shift in [None, *schema.shifts_of(config)]}


class _Replay:
  """An eval stream read once and replayed from memory (building the tf.data pipeline again cost
  ~1.5 s per evaluation)."""

  def __init__(self, source):
    self.info = source.info
    self.batches = [{k: np.asarray(v) for k, v in b.items()}
                    for b in source.eval_iterator(process_index=0, process_count=1)]

  def eval_iterator(self, *, process_index: int = 0, process_count: int = 1):
    if process_count != 1:
      raise ValueError("the benchmark harness evaluates in one process")
    del process_index
    yield from self.batches


@functools.lru_cache(maxsize=32)
def _eval_batches(data_cfg_json: str) -> _Replay:
  return _Replay(inputs.from_config(config_dict.ConfigDict(json.loads(data_cfg_json))))


def load_export(export: str) -> tuple[dict, dict]:
  """``(model.json's content, variables)`` of an exported weights dir."""
  meta = models.read_meta(export)
  return meta, weights.load(export, arch=meta["arch"])


def num_classes(data_cfg) -> int:
  """The dataset's class count, from its metadata: not the largest label a draw happens to hold
  (memoised per dataset: opening a split reads its labels, ~0.4 s a call)."""
  key = (data_cfg.dataset, data_cfg.get("data_dir"), data_cfg.train_split.split("[")[0])
  if key not in _NUM_CLASSES:
    from jtransfer.data import sources  # the split's metadata
    _NUM_CLASSES[key] = int(sources.open_split(data_cfg, train=True).num_classes)
  return _NUM_CLASSES[key]


_NUM_CLASSES: dict[tuple, int] = {}


def few(cell, x, y):
  """The cell's few-shot draw of ``(x, y)`` (all of them for 'all' cells)."""
  if cell.shots == "all":
    return x, y
  idx = data.sample_per_class(y, int(cell.shots), cell.seed, where=f"{cell.dataset} pool")
  return x[idx], y[idx]


__all__ = ["evaluate_variables", "few", "load_export", "num_classes", "on_test_and_shifts",
           "pp_for"]
