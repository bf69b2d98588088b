"""The experiment config: every section the trainer reads, each field with its default and meaning.

    from jtransfer.train import config as train_config
    config = train_config.get_base_config()      # locked: a typo in an override is an error
    config.model.arch = "resnet50"
    config.data.dataset = "mnist5k"
    config.freezing = optim.get_freezing_config("linear_probe")

Sections: ``model``, ``data`` (= ``data.get_config()``), ``optim`` (= ``optim.get_config()``),
``freezing`` (= ``optim.get_freezing_config()``: param rules, BatchNorm mode, L2-SP), ``loss``
(incl. the L1/L2 penalties), ``adapt`` (domain adaptation: source-only, DANN) and ``train``.
Experiment files in ``configs/`` start from this and change what they need.
"""

from __future__ import annotations

import re

from ml_collections import config_dict


class ConfigKeyError(KeyError):
  """A KeyError whose message reads as written (KeyError's str() would quote and escape it)."""

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else ""


def apply_overrides(cfg, overrides, where: str) -> None:
  """Sets each (dotted key, value) of ``overrides`` on ``cfg``; an unknown key is a
  ``ConfigKeyError`` naming ``where`` and the key."""
  for key, value in overrides:
    try:
      cfg.update_from_flattened_dict({key: value})
    except (KeyError, AttributeError) as e:
      raise ConfigKeyError(f"{where}: unknown config key {key!r}: {e}") from e


def get_model_config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  # A name of jtransfer.models.ARCHS (resnet18 ... resnext101_64x4d, efficientnet_lite0 ...).
  c.arch = "resnet18"
  # Head size; None = the dataset's number of classes.
  c.num_classes = config_dict.placeholder(int)
  # Compute dtype, 'float32' or 'bfloat16' (parameters and optimizer state stay float32).
  c.dtype = "float32"
  # Dropout on pre_logits before the head.
  c.dropout_rate = 0.0
  # Pretrained weights: a dir from `python -m jtransfer.convert` / a run's export, a PyTorch
  # .pth/.safetensors state dict (read with `arch`), or pkg:NAME (weights shipped in an installed
  # package, e.g. pkg:efficientnet_lite0). '' = random initialisation.
  c.init = ""
  # Regexes of parameter paths kept at their fresh initialisation instead of loaded (the new head).
  c.init_skip = (r"^fc/",)
  # The model families' own options, with their defaults (each documented in its family's file,
  # jtransfer/models/<family>.py). ResNet: small_stem (3×3 stride-1 stem without max-pool, for
  # ≤ 64 px images), base_planes (64 = torchvision; 16 gives a narrow ResNet for CPU runs and
  # distillation students), zero_init_residual. An option of another family must keep its default.
  from jtransfer import models  # pylint: disable=g-import-not-at-top
  for key, default in models.family_options().items():
    c[key] = default
  return c


def get_loss_config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  # Targets smoothed toward uniform by this much (0 = plain cross-entropy).
  c.label_smoothing = 0.0
  # L1 penalty coeff·Σ|w| added to the loss (gradient coeff·sign(w)); 0 = off.
  c.l1 = 0.0
  # L2 penalty coeff/2·Σw² added to the loss (gradient coeff·w): a penalty on the loss, which an
  # adaptive optimizer rescales, unlike optim.weight_decay (decoupled for adamw/lars/lamb); 0 = off.
  c.l2 = 0.0
  # Regex (re.search on '/'-joined paths) of the parameters l1/l2 apply to; only trainable ones
  # count. Default: conv and dense kernels (no BatchNorm scales/biases, no biases).
  c.penalty_pattern = r"(^|/)kernel$"
  c.distill = config_dict.ConfigDict()
  # Teacher weights (a run's export/ dir, a converted dir or a torchvision file); '' = no distillation.
  c.distill.teacher = ""
  # Teacher architecture; '' = read from the teacher dir's model.json (written with every export).
  c.distill.arch = ""
  # Weight of the cross-entropy with the labels; 1 - alpha weighs T²·KL(teacher_T ‖ student_T).
  c.distill.alpha = 0.5
  # Softmax temperature T of both teacher and student in the KL term.
  c.distill.temperature = 4.0
  return c


ADAPT_METHODS = ("", "source_only", "dann")
LAMBDA_SCHEDULES = ("paper", "constant")


