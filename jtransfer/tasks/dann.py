"""Domain adaptation: the source-only baseline and DANN (Ganin & Lempitsky 2015), as tasks.

    config.adapt.method = "dann"                  # or "source_only"
    config.adapt.target_dataset = "uci_digits"    # evaluated; its train images (never labels) feed DANN
    task = tasks.from_config(config)              # DANN(config)

Both train on the labeled source (``config.data``) and evaluate on the target's eval split.
DANN adds a domain classifier (``DomainHead``, top-level parameters ``domain_head/``) on the
backbone's ``pre_logits`` behind a gradient reversal layer: the classifier learns to tell source
from target while the reversed gradient pushes the features to make that impossible. The loss is
the source cross-entropy plus ``domain_weight`` × the classifier's binary cross-entropy; the
reversal strength λ follows the step (2/(1+exp(−γp))−1 over progress p, or a constant). The
domain head is trained under every freezing preset, initialised fresh, and never exported.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jtransfer import optim
from jtransfer.tasks.base import Task
from jtransfer.train import config as train_config
from jtransfer.train import inputs, losses

DOMAIN_HEAD = "domain_head"


# ---------------------------------------------------------------------------------------------
# Gradient reversal and the domain classifier.


@jax.custom_vjp
def gradient_reversal(x, lam):
  """Returns ``x``; its cotangent is multiplied by ``-lam`` (``lam`` gets no gradient)."""
  return x


def _grl_fwd(x, lam):
  return x, lam


def _grl_bwd(lam, g):
  return (jax.tree.map(lambda t: -lam * t, g), jnp.zeros_like(lam))


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


def dann_lambda(progress, *, gamma: float = 10.0):
  """The paper's schedule over training progress ``p`` in [0, 1]: 2/(1+exp(−γp)) − 1."""
  return 2.0 / (1.0 + jnp.exp(-gamma * jnp.asarray(progress, jnp.float32))) - 1.0


def lambda_at(step, total_steps: int, lam: str | float, *, gamma: float = 10.0):
  """λ at ``step`` (a traced or concrete number): 'paper' or a constant."""
  if lam == "paper":
    progress = jnp.minimum(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 1.0)
    return dann_lambda(progress, gamma=gamma)
  return jnp.asarray(float(lam), jnp.float32)


class DomainHead(nn.Module):
  """The domain classifier: an MLP from features to a source-vs-target logit (the paper's
  1024-1024, here configurable)."""
  hidden: tuple[int, ...] = (256,)

  @nn.compact
  def __call__(self, x):
    for i, h in enumerate(self.hidden):
      x = nn.relu(nn.Dense(h, name=f"hidden{i}")(x))
    return nn.Dense(1, name="out")(x)[..., 0]


# ---------------------------------------------------------------------------------------------
# Data: labeled source + unlabeled target images for training, the target's eval split.


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


# ---------------------------------------------------------------------------------------------
# The loss and the tasks.


def make_loss_fn(model: Any, head: DomainHead, loss_cfg: Any, *, lam, domain_weight: float = 1.0,
                 l2sp: Callable[[Any], jax.Array] | None = None, trainable: Any = None) -> Callable:
  """Source cross-entropy + domain_weight · BCE(domain classifier behind the reversal layer).

  ``params`` hold the model's parameters and ``domain_head``. BatchNorm sees source and target
  images together. L2-SP and the L1/L2 penalties are added as in ``train.losses``; mixup's
  ``soft_label`` is used when the batch has one. Metrics: 'ce', 'domain_bce', 'domain_acc',
  'top1', 'grl_lambda' (+ the penalties).
  """
  smoothing = float(loss_cfg.label_smoothing)

  def loss_fn(params, batch_stats, batch, rng):
    src, tgt, labels = batch["image"], batch["target_image"], batch["label"]
    n = src.shape[0]
    backbone = {k: v for k, v in params.items() if k != DOMAIN_HEAD}
    (logits, feats), new_vars = model.apply(
        {"params": backbone, "batch_stats": batch_stats}, jnp.concatenate([src, tgt]), train=True,
        mutable=["batch_stats"], rngs={"dropout": rng})
    reversed_ = gradient_reversal(feats["pre_logits"].astype(jnp.float32), lam)
    d_logits = head.apply({"params": params[DOMAIN_HEAD]}, reversed_)
    ce = losses.cross_entropy(logits[:n], labels, label_smoothing=smoothing,
                              soft_labels=batch.get("soft_label")).mean()
    domain = jnp.concatenate([jnp.zeros((n,)), jnp.ones((tgt.shape[0],))])
    bce = optax.sigmoid_binary_cross_entropy(d_logits, domain).mean()
    metrics = {"ce": ce, "domain_bce": bce, "grl_lambda": lam,
               "domain_acc": jnp.mean((d_logits > 0) == (domain > 0.5)),
               "top1": jnp.mean(jnp.argmax(logits[:n], -1) == labels)}
    loss = losses.add_penalties(ce + domain_weight * bce, metrics, params, loss_cfg, l2sp=l2sp,
                                trainable=trainable)
    return loss, (new_vars["batch_stats"], metrics)

  return loss_fn


