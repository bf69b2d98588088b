"""The training losses, and ``make_loss_fn`` that turns a model and the loss config into the
``loss_fn(params, batch_stats, batch, rng) -> (loss, (new_batch_stats, metrics))`` that
``train.step.make_train_step`` differentiates.

    loss_fn = losses.make_loss_fn(model, config.loss, teacher=(teacher_model, teacher_vars))
    loss, (batch_stats, metrics) = loss_fn(params, batch_stats, batch, rng)

* cross-entropy with label smoothing (on ``batch['soft_label']`` when mixup made one);
* knowledge distillation (Hinton et al. 2015): ``α·CE + (1−α)·T²·KL(teacher_T ‖ student_T)``, the
  teacher run in inference mode under ``stop_gradient``, so its forward is never differentiated;
* L2-SP (Li et al. 2018): a penalty toward the pretrained weights, from ``optim.l2sp_penalty``;
* L1 / L2 penalties (``loss.l1``: coeff·Σ|w|, ``loss.l2``: coeff/2·Σw²) over the trainable
  parameters matching ``loss.penalty_pattern`` (``penalties``). The L2 penalty is part of the loss,
  so an adaptive optimizer rescales its gradient; ``optim.weight_decay`` is the decoupled kind.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jtransfer.optim import regularizers

DEFAULT_PENALTY_PATTERN = r"(^|/)kernel$"


def cross_entropy(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0,
                  soft_labels: jax.Array | None = None) -> jax.Array:
  """Per-example softmax cross-entropy against integer ``labels`` (or ``soft_labels`` [B, C]),
  with the targets smoothed toward uniform by ``label_smoothing``."""
  num_classes = logits.shape[-1]
  targets = soft_labels if soft_labels is not None else jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def distillation_kl(student_logits: jax.Array, teacher_logits: jax.Array, *,
                    temperature: float) -> jax.Array:
  """Per-example ``KL(softmax(teacher/T) ‖ softmax(student/T))``."""
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  return jnp.sum(jnp.exp(t) * (t - s), axis=-1)


def distillation_loss(student_logits, teacher_logits, labels, *, alpha: float, temperature: float,
                      label_smoothing: float = 0.0, soft_labels=None) -> tuple[jax.Array, dict]:
  """Mean of ``α·CE(labels) + (1−α)·T²·KL(teacher_T ‖ student_T)``; the T² keeps the soft term's
  gradient scale independent of T. Returns (loss, {'ce', 'distill_kl'})."""
  ce = cross_entropy(student_logits, labels, label_smoothing=label_smoothing,
                     soft_labels=soft_labels).mean()
  kl = distillation_kl(student_logits, jax.lax.stop_gradient(teacher_logits),
                       temperature=temperature).mean()
  return alpha * ce + (1.0 - alpha) * temperature ** 2 * kl, {"ce": ce, "distill_kl": kl}


def penalties(params: Any, loss_cfg: Any, *, trainable: Any = None) -> dict[str, jax.Array]:
  """``{'l1': coeff·Σ|w|, 'l2': coeff/2·Σw²}`` for the nonzero ``loss_cfg.l1`` / ``loss_cfg.l2``.

  Sums over the leaves whose path matches ``loss_cfg.penalty_pattern`` (default: kernels) and,
  when ``trainable`` (a tree of bools like ``params``) is given, that are trainable: a frozen
  leaf would only add a constant. A config without the fields (older ones) means no penalty.
  """
  l1, l2 = float(loss_cfg.get("l1", 0.0)), float(loss_cfg.get("l2", 0.0))
  if not (l1 or l2):
    return {}
  pattern = loss_cfg.get("penalty_pattern", DEFAULT_PENALTY_PATTERN)
  if trainable is not None:  # None leaves vanish from the tree: the penalties skip frozen ones.
    params = jax.tree.map(lambda w, m: w if m else None, params, trainable)
  out = {}
  if l1:
    out["l1"] = regularizers.l1_penalty(params, coeff=l1, pattern=pattern)
  if l2:
    out["l2"] = regularizers.l2_penalty(params, coeff=l2, pattern=pattern)
  return out


def add_penalties(loss: jax.Array, metrics: dict, params: Any, loss_cfg: Any, *,
                  l2sp: Callable[[Any], jax.Array] | None = None, trainable: Any = None
                  ) -> jax.Array:
  """``loss`` + L2-SP (when given) + the L1/L2 ``penalties``; each term goes into ``metrics``."""
  terms = penalties(params, loss_cfg, trainable=trainable)
  if l2sp is not None:
    terms["l2sp"] = l2sp(params)
  for name, value in terms.items():
    loss = loss + value
    metrics[name] = value
  return loss


def make_loss_fn(model: Any, loss_cfg: Any, *, teacher: tuple[Any, Any] | None = None,
                 l2sp: Callable[[Any], jax.Array] | None = None,
                 trainable: Any = None) -> Callable:
  """The train loss of ``model`` for ``make_train_step``.

  Args:
    model: a linen module returning ``(logits, features)``.
    loss_cfg: ``config.loss`` (label_smoothing, distill.alpha, distill.temperature).
    teacher: ``(teacher_model, teacher_variables)`` to distill from, or None.
    l2sp: ``params -> penalty`` (e.g. a partial of ``optim.l2sp_penalty`` with its anchor), or None.
    trainable: tree of bools like ``params`` (``optim.trainable_mask``): the L1/L2 penalties
      (``loss_cfg.l1``, ``l2``, ``penalty_pattern``) cover only these; None = every parameter.

  Metrics: 'ce', 'top1' (train accuracy on the batch), and 'distill_kl' / 'l2sp' / 'l1' / 'l2'
  when used. The
  dropout ``rng`` arrives already folded with the step and the replica by ``make_train_step``.
  """
  smoothing = float(loss_cfg.label_smoothing)

  def loss_fn(params, batch_stats, batch, rng):
    images, labels = batch["image"], batch["label"]
    soft = batch.get("soft_label")
    (logits, _), new_vars = model.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"], rngs={"dropout": rng})
    if teacher is not None:
      teacher_model, teacher_vars = teacher
      teacher_logits, _ = teacher_model.apply(jax.lax.stop_gradient(teacher_vars),
                                              images, train=False)
      loss, metrics = distillation_loss(
          logits, teacher_logits, labels, alpha=float(loss_cfg.distill.alpha),
          temperature=float(loss_cfg.distill.temperature), label_smoothing=smoothing,
          soft_labels=soft)
    else:
      loss = cross_entropy(logits, labels, label_smoothing=smoothing, soft_labels=soft).mean()
      metrics = {"ce": loss}
    loss = add_penalties(loss, metrics, params, loss_cfg, l2sp=l2sp, trainable=trainable)
    metrics["top1"] = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, (new_vars["batch_stats"], metrics)

  return loss_fn


__all__ = ["add_penalties", "cross_entropy", "distillation_kl", "distillation_loss", "make_loss_fn",
           "penalties"]
