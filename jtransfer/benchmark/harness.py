"""The benchmark harness: variants × datasets × examples-per-class × seeds, one trainer for all.

    from jtransfer.benchmark import harness
    rows = harness.run(config, "workdirs/demo")     # config: jtransfer/configs/benchmark/*.py

Protocol (``config.protocol``, see ``default_protocol``). The dataset's train split is cut into a
*pool* (its first ``1 - val_fraction``) and a *validation* part (the rest, at most
``val_per_class × classes`` examples for k-shot cells): few-shot examples are drawn from the pool
only, so validation is disjoint from them. A variant declares a grid (``search``); each point is
one *trial*, trained on the pool and scored on validation (``trials.jsonl``). The point with the
highest validation top-1 (the first one on ties) is the cell's choice, and only that point is
then evaluated on the test split and on every shifted test set (``config.shifts``: corruptions of
the test split). ``selection='fixed'`` runs the one declared point (budget 1).

Kinds: 'train' (the one trainer, ``train.train_and_evaluate``), 'surgical' (the trainer with one
stage of ``models.get_spec(arch).stages`` and the head trainable; the stage is a search key),
'wise' (WiSE-FT: weight-space interpolation between this cell's ``teacher`` fine-tune's start and
end points, α a search key; no training), 'fedavg' (the cell's examples split across clients and
trained with FedAvg, ``benchmark/fedavg.py``; exported like a trainer run), and the feature
classifiers ``ridge``, ``knn``,
``linear_probe_cached`` (on features extracted once per split and cached; their arguments are
search keys). Every cell records its cost: trainable parameters, training GFLOPs (XLA's
cost_analysis of each compiled step × its steps; for cached variants the feature extraction of
the training examples), wall seconds and peak step memory.

Every finished trial appends one line to ``trials.jsonl`` and every finished cell one line (with
its full config) to ``results.jsonl``; a restarted benchmark skips both. At the end
``report.write_all`` writes the tables, comparisons and plots; a ``zeroshot`` section adds
``zeroshot.{json,md}`` (``zeroshot_section``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import json
import os
import sys
import time
from typing import Any, Callable, TextIO

import jax
from ml_collections import config_dict
import numpy as np

from jtransfer import data, models, optim, tasks, weights
from jtransfer import workdir as wd
from jtransfer.benchmark import (
  compiles,
  cost,
  evaluators,
  features,
  fedavg,
  report,
  wise,
  zeroshot_section,
)
from jtransfer.benchmark import starts as starts_lib
from jtransfer.data import corruptions
from jtransfer.train import evaluate as evaluate_lib
from jtransfer.train import inputs, parallel, trainer
from jtransfer.train import metrics as metrics_lib
from jtransfer.train.config import ConfigKeyError, apply_overrides

__all__ = ["Cell", "ConfigKeyError", "FEATURE_KINDS", "KINDS", "SELECTIONS", "Splits", "cell_config", "cells",
           "default_protocol", "point_id", "points", "run", "splits_for", "validate", "variant"]

FEATURE_KINDS = tuple(evaluators.EVALUATORS)
KINDS = ("train", "surgical", "wise", "fedavg") + FEATURE_KINDS
SELECTIONS = ("val", "fixed")
TRAINED = ("train", "surgical")  # through the trainer
EXPORTED = TRAINED + ("fedavg",)  # a run dir with config.json and export/


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
            args=None, search=None, selection: str = "val") -> config_dict.ConfigDict:
  """One variant of a benchmark config (the harness's schema; configs build variants with this).

  Args:
    kind: 'train', 'surgical', 'wise', 'fedavg', or a feature evaluator: ridge | knn |
      linear_probe_cached | ncm.
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
  # The variant every other is compared with in comparisons.md.
  p.reference = "full_finetune"
  # How results.md marks "not distinguishable from the best": 'ci' (the paired bootstrap interval
  # of the difference contains 0) or 'permutation' (sign-flip p >= 1 - level).
  p.best_test = "ci"
  p.level = 0.95
  return p


def _protocol(config) -> config_dict.ConfigDict:
  p = default_protocol()
  if "protocol" in config:
    p.update(config.protocol)
  return p


def _shifts(config) -> tuple[tuple[str, int], ...]:
  return tuple((str(n), int(s)) for n, s in config.get("shifts", ()))


def shift_name(name: str, severity: int) -> str:
  return f"{name}-{severity}"


# --- search spaces ---


def points(v) -> list[dict]:
  """The grid of a variant: a list of ``{key: value}`` points, in declared order ([{}]: fixed)."""
  search = tuple(v.get("search", ()))
  if not search:
    return [{}]
  keys = [k for k, _ in search]
  return [dict(zip(keys, values)) for values in itertools.product(*(vals for _, vals in search))]


def point_id(point: dict) -> str:
  """'optim.lr=0.001,stage=3' ('default' for the empty point): the trial's name and run dir."""
  if not point:
    return "default"
  return ",".join(f"{k}={v}" for k, v in point.items())


def _slug(point: dict) -> str:
  return point_id(point).replace("/", "_").replace(" ", "")


def _evaluator_args(kind: str) -> set[str]:
  sig = inspect.signature(evaluators.EVALUATORS[kind])
  return {n for n, p in sig.parameters.items() if p.kind == p.KEYWORD_ONLY} - {"num_classes", "seed"}


def _check_variant(config, name: str, names: list[str], protocol) -> None:
  v = config.variants[name]
  where = f"variants.{name}"
  inits = starts_lib.INITS + tuple(dict(config.get("starts") or {}))
  if v.get("init", "pretrained") not in inits:
    raise ValueError(f"{where}.init={v.get('init')!r}; known: {', '.join(inits)}")
  if v.kind not in KINDS:
    raise ValueError(f"{where}.kind={v.kind!r}; known: {', '.join(KINDS)}")
  selection = v.get("selection", "val")
  if selection not in SELECTIONS:
    raise ValueError(f"{where}.selection={selection!r}; known: {', '.join(SELECTIONS)}")
  grid = points(v)
  if selection == "fixed" and len(grid) > 1:
    raise ValueError(f"{where}: selection='fixed' runs one point; its search has {len(grid)}")
  if len(grid) > 1 and not protocol.val_fraction:
    raise ValueError(f"{where}: a search of {len(grid)} points needs validation data "
                     "(protocol.val_fraction > 0): selecting on the test split is not allowed")
  if v.get("teacher") and v.teacher not in names[:names.index(name)]:
    raise ValueError(f"{where}.teacher={v.teacher!r} must name a variant listed before it")
  if v.kind == "wise":
    if not v.get("teacher"):
      raise ValueError(f"{where}: kind 'wise' needs teacher= (the fine-tune it interpolates)")
    if config.variants[v.teacher].kind not in TRAINED:
      raise ValueError(f"{where}.teacher={v.teacher!r} must be a trained variant")
  allowed = {"wise": {"alpha"}, "surgical": {"stage"}, "fedavg": set(fedavg.ARGS)}.get(v.kind)
  if v.kind in FEATURE_KINDS:
    allowed = _evaluator_args(v.kind)
  if allowed is not None:
    keys = set(dict(v.args)) | {k for k, _ in v.get("search", ())}
    if keys - allowed:
      raise ValueError(f"{where}: {v.kind} takes {sorted(allowed)}; got {sorted(keys - allowed)}")
  if v.kind == "wise":
    for p in grid:
      alpha = {**dict(v.args), **p}.get("alpha", 1.0)
      if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"{where}: alpha={alpha!r} outside [0, 1]")
  if v.kind == "fedavg":
    for p in grid:
      fedavg.check_args({**dict(v.args), **p}, where)
    if v.get("teacher"):
      raise ValueError(f"{where}: fedavg takes no teacher")
  if v.kind == "surgical":
    stages = models.get_spec(config.base.model.arch).stages
    for p in grid:
      s = {**dict(v.args), **p}.get("stage")
      if not isinstance(s, int) or not -len(stages) <= s < len(stages):
        raise ValueError(f"{where}: stage={s!r} must index the {len(stages)} stages {stages}")


