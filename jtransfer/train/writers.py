"""Where a run's record goes: JSON lines, and TensorBoard through CLU's writer.

    writer = writers.MetricWriter(workdir)                  # no-op off process 0
    writer.write(step, {"train/loss": 0.7, "eval/confusion_matrix": [[3, 1], [0, 4]]})

Only process 0 writes; the others get writers that do nothing, so callers never branch on it.
Every record goes whole into ``metrics.jsonl``; its scalars also go to CLU's TensorBoard writer.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np

from jtransfer import workdir as wd
from jtransfer.workdir import read_jsonl  # the one JSONL reader (tolerates a torn line)


def jsonable(v: Any) -> Any:
  """``v`` with numpy arrays/scalars as lists/numbers, recursively; NaN/inf as strings ("nan"),
  since JSON has none and strict readers reject them."""
  if isinstance(v, dict):
    return {k: jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [jsonable(x) for x in v]
  if isinstance(v, (np.ndarray, np.generic)):
    return jsonable(v.tolist())
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return v


def _is_scalar(v: Any) -> bool:
  return np.ndim(v) == 0 and isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


class MetricWriter:
  """Appends ``{"step": s, **metrics}`` to ``workdir/metrics.jsonl``; scalars to TensorBoard.

  Non-scalar values (a confusion matrix) go to the JSON line only. ``tensorboard=False`` skips the
  event files (and the TensorFlow import).
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = wd.RunDir(workdir).metrics
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if tensorboard:
      from clu import metric_writers  # pylint: disable=g-import-not-at-top  (TensorFlow: slow)
      self._tb = metric_writers.SummaryWriter(wd.RunDir(workdir).tensorboard)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    line = {"step": int(step), **jsonable(dict(metrics))}
    with open(self.path, "a") as f:
      f.write(json.dumps(line) + "\n")
    if self._tb is not None:
      scalars = {k: float(v) for k, v in metrics.items() if _is_scalar(v)}
      if scalars:
        self._tb.write_scalars(int(step), scalars)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


__all__ = ["MetricWriter", "jsonable", "read_jsonl"]
