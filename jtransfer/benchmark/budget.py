"""Training budgets that scale with the data, declared by a named rule, and a check that a run
had converged under its budget.

    from jtransfer.benchmark import budget
    b = budget.rule("epochs", n_train=50, batch_size=16, image_size=96, epochs=15,
                    min_steps=20, max_steps=300)            # Budget(steps=47, epochs=15.04, ...)
    b = budget.rule("bit_hyperrule", n_train=1000, batch_size=16, image_size=28)
    log_every, eval_every = budget.logging_plan(b.steps)   # enough points to judge convergence
    budget.convergence(train_loss, val_top1, total_steps=b.steps)["flag"]

Rules (``RULES``), each ``fn(*, n_train, batch_size, image_size, **args) -> Budget``:

- ``'epochs'``: ``steps = clamp(ceil(epochs · n_train / batch), min_steps, max_steps)``, the
  resolution as declared. When ``max_steps`` cuts the epochs below the declared floor the budget
  says so (``capped``), and the report flags it.
- ``'bit_hyperrule'``: BiT-HyperRule as published (Kolesnikov et al. 2020, "Big Transfer (BiT):
  General Visual Representation Learning", §3.3; google-research/big_transfer,
  ``bit_hyperrule.py``): at batch 512, 500 steps for fewer than 20,000 training examples, 10,000
  below 500,000, else 20,000; linear warm-up over the first step boundary (100, 500, 500 steps),
  then the learning rate divided by 10 at 30, 60 and 90 % of training (the boundaries
  ``[100, 200, 300, 400, 500]``, ``[500, 3000, 6000, 9000, 10000]``,
  ``[500, 6000, 12000, 18000, 20000]``); MixUp α = 0.1 from 20,000 examples up, none below;
  images smaller than 96 × 96 px resized to 160 and randomly cropped to 128, others to 512 and 480.
  Base learning rate 0.003 (SGD, momentum 0.9). At another batch the rule keeps the number of
  examples seen: steps × 512 / batch, and the learning rate × batch / 512 (linear scaling).

The convergence check (``convergence``): a run is flagged as not converged when, over its last
quarter, its training loss still fell by more than ``loss_tol`` (relative; the mean of the logged
losses of the last quarter against that of the third) *and* its validation top-1 still rose by
more than ``val_tol`` (the last evaluation against the one at or before 75 % of training). Both,
because a loss that keeps falling while validation stands still is fitting, not learning, and a
noisy validation gain with a flat loss is noise. Defaults: 5 % and one point of top-1 — at the
demo's sizes (200 validation images) one point is two images.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

__all__ = ["BIT_BASE_BATCH", "BIT_BASE_LR", "Budget", "RULES", "convergence", "logging_plan",
           "points_from_records", "rule"]

BIT_BASE_BATCH = 512
BIT_BASE_LR = 0.003


@dataclasses.dataclass(frozen=True)
class Budget:
  """A run's declared budget."""
  rule: str
  steps: int
  batch_size: int
  n_train: int
  resolution: int            # the model's input side
  resize: int | None = None  # resize-then-crop rules: the side resized to before the crop
  mixup_alpha: float = 0.0
  warmup_steps: int = 0
  lr_boundaries: tuple[int, ...] = ()  # steps where the learning rate is divided by 10
  lr_scale: float = 1.0      # × the rule's base learning rate (linear scaling with the batch)
  capped: bool = False       # max_steps cut the epochs below the declared floor

  @property
  def epochs(self) -> float:
    return self.steps * self.batch_size / self.n_train

  def as_row(self) -> dict:
    return {"budget_rule": self.rule, "budget_steps": self.steps,
            "budget_epochs": round(self.epochs, 3), "resolution": self.resolution,
            "budget_capped": self.capped}


def _positive(name: str, value, *, kind=int):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
    raise ValueError(f"{name} must be a positive number, got {value!r}")
  return kind(value)


def _epochs(*, n_train: int, batch_size: int, image_size: int, epochs: float,
            min_steps: int = 1, max_steps: int | None = None) -> Budget:
  epochs = _positive("epochs", epochs, kind=float)
  steps = max(int(min_steps), math.ceil(epochs * n_train / batch_size))
  capped = max_steps is not None and steps > int(max_steps)
  if capped:
    steps = int(max_steps)
  return Budget("epochs", steps, batch_size, n_train, image_size, capped=capped)


