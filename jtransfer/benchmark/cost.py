"""What a run costs, from XLA's own accounting: flops and bytes of a step, peak memory, parameters.

    from jtransfer.benchmark import cost
    compiled = jax.jit(train_step).lower(state, batch).compile()
    c = cost.step_cost(compiled)    # {'flops': 4.1e9, 'bytes_accessed': 2.2e8, 'peak_bytes': ...}
    cost.count_params(params), cost.count_params(params, mask=optim.trainable_mask(labels))
    cost.train_gflops(c["flops"], steps=500, extract_flops=feature_pass_flops)

The numbers are XLA's static estimates for the optimised program, not measurements: ``flops``
counts multiply-adds as 2 (a [m, k] @ [k, n] matmul is 2·m·n·k) and does not see work inside
opaque custom calls; for an SPMD program over several devices they are per device. A value XLA
does not report on this backend or jax version is None, never an exception, so cost columns can
be recorded unconditionally.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from typing import Any

import jax
import numpy as np

from jtransfer import models
from jtransfer.train import fields

__all__ = ["count_params", "program_key", "step_cost", "train_gflops"]


def _first_dict(cost: Any) -> dict | None:
  """cost_analysis() is a dict in current jax, a list with one dict per program in older ones."""
  if isinstance(cost, (list, tuple)):
    cost = next((c for c in cost if c), None)
  return cost if isinstance(cost, dict) else None


def _number(value: Any) -> float | None:
  if isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value):
    # XLA reports -1 or negative sizes for "unknown" on some backends.
    return float(value) if value >= 0 else None
  return None


def _peak_bytes(memory: Any) -> float | None:
  if memory is None:
    return None
  peak = _number(getattr(memory, "peak_memory_in_bytes", None))
  if peak:
    return peak
  # Older jaxlibs have no peak field: arguments + outputs + scratch, minus outputs that reuse
  # (alias) argument buffers, the usual estimate from the buffer assignment's totals.
  parts = [_number(getattr(memory, f"{name}_size_in_bytes", None))
           for name in ("argument", "output", "temp")]
  if any(p is None for p in parts):
    return None
  alias = _number(getattr(memory, "alias_size_in_bytes", None)) or 0.0
  return sum(parts) - alias


def step_cost(compiled_or_lowered: Any) -> dict[str, float | None]:
  """``{'flops', 'bytes_accessed', 'peak_bytes'}`` of a jitted function's compiled program.

  Takes ``jax.jit(f).lower(*args).compile()``, or the ``.lower(*args)`` result (compiled here, so
  that the numbers describe the optimised program and memory analysis is available). Fields XLA
  does not provide are None.
  """
  compiled = compiled_or_lowered
  if not hasattr(compiled, "memory_analysis") and hasattr(compiled, "compile"):
    compiled = compiled.compile()
  try:
    cost = _first_dict(compiled.cost_analysis())
  except Exception:  # noqa: BLE001 — some backends raise (Unimplemented) instead of returning None
    cost = None
  try:
    memory = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 — as above
    memory = None
  cost = cost or {}
  return {"flops": _number(cost.get("flops")),
          "bytes_accessed": _number(cost.get("bytes accessed")),
          "peak_bytes": _peak_bytes(memory)}


# Input fields that can change a train step's shapes, and so its flops and memory: the dataset
# (classes, channels) and the host preprocessing (the image shape it yields).
_SHAPE_INPUTS = ("data.dataset", "data.pp_train")


def program_key(cfg) -> str:
  """What fixes a train step's program up to constants: its program fields (``train/fields.py``),
  the inputs that change its shapes, and a distillation teacher's architecture. The flops and
  memory do not change with the seed, the few-shot draw, the learning rate or where the weights
  come from."""
  keep = lambda k: fields.in_program(k) or k in _SHAPE_INPUTS
  d = fields.select(json.loads(cfg.to_json_best_effort()), keep)
  teacher = cfg.loss.distill.get("teacher")
  if teacher:
    meta = models.read_meta(teacher) or {}
    d["loss.distill.teacher"] = [meta.get("arch"), meta.get("options")]
  return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def count_params(tree: Any, mask: Any = None) -> int:
  """Number of scalars in the array leaves of ``tree``; with ``mask``, only where it is True.

  ``mask`` is a tree of bools with ``tree``'s structure, or a prefix of it (one bool for a whole
  subtree), e.g. ``optim.trainable_mask(labels)``: the trainable count.
  """
  if mask is None:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))
  size = lambda sub: sum(np.size(x) for x in jax.tree.leaves(sub))
  counts = jax.tree.map(lambda keep, sub: size(sub) if keep else 0, mask, tree)
  return int(sum(jax.tree.leaves(counts)))


def train_gflops(step_flops: float | None, steps: int, extract_flops: float = 0.0) -> float | None:
  """Total GFLOPs of a run: ``steps`` train steps plus one-off work (a feature-extraction pass).

  None when ``step_flops`` is None (not reported), so a missing measurement is never shown as 0.
  """
  if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
    raise ValueError(f"steps must be an int >= 0, got {steps!r}")
  if step_flops is None:
    return None
  if step_flops < 0 or extract_flops is None or extract_flops < 0:
    raise ValueError(f"flops must be >= 0, got step_flops={step_flops!r}, "
                     f"extract_flops={extract_flops!r}")
  return (float(step_flops) * int(steps) + float(extract_flops)) / 1e9
