"""A cell's data splits and experiment config, and the check of a whole benchmark config.

    splits = compose.splits_for(config, "uci_digits", 5)   # Splits(pool, val, test)
    cfg = compose.cell_config(config, cell, pretrained=..., point={"optim.lr": 1e-3}, splits=splits)
    compose.validate(config)                                # before anything runs

The dataset's train split is cut into a *pool* (its first ``1 - val_fraction``) and a
*validation* part (the rest, at most ``val_per_class × classes`` examples for k-shot cells):
few-shot examples are drawn from the pool only, so validation is disjoint from them, and only the
chosen point ever reads the test split.
"""

from __future__ import annotations

import dataclasses
import os

from jtransfer.benchmark import comparisons, kinds, schema, zeroshot_section
from jtransfer.benchmark import starts as starts_lib
from jtransfer.data import corruptions
from jtransfer.train.config import apply_overrides


@dataclasses.dataclass(frozen=True)
class Splits:
  """TFDS split strings of a (dataset, shots): the training pool, validation, test."""
  pool: str
  val: str
  test: str


def splits_for(config, dataset: str, shots) -> Splits:
  """The pool / validation / test split strings of ``dataset`` (absolute TFDS slices).

  The pool is the first ``round(n · (1 - val_fraction))`` examples of the train split, validation
  the rest (for k-shot cells at most ``val_per_class × num_classes`` of them); the two are
  disjoint by construction, and few-shot draws come from the pool only. ``n`` is the split's size,
  or ``protocol.train_limit`` when smaller; ``protocol.test_limit`` keeps the test split's first
  examples.
  """
  protocol = schema.protocol_of(config)
  train, test = config.base.data.train_split, config.base.data.eval_split
  if protocol.test_limit:
    test = f"{test}[:{int(protocol.test_limit)}]"
  if not protocol.val_fraction:
    return Splits(train, test, test)
  cfg = config.base.data.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.dataset, cfg.shots, cfg.vtab1k = dataset, None, False
  from jtransfer.data import sources  # the split sizes, without reading the examples
  n = sources.open_split(cfg, train).num_examples
  if protocol.train_limit:
    n = min(n, int(protocol.train_limit))
  n_pool = int(round(n * (1.0 - protocol.val_fraction)))
  stop = n
  if shots != "all" and protocol.val_per_class:
    num_classes = sources.open_split(cfg, train).num_classes
    stop = min(n, n_pool + int(protocol.val_per_class) * num_classes)
  if not 0 < n_pool < stop:
    raise ValueError(f"{dataset}/{train}: {n} examples leave no pool or no validation "
                     f"(val_fraction={protocol.val_fraction})")
  return Splits(f"{train}[:{n_pool}]", f"{train}[{n_pool}:{stop}]", test)


def cell_config(config, cell: schema.Cell, *, pretrained: str, starts=None, teacher: str = "",
                point=None, splits: Splits | None = None):
  """The base experiment with the cell's dataset, shots, seed and splits, then in this order the
  overrides of ``dataset_overrides[dataset]``, the variant's freezing, ``shot_overrides[str(shots)]``,
  the variant's overrides and its kind's part at the grid point (``Kind.configure``).
  ``starts``: ``{name: weights}`` of the config's ``starts``."""
  v = config.variants[cell.variant]
  cfg = config.base.copy_and_resolve_references()
  cfg.data.dataset = cell.dataset
  cfg.data.shots = None if cell.shots == "all" else int(cell.shots)
  cfg.data.fewshot_seed = cell.seed
  if splits is not None:
    cfg.data.train_split, cfg.data.eval_split = splits.pool, splits.val
  cfg.train.seed = cell.seed
  named = {"pretrained": pretrained, "scratch": "", **dict(starts or {})}
  cfg.model.init = named[v.init]
  apply_overrides(cfg, config.get("dataset_overrides", {}).get(cell.dataset, ()),
                  f"dataset_overrides[{cell.dataset!r}]")
  if v.get("freezing"):
    cfg.freezing = v.freezing.copy_and_resolve_references()
  apply_overrides(cfg, config.shot_overrides.get(str(cell.shots), ()),
                  f"shot_overrides[{cell.shots!r}]")
  apply_overrides(cfg, v.overrides, f"variants.{cell.variant}.overrides")
  kinds.get(v.kind).configure(cfg, v, dict(point or {}), teacher=teacher,
                              where=f"variants.{cell.variant}")
  return cfg


def run_dir(workdir: str, cell: schema.Cell, point: dict) -> str:
  """A trial's run dir: ``runs/DATASET/VARIANT/shots-K/seed-S/POINT``."""
  return os.path.join(workdir, "runs", cell.dataset, cell.variant, f"shots-{cell.shots}",
                      f"seed-{cell.seed}", schema.slug(point))