def validate(config) -> None:
  """Fails on the first bad variant before anything runs (kind, teacher, search, override key)."""
  names = list(config.order)
  if sorted(names) != sorted(config.variants):
    raise ValueError(f"order {sorted(names)} must list each of the variants {sorted(config.variants)} once")
  protocol = _protocol(config)
  if not 0.0 <= protocol.val_fraction < 1.0:
    raise ValueError(f"protocol.val_fraction={protocol.val_fraction!r} must be in [0, 1)")
  for name in names:
    _check_variant(config, name, names, protocol)
  for shots in config.shots:
    if shots != "all" and (not isinstance(shots, int) or shots < 1):
      raise ValueError(f"shots entries must be positive ints or 'all', got {shots!r}")
  starts_lib.check(config)
  if config.get("zeroshot"):
    zeroshot_section.check(config.zeroshot)
    if not any(config.variants[n].kind in FEATURE_KINDS for n in names):
      raise ValueError("zeroshot: needs a feature-classifier variant (its features are reused)")
  for n, s in _shifts(config):
    if n not in corruptions.CORRUPTIONS or s not in corruptions.SEVERITIES:
      raise ValueError(f"shifts: ({n!r}, {s!r}); names {corruptions.CORRUPTIONS}, severities "
                       f"{corruptions.SEVERITIES}")
  placeholder = Splits("TRAIN", "VAL", "TEST")
  named = {n: f"START:{n}" for n in dict(config.get("starts") or {})}
  for dataset in config.datasets:
    for shots in config.shots:
      for name in names:
        cell = Cell(dataset, name, shots, 0)
        for p in points(config.variants[name]):
          cell_config(config, cell, pretrained="PRETRAINED", starts=named, teacher="TEACHER",
                      point=p, splits=placeholder)