def get_adapt_config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  # '' = off (train and evaluate on `data`); 'source_only' = train on `data`, evaluate on the
  # target's eval split (the baseline); 'dann' = domain-adversarial training (Ganin & Lempitsky
  # 2015): `data` labeled + the target's unlabeled images, evaluated on the target.
  c.method = ""
  # The target domain: a data-package dataset name ('uci_digits', 'mnist5k', a TFDS name,
  # 'folder:...'). It is read as a copy of `data` with this dataset (same image_size, pp, batch
  # sizes), so shapes match; its `data.eval_split` is what is evaluated. Its labels never enter
  # training.
  c.target_dataset = ""
  # The target split whose images (never labels) feed the domain classifier ('dann' only).
  c.target_split = "train"
  # Weight of the domain classifier's binary cross-entropy in the loss.
  c.domain_weight = 1.0
  # Reversal strength λ: 'paper' = 2/(1+exp(−gamma·p))−1 over training progress p (0 → 1), or
  # 'constant' = `lambda_value` at every step.
  c.lambda_schedule = "paper"
  # λ of the 'constant' schedule.
  c.lambda_value = 1.0
  # Steepness γ of the 'paper' schedule (the paper's 10).
  c.gamma = 10.0
  # Hidden widths of the domain classifier MLP on pre_logits (the paper: 1024-1024); trained at
  # lr ×1 (a `^domain_head/` rule is added when the freezing rules would freeze it), initialised
  # fresh, and left out of the export.
  c.domain_head = (256,)
  return c


def get_train_config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  # Optimizer steps of the whole run (the schedule spans them).
  c.num_steps = 1000
  # Evaluate on the whole eval split every this many steps (and at the end); 0 = only at the end.
  c.eval_every = 200
  # Save a checkpoint every this many steps (and at every evaluation and at the end); async.
  c.ckpt_every = 200
  # Keep this many most recent checkpoints (plus the best by `best_metric`).
  c.keep = 2
  # Write train metrics (loss, norms, img/s) every this many steps.
  c.log_every = 50
  # Seed of parameter init, dropout and the train data order: same seed, same run.
  c.seed = 0
  # Data parallelism: 'jit' (jax.jit over a mesh of all devices) or 'pmap'.
  c.parallel = "jit"
  # Eval metric ranking checkpoints and driving early stopping; a key of the eval metrics
  # ('top1', 'top5', 'loss', 'macro_f1', 'auc_roc', ...).
  c.best_metric = "top1"
  # 'max' or 'min' (for 'loss').
  c.best_mode = "max"
  # Stop after this many evaluations without a strict improvement of best_metric; 0 = never.
  c.patience = 0
  # Restart from this kept checkpoint step instead of the latest (e.g. the last safe one before a
  # non-finite loss); the checkpoints and metrics after it are removed. None = the latest.
  c.resume_from_step = config_dict.placeholder(int)
  # Resume with a larger num_steps on purpose (workdir.check_identity); the steps already done keep
  # the schedule of the old num_steps. False: any result-changing config difference is an error.
  c.allow_extend = False
  # Parameters exported at the end: 'best' (the best checkpoint by best_metric) or 'last'.
  c.export = "best"
  # With optim.ema_decay set: evaluate (and export) the EMA of the parameters instead of them.
  c.eval_ema = True
  # Write TensorBoard event files beside metrics.jsonl.
  c.tensorboard = True
  # Show a progress line (steps, img/s, ETA) on process 0.
  c.progress = True
  c.distributed = config_dict.ConfigDict()
  # Multi-host: address 'host:port' of process 0's coordinator; '' = JAX_COORDINATOR_ADDRESS or none.
  c.distributed.coordinator_address = ""
  # Number of processes and this one's index; -1 = JAX_NUM_PROCESSES / JAX_PROCESS_ID.
  c.distributed.num_processes = -1
  c.distributed.process_id = -1
  # Call jax.distributed.initialize() with no arguments (TPU pods, SLURM: JAX finds everything).
  c.distributed.auto = False
  # CPU collectives for multi-process CPU runs ('gloo'); '' = JAX's default.
  c.distributed.cpu_collectives = ""
  return c


def get_base_config() -> config_dict.ConfigDict:
  """All sections with their defaults, locked."""
  from jtransfer import data, optim  # pylint: disable=g-import-not-at-top

  c = config_dict.ConfigDict()
  c.model = get_model_config()
  c.data = data.get_config()
  c.optim = optim.get_config()
  c.freezing = optim.get_freezing_config()
  c.loss = get_loss_config()
  c.adapt = get_adapt_config()
  c.train = get_train_config()
  c.lock()
  return c


