"""LP-FT as Kumar et al. (ICLR 2022, "Fine-tuning can distort pretrained features") define it:
fit a linear probe to convergence, then fine-tune the whole network starting from it.

    v.logreg = schema.variant("logreg", search={"C": (0.1, 1.0, 10.0)})
    v.lp_ft = schema.variant("lp_ft", teacher="logreg", freezing=full_ft_freezing,
                             search={"optim.lr": (1e-4, 3e-4, 1e-3)})   # full FT's grid

The probe is the cell's ``teacher``, a 'logreg' feature variant: multinomial logistic
regression fitted by L-BFGS to convergence on the cell's training draw (its regulariser ``C``
chosen on validation like any feature classifier's), on the backbone's ``pre_logits`` under
evaluation preprocessing. Its weights, mapped back to the raw feature space
(``evaluators.fit_logreg``), become the network's head; that start (pretrained backbone + probe
head) is written once per cell (``probe_start/`` beside the cell's trials) and every trial trains
from it, under the variant's freezing, step budget and learning-rate grid — the same as full
fine-tuning's when the config says so. The paper's fine-tuning stage is plain full fine-tuning,
so nothing else differs; the start is what WiSE-FT calls θ0 (``teacher="lp_ft"`` in a 'wise'
variant interpolates between it and the fine-tune).
"""

from __future__ import annotations

import os

import numpy as np

from jtransfer import models, weights
from jtransfer import workdir as wd
from jtransfer.benchmark import evaluation, evaluators
from jtransfer.benchmark.kinds.base import Context
from jtransfer.benchmark.kinds.features import Features, feature_arrays
from jtransfer.benchmark.kinds.trained import Trained
from jtransfer.train import inputs, trainer
from jtransfer.train.config import apply_overrides


def probe_head(ctx: Context, cell, splits) -> dict:
  """``{'kernel', 'bias', 'converged', 'C'}``: the teacher probe's fit on this cell's draw, in
  the space of the backbone's raw ``pre_logits``."""
  probe = ctx.teacher(cell)
  cfg = ctx.cell_config(cell, splits=splits)
  x, y = evaluation.few(cell, *feature_arrays(ctx, cfg, splits.pool))
  args = {**dict(ctx.config.variants[ctx.variant(cell).teacher].args), **dict(probe["chosen"])}
  fit = evaluators.fit_logreg(x, y, num_classes=evaluation.num_classes(cfg.data), **args)
  return {**fit, **args}


def probe_start(ctx: Context, cell, splits) -> tuple[str, dict]:
  """The cell's start (pretrained backbone + probe head) as an export dir, written once."""
  rd = wd.RunDir(os.path.join(os.path.dirname(ctx.run_dir_of(cell, {})), "probe_start"))
  if rd.finished():  # the cell's other trials, or a restart: fitted and written once
    return rd.export, rd.read_result()
  head = probe_head(ctx, cell, splits)
  facts = {"probe_C": head.get("C"), "probe_converged": bool(head["converged"])}
  cfg = ctx.cell_config(cell, splits=splits)
  num_classes = evaluation.num_classes(cfg.data)
  model = trainer.build_model(cfg.model, num_classes)
  shape = inputs.from_config(cfg.data).info.image_shape
  variables, _ = trainer.init_variables(model, cfg.model, shape, int(cfg.train.seed))
  fc = variables["params"]["fc"]
  for name in ("kernel", "bias"):
    if np.shape(head[name]) != np.shape(fc[name]):
      raise ValueError(f"{cell.id}: the probe's {name} is {np.shape(head[name])}, the head's "
                       f"fc/{name} {np.shape(fc[name])}")
    fc[name] = np.asarray(head[name], fc[name].dtype)
  os.makedirs(rd.path, exist_ok=True)
  meta = models.meta(cfg.model, num_classes=num_classes, class_names=[], step=0)
  weights.save(variables, rd.export, metadata=meta, overwrite=True)
  rd.write_result(facts)
  return rd.export, facts


class LPFT(Trained):
  """'lp_ft': a trained variant whose head starts from its teacher probe's fit."""

  name = "lp_ft"
  needs_teacher = True
  teacher_kinds = (Features,)

  def check(self, config, name, v, grid, where):
    if config.variants[v.teacher].kind != "logreg":
      raise ValueError(f"{where}.teacher={v.teacher!r} must be a 'logreg' variant (the probe)")
    if v.get("init", "pretrained") != "pretrained":
      raise ValueError(f"{where}: init={v.init!r}; LP-FT starts from the pretrained backbone")

  def configure(self, cfg, v, point, *, teacher, where):
    if point:
      apply_overrides(cfg, tuple(point.items()), f"{where}.search")
    if teacher:  # the probe start: every leaf loaded, the head included
      cfg.model.init = teacher
      cfg.model.init_skip = ()

  def fit(self, ctx: Context, cell, point, splits) -> dict:
    start, facts = probe_start(ctx, cell, splits)
    return {**self.train(ctx, cell, point, splits, teacher=start), **facts}

  def finish_row(self, ctx: Context, cell, chosen, row) -> None:
    row["probe_C"] = chosen.get("probe_C")
    row["probe_converged"] = chosen.get("probe_converged")


__all__ = ["LPFT", "probe_head", "probe_start"]
