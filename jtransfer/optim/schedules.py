"""Learning-rate schedules of the global training step, built from the optimizer config.

    sched = optim.make_schedule(cfg, total_steps=10_000)        # step -> learning rate
    sched(0), sched(cfg.warmup_steps), sched(9_999)

Every schedule is ``lr × lr_mult × warmup(t) × shape(t)`` with ``t = step - start_step`` and a
linear warmup ``min(1, t / warmup_steps)``; ``start_step`` lets a phase (LP-FT's fine-tune) run its
own schedule over ``[start_step, total_steps)``. The shapes are optax's schedule constructors
(``warmup_cosine_decay_schedule``, ``piecewise_constant_schedule``, ``linear_schedule``), equal
to that formula up to float32 rounding (~1e-7 of the peak).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax.numpy as jnp
import optax

# Fields of the optimizer config that define a schedule; a rule may override any of them.
SCHEDULE_FIELDS = ("lr", "schedule", "warmup_steps", "end_lr_ratio", "decay_boundaries",
                   "decay_factor")


def _warmup(peak: float, warmup: int) -> optax.Schedule:
  """0 -> peak linearly over ``warmup`` steps, then peak (optax's linear schedule of 0 steps would
  stay at 0)."""
  return optax.linear_schedule(0.0, peak, warmup) if warmup else optax.constant_schedule(peak)


def _constant(peak, warmup, span, f):
  del span, f
  return _warmup(peak, warmup)


def _warmup_cosine(peak, warmup, span, f):
  """Cosine from peak (end of warmup) to peak × end_lr_ratio (end of the span)."""
  # A cosine of at least one step: with warmup == span, peak at the span's end, then the end value.
  return optax.warmup_cosine_decay_schedule(
      0.0, peak, warmup, warmup + max(span - warmup, 1), end_value=peak * f["end_lr_ratio"])


def _warmup_step(peak, warmup, span, f):
  """× decay_factor at each boundary (fractions of the span): BiT-HyperRule's staircase."""
  scales: dict[int, float] = {}
  for b in f["decay_boundaries"]:  # two fractions may round to one step: both factors apply
    scales[round(b * span)] = scales.get(round(b * span), 1.0) * f["decay_factor"]
  stairs = optax.piecewise_constant_schedule(peak, scales)
  if not warmup:
    return stairs
  # Multiplied, not joined after the warmup: a boundary may fall within it.
  warm = _warmup(1.0, warmup)
  return lambda t: warm(t) * stairs(t)


# name -> fn(peak, warmup_steps, span, fields) -> optax schedule of the steps since start_step.
SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
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
  peak = float(f["lr"]) * float(lr_mult)
  sched = SCHEDULES[f["schedule"]](peak, int(f["warmup_steps"]), span, f)

  def schedule(step):
    t = jnp.maximum(jnp.asarray(step, jnp.float32) - start_step, 0.0)  # before start: its start
    return jnp.asarray(sched(t), jnp.float32)

  return schedule