def data_config(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """``config.data`` with ``normalize`` resolved: when None, the model family's (what its
  pretrained weights expect), so a model's default pipeline needs no per-model pp lists."""
  from jtransfer import models  # pylint: disable=g-import-not-at-top
  cfg = config.data.copy_and_resolve_references()
  if cfg.get("normalize") is None:
    with cfg.unlocked():
      cfg.normalize = dict(models.get_spec(config.model.arch).normalize)
  return cfg


def validate(config: config_dict.ConfigDict) -> None:
  """Raises ValueError naming the first inconsistent training field (data has its own check)."""
  from jtransfer import models  # pylint: disable=g-import-not-at-top
  models.options_of(config.model)  # an unknown arch, or another family's option, is an error
  t = config.train
  if t.parallel not in ("jit", "pmap"):
    raise ValueError(f"train.parallel must be 'jit' or 'pmap', got {t.parallel!r}")
  if t.export not in ("best", "last"):
    raise ValueError(f"train.export must be 'best' or 'last', got {t.export!r}")
  if t.best_mode not in ("max", "min"):
    raise ValueError(f"train.best_mode must be 'max' or 'min', got {t.best_mode!r}")
  for key in ("num_steps", "keep"):
    if t[key] < 1:
      raise ValueError(f"train.{key} must be >= 1, got {t[key]}")
  for key in ("eval_every", "ckpt_every", "log_every", "patience"):
    if t[key] < 0:
      raise ValueError(f"train.{key} must be >= 0, got {t[key]}")
  d = config.loss.distill
  if d.teacher and not 0.0 <= d.alpha <= 1.0:
    raise ValueError(f"loss.distill.alpha must be in [0, 1], got {d.alpha}")
  if d.teacher and d.temperature <= 0:
    raise ValueError(f"loss.distill.temperature must be > 0, got {d.temperature}")
  if not 0.0 <= config.loss.label_smoothing < 1.0:
    raise ValueError(f"loss.label_smoothing must be in [0, 1), got {config.loss.label_smoothing}")
  for key in ("l1", "l2"):
    if not isinstance(config.loss[key], (int, float)) or config.loss[key] < 0:
      raise ValueError(f"loss.{key} must be a number >= 0, got {config.loss[key]!r}")
  try:
    re.compile(config.loss.penalty_pattern)
  except (re.error, TypeError) as e:
    raise ValueError(f"loss.penalty_pattern={config.loss.penalty_pattern!r} is not a regex: {e}"
                     ) from e
  validate_adapt(config)


def validate_adapt(config: config_dict.ConfigDict) -> None:
  """Raises ValueError naming the first bad ``adapt`` field (or what it conflicts with)."""
  a = config.adapt
  if a.method not in ADAPT_METHODS:
    raise ValueError(f"adapt.method must be one of {ADAPT_METHODS}, got {a.method!r}")
  if not a.method:
    return
  if not isinstance(a.target_dataset, str) or not a.target_dataset:
    raise ValueError(f"adapt.target_dataset must name the target dataset when adapt.method="
                     f"{a.method!r}, got {a.target_dataset!r}")
  if a.method != "dann":
    return
  if not isinstance(a.target_split, str) or not a.target_split:
    raise ValueError(f"adapt.target_split must be a non-empty split name, got {a.target_split!r}")
  if not isinstance(a.domain_weight, (int, float)) or a.domain_weight < 0:
    raise ValueError(f"adapt.domain_weight must be a number >= 0, got {a.domain_weight!r}")
  if a.lambda_schedule not in LAMBDA_SCHEDULES:
    raise ValueError(f"adapt.lambda_schedule must be one of {LAMBDA_SCHEDULES}, "
                     f"got {a.lambda_schedule!r}")
  if not isinstance(a.lambda_value, (int, float)):
    raise ValueError(f"adapt.lambda_value must be a number, got {a.lambda_value!r}")
  if not isinstance(a.gamma, (int, float)) or a.gamma <= 0:
    raise ValueError(f"adapt.gamma must be a number > 0, got {a.gamma!r}")
  if (not isinstance(a.domain_head, (tuple, list)) or not a.domain_head
      or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in a.domain_head)):
    raise ValueError(f"adapt.domain_head must be a non-empty tuple of positive ints (hidden "
                     f"widths), got {a.domain_head!r}")
  if config.loss.distill.teacher:
    raise ValueError("adapt.method='dann' with loss.distill.teacher: distillation is not "
                     "supported in the DANN loss; use one or the other")


__all__ = ["ADAPT_METHODS", "ConfigKeyError", "LAMBDA_SCHEDULES", "apply_overrides", "data_config", "get_adapt_config", "get_base_config",
           "get_loss_config", "get_model_config", "get_train_config", "validate",
           "validate_adapt"]