def _check_variant(config, name: str, names: list[str], protocol) -> None:
  """The checks every kind shares, then the kind's own (``Kind.check``)."""
  v = config.variants[name]
  where = f"variants.{name}"
  inits = starts_lib.INITS + tuple(dict(config.get("starts") or {}))
  if v.get("init", "pretrained") not in inits:
    raise ValueError(f"{where}.init={v.get('init')!r}; known: {', '.join(inits)}")
  if v.kind not in kinds.KINDS:
    raise ValueError(f"{where}.kind={v.kind!r}; known: {', '.join(kinds.KINDS)}")
  kind = kinds.KINDS[v.kind]
  selection = v.get("selection", "val")
  if selection not in schema.SELECTIONS:
    raise ValueError(f"{where}.selection={selection!r}; known: {', '.join(schema.SELECTIONS)}")
  grid = schema.points(v)
  if selection == "fixed" and len(grid) > 1:
    raise ValueError(f"{where}: selection='fixed' runs one point; its search has {len(grid)}")
  if len(grid) > 1 and not protocol.val_fraction:
    raise ValueError(f"{where}: a search of {len(grid)} points needs validation data "
                     "(protocol.val_fraction > 0): selecting on the test split is not allowed")
  teacher = v.get("teacher")
  if teacher and teacher not in names[:names.index(name)]:
    raise ValueError(f"{where}.teacher={teacher!r} must name a variant listed before it")
  if kind.needs_teacher and not teacher:
    raise ValueError(f"{where}: kind {v.kind!r} needs teacher= (the variant it builds on)")
  for key, everything in (("shots", config.shots), ("seeds", config.seeds)):
    subset = v.get(key)
    if subset is not None and not set(subset) <= set(everything):
      raise ValueError(f"{where}.{key}={tuple(subset)}: not among the config's {tuple(everything)}")
  if teacher and not all(schema.runs_at(config.variants[teacher], s, seed)
                         for s in config.shots for seed in config.seeds
                         if schema.runs_at(v, s, seed)):
    raise ValueError(f"{where}: runs at shots/seeds where its teacher {teacher!r} does not")
  if teacher and not kind.takes_teacher:
    raise ValueError(f"{where}: {v.kind} takes no teacher")
  if teacher and kind.teacher_kinds and not isinstance(
      kinds.KINDS[config.variants[teacher].kind], kind.teacher_kinds):
    raise ValueError(f"{where}.teacher={teacher!r} must be a trained variant")
  if kind.arg_names is not None:
    keys = set(dict(v.args)) | {k for k, _ in v.get("search", ())}
    if keys - kind.arg_names:
      raise ValueError(f"{where}: {v.kind} takes {sorted(kind.arg_names)}; got "
                       f"{sorted(keys - kind.arg_names)}")
  kind.check(config, name, v, grid, where)


def validate(config) -> None:
  """Fails on the first bad variant before anything runs (kind, teacher, search, override key)."""
  names = list(config.order)
  if sorted(names) != sorted(config.variants):
    raise ValueError(f"order {sorted(names)} must list each of the variants "
                     f"{sorted(config.variants)} once")
  protocol = schema.protocol_of(config)
  if not 0.0 <= protocol.val_fraction < 1.0:
    raise ValueError(f"protocol.val_fraction={protocol.val_fraction!r} must be in [0, 1)")
  for name in names:
    _check_variant(config, name, names, protocol)
  comparisons.check(protocol.comparisons, names)
  if protocol.selection not in schema.PROTOCOL_SELECTIONS:
    raise ValueError(f"protocol.selection={protocol.selection!r}; known: "
                     f"{', '.join(schema.PROTOCOL_SELECTIONS)}")
  for shots in config.shots:
    if shots != "all" and (not isinstance(shots, int) or shots < 1):
      raise ValueError(f"shots entries must be positive ints or 'all', got {shots!r}")
  starts_lib.check(config)
  if config.get("zeroshot"):
    zeroshot_section.check(config.zeroshot)
    if not any(kinds.KINDS[config.variants[n].kind].uses_features for n in names):
      raise ValueError("zeroshot: needs a feature-classifier variant (its features are reused)")
  for n, s in schema.shifts_of(config):
    if n not in corruptions.CORRUPTIONS or s not in corruptions.SEVERITIES:
      raise ValueError(f"shifts: ({n!r}, {s!r}); names {corruptions.CORRUPTIONS}, severities "
                       f"{corruptions.SEVERITIES}")
  placeholder = Splits("TRAIN", "VAL", "TEST")
  named = {n: f"START:{n}" for n in dict(config.get("starts") or {})}
  for dataset in config.datasets:
    for shots in config.shots:
      for name in names:
        cell = schema.Cell(dataset, name, shots, 0)
        for p in schema.points(config.variants[name]):
          cell_config(config, cell, pretrained="PRETRAINED", starts=named, teacher="TEACHER",
                      point=p, splits=placeholder)


__all__ = ["Splits", "cell_config", "run_dir", "splits_for", "validate"]
