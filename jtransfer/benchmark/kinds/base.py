"""The protocol every benchmark kind implements, and what the runner hands it.

    class MyKind(Kind):
      name = "mine"
      def fit(self, ctx, cell, point, splits): ...     # -> {'val': metrics, cost fields, ...}
      def test(self, ctx, cell, chosen, splits): ...   # -> {None: test metrics, shift: metrics}

A kind says how one grid point of a cell is fitted and scored on validation (``fit``: a *trial*)
and how the point the runner chose is evaluated on the test split and its shifted copies
(``test``). The runner (``benchmark/runner.py``) owns everything else: cells, trials and their
records, the choice by validation top-1, restarts, rows and the report; it never branches on a
kind's name. ``check`` validates a variant's arguments before anything runs, ``configure`` is the
kind's part of a cell's config, ``finish_row`` adds its own columns to a result row.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, TextIO

# A trial record's cost fields (every kind's ``fit`` returns them).
COST_FIELDS = ("trainable_params", "train_gflops", "peak_bytes")


@dataclasses.dataclass
class Context:
  """What a kind may use: the config, the workdir, shared caches and the runner's helpers."""
  config: Any
  workdir: str
  pretrained: str  # the benchmark's pretrained weights (``model.init``), or ''
  starts: dict  # start name -> its exported weights (``benchmark/starts.py``)
  cache: Any  # features.FeatureCache
  meter: Any  # cost.CostMeter
  results: dict  # cell id -> result row (teachers)
  stream: TextIO
  clock: Callable[[], float]
  compose: Callable[..., Any]  # (config, cell, *, pretrained, starts, ...) -> the cell's config
  run_dir_of: Callable[[Any, dict], str]  # (cell, point) -> the trial's run dir

  def cell_config(self, cell, **kwargs):
    """The cell's experiment config (``compose.cell_config``) with this benchmark's weights."""
    return self.compose(self.config, cell, pretrained=self.pretrained, starts=self.starts,
                        **kwargs)

  def variant(self, cell):
    return self.config.variants[cell.variant]

  def args(self, cell, point: dict) -> dict:
    """The kind's arguments at ``point``: the variant's ``args`` with the point's values."""
    return {**dict(self.variant(cell).args), **dict(point)}

  def teacher(self, cell) -> dict | None:
    """The result row of the cell's teacher (same cell, the variant named by ``teacher=``)."""
    v = self.variant(cell)
    if not v.get("teacher"):
      return None
    tid = dataclasses.replace(cell, variant=v.teacher).id
    if tid not in self.results:
      raise RuntimeError(f"{cell.id}: its teacher cell {tid} has no result")
    return self.results[tid]


class Kind:
  """A benchmark kind; subclasses override ``fit`` and ``test`` and what else differs."""

  name: str = ""
  # The names ``args`` and ``search`` may use; None = dotted config keys (trained kinds).
  arg_names: frozenset[str] | None = frozenset()
  # Whether ``teacher=`` must / may name an earlier variant, and of which kinds (None: any).
  # Whether ``fit`` can score a point by cross-validation inside the cell's draw (within-draw
  # selection, ``protocol.selection``); kinds that cannot run their first grid point there.
  cross_validates = False
  needs_teacher = False
  takes_teacher = False
  teacher_kinds: tuple[type, ...] | None = None
  # Its variants' features can serve the zero-shot section (feature classifiers).
  uses_features = False
  # Its trials write a run dir with config.json and export/ (the row records that config).
  exports = False

  def check(self, config, name: str, v, grid: list[dict], where: str) -> None:
    """Raises ValueError naming ``where`` for a bad argument of this kind (before any run)."""
    del config, name, v, grid, where

  def configure(self, cfg, v, point: dict, *, teacher: str, where: str) -> None:
    """This kind's part of a cell's config ``cfg`` at grid ``point`` (in place); ``teacher`` is
    the teacher's export dir (or ''), ``where`` names the variant in errors."""
    del cfg, v, point, teacher, where

  def fit(self, ctx: Context, cell, point: dict, splits) -> dict:
    """Fits one grid point; returns ``{'val': validation metrics, **COST_FIELDS, ...}``."""
    raise NotImplementedError

  def test(self, ctx: Context, cell, chosen: dict, splits) -> dict:
    """The chosen trial on the test split (key None) and each shift of ``ctx.config``."""
    raise NotImplementedError

  def finish_row(self, ctx: Context, cell, chosen: dict, row: dict) -> None:
    """Adds or corrects this kind's columns of a result row (in place)."""
    del ctx, cell, chosen, row


__all__ = ["COST_FIELDS", "Context", "Kind"]
