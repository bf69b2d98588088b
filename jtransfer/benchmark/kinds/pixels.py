"""The pixel baselines: a feature evaluator fitted on the raw preprocessed pixels (no transfer).

    v.pixels_knn = schema.variant("pixels_knn", search={"k": (1, 5, 10)})
    v.pixels_logreg = schema.variant("pixels_logreg", search={"C": (0.01, 0.1, 1.0)})

``pixels_<evaluator>`` for each evaluator of ``benchmark/evaluators.py`` (ridge, knn,
linear_probe_cached, logreg, ncm). Everything is as for the feature-classifier kind of the same
evaluator (``kinds/features.py``: the cell's few-shot draw of the pool, validation for the
choice, then the test split and each shift) except the inputs: each example is the cell's
eval-preprocessed image (``data.pp_eval``, at the cell's input size; the shifted test sets are
the same corruptions the trained kinds are tested on) flattened to ``[H·W·C]``, cached per
(data config, split, shift) by the benchmark's ``FeatureCache`` as its identity "backbone".

No model runs: ``train_gflops`` is 0, ``peak_bytes`` None, ``trainable_params`` the
classifier's. A pixel variant's ``init`` and freezing are unused, and it cannot serve the
zero-shot section (that needs a backbone's features).
"""

from __future__ import annotations

from jtransfer.benchmark.kinds.base import Context
from jtransfer.benchmark.kinds.features import Features, feature_arrays


class Pixels(Features):
  """``evaluator`` on the flattened pixels of each split, as the kind ``pixels_<evaluator>``."""

  uses_features = False

  def __init__(self, evaluator: str):
    super().__init__(evaluator)
    self.name = f"pixels_{evaluator}"

  def arrays(self, ctx: Context, cfg, split: str, *, shift=None):
    return feature_arrays(ctx, cfg, split, shift=shift, pixels=True)

  def forward_cost(self, ctx: Context, cfg, n: int) -> dict:
    del ctx, cfg, n
    return {"train_gflops": 0.0, "peak_bytes": None}


__all__ = ["Pixels"]
