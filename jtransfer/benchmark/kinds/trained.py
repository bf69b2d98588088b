"""The kinds trained by the one trainer: 'train' (any freezing, distillation with ``teacher=``)
and 'surgical' (one stage of the family and the head train; the stage is a search key).

    v.full_finetune = schema.variant("train", freezing=optim.get_freezing_config("full_ft"),
                                     search={"optim.lr": (1e-4, 3e-4)})
    v.surgical = schema.variant("surgical", search={"stage": (1, 7)})

A trial is ``train.train_and_evaluate`` on the pool, evaluated on validation, in its own run dir
(``runs/DATASET/VARIANT/shots-K/seed-S/POINT``); the chosen trial's export is evaluated on the
test split and every shift.
"""

from __future__ import annotations

import json
import os

from ml_collections import config_dict

from jtransfer import models, optim
from jtransfer.benchmark import evaluation
from jtransfer.benchmark.kinds.base import Context, Kind
from jtransfer.train import trainer
from jtransfer.train.config import apply_overrides


def run_config(run_dir: str) -> config_dict.ConfigDict:
  """The config a trial's run dir records (``config.json``)."""
  with open(os.path.join(run_dir, "config.json")) as f:
    return config_dict.ConfigDict(json.load(f))


class Trained(Kind):
  """'train': the trainer on the cell's pool; a search over dotted config keys."""

  name = "train"
  arg_names = None
  takes_teacher = True
  exports = True

  def configure(self, cfg, v, point, *, teacher, where):
    if point:
      apply_overrides(cfg, tuple(point.items()), f"{where}.search")
    if v.get("teacher"):
      cfg.loss.distill.teacher = teacher

  def fit(self, ctx: Context, cell, point, splits) -> dict:
    run_dir = ctx.run_dir_of(cell, point)
    teacher = ctx.teacher(cell)
    cfg = ctx.cell_config(cell, point=point, splits=splits,
                          teacher=os.path.join(teacher["run_dir"], "export") if teacher else "")
    result = trainer.train_and_evaluate(cfg, run_dir)
    steps = int(result["step"])
    return {"val": result["eval"], "run_dir": run_dir, "steps": steps,
            **ctx.meter.train(cfg, run_dir, steps)}

  def test(self, ctx: Context, cell, chosen, splits) -> dict:
    return test_export(ctx, cell, chosen, splits)


def test_export(ctx: Context, cell, chosen: dict, splits) -> dict:
  """The chosen trial's ``export/`` on the test split and every shift (its run's model config)."""
  run_dir = chosen["run_dir"]
  meta, variables = evaluation.load_export(os.path.join(run_dir, "export"))
  cfg = ctx.cell_config(cell, point=chosen["point"], splits=splits)
  return evaluation.on_test_and_shifts(ctx.config, cfg, run_config(run_dir).model,
                                       meta["num_classes"], variables, splits.test)


def surgical_freezing(arch: str, stage: int, base_fz):
  """Only ``stages[stage]`` and the head train ('custom' rules from the family's spec); the head
  at the base freezing's ``head_lr_mult``, BatchNorms in its ``bn_mode``."""
  spec = models.get_spec(arch)
  fz = optim.get_freezing_config("custom")
  head_lr_mult = float(dict(base_fz.get("strategy_args") or {}).get("head_lr_mult", 1.0))
  fz.param_rules = [(spec.head, head_lr_mult), (spec.stages[stage], 1.0), (".*", "frozen")]
  fz.bn_mode = base_fz.bn_mode
  return fz


class Surgical(Trained):
  """'surgical' (Lee et al. 2023): one stage (an index into the family's stages) and the head."""

  name = "surgical"
  arg_names = frozenset({"stage"})

  def check(self, config, name, v, grid, where):
    stages = models.get_spec(config.base.model.arch).stages
    for p in grid:
      s = {**dict(v.args), **p}.get("stage")
      if not isinstance(s, int) or not -len(stages) <= s < len(stages):
        raise ValueError(f"{where}: stage={s!r} must index the {len(stages)} stages {stages}")

  def configure(self, cfg, v, point, *, teacher, where):
    stage = {**dict(v.args), **point}["stage"]
    cfg.freezing = surgical_freezing(cfg.model.arch, stage, cfg.freezing)
    if v.get("teacher"):
      cfg.loss.distill.teacher = teacher


__all__ = ["Surgical", "Trained", "run_config", "surgical_freezing", "test_export"]