def _bit(*, n_train: int, batch_size: int, image_size: int) -> Budget:
  if n_train < 20_000:
    supports = (100, 200, 300, 400, 500)
  elif n_train < 500_000:
    supports = (500, 3000, 6000, 9000, 10_000)
  else:
    supports = (500, 6000, 12_000, 18_000, 20_000)
  scale = BIT_BASE_BATCH / batch_size  # keep the examples seen
  steps = [int(round(s * scale)) for s in supports]
  resize, crop = (160, 128) if image_size * image_size < 96 * 96 else (512, 480)
  return Budget("bit_hyperrule", steps[-1], batch_size, n_train, crop, resize=resize,
                mixup_alpha=0.0 if n_train < 20_000 else 0.1, warmup_steps=steps[0],
                lr_boundaries=tuple(steps[1:-1]), lr_scale=batch_size / BIT_BASE_BATCH)


RULES = {"epochs": _epochs, "bit_hyperrule": _bit}


def rule(name: str, *, n_train: int, batch_size: int, image_size: int, **args) -> Budget:
  """The budget rule ``name`` gives for ``n_train`` examples at ``batch_size`` and an input of
  ``image_size`` px; ValueError naming an unknown rule or a bad argument."""
  if name not in RULES:
    raise ValueError(f"unknown budget rule {name!r}; known: {', '.join(RULES)}")
  n_train = _positive("n_train", n_train)
  batch_size = _positive("batch_size", batch_size)
  image_size = _positive("image_size", image_size)
  try:
    return RULES[name](n_train=n_train, batch_size=batch_size, image_size=image_size, **args)
  except TypeError as e:
    raise ValueError(f"budget rule {name!r}: {e}") from e


def logging_plan(total_steps: int) -> tuple[int, int]:
  """``(log_every, eval_every)`` for the convergence check: the training loss about 8 times,
  validation at 75 % of training (the trainer also evaluates at the last step)."""
  total_steps = _positive("total_steps", total_steps)
  return max(1, total_steps // 8), max(1, int(round(0.75 * total_steps)))


def points_from_records(records: Iterable[dict]) -> tuple[list, list]:
  """``(train_loss, val_top1)`` as ``[(step, value), ...]`` from a run's ``metrics.jsonl``
  records (``train/loss``: the mean since the previous log; ``eval/top1``)."""
  loss, val = [], []
  for r in records:
    if "train/loss" in r:
      loss.append((int(r["step"]), float(r["train/loss"])))
    if "eval/top1" in r:
      val.append((int(r["step"]), float(r["eval/top1"])))
  return loss, val


def convergence(train_loss: Sequence[tuple[int, float]], val_top1: Sequence[tuple[int, float]],
                *, total_steps: int, loss_tol: float = 0.05, val_tol: float = 0.01) -> dict:
  """``{'flag', 'loss_drop', 'val_gain', 'reason'}``: ``flag`` True = still improving at the end
  (not converged), False = not, None = too few logged points to judge (see the module doc)."""
  q3, end = 0.5 * total_steps, 0.75 * total_steps
  third = [v for s, v in train_loss if q3 < s <= end]
  last = [v for s, v in train_loss if s > end]
  before = [v for s, v in sorted(val_top1) if s <= end]
  final = [v for s, v in sorted(val_top1) if s > end]
  if not third or not last or not before or not final:
    return {"flag": None, "loss_drop": None, "val_gain": None,
            "reason": "too few logged points (train loss in the third and last quarters, "
                      "validation at <= 75 % and at the end)"}
  a, b = sum(third) / len(third), sum(last) / len(last)
  loss_drop = (a - b) / a if a > 0 else 0.0
  val_gain = final[-1] - before[-1]
  flag = loss_drop > loss_tol and val_gain > val_tol
  reason = (f"loss {a:.3g} -> {b:.3g} ({loss_drop:+.1%} of it), validation top-1 "
            f"{before[-1]:.3f} -> {final[-1]:.3f} over the last quarter")
  return {"flag": bool(flag), "loss_drop": loss_drop, "val_gain": val_gain,
          "reason": ("still improving: " if flag else "settled: ") + reason}
