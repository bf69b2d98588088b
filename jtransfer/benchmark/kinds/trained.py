"""The kinds trained by the one trainer: 'train' (any freezing, distillation with ``teacher=``)
and 'surgical' (one stage of the family and the head train; the stage is a search key).

    v.full_finetune = schema.variant("train", freezing=optim.get_freezing_config("full_ft"),
                                     search={"optim.lr": (1e-4, 3e-4)})
    v.surgical = schema.variant("surgical", search={"stage": (1, 7)})

A trial is ``train.train_and_evaluate`` on the pool, evaluated on validation, in its own run dir
(``runs/DATASET/VARIANT/shots-K/seed-S/POINT``); the chosen trial's variables are evaluated on the
test split and every shift. They come from memory (the trainer hands its export over, and the
cell's trials are kept until its choice is tested), or from the run dir's ``export/`` after a
restart.
"""

from __future__ import annotations

from ml_collections import config_dict

from jtransfer import methods, models, optim
from jtransfer import workdir as wd
from jtransfer.benchmark import evaluation, schema
from jtransfer.benchmark.kinds.base import Context, Kind
from jtransfer.data import config as data_config
from jtransfer.data import corruptions
from jtransfer.train import trainer
from jtransfer.train.config import apply_overrides


def run_config(run_dir: str) -> config_dict.ConfigDict:
  """The config a trial's run dir records (``config.json``)."""
  cfg = wd.RunDir(run_dir).read_config()
  if cfg is None:
    raise FileNotFoundError(f"{wd.RunDir(run_dir).config_json}: the trial's config is missing")
  return cfg


# The exported variables of the newest trials, by run dir, handed over by the trainer in memory
# (``on_export``); the runner tests a cell's choice right after its trials, so a few suffice.
_EXPORTS: dict[str, tuple[dict, dict]] = {}
_KEEP = 8


def _keep_export(run_dir: str):
  def keep(variables: dict, result: dict) -> None:
    _EXPORTS.pop(run_dir, None)
    _EXPORTS[run_dir] = ({"num_classes": int(result["num_classes"])}, variables)
    while len(_EXPORTS) > _KEEP:
      _EXPORTS.pop(next(iter(_EXPORTS)))
  return keep


def exported(run_dir: str) -> tuple[dict, dict]:
  """``(meta, variables)`` of a finished trial: from memory when this process trained it, else
  from its ``export/``."""
  if run_dir in _EXPORTS:
    return _EXPORTS[run_dir]
  return evaluation.load_export(wd.RunDir(run_dir).export)


class Trained(Kind):
  """'train': the trainer on the cell's pool; a search over dotted config keys."""

  name = "train"
  arg_names = None
  takes_teacher = True
  exports = True

  def configure(self, cfg, v, point, *, teacher, where):
    if point:
      apply_overrides(cfg, tuple(point.items()), f"{where}.search")
    if v.get("teacher"):
      cfg.loss.distill.teacher = teacher

  def fit(self, ctx: Context, cell, point, splits) -> dict:
    teacher = ctx.teacher(cell)
    return self.train(ctx, cell, point, splits,
                      teacher=wd.RunDir(teacher["run_dir"]).export if teacher else "")

  def train(self, ctx: Context, cell, point, splits, *, teacher: str) -> dict:
    """One trial: the trainer on the cell's config at ``point`` (``teacher``: what the kind's
    ``configure`` receives), its validation scores and cost."""
    run_dir = ctx.run_dir_of(cell, point)
    cfg = ctx.cell_config(cell, point=point, splits=splits, teacher=teacher)
    result = trainer.train_and_evaluate(cfg, run_dir, task=methods.task_for(cfg),
                                        on_export=_keep_export(run_dir))
    steps = int(result["step"])
    return {"val": result["eval"], "run_dir": run_dir, "steps": steps,
            **ctx.meter.train(cfg, run_dir, steps)}

  def test(self, ctx: Context, cell, chosen, splits) -> dict:
    return test_export(ctx, cell, chosen, splits)