def cells(config) -> list[Cell]:
  """Dataset-major, then shots, seed, variant in ``config.order`` (teachers before students)."""
  return [Cell(d, v, s, seed) for d in config.datasets for s in config.shots
          for seed in config.seeds for v in config.order]


# --- splits ---


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
  disjoint by construction, and few-shot draws come from the pool only.
  """
  protocol = _protocol(config)
  train, test = config.base.data.train_split, config.base.data.eval_split
  if not protocol.val_fraction:
    return Splits(train, test, test)
  cfg = config.base.data.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.dataset, cfg.shots, cfg.vtab1k = dataset, None, False
  from jtransfer.data import sources  # the split sizes, without reading the examples
  n = sources.open_split(cfg, train).num_examples
  n_pool = int(round(n * (1.0 - protocol.val_fraction)))
  stop = n
  if shots != "all" and protocol.val_per_class:
    num_classes = sources.open_split(cfg, train).num_classes
    stop = min(n, n_pool + int(protocol.val_per_class) * num_classes)
  if not 0 < n_pool < stop:
    raise ValueError(f"{dataset}/{train}: {n} examples leave no pool or no validation "
                     f"(val_fraction={protocol.val_fraction})")
  return Splits(f"{train}[:{n_pool}]", f"{train}[{n_pool}:{stop}]", test)


# --- configs ---


def _surgical_freezing(arch: str, stage: int, base_fz) -> config_dict.ConfigDict:
  """Only ``stages[stage]`` and the head train ('custom' rules from the family's spec); the head
  at the base freezing's ``head_lr_mult``, BatchNorms in its ``bn_mode``."""
  spec = models.get_spec(arch)
  fz = optim.get_freezing_config("custom")
  head_lr_mult = float(dict(base_fz.get("strategy_args") or {}).get("head_lr_mult", 1.0))
  fz.param_rules = [(spec.head, head_lr_mult), (spec.stages[stage], 1.0), (".*", "frozen")]
  fz.bn_mode = base_fz.bn_mode
  return fz


def cell_config(config, cell: Cell, *, pretrained: str, starts=None, teacher: str = "",
                point=None, splits: Splits | None = None):
  """The base experiment with the cell's dataset, shots, seed and splits, then in this order the
  overrides of ``dataset_overrides[dataset]``, ``shot_overrides[str(shots)]``, the variant's and
  the grid point's. ``starts``: ``{name: weights}`` of the config's ``starts``."""
  v = config.variants[cell.variant]
  point = dict(point or {})
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
  apply_overrides(cfg, config.shot_overrides.get(str(cell.shots), ()), f"shot_overrides[{cell.shots!r}]")
  apply_overrides(cfg, v.overrides, f"variants.{cell.variant}.overrides")
  if v.kind == "surgical":
    stage = {**dict(v.args), **point}["stage"]
    cfg.freezing = _surgical_freezing(cfg.model.arch, stage, cfg.freezing)
  elif v.kind in TRAINED and point:
    apply_overrides(cfg, tuple(point.items()), f"variants.{cell.variant}.search")
  if v.get("teacher") and v.kind in TRAINED:
    cfg.loss.distill.teacher = teacher
  return cfg


def _run_dir(workdir: str, cell: Cell, point: dict) -> str:
  return os.path.join(workdir, "runs", cell.dataset, cell.variant, f"shots-{cell.shots}",
                      f"seed-{cell.seed}", _slug(point))


def ensure_pretrained(config, workdir: str, stream: TextIO) -> str:
  """Runs the pretraining experiment once; returns its exported weights dir (reused when present)."""
  if not config.pretrain.enabled:
    return config.base.model.init
  run_dir = os.path.join(workdir, "pretrain")
  export = os.path.join(run_dir, "export")
  if os.path.exists(os.path.join(run_dir, "result.json")) and os.path.isdir(export):
    print(f"[benchmark] reusing pretrained weights {export}", file=stream, flush=True)
    return export
  print(f"[benchmark] pretraining {config.pretrain.config.model.arch} on "
        f"{config.pretrain.config.data.dataset} -> {export}", file=stream, flush=True)
  result = trainer.train_and_evaluate(config.pretrain.config, run_dir)
  print(f"[benchmark] pretrained: {config.pretrain.config.data.dataset} test top-1 "
        f"{result['eval']['top1'] * 100:.1f}% in {result['wall_s']:.0f} s", file=stream, flush=True)
  return export


# --- evaluation of fixed variables (the chosen point on test and shifts; WiSE on validation) ---


def _pp_for(data_cfg, shift: tuple[str, int] | None, shift_seed: int) -> list | None:
  if shift is None:
    return data_cfg.pp_eval
  return corruptions.shifted_pp(data.resolve_pp(data_cfg, train=False), shift[0], shift[1],
                                seed=shift_seed)


def _eval_cfg(data_cfg, split: str, pp_eval):
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.shots, cfg.vtab1k, cfg.eval_split = None, False, split
    if pp_eval is not None:  # None keeps the configured pp_eval (not the dataset's default)
      cfg.pp_eval = pp_eval
  return cfg


def evaluate_variables(model_cfg, num_classes: int, variables: dict, data_cfg, split: str, *,
                       pp_eval=None) -> dict:
  """Top-1 (and the other metrics) of ``variables`` of ``model_cfg``'s model on ``split``."""
  # The trainer's own shared eval program (so WiSE at α = 1 scores exactly what its fine-tune
  # scored: one compiled program, not a numerically different twin).
  par = parallel.create("jit")
  step = trainer.eval_step(trainer.build_model(model_cfg, int(num_classes)), par)
  cfg = _eval_cfg(data_cfg, split, pp_eval)
  source = _eval_batches(json.dumps(json.loads(cfg.to_json_best_effort()), sort_keys=True))
  m = evaluate_lib.evaluate(step, variables, source, par)
  return {k: v for k, v in m.items() if k != "confusion_matrix"}


class _Replay:
  """An eval stream read once and replayed from memory: the eval pipeline (and the seeded
  corruptions of the shifted test sets) is deterministic, and every chosen point of every cell
  reads the same test batches; building the tf.data pipeline again cost ~1.5 s per evaluation."""

  def __init__(self, source):
    self.info = source.info
    self.batches = [{k: np.asarray(v) for k, v in b.items()}
                    for b in source.eval_iterator(process_index=0, process_count=1)]

  def eval_iterator(self, *, process_index: int = 0, process_count: int = 1):
    if process_count != 1:
      raise ValueError("the benchmark harness evaluates in one process")
    del process_index
    yield from self.batches


@functools.lru_cache(maxsize=32)
def _eval_batches(data_cfg_json: str) -> _Replay:
  return _Replay(inputs.from_config(config_dict.ConfigDict(json.loads(data_cfg_json))))


def _run_config(run_dir: str):
  with open(os.path.join(run_dir, "config.json")) as f:
    return config_dict.ConfigDict(json.load(f))


def _load_export(export: str) -> tuple[dict, dict]:
  meta = models.read_meta(export)
  return meta, weights.load(export, arch=meta["arch"])


# --- cost ---


def _xla_convs(model_cfg):
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
    oneDNN-convolution model is costed on its XLA-convolution twin, ``_xla_convs``, which does).
    """
    key = cost.program_key(cfg)
    if key not in self._train:
      model_cfg = _xla_convs(cfg.model)
      if model_cfg is not cfg.model:
        cfg = cfg.copy_and_resolve_references()
        with cfg.unlocked():
          cfg.model = model_cfg
      task = tasks.from_config(cfg)
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
        c = cost.step_cost(ph.step.lower(state, batch, run.extra))
        labels = optim.label_params(run.variables["params"], phase.param_rules)
        trainable = cost.count_params(run.variables["params"], mask=optim.trainable_mask(labels))
        per_phase.append({"start": phase.start_step, "flops": c["flops"],
                          "peak_bytes": c["peak_bytes"], "trainable": trainable})
      self._train[key] = {"phases": per_phase}
    phases = self._train[key]["phases"]
    total, known = 0.0, True
    for i, ph in enumerate(phases):
      stop = phases[i + 1]["start"] if i + 1 < len(phases) else steps
      n = max(0, min(stop, steps) - ph["start"])
      g = cost.train_gflops(ph["flops"], n)
      known &= g is not None
      total += g or 0.0
    peaks = [p["peak_bytes"] for p in phases if p["peak_bytes"] is not None]
    return {"trainable_params": max(p["trainable"] for p in phases),
            "train_gflops": total if known else None,
            "peak_bytes": max(peaks) if peaks else None}

  def forward(self, model_cfg, data_cfg, batch: int) -> dict:
    """``{flops_per_example, peak_bytes}`` of the feature extractor's compiled forward pass."""
    shape = inputs.from_config(data_cfg).info.image_shape
    key = json.dumps([model_cfg.arch, models.options_of(model_cfg), shape, batch], default=str)
    if key not in self._forward:
      model = models.from_config(_xla_convs(model_cfg), num_classes=None)
      variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                    np.zeros((1, *shape), np.float32)))
      fn = jax.jit(lambda v, x: model.apply(v, x)[1]["pre_logits"])
      c = cost.step_cost(fn.lower(variables, jax.ShapeDtypeStruct((batch, *shape), np.float32)))
      self._forward[key] = {"flops_per_example": None if c["flops"] is None else c["flops"] / batch,
                            "peak_bytes": c["peak_bytes"]}
    return self._forward[key]


