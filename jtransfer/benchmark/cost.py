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

from jtransfer import methods, models, optim
from jtransfer.train import fields, inputs, trainer


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


def xla_convs(model_cfg):
  """``model_cfg`` with XLA's convolutions: ``cost_analysis`` sees no FLOPs inside a custom call
  (the oneDNN ones, ``conv_impl='onednn'``/'auto'), and every formulation does the same
  arithmetic, so costs are counted on this twin."""
  if model_cfg.get("conv_impl", "xla") in ("xla", "matmul"):
    return model_cfg
  model_cfg = model_cfg.copy_and_resolve_references()
  with model_cfg.unlocked():
    model_cfg.conv_impl = "xla"
  return model_cfg


class CostMeter:
  """Per-program step costs, memoised (seeds and shots reuse one program)."""

  def __init__(self):
    self._train: dict[str, dict] = {}
    self._forward: dict[str, dict] = {}

  def train(self, cfg, run_dir: str, steps: int) -> dict:
    """``{trainable_params, step_gflops, train_gflops, peak_bytes}`` of a finished run.

    The steps are rebuilt as the trainer builds them (``trainer.setup``, ``Phases.at``: the
    same shared ``jax.jit`` functions) and lowered on abstract state and batch with the trainer's
    shardings, so jit's caches return the trainer's trace and executable (no compile; a
    oneDNN-convolution model is costed on its XLA-convolution twin, ``xla_convs``, which does).
    """
    key = program_key(cfg)
    if key not in self._train:
      model_cfg = xla_convs(cfg.model)
      if model_cfg is not cfg.model:
        cfg = cfg.copy_and_resolve_references()
        with cfg.unlocked():
          cfg.model = model_cfg
      task = methods.task_for(cfg)
      run = trainer.setup(cfg, run_dir, task=task, source=None, writer=None, ckpt=None)
      shape = run.source.info.image_shape
      b = run.source.batch_size
      # The shardings the trainer's arguments carry: the same avals, so jax.jit's caches hand
      # back the trainer's own trace, lowering and executable (no retrace, no second compile).
      on_mesh = getattr(run.par, "batch_sharding", None)
      batch = {"image": jax.ShapeDtypeStruct((b, *shape), np.float32, sharding=on_mesh),
               "label": jax.ShapeDtypeStruct((b,), np.int32, sharding=on_mesh)}
      if cfg.data.get("mixup_alpha", 0) > 0:
        batch["soft_label"] = jax.ShapeDtypeStruct((b, run.num_classes), np.float32,
                                                   sharding=on_mesh)
      per_phase = []
      for i, phase in enumerate(run.phases.phases):
        ph = run.phases.at(i)
        state = jax.eval_shape(lambda ph=ph: trainer.create_state(run.variables, ph.tx,
                                                                  ema=run.use_ema))
        if on_mesh is not None:
          state = jax.tree.map(
              lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s,
                                                weak_type=x.weak_type),
              state, run.par.state_sharding(state))
        c = step_cost(ph.step.lower(state, batch, run.extra))
        labels = optim.label_params(run.variables["params"], phase.param_rules)
        trainable = count_params(run.variables["params"], mask=optim.trainable_mask(labels))
        per_phase.append({"start": phase.start_step, "flops": c["flops"],
                          "peak_bytes": c["peak_bytes"], "trainable": trainable})
      self._train[key] = {"phases": per_phase}
    phases = self._train[key]["phases"]
    total, known = 0.0, True
    for i, ph in enumerate(phases):
      stop = phases[i + 1]["start"] if i + 1 < len(phases) else steps
      n = max(0, min(stop, steps) - ph["start"])
      g = train_gflops(ph["flops"], n)
      known &= g is not None
      total += g or 0.0
    peaks = [p["peak_bytes"] for p in phases if p["peak_bytes"] is not None]
    return {"trainable_params": max(p["trainable"] for p in phases),
            "train_gflops": total if known else None,
            "peak_bytes": max(peaks) if peaks else None}

  def forward(self, model_cfg, data_cfg, batch: int) -> dict:
    """``{flops_per_example, peak_bytes}`` of the feature extractor's compiled forward pass."""
    key = json.dumps([model_cfg.arch, models.options_of(model_cfg), data_cfg.dataset,
                      data_cfg.image_size, list(data_cfg.get("pp_eval") or ()), batch], default=str)
    if key not in self._forward:
      shape = inputs.from_config(data_cfg).info.image_shape
      model = models.from_config(xla_convs(model_cfg), num_classes=None)
      variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                    np.zeros((1, *shape), np.float32)))
      fn = jax.jit(lambda v, x: model.apply(v, x)[1]["pre_logits"])
      c = step_cost(fn.lower(variables, jax.ShapeDtypeStruct((batch, *shape), np.float32)))
      self._forward[key] = {"flops_per_example": None if c["flops"] is None else c["flops"] / batch,
                            "peak_bytes": c["peak_bytes"]}
    return self._forward[key]


__all__ = ["CostMeter", "count_params", "program_key", "step_cost", "train_gflops"]