def test_export(ctx: Context, cell, chosen: dict, splits, *, cfg=None) -> dict:
  """The chosen trial's exported variables on the test split and every shift (its run's model
  config; ``cfg``: the cell's config, when the kind's own differs from what tests it)."""
  run_dir = chosen["run_dir"]
  meta, variables = exported(run_dir)
  cfg = cfg or ctx.cell_config(cell, point=chosen["point"], splits=splits)
  return evaluation.on_test_and_shifts(ctx.config, cfg, run_config(run_dir).model,
                                       meta["num_classes"], variables, splits.test)


def surgical_freezing(arch: str, stage: int, base_fz):
  """Only ``stages[stage]`` and the head train ('custom' rules from the family's spec); the head
  at the base freezing's ``head_lr_mult``, BatchNorms in its ``bn_mode``."""
  spec = models.get_spec(arch)
  fz = optim.get_freezing_config("custom")
  head_lr_mult = float(dict(base_fz.get("strategy_args") or {}).get("head_lr_mult", 1.0))
  fz.param_rules = [(spec.head, head_lr_mult), (spec.stages[stage], 1.0), (".*", "frozen")]
  fz.bn_mode = base_fz.bn_mode
  return fz


class Surgical(Trained):
  """'surgical' (Lee et al. 2023): one stage (an index into the family's stages) and the head."""

  name = "surgical"
  arg_names = frozenset({"stage"})

  def check(self, config, name, v, grid, where):
    stages = models.get_spec(config.base.model.arch).stages
    for p in grid:
      s = {**dict(v.args), **p}.get("stage")
      if not isinstance(s, int) or not -len(stages) <= s < len(stages):
        raise ValueError(f"{where}: stage={s!r} must index the {len(stages)} stages {stages}")

  def configure(self, cfg, v, point, *, teacher, where):
    stage = {**dict(v.args), **point}["stage"]
    cfg.freezing = surgical_freezing(cfg.model.arch, stage, cfg.freezing)
    if v.get("teacher"):
      cfg.loss.distill.teacher = teacher


class SurgicalShift(Surgical):
  """'surgical_shift' (Lee et al. 2023, as the paper runs it): one stage and the head fine-tune on
  labelled examples of the *shifted* distribution — the cell's draw with the corruption ``shift``
  (a name of ``config.shifts``, e.g. 'gaussian_noise-3') applied in training and on validation —
  so the stage chosen on validation is the stage for that shift; every stage a search candidate.
  Tested on the test split and every shift as any variant; the row's ``ood`` of its own shift is
  the number the paper compares across stages."""

  name = "surgical_shift"
  arg_names = frozenset({"stage", "shift"})

  def check(self, config, name, v, grid, where):
    super().check(config, name, v, grid, where)
    known = {schema.shift_name(n, s): (n, s) for n, s in schema.shifts_of(config)}
    for p in grid:
      shift = {**dict(v.args), **p}.get("shift")
      if shift not in known:
        raise ValueError(f"{where}: shift={shift!r} must name one of config.shifts {sorted(known)}")

  def configure(self, cfg, v, point, *, teacher, where):
    super().configure(cfg, v, point, teacher=teacher, where=where)
    name, severity = str({**dict(v.args), **point}["shift"]).rsplit("-", 1)
    for train in (True, False):  # the training draw and the validation it is chosen on
      key = "pp_train" if train else "pp_eval"
      cfg.data[key] = corruptions.shifted_pp(data_config.resolve_pp(cfg.data, train=train), name,
                                             int(severity), seed=0)

  def test(self, ctx: Context, cell, chosen, splits) -> dict:
    # The test split and the shifts with the clean evaluation pipeline: the run's own pp_eval
    # is corrupted, and the shifted test sets get their corruption from the harness, once.
    cfg = ctx.cell_config(cell, point=chosen["point"], splits=splits)
    cfg.data.pp_eval = [op for op in cfg.data.pp_eval
                        if (op.get("op") if hasattr(op, "get") else op) != "corrupt"]
    return test_export(ctx, cell, chosen, splits, cfg=cfg)


__all__ = ["Surgical", "SurgicalShift", "Trained", "exported", "run_config", "surgical_freezing",
           "test_export"]