# --- one trial per (cell, point) ---


@dataclasses.dataclass
class Context:
  config: Any
  workdir: str
  pretrained: str
  starts: dict  # start name -> its exported weights (benchmark/starts.py)
  cache: features.FeatureCache
  meter: CostMeter
  results: dict  # cell id -> result row (teachers)
  stream: TextIO
  clock: Callable[[], float]

  def cell_config(self, cell: Cell, **kwargs):
    """``cell_config`` with this benchmark's pretrained weights and starts."""
    return cell_config(self.config, cell, pretrained=self.pretrained, starts=self.starts, **kwargs)


def _teacher_row(ctx: Context, cell: Cell) -> dict | None:
  v = ctx.config.variants[cell.variant]
  if not v.get("teacher"):
    return None
  tid = dataclasses.replace(cell, variant=v.teacher).id
  if tid not in ctx.results:
    raise RuntimeError(f"{cell.id}: its teacher cell {tid} has no result")
  return ctx.results[tid]


def _feature_arrays(ctx: Context, cfg, cell: Cell, split: str, *, shift=None):
  dcfg = cfg.data.copy_and_resolve_references()
  with dcfg.unlocked():
    dcfg.pp_eval = _pp_for(cfg.data, shift, ctx.config.get("shift_seed", 0))
  return ctx.cache.get(cfg.model, dcfg, split)


