"""Where a run's record goes: JSON lines, TensorBoard event files and a progress line.

    writer = writers.MetricWriter(workdir)                  # no-op off process 0
    writer.write(step, {"train/loss": 0.7, "train/img_per_s": 812.0})
    progress = writers.Progress(total_steps=1000, batch_size=256)
    print(progress.update(step=10, now=time.monotonic()))  # "10/1000 [  1%] 812.0 img/s ETA 0:01:02"

Only process 0 writes; the others get writers that do nothing, so callers never branch on it.
``Progress`` takes the time as an argument (``now``) and never reads a clock: tests pass any clock.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Mapping

import numpy as np


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


class MetricWriter:
  """Appends ``{"step": s, **metrics}`` to ``workdir/metrics.jsonl`` and scalars to TensorBoard.

  Non-scalar values (a confusion matrix) go to the JSON line only. ``tensorboard=False`` skips the
  event files (and the TensorFlow import).
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if tensorboard:
      # Slow imports, only on process 0. tf.summary.write is TensorFlow's own op; tf.summary.scalar
      # would need the tensorboard package, so the scalar metadata is written here as it does.
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._scalar_metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
          data_class=summary_pb2.DATA_CLASS_SCALAR)
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    line = {"step": int(step), **jsonable(dict(metrics))}
    with open(self.path, "a") as f:
      f.write(json.dumps(line) + "\n")
    if self._tb is not None:
      with self._tb.as_default(step=int(step)):
        for k, v in metrics.items():
          if np.ndim(v) == 0 and isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
            self._tf.summary.write(k, self._tf.constant(float(v), self._tf.float32),
                                   metadata=self._scalar_metadata)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def format_duration(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
  """Steps done, img/s and ETA, measured between successive ``update`` calls.

  The rate is over the steps since the previous update (so compilation in the first step does not
  haunt the ETA for the rest of the run); the ETA assumes that rate for the remaining steps.
  """

  def __init__(self, total_steps: int, batch_size: int, *, stream=None, enabled: bool = True):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.stream = stream if stream is not None else sys.stderr
    self.enabled = enabled
    self._last: tuple[int, float] | None = None
    self.img_per_s = float("nan")

  def start(self, step: int, now: float) -> None:
    self._last = (step, now)

  def update(self, step: int, now: float) -> str:
    """Returns (and, when enabled, writes) the progress line for ``step`` steps done at ``now``."""
    if self._last is not None and now > self._last[1] and step > self._last[0]:
      steps_per_s = (step - self._last[0]) / (now - self._last[1])
      self.img_per_s = steps_per_s * self.batch_size
      eta = format_duration((self.total_steps - step) / steps_per_s)
    else:
      eta = "?"
    self._last = (step, now)
    pct = 100.0 * step / max(1, self.total_steps)
    line = f"{step}/{self.total_steps} [{pct:3.0f}%] {self.img_per_s:.1f} img/s ETA {eta}"
    if self.enabled:
      end = "\r" if getattr(self.stream, "isatty", lambda: False)() and step < self.total_steps else "\n"
      self.stream.write(line + end)
      self.stream.flush()
    return line


__all__ = ["MetricWriter", "Progress", "format_duration", "jsonable", "read_jsonl"]
