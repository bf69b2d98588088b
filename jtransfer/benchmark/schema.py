"""What a benchmark config says: its variants, protocol, cells and grids (no running here).

    from jtransfer.benchmark import schema
    v = schema.variant("train", freezing=optim.get_freezing_config("full_ft"),
                       search={"optim.lr": (1e-4, 3e-4)})
    schema.points(v)              # [{'optim.lr': 0.0001}, {'optim.lr': 0.0003}]
    schema.cells(config)          # [Cell('uci_digits', 'full_finetune', 1, 0), ...]

A *variant* is a kind (``benchmark/kinds/``: how a grid point is fitted and evaluated) with its
start, freezing, overrides, arguments and search grid; a *cell* is (dataset, variant, shots,
seed); a *trial* is one grid point of a cell. ``compose.validate`` checks a whole config.
"""

from __future__ import annotations

import dataclasses
import itertools

from ml_collections import config_dict

SELECTIONS = ("val", "fixed")


@dataclasses.dataclass(frozen=True)
class Cell:
  dataset: str
  variant: str
  shots: int | str  # int, or "all"
  seed: int

  @property
  def id(self) -> str:
    return f"{self.dataset}/{self.variant}/shots-{self.shots}/seed-{self.seed}"


def variant(kind: str, *, init: str = "pretrained", freezing=None, overrides=(), teacher: str = "",
            args=None, search=None, selection: str = "val", shots=None,
            seeds=None) -> config_dict.ConfigDict:
  """One variant of a benchmark config (configs build variants with this).

  Args:
    kind: a name of ``benchmark.kinds.KINDS``: 'train', 'surgical', 'surgical_shift', 'lp_ft',
      'wise', 'fedavg', a feature evaluator (ridge | knn | linear_probe_cached | logreg | ncm) or
      its pixel baseline (``pixels_<evaluator>``).
    init: where training (or a feature extractor) starts: 'pretrained' (the benchmark's
      pretrained weights), 'scratch' (random initialisation), or the name of one of the
      config's ``starts`` (``benchmark/starts.py``: weights made once on a source dataset).
    freezing: a freezing config (``optim.get_freezing_config(...)``); None = the base's.
    overrides: (dotted key, value) pairs applied to the base experiment (a typo is an error).
    teacher: 'train' (distillation) and 'wise': the variant (same cell, listed earlier) whose
      chosen run is the teacher / the fine-tuned end point.
    args: the kind's own arguments: a feature evaluator's keyword arguments, surgical
      ``stage`` (an index into the family's stages), wise ``alpha``, fedavg ``num_clients``,
      ``alpha`` (0 = IID), ``local_steps``, ``bn_stats``.
    search: ``{key: (values, ...)}``, a grid (the product, in declared order). Keys are dotted
      config keys for 'train'/'surgical' ('optim.lr'), or names of ``args`` ('l2_reg', 'k', 'lr',
      'stage', 'alpha').
    selection: 'val' (the grid point with the best validation top-1) or 'fixed' (no search: the
      declared point, budget 1).
    shots, seeds: the shot levels / seeds this variant runs at (a subset of the config's; None =
      all of them): cheap variants can take more draws than trained ones.
  """
  v = config_dict.ConfigDict()
  v.kind = kind
  v.init = init
  v.freezing = freezing or config_dict.placeholder(config_dict.ConfigDict)
  v.overrides = tuple(overrides)
  v.teacher = teacher
  v.args = args or {}
  v.search = tuple((k, tuple(vals)) for k, vals in dict(search or {}).items())
  v.selection = selection
  v.shots = None if shots is None else tuple(shots)
  v.seeds = None if seeds is None else tuple(seeds)
  return v