def _num_classes(data_cfg) -> int:
  """The dataset's class count, from its metadata: not the largest label a draw happens to hold."""
  from jtransfer.data import sources  # the split's metadata, without reading the examples
  return int(sources.open_split(data_cfg, train=True).num_classes)


def _feature_fit_predict(ctx, cell, cfg, args, x, y, tx):
  v = ctx.config.variants[cell.variant]
  kwargs = dict(args)
  if v.kind == "linear_probe_cached":
    kwargs["seed"] = cell.seed
  return evaluators.EVALUATORS[v.kind](x, y, tx, num_classes=_num_classes(cfg.data), **kwargs)


def _few(cell: Cell, x, y):
  if cell.shots == "all":
    return x, y
  idx = data.sample_per_class(y, int(cell.shots), cell.seed, where=f"{cell.dataset} pool")
  return x[idx], y[idx]


def _trial(ctx: Context, cell: Cell, point: dict, splits: Splits) -> dict:
  """Trains/fits one grid point; returns its trial record (validation top-1, cost, compiles)."""
  with compiles.Meter() as meter:
    rec = _fit(ctx, cell, point, splits)
  rec["compile"] = meter.summary()
  return rec


def _fit(ctx: Context, cell: Cell, point: dict, splits: Splits) -> dict:
  v = ctx.config.variants[cell.variant]
  teacher = _teacher_row(ctx, cell)
  args = {**dict(v.args), **point}
  t0 = ctx.clock()
  rec = {"cell": cell.id, "point": point, "point_id": point_id(point)}
  if v.kind in TRAINED:
    run_dir = _run_dir(ctx.workdir, cell, point)
    cfg = ctx.cell_config(cell, point=point, splits=splits,
                      teacher=os.path.join(teacher["run_dir"], "export") if teacher else "")
    result = trainer.train_and_evaluate(cfg, run_dir)
    rec.update(val=result["eval"], run_dir=run_dir, steps=int(result["step"]),
               **ctx.meter.train(cfg, run_dir, int(result["step"])))
  elif v.kind == "fedavg":
    run_dir = _run_dir(ctx.workdir, cell, point)
    cfg = ctx.cell_config(cell, splits=splits)
    x, y = _few(cell, *features.image_arrays(cfg.data, splits.pool))
    num_classes = _num_classes(cfg.data)
    out = fedavg.train(cfg, run_dir, x, y, num_classes=num_classes, **args)
    rec["val"] = evaluate_variables(cfg.model, num_classes, out["variables"], cfg.data, splits.val)
    rec.update(run_dir=run_dir, steps=int(cfg.train.num_steps),
               **{k: out[k] for k in ("rounds", "bytes_per_round", "trainable_params",
                                      "train_gflops", "peak_bytes")})
  elif v.kind == "wise":
    start, meta, tuned = _wise_ends(ctx, teacher)
    tcfg = _run_config(teacher["run_dir"])
    mixed = wise.interpolate(start, tuned, float(args.get("alpha", 1.0)))
    cfg = ctx.cell_config(cell, splits=splits)
    rec["val"] = evaluate_variables(tcfg.model, meta["num_classes"], mixed, cfg.data, splits.val)
    rec.update({k: teacher[k] for k in ("trainable_params", "train_gflops", "peak_bytes")})
  else:
    cfg = ctx.cell_config(cell, splits=splits)
    x, y = _few(cell, *_feature_arrays(ctx, cfg, cell, splits.pool))
    vx, vy = _feature_arrays(ctx, cfg, cell, splits.val)
    out = _feature_fit_predict(ctx, cell, cfg, args, x, y, vx)
    m = metrics_lib.classification_metrics(out["logits"], vy)
    rec["val"] = {k: val for k, val in m.items() if k != "confusion_matrix"}
    fwd = ctx.meter.forward(cfg.model, cfg.data, cfg.data.eval_batch_size)
    d, c = x.shape[1], _num_classes(cfg.data)
    rec["trainable_params"] = {"knn": 0, "ridge": (d + 1) * c}.get(v.kind, d * c + c)
    f = fwd["flops_per_example"]
    rec["train_gflops"] = None if f is None else f * len(x) / 1e9
    rec["peak_bytes"] = fwd["peak_bytes"]
  rec["val_top1"] = float(rec["val"]["top1"])
  rec["wall_s"] = ctx.clock() - t0
  return rec


