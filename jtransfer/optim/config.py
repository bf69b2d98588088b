"""Typed, lockable configs for the optimizer (``get_config``) and for freezing (``get_freezing_config``).

    from jtransfer import optim
    config.optim = optim.get_config()                          # adamw, warmup + cosine, ...
    config.optim.name, config.optim.lr = "momentum", 0.01
    config.freezing = optim.get_freezing_config("last_stages", k=2)
    config.lock()                                              # a typo in an override is now an error

Every field is commented where it is defined. Nothing here builds anything: ``build_optimizer`` and
``phases`` read these configs.
"""

from __future__ import annotations

from ml_collections import config_dict

from jtransfer.optim import presets

# BatchNorm scales/biases and dense/conv biases are not decayed; conv and dense kernels are.
KERNELS_ONLY = r"(^|/)kernel$"



def get_config() -> config_dict.ConfigDict:
  """The optimizer: which one, its schedule, weight decay, clipping, accumulation, EMA."""
  c = config_dict.ConfigDict()
  # One of optim.OPTIMIZERS: sgd, momentum, nesterov, adam, adamw, adagrad, adadelta, lars, lamb.
  c.name = "adamw"
  # Peak learning rate (after warmup); rules scale it per parameter group with lr_mult.
  c.lr = 1e-3
  # One of optim.SCHEDULES: 'constant', 'warmup_cosine', 'warmup_step' (BiT-HyperRule-style decays).
  c.schedule = "warmup_cosine"
  # Linear warmup from 0 to lr over this many steps (every schedule; 0 = none).
  c.warmup_steps = 0
  # warmup_cosine: final learning rate as a fraction of lr.
  c.end_lr_ratio = 0.0
  # warmup_step: where lr is multiplied by decay_factor, as fractions of the schedule's span
  # (BiT-HyperRule: 0.3, 0.6, 0.9).
  c.decay_boundaries = (0.3, 0.6, 0.9)
  # warmup_step: factor applied at each boundary.
  c.decay_factor = 0.1
  # Weight decay (0 = off). Decoupled (× lr, after the adaptive scaling) for adamw, lamb and lars;
  # added to the gradient (torch-style L2) for sgd, momentum, nesterov, adam, adagrad, adadelta.
  c.weight_decay = 0.0
  # Regex (re.search) over '/'-joined parameter paths that ARE decayed. Frozen leaves never are.
  c.wd_mask = KERNELS_ONLY
  # lars: regex of parameters that get the layer-wise trust ratio (the others plain momentum).
  c.trust_mask = KERNELS_ONLY
  # lars: trust coefficient (eta in You et al.).
  c.trust_coefficient = 0.001
  # Global-norm gradient clipping over the trainable parameters; None = off.
  c.clip_norm = config_dict.placeholder(float)
  # Microbatches per optimizer update, accumulated inside the train step (not optax.MultiSteps).
  c.accum_steps = 1
  # momentum / nesterov / lars: momentum coefficient.
  c.momentum = 0.9
  # adam / adamw / lamb: first and second moment decays.
  c.b1 = 0.9
  c.b2 = 0.999
  # adam / adamw / lamb / adagrad / adadelta / lars: epsilon of the denominator.
  c.eps = 1e-8
  # adadelta: decay of the running averages.
  c.rho = 0.9
  # adagrad: initial value of the squared-gradient accumulator.
  c.initial_accumulator = 0.1
  # Decay of an exponential moving average of the parameters kept in TrainState; None = off.
  c.ema_decay = config_dict.placeholder(float)
  return c


def get_freezing_config(strategy: str = "full_ft", **args) -> config_dict.ConfigDict:
  """What is trained, frozen or scaled, as data: a preset name and its arguments, or custom rules.

  ``args`` are the keyword arguments of the preset (see ``optim.PRESETS``); they are all copied into
  ``strategy_args`` with their defaults, so every one of them can be overridden from the command line.
  ``strategy='l2sp'`` is a full fine-tune with the L2-SP penalty: ``alpha`` and ``beta_head`` go to
  the ``l2sp_*`` fields (set ``optim.weight_decay = 0``: L2-SP replaces it).
  """
  c = config_dict.ConfigDict()
  l2sp = {}
  if strategy == "l2sp":
    l2sp = {"alpha": args.pop("alpha", 0.01), "beta_head": args.pop("beta_head", 0.01)}
    strategy = "full_ft"
  if strategy != "custom" and strategy not in presets.PRESETS:
    raise ValueError(f"Unknown freezing strategy {strategy!r}; known: custom, "
                     f"{', '.join(presets.PRESETS)}, l2sp")
  defaults = presets.preset_defaults(strategy) if strategy != "custom" else {}
  unknown = sorted(set(args) - set(defaults))
  if unknown:
    raise ValueError(f"Strategy {strategy!r} takes {sorted(defaults)}; got unknown {unknown}")
  # 'custom' (use param_rules) or a name of optim.PRESETS.
  c.strategy = strategy
  # Keyword arguments of that preset (all of them, defaults filled in).
  c.strategy_args = {**defaults, **args}
  # strategy='custom': ordered (regex, rule) pairs; rule is 'frozen', an lr multiplier, or
  # dict(lr_mult=..., schedule=dict(<schedule fields of the optim config>)). First match wins.
  c.param_rules = [(".*", 1.0)]
  # Regexes of the model's stages from the input up (presets unfreeze / decay from the last one);
  # None = the model family's (models.get_spec(config.model.arch).stages).
  c.stages = config_dict.placeholder(tuple)
  # Regex of the new head: trained by every preset, and penalised toward zero by L2-SP;
  # None = the model family's.
  c.head = config_dict.placeholder(str)
  # 'frozen': BatchNorms whose parameters are all frozen use (and keep) their running statistics;
  # 'adapt': every BatchNorm updates its statistics in training, even in a frozen backbone;
  # 'running': every BatchNorm, trainable or not, uses (and keeps) its running statistics.
  c.bn_mode = "frozen"
  # L2-SP: coefficient of ||w - w_pretrained||^2 / 2 over the non-head parameters (0 = off).
  c.l2sp_alpha = float(l2sp.get("alpha", 0.0))
  # L2-SP: coefficient of ||w_head||^2 / 2 (the head has no pretrained value: toward zero).
  c.l2sp_beta_head = float(l2sp.get("beta_head", 0.0))
  return c
