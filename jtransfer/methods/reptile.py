"""Meta-learned initialisation with Reptile (Nichol, Achiam & Schulman 2018), and few-shot episodes.

    source, target = reptile.class_split(10, num_target=5, seed=0)        # class-disjoint
    sample = reptile.episode_sampler(x, y, classes=source, ways=5, shots=5, meta_batch=4, seed=0)
    params, stats, losses = reptile.reptile(params, stats, loss_fn=loss_fn, tx=tx, mask=mask,
                                         sample=sample, inner_steps=5, meta_steps=300, meta_lr=1.0)
    weights.save({"params": params, "batch_stats": stats}, "workdirs/reptile")

**Episodes.** An N-way K-shot episode draws N distinct classes from ``classes`` and K (+ Q query)
distinct examples of each, with ``np.random.default_rng([seed, episode])``: the same (seed,
episode) always gives the same episode, whatever was drawn before. The episode's labels are the
positions 0..N-1 of its classes in the drawn order, so the head's meaning changes every episode.

**Reptile** (first-order). Per meta step, for each of ``meta_batch`` episodes: start from the
current initialisation θ, with the head reset (below), and run ``inner_steps`` of the SAME train
step as the trainer (``train.step.make_train_step`` with the given loss, optimizer and trainable
mask; fresh optimizer state and step 0 per episode) on the episode's support set, full batch,
giving φ. Then ``θ ← (1 − ε)·θ + ε·mean(φ)`` over the trainable leaves (that is θ + ε(φ̄ − θ),
written so that ε = 1 gives φ̄ bitwise), with ε annealed linearly from ``meta_lr`` to 0 when
``anneal`` (the paper's schedule). So with one episode, one inner step and ε = 1, a meta step IS
one plain train step from θ (head reset). Frozen leaves never move. BatchNorm running statistics
follow the same interpolation (statistics no episode changed keep their bits).

The head (parameters matching ``head``, ``^fc/`` for jtransfer's ResNets; it must have ``ways``
outputs): ``head_init='zero'`` (default) zeroes it at the start of every episode and leaves it
out of the meta update, because the labels are re-drawn per episode and a head meta-learned over
shuffled labels carries nothing. Note that a zero head passes no gradient to the backbone on the
first inner step, so use ``inner_steps >= 2``. ``head_init='keep'`` meta-learns the head like the
rest, as Nichol et al. did.

The prototypical-network classifier on frozen features (Snell et al. 2017) is
``benchmark.evaluators.nearest_class_mean`` (the harness's ``ncm`` feature variant).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jtransfer.optim import rules as rules_lib
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

HEAD_INITS = ("zero", "keep")


# ---------------------------------------------------------------------------------------------
# Classes and episodes.

def class_split(classes, *, num_target: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """``(source, target)``: ``classes`` (a count or a list) shuffled by ``seed``, the last
  ``num_target`` to the target; both sorted, disjoint and covering."""
  classes = np.arange(classes) if np.ndim(classes) == 0 else np.asarray(classes)
  if not 0 < num_target < len(classes):
    raise ValueError(f"num_target={num_target} must leave both sides of {len(classes)} classes "
                     "non-empty")
  perm = np.random.default_rng(seed).permutation(classes)
  return np.sort(perm[:-num_target]), np.sort(perm[-num_target:])


def sample_episode(x, y, *, classes: Sequence[int], ways: int, shots: int, queries: int = 0,
                   seed: int, episode: int) -> dict:
  """One N-way (``ways``) K-shot episode from the examples of ``classes``.

  Returns ``{'support': {'image', 'label'}, 'query': {'image', 'label'}, 'classes'}``: support
  [ways·shots], query [ways·queries] (class-major order), labels 0..ways-1 = positions in
  ``classes`` (the original class ids, in episode label order). Examples within an episode are
  distinct; deterministic in (seed, episode).
  """
  classes, y = np.asarray(classes), np.asarray(y)
  if ways > len(classes):
    raise ValueError(f"{ways}-way episodes need >= {ways} classes, got {len(classes)}")
  rng = np.random.default_rng([seed, episode])
  chosen = rng.choice(classes, ways, replace=False)
  support, query = [], []
  for c in chosen:
    rows = np.flatnonzero(y == c)
    if len(rows) < shots + queries:
      raise ValueError(f"class {int(c)} has {len(rows)} examples, fewer than shots + queries = "
                       f"{shots + queries}")
    pick = rng.choice(rows, shots + queries, replace=False)
    support.append(pick[:shots])
    query.append(pick[shots:])
  labels = lambda n: np.repeat(np.arange(ways, dtype=np.int32), n)
  s, q = np.concatenate(support), np.concatenate(query)
  return {"support": {"image": np.asarray(x)[s], "label": labels(shots)},
          "query": {"image": np.asarray(x)[q], "label": labels(queries)},
          "classes": chosen}


def episode_sampler(x, y, *, classes: Sequence[int], ways: int, shots: int, seed: int,
                    meta_batch: int = 1) -> Callable[[int], dict]:
  """``sample(t) -> {'image': [meta_batch, ways·shots, ...], 'label': [meta_batch, ways·shots]}``:
  the support sets of episodes ``t·meta_batch ... t·meta_batch + meta_batch - 1``."""
  def sample(t: int) -> dict:
    eps = [sample_episode(x, y, classes=classes, ways=ways, shots=shots, seed=seed,
                          episode=t * meta_batch + i)["support"] for i in range(meta_batch)]
    return {k: np.stack([e[k] for e in eps]) for k in eps[0]}
  return sample


# ---------------------------------------------------------------------------------------------
# Reptile.

def _head_leaves(params, head: str) -> list[bool]:
  found = [re.search(head, p) is not None for p in rules_lib.param_paths(params)]
  if not any(found):
    raise ValueError(f"The head pattern {head!r} matches no parameter")
  return found


def reset_head(params, head: str = r"^fc/"):
  """``params`` with the leaves matching ``head`` set to zero (the others are the same arrays)."""
  treedef = jax.tree.structure(params)
  is_head = _head_leaves(params, head)
  return jax.tree.unflatten(treedef, [jnp.zeros_like(x) if h else x
                                      for x, h in zip(jax.tree.leaves(params), is_head)])


def _interpolate(eps, old, stacked):
  # (1 − ε)·θ + ε·mean(φ): ε = 1 returns mean(φ) bitwise, ε = 0 returns θ.
  return ((1.0 - eps) * old + eps * jnp.mean(stacked, axis=0)).astype(old.dtype)


def make_meta_step(loss_fn: Callable, tx: optax.GradientTransformation, mask, *,
                   inner_steps: int, head: str = r"^fc/", head_init: str = "zero",
                   episode_vmap: bool = True) -> Callable:
  """``meta_step(start, episodes, rngs, eps) -> (params, batch_stats, inner_losses)``, jittable.

  ``start``: the ``TrainState`` every episode starts from (θ, head already reset, fresh optimizer
  state); ``episodes``: ``{'image', 'label'}`` with a leading meta-batch axis; ``rngs``: one key
  per episode; ``eps``: the meta learning rate of this step. ``inner_losses``: [meta_batch,
  inner_steps]. ``head`` is matched against the paths of ``mask`` (shaped like the params).
  ``episode_vmap``: the meta batch's episodes run as one ``jax.vmap`` (True) or one after another
  (``jax.lax.map``; on a CPU much faster for convolutions, whose per-episode weights a vmap turns
  into grouped convolutions).
  """
  if head_init not in HEAD_INITS:
    raise ValueError(f"Unknown head_init {head_init!r}; known: {', '.join(HEAD_INITS)}")
  if not isinstance(inner_steps, int) or inner_steps < 1:
    raise ValueError(f"inner_steps must be an int >= 1, got {inner_steps!r}")
  step = make_train_step(loss_fn, tx, mask)
  trainable = [bool(m) for m in jax.tree.leaves(mask)]
  is_head = _head_leaves(mask, head)
  # Leaves the meta update moves: trainable, and not a head that is reset every episode.
  moves = [t and not (h and head_init == "zero") for t, h in zip(trainable, is_head)]

  def inner(start, episode, rng):
    state, metrics = jax.lax.scan(lambda s, _: step(s, episode, rng), start, None,
                                  length=inner_steps)
    return state.params, state.batch_stats, metrics["loss"]

  def meta_step(start: TrainState, episodes, rngs, eps):
    if rngs.shape[0] == 1:
      # One episode runs unbatched: bitwise the trainer's step (a vmap of size 1 changes the last
      # bits of batched reductions).
      out = inner(start, jax.tree.map(lambda x: x[0], episodes), rngs[0])
      phi, phi_stats, losses = jax.tree.map(lambda x: x[None], out)
    elif episode_vmap:
      phi, phi_stats, losses = jax.vmap(inner, in_axes=(None, 0, 0))(start, episodes, rngs)
    else:
      phi, phi_stats, losses = jax.lax.map(lambda a: inner(start, *a), (episodes, rngs))
    theta = jax.tree.leaves(start.params)
    params = jax.tree.unflatten(jax.tree.structure(start.params), [
        _interpolate(eps, t, p) if m else t
        for t, p, m in zip(theta, jax.tree.leaves(phi), moves)])
    stats = jax.tree.map(
        lambda old, new: jnp.where(jnp.all(new == old[None], axis=0), old,
                                   _interpolate(eps, old, new)),
        start.batch_stats, phi_stats)
    return params, stats, losses

  return meta_step


def reptile(params, batch_stats, *, loss_fn: Callable, tx: optax.GradientTransformation, mask,
            sample: Callable[[int], dict], inner_steps: int, meta_steps: int,
            meta_lr: float = 1.0, anneal: bool = True, head: str = r"^fc/",
            head_init: str = "zero", episode_vmap: bool = True, seed: int = 0
            ) -> tuple[Any, Any, np.ndarray]:
  """Runs ``meta_steps`` Reptile updates (see the module docstring) from ``params`` /
  ``batch_stats``; returns ``(params, batch_stats, inner_losses [meta_steps, meta_batch,
  inner_steps])``, a model ``weights.save`` can write (with ``head_init='zero'``, a zero head).

  ``sample(t)`` gives meta step t's episodes (``episode_sampler``). Episode e of meta step t uses
  the rng ``fold_in(fold_in(key(seed), t), e)``.
  """
  if meta_steps < 1 or not 0 < meta_lr <= 1:
    raise ValueError(f"Need meta_steps >= 1 and 0 < meta_lr <= 1; got {meta_steps}, {meta_lr}")
  meta_step = jax.jit(make_meta_step(loss_fn, tx, mask, inner_steps=inner_steps, head=head,
                                     head_init=head_init, episode_vmap=episode_vmap))
  key = jax.random.key(seed)
  losses = []
  for t in range(meta_steps):
    if head_init == "zero":
      params = reset_head(params, head)
    # Built outside the jit, as the trainer builds its state (see federated.make_fedavg_round).
    start = TrainState.create(params=params, batch_stats=batch_stats, tx=tx)
    episodes = sample(t)
    n = len(episodes["label"])
    rngs = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, t), i))(jnp.arange(n))
    eps = meta_lr * (1.0 - t / meta_steps) if anneal else meta_lr
    params, batch_stats, loss = meta_step(start, episodes, rngs, jnp.float32(eps))
    losses.append(loss)
  if head_init == "zero":
    params = reset_head(params, head)
  return params, batch_stats, np.asarray(jnp.stack(losses))


# ---------------------------------------------------------------------------------------------
# Prototypes.

__all__ = ["HEAD_INITS", "class_split", "episode_sampler", "make_meta_step",
           "reptile", "reset_head", "sample_episode"]
