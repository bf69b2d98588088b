"""The benchmark's 'wise' kind: WiSE-FT (``jtransfer/methods/wise_ft.py``) on a cell's fine-tune.

    v.wise_ft = schema.variant("wise", teacher="lp_ft", search={"alpha": (0, .25, .5, .75, 1)})

Interpolation between this cell's ``teacher`` fine-tune's start point (the exact variables its
run started from) and its export, α a search key chosen on validation; no training, so its cost
is the teacher's. The paper's θ0 is a model whose head works — the zero-shot model, or for a
supervised backbone the linear probe — so the teacher to name is an 'lp_ft' variant, whose start
is the backbone with the converged probe's head (``kinds/lp_ft.py``): α = 0 is then the probe
model exactly. Naming a plain 'train' fine-tune makes θ0 the backbone with a *random* head, which
the paper does not do; the row says which (``wise_theta0``).

Besides the α chosen on validation, the row holds the whole curve: test and OOD top-1 at every α
of the grid (``alpha_curve``), computed after the choice and never read by it — the paper reports
α = 0.5 and the curve, and so does the report.
"""

from __future__ import annotations

import functools
import json

from ml_collections import config_dict
import numpy as np

from jtransfer.benchmark import evaluation, schema
from jtransfer.benchmark.kinds.base import COST_FIELDS, Context, Kind
from jtransfer.benchmark.kinds.trained import Trained, exported, run_config
from jtransfer.methods.wise_ft import interpolate
from jtransfer.train import inputs, trainer

__all__ = ["WiSE"]


@functools.lru_cache(maxsize=8)
def _start_variables(cfg_json: str, num_classes: int) -> dict:
  """The exact start point of a fine-tune (pretrained backbone + its seed's fresh head)."""
  cfg = config_dict.ConfigDict(json.loads(cfg_json))
  model = trainer.build_model(cfg.model, num_classes)
  shape = inputs.from_config(cfg.data).info.image_shape
  variables, _ = trainer.init_variables(model, cfg.model, shape, cfg.train.seed)
  return variables


def _ends(teacher: dict):
  """WiSE-FT's ends: the teacher run's initial variables and its exported (fine-tuned) ones,
  with the teacher run's config (its ``config.json``, read once)."""
  meta, tuned = exported(teacher["run_dir"])
  cfg = run_config(teacher["run_dir"])
  start = _start_variables(cfg.to_json_best_effort(sort_keys=True), int(meta["num_classes"]))
  return start, meta, tuned, cfg


class WiSE(Kind):
  """'wise': θ(α) between the teacher fine-tune's start and end; α in [0, 1] a search key."""

  name = "wise"
  arg_names = frozenset({"alpha"})
  needs_teacher = takes_teacher = True
  teacher_kinds = (Trained,)

  def __init__(self):
    self._curves: dict[str, dict] = {}  # cell id -> alpha -> test/OOD top-1, test to row

  def check(self, config, name, v, grid, where):
    for p in grid:
      alpha = {**dict(v.args), **p}.get("alpha", 1.0)
      if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"{where}: alpha={alpha!r} outside [0, 1]")

  def _mixed(self, ctx: Context, cell, point, ends):
    """``(model config, classes, θ(α))`` at ``point`` between ``ends`` (``_ends``)."""
    start, meta, tuned, cfg = ends
    alpha = float(ctx.args(cell, point).get("alpha", 1.0))
    return cfg.model, int(meta["num_classes"]), interpolate(start, tuned, alpha)

  def fit(self, ctx: Context, cell, point, splits) -> dict:
    teacher = ctx.teacher(cell)
    model_cfg, num_classes, mixed = self._mixed(ctx, cell, point, _ends(teacher))
    cfg = ctx.cell_config(cell, splits=splits)
    val = evaluation.evaluate_variables(model_cfg, num_classes, mixed, cfg.data, splits.val)
    return {"val": val, **{k: teacher[k] for k in COST_FIELDS}}

  def test(self, ctx: Context, cell, chosen, splits) -> dict:
    """The chosen α on test and the shifts; then (the choice made) every α of the grid, kept
    for the row's ``alpha_curve``."""
    cfg = ctx.cell_config(cell, point=chosen["point"], splits=splits)
    ends = _ends(ctx.teacher(cell))  # read once for the whole curve
    out, curve = None, {}
    for point in [chosen["point"]] + [p for p in schema.points(ctx.variant(cell))
                                      if p != chosen["point"]]:
      model_cfg, num_classes, mixed = self._mixed(ctx, cell, point, ends)
      scores = evaluation.on_test_and_shifts(ctx.config, cfg, model_cfg, num_classes, mixed,
                                             splits.test)
      out = scores if out is None else out
      ood = [float(m["top1"]) for k, m in scores.items() if k is not None]
      alpha = float(ctx.args(cell, point).get("alpha", 1.0))
      curve[alpha] = {"test_top1": float(scores[None]["top1"]),
                      "ood_mean": float(np.mean(ood)) if ood else None}
    self._curves[cell.id] = dict(sorted(curve.items()))
    return out

  def finish_row(self, ctx: Context, cell, chosen, row) -> None:
    row["alpha_curve"] = {str(a): c for a, c in self._curves.pop(cell.id, {}).items()}
    row["wise_theta0"] = ("probe" if ctx.config.variants[ctx.variant(cell).teacher].kind == "lp_ft"
                          else "random head")
    teacher = ctx.teacher(cell)  # zero extra training: its cost is the teacher's
    row["search_gflops"] = teacher["search_gflops"]
    row["wall_s"] += teacher["wall_s"]
