"""Tasks: what a training run optimises and on which streams; the trainer runs any of them.

    from jtransfer import tasks
    task = tasks.from_config(config)   # the one place a config picks its task

``Task`` (supervised) is the default; ``Distill`` when ``loss.distill.teacher`` is set;
``SourceOnly`` / ``DANN`` for ``adapt.method``. See ``tasks/base.py`` for the seam.
"""

from __future__ import annotations

from typing import Any

from jtransfer.tasks.base import Task
from jtransfer.tasks.dann import DANN, SourceOnly
from jtransfer.tasks.distill import Distill


def from_config(config: Any) -> Task:
  """The task ``config`` describes (validated by ``train.config.validate`` beforehand)."""
  if config.adapt.method == "dann":
    return DANN(config)
  if config.adapt.method == "source_only":
    return SourceOnly(config)
  if config.loss.distill.teacher:
    return Distill(config)
  return Task(config)


__all__ = ["DANN", "Distill", "SourceOnly", "Task", "from_config"]
