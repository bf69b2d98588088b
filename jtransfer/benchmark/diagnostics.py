"""What a reviewer asks of each cell, as columns of its row: the budget it trained under, whether
it had converged, how many labels its selection used, how many test examples its score rests on.

    row.update(diagnostics.cell_facts(ctx, cell, chosen, trials, splits, row["config"]))

- ``budget_steps``, ``budget_epochs`` (steps × batch / training examples), ``resolution`` (the
  model's input side): for trained kinds; feature and pixel kinds have no steps.
- ``converged``: ``False`` when the chosen run's training loss *and* validation top-1 were both
  still improving over its last quarter (``budget.convergence``; such a cell is flagged in the
  report), ``True`` when not, ``None`` when the run logged too few points to judge or trained
  nothing.
- ``selection_labels``: labelled examples outside the training draw that chose this cell's
  hyper-parameters — the validation split's size when the variant searched (or built on a
  teacher that did), 0 when it ran one fixed point. A k-shot cell with ``selection_labels > 0``
  is not "true" few-shot learning (Perez et al. 2021), and the report says so.
- ``test_n``: examples in the test split (the within-draw binomial interval uses it).
"""

from __future__ import annotations

import os
import re

from jtransfer import workdir as wd
from jtransfer.benchmark import budget, evaluation, schema

__all__ = ["cell_facts", "split_size"]


def split_size(split: str) -> int | None:
  """Examples in an absolute TFDS slice ``name[a:b]`` (``None`` for an unsliced split)."""
  m = re.fullmatch(r"[^\[]+\[(\d*):(\d+)\]", split)
  return None if m is None else int(m.group(2)) - int(m.group(1) or 0)


def _train_examples(cell, splits, num_classes: int) -> int | None:
  if cell.shots == "all":
    return split_size(splits.pool)
  return int(cell.shots) * num_classes


def _selection_labels(ctx, cell, trials, splits) -> int:
  if schema.within_draw(ctx.config, cell):
    return 0
  v = ctx.variant(cell)
  searched = len(trials) > 1
  teacher = ctx.teacher(cell) if v.get("teacher") else None
  if searched or (teacher is not None and teacher.get("selection_labels")):
    return split_size(splits.val) or 0
  return 0


def _converged(run_dir: str | None, steps: int | None):
  if not run_dir or not steps:
    return None, "no training run"
  path = wd.RunDir(run_dir).metrics
  if not os.path.exists(path):  # a kind with its own loop (FedAvg) logs no metrics
    return None, "no metrics logged"
  records = wd.read_jsonl(path)
  loss, val = budget.points_from_records(records)
  out = budget.convergence(loss, val, total_steps=int(steps))
  return (None if out["flag"] is None else not out["flag"]), out["reason"]


def cell_facts(ctx, cell, chosen: dict, trials: list[dict], splits, config: dict,
               test_metrics: dict) -> dict:
  """The diagnostic columns of a cell's row (see the module docstring)."""
  data = config["data"]
  facts = {"resolution": data.get("image_size"),
           "selection_labels": _selection_labels(ctx, cell, trials, splits),
           "test_n": test_metrics.get("num_examples")}
  steps = chosen.get("steps")
  if steps:
    n = _train_examples(cell, splits, evaluation.num_classes(
        ctx.cell_config(cell, point=chosen["point"], splits=splits).data))
    facts["budget_steps"] = int(steps)
    facts["budget_epochs"] = (int(steps) * int(data["batch_size"]) / n) if n else None
  converged, why = _converged(chosen.get("run_dir"), steps)
  facts["converged"] = converged
  facts["convergence"] = why
  return facts