def default_protocol() -> config_dict.ConfigDict:
  """The held-out protocol; a benchmark config's ``protocol`` section overrides these fields."""
  p = config_dict.ConfigDict()
  # Fraction of the train split held out for validation (its END); 0 = no validation: the
  # runs evaluate on the test split, and only selection='fixed' (or one-point grids) is allowed.
  p.val_fraction = 0.2
  # k-shot cells: at most this many validation examples per class on average (a contiguous
  # slice of val_per_class × classes examples); None = the whole held-out part. 'all' cells
  # always use the whole held-out part (VTAB-1k's 800/200 in spirit).
  p.val_per_class = config_dict.placeholder(int)
  # Examples of the train split the protocol uses (pool + validation: its first train_limit), and
  # of the test split (its first test_limit); 0 = all. A declared subsample, for machines where a
  # whole split costs too long to evaluate; the report states both.
  p.train_limit = 0
  p.test_limit = 0
  # How k-shot cells choose their hyper-parameters: 'validation' (the held-out slice above: more
  # labels than the k they train on) or 'within_draw' ("true" few-shot, Perez et al. 2021: no
  # label beyond the k; feature and pixel classifiers cross-validate inside the draw, k >= 2;
  # every other variant, and every variant at k = 1, runs its first grid point, a rule declared
  # before the run). 'all' cells always use validation.
  p.selection = "validation"
  # Confidence level of every interval and test.
  p.level = 0.95
  # The declared questions, fixed before the run: (name, a, b, metric) tuples, a - b paired over
  # draws in every (dataset, shots) cell both variants have, metric 'test' or 'ood'; Holm over
  # them all (benchmark/comparisons.py). Nothing else is tested and nothing is marked "best".
  p.comparisons = ()
  return p


def protocol_of(config) -> config_dict.ConfigDict:
  """``default_protocol()`` updated with the config's ``protocol`` section."""
  p = default_protocol()
  if "protocol" in config:
    p.update(config.protocol)
  return p


def shifts_of(config) -> tuple[tuple[str, int], ...]:
  """The shifted test sets, ``((corruption, severity), ...)``."""
  return tuple((str(n), int(s)) for n, s in config.get("shifts", ()))


def shift_name(name: str, severity: int) -> str:
  return f"{name}-{severity}"


def points(v) -> list[dict]:
  """The grid of a variant: a list of ``{key: value}`` points, in declared order ([{}]: fixed)."""
  search = tuple(v.get("search", ()))
  if not search:
    return [{}]
  keys = [k for k, _ in search]
  return [dict(zip(keys, values)) for values in itertools.product(*(vals for _, vals in search))]


PROTOCOL_SELECTIONS = ("validation", "within_draw")


def within_draw(config, cell) -> bool:
  """Whether ``cell`` selects without labels beyond its draw (``protocol.selection``)."""
  return protocol_of(config).selection == "within_draw" and cell.shots != "all"


def cross_validated(config, cell, cross_validates: bool) -> bool:
  """Whether ``cell`` scores its points by cross-validation inside its draw: within-draw
  selection, a kind that can (``Kind.cross_validates``), and at least two examples per class."""
  return within_draw(config, cell) and cross_validates and int(cell.shots) >= 2


def cell_points(config, cell, cross_validates: bool) -> list[dict]:
  """The grid points ``cell`` runs: the variant's grid, or under within-draw selection its first
  point when it cannot be cross-validated inside the draw (``cross_validated``)."""
  grid = points(config.variants[cell.variant])
  if within_draw(config, cell) and not cross_validated(config, cell, cross_validates):
    return grid[:1]
  return grid


def point_id(point: dict) -> str:
  """'optim.lr=0.001,stage=3' ('default' for the empty point): the trial's name and run dir."""
  if not point:
    return "default"
  return ",".join(f"{k}={v}" for k, v in point.items())


def slug(point: dict) -> str:
  """``point_id`` as a directory name."""
  return point_id(point).replace("/", "_").replace(" ", "")


def cells(config) -> list[Cell]:
  """Dataset-major, then shots, seed, variant in ``config.order`` (teachers before students)."""
  return [Cell(d, v, s, seed) for d in config.datasets for s in config.shots
          for seed in config.seeds for v in config.order if runs_at(config.variants[v], s, seed)]


def runs_at(v, shots, seed) -> bool:
  """Whether variant ``v`` has a cell at ``(shots, seed)`` (its ``shots``/``seeds`` subsets)."""
  return ((v.get("shots") is None or shots in tuple(v.shots))
          and (v.get("seeds") is None or seed in tuple(v.seeds)))


__all__ = ["Cell", "PROTOCOL_SELECTIONS", "SELECTIONS", "cell_points", "cells", "cross_validated",
           "default_protocol", "point_id", "points", "protocol_of", "runs_at", "shift_name",
           "shifts_of", "slug", "variant", "within_draw"]
