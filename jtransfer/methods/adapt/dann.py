"""DANN (Ganin & Lempitsky 2015), domain-adversarial training, as a task.

    config.adapt.method = "dann"                  # or "source_only"
    config.adapt.target_dataset = "uci_digits"    # evaluated; its train images (never labels) feed DANN
    task = methods.task_for(config)               # DANN(config)

Both train on the labeled source (``config.data``) and evaluate on the target's eval split.
DANN adds a domain classifier (``DomainHead``, top-level parameters ``domain_head/``) on the
backbone's ``pre_logits`` behind a gradient reversal layer: the classifier learns to tell source
from target while the reversed gradient pushes the features to make that impossible. The loss is
the source cross-entropy plus ``domain_weight`` × the classifier's binary cross-entropy; the
reversal strength λ follows the step (2/(1+exp(−γp))−1 over progress p, or a constant). The
domain head is trained under every freezing preset, initialised fresh, and never exported.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jtransfer import optim
from jtransfer.methods.adapt.domain_head import DOMAIN_HEAD, DomainHead, with_trained_domain_head
from jtransfer.methods.adapt.grl import gradient_reversal, lambda_at
from jtransfer.methods.adapt.source import source_from_config
from jtransfer.train import inputs, losses
from jtransfer.train.task import Task


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


__all__ = ["DANN", "make_loss_fn"]
