"""What the trainer reads: a ``Source`` of process-local train and eval batches, and its ``Info``.

    source = inputs.from_config(config.data)                        # jtransfer.data pipelines
    source = inputs.ArraySource((x, y), (x_eval, y_eval), batch_size=16, eval_batch_size=16)
    it = source.train_iterator(seed=0, start_step=0, process_index=0, process_count=1)
    for batch in source.eval_iterator(process_index=0, process_count=1): ...   # + 'mask'

A source's train batches are deterministic in (seed, step), so a resumed run reads exactly what an
uninterrupted one would. Batches are process-LOCAL: the global batch is the processes' parts in
process order. ``ArraySource`` holds small in-memory arrays (tests, toy runs); ``from_config`` wraps
``jtransfer.data``.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Protocol, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Info:
  num_classes: int
  num_train: int
  num_eval: int
  class_names: tuple[str, ...]
  image_shape: tuple[int, ...]  # (H, W, C) of a preprocessed image


class Source(Protocol):
  info: Info
  batch_size: int        # global train batch
  eval_batch_size: int   # global eval batch

  def train_iterator(self, *, seed: int, start_step: int, process_index: int,
                     process_count: int) -> Iterator[dict]: ...

  def eval_iterator(self, *, process_index: int, process_count: int) -> Iterator[dict]: ...


def _local_rows(n: int, process_index: int, process_count: int) -> slice:
  if n % process_count:
    raise ValueError(f"Global batch {n} is not divisible by {process_count} processes")
  k = n // process_count
  return slice(process_index * k, (process_index + 1) * k)


class ArraySource:
  """Train/eval arrays in memory. Train order: a fresh permutation per epoch, from (seed, epoch)."""

  def __init__(self, train: tuple[np.ndarray, np.ndarray], eval: tuple[np.ndarray, np.ndarray], *,
               batch_size: int, eval_batch_size: int, num_classes: int | None = None,
               class_names: Sequence[str] | None = None):
    self.train_images, self.train_labels = (np.asarray(a) for a in train)
    self.eval_images, self.eval_labels = (np.asarray(a) for a in eval)
    self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
    if num_classes is None:
      num_classes = int(max(self.train_labels.max(), self.eval_labels.max())) + 1
    names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))
    self.info = Info(num_classes, len(self.train_labels), len(self.eval_labels), names,
                     tuple(self.train_images.shape[1:]))

  def train_indices(self, seed: int, step: int) -> np.ndarray:
    """Indices of the global batch of ``step``."""
    n, b = len(self.train_labels), self.batch_size
    flat = np.arange(step * b, (step + 1) * b)
    out = np.empty(b, np.int64)
    for epoch in np.unique(flat // n):
      sel = flat // n == epoch
      perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
      out[sel] = perm[flat[sel] % n]
    return out

  def train_iterator(self, *, seed: int, start_step: int, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict]:
    rows = _local_rows(self.batch_size, process_index, process_count)
    step = start_step
    while True:
      idx = self.train_indices(seed, step)[rows]
      yield {"image": self.train_images[idx].astype(np.float32),
             "label": self.train_labels[idx].astype(np.int32)}
      step += 1

  def eval_iterator(self, *, process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """The whole eval split in order; the last global batch padded (mask 0) to full size."""
    n, b = len(self.eval_labels), self.eval_batch_size
    rows = _local_rows(b, process_index, process_count)
    for start in range(0, n, b):
      idx = np.arange(start, start + b)
      mask = idx < n
      idx = np.where(mask, idx, 0)[rows]
      yield {"image": self.eval_images[idx].astype(np.float32),
             "label": self.eval_labels[idx].astype(np.int32),
             "mask": mask[rows].astype(np.float32)}


class DataSource:
  """``jtransfer.data`` behind the ``Source`` interface, for ``config.data``."""

  def __init__(self, data_cfg):
    from jtransfer import data  # pylint: disable=g-import-not-at-top  (TensorFlow: slow import)
    self._data = data
    self.cfg = data_cfg
    data.validate_config(data_cfg)
    num_classes, num_train, num_eval, class_names, image_shape = data.dataset_info(data_cfg)
    self.info = Info(int(num_classes), int(num_train), int(num_eval), tuple(class_names),
                     tuple(image_shape))
    self.batch_size, self.eval_batch_size = data_cfg.batch_size, data_cfg.eval_batch_size

  def train_iterator(self, *, seed, start_step, process_index=0, process_count=1):
    return self._data.train_iterator(self.cfg, seed=seed, start_step=start_step,
                                     process_index=process_index, process_count=process_count)

  def eval_iterator(self, *, process_index=0, process_count=1):
    return self._data.eval_iterator(self.cfg, process_index=process_index,
                                    process_count=process_count)

  def save_class_names(self, workdir: str) -> None:
    self._data.save_class_names(self.info, workdir)


def from_config(data_cfg) -> DataSource:
  return DataSource(data_cfg)


__all__ = ["ArraySource", "DataSource", "Info", "Source", "from_config"]
