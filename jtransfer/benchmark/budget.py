"""Training budgets that scale with the data, declared by a named rule, and a check that a run had
converged under its budget.

    from jtransfer.benchmark import budget
    b = budget.rule("epochs", n_train=50, batch_size=16, image_size=96, epochs=15,
                    min_steps=20, max_steps=300)           # 47 steps, 15.04 epochs, 96 px
    bit = budget.rule("bit_hyperrule", n_train=1000, batch_size=16, image_size=28)
    bit.steps, bit.lr, bit.resize, bit.resolution          # 16000, 9.375e-05, 160, 128
    log_every, eval_every = budget.logging_plan(b.steps)   # (5, 35): enough points to judge
    loss = [(s, 2.0 - s / 50) for s in range(5, 48, 5)]
    budget.convergence(loss, [(35, 0.6), (47, 0.7)], total_steps=b.steps)["flag"]  # True

Rules (``RULES``), each ``fn(*, n_train, batch_size, image_size, **args) -> Budget``; ``rule(name,
...)`` looks one up and turns an unknown name or a bad argument into a ValueError naming it:

- ``'epochs'``: ``steps = clamp(ceil(epochs · n_train / batch), min_steps, max_steps)``; the
  resolution is ``image_size`` as declared. When ``max_steps`` cuts the run below the declared
  epochs floor, the budget records the epochs it actually gets and ``capped=True``, and the report
  flags it.
- ``'bit_hyperrule'``: BiT-HyperRule as published in google-research/big_transfer,
  ``bit_hyperrule.py`` (Kolesnikov et al. 2020, "Big Transfer (BiT): General Visual Representation
  Learning"). At its batch of 512, ``get_schedule`` gives the step supports ``[100, 200, 300, 400,
  500]`` below 20,000 training examples, ``[500, 3000, 6000, 9000, 10_000]`` below 500,000 and
  ``[500, 6000, 12_000, 18_000, 20_000]`` above: a linear warm-up to the first support, the
  learning rate divided by 10 after each of the middle three, the run ending at the last (the
  larger two decay at 30/60/90 % of training, the smallest at 40/60/80 %). ``get_mixup``: MixUp
  α = 0.1 from 20,000 examples up, none below. ``get_resolution``: images of area < 96 × 96 are
  resized to 160 × 160 and randomly cropped to 128 (evaluation: resized to 128), larger ones to 512
  and 480. ``get_lr``: base learning rate 0.003, SGD with momentum 0.9, no weight decay
  (``bit_pytorch/train.py``). ``image_size`` is the dataset's own image side (or an ``(h, w)``
  pair), which is what the rule reads. At another batch the published code keeps the steps; this
  rule instead keeps the examples seen (every support × 512 / batch, rounded) and scales the
  learning rate linearly (× batch / 512). The published schedule divides the rate at ``step >
  support``; the ``'warmup_step'`` schedule of ``jtransfer.optim`` at ``step >= support``: one step
  apart.

``Budget.config_overrides()`` gives the dotted config fields a budget sets (``train.num_steps``,
``data.batch_size``, ``data.image_size``, and for BiT MixUp and the optimizer with its schedule);
the resize-then-crop itself belongs in ``data.pp_train``/``data.pp_eval`` (``resize``,
``random_crop``, ``flip_lr``).

The convergence check (``convergence``): a run is flagged as *not converged* when, over its last
quarter (``last_fraction``), both

- its training loss still fell by more than ``loss_tol``, relative: the mean of the logged losses
  in the eighth of training that ends at the 75 % point against the mean of those in the last
  eighth (two windows of ``last_fraction / 2`` of training, their centres a quarter apart; each
  logged value is itself the mean since the previous log), and
- its validation top-1 still rose by more than ``val_tol``: the last evaluation at or before the
  75 % point (within the third quarter) against the last evaluation after it.

Both, because a loss that keeps falling while validation stands still is fitting, not learning,
and a validation gain with a flat loss is noise. Defaults: ``loss_tol=0.05`` (a 5 % drop in a
quarter of training is a trend, not the step-to-step noise of a mean over an eighth of it) and
``val_tol=0.01`` (one point of top-1 on the 0..1 scale; with 200 validation images, two images).
When the log has no point in one of these windows the verdict is ``None`` (cannot judge), not
``False``; ``logging_plan`` gives a plan that always has them from 8 steps up.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Iterable, Sequence

__all__ = ["BIT_BASE_BATCH", "BIT_BASE_LR", "Budget", "RULES", "convergence", "logging_plan",
           "points_from_records", "rule"]

BIT_BASE_BATCH = 512   # bit_common.py --batch default; bit_hyperrule.py's schedules are at it
BIT_BASE_LR = 0.003    # bit_hyperrule.get_lr(base_lr=0.003)
BIT_DECAY = 0.1        # the staircase: ÷10 at each middle support
BIT_MOMENTUM = 0.9     # bit_pytorch/train.py: torch.optim.SGD(lr=0.003, momentum=0.9)


@dataclasses.dataclass(frozen=True)
class Budget:
  """A run's declared budget: what the rule gave, and the facts a results row reports."""
  rule: str
  steps: int
  batch_size: int
  n_train: int
  resolution: int             # the side of the images the model is fed (the crop, if any)
  resize: int | None = None   # resize-then-crop rules: the side resized to before the crop
  mixup_alpha: float | None = None   # None: the rule leaves MixUp to the config
  warmup_steps: int = 0
  lr_boundaries: tuple[int, ...] = ()  # steps where the learning rate is × decay_factor
  decay_factor: float = BIT_DECAY
  lr: float | None = None     # the rule's learning rate (None: the config's own)
  lr_scale: float = 1.0       # × the rule's base learning rate (linear scaling with the batch)
  capped: bool = False        # max_steps cut the run below the declared epochs floor

  @property
  def epochs(self) -> float:
    """Passes over the training set: steps × batch / n_train."""
    return self.steps * self.batch_size / self.n_train

  @property
  def decay_fractions(self) -> tuple[float, ...]:
    """``lr_boundaries`` as fractions of the run (``optim.decay_boundaries``)."""
    return tuple(b / self.steps for b in self.lr_boundaries)

  def as_row(self) -> dict:
    """The flat fields of a results row."""
    return {"budget_rule": self.rule, "budget_steps": self.steps,
            "budget_epochs": round(self.epochs, 3), "resolution": self.resolution,
            "budget_capped": self.capped}

  def config_overrides(self) -> dict:
    """``{dotted config field: value}`` of what this budget sets in a training config."""
    out = {"train.num_steps": self.steps, "data.batch_size": self.batch_size,
           "data.image_size": self.resolution}
    if self.mixup_alpha is not None:
      out["data.mixup_alpha"] = self.mixup_alpha
    if self.lr is not None:
      out.update({"optim.name": "momentum", "optim.momentum": BIT_MOMENTUM,
                  "optim.weight_decay": 0.0, "optim.lr": self.lr,
                  "optim.schedule": "warmup_step", "optim.warmup_steps": self.warmup_steps,
                  "optim.decay_boundaries": self.decay_fractions,
                  "optim.decay_factor": self.decay_factor})
    return out