@functools.lru_cache(maxsize=8)
def _start_variables(cfg_json: str, num_classes: int) -> dict:
  """The exact start point of a fine-tune (pretrained backbone + its seed's fresh head)."""
  cfg = config_dict.ConfigDict(json.loads(cfg_json))
  model = trainer.build_model(cfg.model, num_classes)
  shape = inputs.from_config(cfg.data).info.image_shape
  variables, _ = trainer.init_variables(model, cfg.model, shape, cfg.train.seed)
  return variables


def _wise_ends(ctx: Context, teacher: dict):
  """WiSE-FT's ends: the teacher run's initial variables and its exported (fine-tuned) ones."""
  meta, tuned = _load_export(os.path.join(teacher["run_dir"], "export"))
  with open(os.path.join(teacher["run_dir"], "config.json")) as f:
    cfg_json = json.dumps(json.load(f), sort_keys=True)
  start = _start_variables(cfg_json, int(meta["num_classes"]))
  return start, meta, tuned


# --- the cell: trials, choice, test ---


def _test(ctx: Context, cell: Cell, chosen: dict, splits: Splits) -> dict:
  """The chosen point on the test split and on every shifted test set (each read once)."""
  v = ctx.config.variants[cell.variant]
  shifts = [None] + list(_shifts(ctx.config))
  seed = ctx.config.get("shift_seed", 0)
  out = {}
  cfg = ctx.cell_config(cell, point=chosen["point"],
                    splits=splits)
  if v.kind in FEATURE_KINDS:
    x, y = _few(cell, *_feature_arrays(ctx, cfg, cell, splits.pool))
    args = {**dict(v.args), **chosen["point"]}
    for shift in shifts:
      tx, ty = _feature_arrays(ctx, cfg, cell, splits.test, shift=shift)
      pred = _feature_fit_predict(ctx, cell, cfg, args, x, y, tx)
      m = metrics_lib.classification_metrics(pred["logits"], ty)
      out[shift] = {k: val for k, val in m.items() if k != "confusion_matrix"}
    return out
  if v.kind == "wise":
    run_dir = _teacher_row(ctx, cell)["run_dir"]
    start, meta, tuned = _wise_ends(ctx, _teacher_row(ctx, cell))
    variables = wise.interpolate(start, tuned, float({**dict(v.args), **chosen["point"]}
                                                     .get("alpha", 1.0)))
  else:
    run_dir = chosen["run_dir"]
    meta, variables = _load_export(os.path.join(run_dir, "export"))
  model_cfg = _run_config(run_dir).model
  for shift in shifts:
    out[shift] = evaluate_variables(model_cfg, meta["num_classes"], variables, cfg.data,
                                    splits.test, pp_eval=_pp_for(cfg.data, shift, seed))
  return out


