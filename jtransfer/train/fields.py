"""What each config field means for a run, declared once; every check derives from this table.

    from jtransfer.train import fields
    fields.role("optim.lr")                 # 'input'
    fields.in_identity("model.conv_impl")   # False: a run may resume under another conv_impl
    fields.unclassified(config)             # [] for the base config (tests/test_architecture.py)

Each field of the base config (``train/config.py``) has one of four roles:

- ``result``: changes what a run computes and the programs that compute it (``model.arch``,
  ``optim.name``, ``data.image_size``).
- ``input``: changes the result, but enters no compiled program, or only as an argument: which
  examples (dataset, splits, shots, draw, host preprocessing), where weights come from, the seed,
  the peak learning rate (a step input), when to evaluate and what to export.
- ``execution``: changes how the result is computed, not what (up to floating-point order):
  ``train.parallel``, ``data.eval_batch_size`` and the model families' execution options
  (``ModelSpec.execution_options``: ``conv_impl``, ``depthwise_impl``).
- ``cosmetic``: changes neither: logging and checkpoint cadence, where data is kept, how
  processes find each other.

What derives from it: a workdir's identity (``workdir.fingerprint``: result + input fields; a
resume may change the others), the key under which runs of one process share compiled programs
(``train.programs.config_key``: result + execution fields), and the cost meter's key
(``benchmark.cost.program_key``). A field missing from the table counts as ``result`` (it joins
every key: a false alarm, never a silent mix), and ``tests/test_architecture.py`` fails until it
is classified here. A model family's options are classified by the family itself
(``ModelSpec.options`` are results unless listed in ``execution_options``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

RESULT, INPUT, EXECUTION, COSMETIC = "result", "input", "execution", "cosmetic"
ROLE_NAMES = (RESULT, INPUT, EXECUTION, COSMETIC)

# Dotted keys of the base config; an entry covers its subtree unless a longer one says otherwise.
ROLES: Mapping[str, str] = {
    # model (the families' own options: _family_role)
    "model.arch": RESULT,
    "model.num_classes": RESULT,
    "model.dtype": RESULT,
    "model.dropout_rate": RESULT,
    "model.init": INPUT,       # which weights, not which program
    "model.init_skip": INPUT,
    # data
    "data.dataset": INPUT,     # shapes retrace jit by themselves
    "data.data_dir": COSMETIC,  # where TFDS keeps the data, not which data
    "data.train_split": INPUT,
    "data.eval_split": INPUT,
    "data.image_size": RESULT,
    "data.pp_train": INPUT,    # host preprocessing
    "data.pp_eval": INPUT,
    "data.normalize": INPUT,
    "data.shots": INPUT,
    "data.fewshot_seed": INPUT,
    "data.vtab1k": INPUT,
    "data.batch_size": RESULT,
    "data.repeat_small": INPUT,
    # Evaluation is in inference mode over every example once, padding masked: the batch size
    # changes the reduction order only (and must change with the number of devices).
    "data.eval_batch_size": EXECUTION,
    "data.shuffle_buffer": INPUT,
    "data.skip_corrupt": INPUT,
    "data.cache": COSMETIC,    # the same examples, sooner
    "data.mixup_alpha": RESULT,
    "data.prefetch": COSMETIC,
    # optim: every field shapes the update, except the peak rate, a step input
    "optim": RESULT,
    "optim.lr": INPUT,
    # freezing, loss, adapt
    "freezing": RESULT,
    "loss": RESULT,
    "loss.distill.teacher": INPUT,  # the teacher's weights; its architecture is a result
    "adapt": RESULT,
    # train
    "train.num_steps": RESULT,  # workdir.check_identity lets it grow on purpose (allow_extend)
    "train.eval_every": INPUT,  # which checkpoint is best, when early stopping stops
    "train.ckpt_every": COSMETIC,  # where a resume can start: data and RNG depend on (seed, step)
    "train.keep": COSMETIC,    # the best checkpoint is kept regardless
    "train.log_every": COSMETIC,
    "train.seed": INPUT,
    # 'jit' and 'pmap' compute the same update (tests/test_train_parallel.py) up to the order of
    # floating-point reductions, as a resume on another number of devices does.
    "train.parallel": EXECUTION,
    "train.best_metric": INPUT,
    "train.best_mode": INPUT,
    "train.patience": INPUT,
    "train.resume_from_step": COSMETIC,  # which kept checkpoint to restart from
    "train.allow_extend": COSMETIC,  # the permission itself
    "train.export": INPUT,
    "train.eval_ema": RESULT,
    "train.tensorboard": COSMETIC,
    "train.progress": COSMETIC,
    "train.distributed": COSMETIC,  # how processes find each other
}


def _entry(key: str) -> str | None:
  """The most specific table entry covering ``key``, or None."""
  parts = key.split(".")
  for n in range(len(parts), 0, -1):
    prefix = ".".join(parts[:n])
    if prefix in ROLES:
      return prefix
  return None


def _family_role(key: str) -> str | None:
  """A model family option's role, as its family declares it; None for other keys."""
  section, _, name = key.partition(".")
  if section != "model" or not name or "." in name:
    return None
  from jtransfer import models  # pylint: disable=g-import-not-at-top
  for spec in models.FAMILIES.values():
    if name in spec.options:
      return EXECUTION if name in spec.execution_options else RESULT
  return None


def role(key: str) -> str:
  """The role of the dotted config ``key``; ``result`` for a key nothing classifies."""
  family = _family_role(key)
  if family is not None:
    return family
  entry = _entry(key)
  return ROLES[entry] if entry is not None else RESULT


def in_identity(key: str) -> bool:
  """Whether ``key`` is part of a run's identity (a resume must not change it)."""
  return role(key) in (RESULT, INPUT)


def in_program(key: str) -> bool:
  """Whether ``key`` can change a compiled program (runs share programs only when equal)."""
  return role(key) in (RESULT, EXECUTION)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """``{dotted key: leaf}`` of a nested dict (a config as plain JSON values)."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for k, v in tree.items():
    out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
  return out


def select(tree: Mapping[str, Any], keep: Callable[[str], bool]) -> dict[str, Any]:
  """The leaves of ``tree`` (nested plain dicts) whose dotted key ``keep`` accepts, flat."""
  return {k: v for k, v in flatten(dict(tree)).items() if keep(k)}


def unclassified(tree: Mapping[str, Any]) -> list[str]:
  """The dotted keys of ``tree`` that neither the table nor a model family classifies."""
  return sorted(k for k in flatten(dict(tree))
                if _family_role(k) is None and _entry(k) is None)


__all__ = ["COSMETIC", "EXECUTION", "INPUT", "RESULT", "ROLES", "ROLE_NAMES", "flatten",
           "in_identity", "in_program", "role", "select", "unclassified"]
