"""The training step: differentiates only the trainable subtree, so freezing costs no backward.

    step_fn = make_train_step(loss_fn, tx, optim.trainable_mask(labels), accum_steps=2)
    state, metrics = jax.jit(step_fn)(state, batch, rng)   # or jax.pmap(..., axis_name='batch')

``loss_fn(params, batch_stats, batch, rng) -> (loss, (new_batch_stats, metrics))``. The step splits
``params`` with the mask, takes the gradient with respect to the trainable leaves only (frozen ones
enter the loss as constants: their backward pass, and that of everything below the lowest
trainable layer, is never built), then hands ``tx`` the full tree with zeros for frozen leaves, so
clipping and weight decay see exactly the trainable gradients. Frozen leaves are returned as the
very arrays that came in: bitwise unchanged whatever ``tx`` does.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jtransfer.train.state import TrainState

LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[Any, dict]]]


def _split(tree, mask_leaves, what: str):
  leaves, treedef = jax.tree.flatten(tree)
  if len(leaves) != len(mask_leaves):
    raise ValueError(f"The trainable mask has {len(mask_leaves)} leaves, {what} {len(leaves)}")
  return ([x for x, m in zip(leaves, mask_leaves) if m],
          [x for x, m in zip(leaves, mask_leaves) if not m], treedef)


def _merge(trainable, frozen, mask_leaves, treedef):
  t, f = iter(trainable), iter(frozen)
  return jax.tree.unflatten(treedef, [next(t) if m else next(f) for m in mask_leaves])


def _sync_stats(old, new, axis_name):
  """Cross-replica mean of the statistics' change: frozen BatchNorms (no change) stay bitwise."""
  def sync(o, n):
    delta = jax.lax.pmean(n - o, axis_name)
    return jnp.where(delta == 0, o, o + delta)
  return jax.tree.map(sync, old, new)


def _grads(loss_fn, mask_leaves, trainable, frozen, treedef, batch_stats, batch, rng):
  """Gradient with respect to the trainable leaves only; frozen ones enter as constants."""
  def f(t):
    return loss_fn(_merge(t, frozen, mask_leaves, treedef), batch_stats, batch, rng)
  (loss, (new_stats, metrics)), g = jax.value_and_grad(f, has_aux=True)(trainable)
  return g, loss, new_stats, metrics


def _accumulate(loss_fn, mask_leaves, accum_steps, trainable, frozen, treedef, batch_stats, batch,
                rng):
  """Mean gradient over ``accum_steps`` microbatches (``lax.scan``); statistics update per one."""
  def micro(x):
    if x.shape[0] % accum_steps:
      raise ValueError(f"Batch of {x.shape[0]} does not split into {accum_steps} microbatches")
    return x.reshape(accum_steps, x.shape[0] // accum_steps, *x.shape[1:])

  def body(carry, inputs):
    g_sum, stats = carry
    i, mb = inputs
    g, loss, stats, metrics = _grads(loss_fn, mask_leaves, trainable, frozen, treedef, stats, mb,
                                     jax.random.fold_in(rng, i))
    return (jax.tree.map(jnp.add, g_sum, g), stats), (loss, metrics)

  zeros = jax.tree.map(jnp.zeros_like, trainable)
  (g_sum, stats), (losses, metrics) = jax.lax.scan(
      body, (zeros, batch_stats), (jnp.arange(accum_steps), jax.tree.map(micro, batch)))
  mean = lambda x: jnp.mean(x, axis=0)
  return (jax.tree.map(lambda g: g / accum_steps, g_sum), mean(losses), stats,
          jax.tree.map(mean, metrics))


def _ema(ema, new_trainable, mask_leaves, treedef, decay):
  """``ema ← decay · ema + (1 − decay) · params`` over the trainable leaves."""
  if ema is None:
    raise ValueError("ema_decay is set but state.ema_params is None: "
                     "TrainState.create(..., ema=True)")
  e_t, e_f, _ = _split(ema, mask_leaves, "ema_params")
  e_t = [decay * e + (1.0 - decay) * p for e, p in zip(e_t, new_trainable)]
  return _merge(e_t, e_f, mask_leaves, treedef)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, mask, *,
                    axis_name: str | None = None, accum_steps: int = 1,
                    ema_decay: float | None = None):
  """``step_fn(state, batch, rng, lr=None) -> (state, metrics)``, pure, for jax.jit or jax.pmap;
  ``lr`` multiplies the updates (for ``tx = optim.build_optimizer(..., lr_input=True)``).

  Args:
    loss_fn: see the module docstring; its metrics are averaged like the loss.
    tx: the optimizer over the full parameter tree (``optim.build_optimizer``).
    mask: tree of bools, True for trainable leaves (``optim.trainable_mask``).
    axis_name: under pmap: gradients, metrics and batch statistics are averaged over it, and
      each replica's rng differs.
    accum_steps: the batch's leading axis is split into this many microbatches whose gradients
      are averaged (``lax.scan``) before one update; batch statistics update per microbatch.
    ema_decay: when set, ``state.ema_params ← d · ema + (1 − d) · params`` after each update.

  Metrics: loss_fn's, plus ``loss``, ``grad_norm`` (before clipping), ``param_norm`` (after the
  update) and ``update_norm``, all over the trainable parameters only. The rng is folded with the
  step (and the replica index), so passing one key for the whole run is fine.
  """
  mask_leaves = [bool(m) for m in jax.tree.leaves(mask)]
  if not any(mask_leaves):
    raise ValueError("Nothing to train: every parameter is frozen")
  if not isinstance(accum_steps, int) or accum_steps < 1:
    raise ValueError(f"accum_steps must be an int >= 1, got {accum_steps!r}")
  if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"ema_decay must be in [0, 1) or None, got {ema_decay}")
  compute = (functools.partial(_grads, loss_fn, mask_leaves) if accum_steps == 1 else
             functools.partial(_accumulate, loss_fn, mask_leaves, accum_steps))

  def step_fn(state: TrainState, batch, rng: jax.Array, lr: jax.Array | None = None):
    rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    trainable, frozen, treedef = _split(state.params, mask_leaves, "params")
    g, loss, stats, metrics = compute(trainable, frozen, treedef, state.batch_stats, batch, rng)
    if axis_name is not None:
      g, loss, metrics = jax.lax.pmean((g, loss, metrics), axis_name)
      stats = _sync_stats(state.batch_stats, stats, axis_name)

    # The optimizer sees the full tree; frozen gradients are zeros it maps to zero updates.
    full_g = _merge(g, [jnp.zeros_like(x) for x in frozen], mask_leaves, treedef)
    updates, opt_state = tx.update(full_g, state.opt_state, state.params)
    u, _, _ = _split(updates, mask_leaves, "updates")
    if lr is not None:  # the learning rate as an input (optim.build_optimizer(..., lr_input=True))
      u = [x * jnp.asarray(lr, x.dtype) for x in u]
    new_trainable = optax.apply_updates(trainable, u)
    params = _merge(new_trainable, frozen, mask_leaves, treedef)
    ema = state.ema_params
    if ema_decay is not None:
      ema = _ema(ema, new_trainable, mask_leaves, treedef, ema_decay)

    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(g),
               "param_norm": optax.tree.norm(new_trainable), "update_norm": optax.tree.norm(u)}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=stats,
                              opt_state=opt_state, ema_params=ema)
    return new_state, metrics

  return step_fn