def _positive(name: str, value, *, kind=int):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ValueError(f"{name} must be a positive number, got {value!r}")
  if kind is int and value != int(value):
    raise ValueError(f"{name} must be a whole number, got {value!r}")
  return kind(value)


def _common(n_train, batch_size) -> tuple[int, int]:
  return _positive("n_train", n_train), _positive("batch_size", batch_size)


def _epochs(*, n_train: int, batch_size: int, image_size: int, epochs: float,
            min_steps: int = 1, max_steps: int | None = None) -> Budget:
  """``ceil(epochs · n_train / batch)`` steps, at least ``min_steps``, at most ``max_steps``."""
  n_train, batch_size = _common(n_train, batch_size)
  image_size = _positive("image_size", image_size)
  epochs = _positive("epochs", epochs, kind=float)
  min_steps = _positive("min_steps", min_steps)
  if max_steps is not None:
    max_steps = _positive("max_steps", max_steps)
    if max_steps < min_steps:
      raise ValueError(f"max_steps ({max_steps}) is below min_steps ({min_steps})")
  steps = max(min_steps, math.ceil(epochs * n_train / batch_size))
  capped = max_steps is not None and steps > max_steps
  return Budget("epochs", max_steps if capped else steps, batch_size, n_train, image_size,
                capped=capped)


def _bit_supports(n_train: int) -> tuple[int, ...]:
  """bit_hyperrule.get_schedule, at batch 512."""
  if n_train < 20_000:
    return (100, 200, 300, 400, 500)
  if n_train < 500_000:
    return (500, 3000, 6000, 9000, 10_000)
  return (500, 6000, 12_000, 18_000, 20_000)


def _bit(*, n_train: int, batch_size: int, image_size) -> Budget:
  """BiT-HyperRule (see the module docstring), scaled to ``batch_size``."""
  n_train, batch_size = _common(n_train, batch_size)
  if isinstance(image_size, (tuple, list)):
    if len(image_size) != 2:
      raise ValueError(f"image_size must be a side or an (h, w) pair, got {image_size!r}")
    h, w = (_positive("image_size", s) for s in image_size)
  else:
    h = w = _positive("image_size", image_size)
  scale = BIT_BASE_BATCH / batch_size  # keep the examples seen
  steps = [max(1, int(s * scale + 0.5)) for s in _bit_supports(n_train)]  # rounded half up
  resize, crop = (160, 128) if h * w < 96 * 96 else (512, 480)  # get_resolution
  lr_scale = batch_size / BIT_BASE_BATCH
  return Budget("bit_hyperrule", steps[-1], batch_size, n_train, crop, resize=resize,
                mixup_alpha=0.0 if n_train < 20_000 else 0.1, warmup_steps=steps[0],
                lr_boundaries=tuple(steps[1:-1]), decay_factor=BIT_DECAY,
                lr=BIT_BASE_LR * lr_scale, lr_scale=lr_scale)


RULES = {"epochs": _epochs, "bit_hyperrule": _bit}