def _append(path: str, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record, default=float) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _compiled(c: dict) -> str:
  """'compile 12.3 s: 9 programs, 7 from the cache' for a progress line."""
  return (f"compile {c['compile_s']:.1f} s: {c['programs']} programs, {c['cache_hits']} from the "
          "persistent cache")


def _run_cell(ctx: Context, cell: Cell, trials_done: dict) -> dict:
  v = ctx.config.variants[cell.variant]
  splits = splits_for(ctx.config, cell.dataset, cell.shots)
  trials = []
  for point in points(v):
    tid = f"{cell.id}/{point_id(point)}"
    rec = trials_done.get(tid)
    if rec is None:
      rec = _trial(ctx, cell, point, splits)
      rec["trial"] = tid
      _append(os.path.join(ctx.workdir, "trials.jsonl"), rec)
      print(f"[benchmark]   trial {tid}: val top-1 {rec['val_top1'] * 100:.1f}% "
            f"in {rec['wall_s']:.1f} s ({_compiled(rec['compile'])})", file=ctx.stream,
            flush=True)
    trials.append(rec)
  # The validation argmax; the first point in grid order on ties.
  chosen = max(trials, key=lambda r: (r["val_top1"], -trials.index(r)))
  t0 = ctx.clock()
  with compiles.Meter() as meter:
    scores = _test(ctx, cell, chosen, splits)
  test_wall = ctx.clock() - t0
  compiled = meter.summary()
  for t in trials:
    compiled = compiles.add(compiled, t.get("compile", {}))
  teacher = _teacher_row(ctx, cell)
  ood = {shift_name(*s): float(m["top1"]) for s, m in scores.items() if s is not None}
  wall = sum(t["wall_s"] for t in trials) + test_wall
  search_gflops = [t["train_gflops"] for t in trials]
  row = {"cell": cell.id, "dataset": cell.dataset, "variant": cell.variant, "shots": cell.shots,
         "seed": cell.seed, "kind": v.kind, "init": v.get("init", "pretrained"), "selection": v.get("selection", "val"),
         "budget": len(trials), "chosen": chosen["point"], "chosen_id": chosen["point_id"],
         "val_top1": chosen["val_top1"], "test_top1": float(scores[None]["top1"]),
         "accuracy": float(scores[None]["top1"]), "ood": ood,
         "ood_mean": float(np.mean(list(ood.values()))) if ood else None,
         "trainable_params": chosen["trainable_params"], "train_gflops": chosen["train_gflops"],
         "search_gflops": (None if any(g is None for g in search_gflops)
                           else float(sum(search_gflops))),
         "peak_bytes": chosen["peak_bytes"], "wall_s": wall,
         "compile_s": compiled["compile_s"], "compile": compiled,
         "splits": dataclasses.asdict(splits), "metrics": scores[None],
         "run_dir": chosen.get("run_dir")}
  if v.kind == "wise":  # zero extra training: its cost is the teacher's
    row["search_gflops"] = teacher["search_gflops"]
    row["wall_s"] = wall + teacher["wall_s"]
  if v.kind == "fedavg":
    row["bytes_per_round"] = chosen["bytes_per_round"]
  if v.kind in EXPORTED:
    with open(os.path.join(chosen["run_dir"], "config.json")) as f:
      row["config"] = json.load(f)
  else:
    row["config"] = json.loads(ctx.cell_config(cell, point=chosen["point"], splits=splits)
                               .to_json_best_effort())
  return row


