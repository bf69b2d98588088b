"""Transfer methods, each in one file or folder; the one place a config picks its training task.

    from jtransfer import methods
    task = methods.task_for(config)          # Task, Distill, SourceOnly or DANN
    result = train.train_and_evaluate(config, workdir, task=task)

Training tasks (a ``train.task.Task`` subclass each, run by the one trainer):
- ``distill.py``: knowledge distillation (Hinton et al. 2015), ``loss.distill.teacher``;
- ``adapt/``: domain adaptation, ``adapt.method``: ``source.py`` the streams and the source-only
  baseline, ``dann.py`` DANN, ``grl.py`` the gradient reversal layer, ``domain_head.py`` its
  classifier.

Methods with their own loop or no training (built on ``train.step`` and the freezing rules):
- ``fedavg.py``: FedAvg over a ``clients`` mesh (McMahan et al. 2017);
- ``reptile.py``: Reptile (Nichol et al. 2018) and episodes;
- ``wise_ft.py``: WiSE-FT's weight-space interpolation (Wortsman et al. 2022);
- ``zeroshot/``: ESZSL over class attributes (Romera-Paredes & Torr 2015).

The benchmark runs them through its kinds (``jtransfer/benchmark/kinds/``: adapters that pick a
cell's data and score it; the algorithm stays here).
"""

from __future__ import annotations

from typing import Any

from jtransfer.methods.adapt.dann import DANN
from jtransfer.methods.adapt.source import SourceOnly
from jtransfer.methods.distill import Distill
from jtransfer.train.task import Task, method_of

# Training tasks by the name ``train.task.method_of(config)`` gives.
TASKS = {"dann": DANN, "source_only": SourceOnly, "distill": Distill}


def task_for(config: Any) -> Task:
  """The task ``config`` describes (validated by ``train.config.validate`` beforehand)."""
  name = method_of(config)
  return Task(config) if name is None else TASKS[name](config)


__all__ = ["TASKS", "task_for"]