def rule(name: str, *, n_train: int, batch_size: int, image_size, **args) -> Budget:
  """The budget rule ``name`` gives for ``n_train`` training examples at ``batch_size`` with
  images of side ``image_size``; ``args`` are the rule's own (``epochs``: ``epochs``,
  ``min_steps``, ``max_steps``). ValueError naming an unknown rule or a bad argument."""
  if name not in RULES:
    raise ValueError(f"unknown budget rule {name!r}; known: {', '.join(RULES)}")
  fn = RULES[name]
  kwargs = dict(n_train=n_train, batch_size=batch_size, image_size=image_size, **args)
  try:
    inspect.signature(fn).bind(**kwargs)
  except TypeError as e:
    takes = ", ".join(p for p in inspect.signature(fn).parameters
                      if p not in ("n_train", "batch_size", "image_size"))
    raise ValueError(f"budget rule {name!r}: {e}; its own arguments: {takes or 'none'}") from None
  return fn(**kwargs)


def logging_plan(total_steps: int) -> tuple[int, int]:
  """``(log_every, eval_every)`` for ``convergence``: the training loss every eighth of the run
  (``train.log_every``; the trainer also logs at every evaluation and at the end), validation at
  the last step at or before 75 % (``train.eval_every``; the trainer also evaluates at the end).
  Below 8 steps a run is too short to judge: ``(1, 0)``, every step logged, one evaluation at the
  end."""
  total_steps = _positive("total_steps", total_steps)
  if total_steps < 8:
    return 1, 0
  return total_steps // 8, (3 * total_steps) // 4


def _finite(v) -> float | None:
  try:
    v = float(v)
  except (TypeError, ValueError):
    return None
  return v if math.isfinite(v) else None


def points_from_records(records: Iterable[dict]) -> tuple[list, list]:
  """``(train_loss, val_top1)``, each ``[(step, value), ...]`` sorted by step, from a run's
  ``metrics.jsonl`` records: ``train/loss`` (``LogTrain``: the mean since the previous log) and
  ``eval/top1`` (``Evaluate``: the run's own eval split; other evaluators write
  ``eval/<name>/top1`` and are left out). A step written twice (a resumed run) keeps its last
  value; non-finite values ("nan") are left out."""
  loss, val = {}, {}
  for r in records:
    if "step" not in r:
      continue
    for key, out in (("train/loss", loss), ("eval/top1", val)):
      v = _finite(r.get(key))
      if v is not None:
        out[int(r["step"])] = v
  return sorted(loss.items()), sorted(val.items())


def convergence(train_loss: Sequence[tuple[int, float]], val_top1: Sequence[tuple[int, float]],
                *, total_steps: int, last_fraction: float = 0.25, loss_tol: float = 0.05,
                val_tol: float = 0.01) -> dict:
  """``{'flag', 'loss_drop', 'val_gain', 'reason'}``: ``flag`` True = both the training loss and
  validation top-1 still improving over the last ``last_fraction`` of ``total_steps`` (not
  converged), False = not, None = too few logged points to judge; ``loss_drop`` is relative,
  ``val_gain`` in top-1 units. The windows and defaults are in the module docstring."""
  total_steps = _positive("total_steps", total_steps)
  if not 0 < last_fraction <= 0.5:
    raise ValueError(f"last_fraction must be in (0, 0.5], got {last_fraction!r}")
  if loss_tol < 0 or val_tol < 0:
    raise ValueError(f"loss_tol and val_tol must be >= 0, got {loss_tol!r}, {val_tol!r}")
  q = (1 - last_fraction) * total_steps   # the 75 % point
  w = last_fraction / 2 * total_steps     # the loss windows: an eighth of training
  start = [v for s, v in train_loss if q - w < s <= q]
  end = [v for s, v in train_loss if total_steps - w < s <= total_steps]
  before = [v for s, v in sorted(val_top1) if q - last_fraction * total_steps < s <= q]
  after = [v for s, v in sorted(val_top1) if q < s]
  missing = [what for what, got in (
      (f"training loss in steps ({q - w:g}, {q:g}]", start),
      (f"training loss in steps ({total_steps - w:g}, {total_steps}]", end),
      (f"validation in steps ({q - last_fraction * total_steps:g}, {q:g}]", before),
      (f"validation after step {q:g}", after)) if not got]
  if missing:
    return {"flag": None, "loss_drop": None, "val_gain": None,
            "reason": "too few logged points: none of " + "; ".join(missing)}
  a, b = sum(start) / len(start), sum(end) / len(end)
  loss_drop = (a - b) / a if a > 0 else 0.0
  val_gain = after[-1] - before[-1]
  flag = loss_drop > loss_tol and val_gain > val_tol
  reason = (f"over the last {last_fraction:.0%}: training loss {a:.3g} -> {b:.3g} "
            f"({-loss_drop:+.1%}), validation top-1 {before[-1]:.3f} -> {after[-1]:.3f}")
  return {"flag": bool(flag), "loss_drop": loss_drop, "val_gain": val_gain,
          "reason": ("still improving " if flag else "settled ") + reason}