def _zero_shot(ctx: Context) -> dict:
  """The zero-shot section (``zeroshot_section``) on every dataset's pool and test features."""
  path = os.path.join(ctx.workdir, "zeroshot.json")
  if os.path.exists(path):
    with open(path) as f:
      out = json.load(f)
  else:
    out = {}
    for dataset in ctx.config.datasets:
      splits = splits_for(ctx.config, dataset, "all")
      name = next(n for n in ctx.config.order if ctx.config.variants[n].kind in FEATURE_KINDS)
      cfg = ctx.cell_config(Cell(dataset, name, "all", 0), splits=splits)
      pool = _feature_arrays(ctx, cfg, None, splits.pool)
      test = _feature_arrays(ctx, cfg, None, splits.test)
      num_classes = _num_classes(cfg.data)
      out[dataset] = zeroshot_section.run(ctx.config.zeroshot, num_classes, pool=pool, test=test)
    wd.atomic_write_json(path, out)
  table = zeroshot_section.markdown(out)
  wd.atomic_write_text(os.path.join(ctx.workdir, "zeroshot.md"), table)
  print(table, file=ctx.stream, flush=True)
  return out


def run(config, workdir: str, *, stream: TextIO = sys.stderr,
        clock: Callable[[], float] = time.monotonic) -> list[dict]:
  """Runs every unfinished cell (and trial), then writes the report. Returns all result rows.

  The workdir is locked for the run (a second benchmark on it stops at once, naming the holder),
  and it belongs to one config: a run whose config differs from the ``benchmark_config.json``
  already there is refused before anything is read or written, so finished cells of another
  config can never be reported as this one's.
  """
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  with wd.WorkdirLock(workdir):
    _claim(config, workdir)
    return _run_locked(config, workdir, stream=stream, clock=clock)


def _claim(config, workdir: str) -> None:
  """Writes ``benchmark_config.json``, or checks that the one there is ``config``'s."""
  path = os.path.join(workdir, "benchmark_config.json")
  mine = json.loads(config.to_json_best_effort(sort_keys=True))
  if os.path.exists(path):
    with open(path) as f:
      theirs = json.load(f)
    if theirs != mine:
      keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
      raise ValueError(f"{workdir} holds a benchmark of another config (sections that differ: "
                       f"{', '.join(keys)}; see {path}). Use a new --workdir, or delete this one "
                       "to start over.")
    return
  wd.atomic_write_text(path, json.dumps(mine, indent=1, sort_keys=True))


def _run_locked(config, workdir: str, *, stream: TextIO, clock: Callable[[], float]) -> list[dict]:
  results_path = os.path.join(workdir, "results.jsonl")
  rows = report.load_results(results_path)
  done = {r["cell"]: r for r in rows}
  trials_done = {t["trial"]: t for t in report.load_results(os.path.join(workdir, "trials.jsonl"))}
  start = clock()
  pretrained = ensure_pretrained(config, workdir, stream)
  named = starts_lib.ensure(config, workdir, pretrained=pretrained, stream=stream, clock=clock)
  ctx = Context(config, workdir, pretrained, named, features.FeatureCache(os.path.join(workdir, "features")),
                CostMeter(), dict(done), stream, clock)
  todo = [c for c in cells(config) if c.id not in done]
  total = len(todo) + len(done)
  walls: dict[str, list[float]] = {}  # per variant, for the ETA
  for i, cell in enumerate(todo):
    t0 = clock()
    row = _run_cell(ctx, cell, trials_done)
    _append(results_path, row)
    rows.append(row)
    ctx.results[cell.id] = row
    wall = clock() - t0
    walls.setdefault(cell.variant, []).append(wall)
    overall = np.mean([w for ws in walls.values() for w in ws])
    eta = sum(np.mean(walls.get(c.variant, [overall])) for c in todo[i + 1:])
    ood = f", OOD {row['ood_mean'] * 100:.1f}%" if row["ood_mean"] is not None else ""
    print(f"[benchmark {len(done) + i + 1}/{total}] {cell.id}: chose {row['chosen_id']} "
          f"(val {row['val_top1'] * 100:.1f}%), test top-1 {row['test_top1'] * 100:.1f}%{ood} "
          f"in {wall:.1f} s ({_compiled(row['compile'])}) | elapsed {clock() - start:.0f} s, "
          f"ETA {eta:.0f} s",
          file=stream, flush=True)
  if config.get("zeroshot"):
    _zero_shot(ctx)
  protocol = _protocol(config)
  report.write_all(rows, workdir, variant_order=list(config.order), reference=protocol.reference,
                   best_test=protocol.best_test, level=protocol.level)
  print(report.markdown(report.aggregate(rows), list(config.order), best_test=protocol.best_test,
                        level=protocol.level, rows=rows), file=stream, flush=True)
  return rows
