"""The feature-classifier kinds: an evaluator of ``benchmark/evaluators.py`` (ridge, kNN, the cached
linear probe, logistic regression, nearest class mean) on features extracted once per split and
cached.

    v.ridge = schema.variant("ridge", search={"l2_reg": (0.1, 1.0, 10.0)})

A trial fits the evaluator on the cell's few-shot draw of the pool's features and scores it on
validation's; the chosen point is fitted again the same way and scored on the test features and
each shift's (the shifted test sets are extracted, and cached, like any split). Its arguments are
the evaluator's keyword-only parameters; an evaluator with a ``seed`` gets the cell's.
"""

from __future__ import annotations

import inspect

import numpy as np
from sklearn import model_selection

from jtransfer.benchmark import evaluation, evaluators, schema
from jtransfer.benchmark.kinds.base import Context, Kind
from jtransfer.train import metrics as metrics_lib

# Parameters a fitted classifier holds, by evaluator, for features of width d and c classes
# (a linear classifier's d·c + c unless listed).
_PARAMS = {"knn": lambda d, c: 0, "ridge": lambda d, c: (d + 1) * c}


def feature_arrays(ctx: Context, cfg, split: str, *, shift=None, pixels: bool = False):
  """``(features, labels)`` of ``split`` under ``cfg`` (shifted when given), from the cache;
  ``pixels=True``: the flattened images instead (the cache's identity "backbone")."""
  dcfg = cfg.data.copy_and_resolve_references()
  with dcfg.unlocked():
    dcfg.pp_eval = evaluation.pp_for(cfg.data, shift, ctx.config.get("shift_seed", 0))
  return ctx.cache.get(None if pixels else cfg.model, dcfg, split)


class Features(Kind):
  """One evaluator of ``evaluators.EVALUATORS`` as a kind."""

  uses_features = True
  cross_validates = True

  def __init__(self, evaluator: str):
    self.name = self.evaluator = evaluator
    self.fn = evaluators.EVALUATORS[evaluator]
    params = inspect.signature(self.fn).parameters
    self.seeded = "seed" in params
    self.arg_names = frozenset(n for n, p in params.items() if p.kind == p.KEYWORD_ONLY
                               ) - {"num_classes", "seed"}

  def _predict(self, cell, cfg, args: dict, x, y, tx) -> dict:
    kwargs = {**args, **({"seed": cell.seed} if self.seeded else {})}
    return self.fn(x, y, tx, num_classes=evaluation.num_classes(cfg.data), **kwargs)

  def _scores(self, cell, cfg, args: dict, x, y, tx, ty) -> dict:
    out = self._predict(cell, cfg, args, x, y, tx)
    m = metrics_lib.classification_metrics(out["logits"], ty)
    # The evaluator's own facts ride along (logreg's 'converged', 'n_iter').
    extra = {k: v for k, v in out.items() if k not in ("logits", "predictions")}
    return {**{k: v for k, v in m.items() if k != "confusion_matrix"}, **extra}

  def arrays(self, ctx: Context, cfg, split: str, *, shift=None):
    """``(x, y)`` the evaluator sees for ``split``: the backbone's cached features."""
    return feature_arrays(ctx, cfg, split, shift=shift)

  def forward_cost(self, ctx: Context, cfg, n: int) -> dict:
    """``{'train_gflops', 'peak_bytes'}`` of making the ``n`` training examples' features."""
    fwd = ctx.meter.forward(cfg.model, cfg.data, cfg.data.eval_batch_size)
    f = fwd["flops_per_example"]
    return {"train_gflops": None if f is None else f * n / 1e9, "peak_bytes": fwd["peak_bytes"]}

  def _cross_validate(self, cell, cfg, args: dict, x, y) -> dict:
    """Stratified k-fold accuracy inside the draw (k = min(shots, 5)): no label beyond it."""
    folds = model_selection.StratifiedKFold(n_splits=min(int(cell.shots), 5), shuffle=True,
                                            random_state=int(cell.seed))
    correct = sum(int(np.sum(self._predict(cell, cfg, args, x[tr], y[tr], x[te])["predictions"]
                             == y[te])) for tr, te in folds.split(x, y))
    return {"top1": correct / len(y), "num_examples": int(len(y)), "cross_validated": True}

  def fit(self, ctx: Context, cell, point, splits) -> dict:
    cfg = ctx.cell_config(cell, splits=splits)
    x, y = evaluation.few(cell, *self.arrays(ctx, cfg, splits.pool))
    d, c = x.shape[1], evaluation.num_classes(cfg.data)
    args = ctx.args(cell, point)
    if schema.cross_validated(ctx.config, cell, self.cross_validates):
      val = self._cross_validate(cell, cfg, args, x, y)
    else:
      val = self._scores(cell, cfg, args, x, y, *self.arrays(ctx, cfg, splits.val))
    return {"val": val,
            "trainable_params": _PARAMS.get(self.evaluator, lambda d, c: d * c + c)(d, c),
            **self.forward_cost(ctx, cfg, len(x))}

  def test(self, ctx: Context, cell, chosen, splits) -> dict:
    cfg = ctx.cell_config(cell, point=chosen["point"], splits=splits)
    x, y = evaluation.few(cell, *self.arrays(ctx, cfg, splits.pool))
    args = ctx.args(cell, chosen["point"])
    return {shift: self._scores(cell, cfg, args, x, y,
                                *self.arrays(ctx, cfg, splits.test, shift=shift))
            for shift in [None, *schema.shifts_of(ctx.config)]}


__all__ = ["Features", "feature_arrays"]
