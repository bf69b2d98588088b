"""Domain adaptation's streams: labelled source batches (+ unlabelled target images), the target's
evaluation split; and the source-only baseline that every adaptation method is measured against.

    config.adapt.method = "source_only"           # or "dann"
    config.adapt.target_dataset = "uci_digits"    # evaluated; its train images (never labels) feed DANN
    source = source_from_config(config)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

from jtransfer.train import config as train_config
from jtransfer.train import inputs
from jtransfer.train.task import Task


@dataclasses.dataclass
class DomainAdaptationSource:
  """Labeled source batches (+ unlabeled target images with DANN); the target's eval split.

  Attributes:
    labeled: a trainer ``Source`` of the source domain (its train stream is used).
    target_images: ``(seed, start_step, process_index, process_count) -> iterator`` of dicts with
      at least ``'image'``; only ``'image'`` is ever read, so it may carry no labels at all.
    target_eval: a trainer ``Source`` whose eval stream (the target's test split) is evaluated.
    adversarial: False gives the source-only baseline: no target images in training.
  """
  labeled: Any
  target_images: Callable[..., Iterator[dict]] | None
  target_eval: Any
  adversarial: bool = True

  def __post_init__(self):
    if self.labeled.info.num_classes != self.target_eval.info.num_classes:
      raise ValueError(f"Source has {self.labeled.info.num_classes} classes, target "
                       f"{self.target_eval.info.num_classes}: domain adaptation needs the same label set")
    if self.adversarial and self.target_images is None:
      raise ValueError("DANN needs a target image stream")
    self.info = self.target_eval.info
    self.batch_size = self.labeled.batch_size
    self.eval_batch_size = self.target_eval.eval_batch_size

  def train_iterator(self, *, seed: int, start_step: int, process_index: int, process_count: int):
    src = self.labeled.train_iterator(seed=seed, start_step=start_step, process_index=process_index,
                                      process_count=process_count)
    if not self.adversarial:
      yield from src
      return
    tgt = self.target_images(seed=seed + 1, start_step=start_step, process_index=process_index,
                             process_count=process_count)
    for s, t in zip(src, tgt):
      if len(t["image"]) != len(s["label"]):
        raise ValueError(f"Target batch of {len(t['image'])} images vs source batch of "
                         f"{len(s['label'])}")
      yield {**s, "target_image": t["image"]}

  def eval_iterator(self, *, process_index: int, process_count: int):
    return self.target_eval.eval_iterator(process_index=process_index, process_count=process_count)

  def save_class_names(self, workdir: str) -> None:
    if hasattr(self.target_eval, "save_class_names"):
      self.target_eval.save_class_names(workdir)


def target_data_config(config: Any) -> Any:
  """``config.data`` for the target: the same pipeline on ``adapt.target_dataset``.

  Training reads its ``adapt.target_split`` (all of it: no few-shot selection, VTAB-1k part or
  mixup, which would need or mix labels); evaluation its ``data.eval_split``.
  """
  cfg = train_config.data_config(config)
  cfg.dataset = config.adapt.target_dataset
  cfg.train_split = config.adapt.target_split
  cfg.shots = None
  cfg.vtab1k = False
  cfg.mixup_alpha = 0.0
  return cfg


def images_only(source: Any) -> Callable[..., Iterator[dict]]:
  """``source``'s train stream with everything but ``'image'`` dropped (labels never pass)."""
  def make(*, seed, start_step, process_index, process_count):
    it = source.train_iterator(seed=seed, start_step=start_step, process_index=process_index,
                               process_count=process_count)
    return ({"image": b["image"]} for b in it)
  return make


def source_from_config(config: Any) -> DomainAdaptationSource:
  """The source of ``config.adapt.method`` in ('source_only', 'dann') from ``jtransfer.data``."""
  labeled = inputs.from_config(train_config.data_config(config))
  target = inputs.from_config(target_data_config(config))
  if labeled.info.image_shape != target.info.image_shape:
    raise ValueError(f"adapt.target_dataset={config.adapt.target_dataset!r}: its images are "
                     f"{target.info.image_shape}, the source's ({config.data.dataset}) "
                     f"{labeled.info.image_shape}; set data.pp_train/pp_eval so both match")
  adversarial = config.adapt.method == "dann"
  return DomainAdaptationSource(labeled, images_only(target) if adversarial else None, target,
                                adversarial=adversarial)


class SourceOnly(Task):
  """Train on the labeled source, evaluate on the target: the baseline DANN is measured against."""

  def source(self) -> inputs.Source:
    return source_from_config(self.config)


__all__ = ["DomainAdaptationSource", "SourceOnly", "images_only", "source_from_config",
           "target_data_config"]
