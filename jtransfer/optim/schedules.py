"""Learning-rate schedules of the global training step, built from the optimizer config.

    sched = optim.make_schedule(cfg, total_steps=10_000)        # step -> learning rate
    sched(0), sched(cfg.warmup_steps), sched(9_999)

Every schedule is ``lr × lr_mult × warmup(t) × shape(t)`` with ``t = step - start_step`` and a
linear warmup ``min(1, t / warmup_steps)``; ``start_step`` lets a phase (LP-FT's fine-tune) run its
own schedule over ``[start_step, total_steps)``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax.numpy as jnp

# Fields of the optimizer config that define a schedule; a rule may override any of them.
SCHEDULE_FIELDS = ("lr", "schedule", "warmup_steps", "end_lr_ratio", "decay_boundaries",
                   "decay_factor")


def _constant(t, span, f):
  del span, f
  return jnp.ones_like(t)


def _warmup_cosine(t, span, f):
  """Cosine from 1 (end of warmup) to end_lr_ratio (end of the span)."""
  progress = jnp.clip((t - f["warmup_steps"]) / max(span - f["warmup_steps"], 1), 0.0, 1.0)
  end = f["end_lr_ratio"]
  return end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))


def _warmup_step(t, span, f):
  """× decay_factor at each boundary (fractions of the span): BiT-HyperRule's staircase."""
  boundaries = jnp.asarray([round(b * span) for b in f["decay_boundaries"]], jnp.float32)
  return f["decay_factor"] ** jnp.sum(t[..., None] >= boundaries, axis=-1)


SCHEDULES: dict[str, Callable] = {
    "constant": _constant,
    "warmup_cosine": _warmup_cosine,
    "warmup_step": _warmup_step,
}


def make_schedule(cfg, *, total_steps: int, start_step: int = 0, lr_mult: float = 1.0,
                  overrides: Mapping[str, Any] | None = None) -> Callable:
  """The schedule ``step -> lr`` of the optimizer config ``cfg`` (fields ``SCHEDULE_FIELDS``).

  Args:
    cfg: the optimizer config (``optim.get_config()``) or any mapping with the schedule fields.
    total_steps: the global step where the schedule ends (cosine reaches its end value).
    start_step: the global step where it starts (warmup from there).
    lr_mult: multiplies the learning rate (a rule's multiplier).
    overrides: schedule fields that replace those of ``cfg`` (a rule's own schedule).
  """
  f = {k: cfg[k] for k in SCHEDULE_FIELDS}
  f.update(overrides or {})
  if f["schedule"] not in SCHEDULES:
    raise ValueError(f"Unknown schedule {f['schedule']!r}; known: {', '.join(SCHEDULES)}")
  span = int(total_steps) - int(start_step)
  if span <= 0:
    raise ValueError(f"total_steps ({total_steps}) must exceed start_step ({start_step})")
  if not 0 <= f["warmup_steps"] <= span:
    raise ValueError(f"warmup_steps={f['warmup_steps']} must be within the schedule's {span} steps")
  bounds = tuple(f["decay_boundaries"])
  if f["schedule"] == "warmup_step" and (
      any(not 0 < b < 1 for b in bounds) or list(bounds) != sorted(bounds)):
    raise ValueError(f"decay_boundaries must be increasing fractions in (0, 1), got {bounds}")
  shape = SCHEDULES[f["schedule"]]
  peak = float(f["lr"]) * float(lr_mult)
  warmup = int(f["warmup_steps"])

  def schedule(step):
    t = jnp.maximum(jnp.asarray(step, jnp.float32) - start_step, 0.0)
    warm = jnp.minimum(1.0, t / warmup) if warmup else 1.0
    return peak * warm * shape(t, span, f)

  return schedule