def with_trained_domain_head(phases: list, params: Any, *, head: str, strategy: str = "") -> list:
  """Each phase's rules, with ``(^domain_head/, 1.0)`` in front where they would leave any
  domain head parameter frozen or unmatched (the classifier must learn for the reversal to mean
  anything). Raises ValueError when no phase trains any backbone parameter: the reversed gradient
  would then reach nothing, and DANN would be a source-only probe with extra work.
  """
  pattern = f"^{DOMAIN_HEAD}/"
  head_paths = [p for p in optim.param_paths(params) if re.search(pattern, p)]
  out, backbone_trains = [], False
  for phase in phases:
    rules = optim.parse_rules(phase.param_rules)
    first = [next((r for r in rules if re.search(r.pattern, p)), None) for p in head_paths]
    if any(r is None or r.frozen for r in first):
      phase = dataclasses.replace(phase, param_rules=((pattern, 1.0),) + tuple(rules))
    out.append(phase)
    labels = optim.label_params(params, phase.param_rules)
    backbone_trains |= any(
        label != optim.FROZEN and not re.search(pattern, path) and not re.search(head, path)
        for path, label in zip(optim.param_paths(labels), jax.tree.leaves(labels)))
  if not backbone_trains:
    raise ValueError(
        f"adapt.method='dann' with freezing.strategy={strategy!r}: no phase trains a backbone "
        f"parameter (only {head} and {pattern}), so the reversed domain gradient would change "
        "nothing. Use adapt.method='source_only' for a probe, or a strategy that trains the "
        "backbone (full_ft, last_stages, layerwise_decay, ...).")
  return out


class SourceOnly(Task):
  """Train on the labeled source, evaluate on the target: the baseline DANN is measured against."""

  def source(self) -> inputs.Source:
    return source_from_config(self.config)


class DANN(Task):
  """Domain-adversarial training; see the module docstring."""
  extra_params = (DOMAIN_HEAD,)

  def __init__(self, config: Any):
    super().__init__(config)
    self.head = DomainHead(tuple(config.adapt.domain_head))

  def source(self) -> inputs.Source:
    return source_from_config(self.config)

  def init_extra(self, rng, model, variables, image_shape) -> dict:
    _, feats = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *image_shape))), variables)
    dim = feats["pre_logits"].shape[-1]
    params = self.head.init(jax.random.fold_in(rng, 1), jnp.zeros((1, dim)))["params"]
    return {DOMAIN_HEAD: jax.tree.map(np.asarray, params)}

  def phases(self, phases: list, params: Any) -> list:
    return with_trained_domain_head(phases, params, head=optim.head_pattern(self.config),
                                    strategy=self.config.freezing.strategy)

  def loss_fn(self, model: Any, *, step, extra: Mapping[str, Any], l2sp, trainable) -> Callable:
    del extra
    a = self.config.adapt
    lam = lambda_at(step, self.config.train.num_steps,
                    "paper" if a.lambda_schedule == "paper" else a.lambda_value,
                    gamma=float(a.gamma))
    return make_loss_fn(model, self.head, self.config.loss, lam=lam,
                        domain_weight=float(a.domain_weight), l2sp=l2sp, trainable=trainable)


__all__ = ["DANN", "DOMAIN_HEAD", "DomainAdaptationSource", "DomainHead", "SourceOnly",
           "dann_lambda", "gradient_reversal", "images_only", "lambda_at", "make_loss_fn",
           "source_from_config", "target_data_config", "with_trained_domain_head"]
