"""The benchmark harness's public face: variants × datasets × examples-per-class × seeds.

    from jtransfer.benchmark import harness
    v = harness.variant("train", freezing=optim.get_freezing_config("full_ft"))
    rows = harness.run(config, "workdirs/demo")     # config: configs/benchmark/*.py

Where each piece lives (docs/benchmark.md has the protocol and outputs):
- ``schema.py``: a config's variants (``variant``), protocol, cells and grids;
- ``compose.py``: a cell's splits (pool / validation / test) and config, and ``validate``;
- ``kinds/``: how a grid point of each kind is fitted and its choice tested ('train',
  'surgical', 'wise', 'fedavg', the feature classifiers), one file each, registered in
  ``kinds.KINDS``;
- ``runner.py``: cells, trials, the choice on validation, the test, records and restarts;
- ``evaluation.py``, ``cost.py``, ``features.py``, ``report.py``: what they say.
"""

from jtransfer.benchmark.compose import Splits, cell_config, splits_for, validate
from jtransfer.benchmark.cost import CostMeter
from jtransfer.benchmark.evaluation import evaluate_variables
from jtransfer.benchmark.kinds import KINDS
from jtransfer.benchmark.runner import ensure_pretrained, run
from jtransfer.benchmark.schema import (
  SELECTIONS,
  Cell,
  cells,
  default_protocol,
  point_id,
  points,
  shift_name,
  variant,
)
from jtransfer.train.config import ConfigKeyError

__all__ = ["KINDS", "SELECTIONS", "Cell", "ConfigKeyError", "CostMeter", "Splits", "cell_config",
           "cells", "default_protocol", "ensure_pretrained", "evaluate_variables", "point_id",
           "points", "run", "shift_name", "splits_for", "validate", "variant"]
