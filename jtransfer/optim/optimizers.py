"""The optax GradientTransformation of a config and a list of rules, over the FULL parameter tree.

    tx = optim.build_optimizer(cfg, [(r"^fc/", 1.0), (r".*", "frozen")], params, total_steps=1000)
    opt_state = optim.init_opt_state(tx, params)      # holds nothing for frozen leaves

Structure: ``chain(clip_by_global_norm?, partition({label: group optimizer, 'frozen': set_to_zero}))``.
Each trainable label gets the configured optimizer with its own learning-rate schedule (the rule's
multiplier and schedule overrides); frozen leaves get ``optax.set_to_zero()`` and no state. Weight
decay only touches trainable leaves that match ``cfg.wd_mask``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import optax

from jtransfer.optim import rules as rules_lib
from jtransfer.optim.schedules import make_schedule


def _path_mask(regex: str) -> Callable:
  """A mask function matching '/'-joined paths; works on partition's trees with MaskedNodes."""
  return lambda tree: rules_lib.map_paths(lambda path, _: re.search(regex, path) is not None, tree)


# name -> (cfg, learning-rate schedule, weight-decay mask fn) -> transform. The decoupled ones
# (adamw, lars, lamb) apply cfg.weight_decay themselves; the others get it as L2 on the gradient.
OPTIMIZERS: dict[str, Callable[[Any, Callable, Callable], optax.GradientTransformation]] = {
    "sgd": lambda c, lr, wd: optax.sgd(lr),
    "momentum": lambda c, lr, wd: optax.sgd(lr, momentum=c.momentum),
    "nesterov": lambda c, lr, wd: optax.sgd(lr, momentum=c.momentum, nesterov=True),
    "adam": lambda c, lr, wd: optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps),
    "adamw": lambda c, lr, wd: optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps,
                                           weight_decay=c.weight_decay, mask=wd),
    "adagrad": lambda c, lr, wd: optax.adagrad(
        lr, initial_accumulator_value=c.initial_accumulator, eps=c.eps),
    "adadelta": lambda c, lr, wd: optax.adadelta(lr, rho=c.rho, eps=c.eps),
    "lars": lambda c, lr, wd: optax.lars(
        lr, weight_decay=c.weight_decay, weight_decay_mask=wd,
        trust_coefficient=c.trust_coefficient, eps=c.eps,
        trust_ratio_mask=_path_mask(c.trust_mask), momentum=c.momentum),
    "lamb": lambda c, lr, wd: optax.lamb(lr, b1=c.b1, b2=c.b2, eps=c.eps,
                                         weight_decay=c.weight_decay, mask=wd),
}
DECOUPLED_DECAY = ("adamw", "lars", "lamb")


def group_optimizer(cfg, schedule: Callable) -> optax.GradientTransformation:
  """The configured optimizer for one trainable group, with weight decay where configured."""
  wd = _path_mask(cfg.wd_mask)
  tx = OPTIMIZERS[cfg.name](cfg, schedule, wd)
  if cfg.weight_decay and cfg.name not in DECOUPLED_DECAY:
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay, wd), tx)
  return tx


