"""The benchmark's kinds, by the name a variant gives (``schema.variant(kind, ...)``).

    from jtransfer.benchmark import kinds
    kinds.get("train").fit(ctx, cell, point, splits)

The kinds: 'train', 'surgical' and 'surgical_shift' (``trained.py``: a fine-tune, one stage of
it, one stage of it trained on a declared shift), 'lp_ft'
(``lp_ft.py``: fine-tuning from a 'logreg' probe's head), 'wise' (``wise.py``: weight-space
ensembles of a fine-tune with its start), 'fedavg' (``fedavg.py``), one feature-classifier kind
per evaluator of ``benchmark/evaluators.py`` (``features.py``: 'ridge', 'knn',
'linear_probe_cached', 'logreg' — logistic regression fitted to convergence — and 'ncm', on the
backbone's cached features), and the pixel baselines ``pixels_<evaluator>`` (``pixels.py``: the
same evaluators on the flattened preprocessed images; no transfer).

Adding a kind: one file here implementing ``base.Kind`` (``check``, ``configure``, ``fit``,
``test``, ``finish_row``), one line in ``KINDS`` below, and its test; the runner, the schema's
validation and the report need no change (docs/architecture.md).
"""

from __future__ import annotations

from jtransfer.benchmark import evaluators
from jtransfer.benchmark.kinds.base import COST_FIELDS, Context, Kind
from jtransfer.benchmark.kinds.features import Features
from jtransfer.benchmark.kinds.fedavg import FedAvg
from jtransfer.benchmark.kinds.lp_ft import LPFT
from jtransfer.benchmark.kinds.pixels import Pixels
from jtransfer.benchmark.kinds.trained import Surgical, SurgicalShift, Trained
from jtransfer.benchmark.kinds.wise import WiSE

KINDS: dict[str, Kind] = {
    "train": Trained(),
    "surgical": Surgical(),
    "surgical_shift": SurgicalShift(),
    "lp_ft": LPFT(),
    "wise": WiSE(),
    "fedavg": FedAvg(),
    **{name: Features(name) for name in evaluators.EVALUATORS},
    **{f"pixels_{name}": Pixels(name) for name in evaluators.EVALUATORS},
}


def get(name: str) -> Kind:
  """The kind registered under ``name``; ValueError listing the known ones."""
  if name not in KINDS:
    raise ValueError(f"unknown kind {name!r}; known: {', '.join(KINDS)}")
  return KINDS[name]


__all__ = ["COST_FIELDS", "KINDS", "Context", "Kind", "get"]
