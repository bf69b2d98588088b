"""Domain-adversarial training (Ganin & Lempitsky 2015) as a loss and an input source.

    source = DomainAdaptationSource(labeled, target_images, target_eval, total_steps=T, lam="paper")
    loss_fn = make_loss_fn(model, config.loss, domain_weight=1.0)      # model: domain_head=(256,)
    source = source_from_config(config)     # config.adapt: the trainer's way, from jtransfer.data

The train batch carries the labeled source images and labels, the unlabeled target images (a
target batch never has — and the loss never reads — labels), and ``grl_lambda``, the reversal
strength of this step (2/(1+exp(−10p))−1 over progress p, or a constant). The loss is the source
cross-entropy plus ``domain_weight`` × the binary cross-entropy of the domain classifier, which sits
behind the gradient reversal: the classifier learns to tell the domains apart while the features
are pushed to make that impossible. Evaluation runs on the target's eval split.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jtransfer.adapt.grl import dann_lambda
from jtransfer.train import inputs
from jtransfer.train import losses


def lambda_at(step: int, total_steps: int, lam: str | float, *, gamma: float = 10.0) -> float:
  """``lam='paper'``: 2/(1+exp(−γp))−1 at progress p = step/total_steps; a number: constant."""
  if lam == "paper":
    return float(dann_lambda(min(step / max(total_steps, 1), 1.0), gamma=gamma))
  return float(lam)


@dataclasses.dataclass
class DomainAdaptationSource:
  """Labeled source batches + unlabeled target images for training; the target's eval split.

  Attributes:
    labeled: a trainer ``Source`` of the source domain (its train stream is used).
    target_images: ``(seed, start_step, process_index, process_count) -> iterator`` of dicts with
      at least ``'image'``; only ``'image'`` is ever read, so it may carry no labels at all.
    target_eval: a trainer ``Source`` whose eval stream (the target's test split) is evaluated.
    total_steps: the run's length, for the λ schedule.
    lam: 'paper' or a constant λ.
    adversarial: False gives the source-only baseline: no target images in training.
    gamma: steepness of the 'paper' schedule.
  """
  labeled: Any
  target_images: Callable[..., Iterator[dict]] | None
  target_eval: Any
  total_steps: int
  lam: str | float = "paper"
  adversarial: bool = True
  gamma: float = 10.0

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
    for step, (s, t) in enumerate(zip(src, tgt), start=start_step):
      n = len(s["label"])
      if len(t["image"]) != n:
        raise ValueError(f"Target batch of {len(t['image'])} images vs source batch of {n}")
      lam = lambda_at(step, self.total_steps, self.lam, gamma=self.gamma)
      out = {"image": s["image"], "label": s["label"], "target_image": t["image"],
             "grl_lambda": np.full((n,), lam, np.float32)}
      if "soft_label" in s:  # mixup on the labeled source
        out["soft_label"] = s["soft_label"]
      yield out

  def eval_iterator(self, *, process_index: int, process_count: int):
    return self.target_eval.eval_iterator(process_index=process_index, process_count=process_count)

  def save_class_names(self, workdir: str) -> None:
    if hasattr(self.target_eval, "save_class_names"):
      self.target_eval.save_class_names(workdir)


def make_loss_fn(model: Any, loss_cfg: Any, *, domain_weight: float = 1.0,
                 l2sp: Callable[[Any], jax.Array] | None = None, trainable: Any = None
                 ) -> Callable:
  """Source cross-entropy + domain_weight · BCE(domain classifier) behind the reversal layer.

  ``model`` must have a domain head (``models.create(..., domain_head=(256,))``). Batch norm sees
  source and target images together. L2-SP (``l2sp``) and the L1/L2 penalties of ``loss_cfg``
  over the ``trainable`` parameters are added as in ``train.losses.make_loss_fn``; mixup's
  ``soft_label`` is used when the batch has one. Metrics: 'ce', 'domain_bce', 'domain_acc', 'top1',
  'grl_lambda' (+ the penalties). Batches without ``target_image`` (a source-only run) are not
  accepted: use the plain loss for those.
  """
  smoothing = float(loss_cfg.label_smoothing)

  def loss_fn(params, batch_stats, batch, rng):
    src, tgt, labels = batch["image"], batch["target_image"], batch["label"]
    lam = batch["grl_lambda"][0]
    n = src.shape[0]
    (logits, feats), new_vars = model.apply(
        {"params": params, "batch_stats": batch_stats}, jnp.concatenate([src, tgt]), train=True,
        grl_lambda=lam, mutable=["batch_stats"], rngs={"dropout": rng})
    ce = losses.cross_entropy(logits[:n], labels, label_smoothing=smoothing,
                              soft_labels=batch.get("soft_label")).mean()
    domain = jnp.concatenate([jnp.zeros((n,)), jnp.ones((tgt.shape[0],))])
    d_logits = feats["domain_logits"].astype(jnp.float32)
    bce = optax.sigmoid_binary_cross_entropy(d_logits, domain).mean()
    metrics = {"ce": ce, "domain_bce": bce, "grl_lambda": lam,
               "domain_acc": jnp.mean((d_logits > 0) == (domain > 0.5)),
               "top1": jnp.mean(jnp.argmax(logits[:n], -1) == labels)}
    loss = losses.add_penalties(ce + domain_weight * bce, metrics, params, loss_cfg, l2sp=l2sp,
                                trainable=trainable)
    return loss, (new_vars["batch_stats"], metrics)

  return loss_fn


def grl_lam(adapt_cfg: Any) -> str | float:
  """``config.adapt``'s λ as ``DomainAdaptationSource(lam=)`` takes it: 'paper' or a number."""
  return "paper" if adapt_cfg.lambda_schedule == "paper" else float(adapt_cfg.lambda_value)


def target_data_config(config: Any) -> Any:
  """``config.data`` for the target: the same pipeline on ``adapt.target_dataset``.

  Training reads its ``adapt.target_split`` (all of it: no few-shot selection, VTAB-1k part or
  mixup, which would need or mix labels); evaluation its ``data.eval_split``.
  """
  cfg = config.data.copy_and_resolve_references()
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
  """The trainer's source for ``config.adapt.method`` in ('source_only', 'dann').

  The labeled source is ``config.data``; the target is ``target_data_config(config)``: its eval
  split is evaluated, and with 'dann' its train images (only ``'image'``) feed the domain head.
  """
  a = config.adapt
  labeled = inputs.from_config(config.data)
  target = inputs.from_config(target_data_config(config))
  if labeled.info.image_shape != target.info.image_shape:
    raise ValueError(f"adapt.target_dataset={a.target_dataset!r}: its images are "
                     f"{target.info.image_shape}, the source's ({config.data.dataset}) "
                     f"{labeled.info.image_shape}; set data.pp_train/pp_eval so both match")
  adversarial = a.method == "dann"
  return DomainAdaptationSource(labeled, images_only(target) if adversarial else None, target,
                                total_steps=config.train.num_steps, lam=grl_lam(a),
                                adversarial=adversarial, gamma=float(a.gamma))