def build_optimizer(cfg, rules: Iterable[Any], params, *, total_steps: int,
                    schedule_start: int = 0, lr_input: bool = False) -> optax.GradientTransformation:
  """The transform for ``params`` under ``rules`` (see ``optim.label_params``).

  Args:
    cfg: the optimizer config (``optim.get_config()``).
    rules: ordered (regex, rule) pairs; every parameter must be claimed.
    params: the parameter tree (only its structure and paths are read).
    total_steps: global step where the schedules end.
    schedule_start: global step where the schedules start (``Phase.schedule_start``).
    lr_input: build every schedule for a peak learning rate of 1 (× the rule's multiplier; a rule
      that sets its own ``lr`` gets ``lr / cfg.lr``): the caller multiplies the updates by
      ``cfg.lr`` (``train.step``'s ``lr`` argument), so runs that differ only in ``cfg.lr`` share
      one compiled program. Exact up to float rounding: every optimizer here is linear in its
      learning rate for a learning rate constant over the run (each scales its final update, or
      its momentum of already-scaled updates).

  Learning rates follow the GLOBAL step: ``init_opt_state(tx, params, step=...)`` sets the
  schedules' counters to it.
  """
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {cfg.name!r}; known: {', '.join(OPTIMIZERS)}")
  if cfg.weight_decay < 0:
    raise ValueError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
  paths = rules_lib.param_paths(params)
  if cfg.weight_decay and not any(re.search(cfg.wd_mask, p) for p in paths):
    raise ValueError(f"wd_mask {cfg.wd_mask!r} matches no parameter; weight decay would do nothing")
  if cfg.clip_norm is not None and cfg.clip_norm <= 0:
    raise ValueError(f"clip_norm must be > 0 or None, got {cfg.clip_norm}")
  if cfg.lr < 0:
    raise ValueError(f"lr must be >= 0, got {cfg.lr}")
  labels = rules_lib.label_params(params, rules)
  by_label = rules_lib.rules_by_label(rules)
  transforms = {}
  for label in dict.fromkeys(jax.tree.leaves(labels)):  # Labels in use, in tree order.
    rule = by_label[label]
    if rule.frozen:
      transforms[label] = optax.set_to_zero()
    else:
      overrides = dict(rule.schedule)
      lr_mult = rule.lr_mult
      if lr_input:  # peak = lr_mult × (own lr or cfg.lr) / cfg.lr; the step applies cfg.lr
        if "lr" in overrides:
          if not cfg.lr > 0:
            raise ValueError(f"rule {rule.pattern!r} sets its own lr relative to optim.lr, which "
                             f"must then be > 0 (got {cfg.lr})")
          lr_mult *= float(overrides.pop("lr")) / float(cfg.lr)
        overrides["lr"] = 1.0
      schedule = make_schedule(cfg, total_steps=total_steps, start_step=schedule_start,
                               lr_mult=lr_mult, overrides=overrides)
      transforms[label] = group_optimizer(cfg, schedule)
  tx = optax.partition(transforms, labels)
  if cfg.clip_norm is not None:
    # Frozen gradients reach here as zeros (see train.step), so this is the trainable norm.
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
  return tx


def _is_partition(x) -> bool:
  return isinstance(x, optax.transforms.PartitionState)


def _partition_state(state) -> optax.transforms.PartitionState:
  found = [x for x in jax.tree.leaves(state, is_leaf=_is_partition) if _is_partition(x)]
  if len(found) != 1:
    raise ValueError(f"Expected one optax.partition state, found {len(found)}: was this optimizer "
                     "built by optim.build_optimizer?")
  return found[0]


def _same_layout(a, b) -> bool:
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  return all(jnp.shape(x) == jnp.shape(y) and jnp.result_type(x) == jnp.result_type(y)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def init_opt_state(tx: optax.GradientTransformation, params, *, step: int = 0, previous=None):
  """``tx.init(params)`` with the schedules at global ``step``, carrying state from a previous phase.

  With ``previous`` (the opt_state of the previous phase's optimizer), the state of every label that
  exists in both (the same rule: same regex, multiplier and schedule, claiming the same parameters)
  is carried over: Adam moments, momentum and their counts continue. New labels start fresh. Pass
  ``previous=None`` to restart (LP-FT's second phase).
  """
  state = tx.init(params)
  if previous is not None:
    old = _partition_state(previous).inner_states
    new = _partition_state(state)

    def carry(label, fresh):
      return old[label] if label in old and _same_layout(old[label], fresh) else fresh

    merged = type(new)({k: carry(k, v) for k, v in new.inner_states.items()})
    state = jax.tree.map(lambda x: merged if x is new else x, state, is_leaf=_is_partition)

  def at_step(x):
    if isinstance(x, optax.ScaleByScheduleState):
      return x._replace(count=jnp.full_like(x.count, step))
    return x

  return jax.tree.map(at_step, state,
                      is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
